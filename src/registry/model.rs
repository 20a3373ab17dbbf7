//! Typed views of the files in a packs tree. Free-form parts (policy hints, templates for
//! context, metadata, kickoff and commitments) stay JSON values so their key order survives
//! into the compiled output.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::values::{deep_merge, overlay};

pub(crate) const API_VERSION: &str = "scenarios.macp.dev/v1";

/// Checks `apiVersion` and `kind`, then reads the document.
pub(crate) fn parse_document<T: DeserializeOwned>(value: Value, kind: &str) -> Result<T, String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    if field("apiVersion") != Some(API_VERSION) {
        return Err(format!(
            "apiVersion must be \"{API_VERSION}\", found {}",
            value.get("apiVersion").unwrap_or(&Value::Null)
        ));
    }
    if field("kind") != Some(kind) {
        return Err(format!(
            "kind must be \"{kind}\", found {}",
            value.get("kind").unwrap_or(&Value::Null)
        ));
    }
    parse(value, "")
}

/// Reads `value` as `T`; errors name the failing field, prefixed with `context`.
pub(crate) fn parse<T: DeserializeOwned>(value: Value, context: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let path = match (context, path.as_str()) {
            ("", ".") => String::new(),
            (context, ".") => format!("{context}: "),
            ("", path) => format!("{path}: "),
            (context, path) => format!("{context}.{path}: "),
        };
        format!("{path}{}", error.into_inner())
    })
}

/// `pack.yaml` (`kind: ScenarioPack`); its metadata is also the pack's catalog entry.
#[derive(Debug, Deserialize)]
pub(crate) struct PackDocument {
    pub(crate) metadata: PackSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackSummary {
    pub slug: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// `scenario.yaml` (`kind: ScenarioVersion`).
#[derive(Debug, Deserialize)]
pub(crate) struct ScenarioDocument {
    pub(crate) metadata: ScenarioMetadata,
    pub(crate) spec: ScenarioSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ScenarioMetadata {
    pub(crate) pack: String,
    pub(crate) scenario: String,
    pub(crate) version: String,
    pub(crate) name: String,
    pub(crate) summary: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ScenarioSpec {
    pub(crate) runtime: Option<Map<String, Value>>,
    pub(crate) inputs: InputsSpec,
    pub(crate) launch: Map<String, Value>,
    pub(crate) execution: Option<Map<String, Value>>,
    pub(crate) outputs: Option<Outputs>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InputsSpec {
    pub(crate) schema: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Outputs {
    pub(crate) expected_decision_kinds: Option<Vec<String>>,
}

/// `templates/*.yaml` (`kind: ScenarioTemplate`).
#[derive(Debug, Deserialize)]
pub(crate) struct TemplateDocument {
    pub(crate) metadata: TemplateMetadata,
    pub(crate) spec: Option<TemplateSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TemplateMetadata {
    pub(crate) scenario_version: Option<String>,
    pub(crate) slug: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TemplateSpec {
    pub(crate) defaults: Option<Map<String, Value>>,
    pub(crate) overrides: Option<Overrides>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Overrides {
    pub(crate) runtime: Option<Map<String, Value>>,
    pub(crate) launch: Option<Map<String, Value>>,
    pub(crate) execution: Option<Map<String, Value>>,
}

/// `_agents/*.yaml` (`kind: AgentProfile`): one entry of the agent catalog.
#[derive(Debug, Deserialize)]
pub(crate) struct AgentDocument {
    pub(crate) metadata: AgentMetadata,
    pub(crate) spec: AgentSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentMetadata {
    pub(crate) agent_ref: String,
    pub(crate) name: String,
    pub(crate) tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentSpec {
    pub(crate) role: Option<String>,
    pub(crate) framework: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) transport_identity: Option<String>,
    pub(crate) entrypoint: Option<String>,
    pub(crate) bootstrap_strategy: Option<String>,
    pub(crate) bootstrap_mode: Option<String>,
}

/// `spec.launch` after template overrides. The four template fields are substituted at
/// compile time, so only their outer shape is fixed here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Launch {
    pub(crate) mode_name: String,
    pub(crate) mode_version: String,
    pub(crate) configuration_version: String,
    pub(crate) policy_version: Option<String>,
    pub(crate) policy_hints: Option<Value>,
    pub(crate) ttl_ms: u64,
    pub(crate) initiator_participant_id: Option<String>,
    pub(crate) participants: Vec<Participant>,
    pub(crate) commitments: Option<Vec<Map<String, Value>>>,
    pub(crate) context_template: Option<Value>,
    pub(crate) context_id: Option<String>,
    pub(crate) kickoff_template: Option<Vec<Map<String, Value>>>,
    pub(crate) metadata_template: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Participant {
    pub(crate) id: String,
    pub(crate) role: Option<String>,
    /// The agent that plays the participant; none when the participant's agent is not one of
    /// the catalog's (it compiles; `scenario validate` and `lint` say so).
    pub(crate) agent_ref: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) transport_identity: Option<String>,
    pub(crate) metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Execution {
    pub(crate) idempotency_key: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) requester: Option<Requester>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Requester {
    pub(crate) actor_id: Option<String>,
    pub(crate) actor_type: Option<ActorType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ActorType {
    User,
    Service,
    System,
}

impl ActorType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActorType::User => "user",
            ActorType::Service => "service",
            ActorType::System => "system",
        }
    }
}

/// Everything compile needs from a scenario version with (or without) one template applied:
/// input defaults, runtime selection, launch and execution settings.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub(crate) defaults: Map<String, Value>,
    pub(crate) runtime: Map<String, Value>,
    pub(crate) launch: Launch,
    pub(crate) execution: Execution,
}

impl Variant {
    /// Applies a template to the scenario spec: defaults and runtime overlay shallowly, launch
    /// and execution deep-merge (arrays replace).
    pub(crate) fn resolve(
        spec: &ScenarioSpec,
        schema_defaults: &Map<String, Value>,
        template: Option<&TemplateSpec>,
    ) -> Result<Self, String> {
        let empty = Map::new();
        let overrides = template.and_then(|template| template.overrides.as_ref());
        let defaults = template
            .and_then(|template| template.defaults.as_ref())
            .unwrap_or(&empty);
        let default_runtime = json!({"kind": "rust", "version": "v1"});
        let base_runtime = spec
            .runtime
            .as_ref()
            .or(default_runtime.as_object())
            .unwrap_or(&empty);
        let runtime = overlay(
            base_runtime,
            overrides.and_then(|o| o.runtime.as_ref()).unwrap_or(&empty),
        );
        if !runtime.get("kind").is_some_and(Value::is_string) {
            return Err("spec.runtime.kind must be a string".to_owned());
        }
        let launch = deep_merge(
            &spec.launch,
            overrides.and_then(|o| o.launch.as_ref()).unwrap_or(&empty),
        );
        let launch: Launch = parse(Value::Object(launch), "spec.launch")?;
        if launch.ttl_ms == 0 {
            return Err("spec.launch.ttlMs must be greater than 0".to_owned());
        }
        let execution = deep_merge(
            spec.execution.as_ref().unwrap_or(&empty),
            overrides
                .and_then(|o| o.execution.as_ref())
                .unwrap_or(&empty),
        );
        Ok(Variant {
            defaults: overlay(schema_defaults, defaults),
            runtime,
            launch,
            execution: parse(Value::Object(execution), "spec.execution")?,
        })
    }

    /// The agent behind each participant that names one, in roster order.
    pub(crate) fn agent_refs(&self) -> impl Iterator<Item = &str> {
        self.launch
            .participants
            .iter()
            .filter_map(|participant| participant.agent_ref.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(launch: Value) -> ScenarioSpec {
        parse(
            json!({"inputs": {"schema": {"type": "object"}}, "launch": launch, "execution": {"tags": ["a"]}}),
            "spec",
        )
        .unwrap()
    }

    fn launch() -> Value {
        json!({
            "modeName": "m", "modeVersion": "1.0.0", "configurationVersion": "c", "ttlMs": 1000,
            "policyHints": {"type": "none", "veto": false},
            "participants": [{"id": "a", "role": "r", "agentRef": "a"}],
            "commitments": [{"id": "x", "title": "X"}]
        })
    }

    fn template(value: Value) -> TemplateSpec {
        parse(value, "spec").unwrap()
    }

    #[test]
    fn documents_must_declare_api_version_and_kind() {
        let pack = json!({"apiVersion": API_VERSION, "kind": "ScenarioPack", "metadata": {"slug": "p", "name": "P"}});
        assert!(parse_document::<PackDocument>(pack.clone(), "ScenarioPack").is_ok());
        let error = parse_document::<PackDocument>(pack, "ScenarioVersion").unwrap_err();
        assert_eq!(
            error,
            "kind must be \"ScenarioVersion\", found \"ScenarioPack\""
        );
        let old = json!({"apiVersion": "v0", "kind": "ScenarioPack", "metadata": {"slug": "p", "name": "P"}});
        assert!(
            parse_document::<PackDocument>(old, "ScenarioPack")
                .unwrap_err()
                .starts_with("apiVersion must be")
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        let mut bad = launch();
        bad["participants"][0].as_object_mut().unwrap().remove("id");
        let error = Variant::resolve(&spec(bad), &Map::new(), None).unwrap_err();
        assert_eq!(error, "spec.launch.participants[0]: missing field `id`");
    }

    #[test]
    fn runtime_defaults_to_rust_v1() {
        let variant = Variant::resolve(&spec(launch()), &Map::new(), None).unwrap();
        assert_eq!(
            Value::Object(variant.runtime),
            json!({"kind": "rust", "version": "v1"})
        );
    }

    #[test]
    fn template_precedence_and_merge_rules() {
        let schema_defaults = json!({"a": 1, "b": 1}).as_object().unwrap().clone();
        let template = template(json!({
            "defaults": {"b": 2, "c": 2},
            "overrides": {
                "runtime": {"version": "v2"},
                "launch": {"ttlMs": 5, "policyHints": {"veto": true}, "commitments": []},
                "execution": {"tags": ["b", "c"]}
            }
        }));
        let variant = Variant::resolve(&spec(launch()), &schema_defaults, Some(&template)).unwrap();
        assert_eq!(
            Value::Object(variant.defaults),
            json!({"a": 1, "b": 2, "c": 2})
        );
        assert_eq!(
            Value::Object(variant.runtime),
            json!({"kind": "rust", "version": "v2"})
        );
        assert_eq!(variant.launch.ttl_ms, 5);
        assert_eq!(
            variant.launch.policy_hints,
            Some(json!({"type": "none", "veto": true}))
        );
        assert_eq!(variant.launch.commitments, Some(vec![]));
        assert_eq!(
            variant.execution.tags,
            Some(vec!["b".to_owned(), "c".to_owned()])
        );
    }

    #[test]
    fn zero_ttl_is_refused() {
        let mut bad = launch();
        bad["ttlMs"] = json!(0);
        assert!(Variant::resolve(&spec(bad), &Map::new(), None).is_err());
    }
}
