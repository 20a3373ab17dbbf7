//! The runtime circuit breaker against an unreachable runtime: it opens after the threshold,
//! calls then fail at once, it half-opens after the reset interval, a trial against a runtime
//! that is back closes it; `/readyz` carries its state, and the admin routes reset it and show
//! its history (gRPC = REST).

use std::net::SocketAddr;
use std::time::Duration;

use macp_control_plane::api::proto;
use macp_control_plane::app::RuntimeTarget;
use macp_control_plane::runtime::breaker::BreakerOptions;
use macp_control_plane::runtime::embedded::{EmbeddedOptions, EmbeddedRuntime};
use serde_json::Value;

use crate::parity::{assert_same, json};
use crate::support::{self, Backend, TestApp};

fn states(history: &Value) -> Vec<&str> {
    history["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|transition| transition["state"].as_str())
        .collect()
}

/// Waits until the breaker reports `state` (it half-opens by time alone).
async fn wait_for_state(app: &TestApp, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, history) = app.get("/admin/circuit-breaker/history").await;
        assert_eq!(status, 200, "{history}");
        if history["state"] == state {
            return history;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker is not {state} after 10 s: {history}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_half_opens_closes_and_keeps_its_history() {
    // A port nothing listens on, for now.
    let address: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port");
    let options = support::Options {
        runtime: RuntimeTarget::External {
            address: address.to_string(),
            tls: false,
        },
        circuit_breaker: BreakerOptions {
            threshold: 2,
            reset: Duration::from_millis(300),
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["circuitBreaker"], "CLOSED", "one failure: {ready}");
    assert_eq!(ready["streamConsumer"], "unhealthy", "{ready}");

    // The second failed call opens it; the next call fails at once, without trying.
    let (_, health) = app.get("/runtime/health").await;
    assert_eq!(health["ok"], false);
    let (status, refused) = app.get("/runtime/manifest").await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["errorCode"], "RUNTIME_UNAVAILABLE");
    assert_eq!(refused["details"]["circuitBreaker"], "OPEN", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2 consecutive failures"),
        "{refused}"
    );
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["circuitBreaker"], "OPEN", "{ready}");
    // Counted for /metrics (process-wide: other tests' breakers count too).
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let opened = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("macp_circuit_breaker_transitions_total{state=\"OPEN\"} ")
        })
        .and_then(|value| value.parse::<f64>().ok());
    assert!(opened.is_some_and(|count| count >= 1.0), "{metrics}");

    // After the reset interval one trial goes through; it fails, and the breaker opens again.
    wait_for_state(&app, "HALF_OPEN").await;
    let (status, _) = app.get("/runtime/manifest").await;
    assert_eq!(status, 503);
    let (_, history) = app.get("/admin/circuit-breaker/history").await;
    assert_eq!(history["state"], "OPEN", "{history}");

    // The runtime comes up; the next trial closes the breaker.
    let runtime = EmbeddedRuntime::start_with(EmbeddedOptions {
        bind: address,
        ..EmbeddedOptions::default()
    })
    .await
    .expect("the runtime starts on the port");
    wait_for_state(&app, "HALF_OPEN").await;
    let (status, manifest) = app.get("/runtime/manifest").await;
    assert_eq!(status, 200, "{manifest}");
    let (_, history) = app.get("/admin/circuit-breaker/history").await;
    assert_eq!(
        states(&history),
        ["CLOSED", "OPEN", "HALF_OPEN", "OPEN", "HALF_OPEN", "CLOSED"],
        "{history}"
    );
    for transition in history["history"].as_array().expect("history") {
        assert!(
            macp_control_plane::time::parse(transition["enteredAt"].as_str().unwrap_or(""))
                .is_some(),
            "{transition}"
        );
        assert!(transition["reason"].is_string(), "{transition}");
    }

    // A window and a start time narrow it; bad ones are field errors.
    let (status, recent) = app.get("/admin/circuit-breaker/history?window=1h").await;
    assert_eq!(status, 200);
    assert_eq!(states(&recent).len(), 6);
    let future = macp_control_plane::time::format(
        &(macp_control_plane::time::now() + chrono::Duration::hours(1)),
    );
    let (_, none) = app
        .get(&format!("/admin/circuit-breaker/history?since={future}"))
        .await;
    assert_eq!(states(&none).len(), 0, "{none}");
    let (status, error) = app
        .get("/admin/circuit-breaker/history?window=2h&since=yesterday")
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["errorCode"], "VALIDATION_ERROR");
    let fields: Vec<&str> = error["details"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| error["field"].as_str())
        .collect();
    assert_eq!(fields, ["window", "since"]);

    // gRPC = REST.
    let mut grpc = app.grpc().await;
    let over_grpc = grpc
        .get_circuit_breaker_history(proto::GetCircuitBreakerHistoryRequest::default())
        .await
        .expect("GetCircuitBreakerHistory")
        .into_inner();
    let (_, over_rest) = app.get("/admin/circuit-breaker/history").await;
    assert_same("GetCircuitBreakerHistory", &json(&over_grpc), &over_rest);
    runtime.stop().await;
    app.stop().await;
}

/// An operator's reset closes an open breaker at once, over either transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_closes_an_open_breaker() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port");
    let options = support::Options {
        runtime: RuntimeTarget::External {
            address: closed.to_string(),
            tls: false,
        },
        circuit_breaker: BreakerOptions {
            threshold: 1,
            reset: Duration::from_secs(600),
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    app.get("/runtime/health").await;
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["circuitBreaker"], "OPEN", "{ready}");
    // The console sends no body, with a JSON content type.
    let response = app
        .http
        .post(format!("{}/admin/circuit-breaker/reset", app.base))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"status": "ok", "state": "CLOSED"}));
    let (_, history) = app.get("/admin/circuit-breaker/history").await;
    assert_eq!(states(&history), ["CLOSED", "OPEN", "CLOSED"]);
    assert_eq!(history["history"][2]["reason"], "reset by an operator");

    app.get("/runtime/health").await;
    let mut grpc = app.grpc().await;
    let reset = grpc
        .reset_circuit_breaker(proto::ResetCircuitBreakerRequest {})
        .await
        .expect("ResetCircuitBreaker")
        .into_inner();
    assert_eq!(
        json(&reset),
        serde_json::json!({"status": "ok", "state": "CLOSED"})
    );
    app.stop().await;
}

/// With a working runtime, `/readyz` says the session feed is followed and the breaker closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_session_feed_and_the_breaker() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    // The feed is opened in the background at start: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let (status, ready) = app.get("/readyz").await;
        if ready["streamConsumer"] == "ok" {
            assert_eq!(status, 200, "{ready}");
            break ready;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session feed is not followed after 10 s: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["ok"], true, "{ready}");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["runtime"]["ok"], true);
    assert_eq!(ready["circuitBreaker"], "CLOSED");
    app.stop().await;
}
