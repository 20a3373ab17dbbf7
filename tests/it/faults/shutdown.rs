//! SIGTERM under load: the service exits within its budget, and every live subscriber has
//! received every event the store holds for its run, in order, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use macp_control_plane::store::Store;
use serde_json::{Value, json};

use super::process::{Service, poll};
use super::summary::Tally;
use crate::discovery::Agents;
use crate::requests;
use crate::streams::SseReader;

const RUNS: usize = 4;
const SUBSCRIBERS_PER_RUN: usize = 25;

/// Proposals from the seed example's agents in `session_id` until the runtime stops taking
/// them; `sent` counts the accepted ones.
async fn talk(runtime: String, session_id: String, sent: Arc<AtomicUsize>) {
    let mut agents = Agents::connect_to(&runtime).await;
    let senders = ["fraud-agent", "risk-agent", "growth-agent"];
    for index in 0.. {
        let payload = macp_control_plane::runtime::codec::encode_proto(
            "macp.modes.decision.v1.ProposalPayload",
            &json!({"proposal_id": format!("extra-{index}"), "option": "review", "rationale": "more data"}),
        )
        .expect("encodes");
        match agents
            .try_send(
                senders[index % senders.len()],
                "macp.mode.decision.v1",
                &session_id,
                "Proposal",
                payload,
            )
            .await
        {
            Ok(ack) if ack.ok => sent.fetch_add(1, Ordering::Relaxed),
            _ => return,
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_live_subscribers_delivers_every_committed_event() {
    let mut tally = Tally::begin("shutdown subscribers");
    let dir = tempfile::tempdir().expect("dir");
    let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
    let service = Service::spawn(&[
        ("DATABASE_URL", database_url.clone()),
        ("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0".to_owned()),
    ])
    .await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, base) = (http.clone(), service.base.clone());
        async move {
            let response = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("request");
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (_, health) = get("/runtime/health".to_owned()).await;
    let runtime = health["embeddedAddress"]
        .as_str()
        .expect("the embedded runtime's address")
        .to_owned();

    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let response = http
            .post(format!("{}/runs", service.base))
            .json(&requests::seed_example())
            .send()
            .await
            .expect("start");
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.expect("json");
        let run_id = body["runId"].as_str().expect("runId").to_owned();
        let session_id = poll(Duration::from_secs(30), "the run is running", || {
            let path = format!("/runs/{run_id}");
            async move {
                let (_, run) = get(path).await;
                (run["status"] == "running")
                    .then(|| run["runtimeSessionId"].as_str().map(str::to_owned))
                    .flatten()
            }
        })
        .await;
        runs.push((run_id, session_id));
    }

    let mut subscribers = Vec::new();
    for (run_id, _) in &runs {
        for _ in 0..SUBSCRIBERS_PER_RUN {
            let path = format!("/runs/{run_id}/stream?includeSnapshot=false");
            let mut reader = SseReader::open_with(&http, &service.base, &path, None).await;
            subscribers.push((
                run_id.clone(),
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    while let Some(frame) = reader.next().await {
                        if frame.event == "canonical_event" {
                            seqs.push(frame.id.expect("id").parse::<i64>().expect("seq"));
                        }
                    }
                    seqs
                }),
            ));
        }
    }

    let sent = Arc::new(AtomicUsize::new(0));
    let talkers: Vec<_> = runs
        .iter()
        .map(|(_, session_id)| {
            tokio::spawn(talk(runtime.clone(), session_id.clone(), sent.clone()))
        })
        .collect();
    // Mid-conversation: messages are arriving while the signal lands.
    poll(Duration::from_secs(30), "agents talking", || {
        let sent = sent.load(Ordering::Relaxed);
        async move { (sent >= 10 * RUNS).then_some(()) }
    })
    .await;

    let (took, status) = service.terminate(false).await;
    tally.injected += 1;
    tally.runs += RUNS;
    println!(
        "shutdown: SIGTERM to exit {} ms with {} live SSE subscribers over {RUNS} running runs",
        took.as_millis(),
        RUNS * SUBSCRIBERS_PER_RUN
    );
    assert!(status.success(), "{status:?}");
    // The promise is 2 s; a loaded CI machine gets some slack, not a timing test.
    assert!(took < Duration::from_secs(5), "{took:?}");
    for talker in talkers {
        talker.await.expect("agents stopped");
    }

    let store = Store::connect(&database_url).await.expect("store");
    for (run_id, subscriber) in subscribers {
        let seqs = tokio::time::timeout(Duration::from_secs(30), subscriber)
            .await
            .expect("the stream ended with the process")
            .expect("subscriber");
        let stored: Vec<i64> = store
            .events_between(&run_id, 0, None, 1_000_000)
            .await
            .expect("events")
            .iter()
            .map(|event| event.seq)
            .collect();
        assert!(stored.len() > 3, "{stored:?}");
        tally.compare(&seqs, &stored);
        assert_eq!(
            seqs, stored,
            "run {run_id}: a subscriber missed or repeated a committed event"
        );
    }
}

/// A runtime that accepts connections and never answers: the service's calls to it hang.
async fn silent_runtime() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            held.push(socket);
        }
    });
    (address, accepted)
}

/// Work that does not stop (calls to a runtime that never answers) holds the stop for its
/// budget at most; a second SIGTERM ends the process at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_work_holds_the_stop_for_its_budget_and_a_second_signal_ends_it() {
    let mut tally = Tally::begin("shutdown stuck work");
    for twice in [false, true] {
        let (runtime, accepted) = silent_runtime().await;
        let dir = tempfile::tempdir().expect("dir");
        let service = Service::spawn(&[
            (
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()),
            ),
            ("RUNTIME_ADDRESS", runtime),
        ])
        .await;
        poll(
            Duration::from_secs(30),
            "the service calls the runtime",
            || {
                let accepted = accepted.load(Ordering::Relaxed);
                async move { (accepted > 0).then_some(()) }
            },
        )
        .await;
        let (took, status) = service.terminate(twice).await;
        tally.injected += 1 + usize::from(twice);
        println!(
            "shutdown with stuck work: exit after {} ms ({status:?}), second signal: {twice}",
            took.as_millis()
        );
        if twice {
            assert_eq!(status.code(), Some(130), "the second signal's exit");
            assert!(took < Duration::from_secs(1), "{took:?}");
        } else {
            assert!(status.success(), "{status:?}");
            // The budget is 2 s; some slack for a loaded machine.
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
    }
}
