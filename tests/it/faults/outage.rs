//! The runtime killed (SIGKILL) under running runs: back within `RUNTIME_OUTAGE_GRACE_MS`
//! (same address, its sessions in files), the runs go on with nothing lost and the outage
//! recorded; gone for longer, they fail with `RUNTIME_UNAVAILABLE` and the service serves on.

use std::time::Duration;

use macp_control_plane::app::RuntimeTarget;
use macp_control_plane::runtime::RuntimeClient;
use macp_control_plane::runtime::credentials::Credentials;
use serde_json::json;

use super::crash::{stored_envelopes, transcript};
use super::summary::Tally;
use crate::discovery::Agents;
use crate::requests;
use crate::runtime_process::spawn_runtime;
use crate::support::{self, Backend, TestApp};

/// `count` Proposals from the seed example's agents.
async fn proposals(runtime: &str, session_id: &str, from: usize, count: usize) {
    let mut agents = Agents::connect_to(runtime).await;
    let senders = ["fraud-agent", "risk-agent", "growth-agent"];
    for index in from..from + count {
        let payload = macp_control_plane::runtime::codec::encode_proto(
            "macp.modes.decision.v1.ProposalPayload",
            &json!({"proposal_id": format!("extra-{index}"), "option": "review", "rationale": "more data"}),
        )
        .expect("encodes");
        let ack = agents
            .send(
                senders[index % senders.len()],
                "macp.mode.decision.v1",
                session_id,
                "Proposal",
                payload,
            )
            .await;
        assert!(ack.ok, "{ack:?}");
    }
}

async fn live_run(app: &TestApp) -> (String, String) {
    let run_id = app.start_run(&requests::seed_example()).await;
    // Its kickoff (one Proposal) is through: what follows is the observer's.
    let state = app
        .wait_for(&run_id, |state| {
            state.run.status == "running"
                && state
                    .timeline
                    .recent
                    .iter()
                    .any(|entry| entry.event_type == "proposal.created")
        })
        .await;
    (run_id, state.run.runtime_session_id.expect("session"))
}

async fn recorded(app: &TestApp, run_id: &str, event_type: &'static str) {
    app.wait_for(run_id, |state| {
        state
            .timeline
            .recent
            .iter()
            .any(|entry| entry.event_type == event_type)
    })
    .await;
}

async fn runtime_outages(backend: Backend) {
    let mut tally = Tally::begin(&format!("outage {backend:?}"));
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().to_str().expect("utf-8 path").to_owned();
    let settings = [
        ("MACP_DATA_DIR", data_dir.as_str()),
        ("MACP_STORAGE_BACKEND", "file"),
        ("MACP_COMPACT_TERMINAL_LOGS", "0"),
    ];
    let runtime = spawn_runtime(&settings).await;
    let address = runtime.address.clone();
    let grace = Duration::from_secs(5);
    let Some(app) = support::start_with(
        backend,
        support::Options {
            runtime: RuntimeTarget::External {
                address: address.clone(),
                tls: false,
            },
            runtime_outage_grace: grace,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };

    // Within the grace.
    let (run_id, session_id) = live_run(&app).await;
    proposals(&address, &session_id, 0, 5).await;
    runtime.kill().await;
    tally.injected += 1;
    recorded(&app, &run_id, "session.stream.disconnected").await;
    let same_address = [settings.as_slice(), &[("MACP_BIND_ADDR", address.as_str())]].concat();
    let restarted = spawn_runtime(&same_address).await;
    proposals(&address, &session_id, 5, 5).await;
    recorded(&app, &run_id, "session.stream.reconnected").await;
    let (status, body) = app
        .post(&format!("/runs/{run_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "cancelled");
    let store = app.store().await;
    let stored: Vec<String> = stored_envelopes(&store, &run_id)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let reader = RuntimeClient::connect_lazy(
        &address,
        Credentials::Dev {
            observer: "macp-control-plane".to_owned(),
        },
        Duration::from_secs(5),
        false,
    )
    .expect("client");
    let runtime_ids = transcript(&reader, &session_id, "coordinator", stored.len()).await;
    tally.compare(&stored, &runtime_ids);
    tally.runs += 1;
    assert_eq!(
        stored, runtime_ids,
        "0 lost, 0 duplicated across the outage"
    );
    assert_eq!(
        stored.len(),
        1 + 1 + 10,
        "SessionStart, the kickoff and 10 Proposals"
    );
    let (_, metrics) = app.get(&format!("/runs/{run_id}/metrics")).await;
    assert!(
        metrics["streamReconnectCount"].as_i64().unwrap_or(0) >= 1,
        "{metrics}"
    );

    // Past the grace.
    let (run_id, _) = live_run(&app).await;
    restarted.kill().await;
    tally.injected += 1;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "failed", "{state:?}");
    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run["errorCode"], "RUNTIME_UNAVAILABLE", "{run}");
    assert!(
        run["errorMessage"]
            .as_str()
            .is_some_and(|error| error.contains("RUNTIME_OUTAGE_GRACE_MS")),
        "failed by the grace: {run}"
    );
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200, "the service serves on");
    tally.runs += 1;
    app.stop().await;
}
crate::on_both_backends!(runtime_outages);
