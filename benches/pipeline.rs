//! Pipeline benchmark (`cargo bench --bench pipeline`): prints throughput, latency percentiles,
//! start-to-ready time and idle memory. Not a test: it asserts nothing about speed.
//!
//! 1. ingest: synthetic runtime envelopes through the real write path (normalize → one
//!    transaction of raw + canonical events + projection → hub), in observer-sized batches;
//! 2. end to end: real agents send Proposals to the embedded reference runtime, spread over 40
//!    live runs, as fast as they can and then paced at 1,000/s; latency is runtime accept (Send
//!    answered) → persisted;
//! 3. the `serve` binary: start → /readyz 200, and resident memory once idle.
//!
//! Both SQLite and PostgreSQL (127.0.0.1:5432, skipped with a message when unreachable).
//! `BENCH_ENVELOPES` scales the runs (default 20000); `BENCH_BACKENDS` picks the databases
//! (default `sqlite,postgres`); `BENCH_BATCH` sets the ingest batch (default 64).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
use macp_control_plane::events::normalizer::RuntimeItem;
use macp_control_plane::runs::service::RunOptions;
use macp_control_plane::runtime::codec::encode_proto;
use macp_control_plane::runtime::credentials::Credentials;
use macp_runtime::pb::Envelope;
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;

const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The public NestJS control plane on the same kind of machine (issue #2).
const NEST_ENVELOPES_PER_S: f64 = 70.0;
const NEST_IDLE_MB: f64 = 141.0;
const NEST_READY_S: f64 = 2.1;

fn envelopes() -> usize {
    std::env::var("BENCH_ENVELOPES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_000)
}

struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut samples: Vec<f64>) -> Percentiles {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        if samples.is_empty() {
            return f64::NAN;
        }
        samples[((samples.len() as f64 - 1.0) * q).round() as usize]
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A fresh database per measurement.
async fn database(backend: &str, dir: &tempfile::TempDir) -> Option<String> {
    match backend {
        "sqlite" => Some(format!(
            "sqlite://{}?mode=rwc",
            dir.path()
                .join(format!("{}.db", uuid::Uuid::new_v4()))
                .display()
        )),
        _ => {
            let admin = match Database::connect(POSTGRES_ADMIN).await {
                Ok(admin) => admin,
                Err(error) => {
                    println!("postgres: SKIPPED ({error})");
                    return None;
                }
            };
            let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .ok()?;
            Some(format!("postgres://postgres@127.0.0.1:5432/{name}"))
        }
    }
}

async fn start_app(database_url: String) -> App {
    App::start(AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: database_url.into(),
        store: Default::default(),
        runtime: RuntimeTarget::Embedded(Default::default()),
        credentials: Credentials::Dev {
            observer: "macp-control-plane".into(),
        },
        request_timeout: Duration::from_secs(10),
        run_options: RunOptions::default(),
        registry: macp_control_plane::registry::RegistryOptions::new("packs"),
        cors_origins: Vec::new(),
        edge: Default::default(),
        otlp_endpoint: None,
        limits: Default::default(),
        auth: Default::default(),
    })
    .await
    .expect("app starts")
}

const AGENTS: usize = 8;

fn agents() -> Vec<String> {
    (0..AGENTS).map(|index| format!("agent-{index}")).collect()
}

/// A decision run with no kickoff: the session stays open for the agents to talk in.
async fn open_run(app: &App) -> (String, String) {
    let participants: Vec<_> = agents().iter().map(|id| json!({"id": id})).collect();
    let request = json!({
        "runtime": {"kind": "rust"},
        "session": {
            "modeName": "macp.mode.decision.v1", "modeVersion": "1.0.0",
            "configurationVersion": "config.default", "ttlMs": 3_600_000,
            "initiatorParticipantId": "coordinator", "participants": participants,
        },
    });
    let run_id = app.service.start(request).await.expect("start").run_id;
    let mut batches = app.service.subscribe(&run_id);
    loop {
        let state = app.service.state(&run_id).await.expect("state");
        if state.run.status == "running" && state.timeline.total_events >= 10 {
            return (run_id, state.run.runtime_session_id.expect("session"));
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), batches.recv()).await;
    }
}

fn proposal(session_id: &str, index: usize) -> Envelope {
    Envelope {
        macp_version: "1.0".into(),
        mode: "macp.mode.decision.v1".into(),
        message_type: "Proposal".into(),
        message_id: format!("bench-{index}"),
        session_id: session_id.into(),
        sender: String::new(),
        timestamp_unix_ms: 0,
        payload: encode_proto(
            "macp.modes.decision.v1.ProposalPayload",
            &json!({"proposal_id": format!("p{index}"), "option": "approve", "rationale": "benchmark load"}),
        )
        .expect("encodes"),
    }
}

/// Synthetic envelopes straight into the write path, in batches like the observer's.
async fn bench_ingest(backend: &str, dir: &tempfile::TempDir) {
    let Some(url) = database(backend, dir).await else {
        return;
    };
    let app = start_app(url).await;
    let (run_id, session_id) = open_run(&app).await;
    let total = envelopes();
    let batch = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(64usize);
    let session = app.service.session(&run_id).await.expect("session");
    let first_ordinal = session.expect("a bound session").last_ordinal as u64;
    let mut latencies = Vec::with_capacity(total / batch + 1);
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let items: Vec<RuntimeItem> = (sent..(sent + batch).min(total))
            .map(|index| {
                let mut envelope = proposal(&session_id, index);
                envelope.sender = format!("agent-{}", index % AGENTS);
                RuntimeItem::Envelope {
                    envelope,
                    ordinal: first_ordinal + index as u64 + 1,
                }
            })
            .collect();
        let count = items.len();
        let batch_started = Instant::now();
        app.service
            .ingest(&run_id, &items, Vec::new())
            .await
            .expect("ingest");
        latencies.push(batch_started.elapsed().as_secs_f64() * 1000.0);
        sent += count;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = total as f64 / elapsed;
    let p = percentiles(latencies);
    println!(
        "{backend:8} ingest      {total} envelopes in {elapsed:.2} s = {rate:8.0} envelopes/s ({:.0}x NestJS's {NEST_ENVELOPES_PER_S}/s); batch of {batch} commit p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        rate / NEST_ENVELOPES_PER_S,
        p.p50,
        p.p99,
        p.max
    );
    stop(app).await;
}

/// Stops the app and drops its PostgreSQL database, if it had one.
async fn stop(app: App) {
    let url = app.database_url().to_owned();
    app.stop().await;
    if let Some(name) = url.strip_prefix("postgres://postgres@127.0.0.1:5432/")
        && let Ok(admin) = Database::connect(POSTGRES_ADMIN).await
    {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// Concurrent runs the end-to-end load is spread over. The reference runtime re-encodes a
/// session's whole mode state on every message, so thousands of messages in one session measure
/// the runtime, not the pipeline; real load is many sessions with modest transcripts.
const RUNS: usize = 40;

/// Real agents against the embedded runtime: flat out, then paced at `rate` per second.
async fn bench_end_to_end(backend: &str, dir: &tempfile::TempDir, paced_rate: Option<f64>) {
    let Some(url) = database(backend, dir).await else {
        return;
    };
    let app = start_app(url).await;
    let mut sessions = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        sessions.push(open_run(&app).await);
    }
    let runtime = app.service.runtime().clone();
    let total = match paced_rate {
        Some(rate) => (rate * 10.0) as usize,
        None => envelopes(),
    }
    .min(envelopes());

    // Persisted time of each message id, from the hubs (published right after commit).
    // With the event's `ts`: when the observer received the envelope from the runtime.
    type Stored = (Instant, macp_control_plane::time::Timestamp);
    let persisted: Arc<Mutex<HashMap<String, Stored>>> = Arc::default();
    let mut collectors = Vec::with_capacity(RUNS);
    for (run, (run_id, _)) in sessions.iter().enumerate() {
        let mut batches = app.service.subscribe(run_id);
        let persisted = persisted.clone();
        let expected = (0..total).filter(|index| index % RUNS == run).count();
        collectors.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < expected {
                match batches.recv().await {
                    Ok(batch) => {
                        let now = Instant::now();
                        let mut persisted = persisted.lock().expect("lock");
                        for event in &batch.events {
                            if event.event_type == "message.received"
                                && let Some(id) = event.data["messageId"].as_str()
                                && id.starts_with("bench-")
                            {
                                persisted.insert(id.to_owned(), (now, event.ts));
                                seen += 1;
                            }
                        }
                    }
                    Err(macp_control_plane::events::hub::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }));
    }

    type Accepted = (Instant, Instant, macp_control_plane::time::Timestamp);
    let accepted: Arc<Mutex<HashMap<String, Accepted>>> = Arc::default();
    let started = Instant::now();
    let senders: Vec<_> = (0..AGENTS)
        .map(|agent| {
            let runtime = runtime.clone();
            let sessions: Vec<String> = sessions
                .iter()
                .map(|(_, session)| session.clone())
                .collect();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let sender = format!("agent-{agent}");
                let mut index = agent;
                while index < total {
                    if let Some(rate) = paced_rate {
                        let due = started + Duration::from_secs_f64(index as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let sent_at = Instant::now();
                    runtime
                        .send(proposal(&sessions[index % RUNS], index), &sender)
                        .await
                        .expect("runtime accepts");
                    accepted.lock().expect("lock").insert(
                        format!("bench-{index}"),
                        (sent_at, Instant::now(), macp_control_plane::time::now()),
                    );
                    index += AGENTS;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    let sent_elapsed = started.elapsed().as_secs_f64();
    for collector in collectors {
        tokio::time::timeout(Duration::from_secs(120), collector)
            .await
            .expect("all envelopes persisted")
            .expect("collector");
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The guards end here, before anything is awaited.
    let (accept, send, observed) = {
        let persisted = persisted.lock().expect("lock");
        let accepted = accepted.lock().expect("lock");
        let mut accept_to_stored = Vec::with_capacity(total);
        let mut send_to_stored = Vec::with_capacity(total);
        let mut accept_to_observed = Vec::with_capacity(total);
        for (id, (sent_at, acked_at, acked_wall)) in accepted.iter() {
            if let Some((stored_at, observed)) = persisted.get(id) {
                accept_to_stored
                    .push(stored_at.saturating_duration_since(*acked_at).as_secs_f64() * 1000.0);
                send_to_stored.push(stored_at.duration_since(*sent_at).as_secs_f64() * 1000.0);
                accept_to_observed.push(
                    (*observed - *acked_wall).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                );
            }
        }
        (
            percentiles(accept_to_stored),
            percentiles(send_to_stored),
            percentiles(accept_to_observed),
        )
    };
    // What each append rewrites besides its events: the run's whole projection.
    let mut projection_bytes = 0;
    for (run_id, _) in &sessions {
        let state = app.service.state(run_id).await.expect("state");
        projection_bytes += serde_json::to_string(&state)
            .map(|json| json.len())
            .unwrap_or(0);
    }
    let label = match paced_rate {
        Some(rate) => format!("paced {rate:.0}/s"),
        None => "flat out".to_owned(),
    };
    println!(
        "{backend:8} end-to-end  {label:14} {total} envelopes over {RUNS} runs: sent in {sent_elapsed:.2} s, all persisted after {elapsed:.2} s = {:8.0} envelopes/s; accept→stored p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms; send→stored p50 {:.2} ms p99 {:.2} ms; of which accept→observer received p50 {:.2} ms p99 {:.2} ms; projections {:.1} KB each at the end",
        total as f64 / elapsed,
        accept.p50,
        accept.p90,
        accept.p99,
        accept.max,
        send.p50,
        send.p99,
        observed.p50,
        observed.p99,
        projection_bytes as f64 / 1024.0 / RUNS as f64,
    );
    stop(app).await;
}

/// The `serve` binary: start → /readyz 200, and resident memory once idle.
async fn bench_binary(dir: &tempfile::TempDir, embedded: bool) {
    let runtime = if embedded {
        None
    } else {
        Some(
            macp_control_plane::runtime::embedded::EmbeddedRuntime::start(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                None,
            )
            .await
            .expect("runtime"),
        )
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"));
    command
        .arg("serve")
        .env("PORT", port.to_string())
        .env("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0")
        .env("LOG_LEVEL", "warn")
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join(format!("{port}.db")).display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match &runtime {
        Some(runtime) => command.env("RUNTIME_ADDRESS", runtime.address().to_string()),
        None => command.env_remove("RUNTIME_ADDRESS"),
    };
    let started = Instant::now();
    let mut child = command.spawn().expect("serve starts");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ready = loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > Duration::from_secs(20) {
            break f64::NAN;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // Let allocations from start-up settle, then read resident memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let label = if embedded {
        "embedded runtime on "
    } else {
        "embedded runtime off"
    };
    println!(
        "serve    {label}: start → ready {:.0} ms ({:.0}x faster than NestJS's {NEST_READY_S} s); idle RSS {rss:.1} MB ({:.1}x less than NestJS's {NEST_IDLE_MB} MB)",
        ready * 1000.0,
        NEST_READY_S / ready,
        NEST_IDLE_MB / rss
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        println!(
            "macp-control-plane pipeline benchmark ({} envelopes, {} agents, {} cores)",
            envelopes(),
            AGENTS,
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        );
        let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        for backend in backends.split(',').map(str::trim) {
            bench_ingest(backend, &dir).await;
            bench_end_to_end(backend, &dir, None).await;
            bench_end_to_end(backend, &dir, Some(1000.0)).await;
        }
        bench_binary(&dir, false).await;
        bench_binary(&dir, true).await;
    });
}
