//! The executor: takes a created run to a bound, observed runtime session and sends its
//! kickoff. Every message has an id derived from the run, so running the executor again for the
//! same run (after a restart) is idempotent: the runtime answers repeats as duplicates.

use macp_runtime::pb::{self, SessionState};
use opentelemetry::KeyValue;
use opentelemetry::trace::FutureExt as _;
use prost::Message as _;
use serde_json::json;
use tokio::sync::watch;

use super::request::ExecutionRequest;
use super::service::RunService;
use super::writer::Change;
use crate::domain::run::BoundSession;
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode};
use crate::events::canonical::{EventDraft, Source, Subject, types};
use crate::events::normalizer::{policy_denied_event, state_name};
use crate::runtime::client::{Error as RuntimeError, envelope};
use crate::store::{RunChange, SessionChange};

pub struct Plan {
    pub run_id: String,
    pub session_id: String,
    pub request: ExecutionRequest,
}

/// Message ids are stable per run and position.
pub fn session_start_message_id(run_id: &str) -> String {
    format!("{run_id}:session-start")
}

pub fn kickoff_message_id(run_id: &str, position: usize) -> String {
    format!("{run_id}:kickoff:{position}")
}

pub async fn execute(service: RunService, plan: Plan) {
    let run_id = plan.run_id.clone();
    if let Err(error) = run(&service, &plan).await {
        tracing::warn!(%run_id, %error, "run failed to start");
        if let Err(write_error) = service
            .finalize_without_session(&run_id, RunStatus::Failed, Some(&error))
            .await
        {
            tracing::error!(%run_id, %write_error, "could not record the run's failure");
        }
    }
}

/// Emits control-plane events; `Ok(false)` when the run is already terminal (cancelled while
/// starting), in which case the executor stops.
async fn emit(
    service: &RunService,
    run_id: &str,
    drafts: Vec<EventDraft>,
    change: Change,
) -> Result<bool, ApiError> {
    let writers = &service.inner.writers;
    let mut guard = writers.lock(run_id).await?;
    let Some(writer) = guard.as_mut() else {
        return Ok(false);
    };
    if writer.status().is_terminal() {
        return Ok(false);
    }
    writers.emit(writer, drafts, change).await?;
    Ok(true)
}

fn status_change(status: RunStatus) -> RunChange {
    RunChange {
        status: Some(status),
        ..RunChange::default()
    }
}

fn control_plane() -> Source {
    Source::control_plane("executor")
}

async fn run(service: &RunService, plan: &Plan) -> Result<(), ApiError> {
    let run_id = plan.run_id.as_str();
    let session = &plan.request.session;
    let runtime = service.runtime();
    let now = crate::time::now();

    let existing = service.session(run_id).await?;
    if existing.is_none() {
        let started = emit(
            service,
            run_id,
            vec![EventDraft::new(
                types::RUN_STARTED,
                now,
                Some(Subject::new("run", run_id)),
                control_plane(),
                json!({
                    "status": RunStatus::Starting.as_str(),
                    "startedAt": crate::time::format(&now),
                    "modeName": session.mode_name,
                    "runtimeKind": plan.request.runtime_kind,
                }),
            )],
            Change {
                run: RunChange {
                    status: Some(RunStatus::Starting),
                    started_at: Some(now),
                    ..RunChange::default()
                },
                session: None,
                ..Change::default()
            },
        )
        .await?;
        if !started {
            return Ok(());
        }
    }

    // A RunDescriptor: the agents start the session; the run waits for it.
    if session.session_id.is_some() {
        return super::awaiting::bind_when_started(service, plan).await;
    }

    let span = service
        .tracing()
        .child(run_id, "runtime.Initialize", Vec::new());
    let modes = runtime
        .initialize()
        .with_context(span.context())
        .await
        .map_err(|error| error.to_api_error())?
        .supported_modes;
    if !modes.contains(&session.mode_name) {
        return Err(ApiError::new(
            ErrorCode::ModeNotSupported,
            format!(
                "runtime does not support mode '{}'; supported: {}",
                session.mode_name,
                modes.join(", ")
            ),
        ));
    }

    let start_payload = pb::SessionStartPayload {
        intent: session.intent(),
        participants: session.participants.iter().map(|p| p.id.clone()).collect(),
        mode_version: session.mode_version.clone(),
        configuration_version: session.configuration_version.clone(),
        policy_version: session.policy_version.clone().unwrap_or_default(),
        ttl_ms: session.ttl_ms,
        roots: session
            .roots
            .iter()
            .map(|root| pb::Root {
                uri: root.uri.clone(),
                name: root.name.clone().unwrap_or_default(),
            })
            .collect(),
        context_id: session.context_id.clone().unwrap_or_default(),
        extensions: session
            .context_bytes
            .iter()
            .map(|bytes| {
                (
                    crate::runtime::CONTEXT_EXTENSION_KEY.to_owned(),
                    bytes.clone(),
                )
            })
            .collect(),
        max_suspend_ms: 0,
    };
    drop(span);
    let start_id = session_start_message_id(run_id);
    let span = service.tracing().child(
        run_id,
        "runtime.Send",
        vec![KeyValue::new("macp.message_type", "SessionStart")],
    );
    let start_ack = runtime
        .send(
            envelope(
                &session.mode_name,
                "SessionStart",
                &plan.session_id,
                start_id.clone(),
                start_payload.encode_to_vec(),
            ),
            &session.initiator,
        )
        .with_context(span.context())
        .await
        .map_err(|error| start_refusal(&error))?;
    drop(span);

    // A session now exists on the runtime: from here on, failures also cancel it.
    let outcome = bind_and_kickoff(service, plan, &start_ack, &start_id).await;
    if let Err(error) = &outcome {
        let cancelled = runtime
            .cancel_session(
                &plan.session_id,
                &format!("control plane could not start the run: {}", error.message),
                &session.initiator,
            )
            .await;
        if let Err(cancel_error) = cancelled {
            tracing::warn!(%run_id, %cancel_error, "could not cancel the session of a failed run");
        }
    }
    outcome
}

fn start_refusal(error: &RuntimeError) -> ApiError {
    let mut api_error = error.to_api_error();
    if matches!(error, RuntimeError::Refused { .. }) {
        api_error.message = format!("runtime refused SessionStart: {}", api_error.message);
    }
    api_error
}

async fn bind_and_kickoff(
    service: &RunService,
    plan: &Plan,
    start_ack: &pb::Ack,
    start_id: &str,
) -> Result<(), ApiError> {
    let run_id = plan.run_id.as_str();
    let session = &plan.request.session;
    let now = crate::time::now();
    let participant_ids: Vec<String> = session.participants.iter().map(|p| p.id.clone()).collect();

    if service.session(run_id).await?.is_none() {
        let mut drafts = vec![EventDraft::new(
            types::SESSION_BOUND,
            now,
            Some(Subject::new("session", plan.session_id.clone())),
            control_plane(),
            json!({
                "sessionId": plan.session_id,
                "initiator": session.initiator,
                "state": state_name(start_ack.session_state),
                "modeName": session.mode_name,
                "modeVersion": session.mode_version,
                "configurationVersion": session.configuration_version,
                "policyVersion": session.policy_version.clone().unwrap_or_else(|| "policy.default".to_owned()),
                "participants": participant_ids,
                "context": session.context,
                "contextId": session.context_id,
                "extensionKeys": session.context_bytes.as_ref().map(|_| vec![crate::runtime::CONTEXT_EXTENSION_KEY]).unwrap_or_default(),
                "expectedCommitments": session.commitments,
            }),
        )];
        for participant in &session.participants {
            drafts.push(EventDraft::new(
                types::PARTICIPANT_SEEN,
                now,
                Some(Subject::new("participant", participant.id.clone())),
                control_plane(),
                json!({
                    "participantId": participant.id,
                    "role": participant.role,
                    "transportIdentity": participant.transport_identity,
                    "status": "idle",
                }),
            ));
        }
        if !participant_ids.contains(&session.initiator) {
            drafts.push(EventDraft::new(
                types::PARTICIPANT_SEEN,
                now,
                Some(Subject::new("participant", session.initiator.clone())),
                control_plane(),
                json!({ "participantId": session.initiator, "role": "initiator", "status": "idle" }),
            ));
        }
        drafts.push(message_sent(
            &plan.session_id,
            &session.initiator,
            &participant_ids,
            "SessionStart",
            "request",
            start_id,
            start_ack,
            &json!({"encoding": "proto", "typeName": "macp.v1.SessionStartPayload"}),
        ));
        let bound = emit(
            service,
            run_id,
            drafts,
            Change {
                run: RunChange {
                    status: Some(RunStatus::BindingSession),
                    runtime_session_id: Some(plan.session_id.clone()),
                    ..RunChange::default()
                },
                session: Some(SessionChange::Bind(BoundSession {
                    run_id: run_id.to_owned(),
                    session_id: plan.session_id.clone(),
                    mode_name: session.mode_name.clone(),
                    mode_version: session.mode_version.clone(),
                    configuration_version: session.configuration_version.clone(),
                    policy_version: session.policy_version.clone(),
                    initiator: session.initiator.clone(),
                    session_state: state_name(start_ack.session_state).to_owned(),
                    last_ordinal: 0,
                    participants: participant_ids.clone(),
                })),
                ..Change::default()
            },
        )
        .await?;
        if !bound {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "run was cancelled while its session was starting",
            ));
        }
    }

    // Observe before sending anything else, so every accepted envelope is seen live. The
    // observer finalizes the run only once `kickoff_done` says the last kickoff was recorded;
    // if this function fails, dropping the sender stops the observer.
    let (kickoff_done, kickoff_watch) = watch::channel(false);
    super::observer::spawn(
        service,
        run_id,
        &plan.session_id,
        &session.initiator,
        kickoff_watch,
    );

    emit(
        service,
        run_id,
        vec![EventDraft::new(
            types::SESSION_STATE_CHANGED,
            now,
            Some(Subject::new("session", plan.session_id.clone())),
            control_plane(),
            json!({ "sessionId": plan.session_id, "state": SessionState::Open.as_str_name() }),
        )],
        Change {
            run: status_change(RunStatus::Running),
            session: None,
            ..Change::default()
        },
    )
    .await?;
    kickoff(service, plan, 0, kickoff_done).await
}

/// Finishes the kickoff of a running run after a restart: a process that died mid-kickoff
/// left the rest unsent, and the session waits for it. Sends from the first kickoff message
/// whose `message.sent` is not recorded (ids are derived, so one the runtime had accepted
/// before the crash is answered as a duplicate), with an observer that finalizes only after.
pub async fn resume_kickoff(service: RunService, plan: Plan, from: usize) {
    let (kickoff_done, kickoff_watch) = watch::channel(false);
    let session = &plan.request.session;
    super::observer::spawn(
        &service,
        &plan.run_id,
        &plan.session_id,
        &session.initiator,
        kickoff_watch,
    );
    if let Err(error) = kickoff(&service, &plan, from, kickoff_done).await {
        tracing::warn!(run_id = %plan.run_id, %error, "kickoff failed after a restart");
        if let Err(write_error) = service
            .finalize_without_session(&plan.run_id, RunStatus::Failed, Some(&error))
            .await
        {
            tracing::error!(run_id = %plan.run_id, %write_error, "could not record the run's failure");
        }
    }
}

/// Kickoff messages recorded as sent, counted from the first: where a resumed kickoff starts.
pub async fn kickoff_recorded(service: &RunService, run_id: &str) -> Result<usize, ApiError> {
    let sent = service
        .store()
        .query_events(&crate::domain::query::EventQuery {
            run_id: Some(run_id.to_owned()),
            types: vec![types::MESSAGE_SENT.to_owned()],
            after_seq: 0,
            after_ts: None,
            before_ts: None,
            limit: u64::MAX >> 1,
        })
        .await?;
    let ids: std::collections::HashSet<&str> = sent
        .iter()
        .filter_map(|event| event.data["messageId"].as_str())
        .collect();
    Ok((0..)
        .take_while(|position| ids.contains(kickoff_message_id(run_id, *position).as_str()))
        .count())
}

/// Sends the kickoff from `from` on, recording each; `kickoff_done` says when it is over.
async fn kickoff(
    service: &RunService,
    plan: &Plan,
    from: usize,
    kickoff_done: watch::Sender<bool>,
) -> Result<(), ApiError> {
    let run_id = plan.run_id.as_str();
    let session = &plan.request.session;
    for (position, message) in plan.request.kickoff.iter().enumerate().skip(from) {
        let message_id = kickoff_message_id(run_id, position);
        let span = service.tracing().child(
            run_id,
            "runtime.Send",
            vec![
                KeyValue::new("macp.message_type", message.message_type.clone()),
                KeyValue::new("macp.sender", message.from.clone()),
            ],
        );
        let sent = service
            .runtime()
            .send(
                envelope(
                    &session.mode_name,
                    &message.message_type,
                    &plan.session_id,
                    message_id.clone(),
                    message.payload.clone(),
                ),
                &message.from,
            )
            .with_context(span.context())
            .await;
        if let Err(error) = &sent {
            span.fail(error.to_string());
        }
        drop(span);
        match sent {
            Ok(ack) => {
                emit(
                    service,
                    run_id,
                    vec![message_sent(
                        &plan.session_id,
                        &message.from,
                        &message.to,
                        &message.message_type,
                        &message.kind,
                        &message_id,
                        &ack,
                        &message.payload_descriptor,
                    )],
                    Change::default(),
                )
                .await?;
            }
            Err(error) => {
                let mut drafts = vec![EventDraft::new(
                    types::MESSAGE_SEND_FAILED,
                    crate::time::now(),
                    Some(Subject::new("message", message_id.clone())),
                    control_plane(),
                    json!({
                        "sessionId": plan.session_id,
                        "sender": message.from,
                        "to": message.to,
                        "messageType": message.message_type,
                        "messageId": message_id,
                        "kickoffIndex": position,
                        "error": { "code": error.runtime_code(), "message": error.to_string() },
                    }),
                )];
                if let RuntimeError::Refused {
                    code,
                    message: reason,
                    details,
                } = &error
                    && code == "POLICY_DENIED"
                {
                    drafts.push(policy_denied_event(
                        code,
                        reason,
                        details.as_ref(),
                        &plan.session_id,
                        crate::time::now(),
                        control_plane(),
                    ));
                }
                let recorded = emit(service, run_id, drafts, Change::default()).await?;
                if !recorded || session_ended(service, plan).await {
                    // The session ended under the kickoff (cancelled here or at the runtime):
                    // the run ends with the session's state, not as a kickoff failure.
                    break;
                }
                let mut api_error = error.to_api_error();
                api_error.message = format!(
                    "kickoff[{position}] ({} from {}) refused: {}",
                    message.message_type, message.from, api_error.message
                );
                if api_error.code != ErrorCode::RuntimeUnavailable
                    && api_error.code != ErrorCode::RuntimeTimeout
                {
                    api_error.code = ErrorCode::KickoffFailed;
                }
                return Err(api_error);
            }
        }
    }
    // Nobody listening only means the observer already stopped.
    let _ = kickoff_done.send(true);
    Ok(())
}

/// Whether the runtime (the authority) says the run's session is over.
async fn session_ended(service: &RunService, plan: &Plan) -> bool {
    let session = service
        .runtime()
        .get_session(&plan.session_id, &plan.request.session.initiator)
        .await;
    session.is_ok_and(|metadata| {
        matches!(
            SessionState::try_from(metadata.state),
            Ok(SessionState::Resolved | SessionState::Cancelled | SessionState::Expired)
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn message_sent(
    session_id: &str,
    sender: &str,
    to: &[String],
    message_type: &str,
    kind: &str,
    message_id: &str,
    ack: &pb::Ack,
    payload_descriptor: &serde_json::Value,
) -> EventDraft {
    EventDraft::new(
        types::MESSAGE_SENT,
        crate::time::now(),
        Some(Subject::new("message", message_id.to_owned())),
        control_plane(),
        json!({
            "sessionId": session_id,
            "sender": sender,
            "to": to,
            "messageType": message_type,
            "kind": kind,
            "messageId": message_id,
            "ack": {
                "ok": ack.ok,
                "duplicate": ack.duplicate,
                "messageId": ack.message_id,
                "sessionId": ack.session_id,
                "acceptedAtUnixMs": ack.accepted_at_unix_ms,
                "sessionState": state_name(ack.session_state),
            },
            "payloadDescriptor": payload_descriptor,
        }),
    )
}
