//! The same operation over gRPC and over REST returns the same data.

use macp_control_plane::api::proto;
use serde_json::{Map, Value};

use crate::requests;
use crate::support::{self, Backend};

/// proto3 JSON omits defaults and writes free-form numbers as doubles: compare by value, with
/// absent and default treated alike.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let kept: Map<String, Value> = map
                .iter()
                .map(|(key, inner)| (key.clone(), canonical(inner)))
                .filter(|(_, inner)| !is_default(inner))
                .collect();
            Value::Object(kept)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Number(number) => number
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        other => other.clone(),
    }
}

fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// Whether an answer came from a route: the fallback answers a path no route has 404 NOT_FOUND,
/// while a route may answer 404 with a code of its own (RECEIPT_NOT_FOUND of a run without one).
pub fn routed(status: u16, headers: &reqwest::header::HeaderMap) -> bool {
    let code = headers
        .get("x-error-code")
        .and_then(|code| code.to_str().ok());
    status != 405 && !(status == 404 && code.is_none_or(|code| code == "NOT_FOUND"))
}

pub fn assert_same(what: &str, grpc: &Value, rest: &Value) {
    assert_eq!(
        canonical(grpc),
        canonical(rest),
        "{what}: gRPC and REST differ"
    );
}

pub fn json<T: serde::Serialize>(message: &T) -> Value {
    serde_json::to_value(message).expect("proto3 JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_rest_return_the_same_data() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut grpc = app.grpc().await;
    let request: proto::ExecutionRequest =
        serde_json::from_value(requests::scripted_decision()).expect("request fits the proto");
    let started = grpc
        .run_start(proto::RunStartRequest {
            request: Some(request),
            ..Default::default()
        })
        .await
        .expect("RunStart")
        .into_inner();
    assert_eq!(started.status, "queued");
    let run_id = started.run_id;
    app.wait_terminal(&run_id).await;

    let run = grpc
        .get_run(proto::GetRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .expect("GetRun")
        .into_inner();
    let (_, rest_run) = app.get(&format!("/runs/{run_id}")).await;
    assert_same("GetRun", &json(&run), &rest_run);
    assert_eq!(run.status, "completed");

    let state = grpc
        .get_run_state(proto::GetRunStateRequest {
            run_id: run_id.clone(),
        })
        .await
        .expect("GetRunState")
        .into_inner();
    let (_, rest_state) = app.get(&format!("/runs/{run_id}/state")).await;
    assert_same("GetRunState", &json(&state), &rest_state);

    let events = grpc
        .list_run_events(proto::ListRunEventsRequest {
            run_id: run_id.clone(),
            after_seq: Some(3),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .expect("ListRunEvents")
        .into_inner();
    let (_, rest_events) = app
        .get(&format!("/runs/{run_id}/events?afterSeq=3&limit=1000"))
        .await;
    assert_same("ListRunEvents", &json(&events.data), &rest_events);
    assert_eq!(events.data.first().map(|event| event.seq), Some(4));

    let runs = grpc
        .list_runs(proto::ListRunsRequest {
            limit: Some(10),
            ..Default::default()
        })
        .await
        .expect("ListRuns")
        .into_inner();
    let (_, rest_runs) = app.get("/runs?limit=10").await;
    assert_same("ListRuns", &json(&runs), &rest_runs);

    let modes = grpc
        .list_runtime_modes(proto::ListRuntimeModesRequest {})
        .await
        .expect("ListRuntimeModes")
        .into_inner();
    let (_, rest_modes) = app.get("/runtime/modes").await;
    assert_same("ListRuntimeModes", &json(&modes.modes), &rest_modes);
    assert!(!modes.modes.is_empty());

    let manifest = grpc
        .get_runtime_manifest(proto::GetRuntimeManifestRequest {})
        .await
        .expect("GetRuntimeManifest")
        .into_inner();
    let (_, rest_manifest) = app.get("/runtime/manifest").await;
    assert_same("GetRuntimeManifest", &json(&manifest), &rest_manifest);

    let roots = grpc
        .list_runtime_roots(proto::ListRuntimeRootsRequest {})
        .await
        .expect("ListRuntimeRoots")
        .into_inner();
    let (_, rest_roots) = app.get("/runtime/roots").await;
    assert_same("ListRuntimeRoots", &json(&roots.roots), &rest_roots);

    let unknown = grpc
        .get_run(proto::GetRunRequest {
            run_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown run");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let (status, body) = app.get(&format!("/runs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    assert_eq!(body["errorCode"], "RUN_NOT_FOUND");
    app.stop().await;
}

/// Every RPC of our services (ControlPlane, ScenarioRegistry) has its REST route, and every
/// route answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_has_a_rest_route() {
    use macp_control_plane::api::routes::{ALIAS_ROUTES, OPS_ROUTES, RPC_ROUTES};
    let pool = prost_reflect::DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("pool");
    let services: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
    assert_eq!(
        services,
        [
            "macp.control_plane.v1.ControlPlane",
            "macp.control_plane.v1.ScenarioRegistry"
        ]
    );
    let methods: Vec<String> = pool
        .services()
        .flat_map(|service| {
            service
                .methods()
                .map(|m| m.name().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for method in &methods {
        assert!(
            RPC_ROUTES.iter().any(|(rpc, _, _)| rpc == method),
            "RPC {method} has no REST route"
        );
    }
    assert_eq!(
        methods.len(),
        RPC_ROUTES.len(),
        "routes for RPCs that do not exist (or an RPC name used twice)"
    );
    for (rpc, _, path) in ALIAS_ROUTES {
        assert!(
            methods.iter().any(|method| method == rpc),
            "alias {path} names no RPC"
        );
    }

    // With a key (the client sends it), so storing another key does not change who may call.
    let options = support::Options {
        auth: support::admin_key_auth(),
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let run_id = app.start_run(&requests::seed_example()).await;
    // `DELETE /runs/{id}` may take its run away (the cancel before it ended it): one of its own.
    let deleted_run = app.start_run(&requests::seed_example()).await;
    let key_id = app.create_viewer_key().await;
    let (status, webhook) = app
        .post(
            "/webhooks",
            &serde_json::json!({"url": "http://127.0.0.1:9/hook", "secret": "s"}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().expect("a webhook id");
    for (method, path) in RPC_ROUTES
        .iter()
        .chain(ALIAS_ROUTES)
        .map(|(_, method, path)| (*method, *path))
        .chain(OPS_ROUTES.iter().copied())
    {
        // Path parameters that name things that exist, so a 404 NOT_FOUND can only mean "not routed".
        let run = if method == "DELETE" {
            &deleted_run
        } else {
            &run_id
        };
        let path = path
            .replace("{id}", run)
            .replace("{pack}", "fraud")
            .replace("{scenario}", "high-value-new-device")
            .replace("{version}", "1.0.0")
            .replace("{ref}", "fraud-agent")
            .replace("{keyId}", &key_id)
            .replace("{policyId}", "policy.default")
            .replace("{webhookId}", webhook_id);
        let url = format!("{}{path}", app.base);
        let request = match method {
            "GET" => app.http.get(&url),
            "DELETE" => app.http.delete(&url),
            "PATCH" => app.http.patch(&url).json(&serde_json::json!({})),
            _ => app.http.post(&url).json(&requests::seed_example()),
        };
        let response = request.send().await.expect("request");
        let status = response.status();
        assert!(
            routed(status.as_u16(), response.headers()),
            "{method} {path} is not routed ({status})"
        );
    }
    app.stop().await;
}
