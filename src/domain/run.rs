//! The run and its bound runtime session, as records (serializable: a run's JSON is its REST
//! shape).

use serde::Serialize;
use serde_json::Value;

use super::status::RunStatus;
use crate::time::{self, Timestamp};

mod optional_time {
    use serde::Serializer;

    use crate::time::Timestamp;

    pub fn serialize<S: Serializer>(
        time: &Option<Timestamp>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.serialize_str(&crate::time::format(time)),
            None => serializer.serialize_none(),
        }
    }
}

/// A run record (what `GET /runs/{id}` returns).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: String,
    pub status: RunStatus,
    pub mode: String,
    pub runtime_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub last_event_seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(with = "time::rfc3339")]
    pub created_at: Timestamp,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_time::serialize"
    )]
    pub started_at: Option<Timestamp>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_time::serialize"
    )]
    pub ended_at: Option<Timestamp>,
    #[serde(with = "time::rfc3339")]
    pub updated_at: Timestamp,
    /// The authenticated actor who started the run (`requester` is what the request said).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// When the run was archived: run lists leave it out unless asked to include it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_time::serialize"
    )]
    pub archived_at: Option<Timestamp>,
}

impl Run {
    /// How long the run has run, at `now`: from its start to its end, or to `now` while it
    /// has not ended; `None` before it started (or when it ended without starting).
    pub fn duration_ms(&self, now: Timestamp) -> Option<i64> {
        let started = self.started_at?;
        let until = match self.ended_at {
            Some(ended) => ended,
            None if self.status.is_terminal() => return None,
            None => now,
        };
        Some((until - started).num_milliseconds().max(0))
    }
}

/// The runtime session bound to a run.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundSession {
    pub run_id: String,
    pub session_id: String,
    pub mode_name: String,
    pub mode_version: String,
    pub configuration_version: String,
    pub policy_version: Option<String>,
    pub initiator: String,
    pub session_state: String,
    /// The runtime ordinal persisted so far (resubscriptions resume after it).
    pub last_ordinal: i64,
    pub participants: Vec<String>,
}
