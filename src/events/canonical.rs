//! The canonical event: one JSON shape in REST lists, SSE, replay, export and gRPC.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::{self, Timestamp};

/// Stamped on every event and on the stored projection.
pub const SCHEMA_VERSION: u32 = 3;

/// Source kinds.
pub const SOURCE_RUNTIME: &str = "runtime";
pub const SOURCE_CONTROL_PLANE: &str = "macp-control-plane";
/// Source name of events normalized from runtime envelopes.
pub const RUNTIME_SOURCE_NAME: &str = "macp-runtime";

/// Event types (reference §5.1).
pub mod types {
    pub const RUN_CREATED: &str = "run.created";
    pub const RUN_STARTED: &str = "run.started";
    pub const RUN_COMPLETED: &str = "run.completed";
    pub const RUN_FAILED: &str = "run.failed";
    pub const RUN_CANCELLED: &str = "run.cancelled";
    pub const RUN_SUSPENDED: &str = "run.suspended";
    pub const RUN_RESUMED: &str = "run.resumed";
    pub const SESSION_BOUND: &str = "session.bound";
    pub const SESSION_STREAM_OPENED: &str = "session.stream.opened";
    pub const SESSION_STREAM_DISCONNECTED: &str = "session.stream.disconnected";
    pub const SESSION_STREAM_RECONNECTED: &str = "session.stream.reconnected";
    pub const SESSION_HISTORY_UNAVAILABLE: &str = "session.history.unavailable";
    pub const SESSION_STATE_CHANGED: &str = "session.state.changed";
    pub const PARTICIPANT_SEEN: &str = "participant.seen";
    pub const MESSAGE_SENT: &str = "message.sent";
    pub const MESSAGE_RECEIVED: &str = "message.received";
    pub const MESSAGE_SEND_FAILED: &str = "message.send_failed";
    pub const SIGNAL_EMITTED: &str = "signal.emitted";
    pub const SIGNAL_ACKNOWLEDGED: &str = "signal.acknowledged";
    pub const PROPOSAL_CREATED: &str = "proposal.created";
    pub const PROPOSAL_UPDATED: &str = "proposal.updated";
    pub const DECISION_FINALIZED: &str = "decision.finalized";
    /// The runtime's signed decision receipt of a resolved session (`runs::receipt`).
    pub const DECISION_RECEIPT: &str = "decision.receipt";
    pub const PROGRESS_REPORTED: &str = "progress.reported";
    pub const TOOL_CALLED: &str = "tool.called";
    pub const TOOL_COMPLETED: &str = "tool.completed";
    pub const ARTIFACT_CREATED: &str = "artifact.created";
    pub const POLICY_RESOLVED: &str = "policy.resolved";
    pub const POLICY_COMMITMENT_EVALUATED: &str = "policy.commitment.evaluated";
    pub const POLICY_DENIED: &str = "policy.denied";
    pub const LLM_CALL_COMPLETED: &str = "llm.call.completed";

    /// Every type this service emits.
    pub const ALL: &[&str] = &[
        RUN_CREATED,
        RUN_STARTED,
        RUN_COMPLETED,
        RUN_FAILED,
        RUN_CANCELLED,
        RUN_SUSPENDED,
        RUN_RESUMED,
        SESSION_BOUND,
        SESSION_STREAM_OPENED,
        SESSION_STREAM_DISCONNECTED,
        SESSION_STREAM_RECONNECTED,
        SESSION_HISTORY_UNAVAILABLE,
        SESSION_STATE_CHANGED,
        PARTICIPANT_SEEN,
        MESSAGE_SENT,
        MESSAGE_RECEIVED,
        MESSAGE_SEND_FAILED,
        SIGNAL_EMITTED,
        SIGNAL_ACKNOWLEDGED,
        PROPOSAL_CREATED,
        PROPOSAL_UPDATED,
        DECISION_FINALIZED,
        DECISION_RECEIPT,
        PROGRESS_REPORTED,
        TOOL_CALLED,
        TOOL_COMPLETED,
        ARTIFACT_CREATED,
        POLICY_RESOLVED,
        POLICY_COMMITMENT_EVALUATED,
        POLICY_DENIED,
        LLM_CALL_COMPLETED,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub kind: String,
    pub id: String,
}

impl Subject {
    pub fn new(kind: &str, id: impl Into<String>) -> Self {
        Subject {
            kind: kind.to_owned(),
            id: id.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_type: Option<String>,
}

impl Source {
    pub fn control_plane(component: &str) -> Self {
        Source {
            kind: SOURCE_CONTROL_PLANE.to_owned(),
            name: component.to_owned(),
            raw_type: None,
        }
    }

    pub fn runtime(raw_type: &str) -> Self {
        Source {
            kind: SOURCE_RUNTIME.to_owned(),
            name: RUNTIME_SOURCE_NAME.to_owned(),
            raw_type: Some(raw_type.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
}

/// An event before it is persisted: the store gives it an id and a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event_type: &'static str,
    pub ts: Timestamp,
    pub subject: Option<Subject>,
    pub source: Source,
    pub data: Value,
}

impl EventDraft {
    pub fn new(
        event_type: &'static str,
        ts: Timestamp,
        subject: Option<Subject>,
        source: Source,
        data: Value,
    ) -> Self {
        EventDraft {
            event_type,
            ts,
            subject,
            source,
            data,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanonicalEvent {
    pub id: String,
    pub run_id: String,
    pub seq: i64,
    #[serde(with = "time::rfc3339")]
    pub ts: Timestamp,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceRef>,
    pub data: Value,
}

impl CanonicalEvent {
    pub fn from_draft(draft: EventDraft, run_id: &str, seq: i64, trace: Option<TraceRef>) -> Self {
        CanonicalEvent {
            id: uuid::Uuid::now_v7().to_string(),
            run_id: run_id.to_owned(),
            seq,
            ts: draft.ts,
            event_type: draft.event_type.to_owned(),
            schema_version: SCHEMA_VERSION,
            subject: draft.subject,
            source: draft.source,
            trace,
            data: draft.data,
        }
    }
}
