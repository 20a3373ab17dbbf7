//! Live-stream benchmark (`cargo bench --bench streams`): the transport A/B. Each workload runs
//! on both stacks (`--stack custom`: connection turns + ring hub; `--stack library`: hyper-util's
//! stock executor + tokio broadcast), one after the other in this one invocation, and the table
//! at the end puts them side by side with ratios (library ÷ custom: above 1, custom is better).
//! Workloads: persist → delivery latency with 1, 1,000 and 10,000 SSE subscribers on one run at
//! 5 events/s; 1,000 live runs with 5 subscribers each, every run sent 1 message/s; and the
//! latency of unary `GET /runs/{id}` and gRPC `GetRun` calls made during the 10,000-subscriber
//! fan-out. Then state-at-seq on a 100,000-event run. Prints numbers; asserts nothing.
//!
//! The service runs as its own process (the `serve` binary, SQLite), so its memory is measured
//! alone; the agents talk to a reference runtime in this process. Subscribers share HTTP/2
//! connections, 100 streams each, read by a light client (`sse_client`), one task per
//! connection. Latency is an event's `ts` (when the observer received the envelope, just before
//! it is persisted) to the moment the read that brought its frame returned. CPU per delivery
//! is the server's and this process's CPU time over the measured messages, divided by the
//! deliveries; the CPU time the host took from the machine meanwhile is printed too (a run that
//! lost much of it is not one to quote).
//! `BENCH_SUBSCRIBERS` overrides the one-run list (comma separated), `BENCH_MESSAGES` the
//! messages per one-run point (100), `BENCH_RUNS` the live runs of the many-runs point (1,000)
//! and `BENCH_ROUNDS` its messages per run (10); `BENCH_STACKS` picks stacks (`custom,library`).
//! Each workload runs `BENCH_REPEATS` times per stack (2), the stacks' order reversed every other
//! time (custom, library, library, custom), and the table merges each stack's runs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macp_control_plane::runtime::RuntimeClient;
use macp_control_plane::runtime::codec::encode_proto;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::runtime::embedded::EmbeddedRuntime;
use macp_control_plane::stack::Stack;
use macp_runtime::pb::Envelope;
use serde_json::{Value, json};

mod sse_client;

/// Streams per HTTP/2 connection (below the server's concurrent-stream limit).
const STREAMS_PER_CONNECTION: usize = 100;
const EVENTS_PER_SECOND: u64 = 5;
/// Messages measured per point (`BENCH_MESSAGES`); with 20, a p99 is one message's worst case.
fn measured_messages() -> usize {
    env_number("BENCH_MESSAGES", 100)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
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

fn stack_name(stack: Stack) -> &'static str {
    match stack {
        Stack::Custom => "custom",
        Stack::Library => "library",
    }
}

async fn serve(runtime: SocketAddr, dir: &tempfile::TempDir, stack: Stack) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"))
        .arg("serve")
        .env("STACK", stack_name(stack))
        .env("MAX_CONNECTIONS", "100000")
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

/// Opens an SSE subscriber per path, 100 streams per HTTP/2 connection (the connections side
/// by side, each opening its streams one after the other), and returns once every response has
/// started. Each connection's task returns (delivered − ts) in ms for every measured message,
/// once each of its streams has seen `measured` of them.
async fn subscribe(
    server: &Server,
    paths: Vec<String>,
    measured: usize,
) -> Vec<tokio::task::JoinHandle<Vec<sse_client::Delivery>>> {
    let address = server.base.trim_start_matches("http://").to_owned();
    let opening: Vec<_> = paths
        .chunks(STREAMS_PER_CONNECTION)
        .map(|paths| {
            let (address, paths) = (address.clone(), paths.to_vec());
            tokio::spawn(async move { sse_client::subscribe(&address, &paths, measured_ts).await })
        })
        .collect();
    let mut tasks = Vec::with_capacity(opening.len());
    for connection in opening {
        let subscribers = connection.await.expect("subscribers open");
        tasks.push(tokio::spawn(sse_client::read(subscribers, measured)));
    }
    tasks
}

fn stream_path(run_id: &str) -> String {
    format!("/runs/{run_id}/stream?includeSnapshot=false")
}

fn agents(runtime: &EmbeddedRuntime) -> RuntimeClient {
    RuntimeClient::connect_lazy(
        &runtime.address().to_string(),
        Credentials::Dev {
            observer: "bench".into(),
        },
        Duration::from_secs(10),
        false,
    )
    .expect("client")
}

/// What one workload on one stack measured.
struct Point {
    /// (message, latency ms) of every delivery.
    samples: Vec<sse_client::Delivery>,
    expected: usize,
    /// Resident memory of the server with the subscribers connected and idle, and before.
    idle_kb: f64,
    baseline_kb: f64,
    subscribers: usize,
    server_us: f64,
    bench_us: f64,
    stolen_ms: f64,
    /// Runs merged into this one.
    runs: usize,
}

impl Point {
    /// This point and `other` as one: every delivery, and the mean of the rest.
    fn merge(&mut self, other: Point) {
        let (n, total) = (self.runs as f64, (self.runs + other.runs) as f64);
        let mean = |mine: f64, theirs: f64| (mine * n + theirs * other.runs as f64) / total;
        self.samples.extend(other.samples);
        self.expected += other.expected;
        self.idle_kb = mean(self.idle_kb, other.idle_kb);
        self.baseline_kb = mean(self.baseline_kb, other.baseline_kb);
        self.server_us = mean(self.server_us, other.server_us);
        self.bench_us = mean(self.bench_us, other.bench_us);
        self.stolen_ms += other.stolen_ms;
        self.runs += other.runs;
    }

    fn latencies(&self) -> Vec<f64> {
        let mut latencies: Vec<f64> = self.samples.iter().map(|(_, latency)| *latency).collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        latencies
    }

    /// The p99 of the deliveries, or infinity when some never came: a stack that loses or
    /// stalls deliveries is not the faster one.
    fn p99(&self) -> f64 {
        if self.samples.len() < self.expected {
            return f64::INFINITY;
        }
        percentile(&self.latencies(), 0.99)
    }

    fn kb_per_subscriber(&self) -> f64 {
        (self.idle_kb - self.baseline_kb) / self.subscribers as f64
    }

    fn print(&self, label: &str) {
        let latencies = self.latencies();
        // Each message's fan-out: the latency by which 99% of its deliveries were made.
        let mut by_message: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for (seq, latency) in &self.samples {
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
        println!(
            "{label}: {} of {} deliveries; persist→delivery p50 {:.1} ms p99 {:.1} ms max {:.1} ms; per message, p99 of its deliveries: median {:.1} ms, worst {:.1} ms; RSS {:.1} MB idle with subscribers ({:.1} KB per subscriber); CPU per delivery {:.2} µs server, {:.2} µs clients; {:.0} ms stolen by the host",
            latencies.len(),
            self.expected,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            percentile(&fan_outs, 0.5),
            percentile(&fan_outs, 1.0),
            self.idle_kb / 1024.0,
            self.kb_per_subscriber(),
            self.server_us,
            self.bench_us,
            self.stolen_ms,
        );
    }
}

/// The server's and this process's CPU and the host's steal, from `start` to now, per delivery.
struct Meter {
    server_pid: u32,
    server_cpu: f64,
    bench_cpu: f64,
    stolen: f64,
}

impl Meter {
    fn start(server: &Server) -> Self {
        Meter {
            server_pid: server.child.id(),
            server_cpu: cpu_ms(server.child.id()),
            bench_cpu: cpu_ms(std::process::id()),
            stolen: stolen_ms(),
        }
    }

    /// (server µs, bench µs) per delivery, and ms stolen.
    fn per_delivery(&self, deliveries: usize) -> (f64, f64, f64) {
        let per = |ms: f64| ms * 1000.0 / deliveries as f64;
        (
            per(cpu_ms(self.server_pid) - self.server_cpu),
            per(cpu_ms(std::process::id()) - self.bench_cpu),
            stolen_ms() - self.stolen,
        )
    }
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Vec<sse_client::Delivery>>>,
    expected: usize,
) -> Vec<sse_client::Delivery> {
    let mut samples = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for task in tasks {
        if let Ok(Ok(latencies)) = tokio::time::timeout_at(deadline, task).await {
            samples.extend(latencies);
        }
    }
    samples
}

/// Unary calls made while a fan-out runs: `GET /runs/{id}` over HTTP/1.1 and gRPC `GetRun`
/// over HTTP/2, one of each every 20 ms, latencies in ms.
struct Unary {
    rest: Vec<f64>,
    grpc: Vec<f64>,
}

impl Unary {
    fn merge(&mut self, other: Unary) {
        self.rest.extend(other.rest);
        self.grpc.extend(other.grpc);
        self.rest.sort_by(|a, b| a.total_cmp(b));
        self.grpc.sort_by(|a, b| a.total_cmp(b));
    }
}

/// The stacks in the order of `repeat`: reversed every other time (ABBA), so that a machine
/// that drifts during the run favours neither.
fn order(stacks: &[Stack], repeat: usize) -> Vec<Stack> {
    let mut order = stacks.to_vec();
    if repeat % 2 == 1 {
        order.reverse();
    }
    order
}

/// Per stack, the merged measurement of a workload.
type Merged = Vec<(Stack, Point, Option<Unary>)>;

fn merge_into(merged: &mut Merged, stack: Stack, point: Point, unary: Option<Unary>) {
    match merged.iter_mut().find(|(kept, _, _)| *kept == stack) {
        Some((_, kept, kept_unary)) => {
            kept.merge(point);
            match (kept_unary.as_mut(), unary) {
                (Some(kept), Some(unary)) => kept.merge(unary),
                (None, unary) => *kept_unary = unary,
                (Some(_), None) => {}
            }
        }
        None => merged.push((stack, point, unary)),
    }
}

fn probe_unary(
    server: &Server,
    run_id: &str,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Unary> {
    use macp_control_plane::api::proto::GetRunRequest;
    use macp_control_plane::api::proto::control_plane_client::ControlPlaneClient;
    let (base, run_id) = (server.base.clone(), run_id.to_owned());
    tokio::spawn(async move {
        let rest_client = reqwest::Client::new();
        let channel = tonic::transport::Endpoint::from_shared(base.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("gRPC connects");
        let mut grpc = ControlPlaneClient::new(channel);
        let mut unary = Unary {
            rest: Vec::new(),
            grpc: Vec::new(),
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        while !stop.is_cancelled() {
            ticker.tick().await;
            let started = Instant::now();
            let response = rest_client
                .get(format!("{base}/runs/{run_id}"))
                .send()
                .await
                .expect("GET /runs/{id}");
            response.bytes().await.expect("body");
            unary.rest.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            grpc.get_run(GetRunRequest {
                run_id: run_id.clone(),
            })
            .await
            .expect("GetRun");
            unary.grpc.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        unary.rest.sort_by(|a, b| a.total_cmp(b));
        unary.grpc.sort_by(|a, b| a.total_cmp(b));
        unary
    })
}

/// `subscribers` SSE clients of one run, sent `BENCH_MESSAGES` messages at 5/s; with `probe`,
/// unary calls run meanwhile.
async fn fan_out(
    runtime: &EmbeddedRuntime,
    dir: &tempfile::TempDir,
    stack: Stack,
    subscribers: usize,
    probe: bool,
) -> (Point, Option<Unary>) {
    let server = serve(runtime.address(), dir, stack).await;
    let (run_id, session_id) = open_run(&server).await;
    let baseline_kb = rss_kb(server.child.id());
    let measured = measured_messages();
    let tasks = subscribe(&server, vec![stream_path(&run_id); subscribers], measured).await;
    // Let every subscriber finish its backfill and settle before measuring memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kb = rss_kb(server.child.id());
    let agents = agents(runtime);
    let stop = tokio_util::sync::CancellationToken::new();
    let unary = probe.then(|| probe_unary(&server, &run_id, stop.clone()));
    let meter = Meter::start(&server);
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
    let samples = collect(tasks, expected).await;
    stop.cancel();
    let unary = match unary {
        Some(task) => Some(task.await.expect("probe")),
        None => None,
    };
    let (server_us, bench_us, stolen_ms) = meter.per_delivery(expected);
    let point = Point {
        samples,
        expected,
        idle_kb,
        baseline_kb,
        subscribers,
        server_us,
        bench_us,
        stolen_ms,
        runs: 1,
    };
    (point, unary)
}

/// `runs` live runs with `per_run` SSE subscribers each; every run is sent one message a
/// second (the sends spread over the second), `BENCH_ROUNDS` times.
async fn many_runs(
    runtime: &EmbeddedRuntime,
    dir: &tempfile::TempDir,
    stack: Stack,
    runs: usize,
    per_run: usize,
) -> Point {
    use futures::StreamExt;
    let server = serve(runtime.address(), dir, stack).await;
    let opened: Vec<(String, String)> = futures::stream::iter(0..runs)
        .map(|_| open_run(&server))
        .buffer_unordered(16)
        .collect()
        .await;
    let baseline_kb = rss_kb(server.child.id());
    let rounds = env_number("BENCH_ROUNDS", 10);
    // A run's subscribers sit on different connections, as different clients would.
    let paths: Vec<String> = (0..per_run)
        .flat_map(|_| opened.iter().map(|(run_id, _)| stream_path(run_id)))
        .collect();
    let tasks = subscribe(&server, paths, rounds).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kb = rss_kb(server.child.id());
    let agents = agents(runtime);
    let meter = Meter::start(&server);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / runs as u32);
    for round in 0..rounds {
        for (_, session_id) in &opened {
            ticker.tick().await;
            let sender = if round % 2 == 0 { "agent-a" } else { "agent-b" };
            agents
                .send(proposal(session_id, round), sender)
                .await
                .expect("runtime accepts");
        }
    }
    let expected = runs * per_run * rounds;
    let samples = collect(tasks, expected).await;
    let (server_us, bench_us, stolen_ms) = meter.per_delivery(expected);
    Point {
        samples,
        expected,
        idle_kb,
        baseline_kb,
        subscribers: runs * per_run,
        server_us,
        bench_us,
        stolen_ms,
        runs: 1,
    }
}

/// State at random seqs of a 100,000-event run (in process: the write path fills it fast).
async fn state_at_seq(dir: &tempfile::TempDir) {
    use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
    use macp_control_plane::events::normalizer::RuntimeItem;
    let app = App::start(AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("long.db").display()).into(),
        store: Default::default(),
        runtime: RuntimeTarget::Embedded(Default::default()),
        credentials: Credentials::Dev {
            observer: "bench".into(),
        },
        request_timeout: Duration::from_secs(10),
        run_options: Default::default(),
        registry: macp_control_plane::registry::RegistryOptions::new("packs"),
        cors_origins: Vec::new(),
        edge: Default::default(),
        otlp_endpoint: None,
        limits: Default::default(),
        auth: Default::default(),
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
    let mut batches = app.service.subscribe(&run_id);
    while app.service.state(&run_id).await.expect("state").run.status != "running" {
        let _ = tokio::time::timeout(Duration::from_secs(5), batches.recv()).await;
    }
    let filled = Instant::now();
    let session = app.service.session(&run_id).await.expect("session");
    let mut ordinal = session.expect("a bound session").last_ordinal as u64;
    let mut index = 0;
    let mut last = 0;
    while last < 100_000 {
        let items: Vec<RuntimeItem> = (0..200)
            .map(|_| {
                index += 1;
                ordinal += 1;
                let mut envelope = proposal("s", index);
                envelope.sender = if index % 2 == 0 { "agent-a" } else { "agent-b" }.into();
                RuntimeItem::Envelope { envelope, ordinal }
            })
            .collect();
        let appended = app
            .service
            .ingest(&run_id, &items, Vec::new())
            .await
            .expect("ingest");
        last = appended.last().map_or(last, |event| event.seq);
    }
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

/// One row of the side-by-side table: a measure on both stacks (lower is better).
struct Row {
    workload: String,
    measure: &'static str,
    custom: f64,
    library: f64,
    /// Whether the keep/remove rule reads this row (latency p99s; memory and CPU are shown).
    decides: bool,
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
            .unwrap_or_else(|| vec![1, 1000, 10_000]);
        let stacks: Vec<Stack> = std::env::var("BENCH_STACKS")
            .ok()
            .map(|list| {
                list.split(',')
                    .filter_map(|name| match name.trim() {
                        "custom" => Some(Stack::Custom),
                        "library" => Some(Stack::Library),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_else(|| vec![Stack::Custom, Stack::Library]);
        let runs = env_number("BENCH_RUNS", 1000);
        println!(
            "macp-control-plane stream benchmark ({EVENTS_PER_SECOND} messages/s, {} messages per one-run point, {STREAMS_PER_CONNECTION} streams per HTTP/2 connection)",
            measured_messages(),
        );
        let embedded = EmbeddedRuntime::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
            .await
            .expect("runtime");
        let mut rows: Vec<Row> = Vec::new();
        let mut record = |workload: String, measure, decides, stack: Stack, value: f64| {
            let index = match rows
                .iter()
                .position(|row| row.workload == workload && row.measure == measure)
            {
                Some(index) => index,
                None => {
                    rows.push(Row {
                        workload,
                        measure,
                        custom: f64::NAN,
                        library: f64::NAN,
                        decides,
                    });
                    rows.len() - 1
                }
            };
            match stack {
                Stack::Custom => rows[index].custom = value,
                Stack::Library => rows[index].library = value,
            }
        };
        let largest = counts.iter().copied().max().unwrap_or(0);
        let repeats = env_number("BENCH_REPEATS", 2).max(1);
        for &count in &counts {
            let mut merged = Merged::new();
            for repeat in 0..repeats {
                for stack in order(&stacks, repeat) {
                    let probe = count == largest;
                    let (point, unary) = fan_out(&embedded, &dir, stack, count, probe).await;
                    point.print(&format!("{:7} {count:6} subscribers", stack_name(stack)));
                    if let Some(unary) = &unary {
                        print_unary(stack, count, unary);
                    }
                    merge_into(&mut merged, stack, point, unary);
                }
            }
            for (stack, point, unary) in merged {
                let workload = format!("{count} subscribers, one run");
                record(workload.clone(), "delivery p99 ms", true, stack, point.p99());
                // With a handful of subscribers, per-delivery CPU and memory are the process's
                // fixed costs, not the stacks'.
                if count >= 100 {
                    record(workload.clone(), "server CPU µs/delivery", false, stack, point.server_us);
                    record(workload, "KB per subscriber", false, stack, point.kb_per_subscriber());
                }
                if let Some(unary) = unary {
                    let workload = format!("unary during {count}-subscriber fan-out");
                    record(workload.clone(), "GET /runs/{id} p99 ms", true, stack, percentile(&unary.rest, 0.99));
                    record(workload, "GetRun p99 ms", true, stack, percentile(&unary.grpc, 0.99));
                }
            }
        }
        if runs > 0 {
            let mut merged = Merged::new();
            for repeat in 0..repeats {
                for stack in order(&stacks, repeat) {
                    let point = many_runs(&embedded, &dir, stack, runs, 5).await;
                    point.print(&format!("{:7} {runs} runs × 5 subscribers", stack_name(stack)));
                    merge_into(&mut merged, stack, point, None);
                }
            }
            for (stack, point, _) in merged {
                let workload = format!("{runs} runs × 5 subscribers");
                record(workload.clone(), "delivery p99 ms", true, stack, point.p99());
                record(workload.clone(), "server CPU µs/delivery", false, stack, point.server_us);
                record(workload, "KB per subscriber", false, stack, point.kb_per_subscriber());
            }
        }
        print_comparison(&rows);
        state_at_seq(&dir).await;
    });
}

fn print_unary(stack: Stack, count: usize, unary: &Unary) {
    println!(
        "{:7} unary during the {count}-subscriber fan-out: GET /runs/{{id}} p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} calls); GetRun p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} calls)",
        stack_name(stack),
        percentile(&unary.rest, 0.5),
        percentile(&unary.rest, 0.99),
        percentile(&unary.rest, 1.0),
        unary.rest.len(),
        percentile(&unary.grpc, 0.5),
        percentile(&unary.grpc, 0.99),
        percentile(&unary.grpc, 1.0),
        unary.grpc.len(),
    );
}

/// The side-by-side table (each stack's runs merged), and what the keep/remove rule (ARCHITECTURE.md) reads from it: the
/// hand-written stack stays if it is 1.5× better on some latency and more than 10 % worse on none.
fn print_comparison(rows: &[Row]) {
    println!();
    println!(
        "{:<42} {:<24} {:>10} {:>10} {:>16}",
        "workload", "measure", "custom", "library", "library/custom"
    );
    for row in rows {
        println!(
            "{:<42} {:<24} {:>10.2} {:>10.2} {:>15.2}×",
            row.workload,
            row.measure,
            row.custom,
            row.library,
            row.library / row.custom
        );
    }
    let deciding: Vec<&Row> = rows
        .iter()
        .filter(|row| row.decides && row.custom.is_finite() && row.library.is_finite())
        .collect();
    if deciding.is_empty() {
        return;
    }
    let wins: Vec<String> = deciding
        .iter()
        .filter(|row| row.library / row.custom >= 1.5)
        .map(|row| format!("{} ({})", row.workload, row.measure))
        .collect();
    let losses: Vec<String> = deciding
        .iter()
        .filter(|row| row.custom / row.library > 1.1)
        .map(|row| format!("{} ({})", row.workload, row.measure))
        .collect();
    let keep = !wins.is_empty() && losses.is_empty();
    println!(
        "custom ≥ 1.5× better on: [{}]; custom > 10 % worse on: [{}] → {}",
        wins.join("; "),
        losses.join("; "),
        if keep {
            "keep the hand-written stack"
        } else {
            "return to the library stack"
        }
    );
}
