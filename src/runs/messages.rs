//! Agent messaging through the control plane, for agents that speak HTTP rather than MACP gRPC:
//! session messages, signals and context updates, each sent with the sender's own runtime
//! credentials and answered with the runtime's real Ack.

use opentelemetry::trace::FutureExt as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::cluster::{self, Call, Route};
use super::json_fields::{Obj, Problems};
use super::request;
use super::service::RunService;
use super::writer::Change;
use crate::domain::query::{EventQuery, MAX_EVENT_LIMIT};
use crate::domain::signals::CONTEXT_SIGNAL_TYPE;
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::events::canonical::{CanonicalEvent, EventDraft, Source, Subject, types};
use crate::events::normalizer::{policy_denied_event, state_name};
use crate::runtime::client::{Error as RuntimeError, envelope};
use crate::runtime::codec;

/// The runtime's answer to a message sent through the control plane.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReceipt {
    pub message_id: String,
    pub ack: AckView,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckView {
    pub ok: bool,
    pub duplicate: bool,
    pub message_id: String,
    pub session_id: String,
    pub accepted_at_unix_ms: i64,
    pub session_state: String,
}

impl From<&macp_runtime::pb::Ack> for AckView {
    fn from(ack: &macp_runtime::pb::Ack) -> Self {
        AckView {
            ok: ack.ok,
            duplicate: ack.duplicate,
            message_id: ack.message_id.clone(),
            session_id: ack.session_id.clone(),
            accepted_at_unix_ms: ack.accepted_at_unix_ms,
            session_state: state_name(ack.session_state).to_owned(),
        }
    }
}

/// One message the control plane sent for a run (kickoff or through this API).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    pub seq: i64,
    #[serde(with = "crate::time::rfc3339")]
    pub ts: crate::time::Timestamp,
    /// accepted | rejected
    pub status: &'static str,
    #[serde(flatten)]
    pub details: Value,
}

/// Where a message goes: the run's bound session, and who may send in it.
struct Target {
    session_id: String,
    mode: String,
}

/// What the agent asked to send, already encoded.
struct Outgoing {
    from: String,
    to: Vec<String>,
    message_type: String,
    /// Empty for ambient messages (signals).
    mode: String,
    session_id: String,
    payload: Vec<u8>,
    descriptor: Value,
    metadata: Option<Value>,
    message_id: String,
    category: &'static str,
    /// Signals never enter session history, so their `signal.emitted` is recorded here.
    signal: Option<Value>,
}

fn body_object<'a>(body: &'a Value, problems: &mut Problems) -> Option<Obj<'a>> {
    Obj::expect(body, "", problems)
}

impl RunService {
    /// The run's session, if the run may take messages now.
    async fn message_target(
        &self,
        run_id: &str,
    ) -> Result<(Target, Vec<String>, String), ApiError> {
        let run = self.get(run_id).await?;
        if !matches!(run.status, RunStatus::BindingSession | RunStatus::Running) {
            return Err(ApiError::new(
                ErrorCode::RunNotActive,
                format!("run {run_id} is {} and takes no messages", run.status),
            ));
        }
        let session = self.session(run_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::RunNotActive,
                format!("run {run_id} has no runtime session yet"),
            )
        })?;
        Ok((
            Target {
                session_id: session.session_id,
                mode: session.mode_name,
            },
            session.participants,
            session.initiator,
        ))
    }

    /// Checks the common fields (`from`, `to`, `messageId`) against the run's roster.
    fn sender_fields(
        &self,
        object: &Obj<'_>,
        participants: &[String],
        initiator: &str,
        problems: &mut Problems,
    ) -> Option<(String, Vec<String>, String)> {
        let from = object.required_str("from", problems);
        let to = object.optional_strings("to", problems);
        let message_id = object
            .optional_str("messageId", problems)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let member = |id: &str| id == initiator || participants.iter().any(|p| p == id);
        for (position, recipient) in to.iter().enumerate() {
            if !member(recipient) {
                problems.push(
                    format!("to[{position}]"),
                    format!("'{recipient}' is neither a participant nor the initiator"),
                );
            }
        }
        Some((from?, to, message_id))
    }

    fn refuse_outsider(
        from: &str,
        participants: &[String],
        initiator: &str,
    ) -> Result<(), ApiError> {
        if from == initiator || participants.iter().any(|p| p == from) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::NotAParticipant,
            format!("'{from}' is not a participant of this run"),
        )
        .with_details(json!({"errors": [FieldError::new("from", "is not a participant")]})))
    }

    /// `POST /runs/{id}/messages`: `{from, to?, messageType, payload | payloadEnvelope,
    /// metadata?, messageId?}`.
    pub async fn send_message(
        &self,
        run_id: &str,
        body: &Value,
    ) -> Result<MessageReceipt, ApiError> {
        let call = Call::Message { body: body.clone() };
        if let Route::Answered(answer) = self.route(run_id, call).await? {
            return cluster::answer(answer);
        }
        let (target, participants, initiator) = self.message_target(run_id).await?;
        let mut problems = Problems::default();
        let object = body_object(body, &mut problems);
        let parsed = object.as_ref().and_then(|object| {
            object.warn_unknown(
                &[
                    "from",
                    "to",
                    "messageType",
                    "payload",
                    "payloadEnvelope",
                    "metadata",
                    "messageId",
                ],
                &mut problems,
            );
            let fields = self.sender_fields(object, &participants, &initiator, &mut problems);
            let message_type = object.required_str("messageType", &mut problems);
            let metadata = object
                .optional_map("metadata", &mut problems)
                .map(Value::Object);
            let encoded = request::message_payload(
                object,
                &target.mode,
                message_type.as_deref(),
                &mut problems,
            );
            Some((fields?, message_type?, metadata, encoded?))
        });
        let Some(((from, to, message_id), message_type, metadata, encoded)) = parsed else {
            return Err(ApiError::validation(problems.errors));
        };
        if !problems.is_empty() {
            return Err(ApiError::validation(problems.errors));
        }
        Self::refuse_outsider(&from, &participants, &initiator)?;
        self.send_outgoing(
            run_id,
            Outgoing {
                from,
                to,
                message_type,
                mode: target.mode,
                session_id: target.session_id,
                payload: encoded.bytes,
                descriptor: encoded.descriptor,
                metadata,
                message_id,
                category: "message",
                signal: None,
            },
        )
        .await
    }

    /// `POST /runs/{id}/signal`: `{from, signalType, data?, confidence?, severity?, to?,
    /// messageId?}`; sent as an ambient Signal correlated with the run's session.
    pub async fn send_signal(
        &self,
        run_id: &str,
        body: &Value,
    ) -> Result<MessageReceipt, ApiError> {
        let call = Call::Signal { body: body.clone() };
        if let Route::Answered(answer) = self.route(run_id, call).await? {
            return cluster::answer(answer);
        }
        let (target, participants, initiator) = self.message_target(run_id).await?;
        let mut problems = Problems::default();
        let object = body_object(body, &mut problems);
        let parsed = object.as_ref().and_then(|object| {
            object.warn_unknown(
                &[
                    "from",
                    "to",
                    "messageType",
                    "signalType",
                    "data",
                    "confidence",
                    "severity",
                    "messageId",
                ],
                &mut problems,
            );
            let fields = self.sender_fields(object, &participants, &initiator, &mut problems);
            let signal_type = object.required_str("signalType", &mut problems);
            let severity = object.optional_str("severity", &mut problems);
            let confidence = match object.get("confidence") {
                None => None,
                Some(value) => match value.as_f64() {
                    Some(confidence) if (0.0..=1.0).contains(&confidence) => Some(confidence),
                    _ => {
                        problems.push("confidence", "must be a number between 0 and 1");
                        None
                    }
                },
            };
            let mut data = object.get("data").cloned().unwrap_or_else(|| json!({}));
            if let (Some(severity), Some(map)) = (&severity, data.as_object_mut()) {
                map.insert("severity".to_owned(), json!(severity));
            }
            Some((fields?, signal_type?, data, confidence))
        });
        let Some(((from, to, message_id), signal_type, data, confidence)) = parsed else {
            return Err(ApiError::validation(problems.errors));
        };
        if !problems.is_empty() {
            return Err(ApiError::validation(problems.errors));
        }
        Self::refuse_outsider(&from, &participants, &initiator)?;
        self.send_signal_payload(
            run_id,
            target,
            from,
            to,
            message_id,
            signal_type,
            data,
            confidence,
            "signal",
        )
        .await
    }

    /// `POST /runs/{id}/context`: `{from, context}`; a `session.context` Signal carrying the
    /// context, which the projection shows as the run's context.
    pub async fn update_context(
        &self,
        run_id: &str,
        body: &Value,
    ) -> Result<MessageReceipt, ApiError> {
        let call = Call::Context { body: body.clone() };
        if let Route::Answered(answer) = self.route(run_id, call).await? {
            return cluster::answer(answer);
        }
        let (target, participants, initiator) = self.message_target(run_id).await?;
        let mut problems = Problems::default();
        let object = body_object(body, &mut problems);
        let parsed = object.as_ref().and_then(|object| {
            object.warn_unknown(&["from", "context", "messageId"], &mut problems);
            let fields = self.sender_fields(object, &participants, &initiator, &mut problems);
            let context = match object.get("context") {
                Some(Value::Object(map)) => Some(Value::Object(map.clone())),
                Some(_) => {
                    problems.push("context", "must be an object");
                    None
                }
                None => {
                    problems.push("context", "is required");
                    None
                }
            };
            Some((fields?, context?))
        });
        let Some(((from, to, message_id), context)) = parsed else {
            return Err(ApiError::validation(problems.errors));
        };
        if !problems.is_empty() {
            return Err(ApiError::validation(problems.errors));
        }
        Self::refuse_outsider(&from, &participants, &initiator)?;
        self.send_signal_payload(
            run_id,
            target,
            from,
            to,
            message_id,
            CONTEXT_SIGNAL_TYPE.to_owned(),
            context,
            None,
            "context_update",
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_signal_payload(
        &self,
        run_id: &str,
        target: Target,
        from: String,
        to: Vec<String>,
        message_id: String,
        signal_type: String,
        data: Value,
        confidence: Option<f64>,
        category: &'static str,
    ) -> Result<MessageReceipt, ApiError> {
        let payload = json!({
            "signal_type": signal_type,
            "data": codec::encode_base64(data.to_string().as_bytes()),
            "confidence": confidence.unwrap_or(0.0),
            "correlation_session_id": target.session_id,
        });
        let bytes =
            codec::encode_proto("macp.v1.SignalPayload", &payload).map_err(ApiError::internal)?;
        let mut decoded = json!({
            "signalType": signal_type,
            "correlationSessionId": target.session_id,
        });
        if self.options().discovery {
            // Recorded below; `WatchSignals` will hand it back.
            self.inner.own_signals.insert(&message_id);
        }
        if let (Some(confidence), Some(map)) = (confidence, decoded.as_object_mut()) {
            map.insert("confidence".to_owned(), json!(confidence));
        }
        self.send_outgoing(
            run_id,
            Outgoing {
                from,
                to,
                message_type: "Signal".to_owned(),
                mode: String::new(),
                session_id: String::new(),
                payload: bytes,
                descriptor: json!({"encoding": "proto", "typeName": "macp.v1.SignalPayload"}),
                metadata: None,
                message_id,
                category,
                signal: Some(json!({
                    "modeName": "",
                    "messageType": "Signal",
                    "decodedPayload": decoded,
                    "signalData": data,
                    "sessionId": target.session_id,
                })),
            },
        )
        .await
    }

    async fn send_outgoing(
        &self,
        run_id: &str,
        outgoing: Outgoing,
    ) -> Result<MessageReceipt, ApiError> {
        let span = self.tracing().child(
            run_id,
            "runtime.Send",
            vec![
                opentelemetry::KeyValue::new("macp.message_type", outgoing.message_type.clone()),
                opentelemetry::KeyValue::new("macp.sender", outgoing.from.clone()),
            ],
        );
        let sent = self
            .runtime()
            .send(
                envelope(
                    &outgoing.mode,
                    &outgoing.message_type,
                    &outgoing.session_id,
                    outgoing.message_id.clone(),
                    outgoing.payload.clone(),
                ),
                &outgoing.from,
            )
            .with_context(span.context())
            .await;
        drop(span);
        let now = crate::time::now();
        let source = Source::control_plane("messages");
        let subject_kind = if outgoing.signal.is_some() {
            "signal"
        } else {
            "message"
        };
        let mut details = json!({
            "sender": outgoing.from,
            "to": outgoing.to,
            "messageType": outgoing.message_type,
            "messageId": outgoing.message_id,
            "category": outgoing.category,
            "payloadDescriptor": outgoing.descriptor,
        });
        if let (Some(metadata), Some(map)) = (&outgoing.metadata, details.as_object_mut()) {
            map.insert("metadata".to_owned(), metadata.clone());
        }
        let (drafts, outcome) = match sent {
            Ok(ack) => {
                let view = AckView::from(&ack);
                if let Some(map) = details.as_object_mut() {
                    map.insert("ack".to_owned(), json!(view));
                }
                let mut drafts = vec![EventDraft::new(
                    types::MESSAGE_SENT,
                    now,
                    Some(Subject::new(subject_kind, outgoing.message_id.clone())),
                    source.clone(),
                    details,
                )];
                if let Some(mut signal) = outgoing.signal {
                    if let Some(map) = signal.as_object_mut() {
                        map.insert("sender".to_owned(), json!(outgoing.from));
                        map.insert("messageId".to_owned(), json!(outgoing.message_id));
                    }
                    drafts.push(EventDraft::new(
                        types::SIGNAL_EMITTED,
                        now,
                        Some(Subject::new("signal", outgoing.message_id.clone())),
                        source,
                        signal,
                    ));
                }
                let receipt = MessageReceipt {
                    message_id: outgoing.message_id,
                    ack: view,
                };
                (drafts, Ok(receipt))
            }
            Err(error) => {
                crate::auth::audit::fail(error.to_api_error().code);
                if let Some(map) = details.as_object_mut() {
                    map.insert(
                        "error".to_owned(),
                        json!({"code": error.runtime_code(), "message": error.to_string()}),
                    );
                }
                let mut drafts = vec![EventDraft::new(
                    types::MESSAGE_SEND_FAILED,
                    now,
                    Some(Subject::new(subject_kind, outgoing.message_id.clone())),
                    source.clone(),
                    details,
                )];
                if let RuntimeError::Refused {
                    code,
                    message,
                    details,
                } = &error
                    && code == "POLICY_DENIED"
                {
                    drafts.push(policy_denied_event(
                        code,
                        message,
                        details.as_ref(),
                        &outgoing.session_id,
                        now,
                        source,
                    ));
                }
                (drafts, Err(error.to_api_error()))
            }
        };
        let writers = self.writers();
        let mut guard = writers.lock(run_id).await?;
        // A run that ended meanwhile keeps its terminal event last.
        if let Some(writer) = guard
            .as_mut()
            .filter(|writer| !writer.status().is_terminal())
        {
            writers.emit(writer, drafts, Change::default()).await?;
        }
        outcome
    }

    /// Messages the control plane sent for a run (kickoff and this API), oldest first.
    pub async fn messages(&self, run_id: &str) -> Result<Vec<SentMessage>, ApiError> {
        self.get(run_id).await?;
        let events = self
            .store()
            .query_events(&EventQuery {
                run_id: Some(run_id.to_owned()),
                types: vec![
                    types::MESSAGE_SENT.to_owned(),
                    types::MESSAGE_SEND_FAILED.to_owned(),
                ],
                limit: MAX_EVENT_LIMIT,
                ..EventQuery::default()
            })
            .await?;
        Ok(events.into_iter().map(sent_message).collect())
    }
}

fn sent_message(event: CanonicalEvent) -> SentMessage {
    SentMessage {
        seq: event.seq,
        ts: event.ts,
        status: if event.event_type == types::MESSAGE_SENT {
            "accepted"
        } else {
            "rejected"
        },
        details: event.data,
    }
}
