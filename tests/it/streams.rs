//! Live streams and replay: resume without loss or duplicates, fan-out, slow subscribers,
//! replay equality, grpc-web, and the SSE wire format.

use std::time::{Duration, Instant};

use futures::StreamExt;
use macp_control_plane::api::proto;
use macp_control_plane::projection::reducer;
use macp_control_plane::stack::Stack;
use serde_json::{Value, json};

use crate::golden::{Scrubber, assert_golden};
use crate::requests;
use crate::support::{self, Backend, TestApp};

#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads SSE frames from a response body.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

impl SseReader {
    pub async fn open(app: &TestApp, path: &str, last_event_id: Option<i64>) -> SseReader {
        Self::open_with(&app.http, &app.base, path, last_event_id).await
    }

    pub async fn open_with(
        http: &reqwest::Client,
        base: &str,
        path: &str,
        last_event_id: Option<i64>,
    ) -> SseReader {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        SseReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                for line in raw.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        frame.event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        frame.id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        frame
                            .data
                            .push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if frame.data.is_empty() && frame.id.is_none() {
                    continue; // a comment
                }
                return Some(frame);
            }
            match tokio::time::timeout(Duration::from_secs(30), self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(_) => return None,
                Err(_) => panic!("no SSE frame within 30 s"),
            }
        }
    }
}

/// A small deterministic generator for the randomized tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// Agents of the seed example talking in its session: `count` Proposals, `gap` apart.
async fn agents_talk(app: &TestApp, session_id: &str, count: usize, gap: Duration) {
    let mut agents = crate::discovery::Agents::connect(app).await;
    let senders = ["fraud-agent", "risk-agent", "growth-agent"];
    for index in 0..count {
        let payload = macp_control_plane::runtime::codec::encode_proto(
            "macp.modes.decision.v1.ProposalPayload",
            &json!({"proposal_id": format!("extra-{index}"), "option": "review", "rationale": "more data"}),
        )
        .expect("encodes");
        let sender = senders[index % senders.len()];
        let ack = agents
            .send(
                sender,
                "macp.mode.decision.v1",
                session_id,
                "Proposal",
                payload,
            )
            .await;
        assert!(ack.ok, "{ack:?}");
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
}

async fn live_seed_run(app: &TestApp) -> (String, String) {
    let run_id = app.start_run(&requests::seed_example()).await;
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

/// Subscribers disconnect at random points of a live run and resume by `afterSeq` or by
/// `Last-Event-ID`: each ends with exactly the run's event sequence.
async fn resumed_subscribers_see_every_event_once(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let (run_id, session_id) = live_seed_run(&app).await;
    let subscribers: Vec<_> = (0..12u64)
        .map(|seed| {
            let base = app.base.clone();
            let http = app.http.clone();
            let run_id = run_id.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed * 7919 + 17);
                let mut seen: Vec<i64> = Vec::new();
                let use_header = seed % 2 == 0;
                loop {
                    let last = seen.last().copied().unwrap_or(0);
                    let (path, header) = if use_header && last > 0 {
                        (
                            format!(
                                "/runs/{run_id}/stream?endAtTerminal=true&includeSnapshot=false"
                            ),
                            Some(last),
                        )
                    } else {
                        (
                            format!("/runs/{run_id}/stream?endAtTerminal=true&afterSeq={last}"),
                            None,
                        )
                    };
                    let mut reader = SseReader::open_with(&http, &base, &path, header).await;
                    let budget = 1 + rng.below(8);
                    let mut taken = 0;
                    let mut ended = false;
                    while taken < budget {
                        match reader.next().await {
                            Some(frame) if frame.event == "canonical_event" => {
                                let event: Value = serde_json::from_str(&frame.data).expect("json");
                                let seq = event["seq"].as_i64().expect("seq");
                                assert_eq!(frame.id.as_deref(), Some(seq.to_string().as_str()));
                                seen.push(seq);
                                taken += 1;
                            }
                            Some(_) => {}
                            None => {
                                ended = true;
                                break;
                            }
                        }
                    }
                    if ended {
                        return seen;
                    }
                    // Dropping the reader disconnects at this random point.
                }
            })
        })
        .collect();
    agents_talk(&app, &session_id, 30, Duration::from_millis(5)).await;
    let (status, _) = app
        .post(&format!("/runs/{run_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let events = app.events(&run_id).await;
    // Everything the agents got accepted is stored before the terminal event.
    assert_eq!(
        events.last().map(|event| event["type"].clone()),
        Some(json!("run.cancelled"))
    );
    let received = events
        .iter()
        .filter(|event| event["type"] == "message.received")
        .count();
    assert_eq!(
        received,
        1 + 1 + 30,
        "SessionStart, the kickoff and 30 agent messages"
    );
    let total = events.len() as i64;
    let expected: Vec<i64> = (1..=total).collect();
    for subscriber in subscribers {
        let seen = tokio::time::timeout(Duration::from_secs(180), subscriber)
            .await
            .expect("subscriber finishes")
            .expect("subscriber task");
        assert_eq!(
            seen, expected,
            "a resumed subscriber lost or repeated events"
        );
    }
    app.stop().await;
}
crate::on_both_backends!(resumed_subscribers_see_every_event_once);

async fn a_thousand_subscribers_and_a_slow_one_see_every_event_in_order(stack: Stack) {
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            hub_capacity: Some(4),
            stack,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (run_id, session_id) = live_seed_run(&app).await;
    // 850 over HTTP/1.1 connections of their own, 150 as streams of one HTTP/2 connection (the
    // server polls those in the connection's task).
    let multiplexed = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("HTTP/2 client");
    let path = format!("/runs/{run_id}/stream?endAtTerminal=true&includeSnapshot=false");
    let mut readers = Vec::with_capacity(1000);
    for index in 0..1000 {
        let http = if index < 850 { &app.http } else { &multiplexed };
        readers.push(SseReader::open_with(http, &app.base, &path, None).await);
    }
    // The slow one: a hub buffer of 4 batches, and it pauses on every event.
    let slow = {
        let mut reader = SseReader::open(
            &app,
            &format!("/runs/{run_id}/stream?endAtTerminal=true"),
            None,
        )
        .await;
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            while let Some(frame) = reader.next().await {
                if frame.event == "canonical_event" {
                    seqs.push(frame.id.expect("id").parse::<i64>().expect("seq"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            seqs
        })
    };
    let collectors: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                while let Some(frame) = reader.next().await {
                    if frame.event == "canonical_event" {
                        seqs.push(frame.id.expect("id").parse::<i64>().expect("seq"));
                    }
                }
                seqs
            })
        })
        .collect();
    agents_talk(&app, &session_id, 40, Duration::ZERO).await;
    app.post(&format!("/runs/{run_id}/cancel"), &json!({}))
        .await;
    let total = app.events(&run_id).await.len() as i64;
    let expected: Vec<i64> = (1..=total).collect();
    for collector in collectors {
        assert_eq!(collector.await.expect("collector"), expected);
    }
    assert_eq!(slow.await.expect("slow subscriber"), expected);
    app.stop().await;
}
crate::on_both_stacks!(a_thousand_subscribers_and_a_slow_one_see_every_event_in_order);

/// Stopping the service ends the live streams it serves (HTTP/1.1, HTTP/2 and gRPC) after what
/// was published, so its graceful stop does not wait on them, and it stops listening.
async fn stopping_the_service_ends_open_streams(stack: Stack) {
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            stack,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (run_id, _) = live_seed_run(&app).await;
    let stored = app.events(&run_id).await.len();
    let path = format!("/runs/{run_id}/stream?includeSnapshot=false");
    let multiplexed = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("HTTP/2 client");
    let readers = [
        SseReader::open(&app, &path, None).await,
        SseReader::open_with(&multiplexed, &app.base, &path, None).await,
    ];
    let mut watch = app
        .grpc()
        .await
        .watch_run(macp_control_plane::api::proto::WatchRunRequest {
            run_id: run_id.clone(),
            include_snapshot: Some(false),
            ..Default::default()
        })
        .await
        .expect("WatchRun")
        .into_inner();
    let base = app.base.clone();
    app.stop().await;
    // The run may still have stored events after `stored` was read; each stream ends with all
    // of its events, in order, at least those.
    let complete =
        |seqs: &[i64]| seqs.len() >= stored && seqs.iter().copied().eq(1..=seqs.len() as i64);
    for mut reader in readers {
        let seqs = tokio::time::timeout(Duration::from_secs(30), async {
            let mut seqs = Vec::new();
            while let Some(frame) = reader.next().await {
                if frame.event == "canonical_event" {
                    seqs.push(frame.id.expect("id").parse::<i64>().expect("seq"));
                }
            }
            seqs
        })
        .await
        .expect("the SSE stream ends");
        assert!(complete(&seqs), "{seqs:?} after {stored} stored");
    }
    let seqs = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seqs = Vec::new();
        while let Ok(Some(message)) = watch.message().await {
            if let Some(macp_control_plane::api::proto::watch_run_response::Item::Event(event)) =
                message.item
            {
                seqs.push(i64::from(event.seq));
            }
        }
        seqs
    })
    .await
    .expect("WatchRun ends");
    assert!(complete(&seqs), "{seqs:?} after {stored} stored");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "the service no longer listens"
    );
}
crate::on_both_stacks!(stopping_the_service_ends_open_streams);

/// Replay state at every seq equals the projection folded live, and the instant replay stream
/// equals the stored events.
async fn replay_matches_the_live_run(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    let mut live = app.app.service.subscribe(&run_id);
    let mut live_states = Vec::new();
    let final_state = app.wait_terminal(&run_id).await;
    while let Ok(batch) = live.try_recv() {
        live_states.push((batch.state.timeline.latest_seq, (*batch.state).clone()));
    }
    let events = app.events(&run_id).await;
    let parsed: Vec<macp_control_plane::events::canonical::CanonicalEvent> =
        serde_json::from_value(Value::Array(events.clone())).expect("events parse");
    for seq in 0..=parsed.len() as i64 {
        let (status, state) = app
            .get(&format!("/runs/{run_id}/replay/state?seq={seq}"))
            .await;
        assert_eq!(status, 200);
        let folded = reducer::fold(&run_id, parsed.iter().take(seq as usize));
        assert_eq!(
            state,
            serde_json::to_value(&folded).expect("json"),
            "state at {seq}"
        );
    }
    for (seq, state) in live_states {
        let replayed = app
            .app
            .service
            .state_at(&run_id, Some(seq))
            .await
            .expect("state");
        assert_eq!(replayed, state, "live projection after {seq}");
    }
    let (_, latest) = app.get(&format!("/runs/{run_id}/replay/state")).await;
    assert_eq!(latest, serde_json::to_value(&final_state).expect("json"));

    let (status, descriptor) = app
        .post(
            &format!("/runs/{run_id}/replay"),
            &json!({"mode": "instant", "speed": 2, "fromSeq": 2, "toSeq": 9}),
        )
        .await;
    assert_eq!(status, 201, "{descriptor}");
    assert_eq!(
        descriptor["streamUrl"],
        format!("/runs/{run_id}/replay/stream?mode=instant&speed=2&fromSeq=2&toSeq=9")
    );
    let mut reader =
        SseReader::open(&app, descriptor["streamUrl"].as_str().expect("url"), None).await;
    let mut replayed = Vec::new();
    while let Some(frame) = reader.next().await {
        assert_eq!(frame.event, "canonical_event");
        replayed.push(serde_json::from_str::<Value>(&frame.data).expect("json"));
    }
    assert_eq!(replayed, events[1..9].to_vec());

    let mut reader = SseReader::open(
        &app,
        &format!("/runs/{run_id}/replay/stream?mode=instant"),
        None,
    )
    .await;
    let mut all = Vec::new();
    while let Some(frame) = reader.next().await {
        all.push(serde_json::from_str::<Value>(&frame.data).expect("json"));
    }
    assert_eq!(all, events);

    // Bad parameters are field errors, not silent defaults.
    let (status, body) = app
        .get(&format!("/runs/{run_id}/replay/state?seq=abc"))
        .await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (400, json!("VALIDATION_ERROR"))
    );
    let response = app
        .http
        .get(format!(
            "{}/runs/{run_id}/replay/stream?speed=fast&fromSeq=0",
            app.base
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    app.stop().await;
}
crate::on_both_backends!(replay_matches_the_live_run);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_replay_follows_the_original_spacing_scaled_by_speed() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let (run_id, session_id) = live_seed_run(&app).await;
    agents_talk(&app, &session_id, 8, Duration::from_millis(100)).await;
    app.post(&format!("/runs/{run_id}/cancel"), &json!({}))
        .await;
    let events = app.events(&run_id).await;
    let time = |event: &Value| {
        macp_control_plane::time::parse(event["ts"].as_str().expect("ts")).expect("time")
    };
    let span = (time(events.last().expect("last")) - time(&events[0]))
        .to_std()
        .expect("span");
    let started = Instant::now();
    let mut reader = SseReader::open(
        &app,
        &format!("/runs/{run_id}/replay/stream?mode=timed&speed=10"),
        None,
    )
    .await;
    let mut count = 0;
    while reader.next().await.is_some() {
        count += 1;
    }
    let took = started.elapsed();
    assert_eq!(count, events.len());
    // Loose: at least the scaled spacing (pauses never end early), well under the original.
    assert!(
        took >= span / 10 * 9 / 10,
        "replay took {took:?}, span {span:?}"
    );
    assert!(
        took < span / 2,
        "replay took {took:?} for a span of {span:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_run_and_grpc_web_over_http1() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&run_id).await;
    let total = app.events(&run_id).await.len();

    // Native gRPC.
    let mut grpc = app.grpc().await;
    let mut stream = grpc
        .watch_run(proto::WatchRunRequest {
            run_id: run_id.clone(),
            end_at_terminal: true,
            ..Default::default()
        })
        .await
        .expect("WatchRun")
        .into_inner();
    let mut seqs = Vec::new();
    let mut snapshots = 0;
    while let Some(item) = stream.next().await {
        match item.expect("item").item.expect("item") {
            proto::watch_run_response::Item::Event(event) => seqs.push(event.seq),
            proto::watch_run_response::Item::Snapshot(_) => snapshots += 1,
            proto::watch_run_response::Item::Heartbeat(_) => {}
        }
    }
    assert_eq!(seqs, (1..=total as u32).collect::<Vec<_>>());
    assert_eq!(snapshots, 1);

    // grpc-web over HTTP/1.1, by hand: a length-prefixed request, data frames then a trailer frame.
    let request = proto::WatchRunRequest {
        run_id: run_id.clone(),
        after_seq: Some(3),
        include_snapshot: Some(false),
        end_at_terminal: true,
        ..Default::default()
    };
    let message = prost::Message::encode_to_vec(&request);
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let response = app
        .http
        .post(format!(
            "{}/macp.control_plane.v1.ControlPlane/WatchRun",
            app.base
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "http://localhost:3000")
        .body(body)
        .send()
        .await
        .expect("grpc-web request");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let bytes = response.bytes().await.expect("body");
    let mut offset = 0;
    let mut web_seqs = Vec::new();
    let mut trailer = String::new();
    while offset + 5 <= bytes.len() {
        let flag = bytes[offset];
        let length =
            u32::from_be_bytes(bytes[offset + 1..offset + 5].try_into().expect("len")) as usize;
        let payload = &bytes[offset + 5..offset + 5 + length];
        if flag & 0x80 != 0 {
            trailer = String::from_utf8_lossy(payload).into_owned();
        } else {
            let item: proto::WatchRunResponse = prost::Message::decode(payload).expect("frame");
            if let Some(proto::watch_run_response::Item::Event(event)) = item.item {
                web_seqs.push(event.seq);
            }
        }
        offset += 5 + length;
    }
    assert_eq!(web_seqs, (4..=total as u32).collect::<Vec<_>>());
    assert!(trailer.contains("grpc-status:0"), "{trailer}");
    app.stop().await;
}

/// The exact SSE wire format, pinned: a run whose events all come from one writer (the runtime
/// is unreachable, so the run fails right after it starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_wire_format() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port");
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            runtime: macp_control_plane::app::RuntimeTarget::External {
                address: closed.to_string(),
                tls: false,
            },
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_terminal(&run_id).await;
    let response = app
        .http
        .get(format!(
            "{}/runs/{run_id}/stream?endAtTerminal=true",
            app.base
        ))
        .send()
        .await
        .expect("stream");
    let text = response.text().await.expect("body");
    let mut scrubber = Scrubber::new();
    scrubber.scrub(&Value::String(run_id.clone()));
    let scrubbed: Vec<Value> = text
        .lines()
        .map(|line| match line.split_once(':') {
            Some(("data", data)) => {
                let json: Value = serde_json::from_str(data.trim()).expect("data is JSON");
                Value::String(format!("data: {}", scrubber.scrub(&json)))
            }
            _ => Value::String(line.to_owned()),
        })
        .collect();
    assert_golden("sse_failed_run.json", &Value::Array(scrubbed));
    app.stop().await;
}
