//! `macp-control-plane loadgen`: load for measuring any control plane that observes a MACP
//! runtime. It plays agents against the runtime directly (concurrent decision sessions, each
//! started by its initiator with SessionStart, paced messages from the participants, a
//! Commitment to end it) and measures what the control plane shows through its public REST/SSE
//! contract only: how long after the runtime's Ack each message's `message.received` arrives
//! on the run's stream, the rate it keeps up with, and whether anything is missing or doubled.
//! It is a client, like `cli/`: nothing here reaches into the service.
//!
//! - `agents.rs` — the MACP envelopes and the runtime's gRPC client
//! - `pacer.rs` — one schedule of turns at the target rate for all sessions
//! - `session.rs` — a slot of concurrent load: sessions one after another, each watched
//! - `watch.rs` — finding a session's run and following its stream
//! - `sse.rs` — the `text/event-stream` parser
//! - `report.rs` — what was measured: JSON and the human summary

pub mod agents;
mod pacer;
pub mod report;
mod session;
mod sse;
pub mod watch;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

pub use report::Report;

/// How often progress is printed to stderr (without `--json`).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// `macp-control-plane loadgen`.
#[derive(Args, Debug)]
pub struct LoadgenArgs {
    /// The MACP runtime the agents talk to (`host:port` or URL). In its dev mode the bearer
    /// each agent sends is its sender id
    #[arg(long, default_value = crate::runtime::embedded::DEFAULT_ADDRESS)]
    runtime: String,
    /// The control plane measured, through its REST/SSE API; several replicas of one cluster
    /// comma separated (the sessions' streams are then spread over them, and latency counts
    /// the streams on a replica that did not own the run)
    #[arg(long, default_value = "http://127.0.0.1:3001")]
    control_plane: String,
    /// API key for the control plane, sent as `authorization: Bearer <key>`
    #[arg(
        long,
        env = "MACP_API_KEY",
        hide_env_values = true,
        hide_default_value = true
    )]
    api_key: Option<SecretString>,
    /// Concurrent decision sessions
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sessions: u32,
    /// Messages per session between its SessionStart and its Commitment (at least 1: the
    /// first is a Proposal, which a Commitment needs)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    messages: u32,
    /// Target rate of envelopes (SessionStarts and Commitments included) per second, all
    /// sessions together, sent evenly
    #[arg(long, default_value_t = 100.0, value_parser = positive)]
    rate: f64,
    /// Keep starting a new session whenever one ends for this many seconds; the sessions in
    /// progress then finish (without it, each slot runs one session)
    #[arg(long, value_parser = positive)]
    duration: Option<f64>,
    /// Seconds over which the sessions' first SessionStarts are spread
    #[arg(long, default_value_t = 1.0, value_parser = not_negative)]
    ramp: f64,
    /// Seconds to wait, after a session's last send, for what the control plane has yet to
    /// show; what has not arrived by then is missing
    #[arg(long, default_value_t = 10.0, value_parser = positive)]
    grace: f64,
    /// Print the report as JSON (stdout) instead of the summary
    #[arg(long)]
    json: bool,
}

fn not_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && (0.0..=86_400.0).contains(&value) => Ok(value),
        _ => Err("a number of seconds from 0 to 86,400 is needed".into()),
    }
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 && value <= 1e7 => Ok(value),
        _ => Err("a number above 0 (and at most 10,000,000) is needed".into()),
    }
}

/// A load run, as the library takes it.
#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: String,
    pub control_plane: String,
    pub api_key: Option<SecretString>,
    pub sessions: usize,
    pub messages: usize,
    /// Envelopes per second.
    pub rate: f64,
    /// New sessions start until this has passed (else one per slot).
    pub duration: Option<Duration>,
    /// The first sessions start spread over this.
    pub ramp: Duration,
    pub grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Argument(String),
    #[error("cannot reach the {0}")]
    Unreachable(String),
    #[error("{0}")]
    Refused(String),
}

/// Counters for the progress line.
#[derive(Default)]
pub struct Progress {
    accepted: AtomicU64,
    seen: AtomicU64,
}

impl Progress {
    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    fn seen(&self) {
        self.seen.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every slot shares.
struct Shared {
    config: Config,
    runtimes: Vec<agents::Runtime>,
    control_planes: Vec<watch::ControlPlane>,
    pacer: pacer::Pacer,
    progress: Arc<Progress>,
    started: Instant,
    end: Option<Instant>,
}

impl Shared {
    fn past_end(&self) -> bool {
        self.end.is_some_and(|end| Instant::now() >= end)
    }
}

/// Runs the load and measures it; `progress` prints counts to stderr every few seconds.
pub async fn run(config: Config, progress: bool) -> Result<Report, Error> {
    if config.sessions == 0
        || config.messages == 0
        || !config.rate.is_finite()
        || config.rate <= 0.0
    {
        return Err(Error::Argument(
            "sessions, messages and rate must be above 0".into(),
        ));
    }
    let mut control_planes = Vec::new();
    for base in config.control_plane.split(',').map(str::trim) {
        let control_plane =
            watch::ControlPlane::new(base, config.api_key.as_ref().map(|key| key.expose_secret()))?;
        control_plane.check().await?;
        control_planes.push(control_plane);
    }
    let connections = config.sessions.div_ceil(agents::SESSIONS_PER_CONNECTION);
    let mut runtimes = Vec::with_capacity(connections);
    for _ in 0..connections {
        runtimes.push(agents::Runtime::connect(&config.runtime).await?);
    }
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        end: config.duration.map(|duration| started + duration),
        pacer: pacer::Pacer::new(config.rate),
        progress: Arc::new(Progress::default()),
        runtimes,
        control_planes,
        config: config.clone(),
    });
    let printer = progress.then(|| tokio::spawn(print_progress(shared.progress.clone(), started)));
    let owners = (shared.control_planes.len() > 1)
        .then(|| watch::Owners::watch(shared.control_planes.clone()));
    let slots: Vec<_> = (0..config.sessions)
        .map(|index| tokio::spawn(session::slot(shared.clone(), index)))
        .collect();
    let mut outcomes = Vec::new();
    for slot in slots {
        match slot.await {
            Ok(mut slot) => outcomes.append(&mut slot),
            // A slot's task only ends early by a panic, a bug: the report says so.
            Err(error) => outcomes.push(report::SessionOutcome {
                problem: Some(format!("a session task failed: {error}")),
                ..report::SessionOutcome::default()
            }),
        }
    }
    if let Some(printer) = printer {
        printer.abort();
    }
    if let Some(owners) = owners {
        let owners = owners.finish().await;
        for outcome in &mut outcomes {
            outcome.observed.crossed_replicas = owners
                .get(&outcome.session_id)
                .is_some_and(|&owner| owner != outcome.observed.followed);
        }
    }
    Ok(Report::build(
        config.runtime.clone(),
        config.control_plane.clone(),
        report::Target {
            sessions: config.sessions,
            messages_per_session: config.messages,
            rate: config.rate,
            duration_secs: config.duration.map(|duration| duration.as_secs_f64()),
            ramp_secs: config.ramp.as_secs_f64(),
            replicas: shared.control_planes.len(),
        },
        started,
        &outcomes,
    ))
}

async fn print_progress(progress: Arc<Progress>, started: Instant) {
    let mut ticker = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        ticker.tick().await;
        eprintln!(
            "loadgen: {:>4.0} s  {} accepted, {} seen on SSE",
            started.elapsed().as_secs_f64(),
            progress.accepted.load(Ordering::Relaxed),
            progress.seen.load(Ordering::Relaxed)
        );
    }
}

/// The subcommand: exit 0 when nothing was missing or duplicated, 1 when something was, 2 when
/// the load could not be run.
pub async fn main(args: LoadgenArgs) -> ExitCode {
    let config = Config {
        runtime: args.runtime,
        control_plane: args.control_plane,
        api_key: args.api_key,
        sessions: args.sessions as usize,
        messages: args.messages as usize,
        rate: args.rate,
        duration: args.duration.map(Duration::from_secs_f64),
        ramp: Duration::from_secs_f64(args.ramp),
        grace: Duration::from_secs_f64(args.grace),
    };
    let report = match run(config, !args.json).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let printed = if args.json {
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| writeln!(std::io::stdout(), "{json}"))
    } else {
        write!(std::io::stdout(), "{}", report.text())
    };
    if let Err(error) = printed {
        eprintln!("error: cannot print the report: {error}");
        return ExitCode::from(2);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// An error with its sources: transport errors say little at the top. Layers that repeat their
/// source's text are said once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
