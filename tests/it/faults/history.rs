//! A transcript the runtime compacted while the control plane was down: what cannot be read
//! back is recorded as `session.history.unavailable`, and the run still ends with the
//! runtime's state.

use std::time::Duration;

use macp_control_plane::runtime::codec::encode_proto;
use serde_json::Value;

use super::process::{Service, poll};
use super::summary::Tally;
use crate::discovery::Agents;
use crate::requests;
use crate::runtime_process::spawn_runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_is_recorded_not_skipped() {
    // Injected and runs only: the runtime compacts the transcript, so there is none to compare.
    let mut tally = Tally::begin("history");
    let data = tempfile::tempdir().expect("dir");
    let runtime = spawn_runtime(&[
        ("MACP_DATA_DIR", data.path().to_str().expect("utf-8 path")),
        ("MACP_STORAGE_BACKEND", "file"),
        ("MACP_COMPACT_TERMINAL_LOGS", "1"),
    ])
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        (
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()),
        ),
        ("RUNTIME_ADDRESS", runtime.address.clone()),
        ("RUNTIME_USE_DEV_HEADER", "true".to_owned()),
    ];
    let service = Service::spawn(&env).await;
    let http = reqwest::Client::new();
    let get = |base: String, path: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("request");
            response.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    let full = requests::scripted_decision();
    let mut request = full.clone();
    request["kickoff"] = Value::Array(full["kickoff"].as_array().expect("kickoff")[..1].to_vec());
    let response = http
        .post(format!("{}/runs", service.base))
        .json(&request)
        .send()
        .await
        .expect("start");
    let run_id = response.json::<Value>().await.expect("json")["runId"]
        .as_str()
        .expect("runId")
        .to_owned();
    let events_path = format!("/runs/{run_id}/events?limit=10000");
    poll(Duration::from_secs(30), "the kickoff is stored", || {
        let events = get(service.base.clone(), events_path.clone());
        async move {
            let events = events.await;
            let received = events
                .as_array()
                .into_iter()
                .flatten()
                .filter(|event| event["type"] == "message.received")
                .count();
            (received == 2).then_some(())
        }
    })
    .await;
    let run = get(service.base.clone(), format!("/runs/{run_id}")).await;
    let session_id = run["runtimeSessionId"]
        .as_str()
        .expect("session")
        .to_owned();
    service.kill().await;
    tally.injected += 1;

    // The agents finish the decision while the control plane is down; the resolved session's
    // transcript is compacted.
    let mut agents = Agents::connect_to(&runtime.address).await;
    for message in &full["kickoff"].as_array().expect("kickoff")[1..] {
        let proto = &message["payloadEnvelope"]["proto"];
        let payload = encode_proto(proto["typeName"].as_str().expect("type"), &proto["value"])
            .expect("encodes");
        let ack = agents
            .send(
                message["from"].as_str().expect("from"),
                "macp.mode.decision.v1",
                &session_id,
                message["messageType"].as_str().expect("type"),
                payload,
            )
            .await;
        assert!(ack.ok, "{message}: {ack:?}");
    }

    let service = Service::spawn(&env).await;
    let run = poll(Duration::from_secs(30), "the run ends", || {
        let run = get(service.base.clone(), format!("/runs/{run_id}"));
        async move {
            let run = run.await;
            (run["status"] != "running").then_some(run)
        }
    })
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    tally.runs += 1;
    let events = get(service.base.clone(), events_path).await;
    let gap: Vec<&Value> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == "session.history.unavailable")
        .collect();
    assert_eq!(gap.len(), 1, "{events:#}");
    assert_eq!(gap[0]["data"]["afterSequence"], 2, "{gap:?}");
    service.kill().await;
    runtime.kill().await;
}
