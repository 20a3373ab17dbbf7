//! A PostgreSQL outage, without touching the machine's server: the service reaches it through
//! a TCP proxy on loopback that the test cuts (every connection dropped, new ones refused) and
//! restores. `/readyz` reports the outage and recovers; appends resume where they stopped,
//! and the run's stored envelopes are the runtime's transcript.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use macp_control_plane::runtime::RuntimeClient;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::store::Store;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use super::crash::{stored_envelopes, transcript};
use super::process::{Service, poll};
use super::summary::Tally;
use crate::discovery::Agents;
use crate::requests;
use crate::support::{self, Backend};

const POSTGRES: &str = "127.0.0.1:5432";

/// Forwards connections to PostgreSQL until cut.
struct Proxy {
    address: String,
    cut: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("address").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (refusing, tracked) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refusing.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(POSTGRES).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tracked.lock().expect("lock").push(task.abort_handle());
            }
        });
        Proxy {
            address,
            cut,
            connections,
        }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn talk(runtime: &str, session_id: &str, from: usize, count: usize) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_loses_nothing() {
    let mut tally = Tally::begin("database Postgres");
    let dir = tempfile::tempdir().expect("dir");
    let Some((database_url, Some(postgres_db))) =
        support::database_url(Backend::Postgres, &dir).await
    else {
        return;
    };
    let proxy = Proxy::start().await;
    let proxied = database_url.replace(POSTGRES, &proxy.address);
    assert_ne!(proxied, database_url, "the URL goes through the proxy");
    let service = Service::spawn(&[
        ("DATABASE_URL", proxied),
        ("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0".to_owned()),
    ])
    .await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, base) = (http.clone(), service.base.clone());
        async move {
            match http.get(format!("{base}{path}")).send().await {
                Ok(response) => (
                    response.status().as_u16(),
                    response.json::<Value>().await.unwrap_or(Value::Null),
                ),
                Err(_) => (0, Value::Null),
            }
        }
    };
    let (_, health) = get("/runtime/health".to_owned()).await;
    let runtime = health["embeddedAddress"]
        .as_str()
        .expect("embedded runtime")
        .to_owned();
    let response = http
        .post(format!("{}/runs", service.base))
        .json(&requests::seed_example())
        .send()
        .await
        .expect("start");
    assert_eq!(response.status().as_u16(), 201);
    let run_id = response.json::<Value>().await.expect("json")["runId"]
        .as_str()
        .expect("runId")
        .to_owned();
    let received = |count: usize| {
        let path = format!("/runs/{run_id}/events?limit=10000");
        async move {
            let (_, events) = get(path).await;
            let got = events
                .as_array()
                .into_iter()
                .flatten()
                .filter(|event| event["type"] == "message.received")
                .count();
            (got >= count).then_some(())
        }
    };
    // SessionStart and the kickoff's Proposal.
    poll(Duration::from_secs(30), "the kickoff is stored", || {
        received(2)
    })
    .await;
    let (_, run) = get(format!("/runs/{run_id}")).await;
    let session_id = run["runtimeSessionId"]
        .as_str()
        .expect("session")
        .to_owned();
    talk(&runtime, &session_id, 0, 5).await;
    poll(Duration::from_secs(30), "5 messages stored", || received(7)).await;

    proxy.cut();
    tally.injected += 1;
    poll(
        Duration::from_secs(30),
        "/readyz reports the outage",
        || {
            let get = get("/readyz".to_owned());
            async move { (get.await.0 == 503).then_some(()) }
        },
    )
    .await;
    // Agents go on talking to the runtime while the database is away.
    talk(&runtime, &session_id, 5, 5).await;
    proxy.restore();
    poll(Duration::from_secs(30), "/readyz recovers", || {
        let get = get("/readyz".to_owned());
        async move { (get.await.0 == 200).then_some(()) }
    })
    .await;
    poll(Duration::from_secs(60), "every message stored", || {
        received(12)
    })
    .await;

    let store = Store::connect(&database_url).await.expect("store");
    let stored = stored_envelopes(&store, &run_id).await;
    let ordinals: Vec<i64> = stored.iter().map(|(ordinal, _)| *ordinal).collect();
    assert_eq!(
        ordinals,
        (1..=12).collect::<Vec<_>>(),
        "no ordinal skipped or repeated"
    );
    let ids: Vec<String> = stored.into_iter().map(|(_, id)| id).collect();
    let reader = RuntimeClient::connect_lazy(
        &runtime,
        Credentials::Dev {
            observer: "macp-control-plane".to_owned(),
        },
        Duration::from_secs(5),
        false,
    )
    .expect("client");
    let runtime_ids = transcript(&reader, &session_id, "coordinator", ids.len()).await;
    tally.compare(&ids, &runtime_ids);
    tally.runs += 1;
    assert_eq!(ids, runtime_ids);
    let seqs: Vec<i64> = store
        .events_between(&run_id, 0, None, 100_000)
        .await
        .expect("events")
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "seqs dense"
    );
    service.kill().await;
    support::drop_database(&postgres_db).await;
}
