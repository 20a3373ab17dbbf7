//! Compiling a scenario version (plus an optional template and the user's inputs) into the
//! control plane's `ExecutionRequest`.
//!
//! Pipeline: input defaults (schema < template < user, shallow) → JSON-Schema validation →
//! placeholder substitution in context, metadata, kickoff and commitment templates → the
//! request, with `display` and `participantBindings` for UIs. The output is a pure function of
//! the files and the request (plus the configured environment name).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::FieldError;

use super::error::Error;
use super::loader::{ScenarioVersion, Template};
use super::model::{Participant, parse};
use super::substitute::substitute;
use super::values::{normalize_numbers, unique};

/// `session.metadata.source` of every compiled request, and the default requester.
pub const SOURCE: &str = "scenario-registry";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    Live,
    Sandbox,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Live => "live",
            RunMode::Sandbox => "sandbox",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompileRequest {
    /// `pack/scenario@version`.
    pub scenario_ref: String,
    /// The template to apply; `None` (or `""`) applies none.
    pub template_id: Option<String>,
    /// `sandbox` when not given.
    pub mode: Option<RunMode>,
    pub inputs: Map<String, Value>,
}

impl CompileRequest {
    /// Reads a compile request body `{scenarioRef, templateId?, mode?, inputs}`, reporting every
    /// malformed field at once. Unknown fields are ignored.
    pub fn from_json(body: &Value) -> Result<Self, Error> {
        let Some(body) = body.as_object() else {
            return Err(Error::InvalidRequest(vec![FieldError::new(
                "body",
                "must be a JSON object",
            )]));
        };
        let mut errors = Vec::new();
        let mut request = CompileRequest::default();
        match body.get("scenarioRef") {
            Some(Value::String(reference)) if !reference.is_empty() => {
                request.scenario_ref = reference.clone()
            }
            _ => errors.push(FieldError::new("scenarioRef", "must be a non-empty string")),
        }
        match body.get("templateId") {
            None | Some(Value::Null) => {}
            Some(Value::String(template)) => request.template_id = Some(template.clone()),
            Some(_) => errors.push(FieldError::new("templateId", "must be a string")),
        }
        match body.get("mode") {
            None | Some(Value::Null) => {}
            Some(mode) => match serde_json::from_value(mode.clone()) {
                Ok(mode) => request.mode = Some(mode),
                Err(_) => errors.push(FieldError::new("mode", "must be one of: live, sandbox")),
            },
        }
        match body.get("inputs") {
            Some(Value::Object(inputs)) => request.inputs = inputs.clone(),
            _ => errors.push(FieldError::new("inputs", "must be an object")),
        }
        if errors.is_empty() {
            Ok(request)
        } else {
            Err(Error::InvalidRequest(errors))
        }
    }

    /// The template to apply: an empty id means none.
    pub(crate) fn template(&self) -> Option<&str> {
        self.template_id
            .as_deref()
            .filter(|template| !template.is_empty())
    }
}

/// The result of a compile: the `ExecutionRequest` to start a run with, plus what a UI shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Compiled {
    pub execution_request: Value,
    pub display: Display,
    pub participant_bindings: Vec<ParticipantBinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Display {
    pub title: String,
    pub scenario_ref: String,
    /// The template id exactly as requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_decision_kinds: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantBinding {
    pub participant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_ref: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KickoffTemplate {
    from: String,
    to: Vec<String>,
    kind: KickoffKind,
    message_type: Option<String>,
    payload: Option<Value>,
    payload_envelope: Option<Value>,
    metadata: Option<Value>,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KickoffKind {
    Request,
    Broadcast,
    Proposal,
    Context,
}

impl KickoffKind {
    fn as_str(self) -> &'static str {
        match self {
            KickoffKind::Request => "request",
            KickoffKind::Broadcast => "broadcast",
            KickoffKind::Proposal => "proposal",
            KickoffKind::Context => "context",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Commitment {
    id: String,
    title: String,
    description: Option<String>,
    required_roles: Option<Vec<String>>,
    policy_ref: Option<String>,
}

/// Compiles `version` with `template` (already looked up) for `request`.
pub(crate) fn compile(
    version: &ScenarioVersion,
    template: Option<&Template>,
    request: &CompileRequest,
    environment: &str,
) -> Result<Compiled, Error> {
    let variant = template.map_or(&version.base, |template| &template.variant);
    let launch = &variant.launch;

    let mut inputs = variant.defaults.clone();
    for (name, value) in &request.inputs {
        inputs.insert(name.clone(), normalize_numbers(value.clone()));
    }
    let inputs = Value::Object(inputs);
    version
        .inputs
        .validate(&inputs)
        .map_err(Error::InvalidInputs)?;
    let variables = Value::Object(Map::from_iter([("inputs".to_owned(), inputs)]));

    let context = launch
        .context_template
        .as_ref()
        .map(|template| substitute_object(template, &variables, "contextTemplate"))
        .transpose()?;
    let extra_metadata = launch
        .metadata_template
        .as_ref()
        .map(|template| substitute_object(template, &variables, "metadataTemplate"))
        .transpose()?
        .unwrap_or_default();
    let kickoff = launch
        .kickoff_template
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, entry)| kickoff_message(index, entry, &variables))
        .collect::<Result<Vec<_>, _>>()?;
    let commitments = launch
        .commitments
        .as_ref()
        .map(|list| {
            list.iter()
                .enumerate()
                .map(|(index, entry)| commitment(index, entry, &variables))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;

    let initiator = launch
        .initiator_participant_id
        .clone()
        .or_else(|| {
            kickoff
                .first()
                .and_then(|message| message.get("from"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| {
            launch
                .participants
                .first()
                .map(|participant| participant.id.clone())
        });

    let reference = &version.reference;
    let template_label = request
        .template_id
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let mut metadata = Map::new();
    metadata.insert("source".into(), SOURCE.into());
    metadata.insert("sourceRef".into(), request.scenario_ref.clone().into());
    metadata.insert("scenarioRef".into(), request.scenario_ref.clone().into());
    metadata.insert("templateId".into(), template_label.clone().into());
    metadata.insert("template".into(), template_label.into());
    metadata.insert("environment".into(), environment.into());
    // Template metadata comes last and may override the built-ins.
    metadata.extend(extra_metadata);

    let mut session = Map::new();
    session.insert("modeName".into(), launch.mode_name.clone().into());
    session.insert("modeVersion".into(), launch.mode_version.clone().into());
    session.insert(
        "configurationVersion".into(),
        launch.configuration_version.clone().into(),
    );
    put(
        &mut session,
        "policyVersion",
        launch.policy_version.clone().map(Value::from),
    );
    put(&mut session, "policyHints", launch.policy_hints.clone());
    session.insert("ttlMs".into(), launch.ttl_ms.into());
    put(
        &mut session,
        "initiatorParticipantId",
        initiator.map(Value::from),
    );
    session.insert(
        "participants".into(),
        launch
            .participants
            .iter()
            .map(session_participant)
            .collect(),
    );
    put(&mut session, "commitments", commitments.map(Value::from));
    put(&mut session, "context", context.map(Value::Object));
    put(
        &mut session,
        "contextId",
        launch.context_id.clone().map(Value::from),
    );
    session.insert("metadata".into(), Value::Object(metadata));

    let execution = &variant.execution;
    let tags = unique(
        [
            "example",
            reference.pack.as_str(),
            reference.scenario.as_str(),
        ]
        .into_iter()
        .chain(execution.tags.iter().flatten().map(String::as_str))
        .chain(version.metadata.tags.iter().flatten().map(String::as_str)),
    );
    let requester = execution.requester.as_ref();
    let mut requester_out = Map::new();
    requester_out.insert(
        "actorId".into(),
        requester
            .and_then(|r| r.actor_id.clone())
            .unwrap_or_else(|| SOURCE.to_owned())
            .into(),
    );
    requester_out.insert(
        "actorType".into(),
        requester
            .and_then(|r| r.actor_type)
            .map_or("service", |actor| actor.as_str())
            .into(),
    );
    let mut execution_out = Map::new();
    put(
        &mut execution_out,
        "idempotencyKey",
        execution.idempotency_key.clone().map(Value::from),
    );
    execution_out.insert("tags".into(), tags.into());
    execution_out.insert("requester".into(), Value::Object(requester_out));

    let mut execution_request = Map::new();
    execution_request.insert(
        "mode".into(),
        request.mode.unwrap_or(RunMode::Sandbox).as_str().into(),
    );
    execution_request.insert("runtime".into(), Value::Object(variant.runtime.clone()));
    execution_request.insert("session".into(), Value::Object(session));
    execution_request.insert(
        "kickoff".into(),
        Value::Array(kickoff.into_iter().map(Value::Object).collect()),
    );
    execution_request.insert("execution".into(), Value::Object(execution_out));

    Ok(Compiled {
        execution_request: Value::Object(execution_request),
        display: Display {
            title: version.metadata.name.clone(),
            scenario_ref: request.scenario_ref.clone(),
            template_id: request.template_id.clone(),
            expected_decision_kinds: version.outputs.expected_decision_kinds.clone(),
        },
        participant_bindings: launch
            .participants
            .iter()
            .map(|participant| ParticipantBinding {
                participant_id: participant.id.clone(),
                role: participant.role.clone(),
                agent_ref: participant.agent_ref.clone(),
            })
            .collect(),
    })
}

/// Inserts `value` unless it is absent: absent fields are omitted, never written as `null`.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

fn substitute_object(
    template: &Value,
    variables: &Value,
    field: &str,
) -> Result<Map<String, Value>, Error> {
    match substitute(template, variables)? {
        Value::Object(map) => Ok(map),
        other => Err(Error::Compilation(format!(
            "{field} must produce an object, got {other}"
        ))),
    }
}

fn kickoff_message(
    index: usize,
    entry: &Map<String, Value>,
    variables: &Value,
) -> Result<Map<String, Value>, Error> {
    let substituted = substitute(&Value::Object(entry.clone()), variables)?;
    let entry: KickoffTemplate =
        parse(substituted, &format!("kickoffTemplate[{index}]")).map_err(Error::Compilation)?;
    let message_type = entry.message_type.unwrap_or_else(|| {
        if entry.kind == KickoffKind::Proposal {
            "Proposal"
        } else {
            "Signal"
        }
        .to_owned()
    });
    // A bare `payload` travels as a JSON envelope unless the author gave an explicit one.
    let envelope = entry.payload_envelope.or_else(|| {
        entry.payload.as_ref().map(|payload| {
            Value::Object(Map::from_iter([
                ("encoding".to_owned(), Value::from("json")),
                ("json".to_owned(), payload.clone()),
            ]))
        })
    });
    let mut message = Map::new();
    message.insert("from".into(), entry.from.into());
    message.insert("to".into(), entry.to.into());
    message.insert("kind".into(), entry.kind.as_str().into());
    message.insert("messageType".into(), message_type.into());
    put(&mut message, "payload", entry.payload);
    put(&mut message, "payloadEnvelope", envelope);
    put(&mut message, "metadata", entry.metadata);
    Ok(message)
}

fn commitment(index: usize, entry: &Map<String, Value>, variables: &Value) -> Result<Value, Error> {
    let substituted = substitute(&Value::Object(entry.clone()), variables)?;
    let entry: Commitment =
        parse(substituted, &format!("commitments[{index}]")).map_err(Error::Compilation)?;
    let mut commitment = Map::new();
    commitment.insert("id".into(), entry.id.into());
    commitment.insert("title".into(), entry.title.into());
    put(
        &mut commitment,
        "description",
        entry.description.map(Value::from),
    );
    put(
        &mut commitment,
        "requiredRoles",
        entry.required_roles.map(Value::from),
    );
    put(
        &mut commitment,
        "policyRef",
        entry.policy_ref.map(Value::from),
    );
    Ok(Value::Object(commitment))
}

fn session_participant(participant: &Participant) -> Value {
    let mut metadata = participant.metadata.clone().unwrap_or_default();
    put(
        &mut metadata,
        "agentRef",
        participant.agent_ref.clone().map(Value::from),
    );
    put(
        &mut metadata,
        "displayName",
        participant.display_name.clone().map(Value::from),
    );
    put(
        &mut metadata,
        "description",
        participant.description.clone().map(Value::from),
    );
    let mut out = Map::new();
    out.insert("id".into(), participant.id.clone().into());
    put(&mut out, "role", participant.role.clone().map(Value::from));
    put(
        &mut out,
        "transportIdentity",
        participant.transport_identity.clone().map(Value::from),
    );
    out.insert("metadata".into(), Value::Object(metadata));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{reference, shop_tree, snapshot, write};
    use serde_json::json;

    fn compile_in(
        dir: &std::path::Path,
        template: Option<&str>,
        inputs: Value,
    ) -> Result<Compiled, Error> {
        let snapshot = snapshot(dir);
        let version = snapshot.version(&reference("shop/refund@1.0.0")).unwrap();
        let template = template.map(|slug| version.template(slug).unwrap());
        let request = CompileRequest {
            scenario_ref: "shop/refund@1.0.0".to_owned(),
            template_id: template.map(|template| template.metadata.slug.clone()),
            mode: None,
            inputs: inputs.as_object().unwrap().clone(),
        };
        compile(version, template, &request, "test")
    }

    fn compile_shop(template: Option<&str>, inputs: Value) -> Result<Compiled, Error> {
        compile_in(shop_tree().path(), template, inputs)
    }

    fn request_of(compiled: &Compiled) -> &Value {
        &compiled.execution_request
    }

    #[test]
    fn builds_the_execution_request() {
        let compiled = compile_shop(None, json!({})).unwrap();
        let expected = json!({
            "mode": "sandbox",
            "runtime": {"kind": "rust", "version": "v1"},
            "session": {
                "modeName": "macp.mode.decision.v1",
                "modeVersion": "1.0.0",
                "configurationVersion": "config.default",
                "policyVersion": "policy.default",
                "policyHints": {"type": "none", "vetoEnabled": false},
                "ttlMs": 60000,
                "initiatorParticipantId": "lead",
                "participants": [
                    {"id": "reviewer", "role": "reviewer", "metadata": {"agentRef": "reviewer-agent"}},
                    {"id": "lead", "role": "lead", "metadata": {"agentRef": "lead-agent", "displayName": "Lead"}}
                ],
                "commitments": [{"id": "refund-reviewed", "title": "Refund reviewed", "description": "Review of ORD-1", "requiredRoles": ["reviewer"]}],
                "context": {"orderId": "ORD-1", "amount": 120, "express": false, "label": "order ORD-1 for 120"},
                "metadata": {
                    "source": SOURCE, "sourceRef": "shop/refund@1.0.0", "scenarioRef": "shop/refund@1.0.0",
                    "templateId": "default", "template": "default", "environment": "test", "demoType": "refund"
                }
            },
            "kickoff": [
                {"from": "lead", "to": ["reviewer"], "kind": "proposal", "messageType": "Proposal",
                 "payload": {"proposal_id": "ORD-1-p"}, "payloadEnvelope": {"encoding": "json", "json": {"proposal_id": "ORD-1-p"}}},
                {"from": "reviewer", "to": ["lead"], "kind": "request", "messageType": "Vote",
                 "payloadEnvelope": {"encoding": "proto", "proto": {"typeName": "macp.modes.decision.v1.VotePayload",
                    "value": {"proposal_id": "ORD-1-p", "vote": "APPROVE", "reason": "ok"}}}}
            ],
            "execution": {
                "tags": ["example", "shop", "refund", "demo", "refunds"],
                "requester": {"actorId": "tester", "actorType": "user"}
            }
        });
        assert_eq!(request_of(&compiled), &expected);
        // Key order follows the ExecutionRequest layout, not alphabetical order.
        let text = serde_json::to_string(request_of(&compiled)).unwrap();
        assert!(text.starts_with(r#"{"mode":"sandbox","runtime":{"kind":"rust","version":"v1"},"session":{"modeName""#), "{text}");
        assert_eq!(
            serde_json::to_value(&compiled.display).unwrap(),
            json!({"title": "Refund Review", "scenarioRef": "shop/refund@1.0.0", "expectedDecisionKinds": ["approve", "deny"]})
        );
        assert_eq!(
            serde_json::to_value(&compiled.participant_bindings).unwrap(),
            json!([{"participantId": "reviewer", "role": "reviewer", "agentRef": "reviewer-agent"},
                   {"participantId": "lead", "role": "lead", "agentRef": "lead-agent"}])
        );
    }

    #[test]
    fn merge_precedence_is_schema_then_template_then_user() {
        let context = |compiled: Compiled| compiled.execution_request["session"]["context"].clone();
        assert_eq!(
            context(compile_shop(None, json!({})).unwrap())["amount"],
            json!(120)
        );
        assert_eq!(
            context(compile_shop(Some("strict"), json!({})).unwrap())["amount"],
            json!(900)
        );
        let user =
            context(compile_shop(Some("strict"), json!({"amount": 42.0, "orderId": "X"})).unwrap());
        assert_eq!(
            (
                user["amount"].clone(),
                user["orderId"].clone(),
                user["express"].clone()
            ),
            (json!(42), json!("X"), json!(true))
        );
    }

    #[test]
    fn template_overrides_apply() {
        let compiled = compile_shop(Some("strict"), json!({})).unwrap();
        let request = request_of(&compiled);
        assert_eq!(request["runtime"], json!({"kind": "rust", "version": "v2"}));
        assert_eq!(request["session"]["ttlMs"], json!(5000));
        assert_eq!(
            request["session"]["policyHints"],
            json!({"type": "none", "vetoEnabled": true, "threshold": 0.5})
        );
        assert_eq!(request["session"]["metadata"]["posture"], json!("strict"));
        assert_eq!(
            request["session"]["metadata"]["templateId"],
            json!("strict")
        );
        // Arrays replace: the template's tags and commitments stand alone (and are substituted).
        assert_eq!(
            request["execution"]["tags"],
            json!(["example", "shop", "refund", "strict", "demo"])
        );
        assert_eq!(
            request["session"]["commitments"],
            json!([{"id": "refund-900", "title": "Strict refund"}])
        );
        assert_eq!(compiled.display.template_id.as_deref(), Some("strict"));
    }

    #[test]
    fn commitments_are_omitted_when_not_declared() {
        let dir = shop_tree();
        let path = dir.path().join("shop/scenarios/refund/1.0.0/scenario.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("    commitments:").unwrap();
        let end = text.find("    contextTemplate:").unwrap();
        std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
        let compiled = compile_in(dir.path(), None, json!({})).unwrap();
        assert!(
            compiled.execution_request["session"]
                .get("commitments")
                .is_none()
        );
    }

    #[test]
    fn invalid_inputs_list_every_failing_path() {
        let error = compile_shop(
            None,
            json!({"amount": "7", "express": 1, "orderId": {"id": 1}}),
        )
        .unwrap_err();
        let Error::InvalidInputs(errors) = error else {
            panic!("{error:?}")
        };
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            ["inputs.orderId", "inputs.amount", "inputs.express"]
        );
        let error = compile_shop(Some("strict"), json!({"amount": null})).unwrap_err();
        assert!(
            matches!(error, Error::InvalidInputs(ref errors) if errors[0].field == "inputs.amount"),
            "{error:?}"
        );
    }

    #[test]
    fn undefined_placeholders_are_compilation_errors() {
        let dir = shop_tree();
        let path = dir.path().join("shop/scenarios/refund/1.0.0/scenario.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("demoType: refund", "demoType: \"{{ inputs.nope }}\"");
        std::fs::write(&path, text).unwrap();
        let error = compile_in(dir.path(), None, json!({})).unwrap_err();
        assert_eq!(
            error,
            Error::UndefinedPlaceholder {
                path: "inputs.nope".to_owned()
            }
        );
        assert_eq!(
            error.to_api_error().code,
            crate::error::ErrorCode::CompilationError
        );
        assert!(error.to_string().contains("{{ inputs.nope }}"));
    }

    #[test]
    fn extra_inputs_are_accepted_and_can_be_referenced() {
        let compiled =
            compile_shop(None, json!({"orderId": "O-9", "extra": {"deep": [1]}})).unwrap();
        assert_eq!(
            compiled.execution_request["kickoff"][0]["payload"]["proposal_id"],
            json!("O-9-p")
        );
    }

    #[test]
    fn initiator_falls_back_to_the_first_kickoff_sender_then_the_first_participant() {
        // No initiatorParticipantId in the shop scenario: the first kickoff is from `lead`.
        let compiled = compile_shop(None, json!({})).unwrap();
        assert_eq!(
            compiled.execution_request["session"]["initiatorParticipantId"],
            json!("lead")
        );
        let dir = shop_tree();
        let path = dir.path().join("shop/scenarios/refund/1.0.0/scenario.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("    kickoffTemplate:").unwrap();
        let end = text.find("  execution:").unwrap();
        std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
        let compiled = compile_in(dir.path(), None, json!({})).unwrap();
        assert_eq!(
            compiled.execution_request["session"]["initiatorParticipantId"],
            json!("reviewer")
        );
        assert_eq!(compiled.execution_request["kickoff"], json!([]));
    }

    #[test]
    fn kickoff_shape_errors_name_the_entry() {
        let dir = shop_tree();
        let path = dir.path().join("shop/scenarios/refund/1.0.0/scenario.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("to: [reviewer]", "to: reviewer");
        std::fs::write(&path, text).unwrap();
        let error = compile_in(dir.path(), None, json!({})).unwrap_err();
        assert!(
            matches!(&error, Error::Compilation(message) if message.starts_with("kickoffTemplate[0].to:")),
            "{error:?}"
        );
        write(dir.path(), "unused", "");
    }

    #[test]
    fn request_bodies_are_checked_field_by_field() {
        let ok = CompileRequest::from_json(&json!({"scenarioRef": "a/b@1", "templateId": null, "mode": "live", "inputs": {"x": 1}, "extra": 1})).unwrap();
        assert_eq!(ok.mode, Some(RunMode::Live));
        assert_eq!(ok.template_id, None);
        let error = CompileRequest::from_json(
            &json!({"scenarioRef": "", "templateId": 5, "mode": "dry", "inputs": []}),
        )
        .unwrap_err();
        let Error::InvalidRequest(errors) = error else {
            panic!()
        };
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["scenarioRef", "templateId", "mode", "inputs"]);
        assert!(CompileRequest::from_json(&json!({"scenarioRef": "a/b@1"})).is_err());
    }

    #[test]
    fn compiling_twice_gives_identical_output() {
        let dir = shop_tree();
        let first = compile_in(dir.path(), Some("strict"), json!({})).unwrap();
        let second = compile_in(dir.path(), Some("strict"), json!({})).unwrap();
        assert_eq!(
            serde_json::to_string(&first).unwrap(),
            serde_json::to_string(&second).unwrap()
        );
    }
}
