//! Soak benchmark (`cargo bench --bench soak`): 10,000 short runs (scripted decisions that
//! their kickoff carries to a finalized decision, the integration tests' shape) against an
//! in-process service with the embedded runtime (memory storage, SQLite), resident memory
//! sampled every 500 runs. Twice, each in a process of its own: with terminal sessions evicted
//! from the runtime after a short retention, and with eviction off (memory a process has freed
//! is not all given back, so a shared process would blur the second curve). Prints both
//! curves. Not a test: it asserts nothing.
//!
//! `SOAK_RUNS` (10000), `SOAK_EVERY` (500), `SOAK_CONCURRENCY` (runs in flight, 8),
//! `SOAK_RETENTION_SECS` (2: at this pace the default 300 s would hold every run of the soak).

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
use macp_control_plane::events::hub::RecvError;
use macp_control_plane::projection::state::RunState;
use macp_control_plane::runs::service::RunOptions;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::runtime::embedded::EmbeddedOptions;

#[allow(dead_code)]
#[path = "../tests/it/requests.rs"]
mod requests;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process, in KiB: `/proc/self/statm`'s resident pages (4 KiB pages,
/// the x86-64 and default arm64 Linux size).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4)
        .unwrap_or(0)
}

fn terminal(state: &RunState) -> bool {
    matches!(
        state.run.status.as_str(),
        "completed" | "failed" | "cancelled"
    )
}

/// Starts one run and waits (on the hub, not a timer) until it is terminal; its status.
async fn run_one(app: &App) -> String {
    let service = &app.service;
    let run_id = service
        .start(requests::scripted_decision())
        .await
        .expect("starts")
        .run_id;
    let mut batches = service.subscribe(&run_id);
    let mut state = service.state(&run_id).await.expect("state");
    while !terminal(&state) {
        match tokio::time::timeout(Duration::from_secs(60), batches.recv()).await {
            Ok(Ok(batch)) => state = RunState::clone(&batch.state),
            Ok(Err(RecvError::Lagged(_))) => state = service.state(&run_id).await.expect("state"),
            Ok(Err(error)) => panic!("hub closed: {error}"),
            Err(_) => panic!("run {run_id} did not finish in 60 s"),
        }
    }
    state.run.status
}

/// One variant, in this process: prints `sample <runs> <rss KiB> <runtime sessions> <s>`.
async fn soak(retention: Option<Duration>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = App::start(AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("soak.db").display()).into(),
        store: Default::default(),
        runtime: RuntimeTarget::Embedded(EmbeddedOptions {
            session_retention: retention,
            ..EmbeddedOptions::default()
        }),
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
    .expect("app starts");
    let runs = setting("SOAK_RUNS", 10_000) as usize;
    let every = setting("SOAK_EVERY", 500).max(1) as usize;
    let concurrency = setting("SOAK_CONCURRENCY", 8).max(1) as usize;
    let started = Instant::now();
    let sample = |done: usize, sessions: usize| {
        println!(
            "sample {done} {} {sessions} {:.1}",
            rss_kib(),
            started.elapsed().as_secs_f64()
        );
    };
    sample(0, 0);
    let mut finished = futures::stream::iter(0..runs)
        .map(|_| run_one(&app))
        .buffer_unordered(concurrency);
    let (mut done, mut not_completed) = (0, 0);
    while let Some(status) = finished.next().await {
        done += 1;
        if status != "completed" {
            not_completed += 1;
        }
        if done % every == 0 {
            sample(done, app.embedded_runtime_sessions().await.unwrap_or(0));
        }
    }
    drop(finished);
    println!(
        "info {done} runs in {:.1} s ({:.0} runs/s), {not_completed} not completed",
        started.elapsed().as_secs_f64(),
        done as f64 / started.elapsed().as_secs_f64()
    );
    // Idle past the retention and a sweep: what the runtime still holds.
    if let Some(retention) = retention {
        tokio::time::sleep(retention + Duration::from_secs(2)).await;
        println!(
            "info idle {} s later: {} sessions in the runtime, RSS {:.1} MB",
            retention.as_secs() + 2,
            app.embedded_runtime_sessions().await.unwrap_or(0),
            rss_kib() as f64 / 1024.0
        );
    }
    app.stop().await;
}

struct Curve {
    label: String,
    /// (runs, RSS KiB, runtime sessions)
    samples: Vec<(usize, u64, usize)>,
}

/// Runs one variant in a child process (this executable, `SOAK_VARIANT` set) and reads its
/// samples.
fn child(variant: &str, label: String) -> Curve {
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("SOAK_VARIANT", variant)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the variant starts");
    let mut curve = Curve {
        label,
        samples: Vec::new(),
    };
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    for line in stdout.lines() {
        let line = line.expect("reads");
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["sample", runs, rss, sessions, seconds] => {
                let sample = (
                    runs.parse().expect("runs"),
                    rss.parse().expect("rss"),
                    sessions.parse().expect("sessions"),
                );
                println!(
                    "  {:<24} {:>6} runs  {:>7.1} MB  {:>6} sessions in the runtime  {:>6} s",
                    curve.label,
                    sample.0,
                    sample.1 as f64 / 1024.0,
                    sample.2,
                    seconds
                );
                curve.samples.push(sample);
            }
            ["info", ..] => println!("  {:<24} {}", curve.label, &line[5..]),
            _ => println!("{line}"),
        }
    }
    let status = child.wait().expect("waits");
    assert!(status.success(), "{variant}: {status:?}");
    curve
}

/// MB per 1,000 runs over the second half of the curve.
fn late_slope(curve: &Curve) -> f64 {
    let (Some(last), Some(middle)) = (
        curve.samples.last(),
        curve.samples.get(curve.samples.len() / 2),
    ) else {
        return f64::NAN;
    };
    if last.0 == middle.0 {
        return f64::NAN;
    }
    (last.1 as f64 - middle.1 as f64) / 1024.0 / ((last.0 - middle.0) as f64 / 1000.0)
}

fn main() {
    let retention = Duration::from_secs(setting("SOAK_RETENTION_SECS", 2));
    if let Ok(variant) = std::env::var("SOAK_VARIANT") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio");
        runtime.block_on(soak((variant == "evict").then_some(retention)));
        return;
    }
    println!(
        "macp-control-plane soak: {} scripted decision runs, {} in flight, RSS every {} runs ({} cores)",
        setting("SOAK_RUNS", 10_000),
        setting("SOAK_CONCURRENCY", 8),
        setting("SOAK_EVERY", 500),
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    );
    let evict = child("evict", format!("eviction after {} s", retention.as_secs()));
    let keep = child("keep", "eviction off".to_owned());
    println!("\n  {:>6}  {:>26}  {:>26}", "runs", evict.label, keep.label);
    for (index, (runs, rss, sessions)) in evict.samples.iter().enumerate() {
        let other = keep
            .samples
            .get(index)
            .map(|(_, rss, sessions)| {
                format!("{:>7.1} MB {:>7} sess.", *rss as f64 / 1024.0, sessions)
            })
            .unwrap_or_default();
        println!(
            "  {runs:>6}  {:>7.1} MB {:>7} sess.  {other:>26}",
            *rss as f64 / 1024.0,
            sessions
        );
    }
    println!(
        "\n  growth over the second half: {:.2} MB per 1,000 runs with eviction, {:.2} MB without",
        late_slope(&evict),
        late_slope(&keep)
    );
}
