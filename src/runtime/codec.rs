//! Payload codec: request payload envelopes → envelope bytes, and runtime payload bytes → JSON.
//!
//! Proto payloads are encoded and decoded through a descriptor pool compiled (by build.rs) from
//! the pinned `macp-proto` files, so every payload type the runtime knows is available by name.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::Value;

const RUNTIME_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runtime_descriptor.bin"));

/// The descriptor pool of the MACP runtime protos (built once per process).
pub fn runtime_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes are produced by our own build script from the pinned protos; failing to
        // decode them is a build defect, not a runtime condition.
        DescriptorPool::decode(RUNTIME_DESCRIPTOR_SET).unwrap_or_else(|error| {
            tracing::error!(%error, "runtime descriptor set is corrupt");
            DescriptorPool::new()
        })
    })
}

/// The proto type of a payload, by mode and message type.
pub fn payload_type(mode: &str, message_type: &str) -> Option<&'static str> {
    let core = match message_type {
        "SessionStart" => Some("macp.v1.SessionStartPayload"),
        "Commitment" => Some("macp.v1.CommitmentPayload"),
        "Signal" => Some("macp.v1.SignalPayload"),
        "Progress" => Some("macp.v1.ProgressPayload"),
        _ => None,
    };
    if core.is_some() {
        return core;
    }
    let by_mode = match (mode, message_type) {
        ("macp.mode.decision.v1", "Proposal") => "macp.modes.decision.v1.ProposalPayload",
        ("macp.mode.decision.v1", "Evaluation") => "macp.modes.decision.v1.EvaluationPayload",
        ("macp.mode.decision.v1", "Objection") => "macp.modes.decision.v1.ObjectionPayload",
        ("macp.mode.decision.v1", "Vote") => "macp.modes.decision.v1.VotePayload",
        ("macp.mode.proposal.v1", "Proposal") => "macp.modes.proposal.v1.ProposalPayload",
        ("macp.mode.proposal.v1", "CounterProposal") => {
            "macp.modes.proposal.v1.CounterProposalPayload"
        }
        ("macp.mode.proposal.v1", "Accept") => "macp.modes.proposal.v1.AcceptPayload",
        ("macp.mode.proposal.v1", "Reject") => "macp.modes.proposal.v1.RejectPayload",
        ("macp.mode.proposal.v1", "Withdraw") => "macp.modes.proposal.v1.WithdrawPayload",
        ("macp.mode.task.v1", "TaskRequest") => "macp.modes.task.v1.TaskRequestPayload",
        ("macp.mode.task.v1", "TaskAccept") => "macp.modes.task.v1.TaskAcceptPayload",
        ("macp.mode.task.v1", "TaskReject") => "macp.modes.task.v1.TaskRejectPayload",
        ("macp.mode.task.v1", "TaskUpdate") => "macp.modes.task.v1.TaskUpdatePayload",
        ("macp.mode.task.v1", "TaskComplete") => "macp.modes.task.v1.TaskCompletePayload",
        ("macp.mode.task.v1", "TaskFail") => "macp.modes.task.v1.TaskFailPayload",
        ("macp.mode.handoff.v1", "HandoffOffer") => "macp.modes.handoff.v1.HandoffOfferPayload",
        ("macp.mode.handoff.v1", "HandoffContext") => "macp.modes.handoff.v1.HandoffContextPayload",
        ("macp.mode.handoff.v1", "HandoffAccept") => "macp.modes.handoff.v1.HandoffAcceptPayload",
        ("macp.mode.handoff.v1", "HandoffDecline") => "macp.modes.handoff.v1.HandoffDeclinePayload",
        ("macp.mode.quorum.v1", "ApprovalRequest") => "macp.modes.quorum.v1.ApprovalRequestPayload",
        ("macp.mode.quorum.v1", "Approve") => "macp.modes.quorum.v1.ApprovePayload",
        ("macp.mode.quorum.v1", "Reject") => "macp.modes.quorum.v1.RejectPayload",
        ("macp.mode.quorum.v1", "Abstain") => "macp.modes.quorum.v1.AbstainPayload",
        ("ext.multi_round.v1", "Contribute") => "macp.modes.multi_round.v1.ContributePayload",
        _ => return None,
    };
    Some(by_mode)
}

/// Encodes `value` (JSON; snake_case or camelCase field names) as the named proto message.
pub fn encode_proto(type_name: &str, value: &Value) -> Result<Vec<u8>, String> {
    let descriptor = runtime_pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| format!("unknown proto type '{type_name}'"))?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message = DynamicMessage::deserialize_with_options(descriptor, value, &options)
        .map_err(|error| error.to_string())?;
    Ok(message.encode_to_vec())
}

/// Decodes standard base64 text.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(text.trim())
        .map_err(|error| format!("invalid base64: {error}"))
}

pub fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// How a runtime payload was turned into JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPayload {
    pub value: Value,
    /// The proto type the bytes were decoded as, when they were.
    pub type_name: Option<&'static str>,
}

/// Decodes payload bytes of a runtime envelope into JSON: the known proto type of
/// (mode, message type) first, then UTF-8 JSON, then text. The JSON is never wrapped, so
/// consumers read fields at the top level whatever the encoding was. Empty payloads give `None`.
pub fn decode_payload(mode: &str, message_type: &str, bytes: &[u8]) -> Option<DecodedPayload> {
    if bytes.is_empty() {
        return None;
    }
    if let Some(type_name) = payload_type(mode, message_type)
        && let Some(value) = decode_proto(type_name, bytes)
    {
        return Some(DecodedPayload {
            value,
            type_name: Some(type_name),
        });
    }
    let value = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<Value>(text)
            .unwrap_or_else(|_| serde_json::json!({ "text": text })),
        Err(_) => serde_json::json!({ "payloadBase64": encode_base64(bytes) }),
    };
    Some(DecodedPayload {
        value,
        type_name: None,
    })
}

fn decode_proto(type_name: &str, bytes: &[u8]) -> Option<Value> {
    let descriptor = runtime_pool().get_message_by_name(type_name)?;
    let message = DynamicMessage::decode(descriptor, bytes).ok()?;
    // camelCase names, defaults omitted, 64-bit integers as JSON numbers (what a JS client wants).
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proto_round_trip_accepts_snake_and_camel_case() {
        let snake = encode_proto(
            "macp.modes.decision.v1.ProposalPayload",
            &json!({"proposal_id": "p1", "option": "step_up", "rationale": "new device"}),
        )
        .expect("snake_case encodes");
        let camel = encode_proto(
            "macp.modes.decision.v1.ProposalPayload",
            &json!({"proposalId": "p1", "option": "step_up", "rationale": "new device"}),
        )
        .expect("camelCase encodes");
        assert_eq!(snake, camel);
        let decoded = decode_payload("macp.mode.decision.v1", "Proposal", &snake).expect("decodes");
        assert_eq!(
            decoded.value,
            json!({"proposalId": "p1", "option": "step_up", "rationale": "new device"})
        );
        assert_eq!(
            decoded.type_name,
            Some("macp.modes.decision.v1.ProposalPayload")
        );
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        let unknown_type = encode_proto("macp.modes.decision.v1.Nope", &json!({}));
        assert!(unknown_type.unwrap_err().contains("unknown proto type"));
        let unknown_field = encode_proto(
            "macp.modes.decision.v1.VotePayload",
            &json!({"proposal_id": "p1", "colour": "red"}),
        );
        assert!(unknown_field.unwrap_err().contains("colour"));
    }

    #[test]
    fn non_proto_payloads_decode_as_plain_json_or_text() {
        let json_payload = decode_payload("x.mode", "Custom", br#"{"a":1}"#).expect("json");
        assert_eq!(json_payload.value, json!({"a": 1}));
        let text = decode_payload("x.mode", "Custom", b"hello").expect("text");
        assert_eq!(text.value, json!({"text": "hello"}));
        assert!(decode_payload("x.mode", "Custom", b"").is_none());
    }
}
