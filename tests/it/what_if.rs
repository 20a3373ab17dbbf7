//! What-if replay (`POST /runs/{id}/what-if` / `WhatIfRun`) against the embedded reference
//! runtime: a scripted run replayed under a stricter policy (only an absent role may commit)
//! would have stayed open; an equivalent policy changes nothing; gRPC = REST; a run still going,
//! a runtime that kept no history and bad input are refused clearly, changing nothing.

use macp_control_plane::api::proto;
use macp_control_plane::app::RuntimeTarget;
use macp_control_plane::runtime::embedded::{EmbeddedOptions, Storage};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::parity::{assert_same, json};
use crate::requests;
use crate::support::{self, Backend, Options};

/// Only an `auditor` may commit: nobody in the scripted session is one.
fn stricter() -> Value {
    json!({
        "policyId": "what-if.auditor-only",
        "mode": "*",
        "description": "commitments by auditors only",
        "rules": {"commitment": {"authority": "designated_role", "designated_roles": ["auditor"]}},
        "schemaVersion": 1
    })
}

async fn a_stricter_policy_changes_the_outcome(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    assert_eq!(app.wait_terminal(&run_id).await.run.status, "completed");
    let path = format!("/runs/{run_id}/what-if");

    let (status, report) = app.post(&path, &json!({"policy": stricter()})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["runId"], run_id.as_str());
    assert_eq!(report["recordedPolicyId"], "policy.default");
    assert_eq!(report["candidatePolicyId"], "what-if.auditor-only");
    assert_eq!(report["actual"]["state"], "resolved");
    assert_eq!(report["actual"]["resolved"], true);
    assert_eq!(report["actual"]["resolvedByMessageType"], "Commitment");
    assert!(report["actual"]["resolutionB64"].is_string());
    assert_eq!(report["hypothetical"]["state"], "open");
    assert_eq!(report["hypothetical"]["resolved"], false);
    assert_eq!(report["changed"], true);
    assert!(report["firstDivergence"].is_u64(), "{report}");

    // The candidate was not registered, and the run is as it was.
    let (status, _) = app.get("/runtime/policies/what-if.auditor-only").await;
    assert_eq!(status, 404);
    assert_eq!(
        app.get(&format!("/runs/{run_id}")).await.1["status"],
        "completed"
    );

    // gRPC answers the same.
    let grpc = app
        .grpc()
        .await
        .what_if_run(proto::WhatIfRunRequest {
            run_id: run_id.clone(),
            policy: serde_json::from_value(stricter()).expect("a Struct"),
            ..Default::default()
        })
        .await
        .expect("WhatIfRun")
        .into_inner();
    assert_same("WhatIfRun", &json(&grpc), &report);

    // A registered policy as good as the recorded one: nothing changes.
    let (status, same) = app
        .post(&path, &json!({"policyVersion": "policy.default"}))
        .await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["changed"], false);
    assert_eq!(same["hypothetical"], same["actual"]);
}
on_both_backends!(a_stricter_policy_changes_the_outcome);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_change_nothing() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let running = app.start_run(&requests::seed_example()).await;
    app.wait_for(&running, |state| state.run.status == "running")
        .await;
    let (status, body) = app
        .post(
            &format!("/runs/{running}/what-if"),
            &json!({"policy": stricter()}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errorCode"], "RUN_NOT_TERMINAL");
    assert_eq!(
        app.get(&format!("/runs/{running}")).await.1["status"],
        "running"
    );

    let done = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&done).await;
    let path = format!("/runs/{done}/what-if");
    let cases = [
        (json!({}), "policyVersion"),
        (json!([]), "$"),
        (json!({"policyVersion": ""}), "policyVersion"),
        (
            json!({"policyVersion": "policy.default", "policy": stricter()}),
            "policy",
        ),
        (
            json!({"policy": {"mode": "*", "rules": {}}}),
            "policy.policyId",
        ),
        (json!({"policyVersion": "no.such.policy"}), "policyVersion"),
    ];
    for (body, field) in cases {
        let (status, refusal) = app.post(&path, &body).await;
        assert_eq!(status, 400, "{body}: {refusal}");
        assert_eq!(refusal["errorCode"], "VALIDATION_ERROR", "{body}");
        let fields: Vec<&str> = refusal["details"]["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|error| error["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
    }
    // A candidate the runtime refuses (an unknown rule).
    let (status, refusal) = app
        .post(
            &path,
            &json!({"policy": {"policyId": "x", "mode": "*", "rules": {"no_such_rule": true}}}),
        )
        .await;
    assert_eq!(status, 400, "{refusal}");
    assert_eq!(refusal["errorCode"], "INVALID_POLICY_DEFINITION");

    let refused = app
        .grpc()
        .await
        .what_if_run(proto::WhatIfRunRequest {
            run_id: running.clone(),
            policy_version: Some("policy.default".to_owned()),
            ..Default::default()
        })
        .await
        .expect_err("not terminal");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = app
        .post(
            &format!("/runs/{unknown}/what-if"),
            &json!({"policy": stricter()}),
        )
        .await;
    assert_eq!(status, 404);
}

/// With file storage the runtime compacts an ended session's history (its default,
/// MACP_COMPACT_TERMINAL_LOGS): nothing is left to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_history_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        runtime: RuntimeTarget::Embedded(EmbeddedOptions {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: Storage::File {
                dir: dir.path().to_owned(),
            },
            ..EmbeddedOptions::default()
        }),
        ..Options::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&run_id).await;
    let (status, body) = app
        .post(
            &format!("/runs/{run_id}/what-if"),
            &json!({"policy": stricter()}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errorCode"], "HISTORY_UNAVAILABLE");
}
