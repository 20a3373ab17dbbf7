//! Three replicas of the service binary on one PostgreSQL, the reference runtime as a process
//! of its own: runs started through random replicas, SSE clients on one replica for the runs
//! the others own, messages sent through random replicas (handed to each run's owner), and
//! one replica killed with SIGKILL mid-run. Its runs are taken over within 5 s and complete;
//! every stream ends with exactly the run's events, in order, once (the killed replica's
//! clients reconnecting elsewhere with `Last-Event-ID`); the stored envelopes of every run are
//! the runtime's transcript.
//!
//! `CLUSTER_RUNS` runs (200 by default); `CLUSTER_SEED` repeats a run of the test.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use macp_control_plane::runtime::RuntimeClient;
use macp_control_plane::store::Store;
use serde_json::{Value, json};

use crate::discovery::Agents;
use crate::faults::crash::{Rng, stored_envelopes, transcript};
use crate::faults::process::{Service, poll};
use crate::faults::summary::differences;
use crate::runtime_process::spawn_runtime;
use crate::streams::SseReader;
use crate::support::{self, Backend};

const REPLICAS: usize = 3;
/// Requests in flight at once from the test.
const CONCURRENCY: usize = 32;

fn proto(type_name: &str, value: Value) -> Value {
    json!({"encoding": "proto", "proto": {"typeName": type_name, "value": value}})
}

fn decision(name: &str) -> String {
    format!("macp.modes.decision.v1.{name}")
}

/// A decision session whose kickoff only proposes: the run stays running until the test's
/// messages decide it.
fn proposal_only() -> Value {
    let mut request = crate::requests::request(
        "macp.mode.decision.v1",
        "coordinator",
        &[
            ("fraud-agent", "fraud"),
            ("risk-agent", "risk"),
            ("growth-agent", "growth"),
        ],
        vec![json!({
            "from": "fraud-agent",
            "to": ["risk-agent", "growth-agent"],
            "kind": "request",
            "messageType": "Proposal",
            "payloadEnvelope": proto(
                &decision("ProposalPayload"),
                json!({"proposal_id": "p1", "option": "step_up", "rationale": "new device"}),
            ),
        })],
    );
    request["session"]["ttlMs"] = json!(300_000);
    request
}

fn evaluation() -> Value {
    json!({"from": "risk-agent", "to": ["coordinator"], "messageType": "Evaluation",
        "payloadEnvelope": proto(&decision("EvaluationPayload"),
            json!({"proposal_id": "p1", "recommendation": "APPROVE", "confidence": 0.8, "reason": "ok"}))})
}

fn vote(from: &str) -> Value {
    json!({"from": from, "to": ["coordinator"], "messageType": "Vote",
        "payloadEnvelope": proto(&decision("VotePayload"),
            json!({"proposal_id": "p1", "vote": "APPROVE", "reason": "fine"}))})
}

fn commitment() -> Value {
    json!({"from": "coordinator", "messageType": "Commitment",
        "payloadEnvelope": proto("macp.v1.CommitmentPayload", json!({
            "commitment_id": "c1", "action": "decision.selected", "authority_scope": "tests",
            "reason": "all approve", "mode_version": "1.0.0",
            "configuration_version": "config.default", "policy_version": "",
            "outcome_positive": true}))})
}

async fn post(http: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let response = http.post(url).json(body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let response = http.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The active runs each live replica says it owns (`/readyz`), by run.
async fn owners(http: &reqwest::Client, bases: &[(usize, String)]) -> HashMap<String, usize> {
    let mut owners = HashMap::new();
    for (replica, base) in bases {
        let response = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        let body: Value = response.json().await.expect("readyz JSON");
        for run in body["cluster"]["ownedRuns"]
            .as_array()
            .into_iter()
            .flatten()
        {
            owners.insert(run.as_str().expect("run id").to_owned(), *replica);
        }
    }
    owners
}

/// Reads a run's stream to its end (or to the end of the connection): the seqs it sent.
fn read_stream(mut reader: SseReader) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some(frame) = reader.next().await {
            if frame.event == "canonical_event" {
                seqs.push(frame.id.expect("id").parse::<i64>().expect("seq"));
            }
        }
        seqs
    })
}

/// The admin connection's view of the test database's listening connections (the last
/// statement a backend ran is its LISTEN).
const LISTENING: &str = "FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'";

async fn listeners(database: &str) -> u64 {
    let admin = sqlx_admin().await;
    sea_orm::sqlx::query_scalar::<_, i64>(sea_orm::sqlx::AssertSqlSafe(format!(
        "SELECT count(*) {LISTENING}"
    )))
    .bind(database)
    .fetch_one(&admin)
    .await
    .expect("count listeners") as u64
}

/// Ends every replica's listening connection on the server's side; how many it ended.
async fn cut_listeners(database: &str) -> u64 {
    let admin = sqlx_admin().await;
    let ended: Vec<bool> = sea_orm::sqlx::query_scalar(sea_orm::sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) {LISTENING}"
    )))
    .bind(database)
    .fetch_all(&admin)
    .await
    .expect("terminate listeners");
    ended.into_iter().filter(|ended| *ended).count() as u64
}

async fn sqlx_admin() -> sea_orm::sqlx::PgPool {
    sea_orm::sqlx::PgPool::connect(&support::postgres_admin_url())
        .await
        .expect("admin connection")
}

/// Replica `index` of a cluster on `database_url`, observing the runtime at `runtime`.
async fn replica(database_url: &str, runtime: &str, index: usize, lease_ttl_ms: u64) -> Service {
    Service::spawn(&[
        ("DATABASE_URL", database_url.to_owned()),
        ("RUNTIME_ADDRESS", runtime.to_owned()),
        ("RUNTIME_USE_DEV_HEADER", "true".to_owned()),
        ("CLUSTER_ENABLED", "true".to_owned()),
        ("REPLICA_ID", format!("replica-{index}")),
        ("LEASE_TTL_MS", lease_ttl_ms.to_string()),
    ])
    .await
}

/// Sends `message` to every run, each through a replica `pick` chooses; every send accepted.
async fn send_to_all(
    http: &reqwest::Client,
    runs: &[String],
    pick: impl Fn(usize) -> String,
    message: impl Fn() -> Value,
) {
    let sends = runs.iter().enumerate().map(|(index, run_id)| {
        let (url, body) = (format!("{}/runs/{run_id}/messages", pick(index)), message());
        async move {
            let (status, answer) = post(http, url, &body).await;
            assert_eq!(status, 201, "run {run_id}: {answer}");
        }
    });
    futures::stream::iter(sends)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_killed() {
    let dir = tempfile::tempdir().expect("dir");
    let Some((database_url, Some(database))) = support::database_url(Backend::Postgres, &dir).await
    else {
        eprintln!("SKIPPED: cluster::three_replicas_one_killed needs PostgreSQL");
        return;
    };
    let count: usize = std::env::var("CLUSTER_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("CLUSTER_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("cluster: seed {seed} (CLUSTER_SEED={seed} repeats it), {count} runs");
    let mut rng = Rng(seed);
    let data = tempfile::tempdir().expect("runtime dir");
    let runtime = spawn_runtime(&[
        ("MACP_DATA_DIR", data.path().to_str().expect("utf-8 path")),
        ("MACP_STORAGE_BACKEND", "file"),
        ("MACP_COMPACT_TERMINAL_LOGS", "0"),
        // One initiator opens every session here: the runtime's per-sender limits would refuse.
        ("MACP_SESSION_START_LIMIT_PER_MINUTE", "100000"),
        ("MACP_MESSAGE_LIMIT_PER_MINUTE", "1000000"),
    ])
    .await;
    let mut replicas = Vec::new();
    for index in 0..REPLICAS {
        replicas.push(Some(
            replica(&database_url, &runtime.address, index, 1500).await,
        ));
    }
    let bases: Vec<String> = replicas
        .iter()
        .map(|service| service.as_ref().expect("running").base.clone())
        .collect();
    let http = reqwest::Client::new();

    // 200 runs at once, each through a random replica, which owns it.
    let starts: Vec<usize> = (0..count)
        .map(|_| rng.below(REPLICAS as u64) as usize)
        .collect();
    let request = proposal_only();
    let started = futures::stream::iter(starts.iter().map(|replica| {
        let (http, url, request) = (&http, format!("{}/runs", bases[*replica]), &request);
        async move {
            let (status, body) = post(http, url, request).await;
            assert_eq!(status, 201, "{body}");
            body["runId"].as_str().expect("runId").to_owned()
        }
    }))
    .buffered(CONCURRENCY)
    .collect::<Vec<String>>()
    .await;
    let everyone: Vec<(usize, String)> = bases.iter().cloned().enumerate().collect();
    let owned = owners(&http, &everyone).await;
    for (run_id, replica) in started.iter().zip(&starts) {
        assert_eq!(
            owned.get(run_id),
            Some(replica),
            "run {run_id} is owned by the replica that started it"
        );
    }

    // Replica 0 streams every run the others own; the victim (replica 1) streams some runs of
    // each owner, to reconnect elsewhere after the kill.
    let (watcher, victim) = (0, 1);
    let mut on_watcher = Vec::new();
    let mut on_victim = Vec::new();
    for (run_id, owner) in started.iter().zip(&starts) {
        let path = format!("/runs/{run_id}/stream?includeSnapshot=false&endAtTerminal=true");
        if *owner != watcher {
            let reader = SseReader::open_with(&http, &bases[watcher], &path, None).await;
            on_watcher.push((run_id.clone(), read_stream(reader)));
        }
        if on_victim.len() < 30 && rng.below(4) == 0 {
            let reader = SseReader::open_with(&http, &bases[victim], &path, None).await;
            on_victim.push((run_id.clone(), read_stream(reader)));
        }
    }

    // Mid-run: an evaluation through a random replica (most go to another replica than the
    // owner, and are handed to it), every one stored before the kill.
    let picks: Vec<usize> = (0..count)
        .map(|_| rng.below(REPLICAS as u64) as usize)
        .collect();
    send_to_all(
        &http,
        &started,
        |index| bases[picks[index]].clone(),
        evaluation,
    )
    .await;

    // Run changes made on replicas that do not own the run: suspended and resumed (the
    // first run), cancelled (the last one).
    let elsewhere = |owner: usize, step: usize| (owner + step) % REPLICAS;
    let (first, first_owner) = (&started[0], starts[0]);
    for (step, action, status) in [(1, "suspend", "suspended"), (2, "resume", "running")] {
        let url = format!(
            "{}/runs/{first}/{action}",
            bases[elsewhere(first_owner, step)]
        );
        let (code, run) = post(&http, url, &json!({"reason": "cluster test"})).await;
        assert_eq!(
            (code, run["status"].as_str()),
            (200, Some(status)),
            "{action}: {run}"
        );
    }
    let (last, last_owner) = (started[count - 1].clone(), starts[count - 1]);
    let url = format!("{}/runs/{last}/cancel", bases[elsewhere(last_owner, 1)]);
    let (code, run) = post(&http, url, &json!({"reason": "cluster test"})).await;
    assert_eq!(
        (code, run["status"].as_str()),
        (200, Some("cancelled")),
        "{run}"
    );
    let active: Vec<String> = started[..count - 1].to_vec();

    let victim_runs: Vec<&String> = active
        .iter()
        .zip(&starts)
        .filter(|(_, owner)| **owner == victim)
        .map(|(run_id, _)| run_id)
        .collect();
    replicas[victim].take().expect("running").kill().await;
    let killed = Instant::now();
    let survivors: Vec<(usize, String)> = everyone
        .iter()
        .filter(|(replica, _)| *replica != victim)
        .cloned()
        .collect();
    let taken_over = poll(
        Duration::from_secs(5),
        "the killed replica's runs are taken over",
        || {
            let (http, survivors, victim_runs) = (&http, &survivors, &victim_runs);
            async move {
                let owned = owners(http, survivors).await;
                victim_runs
                    .iter()
                    .all(|run_id| owned.contains_key(*run_id))
                    .then(|| killed.elapsed())
            }
        },
    )
    .await;
    let owned = owners(&http, &survivors).await;
    let mut spread = BTreeMap::new();
    for run_id in &victim_runs {
        *spread.entry(owned[*run_id]).or_insert(0) += 1;
    }
    println!(
        "cluster: replica {victim} (SIGKILL) owned {} runs; taken over in {} ms by {spread:?}",
        victim_runs.len(),
        taken_over.as_millis()
    );

    // The rest of every session through the survivors: three votes and the commitment, which
    // ends the runs. Halfway through the commitments every replica's listening connection is
    // cut: whatever is announced until it is back is lost, and the streams of the runs that
    // ended meanwhile get their last events only through the resynchronization.
    let picks: Vec<usize> = (0..count)
        .map(|_| survivors[rng.below(survivors.len() as u64) as usize].0)
        .collect();
    let pick = |index: usize| bases[picks[index]].clone();
    for message in [
        (|| vote("fraud-agent")) as fn() -> Value,
        || vote("risk-agent"),
        || vote("growth-agent"),
    ] {
        send_to_all(&http, &active, pick, message).await;
    }
    let (early, late) = active.split_at(active.len() / 2);
    send_to_all(&http, early, pick, commitment).await;
    let cut = cut_listeners(&database).await;
    assert_eq!(
        cut,
        survivors.len() as u64,
        "one listening connection per live replica"
    );
    // And again every 10 ms while the rest end, so that announcements are lost in between.
    let cuts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(cut));
    let cutting = tokio::spawn({
        let (database, cuts) = (database.clone(), cuts.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            loop {
                every.tick().await;
                let cut = cut_listeners(&database).await;
                cuts.fetch_add(cut, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    send_to_all(&http, late, |index| pick(index + early.len()), commitment).await;
    cutting.abort();
    let _ = cutting.await;
    println!(
        "cluster: listening connections cut {} times while {} runs ended",
        cuts.load(std::sync::atomic::Ordering::Relaxed),
        late.len()
    );
    poll(
        Duration::from_secs(10),
        "the listening connections are back",
        || async { (listeners(&database).await == cut).then_some(()) },
    )
    .await;
    let base = &bases[watcher];
    for run_id in &active {
        poll(Duration::from_secs(60), "every run completes", || {
            let (http, url) = (&http, format!("{base}/runs/{run_id}"));
            async move {
                let (_, run) = get(http, url).await;
                match run["status"].as_str() {
                    Some("completed") => Some(()),
                    Some("failed" | "cancelled") => panic!("run {run_id} ended {run}"),
                    _ => None,
                }
            }
        })
        .await;
    }

    // Streams: exactly the run's events, in order, once.
    let store = Store::connect(&database_url).await.expect("store");
    let last_seq = |run_id: String| {
        let store = store.clone();
        async move {
            store
                .run(&run_id)
                .await
                .expect("run")
                .expect("exists")
                .last_event_seq
        }
    };
    let watched = on_watcher.len();
    for (run_id, stream) in on_watcher {
        let seqs = tokio::time::timeout(Duration::from_secs(30), stream)
            .await
            .unwrap_or_else(|_| panic!("run {run_id}: the stream on replica {watcher} ends"))
            .expect("stream");
        let total = last_seq(run_id.clone()).await;
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "run {run_id} on replica {watcher}"
        );
    }
    let reconnected = on_victim.len();
    for (run_id, stream) in on_victim {
        let mut seqs = stream.await.expect("stream");
        let survivor = &survivors[rng.below(survivors.len() as u64) as usize].1;
        let reader = SseReader::open_with(
            &http,
            survivor,
            &format!("/runs/{run_id}/stream?includeSnapshot=false&endAtTerminal=true"),
            seqs.last().copied(),
        )
        .await;
        seqs.extend(
            tokio::time::timeout(Duration::from_secs(30), read_stream(reader))
                .await
                .unwrap_or_else(|_| panic!("run {run_id}: the reconnected stream ends"))
                .expect("stream"),
        );
        let total = last_seq(run_id.clone()).await;
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "run {run_id}: the killed replica's client, reconnected"
        );
    }

    // The store against the runtime's transcript.
    let reader = RuntimeClient::connect_lazy(
        &runtime.address,
        support::dev_credentials(),
        Duration::from_secs(5),
        false,
    )
    .expect("runtime client");
    let (mut lost, mut duplicated) = (0, 0);
    for run_id in &started {
        let stored: Vec<String> = stored_envelopes(&store, run_id)
            .await
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let session = store
            .session(run_id)
            .await
            .expect("session")
            .expect("bound");
        let runtime_ids = transcript(
            &reader,
            &session.session_id,
            &session.initiator,
            stored.len(),
        )
        .await;
        let (missing, repeated) = differences(&stored, &runtime_ids);
        lost += missing;
        duplicated += repeated;
        assert_eq!(
            stored, runtime_ids,
            "run {run_id}: stored = the runtime's transcript"
        );
    }
    println!(
        "cluster: {REPLICAS} replicas, {count} runs, {watched} streams across replicas, \
         {reconnected} reconnected after the kill; events lost {lost}, duplicated {duplicated}"
    );
    for service in replicas.into_iter().flatten() {
        service.kill().await;
    }
    runtime.kill().await;
    support::drop_database(&database).await;
}

/// A replica whose run another replica has taken over is refused when it writes the run, and
/// writes nothing; a call to a run whose owner has no current lease is answered by claiming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_a_run_cannot_write_it() {
    use macp_control_plane::events::canonical::{EventDraft, Source, Subject, types};
    use macp_control_plane::runs::cluster::ClusterOptions;
    use sea_orm::{ConnectionTrait as _, Database};

    let Some(app) = support::start(Backend::Postgres).await else {
        eprintln!("SKIPPED: cluster::a_replica_that_lost_a_run_cannot_write_it needs PostgreSQL");
        return;
    };
    let app = app
        .restart_with(|config| {
            config.run_options.cluster = Some(ClusterOptions {
                replica_id: "replica-a".to_owned(),
                lease_ttl: Duration::from_secs(60),
            });
        })
        .await;
    let run_id = app.start_run(&proposal_only()).await;
    app.wait_for(&run_id, |state| state.run.status.as_str() == "running")
        .await;
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["cluster"]["replicaId"], "replica-a", "{ready}");
    assert_eq!(ready["cluster"]["ownedRuns"], json!([run_id]), "{ready}");

    // Replica b, alive, takes the run over (what its heartbeat does once a's lease expired).
    let store = app.store().await;
    let database = Database::connect(app.app.database_url())
        .await
        .expect("database");
    database
        .execute_unprepared(&format!(
            "INSERT INTO replicas (id, started_at, heartbeat_at, expires_at) \
             VALUES ('replica-b', now(), now(), now() + interval '1 hour'); \
             UPDATE runs SET owner_replica = 'replica-b' WHERE id = '{run_id}'"
        ))
        .await
        .expect("takeover");
    let before = store.run(&run_id).await.expect("run").expect("exists");
    let draft = EventDraft::new(
        types::ARTIFACT_CREATED,
        macp_control_plane::time::now(),
        Some(Subject::new("artifact", "late")),
        Source::control_plane("tests"),
        json!({"artifactId": "late", "kind": "json", "label": "late"}),
    );
    let refused = app.app.service.ingest(&run_id, &[], vec![draft]).await;
    assert!(
        refused.is_err(),
        "a write after losing the lease: {refused:?}"
    );
    let after = store.run(&run_id).await.expect("run").expect("exists");
    assert_eq!(
        after.last_event_seq, before.last_event_seq,
        "nothing written"
    );

    // b's lease ends without it answering: a call made on a claims the run and carries it out.
    database
        .execute_unprepared(
            "UPDATE replicas SET expires_at = now() - interval '1 second' WHERE id = 'replica-b'",
        )
        .await
        .expect("b expires");
    let (status, cancelled) = app
        .post(
            &format!("/runs/{run_id}/cancel"),
            &json!({"reason": "taken back"}),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let ended = store.run(&run_id).await.expect("run").expect("exists");
    assert!(ended.last_event_seq > before.last_event_seq);
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(
        ready["cluster"]["ownedRuns"],
        json!([]),
        "an ended run has no owner: {ready}"
    );
    app.stop().await;
}

/// Streams opened on both replicas before agents start their session wait for its run
/// (`waitForRunMs`) and carry all of it: on the replica that discovered it, woken by its own
/// commit, and on the other, woken by the announcement it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_every_replica_wait_for_a_session_agents_start() {
    let dir = tempfile::tempdir().expect("dir");
    let Some((database_url, Some(database))) = support::database_url(Backend::Postgres, &dir).await
    else {
        eprintln!(
            "SKIPPED: cluster::streams_on_every_replica_wait_for_a_session_agents_start needs PostgreSQL"
        );
        return;
    };
    let runtime = spawn_runtime(&[("MACP_MEMORY_ONLY", "1")]).await;
    let mut replicas = Vec::new();
    for index in 0..2 {
        replicas.push(replica(&database_url, &runtime.address, index, 3000).await);
    }
    let http = reqwest::Client::new();
    let session_id = uuid::Uuid::new_v4().to_string();
    let path = format!(
        "/runs/{session_id}/stream?includeSnapshot=false&endAtTerminal=true&waitForRunMs=30000"
    );
    let streams: Vec<_> = replicas
        .iter()
        .map(|replica| {
            let (http, base, path) = (http.clone(), replica.base.clone(), path.clone());
            tokio::spawn(async move {
                let reader = SseReader::open_with(&http, &base, &path, None).await;
                read_stream(reader).await.expect("stream")
            })
        })
        .collect();
    for replica in &replicas {
        poll(Duration::from_secs(10), "the stream request waits", || {
            crate::discovery::subscribers(&http, &replica.base)
                .map(|count| count.filter(|count| *count == 1))
        })
        .await;
    }
    let mut agents = Agents::connect_to(&runtime.address).await;
    agents.start_decision(&session_id).await;
    agents.decide(&session_id).await;
    let mut seen = Vec::new();
    // Well inside the 30 s wait: only a wake-up, not the wait's end, gets a stream here.
    for stream in streams {
        seen.push(
            tokio::time::timeout(Duration::from_secs(20), stream)
                .await
                .expect("the stream ends at the run's end")
                .expect("stream task"),
        );
    }
    let (status, events) = get(
        &http,
        format!("{}/runs/{session_id}/events?limit=10000", replicas[0].base),
    )
    .await;
    assert_eq!(status, 200, "{events}");
    let stored: Vec<i64> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["seq"].as_i64().expect("seq"))
        .collect();
    assert!(stored.len() > 10, "{stored:?}");
    for (replica, seqs) in seen.iter().enumerate() {
        assert_eq!(seqs, &stored, "replica {replica}'s stream");
    }
    drop(replicas);
    drop(runtime);
    support::drop_database(&database).await;
}
