//! Authoring checks behind `scenario validate` and `scenario lint`: what the loader refuses,
//! plus what only shows when a scenario is compiled or run (unknown agents, placeholders the
//! defaults cannot fill, kickoffs the runtime would refuse, stray data files).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::compiler::{CompileRequest, compile};
use super::error::{Error, LoadError};
use super::loader::{ScenarioVersion, Snapshot, Template, load_version, sorted_entries};
use super::policies::{BUILT_IN_POLICIES, POLICIES_DIR};
use super::scenario_ref::ScenarioRef;
use super::yaml::PacksRoot;

/// Modes in which only declared participants may send mode messages.
const DECLARED_PARTICIPANT_MODES: &[&str] = &["macp.mode.decision.v1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Diagnostic {
    pub(crate) severity: Severity,
    #[serde(flatten)]
    pub(crate) location: LoadError,
}

impl Diagnostic {
    fn error(file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            location: LoadError::new(file, message),
        }
    }

    fn warning(file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            location: LoadError::new(file, message),
        }
    }
}

impl From<LoadError> for Diagnostic {
    fn from(problem: LoadError) -> Self {
        Diagnostic {
            severity: Severity::Error,
            location: problem,
        }
    }
}

/// `^[a-z0-9][a-z0-9-]*$`: safe in URLs, paths and scenario references.
pub(crate) fn is_kebab_case(slug: &str) -> bool {
    slug.bytes()
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && slug
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// Checks one scenario version given as its `scenario.yaml` or directory.
pub(crate) fn validate_path(packs_dir: &Path, path: &Path) -> Result<Vec<Diagnostic>, String> {
    let snapshot = Snapshot::load(packs_dir);
    let root = snapshot
        .root
        .as_ref()
        .ok_or_else(|| format!("cannot read packs directory {}", packs_dir.display()))?;
    let file = if path.is_dir() {
        path.join("scenario.yaml")
    } else {
        path.to_path_buf()
    };
    let file = file
        .canonicalize()
        .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
    let not_a_scenario = || {
        format!(
            "{} is not a scenario file of {} (expected {{pack}}/scenarios/{{scenario}}/{{version}}/scenario.yaml)",
            path.display(),
            packs_dir.display()
        )
    };
    let version_dir = file.parent().ok_or_else(not_a_scenario)?;
    let scenario_dir = version_dir.parent().ok_or_else(not_a_scenario)?;
    let pack_dir = scenario_dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(not_a_scenario)?;
    if !file.starts_with(root.path())
        || file.file_name() != Some("scenario.yaml".as_ref())
        || scenario_dir.parent().and_then(Path::file_name) != Some("scenarios".as_ref())
    {
        return Err(not_a_scenario());
    }
    let pack = match snapshot.packs.iter().find(|pack| pack.dir == pack_dir) {
        Some(pack) => pack.summary.slug.clone(),
        None => {
            let problem = snapshot
                .problems
                .iter()
                .find(|problem| Path::new(&problem.file).starts_with(root.display(pack_dir)));
            return Ok(vec![problem.cloned().map_or_else(
                || {
                    Diagnostic::error(
                        &root.display(&pack_dir.join("pack.yaml")),
                        "pack.yaml is missing",
                    )
                },
                Diagnostic::from,
            )]);
        }
    };
    let name = |dir: &Path| {
        dir.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let reference = ScenarioRef {
        pack,
        scenario: name(scenario_dir),
        version: name(version_dir),
    };
    Ok(match load_version(root, reference, version_dir) {
        Ok(version) => check_version(&snapshot, root, &version),
        Err(problem) => vec![problem.into()],
    })
}

/// Checks the whole tree: every load problem, every pack and every scenario version.
pub(crate) fn lint(snapshot: &Snapshot) -> Vec<Diagnostic> {
    let mut diagnostics: Vec<Diagnostic> = snapshot
        .problems
        .iter()
        .cloned()
        .map(Diagnostic::from)
        .collect();
    let Some(root) = &snapshot.root else {
        return diagnostics;
    };
    for pack in &snapshot.packs {
        if !is_kebab_case(&pack.summary.slug) {
            diagnostics.push(Diagnostic::error(
                &pack.file,
                format!("pack slug \"{}\" must be kebab-case", pack.summary.slug),
            ));
        }
    }
    if let Err(Error::InvalidPackData(problem)) = super::policies::load(root.path()) {
        diagnostics.push(problem.into());
    }
    for version in snapshot.healthy_versions() {
        diagnostics.extend(check_version(snapshot, root, version));
    }
    diagnostics
}

fn check_version(
    snapshot: &Snapshot,
    root: &PacksRoot,
    version: &ScenarioVersion,
) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    let file = version.file.as_str();
    let reference = &version.reference;
    if !is_kebab_case(&reference.scenario) {
        diagnostics.push(Diagnostic::error(
            file,
            format!(
                "scenario slug \"{}\" must be kebab-case",
                reference.scenario
            ),
        ));
    }
    let metadata = &version.metadata;
    let declared = format!(
        "{}/{}@{}",
        metadata.pack, metadata.scenario, metadata.version
    );
    if declared != reference.to_string() {
        diagnostics.push(Diagnostic::warning(
            file,
            format!("metadata says {declared} but the file is {reference}"),
        ));
    }
    for commitment in version.base.launch.commitments.iter().flatten() {
        let description = commitment.get("description").and_then(Value::as_str);
        if description.is_none_or(|text| text.trim().is_empty()) {
            let id = commitment.get("id").unwrap_or(&Value::Null);
            diagnostics.push(Diagnostic::warning(
                file,
                format!("commitment {id} has no description"),
            ));
        }
    }
    // A policy file that does not load is lint's to report, once.
    let pack_policies: Vec<String> = super::policies::load(root.path())
        .map(|policies| {
            policies
                .into_iter()
                .map(|policy| policy.policy_id)
                .collect()
        })
        .unwrap_or_default();
    for (template, variant) in version.variants() {
        let file = template.map_or(file, |template| template.file.as_str());
        if let Some(template) = template {
            diagnostics.extend(check_template(version, template));
        }
        for participant in &variant.launch.participants {
            if participant.agent_ref.is_none() {
                diagnostics.push(Diagnostic::warning(
                    file,
                    format!(
                        "participant \"{}\" has no agentRef: no catalog agent plays it",
                        participant.id
                    ),
                ));
            }
        }
        for agent_ref in variant.agent_refs() {
            if !snapshot.agents.contains_key(agent_ref) {
                diagnostics.push(Diagnostic::error(
                    file,
                    format!("agentRef \"{agent_ref}\" is not in the agent catalog (_agents/)"),
                ));
            }
        }
        if let Some(policy) = variant.launch.policy_version.as_deref().filter(|policy| {
            !BUILT_IN_POLICIES.contains(policy) && !pack_policies.iter().any(|id| id == policy)
        }) {
            diagnostics.push(Diagnostic::warning(
                file,
                format!("policyVersion \"{policy}\" is neither built into the runtime nor in {POLICIES_DIR}/; register it before launching"),
            ));
        }
        let request = CompileRequest {
            scenario_ref: reference.to_string(),
            template_id: template.map(|template| template.metadata.slug.clone()),
            ..CompileRequest::default()
        };
        match compile(version, template, &request, "lint") {
            Ok(compiled) => diagnostics.extend(
                kickoff_problems(&compiled.execution_request)
                    .into_iter()
                    .map(|message| Diagnostic::error(file, message)),
            ),
            Err(error) => diagnostics.push(Diagnostic::error(
                file,
                format!("does not compile with default inputs: {error}"),
            )),
        }
    }
    diagnostics.extend(check_fixtures(root, version));
    diagnostics.extend(orphan_data_files(root, version));
    // A template inherits the scenario's problems; report each one once, where it arises.
    let mut seen = BTreeSet::new();
    diagnostics.retain(|diagnostic| seen.insert(diagnostic.location.message.clone()));
    diagnostics
}

fn check_template(version: &ScenarioVersion, template: &Template) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    let expected = version.reference.to_string();
    if let Some(declared) = template
        .metadata
        .scenario_version
        .as_deref()
        .filter(|declared| *declared != expected)
    {
        diagnostics.push(Diagnostic::warning(
            &template.file,
            format!("metadata.scenarioVersion is {declared}, expected {expected}"),
        ));
    }
    let ids = |commitments: Option<&Vec<serde_json::Map<String, Value>>>| -> BTreeSet<String> {
        commitments
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let kept = ids(template.variant.launch.commitments.as_ref());
    let dropped: Vec<_> = ids(version.base.launch.commitments.as_ref())
        .difference(&kept)
        .cloned()
        .collect();
    if !dropped.is_empty() {
        diagnostics.push(Diagnostic::warning(
            &template.file,
            format!(
                "overriding commitments drops {} (arrays replace, they do not merge)",
                dropped.join(", ")
            ),
        ));
    }
    diagnostics
}

/// Kickoff messages the runtime would refuse: a Commitment from anyone but the initiator or
/// not echoing the session's versions, and (in declared-participant modes) mode messages from
/// senders that are not participants.
fn kickoff_problems(request: &Value) -> Vec<String> {
    let session = &request["session"];
    let participants: Vec<&str> = session["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str())
        .collect();
    let initiator = session["initiatorParticipantId"]
        .as_str()
        .unwrap_or_default();
    let declared_only =
        DECLARED_PARTICIPANT_MODES.contains(&session["modeName"].as_str().unwrap_or_default());
    let mut problems = Vec::new();
    for (index, message) in request["kickoff"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let from = message["from"].as_str().unwrap_or_default();
        let message_type = message["messageType"].as_str().unwrap_or_default();
        let is_participant = participants.contains(&from);
        if message_type == "Commitment" {
            if from != initiator {
                problems.push(format!("kickoff[{index}]: a Commitment must come from the initiator \"{initiator}\", not \"{from}\""));
            }
            let payload = commitment_payload(message);
            for (snake, camel, session_field) in [
                ("mode_version", "modeVersion", "modeVersion"),
                (
                    "configuration_version",
                    "configurationVersion",
                    "configurationVersion",
                ),
            ] {
                let echoed =
                    payload.and_then(|payload| payload.get(snake).or_else(|| payload.get(camel)));
                if echoed.is_some_and(|echoed| *echoed != session[session_field]) {
                    problems.push(format!("kickoff[{index}]: the Commitment's {snake} must equal the session's {session_field}"));
                }
            }
        } else if !is_participant && (declared_only || from != initiator) {
            problems.push(format!(
                "kickoff[{index}]: \"{from}\" sends {message_type} but is not a declared participant (the initiator is not one unless listed)"
            ));
        }
    }
    problems
}

fn commitment_payload(message: &Value) -> Option<&Value> {
    let envelope = &message["payloadEnvelope"];
    [
        &envelope["proto"]["value"],
        &envelope["json"],
        &message["payload"],
    ]
    .into_iter()
    .find(|payload| payload.is_object())
}

/// Each `fixtures/*.json` must be an input set the scenario compiles with.
fn check_fixtures(root: &PacksRoot, version: &ScenarioVersion) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for (name, path) in sorted_entries(&version.dir.join("fixtures")) {
        if !name.ends_with(".json") {
            continue;
        }
        let file = root.display(&path);
        let inputs = std::fs::read_to_string(&path)
            .map_err(|error| error.to_string())
            .and_then(|text| {
                serde_json::from_str::<Value>(&text)
                    .map_err(|error| format!("invalid JSON: {error}"))
            });
        let request = match inputs {
            Ok(Value::Object(inputs)) => CompileRequest {
                scenario_ref: version.reference.to_string(),
                inputs,
                ..CompileRequest::default()
            },
            Ok(_) => {
                diagnostics.push(Diagnostic::error(
                    &file,
                    "a fixture must be a JSON object of inputs",
                ));
                continue;
            }
            Err(message) => {
                diagnostics.push(Diagnostic::error(&file, message));
                continue;
            }
        };
        if let Err(error) = compile(version, None, &request, "lint") {
            let details = match &error {
                super::error::Error::InvalidInputs(errors) => errors
                    .iter()
                    .map(|error| format!("{}: {}", error.field, error.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            diagnostics.push(Diagnostic::error(
                &file,
                format!("does not compile: {details}"),
            ));
        }
    }
    diagnostics
}

/// Files under `data/` that neither the scenario nor a template includes.
fn orphan_data_files(root: &PacksRoot, version: &ScenarioVersion) -> Vec<Diagnostic> {
    let mut files = Vec::new();
    collect_files(&version.dir.join("data"), &mut files);
    files
        .into_iter()
        .filter(|file| {
            file.canonicalize()
                .map_or(true, |canonical| !version.includes.contains(&canonical))
        })
        .map(|file| {
            Diagnostic::warning(
                &root.display(&file),
                "not included by the scenario or its templates",
            )
        })
        .collect()
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for (_, path) in sorted_entries(dir) {
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{SCENARIO, pack_yaml, shop_tree, write};

    const VERSION_DIR: &str = "shop/scenarios/refund/1.0.0";

    fn lint_messages(dir: &Path) -> Vec<(Severity, String, String)> {
        lint(&Snapshot::load(dir))
            .into_iter()
            .map(|diagnostic| {
                (
                    diagnostic.severity,
                    diagnostic.location.file,
                    diagnostic.location.message,
                )
            })
            .collect()
    }

    fn with_scenario(dir: &Path, edit: impl Fn(&str) -> String) {
        write(
            dir,
            &format!("{VERSION_DIR}/scenario.yaml"),
            &edit(SCENARIO),
        );
    }

    #[test]
    fn kebab_case_slugs() {
        assert!(is_kebab_case("high-value-2"));
        assert!(is_kebab_case("9lives"));
        for bad in ["", "-x", "High", "a_b", "a b", "a/b"] {
            assert!(!is_kebab_case(bad), "{bad}");
        }
    }

    #[test]
    fn the_shop_tree_only_warns_about_the_replaced_commitments() {
        let dir = shop_tree();
        assert_eq!(
            lint_messages(dir.path()),
            [(
                Severity::Warning,
                format!("{VERSION_DIR}/templates/strict.yaml"),
                "overriding commitments drops refund-reviewed (arrays replace, they do not merge)"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn kickoffs_the_runtime_would_refuse_are_errors() {
        let dir = shop_tree();
        with_scenario(dir.path(), |text| {
            text.replace("    ttlMs: 60000", "    ttlMs: 60000\n    initiatorParticipantId: lead").replace(
                "  execution:",
                "      - {from: outsider, to: [lead], kind: request, messageType: Evaluation, payload: {}}
      - from: reviewer
        to: [lead]
        kind: broadcast
        messageType: Commitment
        payload: {commitment_id: c, mode_version: 1.0.0, configuration_version: other}
  execution:",
            )
        });
        let messages: Vec<_> = lint_messages(dir.path())
            .into_iter()
            .filter(|(s, _, _)| *s == Severity::Error)
            .map(|(_, _, m)| m)
            .collect();
        assert_eq!(
            messages,
            [
                "kickoff[2]: \"outsider\" sends Evaluation but is not a declared participant (the initiator is not one unless listed)",
                "kickoff[3]: a Commitment must come from the initiator \"lead\", not \"reviewer\"",
                "kickoff[3]: the Commitment's configuration_version must equal the session's configurationVersion",
            ]
        );
    }

    #[test]
    fn unknown_agents_unregistered_policies_and_bad_defaults_are_reported() {
        let dir = shop_tree();
        write(
            dir.path(),
            "_shared/participants.yaml",
            "- {id: reviewer, role: reviewer, agentRef: ghost}\n- {id: lead, role: lead, agentRef: lead-agent}\n",
        );
        with_scenario(dir.path(), |text| {
            text.replace(
                "policyVersion: policy.default",
                "policyVersion: policy.custom",
            )
            .replace("demoType: refund", "demoType: \"{{ inputs.nope }}\"")
        });
        let messages = lint_messages(dir.path());
        let file = format!("{VERSION_DIR}/scenario.yaml");
        assert!(
            messages.contains(&(
                Severity::Error,
                file.clone(),
                "agentRef \"ghost\" is not in the agent catalog (_agents/)".to_owned()
            )),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|(s, f, m)| *s == Severity::Warning
                && *f == file
                && m.starts_with("policyVersion \"policy.custom\"")),
            "{messages:?}"
        );
        assert!(
            messages.contains(&(
                Severity::Error,
                file,
                "does not compile with default inputs: undefined placeholder: {{ inputs.nope }}"
                    .to_owned()
            )),
            "{messages:?}"
        );
        // Each problem is reported once, not again for every template that inherits it.
        assert_eq!(
            messages
                .iter()
                .filter(|(_, _, m)| m.contains("ghost"))
                .count(),
            1
        );
    }

    /// A participant no catalog agent plays compiles (as in the reference registry), without an
    /// agentRef anywhere in the output; validate and lint say so once.
    #[test]
    fn a_participant_without_an_agent_compiles_and_is_reported() {
        let dir = shop_tree();
        write(
            dir.path(),
            "_shared/participants.yaml",
            "- {id: reviewer, role: reviewer}\n- {id: lead, role: lead, agentRef: lead-agent}\n",
        );
        let registry = crate::registry::Registry::new(crate::registry::RegistryOptions::new(
            dir.path().to_path_buf(),
        ));
        let compiled = registry
            .compile(&CompileRequest {
                scenario_ref: "shop/refund@1.0.0".to_owned(),
                ..CompileRequest::default()
            })
            .unwrap();
        let reviewer = &compiled.execution_request["session"]["participants"][0];
        assert_eq!(reviewer["id"], "reviewer");
        assert!(reviewer["metadata"].get("agentRef").is_none(), "{reviewer}");
        assert_eq!(compiled.participant_bindings[0].agent_ref, None);
        let schema = registry
            .launch_schema("shop", "refund", "1.0.0", None)
            .unwrap();
        assert_eq!(schema.agents.len(), 1);
        let warning = (
            Severity::Warning,
            format!("{VERSION_DIR}/scenario.yaml"),
            "participant \"reviewer\" has no agentRef: no catalog agent plays it".to_owned(),
        );
        let messages = lint_messages(dir.path());
        assert_eq!(
            messages.iter().filter(|m| **m == warning).count(),
            1,
            "{messages:?}"
        );
        let validated = validate_path(dir.path(), &dir.path().join(VERSION_DIR)).unwrap();
        assert!(
            validated
                .iter()
                .any(|d| d.severity == Severity::Warning && d.location.message == warning.2),
            "{validated:?}"
        );
    }

    /// A policy the tree ships in `_policies/` is known: no warning; a policy file that does not
    /// load is an error of its own.
    #[test]
    fn pack_policies_are_known_and_broken_ones_reported() {
        let dir = shop_tree();
        with_scenario(dir.path(), |text| {
            text.replace(
                "policyVersion: policy.default",
                "policyVersion: policy.custom",
            )
        });
        let warned = |messages: &[(Severity, String, String)]| {
            messages
                .iter()
                .any(|(_, _, m)| m.starts_with("policyVersion \"policy.custom\""))
        };
        assert!(warned(&lint_messages(dir.path())));
        write(
            dir.path(),
            "_policies/custom.json",
            r#"{"policy_id": "policy.custom", "mode": "*", "description": "d", "rules": {}, "schema_version": 1}"#,
        );
        let messages = lint_messages(dir.path());
        assert!(!warned(&messages), "{messages:?}");
        assert!(
            messages.iter().all(|(s, _, _)| *s != Severity::Error),
            "{messages:?}"
        );
        write(dir.path(), "_policies/broken.json", "{");
        let messages = lint_messages(dir.path());
        assert!(
            messages
                .iter()
                .any(|(s, f, _)| *s == Severity::Error && f == "_policies/broken.json"),
            "{messages:?}"
        );
    }

    #[test]
    fn fixtures_must_compile_and_data_files_must_be_used() {
        let dir = shop_tree();
        write(
            dir.path(),
            &format!("{VERSION_DIR}/fixtures/good.json"),
            r#"{"amount": 5}"#,
        );
        write(
            dir.path(),
            &format!("{VERSION_DIR}/fixtures/wrong.json"),
            r#"{"amount": "five"}"#,
        );
        write(
            dir.path(),
            &format!("{VERSION_DIR}/fixtures/broken.json"),
            "{",
        );
        write(
            dir.path(),
            &format!("{VERSION_DIR}/data/used.yaml"),
            "demoType: refund\n",
        );
        write(dir.path(), &format!("{VERSION_DIR}/data/unused.json"), "{}");
        with_scenario(dir.path(), |text| {
            text.replace(
                "metadataTemplate:\n      demoType: refund",
                "metadataTemplate: !include data/used.yaml",
            )
        });
        let messages: Vec<_> = lint_messages(dir.path())
            .into_iter()
            .filter(|(_, f, _)| !f.contains("templates/"))
            .collect();
        let files: Vec<_> = messages
            .iter()
            .map(|(s, f, _)| (*s, f.trim_start_matches(VERSION_DIR)))
            .collect();
        assert_eq!(
            files,
            [
                (Severity::Error, "/fixtures/broken.json"),
                (Severity::Error, "/fixtures/wrong.json"),
                (Severity::Warning, "/data/unused.json")
            ],
            "{messages:?}"
        );
        assert!(messages[1].2.contains("inputs.amount"), "{messages:?}");
    }

    #[test]
    fn validate_checks_one_version_and_refuses_other_paths() {
        let dir = shop_tree();
        let diagnostics = validate_path(dir.path(), &dir.path().join(VERSION_DIR)).unwrap();
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(validate_path(dir.path(), &dir.path().join("shop/pack.yaml")).is_err());
        let template = dir.path().join(VERSION_DIR).join("templates/strict.yaml");
        assert!(validate_path(dir.path(), &template).is_err());
        assert!(validate_path(dir.path(), &dir.path().join("nowhere/scenario.yaml")).is_err());

        write(dir.path(), "shop/pack.yaml", "kind: broken\n");
        let diagnostics = validate_path(dir.path(), &dir.path().join(VERSION_DIR)).unwrap();
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].location.file, "shop/pack.yaml");

        write(dir.path(), "shop/pack.yaml", &pack_yaml("shop"));
        write(
            dir.path(),
            &format!("{VERSION_DIR}/scenario.yaml"),
            "kind: [",
        );
        let diagnostics = validate_path(
            dir.path(),
            &dir.path().join(VERSION_DIR).join("scenario.yaml"),
        )
        .unwrap();
        assert_eq!(diagnostics[0].severity, Severity::Error);
        assert!(diagnostics[0].location.line.is_some());
    }
}
