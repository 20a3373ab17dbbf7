//! Audit records (who did what to which resource, and how it ended), their query, and API key
//! records as the admin API shows them.

use serde::Serialize;
use serde_json::Value;

use super::query::{optional_time, page};
use crate::error::ApiError;
use crate::time::{self, Timestamp};

/// How an audited call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "ok" => Some(Outcome::Ok),
            "refused" => Some(Outcome::Refused),
            _ => None,
        }
    }
}

/// One audit row (`GET /audit`'s `data[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    pub actor: String,
    /// `api_key`, `jwt`, `anonymous` (auth off) or `system`.
    pub actor_type: String,
    /// `run.start`, `run.cancel`, `key.create`, …
    pub action: String,
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub details: Value,
    #[serde(with = "time::rfc3339")]
    pub created_at: Timestamp,
}

pub const DEFAULT_AUDIT_LIMIT: u64 = 50;
/// Longest actor name or participant id an API key may carry.
pub const MAX_KEY_NAME_LEN: usize = 255;
pub const MAX_AUDIT_LIMIT: u64 = 200;

/// Unvalidated `GET /audit` / `ListAudit` parameters.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Validated audit filters.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    pub limit: u64,
    pub offset: u64,
}

/// A page of audit rows, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub data: Vec<AuditEntry>,
    pub total: u64,
}

impl AuditQuery {
    /// Validates every parameter, reporting all problems at once.
    pub fn into_filter(self) -> Result<AuditFilter, ApiError> {
        let mut errors = Vec::new();
        let created_after = optional_time("createdAfter", self.created_after, &mut errors);
        let created_before = optional_time("createdBefore", self.created_before, &mut errors);
        let (limit, offset) = page(
            self.limit,
            self.offset,
            DEFAULT_AUDIT_LIMIT,
            MAX_AUDIT_LIMIT,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let text = |value: Option<String>| value.filter(|text| !text.is_empty());
        Ok(AuditFilter {
            actor: text(self.actor),
            action: text(self.action),
            resource: text(self.resource),
            resource_id: text(self.resource_id),
            created_after,
            created_before,
            limit,
            offset,
        })
    }
}

/// A stored API key as the admin API lists it: never the key, only its first characters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    pub id: String,
    pub actor: String,
    pub roles: Vec<String>,
    pub participants: Vec<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(with = "time::rfc3339")]
    pub created_at: Timestamp,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_rfc3339"
    )]
    pub revoked_at: Option<Timestamp>,
}

pub(crate) fn optional_rfc3339<S: serde::Serializer>(
    value: &Option<Timestamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_str(&time::format(value)),
        None => serializer.serialize_none(),
    }
}

/// A stored key's authority, as the store gives it to authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub id: String,
    pub actor: String,
    pub roles: Vec<String>,
    pub participants: Vec<String>,
    pub digest: String,
}
