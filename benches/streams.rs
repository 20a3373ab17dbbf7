//! Live-stream benchmark (`cargo bench --bench streams`): persist → delivery latency with 1, 100,
//! 1,000 and 10,000 SSE subscribers on one run at 5 events/s, resident memory per idle
//! subscriber, and state-at-seq on a 100,000-event run. Prints numbers; asserts nothing.
//!
//! The service runs as its own process (the `serve` binary, SQLite), so its memory is measured
//! alone; the agents talk to a reference runtime in this process. Subscribers share HTTP/2
//! connections, 100 streams each, or with `BENCH_TRANSPORT=h1` each has its own HTTP/1.1
//! connection. Latency is an event's `ts` (when the observer received the envelope, just before
//! it is persisted) to the moment the chunk holding the frame reached a subscriber.
//! `BENCH_SUBSCRIBERS` overrides the list (comma separated), `BENCH_MESSAGES` the messages per
//! point (100).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use macp_control_plane::runtime::RuntimeClient;
use macp_control_plane::runtime::codec::encode_proto;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::runtime::embedded::EmbeddedRuntime;
use macp_runtime::pb::Envelope;
use serde_json::{Value, json};

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

/// Takes the complete SSE frames out of `buffer` and records (delivered − ts) in ms for each
/// measured message's `message.received` event.
fn take_frames(
    buffer: &mut Vec<u8>,
    delivered: chrono::DateTime<chrono::Utc>,
    latencies: &mut Vec<f64>,
) {
    let mut consumed = 0;
    while let Some(end) = buffer[consumed..]
        .windows(2)
        .position(|pair| pair == b"\n\n")
    {
        let frame = std::str::from_utf8(&buffer[consumed..consumed + end]).unwrap_or("");
        consumed += end + 2;
        // Only the measured messages: events backfilled on connect are not deliveries.
        if !frame.starts_with("event: canonical_event")
            || !frame.contains("\"message.received\"")
            || !frame.contains("\"messageType\":\"Proposal\"")
        {
            continue;
        }
        if let Some(ts) = event_ts(frame) {
            latencies.push((delivered - ts).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    buffer.drain(..consumed);
}

/// How subscribers connect (`BENCH_TRANSPORT`).
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    /// 100 streams per HTTP/2 connection (reqwest).
    Http2,
    /// One HTTP/1.1 connection per subscriber, read with a minimal client (what an
    /// `EventSource` per tab amounts to).
    Http1,
}

fn transport() -> Transport {
    match std::env::var("BENCH_TRANSPORT").as_deref() {
        Ok("h1") => Transport::Http1,
        _ => Transport::Http2,
    }
}

/// Opens `count` SSE subscribers; each returns (delivered − ts) in ms for every measured
/// message's `message.received` event, once it has seen them all.
async fn subscribe(
    server: &Server,
    run_id: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Vec<f64>>> {
    let path = format!("/runs/{run_id}/stream?includeSnapshot=false");
    match transport() {
        Transport::Http2 => subscribe_http2(&format!("{}{path}", server.base), count).await,
        Transport::Http1 => subscribe_http1(&server.base, &path, count).await,
    }
}

async fn subscribe_http2(url: &str, count: usize) -> Vec<tokio::task::JoinHandle<Vec<f64>>> {
    let clients: Vec<reqwest::Client> = (0..count.div_ceil(STREAMS_PER_CONNECTION))
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .expect("client")
        })
        .collect();
    let measured = measured_messages();
    // Each connection opens its streams in turn, the connections side by side.
    let opening: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(connection, client)| {
            let url = url.to_owned();
            let streams = STREAMS_PER_CONNECTION.min(count - connection * STREAMS_PER_CONNECTION);
            tokio::spawn(async move {
                let mut responses = Vec::with_capacity(streams);
                for _ in 0..streams {
                    responses.push(client.get(&url).send().await.expect("subscribe"));
                }
                responses
            })
        })
        .collect();
    let mut responses = Vec::with_capacity(count);
    for connection in opening {
        responses.extend(connection.await.expect("subscribers open"));
    }
    let mut tasks = Vec::with_capacity(count);
    for response in responses {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(measured);
            let mut body = response.bytes_stream();
            let mut buffer: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                let delivered = chrono::Utc::now();
                buffer.extend_from_slice(&chunk);
                take_frames(&mut buffer, delivered, &mut latencies);
                if latencies.len() >= measured {
                    break;
                }
            }
            latencies
        }));
    }
    tasks
}

/// An HTTP/1.1 SSE subscriber on its own connection, its response read and de-chunked by hand;
/// returns once the response headers are in.
async fn open_http1(address: &str, request: &[u8]) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    socket.write_all(request).await.expect("request");
    let mut received = Vec::with_capacity(4096);
    loop {
        if let Some(end) = received.windows(4).position(|quad| quad == b"\r\n\r\n") {
            assert!(received.starts_with(b"HTTP/1.1 200"), "subscribe refused");
            received.drain(..end + 4);
            return (socket, received);
        }
        let mut chunk = [0u8; 4096];
        let read = socket.read(&mut chunk).await.expect("response");
        assert!(read > 0, "connection closed before the response");
        received.extend_from_slice(&chunk[..read]);
    }
}

async fn subscribe_http1(
    base: &str,
    path: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Vec<f64>>> {
    use tokio::io::AsyncReadExt;
    let address = base.trim_start_matches("http://").to_owned();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {address}\r\naccept: text/event-stream\r\n\r\n")
            .into_bytes();
    let measured = measured_messages();
    // Connections open a few hundred at a time (the listen backlog is finite).
    let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(count);
    let mut opened = Vec::with_capacity(count);
    for _ in 0..count {
        let (address, request, opening) = (address.clone(), request.clone(), opening.clone());
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        opened.push(is_ready);
        tasks.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let (mut socket, mut received) = open_http1(&address, &request).await;
            drop(permit);
            let _ = ready.send(());
            let mut latencies = Vec::with_capacity(measured);
            let mut body: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            let mut delivered = chrono::Utc::now();
            loop {
                // Chunked transfer coding: "<hex size>\r\n<data>\r\n".
                let mut progressed = false;
                while let Some(line) = received.windows(2).position(|pair| pair == b"\r\n") {
                    let size = std::str::from_utf8(&received[..line])
                        .ok()
                        .and_then(|hex| usize::from_str_radix(hex.trim(), 16).ok())
                        .expect("chunk size");
                    if received.len() < line + 2 + size + 2 {
                        break;
                    }
                    body.extend_from_slice(&received[line + 2..line + 2 + size]);
                    received.drain(..line + 2 + size + 2);
                    progressed = true;
                }
                if progressed {
                    take_frames(&mut body, delivered, &mut latencies);
                    if latencies.len() >= measured {
                        break;
                    }
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        delivered = chrono::Utc::now();
                        received.extend_from_slice(&chunk[..read]);
                    }
                }
            }
            latencies
        }));
    }
    for ready in opened {
        let _ = ready.await;
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
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{subscribers:6} subscribers: {} of {expected} deliveries; persist→delivery p50 {:.1} ms p99 {:.1} ms max {:.1} ms; RSS {:.1} MB idle with subscribers ({:.1} KB per subscriber)",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
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
            "macp-control-plane stream benchmark ({EVENTS_PER_SECOND} messages/s, {} messages per point, {})",
            measured_messages(),
            match transport() {
                Transport::Http2 => "HTTP/2, 100 streams per connection",
                Transport::Http1 => "HTTP/1.1, a connection per subscriber",
            }
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
