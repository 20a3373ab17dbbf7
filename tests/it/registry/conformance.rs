//! Conformance with the reference (TypeScript) scenario registry, using the recorded outputs in
//! `../shared/conformance/registry` (kept outside the repository; skipped when absent).
//!
//! Every compile case, catalog listing and launch schema is replayed against both recorded pack
//! trees. Successful compiles must equal the recorded body except at the volatile paths (numbers
//! compare by value); errors must match status and `errorCode`, and validation errors must name
//! the same inputs. Deliberate differences are listed in [`DELIBERATE`] and explained in
//! `docs/registry.md`.

use std::path::{Path, PathBuf};

use macp_control_plane::registry::{CompileRequest, Error, Registry, RegistryOptions};
use serde_json::{Value, json};

use super::support::{copy_tree, numbers_by_value};

/// Cases where we differ on purpose: `(case id, JSON pointer into the recorded body that we
/// leave out, why)`.
const DELIBERATE: &[(&str, &str, &str)] = &[
    (
        "main:http:-:template-id-null",
        "/display/templateId",
        "a null templateId is treated as absent, so display has no templateId instead of null",
    ),
    (
        "fixtures:http:-:template-id-null",
        "/display/templateId",
        "a null templateId is treated as absent, so display has no templateId instead of null",
    ),
];

fn conformance_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/registry");
    if dir.join("cases.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: registry conformance data not found at {}",
            dir.display()
        );
        None
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A registry over a copy of one recorded tree. The reference service had its agent catalog
/// built in; ours reads `_agents/`, so the copy gets one written from the recorded launch
/// schemas (their `agents[]`, with the participant's role as the agent's role).
struct Tree {
    _dir: tempfile::TempDir,
    registry: Registry,
}

fn open_tree(conformance: &Path, tree: &str, launch_schemas: &Value) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    copy_tree(&conformance.join("packs").join(tree), &packs);
    std::fs::create_dir_all(packs.join("_agents")).unwrap();
    let agents = launch_schemas["responses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|response| response["expected"]["body"]["agents"].as_array())
        .flatten();
    for agent in agents {
        let agent_ref = agent["agentRef"].as_str().unwrap();
        let document = json!({
            "apiVersion": "scenarios.macp.dev/v1",
            "kind": "AgentProfile",
            "metadata": {"agentRef": agent_ref, "name": agent["name"], "tags": agent["tags"]},
            "spec": {
                "role": agent["role"], "framework": agent["framework"], "description": agent["description"],
                "transportIdentity": agent["transportIdentity"], "entrypoint": agent["entrypoint"],
                "bootstrapStrategy": agent["bootstrapStrategy"], "bootstrapMode": agent["bootstrapMode"]
            }
        });
        // JSON is YAML.
        std::fs::write(
            packs.join("_agents").join(format!("{agent_ref}.yaml")),
            document.to_string(),
        )
        .unwrap();
    }
    let options = RegistryOptions {
        cache_ttl_ms: 600_000,
        ..RegistryOptions::new(&packs)
    };
    let registry = Registry::new(options);
    assert!(
        registry.problems().is_empty(),
        "{tree}: {:?}",
        registry.problems()
    );
    Tree {
        _dir: dir,
        registry,
    }
}

fn status(error: &Error) -> u16 {
    error.to_api_error().code.http_status()
}

/// Compares an error with the recorded `{statusCode, errorCode, message, metadata?}` body.
fn check_error(id: &str, error: &Error, expected: &Value) -> Result<(), String> {
    let expected_status = expected["status"].as_u64().unwrap_or_default();
    if u64::from(status(error)) != expected_status {
        return Err(format!(
            "{id}: status {} != {expected_status} ({error})",
            status(error)
        ));
    }
    let body = &expected["body"];
    let Some(code) = body["errorCode"].as_str() else {
        // A request-DTO error: the reference answers in its framework's shape, we in ours;
        // the field named first in its message must be among ours.
        let Error::InvalidRequest(fields) = error else {
            return Err(format!("{id}: expected a request error, got {error:?}"));
        };
        let message = body["message"][0].as_str().unwrap_or_default();
        let field = message.split(' ').next().unwrap_or_default();
        return if fields.iter().any(|ours| ours.field == field) {
            Ok(())
        } else {
            Err(format!("{id}: {fields:?} does not name {field}"))
        };
    };
    let api = error.to_api_error();
    if api.code.as_str() != code {
        return Err(format!("{id}: errorCode {} != {code}", api.code));
    }
    if code == "VALIDATION_ERROR" {
        let Error::InvalidInputs(errors) = error else {
            return Err(format!("{id}: expected input errors, got {error:?}"));
        };
        let ours: Vec<_> = errors
            .iter()
            .map(|error| error.instance_path.as_str())
            .collect();
        let theirs: Vec<_> = body["metadata"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["instancePath"].as_str().unwrap_or_default())
            .collect();
        return if ours == theirs {
            Ok(())
        } else {
            Err(format!("{id}: failing inputs {ours:?} != {theirs:?}"))
        };
    }
    if api.message != body["message"].as_str().unwrap_or_default() {
        return Err(format!(
            "{id}: message {:?} != {}",
            api.message, body["message"]
        ));
    }
    Ok(())
}

/// Compares a successful body with the recorded one.
fn check_body(id: &str, ours: Value, expected: &Value, volatile: &[String]) -> Result<(), String> {
    let mut expected = expected.clone();
    let mut ours = ours;
    for path in volatile {
        let pointer = path.trim_start_matches('$').replace('.', "/");
        if ours.pointer(&pointer).is_none() {
            return Err(format!("{id}: volatile {path} missing"));
        }
        remove(&mut ours, &pointer);
        remove(&mut expected, &pointer);
    }
    for (case, pointer, _) in DELIBERATE {
        if *case == id {
            remove(&mut expected, pointer);
        }
    }
    if numbers_by_value(&ours) == numbers_by_value(&expected) {
        Ok(())
    } else {
        Err(format!(
            "{id}: body differs\n ours:     {}\n expected: {}",
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&expected).unwrap()
        ))
    }
}

fn remove(value: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(key);
    }
}

#[test]
fn compile_cases_match_the_reference() {
    let Some(conformance) = conformance_dir() else {
        return;
    };
    let cases = read_json(&conformance.join("cases.json"));
    let launch_schemas = read_json(&conformance.join("launch-schemas.json"));
    let volatile: Vec<String> = cases["volatile"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap().to_owned())
        .collect();
    let main = open_tree(&conformance, "main", &launch_schemas);
    let fixtures = open_tree(&conformance, "fixtures", &launch_schemas);

    let mut failures = Vec::new();
    let cases = cases["cases"].as_array().unwrap();
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let registry = if case["tree"] == "main" {
            &main.registry
        } else {
            &fixtures.registry
        };
        let result = CompileRequest::from_json(&case["request"])
            .and_then(|request| registry.compile(&request));
        let expected = &case["expected"];
        let outcome = match result {
            Ok(compiled) if expected["status"] == 201 => check_body(
                id,
                serde_json::to_value(&compiled).unwrap(),
                &expected["body"],
                &volatile,
            ),
            Ok(_) => Err(format!(
                "{id}: compiled, but the reference answered {}",
                expected["status"]
            )),
            Err(error) => check_error(id, &error, expected),
        };
        if let Err(failure) = outcome {
            failures.push(failure);
        }
    }
    assert_eq!(cases.len(), 101);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn catalog_listings_match_the_reference() {
    let Some(conformance) = conformance_dir() else {
        return;
    };
    let catalog = read_json(&conformance.join("catalog.json"));
    let launch_schemas = read_json(&conformance.join("launch-schemas.json"));
    let main = open_tree(&conformance, "main", &launch_schemas);
    let fixtures = open_tree(&conformance, "fixtures", &launch_schemas);

    let mut failures = Vec::new();
    let responses = catalog["responses"].as_array().unwrap();
    for response in responses {
        let registry = if response["tree"] == "main" {
            &main.registry
        } else {
            &fixtures.registry
        };
        let path = response["path"].as_str().unwrap();
        let id = format!("{} GET {path}", response["tree"]);
        let segments: Vec<_> = path.trim_start_matches('/').split('/').collect();
        let result = match segments.as_slice() {
            ["packs"] => Ok(serde_json::to_value(registry.list_packs()).unwrap()),
            ["scenarios"] => Ok(serde_json::to_value(registry.list_all_scenarios()).unwrap()),
            ["packs", pack, "scenarios"] => registry
                .list_scenarios(pack)
                .map(|rows| serde_json::to_value(rows).unwrap()),
            other => panic!("unexpected catalog path {other:?}"),
        };
        let outcome = match result {
            Ok(body) => check_body(&id, body, &response["expected"]["body"], &[]),
            Err(error) => check_error(&id, &error, &response["expected"]),
        };
        if let Err(failure) = outcome {
            failures.push(failure);
        }
    }
    assert_eq!(responses.len(), 13);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn launch_schemas_match_the_reference() {
    let Some(conformance) = conformance_dir() else {
        return;
    };
    let launch_schemas = read_json(&conformance.join("launch-schemas.json"));
    let main = open_tree(&conformance, "main", &launch_schemas);
    let fixtures = open_tree(&conformance, "fixtures", &launch_schemas);

    let mut failures = Vec::new();
    let responses = launch_schemas["responses"].as_array().unwrap();
    for response in responses {
        let registry = if response["tree"] == "main" {
            &main.registry
        } else {
            &fixtures.registry
        };
        let id = format!(
            "{} GET {}",
            response["tree"],
            response["path"].as_str().unwrap()
        );
        let field = |name: &str| response[name].as_str().unwrap();
        let result = registry.launch_schema(
            field("pack"),
            field("scenario"),
            field("version"),
            response["template"].as_str(),
        );
        let outcome = match result {
            Ok(schema) => check_body(
                &id,
                serde_json::to_value(schema).unwrap(),
                &response["expected"]["body"],
                &[],
            ),
            Err(error) => check_error(&id, &error, &response["expected"]),
        };
        if let Err(failure) = outcome {
            failures.push(failure);
        }
    }
    assert_eq!(responses.len(), 27);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
