//! Replicas benchmark (`cargo bench --bench cluster`): 1, 2 and 3 `serve` processes
//! (`CLUSTER_ENABLED`) on one fresh PostgreSQL database each time, the reference runtime as a
//! process of its own, and the load generator (`macp-control-plane loadgen`, in process)
//! playing agents at a paced rate while it follows every run's SSE stream, the streams spread
//! over the replicas; with two or three, latency counts the streams on a replica that did not
//! own the run (about two in three). Printed per row: accept → SSE latency
//! (p50/p99/max over those messages, and the median and worst of each second's p99 once the
//! first sessions have started, the steady state), accepted and observed messages per second,
//! how long after its SessionStart each run's stream answered (p50 / max), streams that
//! crossed replicas, missing/duplicated messages and the replicas' resident memory; then
//! observed throughput at the peak rate for 2 and 3 replicas as ratios of 1 replica's,
//! measured in the same run. The first row is the baseline: one process without
//! `CLUSTER_ENABLED`, the same load.
//!
//! `BENCH_CLUSTER_RATE` (1000 msg/s, the latency rows), `BENCH_CLUSTER_PEAK_RATE` (3000),
//! `BENCH_CLUSTER_REPLICAS` (`1,2,3`; set, it also leaves the single-process row out),
//! `BENCH_CLUSTER_SECONDS` (20), `BENCH_CLUSTER_TIMELINE` (set: each second's figures under
//! its row), `MACP_TEST_POSTGRES_URL` (the server's `postgres` database,
//! `postgres://postgres@127.0.0.1:5432/postgres`). All processes share the machine: on the
//! 2-core machine more replicas are more processes on the same two cores.

use std::process::Stdio;
use std::time::Duration;

use macp_control_plane::loadgen::{self, Report};
use sea_orm::{ConnectionTrait as _, Database};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const BINARY: &str = env!("CARGO_BIN_EXE_macp-control-plane");
const P99_TARGET_MS: f64 = 100.0;
/// Seconds of the ramp and first discoveries left out of the steady state: the first sessions
/// all start within the first second, and their runs appear while their agents already talk.
const WARM_UP_SECONDS: u64 = 2;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn admin_url() -> String {
    std::env::var("MACP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A child process, killed by PID when dropped (`kill_on_drop`).
struct Process {
    child: tokio::process::Child,
    address: String,
}

impl Process {
    /// Starts `args` with `env` (nothing inherited) and waits for the line `listening` picks
    /// the address from, on stdout or stderr.
    async fn spawn(
        args: &[&str],
        env: &[(&str, String)],
        listening: fn(&str) -> Option<String>,
    ) -> Process {
        let mut command = tokio::process::Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the process starts");
        let (lines, mut received) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for reader in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(stderr),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = lines.send(line);
                }
            });
        }
        drop(lines);
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = received.recv().await {
                if let Some(address) = listening(&line) {
                    return address;
                }
            }
            panic!("{args:?} exited before listening");
        })
        .await
        .expect("listening within 60 s");
        tokio::spawn(async move { while received.recv().await.is_some() {} });
        Process { child, address }
    }

    /// Resident memory in MB (`/proc/<pid>/statm`, 4 KiB pages).
    fn rss_mb(&self) -> f64 {
        let pages = self
            .child
            .id()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/statm")).ok())
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0);
        pages * 4096.0 / 1_048_576.0
    }
}

fn serve_listening(line: &str) -> Option<String> {
    let log: serde_json::Value = serde_json::from_str(line).ok()?;
    log["fields"]["message"]
        .as_str()?
        .starts_with("macp-control-plane listening")
        .then(|| log["fields"]["address"].as_str().map(str::to_owned))?
}

fn runtime_listening(line: &str) -> Option<String> {
    if !line.contains("MACP reference runtime listening") {
        return None;
    }
    line.split("address=")
        .nth(1)?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

struct Row {
    replicas: usize,
    clustered: bool,
    rate: f64,
    report: Report,
    rss_mb: Vec<f64>,
}

/// One measurement: a fresh database, runtime and `replicas` services, one load run.
async fn measure(replicas: usize, clustered: bool, rate: f64, seconds: f64) -> Row {
    let admin = Database::connect(admin_url())
        .await
        .expect("PostgreSQL answers (MACP_TEST_POSTGRES_URL)");
    let name = format!("cp_bench_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the database");
    let base = admin_url()
        .rsplit_once('/')
        .map(|(base, _)| base.to_owned())
        .unwrap_or_default();
    let database_url = format!("{base}/{name}");
    let runtime = Process::spawn(
        &["runtime"],
        &[
            ("MACP_BIND_ADDR", "127.0.0.1:0".to_owned()),
            ("MACP_ALLOW_INSECURE", "1".to_owned()),
            ("MACP_MEMORY_ONLY", "1".to_owned()),
            ("MACP_SESSION_START_LIMIT_PER_MINUTE", "1000000".to_owned()),
            ("MACP_MESSAGE_LIMIT_PER_MINUTE", "100000000".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
        runtime_listening,
    )
    .await;
    let mut services = Vec::new();
    for index in 0..replicas {
        services.push(
            Process::spawn(
                &["serve"],
                &[
                    ("HOST", "127.0.0.1".to_owned()),
                    ("PORT", "0".to_owned()),
                    ("LOG_FORMAT", "json".to_owned()),
                    ("LOG_LEVEL", "warn,macp_control_plane=info".to_owned()),
                    ("DATABASE_URL", database_url.clone()),
                    ("RUNTIME_ADDRESS", runtime.address.clone()),
                    ("CLUSTER_ENABLED", clustered.to_string()),
                    ("REPLICA_ID", format!("bench-{index}")),
                    (
                        "PACKS_DIR",
                        concat!(env!("CARGO_MANIFEST_DIR"), "/packs").to_owned(),
                    ),
                ],
                serve_listening,
            )
            .await,
        );
    }
    let control_plane = services
        .iter()
        .map(|service| format!("http://{}", service.address))
        .collect::<Vec<_>>()
        .join(",");
    let report = loadgen::run(
        loadgen::Config {
            runtime: runtime.address.clone(),
            control_plane,
            api_key: None,
            sessions: 100,
            messages: 100,
            rate,
            duration: Some(Duration::from_secs_f64(seconds)),
            ramp: Duration::from_secs(1),
            grace: Duration::from_secs(10),
        },
        false,
    )
    .await
    .expect("the load runs");
    let rss_mb = services.iter().map(Process::rss_mb).collect();
    drop(services);
    drop(runtime);
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    Row {
        replicas,
        clustered,
        rate,
        report,
        rss_mb,
    }
}

/// The median and the worst of each second's p99 after the warm-up (seconds with messages).
fn steady_p99(report: &Report) -> (f64, f64) {
    let mut seconds: Vec<f64> = report
        .timeline
        .iter()
        .filter(|second| second.second >= WARM_UP_SECONDS && second.seen > 0)
        .map(|second| second.p99_ms)
        .collect();
    seconds.sort_by(f64::total_cmp);
    match (seconds.get(seconds.len() / 2), seconds.last()) {
        (Some(median), Some(worst)) => (*median, *worst),
        _ => (f64::NAN, f64::NAN),
    }
}

fn print_row(row: &Row) {
    let report = &row.report;
    let latency = &report.accept_to_sse_ms;
    let (steady, worst) = steady_p99(report);
    println!(
        "| {}{} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} / {:.1} | {:.0} / {:.0} | {} of {} | {} / {} | {} |",
        row.replicas,
        if row.clustered {
            ""
        } else {
            " (single process)"
        },
        row.rate,
        report.rates.accepted,
        report.rates.observed,
        latency.p50,
        latency.p99,
        latency.max,
        steady,
        worst,
        report.run_found_ms.p50,
        report.run_found_ms.max,
        report.sessions.crossed_replicas,
        report.sessions.started,
        report.messages.missing,
        report.messages.duplicated,
        row.rss_mb
            .iter()
            .map(|mb| format!("{mb:.0}"))
            .collect::<Vec<_>>()
            .join(" + "),
    );
}

#[tokio::main]
async fn main() {
    let rate = setting("BENCH_CLUSTER_RATE", 1000.0);
    let peak = setting("BENCH_CLUSTER_PEAK_RATE", 3000.0);
    let seconds = setting("BENCH_CLUSTER_SECONDS", 20.0);
    println!(
        "replicas on one PostgreSQL: 100 sessions x 100 messages, {seconds} s per row; latency is \
         runtime Ack -> message.received on SSE, over the streams on a replica that does not own the run"
    );
    println!(
        "| replicas | target/s | accepted/s | observed/s | p50 ms | p99 ms | max ms | steady p99 ms (median / worst second) | run found ms (p50 / max) | streams crossing replicas | missing / duplicated | RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    let counts: Vec<usize> = match std::env::var("BENCH_CLUSTER_REPLICAS") {
        Ok(list) => list
            .split(',')
            .filter_map(|count| count.trim().parse().ok())
            .collect(),
        Err(_) => {
            let row = measure(1, false, rate, seconds).await;
            print_row(&row);
            rows.push(row);
            vec![1, 2, 3]
        }
    };
    for target in [rate, peak] {
        for &replicas in &counts {
            let row = measure(replicas, true, target, seconds).await;
            print_row(&row);
            if std::env::var_os("BENCH_CLUSTER_TIMELINE").is_some() {
                for second in &row.report.timeline {
                    println!(
                        "    second {:>2}: accepted {:>4}, seen {:>4}, p50 {:>6.1} ms, p99 {:>6.1} ms, max {:>6.0} ms",
                        second.second,
                        second.accepted,
                        second.seen,
                        second.p50_ms,
                        second.p99_ms,
                        second.max_ms
                    );
                }
            }
            rows.push(row);
        }
    }
    let observed = |replicas: usize, target: f64| {
        rows.iter()
            .find(|row| row.clustered && row.replicas == replicas && row.rate == target)
            .map_or(0.0, |row| row.report.rates.observed)
    };
    let one = observed(1, peak).max(f64::MIN_POSITIVE);
    println!(
        "observed throughput at {peak:.0} msg/s offered: 2 replicas {:.2}x, 3 replicas {:.2}x of 1 replica's ({one:.0}/s)",
        observed(2, peak) / one,
        observed(3, peak) / one,
    );
    if let Some(row) = rows
        .iter()
        .find(|row| row.replicas == 3 && row.rate == rate)
    {
        let p99 = row.report.accept_to_sse_ms.p99;
        let (steady, worst) = steady_p99(&row.report);
        let verdict = |ms: f64| {
            if ms <= P99_TARGET_MS {
                "within"
            } else {
                "over"
            }
        };
        println!(
            "cross-replica p99 at {rate:.0} msg/s over 3 replicas: {p99:.1} ms over every message \
             ({} the {P99_TARGET_MS} ms target); steady state (from second {WARM_UP_SECONDS}) \
             median second {steady:.1} ms, worst second {worst:.1} ms ({} the target)",
            verdict(p99),
            verdict(worst),
        );
    }
    let clean = rows
        .iter()
        .all(|row| row.report.messages.missing == 0 && row.report.messages.duplicated == 0);
    println!(
        "missing or duplicated messages: {}",
        if clean { "none" } else { "SOME (see the rows)" }
    );
}
