//! The `scenario` commands of the built binary, on scratch packs trees.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::support::sample_packs;

fn scenario(packs: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_macp-control-plane"))
        .arg("scenario")
        .args(args)
        .arg("--packs-dir")
        .arg(packs)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", stdout(output)))
}

#[test]
fn new_then_validate_then_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");

    let output = scenario(&packs, &["new", "acme", "first-decision"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("scaffolded acme/first-decision@1.0.0"),
        "{}",
        stdout(&output)
    );
    let scenario_file = packs.join("acme/scenarios/first-decision/1.0.0/scenario.yaml");
    assert!(scenario_file.is_file());

    let output = scenario(&packs, &["validate", scenario_file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).trim_end().ends_with("OK"),
        "{}",
        stdout(&output)
    );

    let output = scenario(
        &packs,
        &[
            "dry-run",
            "acme/first-decision@1.0.0",
            "--inputs",
            r#"{"subject": "order-7"}"#,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let request = json(&output);
    assert_eq!(request["mode"], "sandbox");
    assert_eq!(request["session"]["context"]["subject"], "order-7");
    let kickoff = request["kickoff"].as_array().unwrap();
    assert_eq!(kickoff.first().unwrap()["messageType"], "Proposal");
    assert_eq!(kickoff.last().unwrap()["messageType"], "Commitment");
    assert_eq!(
        kickoff.last().unwrap()["from"],
        request["session"]["initiatorParticipantId"]
    );

    let output = scenario(&packs, &["lint"]);
    assert!(output.status.success(), "{}", stdout(&output));
}

#[test]
fn json_output_for_machines() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");

    let created = json(&scenario(
        &packs,
        &["new", "acme", "refund", "--version", "2.0.0", "--json"],
    ));
    assert_eq!(created["ok"], true);
    assert_eq!(created["scenarioRef"], "acme/refund@2.0.0");

    let directory = packs.join("acme/scenarios/refund/2.0.0");
    let validated = json(&scenario(
        &packs,
        &["validate", directory.to_str().unwrap(), "--json"],
    ));
    assert_eq!(validated["ok"], true);
    assert_eq!(validated["errors"], 0);

    let inputs_file = dir.path().join("inputs.json");
    std::fs::write(&inputs_file, r#"{"subject": "from-file"}"#).unwrap();
    let inputs_arg = format!("@{}", inputs_file.display());
    let output = scenario(
        &packs,
        &[
            "dry-run",
            "acme/refund@2.0.0",
            "--template",
            "default",
            "--mode",
            "live",
            "--inputs",
            &inputs_arg,
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let compiled = json(&output);
    assert_eq!(compiled["executionRequest"]["mode"], "live");
    assert_eq!(
        compiled["executionRequest"]["session"]["context"]["subject"],
        "from-file"
    );
    assert_eq!(compiled["display"]["templateId"], "default");
    assert_eq!(compiled["participantBindings"][0]["agentRef"], "risk-agent");
}

#[test]
fn errors_exit_non_zero_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    assert!(
        scenario(&packs, &["new", "acme", "refund"])
            .status
            .success()
    );

    let again = scenario(&packs, &["new", "acme", "refund"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let bad_slug = scenario(&packs, &["new", "Acme", "refund"]);
    assert_eq!(bad_slug.status.code(), Some(1));
    assert!(stderr(&bad_slug).contains("kebab-case"));

    let invalid = scenario(
        &packs,
        &[
            "dry-run",
            "acme/refund@1.0.0",
            "--inputs",
            r#"{"subject": 5}"#,
        ],
    );
    assert_eq!(invalid.status.code(), Some(1));
    assert!(
        stderr(&invalid).contains("VALIDATION_ERROR"),
        "{}",
        stderr(&invalid)
    );
    assert!(
        stderr(&invalid).contains("inputs.subject"),
        "{}",
        stderr(&invalid)
    );

    let missing = scenario(&packs, &["dry-run", "nope/refund@1.0.0", "--json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(json(&missing)["errorCode"], "PACK_NOT_FOUND");

    let bad_ref = scenario(&packs, &["dry-run", "acme-refund"]);
    assert_eq!(bad_ref.status.code(), Some(1));
    assert!(stderr(&bad_ref).contains("INVALID_SCENARIO_REF"));

    // Break the scenario: validate and lint both fail and say where.
    let file = packs.join("acme/scenarios/refund/1.0.0/scenario.yaml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("agentRef: compliance-agent", "agentRef: nobody");
    std::fs::write(&file, text).unwrap();
    let validated = scenario(&packs, &["validate", file.to_str().unwrap()]);
    assert_eq!(validated.status.code(), Some(1));
    assert!(
        stdout(&validated)
            .contains("FAIL  acme/scenarios/refund/1.0.0/scenario.yaml: agentRef \"nobody\""),
        "{}",
        stdout(&validated)
    );
    assert!(
        stdout(&validated).contains("FAILED (1 error(s)"),
        "{}",
        stdout(&validated)
    );

    std::fs::write(
        packs.join("acme/scenarios/refund/1.0.0/templates/default.yaml"),
        "kind: [",
    )
    .unwrap();
    let linted = scenario(&packs, &["lint", "--json"]);
    assert_eq!(linted.status.code(), Some(1));
    let report = json(&linted);
    assert_eq!(report["ok"], false);
    let diagnostic = &report["diagnostics"][0];
    assert_eq!(
        diagnostic["file"],
        "acme/scenarios/refund/1.0.0/templates/default.yaml"
    );
    assert!(diagnostic["line"].is_u64(), "{diagnostic}");
}

#[test]
fn packs_dir_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("env-packs");
    let output = Command::new(env!("CARGO_BIN_EXE_macp-control-plane"))
        .args(["scenario", "new", "acme", "refund"])
        .env("PACKS_DIR", &packs)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(packs.join("acme/pack.yaml").is_file());
}

#[test]
fn the_sample_packs_lint_clean() {
    let output = scenario(&sample_packs(), &["lint"]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(
        stdout(&output).trim_end().ends_with("OK"),
        "{}",
        stdout(&output)
    );
}
