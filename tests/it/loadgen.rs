//! The load generator against a served control plane in observer mode: agents' sessions on its
//! embedded runtime, every accepted message seen once on its run's stream, every run completed.

use std::time::Duration;

use macp_control_plane::loadgen::{self, Config};

use crate::support::{self, ADMIN_KEY, Backend, Options};

fn config(runtime: String, control_plane: String, api_key: Option<&str>) -> Config {
    Config {
        runtime,
        control_plane,
        api_key: api_key.map(|key| key.to_owned().into()),
        sessions: 4,
        messages: 25,
        rate: 200.0,
        duration: None,
        ramp: Duration::from_millis(100),
        grace: Duration::from_secs(10),
    }
}

/// With auth on, so the API key reaches both the run lookups and the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_sees_every_message_once_and_every_run_complete() {
    let options = Options {
        auth: support::admin_key_auth(),
        ..Options::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let runtime = app.app.embedded_runtime().expect("embedded runtime");
    let config = config(runtime.to_string(), app.base.clone(), Some(ADMIN_KEY));
    let (sessions, messages) = (config.sessions, config.messages);
    let report = loadgen::run(config, false).await.expect("the load runs");
    println!("{}", report.text());
    // SessionStart + messages + Commitment per session, all accepted by the runtime.
    let envelopes = (sessions * (messages + 2)) as u64;
    assert_eq!(report.messages.sent, envelopes, "{report:#?}");
    assert_eq!(report.messages.accepted, envelopes, "{report:#?}");
    assert_eq!(report.messages.seen, envelopes, "{report:#?}");
    assert_eq!(report.messages.missing, 0, "{report:#?}");
    assert_eq!(report.messages.duplicated, 0, "{report:#?}");
    assert_eq!(report.sessions.started, sessions as u64);
    assert_eq!(report.sessions.completed, sessions as u64, "{report:#?}");
    assert_eq!(report.accept_to_sse_ms.count, sessions * (messages + 1));
    assert!(report.ok);
    // The runs it watched are the control plane's, discovered under the sessions' ids.
    let (status, page) = app.get("/runs?limit=50").await;
    assert_eq!(status, 200);
    let discovered = page["data"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|run| run["sourceKind"] == "session-discovery" && run["status"] == "completed")
        .count();
    assert_eq!(discovered, sessions, "{page}");
    app.stop().await;
}

/// A refused credential and an address where no runtime listens are reported before any load
/// is offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_refuses_to_start_without_its_endpoints() {
    let options = Options {
        auth: support::admin_key_auth(),
        ..Options::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let runtime = app.app.embedded_runtime().expect("embedded runtime");
    let error = loadgen::run(
        config(runtime.to_string(), app.base.clone(), Some("not-the-key")),
        false,
    )
    .await
    .expect_err("a wrong key");
    assert!(matches!(error, loadgen::Error::Refused(_)), "{error}");
    assert!(error.to_string().contains("--api-key"), "{error}");

    // A port nothing listens on: bound, then freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = free.local_addr().expect("address");
    drop(free);
    let error = loadgen::run(
        config(nowhere.to_string(), app.base.clone(), Some(ADMIN_KEY)),
        false,
    )
    .await
    .expect_err("no runtime there");
    assert!(matches!(error, loadgen::Error::Unreachable(_)), "{error}");
    let (_, page) = app.get("/runs?limit=50").await;
    assert_eq!(page["data"], serde_json::json!([]), "no load was offered");
    app.stop().await;
}
