//! kill -9 of the control plane at seeded random points while runs of every mode run, some
//! started through the API and some opened by agents on the runtime (observed): after a
//! restart every run reaches the runtime's terminal state, its stored envelopes are the
//! runtime's transcript (0 lost, 0 duplicated, ordinals and seqs dense), and an SSE client
//! that reconnects with `Last-Event-ID` across the crash ends with exactly the run's events.
//!
//! `FAULTS_CRASHES` kill points (4 by default, for CI); `FAULTS_SEED` repeats a run of the
//! suite. The full count: `FAULTS_CRASHES=20 cargo test --test it faults::crash -- --nocapture`.

use std::time::Duration;

use futures::FutureExt as _;
use macp_control_plane::runtime::RuntimeClient;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::store::Store;
use macp_runtime::pb::stream_session_response::Response;
use serde_json::Value;
use tokio_stream::StreamExt as _;

use super::process::{Service, poll};
use super::summary::Tally;
use crate::discovery::Agents;
use crate::requests;
use crate::runtime_process::spawn_runtime;
use crate::streams::SseReader;
use crate::support::{self, Backend};

const MODES: [fn() -> Value; 6] = [
    requests::scripted_decision,
    requests::scripted_proposal,
    requests::scripted_task,
    requests::scripted_handoff,
    requests::scripted_quorum,
    requests::scripted_multi_round,
];

/// xorshift64: the kill points and modes follow from the seed alone.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

pub(super) fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn start(&self, request: &Value) -> String {
        let response = self
            .http
            .post(format!("{}/runs", self.base))
            .json(request)
            .send()
            .await
            .expect("start");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "{body}");
        body["runId"].as_str().expect("runId").to_owned()
    }

    async fn event_count(&self, run_id: &str) -> usize {
        match self
            .get(&format!("/runs/{run_id}/events?limit=10000"))
            .await
        {
            (200, Value::Array(events)) => events.len(),
            _ => 0,
        }
    }
}

/// The runtime envelopes a run stored: (ordinal, message id) in seq order.
pub(crate) async fn stored_envelopes(store: &Store, run_id: &str) -> Vec<(i64, String)> {
    store
        .raw_events(run_id)
        .await
        .expect("raw")
        .into_iter()
        .filter(|record| record.kind == "stream-envelope")
        .map(|record| {
            (
                record.payload["ordinal"].as_i64().expect("ordinal"),
                record.payload["envelope"]["messageId"]
                    .as_str()
                    .expect("messageId")
                    .to_owned(),
            )
        })
        .collect()
}

/// The runtime's transcript of a session: message ids in ordinal order, replayed from 0.
pub(crate) async fn transcript(
    runtime: &RuntimeClient,
    session_id: &str,
    reader: &str,
    at_least: usize,
) -> Vec<String> {
    let metadata = runtime
        .get_session(session_id, reader)
        .await
        .expect("GetSession");
    let accepted = 1 + metadata
        .participant_activity
        .iter()
        .map(|activity| activity.message_count as usize)
        .sum::<usize>();
    let target = accepted.max(at_least);
    let mut responses = runtime
        .subscribe(session_id, 0, reader)
        .await
        .expect("StreamSession")
        .responses;
    let mut ids = Vec::new();
    while ids.len() < target {
        // A transcript shorter than what is stored ends the read here (a duplicate stored).
        match tokio::time::timeout(Duration::from_secs(2), responses.next()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(Response::Envelope(envelope)) = frame.response {
                    ids.push(envelope.message_id);
                }
            }
            _ => break,
        }
    }
    // Whatever else the runtime has already sent (envelopes it synthesized).
    while let Some(Some(Ok(frame))) = responses.next().now_or_never() {
        if let Some(Response::Envelope(envelope)) = frame.response {
            ids.push(envelope.message_id);
        }
    }
    ids
}

async fn kill_points(backend: Backend) {
    let mut tally = Tally::begin(&format!("crash {backend:?}"));
    let dir = tempfile::tempdir().expect("dir");
    let Some((database_url, postgres_db)) = support::database_url(backend, &dir).await else {
        return;
    };
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let crashes = setting("FAULTS_CRASHES", 4);
    println!(
        "faults::crash {backend:?}: seed {seed} (FAULTS_SEED={seed} repeats it), {crashes} kill points"
    );
    let mut rng = Rng(seed);
    // Every mode in turn from a random one: four rounds of two cover all six.
    let first_mode = rng.below(MODES.len() as u64) as usize;
    let data = tempfile::tempdir().expect("runtime dir");
    let runtime = spawn_runtime(&[
        ("MACP_DATA_DIR", data.path().to_str().expect("utf-8 path")),
        ("MACP_STORAGE_BACKEND", "file"),
        ("MACP_COMPACT_TERMINAL_LOGS", "0"),
    ])
    .await;
    let env = [
        ("DATABASE_URL", database_url.clone()),
        ("RUNTIME_ADDRESS", runtime.address.clone()),
        ("RUNTIME_USE_DEV_HEADER", "true".to_owned()),
    ];
    let http = reqwest::Client::new();
    let mut runs = Vec::new();
    let mut resumed = Vec::new();
    for round in 0..crashes {
        let service = Service::spawn(&env).await;
        let client = Client {
            http: http.clone(),
            base: service.base.clone(),
        };
        let mut round_runs = Vec::new();
        for _ in 0..2 {
            let mode = MODES[(first_mode + round as usize * 2 + round_runs.len()) % MODES.len()];
            round_runs.push(client.start(&mode()).await);
        }
        // Agents open a session of their own: discovery makes it a run, observed from 0.
        let session_id = uuid::Uuid::new_v4().to_string();
        let agents = {
            let (address, session_id) = (runtime.address.clone(), session_id.clone());
            tokio::spawn(async move {
                let mut agents = Agents::connect_to(&address).await;
                agents.start_decision(&session_id).await;
                agents.decide(&session_id).await;
            })
        };
        round_runs.push(session_id);
        let watched = round_runs[0].clone();
        let mut reader = SseReader::open_with(
            &http,
            &service.base,
            &format!("/runs/{watched}/stream?includeSnapshot=false"),
            None,
        )
        .await;
        let subscriber = tokio::spawn(async move {
            let mut seqs = Vec::new();
            while let Some(frame) = reader.next().await {
                if frame.event == "canonical_event" {
                    seqs.push(frame.id.expect("id").parse::<i64>().expect("seq"));
                }
            }
            seqs
        });
        // The kill point: once this many of the round's events are stored (or all of them,
        // when the runs end first).
        let point = 1 + rng.below(40) as usize;
        poll(Duration::from_secs(60), "the kill point", || {
            let (client, round_runs) = (&client, &round_runs);
            async move {
                let mut stored = 0;
                let mut ended = true;
                for run_id in round_runs {
                    stored += client.event_count(run_id).await;
                    let (_, run) = client.get(&format!("/runs/{run_id}")).await;
                    ended &= matches!(
                        run["status"].as_str(),
                        Some("completed" | "failed" | "cancelled")
                    );
                }
                (stored >= point || ended).then_some(())
            }
        })
        .await;
        service.kill().await;
        tally.injected += 1;
        println!("faults::crash: kill -9 {round} after {point}+ stored events");
        agents
            .await
            .expect("the agents' session is decided on the runtime");
        let seen = subscriber.await.expect("subscriber");
        resumed.push((watched, seen));
        runs.extend(round_runs);
    }

    let service = Service::spawn(&env).await;
    let client = Client {
        http: http.clone(),
        base: service.base.clone(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for run_id in &runs {
        loop {
            let (_, run) = client.get(&format!("/runs/{run_id}")).await;
            if matches!(
                run["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                break;
            }
            if std::time::Instant::now() > deadline {
                let (_, events) = client
                    .get(&format!("/runs/{run_id}/events?limit=10000"))
                    .await;
                let types: Vec<&str> = events
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|event| event["type"].as_str().unwrap_or_default())
                    .collect();
                panic!("run {run_id} did not end after the restart: {run}\n{types:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (run_id, mut seen) in resumed {
        let mut reader = SseReader::open_with(
            &http,
            &service.base,
            &format!("/runs/{run_id}/stream?includeSnapshot=false&endAtTerminal=true"),
            seen.last().copied(),
        )
        .await;
        while let Some(frame) = reader.next().await {
            if frame.event == "canonical_event" {
                seen.push(frame.id.expect("id").parse::<i64>().expect("seq"));
            }
        }
        let total = client.event_count(&run_id).await as i64;
        assert_eq!(
            seen,
            (1..=total).collect::<Vec<_>>(),
            "run {run_id}: SSE across the crash"
        );
    }

    let store = Store::connect(&database_url).await.expect("store");
    let reader_client = RuntimeClient::connect_lazy(
        &runtime.address,
        Credentials::Dev {
            observer: "macp-control-plane".to_owned(),
        },
        Duration::from_secs(5),
        false,
    )
    .expect("runtime client");
    for run_id in &runs {
        let (_, run) = client.get(&format!("/runs/{run_id}")).await;
        let session = store
            .session(run_id)
            .await
            .expect("session")
            .unwrap_or_else(|| panic!("run {run_id} is bound: {run}"));
        let state = reader_client
            .get_session(&session.session_id, &session.initiator)
            .await
            .expect("GetSession");
        let expected_status = match macp_runtime::pb::SessionState::try_from(state.state) {
            Ok(macp_runtime::pb::SessionState::Resolved) => "completed",
            Ok(macp_runtime::pb::SessionState::Cancelled) => "cancelled",
            _ => "failed",
        };
        assert_eq!(run["status"], expected_status, "run {run_id}: {run}");
        let stored = stored_envelopes(&store, run_id).await;
        let ordinals: Vec<i64> = stored.iter().map(|(ordinal, _)| *ordinal).collect();
        assert_eq!(
            ordinals,
            (1..=stored.len() as i64).collect::<Vec<_>>(),
            "run {run_id}: ordinals"
        );
        let stored_ids: Vec<String> = stored.into_iter().map(|(_, id)| id).collect();
        let runtime_ids = transcript(
            &reader_client,
            &session.session_id,
            &session.initiator,
            stored_ids.len(),
        )
        .await;
        tally.compare(&stored_ids, &runtime_ids);
        tally.runs += 1;
        assert_eq!(
            stored_ids, runtime_ids,
            "run {run_id}: stored envelopes = the runtime's transcript"
        );
        let seqs: Vec<i64> = store
            .events_between(run_id, 0, None, 1_000_000)
            .await
            .expect("events")
            .iter()
            .map(|event| event.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "run {run_id}: seqs"
        );
    }
    println!(
        "faults::crash {backend:?}: {} injected, runs {}, events lost {}, duplicated {}",
        tally.injected, tally.runs, tally.lost, tally.duplicated
    );
    service.kill().await;
    runtime.kill().await;
    if let Some(name) = postgres_db {
        support::drop_database(&name).await;
    }
}
crate::on_both_backends!(kill_points);
