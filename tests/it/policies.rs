//! Governance policies at `/runtime/policies`, passed to the real reference runtime's policy
//! registry: list by mode, get, register, unregister; bad definitions refused by field before
//! the runtime sees them, and the runtime's own refusals with their codes; gRPC = REST.

use macp_control_plane::api::proto;
use serde_json::{Value, json};

use crate::parity::{assert_same, canonical, json};
use crate::support::{self, Backend, TestApp};

const DECISION: &str = "macp.mode.decision.v1";

fn example() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/policy-majority-veto.json"
    ))
    .expect("examples/policy-majority-veto.json");
    serde_json::from_str(&text).expect("the example is JSON")
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .http
        .delete(format!("{}{path}", app.base))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a bare array")
        .iter()
        .map(|policy| policy["policyId"].as_str().expect("policyId"))
        .collect()
}

fn fields(body: &Value) -> Vec<&str> {
    body["details"]["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|error| error["field"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_listed_registered_and_unregistered() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let (status, built_in) = app.get("/runtime/policies").await;
    assert_eq!(status, 200, "{built_in}");
    for id in [
        "policy.default",
        "policy.std.majority",
        "policy.std.unanimous",
    ] {
        assert!(ids(&built_in).contains(&id), "{id} in {built_in}");
    }

    let policy = example();
    let id = policy["policyId"].as_str().expect("id").to_owned();
    let (status, answer) = app.post("/runtime/policies", &policy).await;
    assert_eq!((status, &answer), (201, &json!({"ok": true})));

    let (status, stored) = app.get(&format!("/runtime/policies/{id}")).await;
    assert_eq!(status, 200, "{stored}");
    for key in ["policyId", "mode", "description", "rules", "schemaVersion"] {
        assert_eq!(canonical(&stored[key]), canonical(&policy[key]), "{key}");
    }

    let (_, decision) = app.get(&format!("/runtime/policies?mode={DECISION}")).await;
    assert!(ids(&decision).contains(&id.as_str()));
    let (_, quorum) = app.get("/runtime/policies?mode=macp.mode.quorum.v1").await;
    assert!(!ids(&quorum).contains(&id.as_str()), "{quorum}");

    // Taken: a conflict, not a bad definition.
    let (status, taken) = app.post("/runtime/policies", &policy).await;
    assert_eq!(
        (status, taken["errorCode"].as_str()),
        (409, Some("CONFLICT")),
        "{taken}"
    );

    // gRPC reads the same.
    let mut grpc = app.grpc().await;
    let listed = grpc
        .list_policies(proto::ListPoliciesRequest {
            mode: Some(DECISION.to_owned()),
        })
        .await
        .expect("ListPolicies")
        .into_inner();
    assert_same("ListPolicies", &json(&listed)["policies"], &decision);
    let one = grpc
        .get_policy(proto::GetPolicyRequest {
            policy_id: id.clone(),
        })
        .await
        .expect("GetPolicy")
        .into_inner();
    assert_same("GetPolicy", &json(&one), &stored);

    let (status, removed) = delete(&app, &format!("/runtime/policies/{id}")).await;
    assert_eq!((status, &removed), (200, &json!({"ok": true})));
    let (status, gone) = app.get(&format!("/runtime/policies/{id}")).await;
    assert_eq!(
        (status, gone["errorCode"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let (status, again) = delete(&app, &format!("/runtime/policies/{id}")).await;
    assert_eq!(
        (status, again["errorCode"].as_str()),
        (404, Some("NOT_FOUND")),
        "{again}"
    );
    let (status, protected) = delete(&app, "/runtime/policies/policy.default").await;
    assert_eq!(
        (status, protected["errorCode"].as_str()),
        (409, Some("CONFLICT")),
        "{protected}"
    );

    // Registered and unregistered over gRPC too.
    let mut request: proto::RegisterPolicyRequest =
        serde_json::from_value(policy.clone()).expect("the example fits the proto");
    request.policy_id = "policy.grpc.majority-veto".to_owned();
    assert!(
        grpc.register_policy(request)
            .await
            .expect("RegisterPolicy")
            .into_inner()
            .ok
    );
    assert!(
        grpc.unregister_policy(proto::UnregisterPolicyRequest {
            policy_id: "policy.grpc.majority-veto".to_owned(),
        })
        .await
        .expect("UnregisterPolicy")
        .into_inner()
        .ok
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_by_field() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut policy = example();
        change(&mut policy);
        policy
    };
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("empty", json!({}), vec!["policyId", "mode", "rules"]),
        ("not an object", json!([1]), vec!["$"]),
        (
            "the default policy",
            with(&|p| p["policyId"] = json!("policy.default")),
            vec!["policyId"],
        ),
        (
            "schema version 0",
            with(&|p| p["schemaVersion"] = json!(0)),
            vec!["schemaVersion"],
        ),
        (
            "rules not an object",
            with(&|p| p["rules"] = json!("majority")),
            vec!["rules"],
        ),
        (
            "weighted without weights",
            with(&|p| p["rules"]["voting"] = json!({"algorithm": "weighted"})),
            vec!["rules.voting.weights"],
        ),
        (
            "supermajority at one half",
            with(&|p| {
                p["rules"]["voting"] = json!({"algorithm": "supermajority", "threshold": 0.5})
            }),
            vec!["rules.voting.threshold"],
        ),
        (
            "designated role without roles",
            with(&|p| p["rules"]["commitment"] = json!({"authority": "designated_role"})),
            vec!["rules.commitment.designated_roles"],
        ),
    ];
    for (what, body, expected) in cases {
        let (status, answer) = app.post("/runtime/policies", &body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["errorCode"], "VALIDATION_ERROR", "{what}");
        assert_eq!(fields(&answer), expected, "{what}: {answer}");
    }

    // What only the runtime knows is wrong: its code, with its reason.
    let unknown_algorithm = with(&|p| p["rules"]["voting"]["algorithm"] = json!("coin_flip"));
    let (status, answer) = app.post("/runtime/policies", &unknown_algorithm).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errorCode"], "INVALID_POLICY_DEFINITION");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("INVALID_POLICY_DEFINITION")),
        "{answer}"
    );

    // Nothing of it was registered.
    let (_, listed) = app.get("/runtime/policies").await;
    let policy_id = example()["policyId"].as_str().expect("id").to_owned();
    assert!(!ids(&listed).contains(&policy_id.as_str()));

    // gRPC refuses the same way, with the same fields.
    let mut grpc = app.grpc().await;
    let refused = grpc
        .register_policy(proto::RegisterPolicyRequest {
            policy_id: "policy.default".to_owned(),
            mode: DECISION.to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let details: Value = serde_json::from_slice(
        &refused
            .metadata()
            .get_bin("x-error-details-bin")
            .expect("details")
            .to_bytes()
            .expect("bytes"),
    )
    .expect("JSON details");
    let refusal = json!({ "details": details });
    assert_eq!(fields(&refusal), ["policyId", "rules"]);
    let unknown = grpc
        .get_policy(proto::GetPolicyRequest {
            policy_id: "policy.nope".to_owned(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.stop().await;
}

/// The sample packs' policy (`packs/_policies/policy.fraud.majority.json`, bound by the fraud
/// scenario's `majority-vote` template) is registered when that template is launched, and the
/// run is carried to its decision under it; a second launch finds it registered. The
/// registration is audited as `policy.register`, once, beside each launch's `run.launch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_policy_is_registered_on_launch() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let path = "/runtime/policies/policy.fraud.majority";
    let (status, _) = app.get(path).await;
    assert_eq!(status, 404);
    let launch = json!({"scenarioRef": "fraud/high-value-new-device@1.0.0",
                        "templateId": "majority-vote", "inputs": {}});
    for _ in 0..2 {
        let (status, launched) = app.post("/launch", &launch).await;
        assert_eq!(status, 201, "{launched}");
        let run_id = launched["runId"].as_str().expect("runId");
        let state = app.wait_terminal(run_id).await;
        assert_eq!(state.run.status, "completed", "{:?}", state.run);
        assert_eq!(state.policy.policy_version, "policy.fraud.majority");
    }
    let (status, registered) = app.get(path).await;
    assert_eq!(status, 200, "{registered}");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packs/_policies/policy.fraud.majority.json"
        ))
        .expect("the pack policy"),
    )
    .expect("JSON");
    assert_eq!(canonical(&registered["rules"]), canonical(&file["rules"]));
    assert_eq!(registered["description"], file["description"]);
    let (status, audit) = app.get("/audit?limit=200").await;
    assert_eq!(status, 200, "{audit}");
    let rows = audit["data"].as_array().expect("rows");
    let of = |action: &str| {
        rows.iter()
            .filter(|row| row["action"] == action)
            .collect::<Vec<_>>()
    };
    let registrations = of("policy.register");
    assert_eq!(registrations.len(), 1, "{audit}");
    assert_eq!(registrations[0]["resourceId"], "policy.fraud.majority");
    assert_eq!(registrations[0]["outcome"], "ok");
    assert_eq!(of("run.launch").len(), 2, "{audit}");
    app.stop().await;
}

/// `scenario policies register` registers the tree's policies through a running control plane,
/// and says so for each; a second time they are already registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_the_pack_policies() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let base = app.base.clone();
    let register = move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"))
            .args([
                "scenario",
                "policies",
                "register",
                "--json",
                "--address",
                &base,
            ])
            .arg("--packs-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/packs"))
            .output()
            .expect("the binary runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("JSON output")
    };
    let first = tokio::task::spawn_blocking(register.clone())
        .await
        .expect("first");
    assert_eq!(
        first["policies"],
        json!([{"policyId": "policy.fraud.majority", "file": "_policies/policy.fraud.majority.json",
                "outcome": "registered"}])
    );
    let (status, _) = app.get("/runtime/policies/policy.fraud.majority").await;
    assert_eq!(status, 200);
    let again = tokio::task::spawn_blocking(register).await.expect("again");
    assert_eq!(again["policies"][0]["outcome"], "already registered");
    assert_eq!(again["ok"], true);
    app.stop().await;
}
