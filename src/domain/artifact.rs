//! Artifacts: what a run produced or links to (traces, reports, bundles), by URI or inline.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::{self, Timestamp};

/// The kinds an artifact may be.
pub const ARTIFACT_KINDS: &[&str] = &["trace", "json", "report", "log", "bundle"];
/// Largest inline artifact (its JSON text).
pub const MAX_INLINE_BYTES: usize = 256 * 1024;
pub const MAX_LABEL_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub id: String,
    pub run_id: String,
    pub kind: String,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline: Option<Value>,
    #[serde(with = "time::rfc3339")]
    pub created_at: Timestamp,
}
