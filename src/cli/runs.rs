//! `macp-control-plane runs …`: start, list, inspect, follow, cancel and replay runs on a running
//! service over its gRPC API. Human output by default, `--json` for proto3 JSON (NDJSON for
//! streams). Exit codes: 0 success (for `watch`: the run completed), 1 an error or a failed run,
//! 3 a cancelled run (`watch`), 130 interrupted.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::render::{self, Failure, StreamView};
use super::{Client, Connection, Screen, Spinner, print_line, print_lines, report};
use crate::api::proto;
use crate::domain::status::RunStatus;

/// `watch` of a run that ended cancelled: distinct from a failure, so scripts can tell.
const EXIT_CANCELLED: u8 = 3;
/// The shell's convention for a process ended by Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Args)]
pub struct RunsCommand {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Start a run from an ExecutionRequest JSON file (`-` reads it from stdin)
    Start { file: String },
    /// List runs
    List {
        /// Only runs in this status (queued, running, completed, failed, cancelled, …)
        #[arg(long)]
        status: Option<String>,
        /// Only runs carrying this tag (repeat for several)
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one run
    Get { run_id: String },
    /// Follow a run live until it ends: one line per event and a status line (exit 0 when it
    /// completes, 1 when it fails, 3 when it is cancelled)
    Watch { run_id: String },
    /// Cancel a run's runtime session (a finished run is returned unchanged)
    Cancel {
        run_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replay a stored run's events (the runtime is not involved)
    Replay {
        run_id: String,
        /// Divides the original spacing between events (timed mode; 0.1 to 1000)
        #[arg(long)]
        speed: Option<f64>,
        /// instant, timed (the service's default) or step (each event followed by the state
        /// after it)
        #[arg(long)]
        mode: Option<String>,
        /// First seq to replay
        #[arg(long)]
        from_seq: Option<u32>,
        /// Last seq to replay
        #[arg(long)]
        to_seq: Option<u32>,
    },
    /// Show a run's decision receipt (the runtime's signed record of how its session resolved)
    Receipt {
        run_id: String,
        /// Check the signature against the keys the runtime publishes (its GetReceiptKeys);
        /// exit 1 when it does not verify
        #[arg(long)]
        verify: bool,
    },
    /// List a run's stored events
    Events {
        run_id: String,
        /// Only events after this seq
        #[arg(long)]
        after_seq: Option<u32>,
        #[arg(long)]
        limit: Option<u32>,
    },
}

pub async fn run(command: RunsCommand) -> ExitCode {
    let json = command.connection.json;
    let outcome = tokio::select! {
        outcome = execute(&command) => outcome,
        () = interrupted() => {
            eprintln!("interrupted");
            return ExitCode::from(EXIT_INTERRUPTED);
        }
    };
    outcome.unwrap_or_else(|failure| {
        report(&failure, json);
        ExitCode::FAILURE
    })
}

/// Resolves on Ctrl-C; never, if the handler cannot be installed (the default action, ending
/// the process, then still applies).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn execute(command: &RunsCommand) -> Result<ExitCode, Failure> {
    let connection = &command.connection;
    let json = connection.json;
    match &command.action {
        Action::Start { file } => {
            let request = read_request(file).await?;
            let started = unary(connection, "starting the run", async |client| {
                client
                    .run_start(proto::RunStartRequest {
                        request: Some(request),
                        ..Default::default()
                    })
                    .await
            })
            .await?;
            show(json, &started, render::started_lines)
        }
        Action::List {
            status,
            tags,
            limit,
        } => {
            let request = proto::ListRunsRequest {
                status: status.clone(),
                tags: tags.clone(),
                limit: *limit,
                ..proto::ListRunsRequest::default()
            };
            let page = unary(connection, "listing runs", async |client| {
                client.list_runs(request).await
            })
            .await?;
            show(json, &page, render::run_table)
        }
        Action::Get { run_id } => {
            let request = proto::GetRunRequest {
                run_id: run_id.clone(),
            };
            let run = unary(connection, "reading the run", async |client| {
                client.get_run(request).await
            })
            .await?;
            show(json, &run, render::run_lines)
        }
        Action::Cancel { run_id, reason } => {
            let request = proto::CancelRunRequest {
                run_id: run_id.clone(),
                reason: reason.clone(),
            };
            let run = unary(connection, "cancelling the run", async |client| {
                client.cancel_run(request).await
            })
            .await?;
            show(json, &run, render::run_lines)
        }
        Action::Events {
            run_id,
            after_seq,
            limit,
        } => {
            let request = proto::ListRunEventsRequest {
                run_id: run_id.clone(),
                after_seq: *after_seq,
                limit: *limit,
                ..proto::ListRunEventsRequest::default()
            };
            let page = unary(connection, "reading events", async |client| {
                client.list_run_events(request).await
            })
            .await?;
            show(json, &page, render::events_page)
        }
        Action::Receipt { run_id, verify } => receipt(connection, run_id, *verify).await,
        Action::Watch { run_id } => {
            let (mut client, spinner) = connect(connection).await?;
            spinner.message(format!("waiting for run {run_id}"));
            let stream = client
                .watch_run(proto::WatchRunRequest {
                    run_id: run_id.clone(),
                    include_snapshot: Some(true),
                    // The command ends with the run, so its exit code can report the outcome.
                    end_at_terminal: true,
                    ..proto::WatchRunRequest::default()
                })
                .await
                .map_err(|status| Failure::from_status(&status))?
                .into_inner();
            let view = follow(stream, json, spinner).await?;
            match view.outcome() {
                Some(RunStatus::Completed) => Ok(ExitCode::SUCCESS),
                Some(RunStatus::Cancelled) => Ok(ExitCode::from(EXIT_CANCELLED)),
                Some(_) => Ok(ExitCode::FAILURE),
                None => Err(Failure::new(
                    "UNAVAILABLE",
                    "the stream ended before the run finished",
                )),
            }
        }
        Action::Replay {
            run_id,
            speed,
            mode,
            from_seq,
            to_seq,
        } => {
            let (mut client, spinner) = connect(connection).await?;
            spinner.message(format!("replaying run {run_id}"));
            let stream = client
                .replay(proto::ReplayRunRequest {
                    run_id: run_id.clone(),
                    mode: mode.clone(),
                    speed: *speed,
                    from_seq: *from_seq,
                    to_seq: *to_seq,
                })
                .await
                .map_err(|status| Failure::from_status(&status))?
                .into_inner();
            follow(stream, json, spinner).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `runs receipt`: the receipt, and with `verify` its check against the runtime's keys (asked
/// of the runtime through the service now, not stored with the receipt).
async fn receipt(connection: &Connection, run_id: &str, verify: bool) -> Result<ExitCode, Failure> {
    let (mut client, spinner) = connect(connection).await?;
    spinner.message("reading the receipt");
    let receipt = client
        .get_run_receipt(proto::GetRunReceiptRequest {
            run_id: run_id.to_owned(),
        })
        .await
        .map_err(|status| Failure::from_status(&status))?
        .into_inner();
    if !verify {
        drop(spinner);
        return show(connection.json, &receipt, render::receipt_lines);
    }
    spinner.message("reading the runtime's receipt keys");
    let keys = client
        .get_runtime_receipt_keys(proto::GetRuntimeReceiptKeysRequest {})
        .await
        .map_err(|status| Failure::from_status(&status))?
        .into_inner();
    drop(spinner);
    let jwks = serde_json::to_value(keys.jwks.unwrap_or_default())
        .map_err(|error| Failure::new("INTERNAL", format!("cannot read the keys: {error}")))?;
    let verification = crate::runs::receipt::check(&receipt.receipt_json, &jwks)
        .map_err(|message| Failure::new("INVALID_RECEIPT", message))?;
    let verified = crate::runs::receipt::verified(&verification);
    let verification = serde_json::to_value(&verification)
        .map_err(|error| Failure::new("INTERNAL", format!("cannot render JSON: {error}")))?;
    let checked = serde_json::json!({
        "receipt": receipt,
        "verified": verified,
        "verification": verification,
    });
    show(connection.json, &checked, |_| {
        let mut lines = render::receipt_lines(&receipt);
        lines.push(render::verification_line(&receipt, &verification));
        lines
    })?;
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The ExecutionRequest in proto3 JSON (camelCase or snake_case names), from a file or stdin.
async fn read_request(file: &str) -> Result<proto::ExecutionRequest, Failure> {
    let text = if file == "-" {
        let mut text = String::new();
        tokio::io::stdin()
            .read_to_string(&mut text)
            .await
            .map(|_| text)
    } else {
        tokio::fs::read_to_string(file).await
    }
    .map_err(|error| Failure::new("INVALID_ARGUMENT", format!("cannot read {file}: {error}")))?;
    serde_json::from_str(&text).map_err(|error| {
        Failure::new(
            "INVALID_ARGUMENT",
            format!("{file} is not an ExecutionRequest: {error}"),
        )
    })
}

/// Connects with a spinner that the caller keeps turning while it waits.
async fn connect(connection: &Connection) -> Result<(Client, Spinner), Failure> {
    let spinner = Spinner::start(format!("connecting to {}", connection.url()));
    let client = connection.connect().await?;
    Ok((client, spinner))
}

/// One unary call, with a spinner saying what it is doing while it waits.
async fn unary<T>(
    connection: &Connection,
    doing: &'static str,
    call: impl AsyncFnOnce(&mut Client) -> Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, Failure> {
    let (mut client, spinner) = connect(connection).await?;
    spinner.message(doing);
    call(&mut client)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| Failure::from_status(&status))
}

fn output_failure(error: std::io::Error) -> Failure {
    Failure::new("OUTPUT_ERROR", format!("cannot write output: {error}"))
}

/// A message as one line of JSON, safe on a terminal (`render::printable_json`).
fn to_json<T: Serialize>(message: &T) -> Result<String, Failure> {
    serde_json::to_string(message)
        .map(|json| render::printable_json(&json).into_owned())
        .map_err(|error| Failure::new("INTERNAL", format!("cannot render JSON: {error}")))
}

/// Prints a response: its proto3 JSON, or its human lines.
fn show<T: Serialize>(
    json: bool,
    message: &T,
    lines: impl FnOnce(&T) -> Vec<String>,
) -> Result<ExitCode, Failure> {
    if json {
        print_line(&to_json(message)?)
    } else {
        print_lines(&lines(message))
    }
    .map_err(output_failure)?;
    Ok(ExitCode::SUCCESS)
}

/// What a streamed item carries, for the items of `WatchRun` and `Replay` alike.
enum Item<'a> {
    Event(&'a proto::CanonicalEvent),
    Snapshot(&'a pbjson_types::Struct),
    Heartbeat,
}

trait StreamItem: Serialize {
    fn item(&self) -> Item<'_>;
}

impl StreamItem for proto::WatchRunResponse {
    fn item(&self) -> Item<'_> {
        use proto::watch_run_response::Item as Watch;
        match &self.item {
            Some(Watch::Event(event)) => Item::Event(event),
            Some(Watch::Snapshot(snapshot)) => Item::Snapshot(snapshot),
            Some(Watch::Heartbeat(_)) | None => Item::Heartbeat,
        }
    }
}

impl StreamItem for proto::ReplayResponse {
    fn item(&self) -> Item<'_> {
        use proto::replay_response::Item as Replay;
        match &self.item {
            Some(Replay::Event(event)) => Item::Event(event),
            Some(Replay::Snapshot(snapshot)) => Item::Snapshot(snapshot),
            None => Item::Heartbeat,
        }
    }
}

/// Prints a stream until it ends: NDJSON of the items with `--json`, otherwise one line per
/// event and the status line. Returns what the stream showed about the run.
async fn follow<T: StreamItem>(
    mut stream: tonic::Streaming<T>,
    json: bool,
    spinner: Spinner,
) -> Result<StreamView, Failure> {
    let mut spinner = Some(spinner);
    let mut screen = None;
    let mut view = StreamView::default();
    while let Some(message) = stream
        .message()
        .await
        .map_err(|status| Failure::from_status(&status))?
    {
        // The first item ends the wait: the spinner goes, the output starts.
        spinner = None;
        let screen = screen.get_or_insert_with(|| Screen::new(json));
        if json {
            screen.line(&to_json(&message)?).map_err(output_failure)?;
        }
        match message.item() {
            Item::Event(event) => {
                let line = view.event(event);
                if !json {
                    screen.line(&line).map_err(output_failure)?;
                }
            }
            Item::Snapshot(snapshot) => {
                let snapshot = serde_json::to_value(snapshot).unwrap_or_default();
                if let Some(line) = view.snapshot(&snapshot)
                    && !json
                {
                    screen.status(line).map_err(output_failure)?;
                }
            }
            Item::Heartbeat => {}
        }
    }
    drop(spinner);
    if let Some(screen) = screen {
        if let Some(line) = view.finish()
            && !json
        {
            screen.status(line).map_err(output_failure)?;
        }
        screen.finish();
    }
    Ok(view)
}
