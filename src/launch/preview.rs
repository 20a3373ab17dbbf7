//! The launch preview (`CompileLaunch`): the compiled ExecutionRequest, unchanged, and beside it
//! the same run as the UI console previews and validates it — the reference registry's later
//! output. That is a RunDescriptor (the request without kickoff: the initiator agent starts the
//! session) naming a session id fresh per compile, which a later `POST /runs` of the descriptor
//! honours (the run takes that id); what the initiator would send to start it; and the
//! scenario's policy hints and context.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::registry::Compiled;

/// What `CompileLaunch` answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    #[serde(flatten)]
    pub compiled: Compiled,
    pub run_descriptor: Value,
    pub session_id: String,
    /// `live` or `sandbox`, as in both requests.
    pub mode: String,
    pub scenario_meta: Value,
    /// What the initiator agent sends: its SessionStart and first kickoff message. Absent when
    /// the scenario has no kickoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Value>,
}

/// The session fields a RunDescriptor carries (`runs::request` reads them, and the
/// participants' ids); the rest of the session (roles, commitments, context, policy hints) is
/// the agents' to know.
const DESCRIPTOR_SESSION_FIELDS: &[&str] = &[
    "modeName",
    "modeVersion",
    "configurationVersion",
    "policyVersion",
    "ttlMs",
    "initiatorParticipantId",
    "metadata",
];

pub fn preview(compiled: Compiled) -> Preview {
    let request = &compiled.execution_request;
    let session = request.get("session").unwrap_or(&Value::Null);
    let session_id = uuid::Uuid::new_v4().to_string();
    let participant_ids: Vec<Value> = session
        .get("participants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|participant| participant.get("id").cloned())
        .collect();

    let mut descriptor_session = Map::new();
    descriptor_session.insert("sessionId".to_owned(), json!(session_id));
    copy(session, DESCRIPTOR_SESSION_FIELDS, &mut descriptor_session);
    descriptor_session.insert(
        "participants".to_owned(),
        participant_ids
            .iter()
            .map(|id| json!({ "id": id }))
            .collect::<Vec<_>>()
            .into(),
    );
    let mut run_descriptor = Map::new();
    copy(request, &["mode", "runtime"], &mut run_descriptor);
    run_descriptor.insert("session".to_owned(), Value::Object(descriptor_session));
    copy(request, &["execution"], &mut run_descriptor);

    let mut scenario_meta = Map::new();
    for (from, to) in [
        ("policyHints", "policyHints"),
        ("context", "sessionContext"),
        ("initiatorParticipantId", "initiatorParticipantId"),
    ] {
        if let Some(value) = session.get(from).filter(|value| !value.is_null()) {
            scenario_meta.insert(to.to_owned(), value.clone());
        }
    }

    let mode = request
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("live")
        .to_owned();
    let initiator = initiator(request, session, participant_ids);
    Preview {
        run_descriptor: Value::Object(run_descriptor),
        session_id,
        mode,
        scenario_meta: Value::Object(scenario_meta),
        initiator,
        compiled,
    }
}

/// The initiator's SessionStart and its first kickoff message (the seed's rule for who starts:
/// the named initiator, else the first kickoff sender).
fn initiator(request: &Value, session: &Value, participants: Vec<Value>) -> Option<Value> {
    let kickoff = request.get("kickoff")?.as_array()?.first()?;
    let participant_id = session
        .get("initiatorParticipantId")
        .or_else(|| kickoff.get("from"))?
        .as_str()?;
    let metadata = session.get("metadata").unwrap_or(&Value::Null);
    // The scenario's intent, else what it is: `pack/scenario`.
    let intent = metadata.get("intent").and_then(Value::as_str).or_else(|| {
        metadata
            .get("scenarioRef")
            .and_then(Value::as_str)
            .map(|scenario_ref| {
                scenario_ref
                    .rsplit_once('@')
                    .map_or(scenario_ref, |(name, _)| name)
            })
    });
    let mut session_start = Map::new();
    session_start.insert("intent".to_owned(), json!(intent.unwrap_or_default()));
    session_start.insert("participants".to_owned(), Value::Array(participants));
    copy(
        session,
        &[
            "ttlMs",
            "modeVersion",
            "configurationVersion",
            "policyVersion",
            "context",
            "contextId",
            "roots",
        ],
        &mut session_start,
    );

    let envelope = kickoff.get("payloadEnvelope").unwrap_or(&Value::Null);
    let proto = envelope.get("proto").unwrap_or(&Value::Null);
    let payload = [
        kickoff.get("payload"),
        envelope.get("json"),
        proto.get("value"),
    ]
    .into_iter()
    .flatten()
    .find(|payload| !payload.is_null())
    .cloned()
    .unwrap_or_else(|| json!({}));
    let mut first = Map::new();
    copy(kickoff, &["messageType"], &mut first);
    if let Some(type_name) = proto.get("typeName") {
        first.insert("payloadType".to_owned(), type_name.clone());
    }
    first.insert("payload".to_owned(), payload);
    Some(json!({
        "participantId": participant_id,
        "sessionStart": session_start,
        "kickoff": first,
    }))
}

/// Copies the present, non-null `keys` of `from` into `to`.
fn copy(from: &Value, keys: &[&str], to: &mut Map<String, Value>) {
    for key in keys {
        if let Some(value) = from.get(*key).filter(|value| !value.is_null()) {
            to.insert((*key).to_owned(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(execution_request: Value) -> Compiled {
        Compiled {
            execution_request,
            display: crate::registry::Display {
                title: "t".to_owned(),
                scenario_ref: "p/s@1".to_owned(),
                template_id: None,
                expected_decision_kinds: None,
            },
            participant_bindings: Vec::new(),
        }
    }

    #[test]
    fn a_descriptor_is_the_request_without_kickoff() {
        let preview = preview(compiled(json!({
            "mode": "live",
            "runtime": {"kind": "rust", "version": "v1"},
            "session": {
                "modeName": "m", "modeVersion": "1.0.0", "configurationVersion": "c",
                "policyVersion": "policy.default", "policyHints": {"type": "none"}, "ttlMs": 1000,
                "initiatorParticipantId": "lead",
                "participants": [{"id": "a", "role": "r", "metadata": {"agentRef": "x"}}, {"id": "lead"}],
                "commitments": [{"id": "c1"}], "context": {"k": 1},
                "metadata": {"scenarioRef": "p/s@1", "source": "scenario-registry"}
            },
            "kickoff": [{"from": "lead", "to": ["a"], "messageType": "Proposal",
                         "payloadEnvelope": {"encoding": "proto", "proto": {"typeName": "T", "value": {"id": "p1"}}}}],
            "execution": {"tags": ["t"], "requester": {"actorId": "svc", "actorType": "service"}}
        })));
        assert!(uuid::Uuid::parse_str(&preview.session_id).is_ok());
        assert_eq!(
            preview.run_descriptor,
            json!({
                "mode": "live",
                "runtime": {"kind": "rust", "version": "v1"},
                "session": {
                    "sessionId": preview.session_id, "modeName": "m", "modeVersion": "1.0.0",
                    "configurationVersion": "c", "policyVersion": "policy.default", "ttlMs": 1000,
                    "initiatorParticipantId": "lead",
                    "metadata": {"scenarioRef": "p/s@1", "source": "scenario-registry"},
                    "participants": [{"id": "a"}, {"id": "lead"}]
                },
                "execution": {"tags": ["t"], "requester": {"actorId": "svc", "actorType": "service"}}
            })
        );
        assert_eq!(preview.mode, "live");
        assert_eq!(
            preview.scenario_meta,
            json!({"policyHints": {"type": "none"}, "sessionContext": {"k": 1}, "initiatorParticipantId": "lead"})
        );
        assert_eq!(
            preview.initiator,
            Some(json!({
                "participantId": "lead",
                "sessionStart": {
                    "intent": "p/s", "participants": ["a", "lead"], "ttlMs": 1000, "modeVersion": "1.0.0",
                    "configurationVersion": "c", "policyVersion": "policy.default", "context": {"k": 1}
                },
                "kickoff": {"messageType": "Proposal", "payloadType": "T", "payload": {"id": "p1"}}
            }))
        );
    }

    #[test]
    fn each_compile_names_a_new_session_and_no_kickoff_no_initiator() {
        let request = json!({"mode": "sandbox", "runtime": {"kind": "rust"},
            "session": {"modeName": "m", "participants": [{"id": "a"}]}});
        let first = preview(compiled(request.clone()));
        let second = preview(compiled(request));
        assert_ne!(first.session_id, second.session_id);
        assert_eq!(first.mode, "sandbox");
        assert_eq!(first.initiator, None);
        assert_eq!(first.scenario_meta, json!({}));
    }
}
