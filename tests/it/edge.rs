//! The edge against pages and clients that mean harm: JSON routes take JSON only (a browser
//! posts `text/plain` without a CORS preflight), request bodies and gRPC messages are bounded,
//! and a service on loopback answers only to loopback names or configured ones (DNS rebinding).
//! Each refusal is checked to happen before any work: nothing is written.

use std::net::SocketAddr;

use macp_control_plane::api::edge::EdgeOptions;
use macp_control_plane::api::proto;
use macp_control_plane::api::routes::{ALIAS_ROUTES, RPC_ROUTES};
use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend, TestApp};

/// A decision run that waits for agents: it stays `running`, and only requests change it.
fn idle_run() -> Value {
    let mut request = requests::scripted_decision();
    request["kickoff"] = json!([]);
    request
}

/// Every `POST` route that takes a JSON body, from the route table.
fn json_post_routes() -> Vec<(&'static str, &'static str)> {
    RPC_ROUTES
        .iter()
        .chain(ALIAS_ROUTES)
        .filter(|(_, method, _)| *method == "POST")
        .map(|(rpc, _, path)| (*rpc, *path))
        .collect()
}

/// A body each route would act on if it were let through, so a refusal that fails shows up as
/// a write.
fn valid_body(rpc: &str) -> Value {
    match rpc {
        "RunStart" | "ValidateRun" => idle_run(),
        "CancelRun" | "SuspendSession" | "ResumeSession" => json!({"reason": "forged"}),
        "RegisterPolicy" => json!({
            "policyId": "policy.forged", "mode": "*", "description": "forged",
            "rules": {"voting": {"algorithm": "none"}},
        }),
        "CreateReplay" => json!({"mode": "instant"}),
        "SendRunMessage" => json!({
            "from": "fraud-agent", "to": ["risk-agent"], "messageType": "Proposal",
            "payload": {"proposal_id": "p1", "option": "step_up", "rationale": "new device"},
        }),
        "SendRunSignal" => json!({
            "from": "risk-agent", "signalType": "suspicious_device", "confidence": 0.7,
        }),
        "UpdateRunContext" => json!({"from": "coordinator", "context": {"amount": 2400}}),
        "CreateRunArtifact" => json!({"kind": "json", "label": "notes", "inline": {"a": 1}}),
        "CreateApiKey" => json!({"actor": "ops", "roles": ["viewer"]}),
        "ArchiveRun" | "UnarchiveRun" | "RebuildProjection" => json!({}),
        "CloneRun" => json!({"tags": ["forged"]}),
        "CompareRuns" => json!({
            "leftRunId": uuid::Uuid::new_v4().to_string(),
            "rightRunId": uuid::Uuid::new_v4().to_string(),
        }),
        "BatchRuns" => json!({"runIds": [uuid::Uuid::new_v4().to_string()]}),
        "CreateWebhook" => json!({"url": "http://127.0.0.1:9/hook", "secret": "s"}),
        "ResetCircuitBreaker" => json!({}),
        "WhatIfRun" => json!({"policyVersion": "policy.default"}),
        "CompileLaunch" | "Launch" => {
            json!({"scenarioRef": "fraud/high-value-new-device@1.0.0", "inputs": {}})
        }
        other => panic!("POST route of {other} has no sample body here: add one"),
    }
}

/// Starts an idle run and waits until it has settled: the observer's stream is open and has
/// seen the session start come back, so nothing but requests writes to it any more.
async fn settled_idle_run(app: &TestApp) -> String {
    let run_id = app.start_run(&idle_run()).await;
    app.wait_for(&run_id, |state| {
        let seen = |kind: &str| {
            state
                .timeline
                .recent
                .iter()
                .any(|entry| entry.event_type == kind)
        };
        state.run.status == "running" && seen("session.stream.opened") && seen("message.received")
    })
    .await;
    run_id
}

/// What a refused request must leave alone: the number of runs, and the idle run's events and
/// status.
async fn written(app: &TestApp, run_id: &str) -> (Value, usize, Value) {
    let (status, page) = app.get("/runs?limit=1").await;
    assert_eq!(status, 200, "{page}");
    let (status, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200, "{run}");
    (
        page["total"].clone(),
        app.events(run_id).await.len(),
        run["status"].clone(),
    )
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_routes_refuse_other_content_types_before_any_work() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let run_id = settled_idle_run(&app).await;
    let before = written(&app, &run_id).await;

    let routes = json_post_routes();
    for expected in ["/runs", "/runs/{id}/cancel", "/launch", "/examples/run"] {
        assert!(
            routes.iter().any(|(_, path)| *path == expected),
            "{expected} missing from {routes:?}"
        );
    }
    for (rpc, path) in &routes {
        let url = format!("{}{}", app.base, path.replace("{id}", &run_id));
        let body = valid_body(rpc).to_string();
        for content_type in [
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut request = app.http.post(&url).body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (status, answer) = answer(request.send().await.expect("request")).await;
            assert_eq!(
                (status, answer["errorCode"].as_str()),
                (415, Some("UNSUPPORTED_MEDIA_TYPE")),
                "{rpc} POST {path} with content type {content_type:?}: {answer}"
            );
        }
    }
    assert_eq!(
        written(&app, &run_id).await,
        before,
        "a refused request wrote"
    );

    // JSON by any `+json` name and with parameters is JSON.
    let response = app
        .http
        .post(format!("{}/runs/validate", app.base))
        .header(
            "content-type",
            "application/vnd.macp.run+json; charset=utf-8",
        )
        .body(idle_run().to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers().get("connection"),
        None,
        "a body read to its end keeps the connection"
    );
    let (status, report) = answer(response).await;
    assert_eq!((status, &report["valid"]), (200, &json!(true)), "{report}");

    // An action whose body is optional takes no body at all, without a content type.
    let response = app
        .http
        .post(format!("{}/runs/{run_id}/cancel", app.base))
        .send()
        .await
        .expect("request");
    let (status, cancelled) = answer(response).await;
    assert_eq!(status, 200, "{cancelled}");
    app.stop().await;
}

/// A run request padded to `bytes` in its free-form context.
fn padded_run(bytes: usize) -> Value {
    let mut request = idle_run();
    request["session"]["context"]["pad"] = json!("x".repeat(bytes));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_write_nothing() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let (_, page) = app.get("/runs?limit=1").await;
    let body = padded_run(2 * 1024 * 1024).to_string();
    // Declared by content-length, and streamed without one (chunked).
    let declared = app
        .http
        .post(format!("{}/runs", app.base))
        .header("content-type", "application/json")
        .body(body.clone());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .as_bytes()
        .chunks(64 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let streamed = app
        .http
        .post(format!("{}/runs", app.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    for request in [declared, streamed] {
        let response = request.send().await.expect("request");
        // The rest of the body is not read: the connection cannot take another request.
        assert_eq!(
            response
                .headers()
                .get("connection")
                .and_then(|value| value.to_str().ok()),
            Some("close")
        );
        let (status, answer) = answer(response).await;
        assert_eq!(
            (
                status,
                answer["errorCode"].as_str(),
                answer["statusCode"].as_u64()
            ),
            (413, Some("PAYLOAD_TOO_LARGE"), Some(413)),
            "{answer}"
        );
    }
    let (_, after) = app.get("/runs?limit=1").await;
    assert_eq!(after["total"], page["total"], "a refused body made a run");
    app.stop().await;

    // The limit is a setting: under a small one, a small request still goes through.
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            edge: EdgeOptions {
                max_request_body_bytes: 16 * 1024,
                ..EdgeOptions::default()
            },
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (status, answer) = app.post("/runs", &padded_run(20 * 1024)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("16384")),
        "{answer}"
    );
    app.start_run(&idle_run()).await;
    app.stop().await;
}

/// A client that reaches `address` under the host name `name`, as a browser does after the
/// attacker's DNS name was rebound to loopback.
fn client_for(name: &str, address: SocketAddr, http2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder().resolve(name, address);
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder
    };
    builder.build().expect("client")
}

async fn get_healthz(name: &str, address: SocketAddr, http2: bool) -> (u16, Value) {
    let response = client_for(name, address, http2)
        .get(format!("http://{name}:{}/healthz", address.port()))
        .send()
        .await
        .expect("request");
    answer(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_only_loopback_names_are_answered() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let address = app.app.address;
    assert!(address.ip().is_loopback());
    for http2 in [false, true] {
        for name in ["localhost", "127.0.0.1"] {
            let (status, body) = get_healthz(name, address, http2).await;
            assert_eq!(status, 200, "{name} (h2: {http2}): {body}");
        }
        // HTTP/1.1 carries the name in `Host`, HTTP/2 in `:authority`.
        let (status, body) = get_healthz("rebind.example", address, http2).await;
        assert_eq!(
            (status, body["errorCode"].as_str()),
            (421, Some("MISDIRECTED_REQUEST")),
            "h2: {http2}: {body}"
        );
    }

    // A forged name changes nothing.
    let (_, page) = app.get("/runs?limit=1").await;
    let response = client_for("rebind.example", address, false)
        .post(format!("http://rebind.example:{}/runs", address.port()))
        .json(&idle_run())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 421);
    let (_, after) = app.get("/runs?limit=1").await;
    assert_eq!(after["total"], page["total"]);

    // gRPC is answered on loopback names, and guarded the same way.
    let runs = app
        .grpc()
        .await
        .list_runs(proto::ListRunsRequest::default())
        .await
        .expect("ListRuns on 127.0.0.1")
        .into_inner();
    assert_eq!(Some(u64::from(runs.total)), after["total"].as_u64());
    let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
        .expect("endpoint")
        .origin(
            format!("http://rebind.example:{}", address.port())
                .parse()
                .expect("uri"),
        )
        .connect()
        .await
        .expect("connects");
    let refused = proto::control_plane_client::ControlPlaneClient::new(channel)
        .list_runs(proto::ListRunsRequest::default())
        .await
        .expect_err("a forged authority is refused");
    assert!(refused.message().contains("421"), "{refused:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_host_names_are_answered() {
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            edge: EdgeOptions {
                allowed_hosts: vec!["cp.internal".to_owned()],
                ..EdgeOptions::default()
            },
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let address = app.app.address;
    for (name, expected) in [
        ("cp.internal", 200),
        ("localhost", 200),
        ("rebind.example", 421),
    ] {
        let (status, body) = get_healthz(name, address, false).await;
        assert_eq!(status, expected, "{name}: {body}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_over_the_limit_are_refused() {
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            edge: EdgeOptions {
                grpc_max_decoding_message_bytes: 16 * 1024,
                ..EdgeOptions::default()
            },
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let mut grpc = app.grpc().await;
    let start = |request: Value| proto::RunStartRequest {
        request: Some(serde_json::from_value(request).expect("request fits the proto")),
        ..Default::default()
    };
    let refused = grpc
        .run_start(start(padded_run(20 * 1024)))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    let (_, page) = app.get("/runs?limit=1").await;
    assert_eq!(page["total"], 0, "{page}");
    let started = grpc
        .run_start(start(idle_run()))
        .await
        .expect("under the limit")
        .into_inner();
    assert_eq!(started.status, "queued");
    app.stop().await;
}

/// A page of another origin can send a browser's "simple" requests without a preflight (a
/// bodyless POST among them); whatever would change something is refused before any work, while
/// reads (whose answers CORS hides), allowed origins and the service's own pages go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_cannot_change_anything() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let run_id = settled_idle_run(&app).await;
    let before = written(&app, &run_id).await;
    let cancel = format!("{}/runs/{run_id}/cancel", app.base);
    for origin in ["http://evil.example", "null", "http://localhost:3001"] {
        let response = app
            .http
            .post(&cancel)
            .header("origin", origin)
            .send()
            .await
            .expect("request");
        let (status, answer) = answer(response).await;
        assert_eq!(
            (status, answer["errorCode"].as_str()),
            (403, Some("FORBIDDEN")),
            "cancel from {origin}: {answer}"
        );
        let response = app
            .http
            .post(format!("{}/runs", app.base))
            .header("origin", origin)
            .json(&idle_run())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 403, "start from {origin}");
    }
    assert_eq!(
        written(&app, &run_id).await,
        before,
        "a refused request wrote"
    );
    let response = app
        .http
        .get(format!("{}/runs/{run_id}", app.base))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200, "reads are not refused");
    // The service's own pages (`/docs`) are of its own origin.
    let response = app
        .http
        .post(format!("{}/runs/validate", app.base))
        .header("origin", &app.base)
        .json(&idle_run())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200, "same origin");
    let response = app
        .http
        .post(&cancel)
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .expect("request");
    let (status, cancelled) = answer(response).await;
    assert_eq!(status, 200, "an allowed origin: {cancelled}");
    app.stop().await;
}
