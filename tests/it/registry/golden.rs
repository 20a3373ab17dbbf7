//! Golden files pinning the compiled output of every sample scenario, without a template and
//! with each of its templates, using default inputs. `UPDATE_GOLDEN=1` rewrites them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use macp_control_plane::registry::{CompileRequest, Registry, RegistryOptions};

use super::support::sample_packs;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/registry/golden")
}

#[test]
fn sample_scenarios_compile_to_their_golden_files() {
    let registry = Registry::new(RegistryOptions::new(sample_packs()));
    assert!(registry.problems().is_empty(), "{:?}", registry.problems());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut expected_files = BTreeSet::new();
    let mut mismatches = Vec::new();

    for scenario in registry.list_all_scenarios() {
        let pack = scenario.pack_slug.clone().unwrap_or_default();
        for version in &scenario.versions {
            let scenario_ref = format!("{pack}/{}@{version}", scenario.scenario);
            let templates = std::iter::once(None).chain(scenario.templates.iter().map(Some));
            for template in templates {
                let name = format!(
                    "{pack}/{}@{version}/{}.json",
                    scenario.scenario,
                    template.map_or("no-template", String::as_str)
                );
                let request = CompileRequest {
                    scenario_ref: scenario_ref.clone(),
                    template_id: template.cloned(),
                    ..CompileRequest::default()
                };
                let compiled = registry
                    .compile(&request)
                    .unwrap_or_else(|error| panic!("{name}: {error}"));
                let actual = format!("{}\n", serde_json::to_string_pretty(&compiled).unwrap());
                let file = golden_dir().join(&name);
                if update {
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(&file, &actual).unwrap();
                } else if std::fs::read_to_string(&file).ok().as_deref() != Some(actual.as_str()) {
                    mismatches.push(name.clone());
                }
                expected_files.insert(name);
            }
        }
    }

    assert!(expected_files.len() >= 13, "{expected_files:?}");
    assert!(
        mismatches.is_empty(),
        "compiled output differs from the golden files (run with UPDATE_GOLDEN=1 to accept): {mismatches:?}"
    );
    let mut stored = BTreeSet::new();
    collect(&golden_dir(), &golden_dir(), &mut stored);
    assert_eq!(
        stored, expected_files,
        "golden files without a sample scenario (or the reverse)"
    );
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            files.insert(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
}
