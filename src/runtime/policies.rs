//! Governance policies (RFC-MACP-0012): the runtime keeps them; this module checks a policy
//! before the runtime sees it, reporting each problem by field, and turns the runtime's answers
//! into our shapes and error codes.

use macp_runtime::pb;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::client::RuntimeClient;
use crate::error::{ApiError, ErrorCode};
use crate::registry::values::normalize_numbers;
use crate::runs::json_fields::{Obj, Problems};

/// The policy a session gets with an empty `policyVersion`; the runtime's own, never replaced.
pub const DEFAULT_POLICY: &str = "policy.default";
/// The runtime's prefix for a policy definition it refuses.
const INVALID_DEFINITION: &str = "INVALID_POLICY_DEFINITION";

/// A policy as the REST API shows it: the rules as JSON, not the runtime's JSON text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub policy_id: String,
    /// A mode id, or `*` for every mode.
    pub mode: String,
    pub description: String,
    pub rules: Map<String, Value>,
    pub schema_version: u32,
    /// Absent for the runtime's built-in policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_at_unix_ms: Option<i64>,
}

/// The runtime took a change; its refusals are errors.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PolicyChange {
    pub ok: bool,
}

impl Policy {
    /// Reads `{policyId, mode, description?, rules, schemaVersion?}`, reporting every problem.
    /// The rules are checked where a policy would otherwise be refused by the runtime without
    /// saying which field is wrong; the runtime checks the rest.
    pub fn from_json(body: &Value) -> Result<Policy, ApiError> {
        let mut problems = Problems::default();
        let policy = read(body, &mut problems);
        match policy {
            Some(policy) if problems.is_empty() => Ok(policy),
            _ => Err(ApiError::validation(problems.errors)),
        }
    }

    fn from_descriptor(descriptor: pb::PolicyDescriptor) -> Policy {
        // The runtime stores the rules as JSON text it has parsed before; anything else is shown
        // as no rules rather than failing the listing.
        let rules =
            serde_json::from_str::<Map<String, Value>>(&descriptor.rules).unwrap_or_default();
        Policy {
            policy_id: descriptor.policy_id,
            mode: descriptor.mode,
            description: descriptor.description,
            rules,
            schema_version: descriptor.schema_version,
            registered_at_unix_ms: (descriptor.registered_at_unix_ms > 0)
                .then_some(descriptor.registered_at_unix_ms),
        }
    }

    pub(crate) fn into_descriptor(self) -> pb::PolicyDescriptor {
        pb::PolicyDescriptor {
            policy_id: self.policy_id,
            mode: self.mode,
            description: self.description,
            rules: Value::Object(self.rules).to_string(),
            schema_version: self.schema_version,
            registered_at_unix_ms: 0,
        }
    }
}

fn read(body: &Value, problems: &mut Problems) -> Option<Policy> {
    let root = Obj::expect(body, "", problems)?;
    let policy_id = root.required_str("policyId", problems);
    if policy_id.as_deref() == Some(DEFAULT_POLICY) {
        problems.push(
            "policyId",
            format!("{DEFAULT_POLICY} is the runtime's own and cannot be registered"),
        );
    }
    let mode = root.required_str("mode", problems);
    let description = root
        .optional_any_str("description", problems)
        .unwrap_or_default();
    let schema_version = match root.optional_i64("schemaVersion", problems) {
        None => Some(1),
        Some(version) => match u32::try_from(version) {
            Ok(version) if version >= 1 => Some(version),
            _ => {
                problems.push("schemaVersion", "must be 1 or more");
                None
            }
        },
    };
    let rules = match root.get("rules") {
        None => {
            problems.push("rules", "is required");
            None
        }
        Some(rules) => Obj::expect(rules, "rules", problems).and_then(|rules| {
            check_rules(&rules, problems);
            // gRPC's Struct carries every number as a double; the runtime reads counts as
            // integers.
            match normalize_numbers(Value::Object(rules.map.clone())) {
                Value::Object(rules) => Some(rules),
                _ => None,
            }
        }),
    };
    Some(Policy {
        policy_id: policy_id?,
        mode: mode?,
        description,
        rules: rules?,
        schema_version: schema_version?,
        registered_at_unix_ms: None,
    })
}

/// The reference control plane's checks of the rules: what a voting algorithm or a commitment
/// authority needs beside it.
fn check_rules(rules: &Obj<'_>, problems: &mut Problems) {
    if let Some(voting) = rules.optional_object("voting", problems) {
        match voting.optional_str("algorithm", problems).as_deref() {
            Some("weighted") if !non_empty(voting.get("weights")) => problems.push(
                voting.field("weights"),
                "is required (non-empty) with the weighted algorithm",
            ),
            Some("supermajority")
                if voting
                    .get("threshold")
                    .and_then(Value::as_f64)
                    .is_none_or(|threshold| threshold <= 0.5) =>
            {
                problems.push(
                    voting.field("threshold"),
                    "must be more than 0.5 with the supermajority algorithm",
                );
            }
            _ => {}
        }
    }
    if let Some(commitment) = rules.optional_object("commitment", problems)
        && commitment.optional_str("authority", problems).as_deref() == Some("designated_role")
        && !non_empty(commitment.get("designated_roles"))
    {
        problems.push(
            commitment.field("designated_roles"),
            "is required (non-empty) with the designated_role authority",
        );
    }
}

fn non_empty(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
        _ => false,
    }
}

/// The runtime's policies, those for `mode` when given.
pub async fn list(runtime: &RuntimeClient, mode: Option<&str>) -> Result<Vec<Policy>, ApiError> {
    let descriptors = runtime
        .list_policies(mode.unwrap_or_default())
        .await
        .map_err(|error| error.to_api_error())?;
    Ok(descriptors
        .into_iter()
        .map(Policy::from_descriptor)
        .collect())
}

pub async fn get(runtime: &RuntimeClient, policy_id: &str) -> Result<Policy, ApiError> {
    match runtime.get_policy(policy_id).await {
        Ok(descriptor) => Ok(Policy::from_descriptor(descriptor)),
        // The runtime answers an unknown id as an unknown policy version (of a session); here
        // it is a resource that does not exist.
        Err(error) if error.runtime_code() == Some("UNKNOWN_POLICY_VERSION") => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("policy {policy_id} not found"),
        )),
        Err(error) => Err(error.to_api_error()),
    }
}

pub async fn register(runtime: &RuntimeClient, policy: Policy) -> Result<PolicyChange, ApiError> {
    let policy_id = policy.policy_id.clone();
    let answer = runtime
        .register_policy(policy.into_descriptor())
        .await
        .map_err(|error| error.to_api_error())?;
    if answer.ok {
        return Ok(PolicyChange { ok: true });
    }
    let code = if answer.error.starts_with(INVALID_DEFINITION) {
        ErrorCode::InvalidPolicyDefinition
    } else {
        // The id is taken (or otherwise not the runtime's to give).
        ErrorCode::Conflict
    };
    Err(refused(code, &policy_id, "registered", answer.error))
}

pub async fn unregister(
    runtime: &RuntimeClient,
    policy_id: &str,
) -> Result<PolicyChange, ApiError> {
    let answer = runtime
        .unregister_policy(policy_id)
        .await
        .map_err(|error| error.to_api_error())?;
    if answer.ok {
        return Ok(PolicyChange { ok: true });
    }
    let code = if answer.error.ends_with("not found") {
        ErrorCode::NotFound
    } else {
        // Built-in and reserved policies stay.
        ErrorCode::Conflict
    };
    Err(refused(code, policy_id, "unregistered", answer.error))
}

/// A refusal the runtime answered in-band (`ok: false` and its reason).
fn refused(code: ErrorCode, policy_id: &str, verb: &str, reason: String) -> ApiError {
    ApiError::new(code, format!("policy {policy_id} was not {verb}: {reason}"))
        .with_details(json!({ "runtimeMessage": reason }))
}
