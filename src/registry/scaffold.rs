//! `scenario new`: a new scenario version from a starter that validates and runs to a decision
//! as is.

use std::path::{Path, PathBuf};

use super::checks::is_kebab_case;
use super::loader::AGENTS_DIR;

const STARTER_PACK: &str = include_str!("starter/pack.yaml");
const STARTER_SCENARIO: &str = include_str!("starter/scenario.yaml");
const STARTER_TEMPLATE: &str = include_str!("starter/default.yaml");
const STARTER_FIXTURE: &str = include_str!("starter/sample.json");
/// The starter's participants, copied into a packs tree whose catalog lacks them. They are the
/// sample packs' own catalog entries.
const STARTER_AGENTS: &[(&str, &str)] = &[
    (
        "risk-agent",
        include_str!("../../packs/_agents/risk-agent.yaml"),
    ),
    (
        "compliance-agent",
        include_str!("../../packs/_agents/compliance-agent.yaml"),
    ),
];

pub(crate) struct Scaffold {
    pub(crate) reference: String,
    pub(crate) directory: PathBuf,
    pub(crate) created: Vec<PathBuf>,
}

pub(crate) fn scaffold(
    packs_dir: &Path,
    pack: &str,
    scenario: &str,
    version: &str,
) -> Result<Scaffold, String> {
    for (what, slug) in [("pack", pack), ("scenario", scenario)] {
        if !is_kebab_case(slug) {
            return Err(format!(
                "{what} slug \"{slug}\" must be kebab-case (a-z, 0-9 and -)"
            ));
        }
    }
    if version.is_empty() || version.contains(['/', '\\', '@']) || version.starts_with('.') {
        return Err(format!(
            "version \"{version}\" is not a valid directory name"
        ));
    }
    let pack_dir = packs_dir.join(pack);
    let directory = pack_dir.join("scenarios").join(scenario).join(version);
    if directory.exists() {
        return Err(format!("{} already exists", directory.display()));
    }
    let fill = |text: &str| {
        text.replace("__PACK_SLUG__", pack)
            .replace("__PACK_NAME__", &title_case(pack))
            .replace("__SCENARIO_SLUG__", scenario)
            .replace("__SCENARIO_NAME__", &title_case(scenario))
            .replace("__VERSION__", version)
    };
    let mut files = vec![
        (directory.join("scenario.yaml"), fill(STARTER_SCENARIO)),
        (
            directory.join("templates/default.yaml"),
            fill(STARTER_TEMPLATE),
        ),
        (
            directory.join("fixtures/sample.json"),
            STARTER_FIXTURE.to_owned(),
        ),
    ];
    if !pack_dir.join("pack.yaml").exists() {
        files.insert(0, (pack_dir.join("pack.yaml"), fill(STARTER_PACK)));
    }
    for (agent_ref, text) in STARTER_AGENTS {
        let file = packs_dir.join(AGENTS_DIR).join(format!("{agent_ref}.yaml"));
        if !file.exists() {
            files.push((file, (*text).to_owned()));
        }
    }
    let mut created = Vec::new();
    for (file, text) in files {
        write_new(&file, &text)
            .map_err(|error| format!("cannot write {}: {error}", file.display()))?;
        created.push(file);
    }
    Ok(Scaffold {
        reference: format!("{pack}/{scenario}@{version}"),
        directory,
        created,
    })
}

fn write_new(file: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(file, text)
}

/// `high-value-device` → `High Value Device`.
fn title_case(slug: &str) -> String {
    slug.split('-')
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::checks::{Severity, validate_path};

    #[test]
    fn the_starter_validates_in_an_empty_tree() {
        let dir = tempfile::tempdir().unwrap();
        let scaffold = scaffold(dir.path(), "acme", "first-decision", "1.0.0").unwrap();
        assert_eq!(scaffold.reference, "acme/first-decision@1.0.0");
        assert_eq!(scaffold.created.len(), 6);
        let text = std::fs::read_to_string(scaffold.directory.join("scenario.yaml")).unwrap();
        assert!(
            text.contains("name: First Decision") && !text.contains("__"),
            "{text}"
        );
        let diagnostics = validate_path(dir.path(), &scaffold.directory).unwrap();
        assert!(
            diagnostics.iter().all(|d| d.severity != Severity::Error),
            "{diagnostics:?}"
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
    }

    #[test]
    fn refuses_bad_slugs_and_existing_versions() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scaffold(dir.path(), "Acme", "x", "1.0.0").is_err());
        assert!(scaffold(dir.path(), "acme", "x_y", "1.0.0").is_err());
        assert!(scaffold(dir.path(), "acme", "x", "../1").is_err());
        scaffold(dir.path(), "acme", "x", "1.0.0").unwrap();
        let error = scaffold(dir.path(), "acme", "x", "1.0.0").err().unwrap();
        assert!(error.contains("already exists"), "{error}");
        // A second scenario reuses the pack and the agents.
        assert_eq!(
            scaffold(dir.path(), "acme", "y", "1.0.0")
                .unwrap()
                .created
                .len(),
            3
        );
    }

    #[test]
    fn titles_come_from_slugs() {
        assert_eq!(title_case("high-value-device"), "High Value Device");
        assert_eq!(title_case("a"), "A");
    }
}
