//! The registry as a domain service: a cheap, cloneable handle over the packs tree.
//!
//! Every method is synchronous and may read and parse files (always when the cache TTL is 0),
//! so async callers run it on a blocking thread (`tokio::task::spawn_blocking`); the service
//! itself does not depend on an executor.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::catalog::{AgentProfile, LaunchSchema, ScenarioSummary};
use super::compiler::{self, CompileRequest, Compiled};
use super::error::{Error, LoadError};
use super::loader::Snapshot;
use super::model::PackSummary;
use super::policies::{self, PackPolicy};
use super::scenario_ref::ScenarioRef;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Root of the packs tree (`PACKS_DIR`).
    pub packs_dir: PathBuf,
    /// How long a loaded tree is reused (`REGISTRY_CACHE_TTL_MS`); 0 reads the files on every
    /// call, so edits show up without a restart.
    pub cache_ttl_ms: u64,
    /// Written to `session.metadata.environment` of compiled requests.
    pub environment: String,
}

impl RegistryOptions {
    pub fn new(packs_dir: impl Into<PathBuf>) -> Self {
        RegistryOptions {
            packs_dir: packs_dir.into(),
            cache_ttl_ms: 0,
            environment: "development".to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    options: RegistryOptions,
    /// The last snapshot and when it was loaded. Holding the lock while loading makes
    /// concurrent callers share one load.
    cache: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Self {
        Registry {
            inner: Arc::new(Inner {
                options,
                cache: Mutex::new(None),
            }),
        }
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.inner.options
    }

    /// Drops the cached tree; the next call reads the files again.
    pub fn invalidate(&self) {
        *self.lock_cache() = None;
    }

    /// `GET /packs`: healthy packs in directory order.
    pub fn list_packs(&self) -> Vec<PackSummary> {
        self.snapshot().pack_summaries()
    }

    /// `GET /packs/{pack}/scenarios`.
    pub fn list_scenarios(&self, pack: &str) -> Result<Vec<ScenarioSummary>, Error> {
        let snapshot = self.snapshot();
        let pack = snapshot.pack(pack)?;
        Ok(snapshot.scenario_summaries(pack, false))
    }

    /// `GET /scenarios`: every pack's scenarios, each row naming its pack.
    pub fn list_all_scenarios(&self) -> Vec<ScenarioSummary> {
        self.snapshot().all_scenario_summaries()
    }

    /// `GET /packs/{pack}/scenarios/{scenario}/versions/{version}/launch-schema?template=`;
    /// an empty template means none.
    pub fn launch_schema(
        &self,
        pack: &str,
        scenario: &str,
        version: &str,
        template: Option<&str>,
    ) -> Result<LaunchSchema, Error> {
        let snapshot = self.snapshot();
        let reference = ScenarioRef {
            pack: pack.to_owned(),
            scenario: scenario.to_owned(),
            version: version.to_owned(),
        };
        let version = snapshot.version(&reference)?;
        let template = template
            .filter(|template| !template.is_empty())
            .map(|template| version.template(template))
            .transpose()?;
        snapshot.launch_schema(version, template)
    }

    /// `POST /launch/compile`.
    pub fn compile(&self, request: &CompileRequest) -> Result<Compiled, Error> {
        let reference = ScenarioRef::parse(&request.scenario_ref)?;
        let snapshot = self.snapshot();
        let version = snapshot.version(&reference)?;
        // The template is looked up before inputs are validated, so a wrong id is a 404.
        let template = request
            .template()
            .map(|template| version.template(template))
            .transpose()?;
        compiler::compile(version, template, request, &self.inner.options.environment)
    }

    /// `GET /agents`.
    pub fn agents(&self) -> Vec<AgentProfile> {
        self.snapshot().agent_profiles()
    }

    /// `GET /agents/{ref}`.
    pub fn agent(&self, agent_ref: &str) -> Result<AgentProfile, Error> {
        self.snapshot().agent_profile(agent_ref)
    }

    /// The governance policies the packs tree ships (`_policies/*.json`).
    pub fn policies(&self) -> Result<Vec<PackPolicy>, Error> {
        policies::load(&self.inner.options.packs_dir)
    }

    /// Files that failed to load (each one hides only the pack, scenario version or agent it
    /// defines).
    pub fn problems(&self) -> Vec<LoadError> {
        self.snapshot().problems.clone()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let options = &self.inner.options;
        if options.cache_ttl_ms == 0 {
            return Arc::new(Snapshot::load(&options.packs_dir));
        }
        let mut cache = self.lock_cache();
        if let Some((loaded_at, snapshot)) = cache.as_ref()
            && loaded_at.elapsed() < Duration::from_millis(options.cache_ttl_ms)
        {
            return Arc::clone(snapshot);
        }
        let snapshot = Arc::new(Snapshot::load(&options.packs_dir));
        *cache = Some((Instant::now(), Arc::clone(&snapshot)));
        snapshot
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<Snapshot>)>> {
        // The cache holds no invariant a panicking loader could break.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{pack_yaml, shop_tree, write};
    use serde_json::json;

    fn registry(dir: &std::path::Path, cache_ttl_ms: u64) -> Registry {
        Registry::new(RegistryOptions {
            cache_ttl_ms,
            ..RegistryOptions::new(dir)
        })
    }

    #[test]
    fn lists_packs_and_scenarios() {
        let dir = shop_tree();
        write(dir.path(), "empty/pack.yaml", &pack_yaml("empty"));
        let registry = registry(dir.path(), 0);
        assert_eq!(
            serde_json::to_value(registry.list_packs()).unwrap(),
            json!([{"slug": "empty", "name": "empty"}, {"slug": "shop", "name": "shop"}])
        );
        assert_eq!(registry.list_scenarios("empty").unwrap(), []);
        assert_eq!(
            registry.list_scenarios("nope").unwrap_err().to_string(),
            "pack not found: nope"
        );
        let expected = json!({
            "scenario": "refund", "name": "Refund Review", "versions": ["1.0.0"], "templates": ["plain", "strict"],
            "tags": ["shop", "demo"], "runtimeKind": "rust", "agentRefs": ["reviewer-agent", "lead-agent"],
            "policyVersion": "policy.default", "policyHints": {"type": "none", "vetoEnabled": false}
        });
        assert_eq!(
            serde_json::to_value(registry.list_scenarios("shop").unwrap()).unwrap(),
            json!([expected])
        );
        let all = serde_json::to_value(registry.list_all_scenarios()).unwrap();
        assert_eq!(all[0]["packSlug"], "shop");
        // The pack comes first in cross-pack rows.
        assert!(
            serde_json::to_string(&all)
                .unwrap()
                .starts_with(r#"[{"packSlug":"shop","scenario""#)
        );
    }

    #[test]
    fn versions_sort_as_plain_strings_and_the_last_describes_the_scenario() {
        let dir = shop_tree();
        let text =
            std::fs::read_to_string(dir.path().join("shop/scenarios/refund/1.0.0/scenario.yaml"))
                .unwrap();
        write(
            dir.path(),
            "shop/scenarios/refund/10.0.0/scenario.yaml",
            &text.replace("name: Refund Review", "name: Refund Ten"),
        );
        write(
            dir.path(),
            "shop/scenarios/refund/2.0.0/scenario.yaml",
            &text.replace("name: Refund Review", "name: Refund Two"),
        );
        let rows = registry(dir.path(), 0).list_scenarios("shop").unwrap();
        assert_eq!(rows[0].versions, ["1.0.0", "10.0.0", "2.0.0"]);
        assert_eq!(rows[0].name, "Refund Two");
        assert!(rows[0].templates.is_empty());
    }

    #[test]
    fn launch_schema_applies_the_template() {
        let dir = shop_tree();
        let registry = registry(dir.path(), 0);
        let plain = registry
            .launch_schema("shop", "refund", "1.0.0", None)
            .unwrap();
        assert_eq!(
            plain,
            registry
                .launch_schema("shop", "refund", "1.0.0", Some(""))
                .unwrap()
        );
        let value = serde_json::to_value(&plain).unwrap();
        assert!(value.get("templateId").is_none());
        assert_eq!(
            value["defaults"],
            json!({"orderId": "ORD-1", "amount": 120, "express": false, "region": "eu"})
        );
        assert_eq!(value["formSchema"]["required"], json!(["amount"]));
        assert_eq!(
            value["participants"][1],
            json!({"id": "lead", "role": "lead", "agentRef": "lead-agent"})
        );
        // The agent appears in the participant's role.
        assert_eq!(value["agents"][0]["role"], "reviewer");
        assert_eq!(
            value["agents"][0]["transportIdentity"],
            "agent://reviewer-agent"
        );
        assert_eq!(
            value["launchSummary"],
            json!({
                "modeName": "macp.mode.decision.v1", "modeVersion": "1.0.0", "configurationVersion": "config.default",
                "policyVersion": "policy.default", "policyHints": {"type": "none", "vetoEnabled": false}, "ttlMs": 60000
            })
        );

        let strict = serde_json::to_value(
            registry
                .launch_schema("shop", "refund", "1.0.0", Some("strict"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(strict["templateId"], "strict");
        assert_eq!(strict["defaults"]["amount"], 900);
        assert_eq!(strict["runtime"], json!({"kind": "rust", "version": "v2"}));
        assert_eq!(strict["launchSummary"]["ttlMs"], 5000);
        let error = registry
            .launch_schema("shop", "refund", "1.0.0", Some("nope"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "template not found: nope for shop/refund@1.0.0"
        );
    }

    #[test]
    fn launch_schema_needs_every_agent_in_the_catalog() {
        let dir = shop_tree();
        std::fs::remove_file(dir.path().join("_agents/lead.yaml")).unwrap();
        let error = registry(dir.path(), 0)
            .launch_schema("shop", "refund", "1.0.0", None)
            .unwrap_err();
        assert_eq!(
            error,
            Error::AgentNotFound {
                agent_ref: "lead-agent".to_owned()
            }
        );
        assert_eq!(error.to_api_error().code.http_status(), 404);
    }

    #[test]
    fn agents_list_the_scenarios_that_use_them() {
        let dir = shop_tree();
        write(
            dir.path(),
            "_agents/idle.yaml",
            "apiVersion: scenarios.macp.dev/v1\nkind: AgentProfile\nmetadata: {agentRef: idle, name: Idle}\nspec: {transportIdentity: 'grpc://idle'}\n",
        );
        let registry = registry(dir.path(), 0);
        let agents = serde_json::to_value(registry.agents()).unwrap();
        assert_eq!(agents.as_array().unwrap().len(), 3);
        assert_eq!(
            serde_json::to_value(registry.agent("lead-agent").unwrap()).unwrap(),
            json!({"agentRef": "lead-agent", "name": "lead-agent", "role": "lead", "framework": "scripted",
                   "transportIdentity": "agent://lead-agent", "tags": ["t"], "scenarios": ["shop/refund@1.0.0"]})
        );
        assert_eq!(
            registry.agent("idle").unwrap().scenarios,
            Vec::<String>::new()
        );
        assert_eq!(
            registry.agent("idle").unwrap().agent.transport_identity,
            "grpc://idle"
        );
        assert_eq!(
            registry.agent("nope").unwrap_err().to_string(),
            "agent not found: nope"
        );
    }

    #[test]
    fn compile_looks_up_the_template_before_validating_inputs() {
        let dir = shop_tree();
        let registry = registry(dir.path(), 0);
        let request = |template: Option<&str>, inputs: serde_json::Value| CompileRequest {
            scenario_ref: "shop/refund@1.0.0".to_owned(),
            template_id: template.map(str::to_owned),
            mode: None,
            inputs: inputs.as_object().unwrap().clone(),
        };
        let error = registry
            .compile(&request(Some("nope"), json!({"amount": "x"})))
            .unwrap_err();
        assert!(matches!(error, Error::TemplateNotFound { .. }), "{error:?}");
        // An empty template id applies none but is echoed.
        let compiled = registry.compile(&request(Some(""), json!({}))).unwrap();
        assert_eq!(
            compiled.execution_request["session"]["metadata"]["templateId"],
            ""
        );
        assert_eq!(compiled.execution_request["session"]["ttlMs"], 60000);
        assert!(matches!(
            registry.compile(&CompileRequest {
                scenario_ref: "bad".into(),
                ..Default::default()
            }),
            Err(Error::InvalidScenarioRef { .. })
        ));
    }

    #[test]
    fn ttl_zero_reads_the_tree_on_every_call() {
        let dir = shop_tree();
        let registry = registry(dir.path(), 0);
        assert_eq!(registry.list_packs().len(), 1);
        write(dir.path(), "more/pack.yaml", &pack_yaml("more"));
        assert_eq!(registry.list_packs().len(), 2);
    }

    #[test]
    fn a_positive_ttl_reuses_the_tree_until_invalidated() {
        let dir = shop_tree();
        let registry = registry(dir.path(), 600_000);
        assert_eq!(registry.list_packs().len(), 1);
        write(dir.path(), "more/pack.yaml", &pack_yaml("more"));
        let clone = registry.clone();
        assert_eq!(clone.list_packs().len(), 1);
        registry.invalidate();
        assert_eq!(clone.list_packs().len(), 2);
    }

    #[test]
    fn problems_are_reported_without_hiding_healthy_packs() {
        let dir = shop_tree();
        write(dir.path(), "broken/pack.yaml", "apiVersion: nope\n");
        let registry = registry(dir.path(), 0);
        assert_eq!(registry.list_packs().len(), 1);
        let problems = registry.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file, "broken/pack.yaml");
        let error = registry.list_scenarios("broken").unwrap_err();
        let api = error.to_api_error();
        assert_eq!(
            (api.code.as_str(), api.code.http_status()),
            ("INVALID_PACK_DATA", 500)
        );
        assert_eq!(api.details.unwrap()["file"], "broken/pack.yaml");
    }
}
