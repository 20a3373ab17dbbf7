//! Live-stream benchmark (`cargo bench --bench streams`): persist → delivery latency with 1, 100,
//! 1,000 and 10,000 SSE subscribers on one run at 5 events/s, resident memory per idle
//! subscriber, and state-at-seq on a 100,000-event run. Prints numbers; asserts nothing.
//!
//! The service runs as its own process (the `serve` binary, SQLite), so its memory is measured
//! alone; the agents talk to a reference runtime in this process. Subscribers share HTTP/2
//! connections, 100 streams each, read by a light client (`sse_client`), one task per
//! connection. Latency is an event's `ts` (when the observer received the envelope, just before
//! it is persisted) to the moment the read that brought its frame returned. CPU per delivery
//! is the server's and this process's CPU time over the measured messages, divided by the
//! deliveries; the CPU time the host took from the machine meanwhile is printed too (a run that
//! lost much of it is not one to quote).
//! `BENCH_SUBSCRIBERS` overrides the list (comma separated), `BENCH_MESSAGES` the messages per
//! point (100).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macp_control_plane::runtime::RuntimeClient;
use macp_control_plane::runtime::codec::encode_proto;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::runtime::embedded::EmbeddedRuntime;
use macp_runtime::pb::Envelope;
use serde_json::{Value, json};

mod sse_client;

/// Streams per HTTP/2 connection (below the server's concurrent-stream limit).
const STREAMS_PER_CONNECTION: usize = 100;
const EVENTS_PER_SECOND: u64 = 5;
/// Messages measured per point (`BENCH_MESSAGES`); with 20, a p99 is one message's worst case.
fn measured_messages() -> usize {
    std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn rss_kb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// CPU time (user + system) a process has used so far, in ms.
fn cpu_ms(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/<pid>/stat, after the parenthesised command name.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|field| field.parse().ok())
                .collect();
            (fields.len() == 2).then(|| fields[0] + fields[1])
        });
    // Linux reports in USER_HZ, 100 on every platform it runs on here.
    ticks.map_or(f64::NAN, |ticks| ticks as f64 * 10.0)
}

/// CPU time the host took from this virtual machine so far (`steal` in /proc/stat), in ms:
/// a run that lost much of it measured the neighbours as well.
fn stolen_ms() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
            cpu.split_whitespace().nth(7)?.parse::<u64>().ok()
        })
        .map_or(f64::NAN, |ticks| ticks as f64 * 10.0)
}

struct Server {
    child: std::process::Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(runtime: SocketAddr, dir: &tempfile::TempDir) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"))
        .arg("serve")
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .env("RUNTIME_ADDRESS", runtime.to_string())
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join(format!("{port}.db")).display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|response| !response.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve never got ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server { child, base }
}

/// A live decision run (no kickoff) and its runtime session id.
async fn open_run(server: &Server) -> (String, String) {
    let client = reqwest::Client::new();
    let request = json!({
        "runtime": {"kind": "rust"},
        "session": {
            "modeName": "macp.mode.decision.v1", "modeVersion": "1.0.0",
            "configurationVersion": "config.default", "ttlMs": 3_600_000,
            "initiatorParticipantId": "coordinator",
            "participants": [{"id": "agent-a"}, {"id": "agent-b"}],
        },
    });
    let started: Value = client
        .post(format!("{}/runs", server.base))
        .json(&request)
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let run_id = started["runId"].as_str().expect("runId").to_owned();
    loop {
        let run: Value = client
            .get(format!("{}/runs/{run_id}", server.base))
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("json");
        if run["status"] == "running" {
            return (
                run_id,
                run["runtimeSessionId"]
                    .as_str()
                    .expect("session")
                    .to_owned(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn proposal(session_id: &str, index: usize) -> Envelope {
    Envelope {
        macp_version: "1.0".into(),
        mode: "macp.mode.decision.v1".into(),
        message_type: "Proposal".into(),
        message_id: uuid::Uuid::new_v4().to_string(),
        session_id: session_id.into(),
        sender: String::new(),
        timestamp_unix_ms: 0,
        payload: encode_proto(
            "macp.modes.decision.v1.ProposalPayload",
            &json!({"proposal_id": format!("p{index}"), "option": "approve", "rationale": "stream benchmark"}),
        )
        .expect("encodes"),
    }
}

/// The top-level `ts` of a canonical event's JSON: it precedes `data`, so the first `"ts":"` is
/// it. Cheaper than parsing the whole event, which would make the client, sharing the machine's
/// two cores with the server, a bigger part of what is measured.
fn event_ts(data: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let start = data.find("\"ts\":\"")? + 6;
    let end = start + data[start..].find('"')?;
    macp_control_plane::time::parse(&data[start..end])
}

/// The `ts` of a measured message's event: the `message.received` of a Proposal (events
/// backfilled on connect are not deliveries).
fn measured_ts(event: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if !event.contains("\"message.received\"") || !event.contains("\"messageType\":\"Proposal\"") {
        return None;
    }
    event_ts(event)
}

/// Opens `count` SSE subscribers, 100 streams per HTTP/2 connection (the connections side by
/// side, each opening its streams one after the other), and returns once every response has
/// started. Each connection's task returns (delivered − ts) in ms for every measured message,
/// once each of its streams has seen them all.
async fn subscribe(
    server: &Server,
    run_id: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Vec<sse_client::Delivery>>> {
    let address = server.base.trim_start_matches("http://").to_owned();
    let path = format!("/runs/{run_id}/stream?includeSnapshot=false");
    let measured = measured_messages();
    let opening: Vec<_> = (0..count.div_ceil(STREAMS_PER_CONNECTION))
        .map(|connection| {
            let streams = STREAMS_PER_CONNECTION.min(count - connection * STREAMS_PER_CONNECTION);
            let (address, path) = (address.clone(), path.clone());
            tokio::spawn(async move {
                sse_client::subscribe(&address, &path, streams, measured_ts).await
            })
        })
        .collect();
    let mut tasks = Vec::with_capacity(opening.len());
    for connection in opening {
        let subscribers = connection.await.expect("subscribers open");
        tasks.push(tokio::spawn(sse_client::read(subscribers, measured)));
    }
    tasks
}

async fn fan_out(runtime: &EmbeddedRuntime, dir: &tempfile::TempDir, subscribers: usize) {
    let server = serve(runtime.address(), dir).await;
    let (run_id, session_id) = open_run(&server).await;
    let baseline_kb = rss_kb(server.child.id());
    let tasks = subscribe(&server, &run_id, subscribers).await;
    // Let every subscriber finish its backfill and settle before measuring memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kb = rss_kb(server.child.id());
    let agents = RuntimeClient::connect_lazy(
        &runtime.address().to_string(),
        Credentials::Dev {
            observer: "bench".into(),
        },
        Duration::from_secs(10),
        false,
    )
    .expect("client");
    let measured = measured_messages();
    let (server_cpu, bench_cpu) = (cpu_ms(server.child.id()), cpu_ms(std::process::id()));
    let stolen = stolen_ms();
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 / EVENTS_PER_SECOND));
    for index in 0..measured {
        ticker.tick().await;
        let sender = if index % 2 == 0 { "agent-a" } else { "agent-b" };
        agents
            .send(proposal(&session_id, index), sender)
            .await
            .expect("runtime accepts");
    }
    let expected = subscribers * measured;
    let mut samples = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(latencies)) => samples.extend(latencies),
            _ => continue,
        }
    }
    // Per delivery, over the measured messages (the bench process includes the agents' sends).
    let per_delivery = |ms: f64| ms * 1000.0 / expected as f64;
    let server_us = per_delivery(cpu_ms(server.child.id()) - server_cpu);
    let bench_us = per_delivery(cpu_ms(std::process::id()) - bench_cpu);
    let stolen = stolen_ms() - stolen;
    // Each message's fan-out: the latency by which 99% of its deliveries were made.
    let mut by_message: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    for (seq, latency) in &samples {
        by_message.entry(*seq).or_default().push(*latency);
    }
    let mut fan_outs: Vec<f64> = by_message
        .into_values()
        .map(|mut latencies| {
            latencies.sort_by(|a, b| a.total_cmp(b));
            percentile(&latencies, 0.99)
        })
        .collect();
    fan_outs.sort_by(|a, b| a.total_cmp(b));
    let mut samples: Vec<f64> = samples.into_iter().map(|(_, latency)| latency).collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{subscribers:6} subscribers: {} of {expected} deliveries; persist→delivery p50 {:.1} ms p99 {:.1} ms max {:.1} ms; per message, p99 of its deliveries: median {:.1} ms, worst {:.1} ms; RSS {:.1} MB idle with subscribers ({:.1} KB per subscriber); CPU per delivery {server_us:.2} µs server, {bench_us:.2} µs clients; {stolen:.0} ms stolen by the host",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
        percentile(&fan_outs, 0.5),
        percentile(&fan_outs, 1.0),
        idle_kb / 1024.0,
        (idle_kb - baseline_kb) / subscribers as f64,
    );
}

/// State at random seqs of a 100,000-event run (in process: the write path fills it fast).
async fn state_at_seq(dir: &tempfile::TempDir) {
    use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
    use macp_control_plane::events::normalizer::RuntimeItem;
    use macp_control_plane::runs::writer::Change;
    let app = App::start(AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("long.db").display()),
        runtime: RuntimeTarget::Embedded {
            static_tokens: None,
        },
        credentials: Credentials::Dev {
            observer: "bench".into(),
        },
        request_timeout: Duration::from_secs(10),
        run_options: Default::default(),
        registry: macp_control_plane::registry::RegistryOptions::new("packs"),
        cors_origins: Vec::new(),
        otlp_endpoint: None,
    })
    .await
    .expect("app");
    let request = json!({
        "runtime": {"kind": "rust"},
        "session": {
            "modeName": "macp.mode.decision.v1", "modeVersion": "1.0.0",
            "configurationVersion": "config.default", "ttlMs": 3_600_000,
            "initiatorParticipantId": "coordinator", "participants": [{"id": "agent-a"}, {"id": "agent-b"}],
        },
    });
    let run_id = app.service.start(request).await.expect("start").run_id;
    let mut batches = app.service.hub().subscribe(&run_id);
    while app.service.state(&run_id).await.expect("state").run.status != "running" {
        let _ = tokio::time::timeout(Duration::from_secs(5), batches.recv()).await;
    }
    let filled = Instant::now();
    let writers = app.service.writers();
    let mut guard = writers.lock(&run_id).await.expect("writer");
    let writer = guard.as_mut().expect("run");
    let mut ordinal = writer.last_ordinal() as u64;
    let mut index = 0;
    while writer.state().timeline.latest_seq < 100_000 {
        let items: Vec<RuntimeItem> = (0..200)
            .map(|_| {
                index += 1;
                ordinal += 1;
                let mut envelope = proposal("s", index);
                envelope.sender = if index % 2 == 0 { "agent-a" } else { "agent-b" }.into();
                RuntimeItem::Envelope { envelope, ordinal }
            })
            .collect();
        writers
            .ingest(
                writer,
                &items,
                macp_control_plane::time::now(),
                Vec::new(),
                Change::default(),
            )
            .await
            .expect("ingest");
    }
    let last = writer.state().timeline.latest_seq;
    drop(guard);
    let fill_seconds = filled.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let seq = (seed % last as u64) as i64 + 1;
        let started = Instant::now();
        let state = app
            .service
            .state_at(&run_id, Some(seq))
            .await
            .expect("state");
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(state.timeline.latest_seq, seq);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "state-at-seq on a {last}-event run (filled in {fill_seconds:.1} s): p50 {:.2} ms p99 {:.2} ms max {:.2} ms over 200 random seqs",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    );
    app.stop().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let counts: Vec<usize> = std::env::var("BENCH_SUBSCRIBERS")
            .ok()
            .map(|list| list.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 100, 1000, 10_000]);
        println!(
            "macp-control-plane stream benchmark ({EVENTS_PER_SECOND} messages/s, {} messages per point, {STREAMS_PER_CONNECTION} streams per HTTP/2 connection)",
            measured_messages(),
        );
        let embedded = EmbeddedRuntime::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
            .await
            .expect("runtime");
        for count in counts {
            fan_out(&embedded, &dir, count).await;
        }
        state_at_seq(&dir).await;
    });
}
