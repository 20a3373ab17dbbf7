//! Runtime items → canonical events. Pure: the same item, context and time give the same events
//! (golden-tested), and no message type produces two events of one type.

use std::collections::HashSet;

use macp_runtime::pb::{Envelope, MacpError, SessionMetadata, SessionState};
use serde_json::{Map, Value, json};

use super::canonical::{EventDraft, Source, Subject, types};
use crate::domain::signals::LLM_CALL_SIGNAL_TYPE;
use crate::runtime::codec;
use crate::time::Timestamp;

/// Something the runtime told us about a session.
#[derive(Debug, Clone)]
pub enum RuntimeItem {
    /// An accepted envelope with its runtime ordinal (1-based, per session).
    Envelope { envelope: Envelope, ordinal: u64 },
    /// An ambient envelope (`WatchSignals`: a Signal outside any session's history, matched to
    /// the run by its correlation): no ordinal.
    Ambient(Envelope),
    /// An inline refusal on the session stream.
    InlineError(MacpError),
    /// A session state the runtime reported (WatchSessions / GetSession).
    SessionState(SessionMetadata),
}

impl RuntimeItem {
    /// The `kind` of the stored raw event.
    pub fn raw_kind(&self) -> &'static str {
        match self {
            RuntimeItem::Envelope { .. } => "stream-envelope",
            RuntimeItem::Ambient(_) => "ambient-envelope",
            RuntimeItem::InlineError(_) => "stream-inline-error",
            RuntimeItem::SessionState(_) => "session-snapshot",
        }
    }

    /// The raw event as stored (payload bytes as base64).
    pub fn raw_payload(&self) -> Value {
        match self {
            RuntimeItem::Envelope { envelope, ordinal } => json!({
                "ordinal": ordinal,
                "envelope": envelope_json(envelope),
            }),
            RuntimeItem::Ambient(envelope) => json!({ "envelope": envelope_json(envelope) }),
            RuntimeItem::InlineError(error) => json!({ "error": error_json(error) }),
            RuntimeItem::SessionState(metadata) => json!({ "session": session_json(metadata) }),
        }
    }
}

fn envelope_json(envelope: &Envelope) -> Value {
    json!({
        "macpVersion": envelope.macp_version,
        "mode": envelope.mode,
        "messageType": envelope.message_type,
        "messageId": envelope.message_id,
        "sessionId": envelope.session_id,
        "sender": envelope.sender,
        "timestampUnixMs": envelope.timestamp_unix_ms,
        "payloadBase64": codec::encode_base64(&envelope.payload),
    })
}

fn error_json(error: &MacpError) -> Value {
    let mut value = json!({
        "code": error.code,
        "message": error.message,
        "sessionId": error.session_id,
        "messageId": error.message_id,
    });
    if let (Some(details), Some(map)) = (error_details(error), value.as_object_mut()) {
        map.insert("details".to_owned(), details);
    }
    value
}

fn error_details(error: &MacpError) -> Option<Value> {
    if error.details.is_empty() {
        return None;
    }
    serde_json::from_slice(&error.details).ok()
}

/// The session state's wire name, e.g. `SESSION_STATE_RESOLVED`.
pub fn state_name(state: i32) -> &'static str {
    SessionState::try_from(state)
        .map(|state| state.as_str_name())
        .unwrap_or("SESSION_STATE_UNSPECIFIED")
}

fn session_json(metadata: &SessionMetadata) -> Value {
    json!({
        "sessionId": metadata.session_id,
        "state": state_name(metadata.state),
        "startedAtUnixMs": metadata.started_at_unix_ms,
        "expiresAtUnixMs": metadata.expires_at_unix_ms,
        "modeName": metadata.mode,
        "modeVersion": metadata.mode_version,
        "configurationVersion": metadata.configuration_version,
        "policyVersion": metadata.policy_version,
        "initiator": metadata.initiator,
    })
}

/// What the normalizer knows about the run it is normalizing for.
#[derive(Debug, Clone, Default)]
pub struct NormalizerContext {
    pub mode: String,
    /// Declared participants, for recipient inference.
    pub participants: Vec<String>,
    /// Senders already announced with `participant.seen`.
    pub seen: HashSet<String>,
}

pub fn normalize(
    context: &mut NormalizerContext,
    item: &RuntimeItem,
    observed_at: Timestamp,
) -> Vec<EventDraft> {
    match item {
        RuntimeItem::Envelope { envelope, ordinal } => {
            normalize_envelope(context, envelope, Some(*ordinal), observed_at)
        }
        RuntimeItem::Ambient(envelope) => normalize_envelope(context, envelope, None, observed_at),
        RuntimeItem::InlineError(error) => normalize_inline_error(error, observed_at),
        RuntimeItem::SessionState(metadata) => vec![EventDraft::new(
            types::SESSION_STATE_CHANGED,
            observed_at,
            Some(Subject::new("session", metadata.session_id.clone())),
            Source::runtime("session-snapshot"),
            session_json(metadata),
        )],
    }
}

fn normalize_inline_error(error: &MacpError, at: Timestamp) -> Vec<EventDraft> {
    let subject_id = if error.message_id.is_empty() {
        error.code.clone()
    } else {
        error.message_id.clone()
    };
    let mut events = vec![EventDraft::new(
        types::MESSAGE_SEND_FAILED,
        at,
        Some(Subject::new("message", subject_id)),
        Source::runtime("stream-inline-error"),
        json!({
            "errorCode": error.code,
            "errorMessage": error.message,
            "sessionId": error.session_id,
            "messageId": error.message_id,
        }),
    )];
    if error.code == "POLICY_DENIED" {
        events.push(policy_denied_event(
            &error.code,
            &error.message,
            error_details(error).as_ref(),
            &error.session_id,
            at,
            Source::runtime("stream-inline-error"),
        ));
    }
    events
}

/// `policy.denied` with the runtime's reasons: details.reasons, else the message.
pub fn policy_denied_event(
    code: &str,
    message: &str,
    details: Option<&Value>,
    session_id: &str,
    at: Timestamp,
    source: Source,
) -> EventDraft {
    let reasons = details
        .and_then(|details| details.get("reasons"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![Value::String(message.to_owned())]);
    let mut data = json!({
        "errorCode": code,
        "reasons": reasons,
        "sessionId": session_id,
    });
    if let (Some(denials), Some(map)) = (
        details.and_then(|details| details.get("denials")),
        data.as_object_mut(),
    ) {
        map.insert("denials".to_owned(), denials.clone());
    }
    EventDraft::new(
        types::POLICY_DENIED,
        at,
        Some(Subject::new("policy", session_id.to_owned())),
        source,
        data,
    )
}

/// The canonical type a mode message maps to, beyond `message.received`.
fn derived_type(message_type: &str) -> Option<&'static str> {
    let lower = message_type.to_ascii_lowercase();
    let derived = match message_type {
        "Signal" => types::SIGNAL_EMITTED,
        "SignalAck" | "SignalAcknowledged" => types::SIGNAL_ACKNOWLEDGED,
        "Commitment" => types::DECISION_FINALIZED,
        "Proposal" | "CounterProposal" | "ApprovalRequest" | "TaskRequest" | "HandoffOffer" => {
            types::PROPOSAL_CREATED
        }
        "Evaluation" | "Objection" | "Vote" | "Accept" | "Reject" | "Withdraw" | "Approve"
        | "Abstain" | "TaskAccept" | "TaskReject" | "TaskUpdate" | "TaskComplete" | "TaskFail"
        | "HandoffContext" | "HandoffAccept" | "HandoffDecline" | "Contribute" => {
            types::PROPOSAL_UPDATED
        }
        "Progress" => types::PROGRESS_REPORTED,
        "PolicyResolved" => types::POLICY_RESOLVED,
        "PolicyCommitmentEvaluated" => types::POLICY_COMMITMENT_EVALUATED,
        "PolicyDenied" => types::POLICY_DENIED,
        _ if lower == "toolcall" || lower == "toolrequest" => types::TOOL_CALLED,
        _ if lower == "toolresult" || lower == "toolcompleted" || lower == "tooloutput" => {
            types::TOOL_COMPLETED
        }
        _ => return None,
    };
    Some(derived)
}

/// The first string among `keys` in `payload`.
fn first_str<'a>(payload: Option<&'a Value>, keys: &[&str]) -> Option<&'a str> {
    let payload = payload?;
    keys.iter()
        .find_map(|key| payload.get(*key).and_then(Value::as_str))
        .filter(|value| !value.is_empty())
}

fn derived_subject(event_type: &str, payload: Option<&Value>, message_id: &str) -> Subject {
    let pick = |keys: &[&str]| first_str(payload, keys).unwrap_or(message_id).to_owned();
    match event_type {
        types::SIGNAL_EMITTED => Subject::new("signal", message_id.to_owned()),
        types::SIGNAL_ACKNOWLEDGED => Subject::new("signal", pick(&["signalId", "signal_id"])),
        types::PROPOSAL_CREATED | types::PROPOSAL_UPDATED => Subject::new(
            "proposal",
            pick(&[
                "proposalId",
                "proposal_id",
                "requestId",
                "request_id",
                "taskId",
                "task_id",
                "handoffId",
                "handoff_id",
            ]),
        ),
        types::DECISION_FINALIZED => Subject::new(
            "decision",
            pick(&["commitmentId", "commitment_id", "decisionId", "decision_id"]),
        ),
        types::TOOL_CALLED | types::TOOL_COMPLETED => Subject::new(
            "tool",
            pick(&["toolCallId", "tool_call_id", "requestId", "request_id"]),
        ),
        types::POLICY_RESOLVED | types::POLICY_COMMITMENT_EVALUATED | types::POLICY_DENIED => {
            Subject::new(
                "policy",
                pick(&["commitmentId", "commitment_id", "policyId"]),
            )
        }
        _ => Subject::new("message", message_id.to_owned()),
    }
}

fn normalize_envelope(
    context: &mut NormalizerContext,
    envelope: &Envelope,
    ordinal: Option<u64>,
    at: Timestamp,
) -> Vec<EventDraft> {
    let source = Source::runtime(&envelope.message_type);
    let decoded = codec::decode_payload(&envelope.mode, &envelope.message_type, &envelope.payload);
    let payload = decoded.as_ref().map(|decoded| &decoded.value);
    let type_name = decoded.as_ref().and_then(|decoded| decoded.type_name);
    let mut events = Vec::with_capacity(4);

    if !envelope.sender.is_empty() && context.seen.insert(envelope.sender.clone()) {
        events.push(EventDraft::new(
            types::PARTICIPANT_SEEN,
            at,
            Some(Subject::new("participant", envelope.sender.clone())),
            source.clone(),
            json!({ "participantId": envelope.sender, "status": "idle" }),
        ));
    }

    let mut received = Map::new();
    received.insert("modeName".into(), json!(envelope.mode));
    received.insert("messageType".into(), json!(envelope.message_type));
    received.insert("messageId".into(), json!(envelope.message_id));
    received.insert("sessionId".into(), json!(envelope.session_id));
    received.insert("sender".into(), json!(envelope.sender));
    if let Some(ordinal) = ordinal {
        received.insert("ordinal".into(), json!(ordinal));
    }
    received.insert("to".into(), json!(recipients(context, envelope, payload)));
    match (payload, envelope.payload.is_empty()) {
        (Some(payload), _) => {
            received.insert("payload".into(), payload.clone());
        }
        (None, false) => {
            received.insert(
                "payload".into(),
                json!({ "payloadBase64": codec::encode_base64(&envelope.payload) }),
            );
        }
        (None, true) => {}
    }
    if let Some(type_name) = type_name {
        received.insert("payloadTypeName".into(), json!(type_name));
    }
    events.push(EventDraft::new(
        types::MESSAGE_RECEIVED,
        at,
        Some(Subject::new("message", envelope.message_id.clone())),
        source.clone(),
        Value::Object(received),
    ));

    if let Some(llm) = payload.and_then(|payload| llm_call(&envelope.message_type, payload)) {
        let mut data = llm;
        if let Some(map) = data.as_object_mut() {
            map.insert("participantId".into(), json!(envelope.sender));
            map.insert("messageId".into(), json!(envelope.message_id));
        }
        events.push(EventDraft::new(
            types::LLM_CALL_COMPLETED,
            at,
            Some(Subject::new("participant", envelope.sender.clone())),
            source.clone(),
            data,
        ));
    }

    if let Some(event_type) = derived_type(&envelope.message_type) {
        let data = derived_data(envelope, payload, type_name, event_type);
        events.push(EventDraft::new(
            event_type,
            at,
            Some(derived_subject(event_type, payload, &envelope.message_id)),
            source.clone(),
            data,
        ));
    }

    // Task reports also carry progress; `Progress` itself is already `progress.reported` above.
    if let Some(progress) = task_progress(&envelope.message_type, payload) {
        events.push(EventDraft::new(
            types::PROGRESS_REPORTED,
            at,
            Some(Subject::new("participant", envelope.sender.clone())),
            source,
            json!({
                "modeName": envelope.mode,
                "messageType": envelope.message_type,
                "sender": envelope.sender,
                "percentage": progress.0,
                "message": progress.1,
            }),
        ));
    }
    events
}

fn derived_data(
    envelope: &Envelope,
    payload: Option<&Value>,
    type_name: Option<&str>,
    event_type: &str,
) -> Value {
    let mut data = Map::new();
    data.insert("modeName".into(), json!(envelope.mode));
    data.insert("messageType".into(), json!(envelope.message_type));
    data.insert("messageId".into(), json!(envelope.message_id));
    data.insert("sessionId".into(), json!(envelope.session_id));
    data.insert("sender".into(), json!(envelope.sender));
    data.insert(
        "decodedPayload".into(),
        payload.cloned().unwrap_or_else(|| json!({})),
    );
    if let Some(type_name) = type_name {
        data.insert("payloadTypeName".into(), json!(type_name));
    }
    if event_type == types::PROGRESS_REPORTED {
        let progress = payload
            .and_then(|p| p.get("progress"))
            .and_then(Value::as_f64);
        let total = payload.and_then(|p| p.get("total")).and_then(Value::as_f64);
        let percentage = match (progress, total) {
            (Some(progress), Some(total)) if total > 0.0 => Some(progress / total * 100.0),
            (Some(progress), _) => Some(progress * 100.0),
            _ => None,
        };
        if let Some(percentage) = percentage {
            data.insert("percentage".into(), json!(percentage));
        }
        if let Some(message) = first_str(payload, &["message"]) {
            data.insert("message".into(), json!(message));
        }
        if let Some(token) = first_str(payload, &["progressToken"]) {
            data.insert("progressToken".into(), json!(token));
        }
    }
    if event_type == types::SIGNAL_EMITTED
        && let Some(bytes) = first_str(payload, &["data"])
        && let Ok(decoded) = codec::decode_base64(bytes)
        && let Ok(signal_data) = serde_json::from_slice::<Value>(&decoded)
    {
        // Signal data is bytes on the wire; JSON data is shown as JSON.
        data.insert("signalData".into(), signal_data);
    }
    Value::Object(data)
}

/// Recipients of a runtime envelope, which carries none: a SessionStart goes to its declared
/// participants, proposals and requests to every other participant.
fn recipients(
    context: &NormalizerContext,
    envelope: &Envelope,
    payload: Option<&Value>,
) -> Vec<String> {
    let others = |list: &[String]| {
        list.iter()
            .filter(|participant| **participant != envelope.sender)
            .cloned()
            .collect::<Vec<_>>()
    };
    match envelope.message_type.as_str() {
        "SessionStart" => {
            let declared: Vec<String> = payload
                .and_then(|payload| payload.get("participants"))
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            others(&declared)
        }
        "Proposal" | "CounterProposal" | "ApprovalRequest" | "TaskRequest" => {
            others(&context.participants)
        }
        "HandoffOffer" => first_str(payload, &["targetParticipant", "target_participant"])
            .map(|target| vec![target.to_owned()])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn task_progress(message_type: &str, payload: Option<&Value>) -> Option<(Value, Value)> {
    match message_type {
        "TaskUpdate" => {
            let progress = payload?.get("progress")?.as_f64()?;
            let message = first_str(payload, &["message", "status"]).unwrap_or_default();
            Some((json!(progress * 100.0), json!(message)))
        }
        "TaskComplete" => Some((json!(100.0), json!("completed"))),
        "TaskFail" => Some((
            Value::Null,
            json!(first_str(payload, &["reason"]).unwrap_or("failed")),
        )),
        _ => None,
    }
}

fn as_u64(value: Option<&Value>) -> u64 {
    value
        .and_then(|value| {
            value
                .as_u64()
                .or_else(|| value.as_f64().map(|f| f.max(0.0) as u64))
        })
        .unwrap_or(0)
}

/// LLM usage carried by a payload (`llmCall`, `tokenUsage`, either under `metadata`, or the data
/// of a Signal of type `llm.call.completed`), in one normalized shape.
fn llm_call(message_type: &str, payload: &Value) -> Option<Value> {
    let signal_usage = (message_type == "Signal"
        && first_str(Some(payload), &["signalType"]) == Some(LLM_CALL_SIGNAL_TYPE))
    .then(|| {
        first_str(Some(payload), &["data"])
            .and_then(|bytes| codec::decode_base64(bytes).ok())
            .and_then(|decoded| serde_json::from_slice::<Value>(&decoded).ok())
    })
    .flatten();
    let usage = payload
        .get("llmCall")
        .or_else(|| payload.pointer("/metadata/llmCall"))
        .or_else(|| payload.get("tokenUsage"))
        .or_else(|| payload.pointer("/metadata/tokenUsage"))
        .cloned()
        .or_else(|| signal_usage.map(|data| data.get("tokenUsage").cloned().unwrap_or(data)))?;
    let prompt = as_u64(
        usage
            .get("promptTokens")
            .or_else(|| usage.get("prompt_tokens")),
    );
    let completion = as_u64(
        usage
            .get("completionTokens")
            .or_else(|| usage.get("completion_tokens")),
    );
    let model = first_str(Some(&usage), &["model"]);
    let has_text = usage.get("prompt").is_some() || usage.get("response").is_some();
    if prompt == 0 && completion == 0 && model.is_none() && !has_text {
        return None;
    }
    let mut call = Map::new();
    call.insert("promptTokens".into(), json!(prompt));
    call.insert("completionTokens".into(), json!(completion));
    // Agent-written numbers: saturated rather than overflowed.
    call.insert(
        "totalTokens".into(),
        json!(prompt.saturating_add(completion)),
    );
    if let Some(model) = model {
        call.insert("model".into(), json!(model));
    }
    for (key, aliases) in [
        ("latencyMs", &["latencyMs", "latency_ms"][..]),
        ("provider", &["provider"][..]),
        ("prompt", &["prompt"][..]),
        ("response", &["response"][..]),
    ] {
        if let Some(value) = aliases.iter().find_map(|alias| usage.get(*alias)) {
            call.insert(key.into(), value.clone());
        }
    }
    Some(Value::Object(call))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(message_type: &str, sender: &str, payload: Vec<u8>) -> Envelope {
        Envelope {
            macp_version: "1.0".into(),
            mode: "macp.mode.decision.v1".into(),
            message_type: message_type.into(),
            message_id: format!("m-{message_type}"),
            session_id: "s1".into(),
            sender: sender.into(),
            timestamp_unix_ms: 0,
            payload,
        }
    }

    fn types_of(events: &[EventDraft]) -> Vec<&'static str> {
        events.iter().map(|event| event.event_type).collect()
    }

    #[test]
    fn no_message_type_produces_two_events_of_one_type() {
        let progress = codec::encode_proto(
            "macp.v1.ProgressPayload",
            &json!({"progress_token": "t", "progress": 0.5, "message": "half"}),
        )
        .expect("encodes");
        for message_type in [
            "Progress",
            "PolicyResolved",
            "PolicyDenied",
            "Vote",
            "TaskUpdate",
        ] {
            let mut context = NormalizerContext::default();
            let events = normalize(
                &mut context,
                &RuntimeItem::Envelope {
                    envelope: envelope(message_type, "a", progress.clone()),
                    ordinal: 1,
                },
                crate::time::now(),
            );
            let kinds = types_of(&events);
            let unique: HashSet<_> = kinds.iter().collect();
            assert_eq!(unique.len(), kinds.len(), "{message_type}: {kinds:?}");
        }
    }

    #[test]
    fn token_counts_at_the_limit_saturate() {
        let call = llm_call(
            "Custom",
            &json!({"tokenUsage": {"promptTokens": u64::MAX, "completionTokens": u64::MAX}}),
        )
        .expect("a call");
        assert_eq!(call["totalTokens"], json!(u64::MAX));
    }

    #[test]
    fn a_sender_is_announced_once() {
        let mut context = NormalizerContext::default();
        let item = RuntimeItem::Envelope {
            envelope: envelope("Custom", "agent-a", b"{}".to_vec()),
            ordinal: 1,
        };
        let first = normalize(&mut context, &item, crate::time::now());
        let second = normalize(&mut context, &item, crate::time::now());
        assert_eq!(
            types_of(&first),
            vec![types::PARTICIPANT_SEEN, types::MESSAGE_RECEIVED]
        );
        assert_eq!(types_of(&second), vec![types::MESSAGE_RECEIVED]);
    }

    #[test]
    fn policy_denied_inline_errors_keep_the_runtime_reasons() {
        let error = MacpError {
            code: "POLICY_DENIED".into(),
            message: "denied".into(),
            session_id: "s1".into(),
            message_id: "m1".into(),
            details: br#"{"reasons":["quorum not reached"]}"#.to_vec(),
        };
        let events = normalize(
            &mut NormalizerContext::default(),
            &RuntimeItem::InlineError(error),
            crate::time::now(),
        );
        assert_eq!(
            types_of(&events),
            vec![types::MESSAGE_SEND_FAILED, types::POLICY_DENIED]
        );
        assert_eq!(events[1].data["reasons"], json!(["quorum not reached"]));
    }
}
