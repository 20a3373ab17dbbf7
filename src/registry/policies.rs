//! The governance policies a packs tree ships beside its scenarios: `_policies/*.json`, each in
//! the runtime's own policy file format (`{policy_id, mode, description, rules,
//! schema_version}`), so a runtime's `MACP_POLICIES_DIR` can preload the same files. The
//! registry only reads them; `scenario policies register` and a launch of a scenario bound to
//! one register it with the runtime through the control plane.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{Error, LoadError};

/// The directory of a packs tree that holds its policies (skipped as a pack: it starts with `_`).
pub const POLICIES_DIR: &str = "_policies";

/// Policies every runtime knows without registration.
pub const BUILT_IN_POLICIES: &[&str] = &[
    "policy.default",
    "policy.std.majority",
    "policy.std.supermajority",
    "policy.std.unanimous",
];

/// One policy file, as the runtime reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policy_id: String,
    mode: String,
    #[serde(default)]
    description: String,
    rules: Map<String, Value>,
    schema_version: u32,
}

/// A pack policy: its file (relative to the packs directory) and the body `POST
/// /runtime/policies` takes.
#[derive(Debug, Clone, PartialEq)]
pub struct PackPolicy {
    pub file: String,
    pub policy_id: String,
    pub body: Value,
}

/// Every policy file of the tree, in file name order; none when the tree has no `_policies`.
pub(crate) fn load(packs_dir: &Path) -> Result<Vec<PackPolicy>, Error> {
    let dir = packs_dir.join(POLICIES_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let name = format!(
                "{POLICIES_DIR}/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            let invalid = |message: String| Error::InvalidPackData(LoadError::new(&name, message));
            let text = std::fs::read_to_string(path)
                .map_err(|error| invalid(format!("cannot read: {error}")))?;
            let policy: PolicyFile = serde_json::from_str(&text).map_err(|error| {
                invalid(format!(
                    "not a policy file (line {}): {error}",
                    error.line()
                ))
            })?;
            Ok(PackPolicy {
                body: json!({
                    "policyId": policy.policy_id,
                    "mode": policy.mode,
                    "description": policy.description,
                    "rules": policy.rules,
                    "schemaVersion": policy.schema_version,
                }),
                policy_id: policy.policy_id,
                file: name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_policy_files_in_order_and_names_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Vec::new());
        let policies = dir.path().join(POLICIES_DIR);
        std::fs::create_dir(&policies).unwrap();
        let file = |id: &str| {
            json!({"policy_id": id, "mode": "*", "description": "d",
                   "rules": {"voting": {"algorithm": "none"}}, "schema_version": 1})
            .to_string()
        };
        std::fs::write(policies.join("b.json"), file("policy.b")).unwrap();
        std::fs::write(policies.join("a.json"), file("policy.a")).unwrap();
        std::fs::write(policies.join("notes.txt"), "not a policy").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(
            loaded
                .iter()
                .map(|p| p.policy_id.as_str())
                .collect::<Vec<_>>(),
            ["policy.a", "policy.b"]
        );
        assert_eq!(loaded[0].file, "_policies/a.json");
        assert_eq!(
            loaded[0].body,
            json!({"policyId": "policy.a", "mode": "*", "description": "d",
                   "rules": {"voting": {"algorithm": "none"}}, "schemaVersion": 1})
        );
        std::fs::write(policies.join("c.json"), r#"{"policyId": "camelCase"}"#).unwrap();
        let error = load(dir.path()).unwrap_err();
        assert_eq!(error.code().as_str(), "INVALID_PACK_DATA");
        assert!(
            error
                .to_string()
                .starts_with("_policies/c.json: not a policy file"),
            "{error}"
        );
    }
}
