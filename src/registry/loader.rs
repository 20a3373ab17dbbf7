//! Discovery of the packs tree into an immutable [`Snapshot`].
//!
//! Layout: `{dir}/pack.yaml`, `{dir}/scenarios/{scenario}/{version}/scenario.yaml` and
//! `…/{version}/templates/*.yaml|*.yml`; the agent catalog is `_agents/*.yaml`. Top-level
//! directories whose name starts with `_` are fragment libraries, not packs. A pack is keyed by
//! its `metadata.slug`, scenarios and versions by their directory names, templates by their
//! `metadata.slug`.
//!
//! A broken file never hides healthy ones: a bad `pack.yaml` drops that pack, a bad scenario or
//! template file drops that scenario version, a bad agent file drops that agent. Each problem
//! is kept in [`Snapshot::problems`], and looking up the broken item returns its load error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::error::{Error, LoadError};
use super::inputs::InputSchema;
use super::model::{
    AgentDocument, Outputs, PackDocument, PackSummary, ScenarioDocument, ScenarioMetadata,
    TemplateDocument, TemplateMetadata, Variant, parse_document,
};
use super::scenario_ref::ScenarioRef;
use super::yaml::PacksRoot;

/// Directory of the agent catalog under `PACKS_DIR`.
pub(crate) const AGENTS_DIR: &str = "_agents";

pub(crate) struct Snapshot {
    pub(crate) root: Option<PacksRoot>,
    /// In directory order.
    pub(crate) packs: Vec<Pack>,
    pub(crate) agents: BTreeMap<String, AgentDocument>,
    pub(crate) problems: Vec<LoadError>,
    /// Packs whose `pack.yaml` failed, by directory name (the likely slug).
    broken_packs: BTreeMap<String, LoadError>,
}

pub(crate) struct Pack {
    pub(crate) dir: PathBuf,
    pub(crate) file: String,
    pub(crate) summary: PackSummary,
    /// scenario slug → version → the loaded version or why it failed to load.
    pub(crate) scenarios:
        BTreeMap<String, BTreeMap<String, Result<Arc<ScenarioVersion>, LoadError>>>,
}

pub(crate) struct ScenarioVersion {
    pub(crate) reference: ScenarioRef,
    pub(crate) dir: PathBuf,
    pub(crate) file: String,
    pub(crate) metadata: ScenarioMetadata,
    pub(crate) outputs: Outputs,
    pub(crate) inputs: InputSchema,
    /// The scenario as written, with no template applied.
    pub(crate) base: Variant,
    pub(crate) templates: BTreeMap<String, Template>,
    /// Every file pulled in through `!include` by the scenario or its templates.
    pub(crate) includes: Vec<PathBuf>,
}

pub(crate) struct Template {
    pub(crate) file: String,
    pub(crate) metadata: TemplateMetadata,
    pub(crate) variant: Variant,
}

impl Snapshot {
    pub(crate) fn load(packs_dir: &Path) -> Snapshot {
        let mut snapshot = Snapshot {
            root: None,
            packs: Vec::new(),
            agents: BTreeMap::new(),
            problems: Vec::new(),
            broken_packs: BTreeMap::new(),
        };
        let root = match PacksRoot::open(packs_dir) {
            Ok(root) => root,
            Err(error) => {
                let problem = LoadError::new(
                    packs_dir.display().to_string(),
                    format!("cannot read PACKS_DIR: {error}"),
                );
                snapshot.problems.push(problem);
                return snapshot;
            }
        };
        snapshot.load_agents(&root);
        for (name, dir) in sorted_entries(root.path()) {
            if name.starts_with('_') || !dir.is_dir() || !dir.join("pack.yaml").is_file() {
                continue;
            }
            match load_pack(&root, &dir) {
                Ok(pack) => snapshot.add_pack(pack),
                Err(problem) => {
                    snapshot.problems.push(problem.clone());
                    snapshot.broken_packs.insert(name, problem);
                }
            }
        }
        snapshot.root = Some(root);
        snapshot
    }

    fn add_pack(&mut self, pack: Pack) {
        if let Some(first) = self
            .packs
            .iter()
            .find(|known| known.summary.slug == pack.summary.slug)
        {
            let message = format!(
                "duplicate pack slug \"{}\" (first defined in {})",
                pack.summary.slug, first.file
            );
            self.problems.push(LoadError::new(&pack.file, message));
            return;
        }
        for versions in pack.scenarios.values() {
            self.problems.extend(
                versions
                    .values()
                    .filter_map(|version| version.as_ref().err().cloned()),
            );
        }
        self.packs.push(pack);
    }

    fn load_agents(&mut self, root: &PacksRoot) {
        for file in yaml_files(&root.path().join(AGENTS_DIR)) {
            let display = root.display(&file);
            let loaded = root.load(&file).and_then(|loaded| {
                parse_document::<AgentDocument>(loaded.value, "AgentProfile")
                    .map_err(|message| LoadError::new(&display, message))
            });
            match loaded {
                Ok(document) if self.agents.contains_key(&document.metadata.agent_ref) => {
                    let message = format!("duplicate agentRef \"{}\"", document.metadata.agent_ref);
                    self.problems.push(LoadError::new(&display, message));
                }
                Ok(document) => {
                    self.agents
                        .insert(document.metadata.agent_ref.clone(), document);
                }
                Err(problem) => self.problems.push(problem),
            }
        }
    }

    pub(crate) fn pack(&self, slug: &str) -> Result<&Pack, Error> {
        if let Some(pack) = self.packs.iter().find(|pack| pack.summary.slug == slug) {
            return Ok(pack);
        }
        match self.broken_packs.get(slug) {
            Some(problem) => Err(Error::InvalidPackData(problem.clone())),
            None => Err(Error::PackNotFound {
                pack: slug.to_owned(),
            }),
        }
    }

    pub(crate) fn version(&self, reference: &ScenarioRef) -> Result<&Arc<ScenarioVersion>, Error> {
        let pack = self.pack(&reference.pack)?;
        let versions =
            pack.scenarios
                .get(&reference.scenario)
                .ok_or_else(|| Error::ScenarioNotFound {
                    pack: reference.pack.clone(),
                    scenario: reference.scenario.clone(),
                })?;
        match versions.get(&reference.version) {
            Some(Ok(version)) => Ok(version),
            Some(Err(problem)) => Err(Error::InvalidPackData(problem.clone())),
            None => Err(Error::VersionNotFound {
                pack: reference.pack.clone(),
                scenario: reference.scenario.clone(),
                version: reference.version.clone(),
            }),
        }
    }
}

impl ScenarioVersion {
    pub(crate) fn template(&self, slug: &str) -> Result<&Template, Error> {
        self.templates
            .get(slug)
            .ok_or_else(|| Error::TemplateNotFound {
                pack: self.reference.pack.clone(),
                scenario: self.reference.scenario.clone(),
                version: self.reference.version.clone(),
                template: slug.to_owned(),
            })
    }

    /// The base variant and then each template's, labelled for messages.
    pub(crate) fn variants(&self) -> impl Iterator<Item = (Option<&Template>, &Variant)> {
        std::iter::once((None, &self.base)).chain(
            self.templates
                .values()
                .map(|template| (Some(template), &template.variant)),
        )
    }
}

fn load_pack(root: &PacksRoot, dir: &Path) -> Result<Pack, LoadError> {
    let file = root.display(&dir.join("pack.yaml"));
    let loaded = root.load(&dir.join("pack.yaml"))?;
    let document: PackDocument = parse_document(loaded.value, "ScenarioPack")
        .map_err(|message| LoadError::new(&file, message))?;
    if document.metadata.slug.is_empty() {
        return Err(LoadError::new(&file, "metadata.slug must not be empty"));
    }
    let mut scenarios = BTreeMap::new();
    for (scenario, scenario_dir) in sorted_entries(&dir.join("scenarios")) {
        let versions: BTreeMap<_, _> = sorted_entries(&scenario_dir)
            .into_iter()
            .filter(|(_, version_dir)| version_dir.join("scenario.yaml").is_file())
            .map(|(version, version_dir)| {
                let reference = ScenarioRef {
                    pack: document.metadata.slug.clone(),
                    scenario: scenario.clone(),
                    version: version.clone(),
                };
                (
                    version,
                    load_version(root, reference, &version_dir).map(Arc::new),
                )
            })
            .collect();
        if !versions.is_empty() {
            scenarios.insert(scenario, versions);
        }
    }
    Ok(Pack {
        dir: dir.to_path_buf(),
        file,
        summary: document.metadata,
        scenarios,
    })
}

/// Loads `{dir}/scenario.yaml` and its templates, resolving every template against the
/// scenario so a bad override is reported at load time rather than at launch.
pub(crate) fn load_version(
    root: &PacksRoot,
    reference: ScenarioRef,
    dir: &Path,
) -> Result<ScenarioVersion, LoadError> {
    let file = root.display(&dir.join("scenario.yaml"));
    let loaded = root.load(&dir.join("scenario.yaml"))?;
    let problem = |message: String| LoadError::new(&file, message);
    let document: ScenarioDocument =
        parse_document(loaded.value, "ScenarioVersion").map_err(problem)?;
    let inputs = InputSchema::compile(Value::Object(document.spec.inputs.schema.clone()))
        .map_err(problem)?;
    let schema_defaults = inputs.defaults();
    let base = Variant::resolve(&document.spec, &schema_defaults, None).map_err(problem)?;
    let mut includes = loaded.includes;

    let mut templates = BTreeMap::new();
    for template_file in yaml_files(&dir.join("templates")) {
        let display = root.display(&template_file);
        let loaded = root.load(&template_file)?;
        includes.extend(loaded.includes);
        let problem = |message: String| LoadError::new(&display, message);
        let template: TemplateDocument =
            parse_document(loaded.value, "ScenarioTemplate").map_err(problem)?;
        let slug = template.metadata.slug.clone();
        if slug.is_empty() {
            return Err(problem("metadata.slug must not be empty".to_owned()));
        }
        if let Some(first) = templates
            .get(&slug)
            .map(|first: &Template| first.file.clone())
        {
            return Err(problem(format!(
                "duplicate template slug \"{slug}\" (first defined in {first})"
            )));
        }
        let variant = Variant::resolve(&document.spec, &schema_defaults, template.spec.as_ref())
            .map_err(|message| problem(format!("after applying this template: {message}")))?;
        templates.insert(
            slug,
            Template {
                file: display,
                metadata: template.metadata,
                variant,
            },
        );
    }
    Ok(ScenarioVersion {
        reference,
        dir: dir.to_path_buf(),
        file,
        metadata: document.metadata,
        outputs: document.spec.outputs.unwrap_or_default(),
        inputs,
        base,
        templates,
        includes,
    })
}

/// Directory entries sorted by name bytes (the order catalogs list them in). A missing or
/// unreadable directory has no entries; names that are not UTF-8 cannot be slugs and are skipped.
pub(crate) fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            entry
                .file_name()
                .into_string()
                .ok()
                .map(|name| (name, entry.path()))
        })
        .collect();
    entries.sort();
    entries
}

/// The `*.yaml` and `*.yml` files of a directory, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    sorted_entries(dir)
        .into_iter()
        .filter(|(name, path)| {
            (name.ends_with(".yaml") || name.ends_with(".yml")) && path.is_file()
        })
        .map(|(_, path)| path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{
        SCENARIO, agent_yaml, pack_yaml, reference, shop_tree, write,
    };

    #[test]
    fn discovers_packs_scenarios_versions_and_templates() {
        let dir = shop_tree();
        write(dir.path(), "_shared/pack.yaml", &pack_yaml("shared"));
        write(dir.path(), "empty/pack.yaml", &pack_yaml("empty"));
        write(dir.path(), "notapack/readme.yaml", "x: 1\n");
        let snapshot = Snapshot::load(dir.path());
        assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
        let slugs: Vec<_> = snapshot
            .packs
            .iter()
            .map(|pack| pack.summary.slug.as_str())
            .collect();
        assert_eq!(slugs, ["empty", "shop"]);
        let version = snapshot.version(&reference("shop/refund@1.0.0")).unwrap();
        assert_eq!(version.base.launch.participants[0].id, "reviewer");
        assert_eq!(
            version.templates.keys().collect::<Vec<_>>(),
            ["plain", "strict"]
        );
        assert_eq!(
            version.template("strict").unwrap().variant.launch.ttl_ms,
            5000
        );
        assert_eq!(version.includes.len(), 1);
        assert!(snapshot.pack("empty").unwrap().scenarios.is_empty());
        assert_eq!(
            snapshot.agents.keys().collect::<Vec<_>>(),
            ["lead-agent", "reviewer-agent"]
        );
    }

    #[test]
    fn lookups_report_what_is_missing() {
        let dir = shop_tree();
        write(dir.path(), "_shared/pack.yaml", &pack_yaml("shared"));
        let snapshot = Snapshot::load(dir.path());
        let lookup = |text: &str| {
            snapshot
                .version(&reference(text))
                .err()
                .map(|error| error.to_string())
        };
        assert_eq!(lookup("nope/refund@1.0.0").unwrap(), "pack not found: nope");
        assert_eq!(
            lookup("shared/refund@1.0.0").unwrap(),
            "pack not found: shared"
        );
        assert_eq!(
            lookup("shop/x@1.0.0").unwrap(),
            "scenario not found: shop/x"
        );
        assert_eq!(
            lookup("shop/refund@2.0.0").unwrap(),
            "version not found: shop/refund@2.0.0"
        );
        let version = snapshot.version(&reference("shop/refund@1.0.0")).unwrap();
        assert_eq!(
            version.template("slow").err().unwrap().to_string(),
            "template not found: slow for shop/refund@1.0.0"
        );
    }

    #[test]
    fn a_broken_pack_does_not_hide_healthy_ones() {
        let dir = shop_tree();
        write(
            dir.path(),
            "broken/pack.yaml",
            "apiVersion: scenarios.macp.dev/v1\nkind: ScenarioPack\nmetadata: [\n",
        );
        write(
            dir.path(),
            "shop/scenarios/bad/1.0.0/scenario.yaml",
            "apiVersion: scenarios.macp.dev/v1\nkind: Nope\n",
        );
        write(
            dir.path(),
            "shop/scenarios/worse/1.0.0/scenario.yaml",
            &SCENARIO.replace("_shared/participants.yaml", "_shared/missing.yaml"),
        );
        write(dir.path(), "zeta/pack.yaml", &pack_yaml("zeta"));
        let snapshot = Snapshot::load(dir.path());
        let slugs: Vec<_> = snapshot
            .packs
            .iter()
            .map(|pack| pack.summary.slug.as_str())
            .collect();
        assert_eq!(slugs, ["shop", "zeta"]);
        let files: Vec<_> = snapshot
            .problems
            .iter()
            .map(|problem| problem.file.as_str())
            .collect();
        assert_eq!(
            files,
            [
                "broken/pack.yaml",
                "shop/scenarios/bad/1.0.0/scenario.yaml",
                "shop/scenarios/worse/1.0.0/scenario.yaml"
            ]
        );
        assert!(snapshot.problems[0].line.is_some());
        assert!(
            snapshot.problems[2]
                .message
                .contains("!include target not found"),
            "{}",
            snapshot.problems[2]
        );
        assert!(snapshot.version(&reference("shop/refund@1.0.0")).is_ok());
        let error = snapshot
            .version(&reference("shop/bad@1.0.0"))
            .err()
            .unwrap();
        assert!(matches!(error, Error::InvalidPackData(_)), "{error:?}");
        assert!(matches!(
            snapshot.pack("broken"),
            Err(Error::InvalidPackData(_))
        ));
    }

    #[test]
    fn a_broken_template_breaks_only_its_version() {
        let dir = shop_tree();
        write(
            dir.path(),
            "shop/scenarios/refund/1.0.0/templates/bad.yaml",
            "apiVersion: scenarios.macp.dev/v1\nkind: ScenarioTemplate\nmetadata: {slug: bad}\nspec: {overrides: {launch: {ttlMs: soon}}}\n",
        );
        write(
            dir.path(),
            "shop/scenarios/other/1.0.0/scenario.yaml",
            SCENARIO,
        );
        let snapshot = Snapshot::load(dir.path());
        assert_eq!(snapshot.problems.len(), 1);
        assert_eq!(
            snapshot.problems[0].file,
            "shop/scenarios/refund/1.0.0/templates/bad.yaml"
        );
        assert!(
            snapshot.problems[0].message.contains("spec.launch.ttlMs"),
            "{}",
            snapshot.problems[0]
        );
        assert!(snapshot.version(&reference("shop/other@1.0.0")).is_ok());
    }

    #[test]
    fn a_missing_packs_dir_is_an_empty_registry_with_a_problem() {
        let snapshot = Snapshot::load(Path::new("/definitely/not/here"));
        assert!(snapshot.packs.is_empty());
        assert_eq!(snapshot.problems.len(), 1);
    }

    #[test]
    fn duplicate_slugs_are_reported() {
        let dir = shop_tree();
        write(dir.path(), "store/pack.yaml", &pack_yaml("shop"));
        write(
            dir.path(),
            "_agents/again.yaml",
            &agent_yaml("lead-agent", "lead"),
        );
        let snapshot = Snapshot::load(dir.path());
        assert_eq!(snapshot.packs.len(), 1);
        let messages: Vec<_> = snapshot
            .problems
            .iter()
            .map(|problem| problem.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "duplicate agentRef \"lead-agent\"",
                "duplicate pack slug \"shop\" (first defined in shop/pack.yaml)"
            ]
        );
    }

    #[test]
    fn broken_agent_files_are_reported() {
        let dir = shop_tree();
        write(
            dir.path(),
            "_agents/broken.yaml",
            "apiVersion: scenarios.macp.dev/v1\nkind: AgentProfile\nmetadata: {name: B}\nspec: {}\n",
        );
        let snapshot = Snapshot::load(dir.path());
        assert_eq!(snapshot.agents.len(), 2);
        assert_eq!(snapshot.problems.len(), 1);
        assert_eq!(snapshot.problems[0].file, "_agents/broken.yaml");
        assert!(
            snapshot.problems[0].message.contains("agentRef"),
            "{}",
            snapshot.problems[0]
        );
    }
}
