//! Observer mode: sessions agents start themselves (a tonic client here, each agent with its own
//! credential, as the public SDKs do) become runs, stream live, end with the runtime's state and
//! replay identically; a started and a discovered session racing are one run each; ambient
//! Signals land in the run they correlate with.

use std::time::{Duration, Instant};

use macp_control_plane::runtime::codec::encode_proto;
use macp_runtime::pb::macp_runtime_service_client::MacpRuntimeServiceClient;
use macp_runtime::pb::{Ack, Envelope, SendRequest};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::on_both_backends;
use crate::requests;
use crate::streams::SseReader;
use crate::support::{self, Backend, TestApp};

const DECISION: &str = "macp.mode.decision.v1";

/// Agents on the runtime: each message sent with its sender's own bearer (the runtime's dev
/// mode takes the bearer as the identity, as a static token table would).
pub(crate) struct Agents {
    client: MacpRuntimeServiceClient<Channel>,
}

impl Agents {
    pub(crate) async fn connect(app: &TestApp) -> Agents {
        let address = app.app.embedded_runtime().expect("embedded runtime");
        Agents::connect_to(&address.to_string()).await
    }

    pub(crate) async fn connect_to(address: &str) -> Agents {
        let client = MacpRuntimeServiceClient::connect(format!("http://{address}"))
            .await
            .expect("runtime connects");
        Agents { client }
    }

    pub(crate) async fn send(
        &mut self,
        sender: &str,
        mode: &str,
        session_id: &str,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Ack {
        self.try_send(sender, mode, session_id, message_type, payload)
            .await
            .expect("send")
    }

    /// `send`, with the runtime's refusal or absence as an error (the fault suite's agents
    /// talk on while processes die).
    pub(crate) async fn try_send(
        &mut self,
        sender: &str,
        mode: &str,
        session_id: &str,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<Ack, tonic::Status> {
        let mut request = tonic::Request::new(SendRequest {
            envelope: Some(Envelope {
                macp_version: "1.0".into(),
                mode: mode.into(),
                message_type: message_type.into(),
                message_id: uuid::Uuid::new_v4().to_string(),
                session_id: session_id.into(),
                sender: String::new(),
                timestamp_unix_ms: 0,
                payload,
            }),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {sender}").parse().expect("header"),
        );
        Ok(self
            .client
            .send(request)
            .await?
            .into_inner()
            .ack
            .expect("ack"))
    }

    /// The initiator opens a decision session of the scripted decision's participants.
    pub(crate) async fn start_decision(&mut self, session_id: &str) {
        let payload = encode_proto(
            "macp.v1.SessionStartPayload",
            &json!({
                "intent": "agents decide on their own",
                "participants": ["fraud-agent", "risk-agent", "growth-agent"],
                "mode_version": "1.0.0",
                "configuration_version": "config.default",
                "policy_version": "",
                "ttl_ms": 120000,
            }),
        )
        .expect("encodes");
        let ack = self
            .send("coordinator", DECISION, session_id, "SessionStart", payload)
            .await;
        assert!(ack.ok, "{ack:?}");
    }

    /// The scripted decision's messages (proposal, evaluations, votes, commitment), each from
    /// its own agent.
    pub(crate) async fn decide(&mut self, session_id: &str) {
        for message in requests::scripted_decision()["kickoff"]
            .as_array()
            .expect("kickoff")
        {
            let proto = &message["payloadEnvelope"]["proto"];
            let payload = encode_proto(proto["typeName"].as_str().expect("type"), &proto["value"])
                .expect("encodes");
            let ack = self
                .send(
                    message["from"].as_str().expect("from"),
                    DECISION,
                    session_id,
                    message["messageType"].as_str().expect("type"),
                    payload,
                )
                .await;
            assert!(ack.ok, "{message}: {ack:?}");
        }
    }

    /// An ambient Signal (no mode, no session), correlated with `session` when given.
    async fn signal(&mut self, sender: &str, signal_type: &str, session: Option<&str>) -> String {
        let payload = encode_proto(
            "macp.v1.SignalPayload",
            &json!({
                "signal_type": signal_type,
                "data": base64_json(&json!({"note": signal_type})),
                "confidence": 0.8,
                "correlation_session_id": session.unwrap_or_default(),
            }),
        )
        .expect("encodes");
        let ack = self.send(sender, "", "", "Signal", payload).await;
        assert!(ack.ok, "{ack:?}");
        ack.message_id
    }
}

fn base64_json(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

/// Polls until the run exists (discovery is driven by the runtime's lifecycle feed; the poll
/// only looks).
pub(crate) async fn wait_for_run(app: &TestApp, run_id: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = app.get(&format!("/runs/{run_id}")).await;
        if status == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run {run_id} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session agents start becomes a run under its own id, streams live while they talk, ends
/// completed with their decision, and replays to the same state.
async fn agent_sessions_become_runs(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let mut agents = Agents::connect(&app).await;
    let session_id = uuid::Uuid::new_v4().to_string();
    agents.start_decision(&session_id).await;
    let appeared = wait_for_run(&app, &session_id).await;
    // Driven by the runtime's lifecycle feed (tens of ms here); the bound is the issue's, and
    // what the UI console allows before it gives up on a launch.
    assert!(
        appeared < Duration::from_secs(1),
        "discovered {appeared:?} after SessionStart was accepted"
    );
    let (_, run) = app.get(&format!("/runs/{session_id}")).await;
    assert_eq!(run["sourceKind"], "session-discovery", "{run}");
    assert_eq!(run["runtimeSessionId"], session_id.as_str());
    assert!(run["createdBy"].is_null(), "nobody of ours started it");

    // Live: the stream carries what the agents say as they say it.
    let mut stream = SseReader::open(
        &app,
        &format!("/runs/{session_id}/stream?includeSnapshot=false&endAtTerminal=true"),
        None,
    )
    .await;
    agents.decide(&session_id).await;
    let mut seen = Vec::new();
    while let Some(frame) = stream.next().await {
        if frame.event != "canonical_event" {
            continue;
        }
        let event: Value = serde_json::from_str(&frame.data).expect("event json");
        seen.push(event["type"].as_str().unwrap_or_default().to_owned());
    }
    for expected in ["proposal.created", "decision.finalized", "run.completed"] {
        assert!(
            seen.iter().any(|kind| kind == expected),
            "{expected} in {seen:?}"
        );
    }
    assert_eq!(seen.last().map(String::as_str), Some("run.completed"));

    let state = app.wait_terminal(&session_id).await;
    assert_eq!(state.run.status, "completed");
    let decision = state.decision.current.as_ref().expect("a decision");
    assert!(decision.finalized, "{decision:?}");
    // The SessionStart is in the transcript too: the run was observed from ordinal 0.
    let events = app.events(&session_id).await;
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "message.received"
                && event["data"]["messageType"] == "SessionStart"),
        "the session's start is in its run"
    );
    // Replay to the last seq gives the live state.
    let (_, live) = app.get(&format!("/runs/{session_id}/state")).await;
    let last = live["timeline"]["latestSeq"].as_i64().expect("seq");
    let (status, replayed) = app
        .get(&format!("/runs/{session_id}/replay/state?seq={last}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(replayed, live, "replay differs from the live run");
    app.stop().await;
}
on_both_backends!(agent_sessions_become_runs);

/// The live subscribers a service counts (`macp_stream_subscribers` on `/metrics`).
pub(crate) async fn subscribers(http: &reqwest::Client, base: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("macp_stream_subscribers "))
        .and_then(|value| value.trim().parse().ok())
}

/// A stream opened before the agents start their session waits for its run
/// (`waitForRunMs`) and then carries all of it; a wait that ends first is `RUN_NOT_FOUND`, and
/// a wait out of range is refused by field.
async fn a_stream_waits_for_the_run_of_a_session(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    let path = format!(
        "/runs/{session_id}/stream?includeSnapshot=false&endAtTerminal=true&waitForRunMs=30000"
    );
    let (http, base) = (app.http.clone(), app.base.clone());
    let stream = tokio::spawn(async move {
        let mut reader = SseReader::open_with(&http, &base, &path, None).await;
        let mut seqs = Vec::new();
        while let Some(frame) = reader.next().await {
            if frame.event == "canonical_event" {
                seqs.push(frame.id.expect("id").parse::<i64>().expect("seq"));
            }
        }
        seqs
    });
    // The request waits on the hub before the session exists.
    let waiting = Instant::now();
    while subscribers(&app.http, &app.base).await != Some(1) {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the stream request never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = app.get(&format!("/runs/{session_id}")).await;
    assert_eq!(status, 404, "no run before the session starts");
    let mut agents = Agents::connect(&app).await;
    agents.start_decision(&session_id).await;
    agents.decide(&session_id).await;
    // Well inside the 30 s wait: only a wake-up, not the wait's end, gets the stream here.
    let seqs = tokio::time::timeout(Duration::from_secs(20), stream)
        .await
        .expect("the stream ends at the run's end")
        .expect("stream task");
    let stored: Vec<i64> = app
        .events(&session_id)
        .await
        .iter()
        .map(|event| event["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, stored, "every event of the run, in order, once");
    assert_eq!(app.wait_terminal(&session_id).await.run.status, "completed");

    // No run appears: not found once the wait is over.
    let missing = uuid::Uuid::new_v4();
    let (status, body) = app
        .get(&format!("/runs/{missing}/stream?waitForRunMs=50"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errorCode"], "RUN_NOT_FOUND", "{body}");
    for wait in ["60001", "-1", "soon"] {
        let (status, body) = app
            .get(&format!("/runs/{missing}/stream?waitForRunMs={wait}"))
            .await;
        assert_eq!(status, 400, "{wait}: {body}");
        assert_eq!(body["errorCode"], "VALIDATION_ERROR", "{body}");
        assert_eq!(
            body["details"]["errors"][0]["field"], "waitForRunMs",
            "{body}"
        );
    }
    app.stop().await;
}
on_both_backends!(a_stream_waits_for_the_run_of_a_session);

/// Runs we start and sessions agents start, at the same time: one run per session, never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_and_discovered_sessions_racing_are_one_run_each() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    const PAIRS: usize = 6;
    let mut agents = Agents::connect(&app).await;
    let discovered: Vec<String> = (0..PAIRS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let started = futures::future::join_all((0..PAIRS).map(|_| {
        let mut request = requests::scripted_decision();
        request["kickoff"] = json!([]);
        let app = &app;
        async move { app.start_run(&request).await }
    }));
    let agent_sessions = async {
        for session_id in &discovered {
            agents.start_decision(session_id).await;
        }
    };
    let (started, ()) = tokio::join!(started, agent_sessions);
    for run_id in &started {
        app.wait_for(run_id, |state| state.run.status == "running")
            .await;
    }
    for session_id in &discovered {
        wait_for_run(&app, session_id).await;
    }
    let (_, page) = app.get("/runs?limit=200").await;
    let runs = page["data"].as_array().expect("runs");
    assert_eq!(runs.len(), 2 * PAIRS, "{page}");
    let mut sessions: Vec<&str> = runs
        .iter()
        .map(|run| run["runtimeSessionId"].as_str().expect("a session"))
        .collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), 2 * PAIRS, "a session is never two runs");
    let discovered_runs = runs
        .iter()
        .filter(|run| run["sourceKind"] == "session-discovery")
        .count();
    assert_eq!(discovered_runs, PAIRS);
    app.stop().await;
}

/// Ambient Signals (`WatchSignals`) with a correlation land in that session's run, in order
/// with its other events and in its projection; one without matches no run and is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_signals_land_in_the_run_they_correlate_with() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut agents = Agents::connect(&app).await;
    let first = uuid::Uuid::new_v4().to_string();
    let second = uuid::Uuid::new_v4().to_string();
    agents.start_decision(&first).await;
    agents.start_decision(&second).await;
    wait_for_run(&app, &first).await;
    wait_for_run(&app, &second).await;
    let before = unmatched(&app).await;
    let to_first = agents
        .signal("risk-agent", "suspicious_device", Some(&first))
        .await;
    let to_second = agents
        .signal("fraud-agent", "velocity", Some(&second))
        .await;
    let to_none = agents.signal("growth-agent", "lonely", None).await;
    let has_signal = |message_id: String| {
        move |state: &macp_control_plane::projection::state::RunState| {
            serde_json::to_value(state)
                .map(|json| json.to_string().contains(&message_id))
                .unwrap_or(false)
        }
    };
    app.wait_for(&first, has_signal(to_first.clone())).await;
    app.wait_for(&second, has_signal(to_second.clone())).await;
    let signal_ids = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .filter(|event| event["type"] == "signal.emitted")
            .map(|event| event.to_string())
            .collect()
    };
    let first_signals = signal_ids(app.events(&first).await);
    assert_eq!(first_signals.len(), 1, "{first_signals:?}");
    assert!(first_signals[0].contains(&to_first));
    let second_signals = signal_ids(app.events(&second).await);
    assert_eq!(second_signals.len(), 1, "{second_signals:?}");
    assert!(second_signals[0].contains(&to_second));
    // The uncorrelated one is in no run; it was counted. The count moves after the correlated
    // ones were stored, which the runtime sent before it.
    loop {
        if unmatched(&app).await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for run in [&first, &second] {
        assert!(
            !app.events(run)
                .await
                .iter()
                .any(|event| event.to_string().contains(&to_none)),
            "an uncorrelated signal landed in {run}"
        );
    }
    // A signal the control plane sends is recorded once, not again when the runtime echoes it.
    let (status, _) = app
        .post(
            &format!("/runs/{first}/signal"),
            &json!({"from": "risk-agent", "signalType": "from_the_api"}),
        )
        .await;
    assert_eq!(status, 201);
    let marker = agents
        .signal("risk-agent", "after_the_api", Some(&first))
        .await;
    app.wait_for(&first, has_signal(marker)).await;
    let from_api = app
        .events(&first)
        .await
        .iter()
        .filter(|event| {
            event["type"] == "signal.emitted" && event.to_string().contains("from_the_api")
        })
        .count();
    assert_eq!(from_api, 1, "the API's signal is recorded once");
    app.stop().await;
}

async fn unmatched(app: &TestApp) -> f64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|line| line.starts_with("macp_ambient_signals_unmatched_total"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// A RunDescriptor (a named session, no kickoff): the run exists at once under the session's
/// id, binds when its agents start that session, and ends with their decision; a session never
/// started fails the run `SESSION_NOT_STARTED` after its ttl.
async fn run_descriptors_wait_for_their_agents(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut descriptor = requests::scripted_decision();
    descriptor["kickoff"] = json!([]);
    descriptor["session"]["sessionId"] = json!(session_id);
    let run_id = app.start_run(&descriptor).await;
    assert_eq!(run_id, session_id, "the run is found by its session's id");
    let (status, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(run["runtimeSessionId"], session_id.as_str());
    // The same session cannot be described twice.
    let (status, body) = app.post("/runs", &descriptor).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errorCode"], "SESSION_ALREADY_EXISTS");

    let mut agents = Agents::connect(&app).await;
    agents.start_decision(&session_id).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    agents.decide(&session_id).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed");
    assert!(
        state
            .decision
            .current
            .as_ref()
            .is_some_and(|decision| decision.finalized)
    );
    let (_, page) = app.get("/runs?limit=200").await;
    assert_eq!(page["total"], 1, "one run for the session: {page}");

    // Never started: the ttl passes and the run fails with the reason.
    let mut lonely = descriptor.clone();
    lonely["session"]["sessionId"] = json!(uuid::Uuid::new_v4().to_string());
    lonely["session"]["ttlMs"] = json!(1500);
    let lonely_id = app.start_run(&lonely).await;
    app.wait_terminal(&lonely_id).await;
    let (_, run) = app.get(&format!("/runs/{lonely_id}")).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["errorCode"], "SESSION_NOT_STARTED", "{run}");
    app.stop().await;
}
on_both_backends!(run_descriptors_wait_for_their_agents);

/// A descriptor names a session the runtime would take, and carries no kickoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_descriptors_are_checked() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut with_kickoff = requests::scripted_decision();
    with_kickoff["session"]["sessionId"] = json!(uuid::Uuid::new_v4().to_string());
    let (status, body) = app.post("/runs", &with_kickoff).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("\"kickoff\""), "{body}");
    let mut bad_id = requests::scripted_decision();
    bad_id["kickoff"] = json!([]);
    bad_id["session"]["sessionId"] = json!("too short");
    let (status, body) = app.post("/runs", &bad_id).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("session.sessionId"), "{body}");
    let (_, page) = app.get("/runs").await;
    assert_eq!(page["total"], 0, "refused requests make no run");
    app.stop().await;
}
