//! What-if replay: how a finished run's session would have ended under another policy, asked of
//! the runtime's `WhatIfReplay` (read-only; the candidate is never registered) and answered
//! beside how it did end.

use base64::Engine;
use macp_runtime::pb;
use serde::Serialize;
use serde_json::Value;

use super::json_fields::{Obj, Problems};
use super::service::RunService;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::runtime::policies::Policy;

/// How one replay of the session ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayOutcome {
    /// open | resolved | expired | suspended | cancelled | none (the policy refused the
    /// session's start).
    pub state: String,
    pub resolved: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by_message_type: Option<String>,
    /// The resolving Commitment's payload, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution_b64: Option<String>,
}

/// A message the candidate policy denied.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    pub history_index: u32,
    pub message_id: String,
}

/// The actual outcome and the hypothetical one, side by side.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhatIfReport {
    pub run_id: String,
    pub recorded_policy_id: String,
    pub candidate_policy_id: String,
    pub actual: ReplayOutcome,
    pub hypothetical: ReplayOutcome,
    /// The outcomes differ (state, resolving message or resolution).
    pub changed: bool,
    /// The first history entry the two replays handled differently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_divergence: Option<u32>,
    pub denials: Vec<Denial>,
}

/// The candidate a request names: a registered policy, or a definition sent along.
enum Candidate {
    Registered(String),
    Inline(Policy),
}

/// Reads `{policyVersion}` or `{policy}` (exactly one), every problem by field.
fn candidate(body: &Value) -> Result<Candidate, ApiError> {
    let mut problems = Problems::default();
    let Some(root) = Obj::expect(body, "", &mut problems) else {
        return Err(ApiError::validation(problems.errors));
    };
    let version = root.optional_str("policyVersion", &mut problems);
    let policy = root.get("policy");
    if !problems.is_empty() {
        return Err(ApiError::validation(problems.errors));
    }
    match (version, policy) {
        (Some(version), None) => Ok(Candidate::Registered(version)),
        (None, Some(policy)) => Policy::from_json(policy)
            .map(Candidate::Inline)
            .map_err(|error| within("policy", error)),
        (Some(_), Some(_)) => Err(ApiError::validation(vec![FieldError::new(
            "policy",
            "give policyVersion or policy, not both",
        )])),
        (None, None) => Err(ApiError::validation(vec![FieldError::new(
            "policyVersion",
            "is required (or policy, a policy definition)",
        )])),
    }
}

/// A validation error of a nested object, its fields under `parent`.
fn within(parent: &str, mut error: ApiError) -> ApiError {
    if let Some(errors) = error
        .details
        .as_mut()
        .and_then(|details| details["errors"].as_array_mut())
    {
        for field in errors.iter_mut().map(|error| &mut error["field"]) {
            if let Some(name) = field.as_str() {
                *field = Value::String(if name.is_empty() {
                    parent.to_owned()
                } else {
                    format!("{parent}.{name}")
                });
            }
        }
    }
    error
}

fn outcome(outcome: Option<pb::WhatIfOutcome>) -> ReplayOutcome {
    let outcome = outcome.unwrap_or_default();
    let state = match pb::SessionState::try_from(outcome.state) {
        Ok(pb::SessionState::Unspecified) | Err(_) => "none".to_owned(),
        Ok(state) => state
            .as_str_name()
            .trim_start_matches("SESSION_STATE_")
            .to_ascii_lowercase(),
    };
    let resolved = !outcome.resolved_by_message_id.is_empty();
    ReplayOutcome {
        state,
        resolved,
        resolved_by_message_id: resolved.then_some(outcome.resolved_by_message_id),
        resolved_by_message_type: resolved.then_some(outcome.resolved_by_message_type),
        resolution_b64: (!outcome.resolution.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&outcome.resolution)),
    }
}

fn index(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl RunService {
    /// The run's outcome under the candidate `body` names. Bad input is refused before the
    /// run is looked at; the run must have ended, and its session's history be kept.
    pub async fn what_if(&self, run_id: &str, body: &Value) -> Result<WhatIfReport, ApiError> {
        let candidate = candidate(body)?;
        let run = self.get(run_id).await?;
        if !run.status.is_terminal() {
            return Err(ApiError::new(
                ErrorCode::RunNotTerminal,
                format!(
                    "run {run_id} is {}: a what-if replays a finished run",
                    run.status.as_str()
                ),
            ));
        }
        let Some(session) = self.session(run_id).await? else {
            return Err(ApiError::new(
                ErrorCode::HistoryUnavailable,
                format!("run {run_id} never had a runtime session to replay"),
            ));
        };
        let descriptor = match candidate {
            Candidate::Inline(policy) => policy.into_descriptor(),
            Candidate::Registered(version) => match self.runtime().get_policy(&version).await {
                Ok(descriptor) => descriptor,
                Err(error) if error.runtime_code() == Some("UNKNOWN_POLICY_VERSION") => {
                    return Err(ApiError::validation(vec![FieldError::new(
                        "policyVersion",
                        format!("the runtime has no policy {version}"),
                    )]));
                }
                Err(error) => return Err(error.to_api_error()),
            },
        };
        let report = match self
            .runtime()
            .what_if_replay(&session.session_id, descriptor, &session.initiator)
            .await
        {
            Ok(report) => report,
            Err(error) if error.runtime_code() == Some("HISTORY_UNAVAILABLE") => {
                return Err(ApiError::new(
                    ErrorCode::HistoryUnavailable,
                    format!(
                        "the runtime kept no history of run {run_id}'s session (compacted): \
                         run it with MACP_COMPACT_TERMINAL_LOGS=0 to replay it"
                    ),
                ));
            }
            Err(error) => return Err(error.to_api_error()),
        };
        let (actual, hypothetical) = (outcome(report.recorded), outcome(report.candidate));
        Ok(WhatIfReport {
            run_id: run.id,
            recorded_policy_id: report.recorded_policy_id,
            candidate_policy_id: report.candidate_policy_id,
            changed: actual != hypothetical,
            actual,
            hypothetical,
            first_divergence: report.first_divergence.map(index),
            denials: report
                .denials
                .into_iter()
                .map(|denial| Denial {
                    history_index: index(denial.history_index),
                    message_id: denial.message_id,
                })
                .collect(),
        })
    }
}
