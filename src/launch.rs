//! Launching a scenario: the one place where the scenario registry meets the run service. The
//! registry compiles the scenario into an `ExecutionRequest`; the launch options of the UI
//! console's `POST /examples/run` are applied to it; the run service starts it in-process, as if
//! it had been posted to `POST /runs`. Neither side knows about the other.
//!
//! Both API adapters (`ScenarioRegistry.Launch`, `POST /launch`, `POST /examples/run`) parse
//! their request into the same JSON body and call [`launch`].

mod preview;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::audit::{self, POLICY_REGISTER};
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::registry::{self, CompileRequest, Compiled, Registry};
use crate::runs::RunService;
use crate::runtime::policies::{self, Policy};

pub use preview::Preview;

/// Runs a registry call on a blocking thread: registry calls read and parse files, which must
/// not stall the async executor.
pub async fn registry_call<T, F>(registry: &Registry, call: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Registry) -> Result<T, registry::Error> + Send + 'static,
{
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || call(&registry))
        .await
        .map_err(|error| ApiError::internal(format!("registry call failed: {error}")))?
        .map_err(ApiError::from)
}

/// A compile request plus the launch options.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub compile: CompileRequest,
    /// Appended to `execution.tags` (duplicates dropped, compiled tags first).
    pub tags: Vec<String>,
    /// Given fields (`actorId`, `actorType`) replace the compiled requester's.
    pub requester: Map<String, Value>,
    /// Written to `session.metadata.runLabel`.
    pub run_label: Option<String>,
    /// `submitToControlPlane`: false compiles and applies the options but starts nothing.
    pub submit: bool,
}

impl LaunchRequest {
    /// Reads `{scenarioRef, templateId?, mode?, inputs, tags?, requester?, runLabel?,
    /// bootstrapAgents?, submitToControlPlane?}`, reporting every malformed field at once.
    /// `bootstrapAgents` is type-checked and otherwise ignored: no agent processes are started,
    /// the scenario's kickoff messages are what the session runs on. Unknown fields are ignored.
    pub fn from_json(body: &Value) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let compile = match CompileRequest::from_json(body) {
            Ok(compile) => Some(compile),
            Err(registry::Error::InvalidRequest(problems)) => {
                errors.extend(problems);
                None
            }
            Err(other) => return Err(other.into()),
        };
        let Some(body) = body.as_object() else {
            return Err(ApiError::validation(errors));
        };
        let tags = match body.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => {
                errors.push(FieldError::new("tags", "must be an array of strings"));
                Vec::new()
            }
        };
        let requester = match body.get("requester") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(requester)) => {
                let mut given = Map::new();
                for key in ["actorId", "actorType"] {
                    match requester.get(key) {
                        None | Some(Value::Null) => {}
                        Some(value @ Value::String(_)) => {
                            given.insert(key.to_owned(), value.clone());
                        }
                        Some(_) => errors.push(FieldError::new(
                            format!("requester.{key}"),
                            "must be a string",
                        )),
                    }
                }
                given
            }
            Some(_) => {
                errors.push(FieldError::new("requester", "must be an object"));
                Map::new()
            }
        };
        let run_label = match body.get("runLabel") {
            None | Some(Value::Null) => None,
            Some(Value::String(label)) => Some(label.clone()),
            Some(_) => {
                errors.push(FieldError::new("runLabel", "must be a string"));
                None
            }
        };
        let mut flag = |key: &str| match body.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(flag)) => Some(*flag),
            Some(_) => {
                errors.push(FieldError::new(key, "must be a boolean"));
                None
            }
        };
        flag("bootstrapAgents");
        let submit = flag("submitToControlPlane").unwrap_or(true);
        match compile {
            Some(compile) if errors.is_empty() => Ok(LaunchRequest {
                compile,
                tags,
                requester,
                run_label,
                submit,
            }),
            _ => Err(ApiError::validation(errors)),
        }
    }

    /// Applies the launch options to a compiled `ExecutionRequest` (always a JSON object).
    fn apply(&self, execution_request: &mut Value) {
        let Some(root) = execution_request.as_object_mut() else {
            return;
        };
        if (!self.tags.is_empty() || !self.requester.is_empty())
            && let Some(execution) = object_at(root, "execution")
        {
            if !self.tags.is_empty() {
                let compiled: Vec<String> = execution
                    .get("tags")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                let tags =
                    registry::values::unique(compiled.iter().chain(&self.tags).map(String::as_str));
                execution.insert("tags".to_owned(), tags.into());
            }
            if !self.requester.is_empty()
                && let Some(requester) = object_at(execution, "requester")
            {
                requester.extend(self.requester.clone());
            }
        }
        if let Some(label) = &self.run_label
            && let Some(session) = object_at(root, "session")
            && let Some(metadata) = object_at(session, "metadata")
        {
            metadata.insert("runLabel".to_owned(), label.clone().into());
        }
    }
}

/// The object under `key`, created (or replacing a non-object) when needed.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let entry = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// What a launch returns: the request as submitted, and the run it started.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Launched {
    pub compiled: Compiled,
    /// Absent when `submitToControlPlane` was false.
    #[serde(flatten)]
    pub run: Option<LaunchedRun>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchedRun {
    pub run_id: String,
    /// The run id again, under the name the UI console navigates by.
    pub session_id: String,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The request's idempotency key matched an existing run; nothing new was started.
    pub existing: bool,
}

/// Compiles the scenario (`CompileLaunch`): the ExecutionRequest, and the launch preview the UI
/// console reads beside it.
pub async fn compile(registry: &Registry, request: Value) -> Result<Preview, ApiError> {
    let compiled = registry_call(registry, move |registry| {
        registry.compile(&CompileRequest::from_json(&request)?)
    })
    .await?;
    Ok(preview::preview(compiled))
}

/// Compiles the scenario, applies the launch options and starts the run.
pub async fn launch(
    registry: &Registry,
    runs: &RunService,
    request: LaunchRequest,
) -> Result<Launched, ApiError> {
    let compile = request.compile.clone();
    let mut compiled = registry_call(registry, move |registry| registry.compile(&compile)).await?;
    request.apply(&mut compiled.execution_request);
    let run = if request.submit {
        register_pack_policy(registry, runs, &compiled.execution_request).await?;
        let outcome = runs.start(compiled.execution_request.clone()).await?;
        Some(LaunchedRun {
            session_id: outcome.run_id.clone(),
            run_id: outcome.run_id,
            status: outcome.status,
            trace_id: outcome.trace_id,
            existing: outcome.existing,
        })
    } else {
        None
    };
    Ok(Launched { compiled, run })
}

/// A scenario bound to a policy its packs tree ships gets it registered with the runtime
/// first; the session would otherwise be refused `UNKNOWN_POLICY_VERSION`. One the runtime
/// already has (a `CONFLICT`) is left as it is. A registration is audited as `policy.register`,
/// as RegisterPolicy's are, beside the launch's own row.
async fn register_pack_policy(
    registry: &Registry,
    runs: &RunService,
    execution_request: &Value,
) -> Result<(), ApiError> {
    let Some(policy_id) = execution_request
        .pointer("/session/policyVersion")
        .and_then(Value::as_str)
        .filter(|policy| !registry::BUILT_IN_POLICIES.contains(policy))
        .map(str::to_owned)
    else {
        return Ok(());
    };
    let policies = registry_call(registry, |registry| registry.policies()).await?;
    let Some(policy) = policies
        .into_iter()
        .find(|policy| policy.policy_id == policy_id)
    else {
        return Ok(());
    };
    let policy = Policy::from_json(&policy.body)?;
    match policies::register(runs.runtime(), policy).await {
        Ok(_) => {
            if let Some(entry) = audit::beside(POLICY_REGISTER, &policy_id)
                && let Err(error) = runs.store().insert_audit(entry).await
            {
                tracing::error!(%error, %policy_id, "the policy registration's audit row was not written");
            }
            Ok(())
        }
        Err(error) if error.code != ErrorCode::Conflict => Err(error),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_launch_options() {
        let request = LaunchRequest::from_json(&json!({
            "scenarioRef": "a/b@1", "inputs": {}, "tags": ["x"], "requester": {"actorType": "user"},
            "runLabel": "demo", "bootstrapAgents": true, "submitToControlPlane": false,
            "unknown": 1
        }))
        .unwrap();
        assert_eq!(request.compile.scenario_ref, "a/b@1");
        assert_eq!(request.tags, ["x"]);
        assert_eq!(
            Value::Object(request.requester),
            json!({"actorType": "user"})
        );
        assert_eq!(request.run_label.as_deref(), Some("demo"));
        assert!(!request.submit);
        assert!(
            LaunchRequest::from_json(&json!({"scenarioRef": "a/b@1", "inputs": {}}))
                .unwrap()
                .submit
        );
    }

    #[test]
    fn reports_every_malformed_field() {
        let error = LaunchRequest::from_json(&json!({
            "scenarioRef": "", "tags": "x", "requester": {"actorId": 1}, "runLabel": 2,
            "bootstrapAgents": "yes", "submitToControlPlane": 0
        }))
        .unwrap_err();
        let fields: Vec<String> = error.details.unwrap()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            fields,
            [
                "scenarioRef",
                "inputs",
                "tags",
                "requester.actorId",
                "runLabel",
                "bootstrapAgents",
                "submitToControlPlane"
            ]
        );
        let error = LaunchRequest::from_json(&json!([])).unwrap_err();
        assert_eq!(error.code.as_str(), "VALIDATION_ERROR");
    }

    #[test]
    fn applies_tags_requester_and_label() {
        let request = LaunchRequest::from_json(&json!({
            "scenarioRef": "a/b@1", "inputs": {}, "tags": ["b", "c", "c"],
            "requester": {"actorId": "ana", "actorType": "user"}, "runLabel": "demo"
        }))
        .unwrap();
        let mut execution_request = json!({
            "session": {"metadata": {"source": "s"}},
            "execution": {"tags": ["a", "b"], "requester": {"actorId": "svc", "actorType": "service"}}
        });
        request.apply(&mut execution_request);
        assert_eq!(
            execution_request,
            json!({
                "session": {"metadata": {"source": "s", "runLabel": "demo"}},
                "execution": {"tags": ["a", "b", "c"], "requester": {"actorId": "ana", "actorType": "user"}}
            })
        );
        let mut bare = json!({});
        request.apply(&mut bare);
        assert_eq!(bare["execution"]["tags"], json!(["b", "c"]));
        assert_eq!(bare["session"]["metadata"]["runLabel"], "demo");
    }
}
