//! No thundering herd on a break: many runs lose the runtime at once (its process SIGKILLed),
//! and their observers' attempts to resubscribe, each recorded as an event with its time, are
//! spread by the jittered backoff; every run reconnects when the runtime is back.
//!
//! What this does not show: when the runtime comes back, the attempts made while it was
//! loading its sessions (it listens before it serves) wait on the one connection and go
//! through together; that clump is measured and printed, not held to a bound.
//!
//! `FAULTS_HERD_RUNS` runs (200 by default, for CI); the 1,000:
//! `FAULTS_HERD_RUNS=1000 cargo test --test it faults::herd -- --nocapture`.

use std::time::Duration;

use futures::StreamExt as _;
use macp_control_plane::app::RuntimeTarget;
use macp_control_plane::events::canonical::types;
use macp_control_plane::time::Timestamp;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use super::crash::setting;
use super::process::poll;
use super::summary::Tally;
use crate::requests;
use crate::runtime_process::spawn_runtime;
use crate::support::{self, Backend};

/// How long the runtime stays away: long enough for the backoff to double a few times
/// (100 ms, 200 ms, ... 1.6 s), well within the grace.
const OUTAGE: Duration = Duration::from_secs(3);

/// Runs with at least one event of `event_type`.
async fn runs_with(db: &DatabaseConnection, event_type: &str) -> i64 {
    db.query_one_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT COUNT(DISTINCT run_id) FROM run_events_canonical WHERE event_type = $1",
        [event_type.into()],
    ))
    .await
    .expect("counts")
    .and_then(|row| row.try_get_by_index::<i64>(0).ok())
    .unwrap_or(0)
}

/// The most of `times` (sorted) within any `window`.
fn densest(times: &[Timestamp], window: Duration) -> usize {
    let window = chrono::Duration::from_std(window).expect("window");
    times
        .iter()
        .enumerate()
        .map(|(start, from)| {
            times[start..]
                .iter()
                .take_while(|time| **time - *from < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_lose_the_runtime_together_retry_apart() {
    let mut tally = Tally::begin("herd");
    let count = setting("FAULTS_HERD_RUNS", 200) as usize;
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().to_str().expect("utf-8 path").to_owned();
    let settings = [
        ("MACP_DATA_DIR", data_dir.as_str()),
        ("MACP_STORAGE_BACKEND", "file"),
        ("MACP_COMPACT_TERMINAL_LOGS", "0"),
        // The runtime's defaults are for a few dozen sessions: 60 SessionStarts a minute per
        // sender (the runs here share their initiator), 64 requests at once per connection and
        // 128 HTTP/2 streams, while the control plane holds each run's StreamSession on its
        // one connection. With them, 60 and then about 150 runs got a stream; the rest waited.
        ("MACP_SESSION_START_LIMIT_PER_MINUTE", "100000"),
        ("MACP_MESSAGE_LIMIT_PER_MINUTE", "100000"),
        ("MACP_CONCURRENCY_LIMIT_PER_CONNECTION", "4096"),
        ("MACP_MAX_CONCURRENT_STREAMS", "4096"),
    ];
    let runtime = spawn_runtime(&settings).await;
    let address = runtime.address.clone();
    let app = support::start_with(
        Backend::Sqlite,
        support::Options {
            runtime: RuntimeTarget::External {
                address: address.clone(),
                tls: false,
            },
            ..Default::default()
        },
    )
    .await
    .expect("SQLite");
    let db = Database::connect(app.app.database_url())
        .await
        .expect("connects");
    let starting = &app;
    let runs: Vec<String> = futures::stream::iter(0..count)
        .map(|_| async move { starting.start_run(&requests::seed_example()).await })
        .buffer_unordered(8)
        .collect()
        .await;
    poll(
        Duration::from_secs(120),
        "every run's session stream is open",
        || {
            let db = &db;
            async move {
                (runs_with(db, types::SESSION_STREAM_OPENED).await == count as i64).then_some(())
            }
        },
    )
    .await;

    runtime.kill().await;
    let killed = tokio::time::Instant::now();
    tally.injected += 1;
    poll(
        Duration::from_secs(60),
        "every run records the disconnection",
        || {
            let db = &db;
            async move {
                (runs_with(db, types::SESSION_STREAM_DISCONNECTED).await == count as i64)
                    .then_some(())
            }
        },
    )
    .await;
    // The outage itself, not a wait for something to happen.
    tokio::time::sleep_until(killed + OUTAGE).await;
    let same_address = [settings.as_slice(), &[("MACP_BIND_ADDR", address.as_str())]].concat();
    let restarted = spawn_runtime(&same_address).await;
    poll(Duration::from_secs(120), "every run reconnects", || {
        let db = &db;
        async move {
            (runs_with(db, types::SESSION_STREAM_RECONNECTED).await == count as i64).then_some(())
        }
    })
    .await;

    let store = app.store().await;
    let (mut first_retries, mut resumed, mut attempts) = (Vec::new(), Vec::new(), 0);
    for run_id in &runs {
        let events = store
            .events_between(run_id, 0, None, 100_000)
            .await
            .expect("events");
        let disconnected: Vec<_> = events
            .iter()
            .filter(|event| event.event_type == types::SESSION_STREAM_DISCONNECTED)
            .collect();
        assert_eq!(disconnected.len(), 1, "run {run_id}: one outage");
        // Every attempt to resubscribe after it, failed (`reconnecting`) or not (`resumed`),
        // recorded as soon as the runtime answered it.
        let tries: Vec<Timestamp> = events
            .iter()
            .filter(|event| {
                event.seq > disconnected[0].seq
                    && event.event_type == types::SESSION_STREAM_OPENED
                    && matches!(
                        event.data["status"].as_str(),
                        Some("reconnecting" | "resumed")
                    )
            })
            .map(|event| event.ts)
            .collect();
        attempts += tries.len();
        first_retries.push(*tries.first().expect("a retry"));
        resumed.push(*tries.last().expect("resumed"));
    }
    first_retries.sort();
    resumed.sort();
    let first_densest = densest(&first_retries, Duration::from_millis(5));
    let span = |times: &[Timestamp]| (times[times.len() - 1] - times[0]).num_milliseconds();
    println!(
        "faults::herd: {count} runs, {attempts} attempts to resubscribe; first retries over \
         {} ms, at most {first_densest} in 5 ms; back over {} ms, at most {} in 50 ms",
        span(&first_retries),
        span(&resumed),
        densest(&resumed, Duration::from_millis(50)),
    );
    // Jittered over the first backoff's last half (50 ms), a 5 ms window holds about a tenth
    // of the first retries; without jitter they would all fall within a few ms.
    assert!(
        first_densest * 10 <= count * 3,
        "{first_densest} of {count} first retries within 5 ms"
    );
    let (_, running) = app.get("/runs?status=running&limit=1").await;
    assert_eq!(running["total"], count as u64, "every run goes on");
    tally.runs += count;
    app.stop().await;
    restarted.kill().await;
}
