//! The operator CLI (`macp-control-plane runs …`), run as the built binary against a served
//! instance: start a run, watch it to completion, replay it, read it, cancel a live one, and
//! report errors with their errorCode.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend, TestApp};

/// Generous: the binary, the service and the runtime share a loaded 2-core machine.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Outcome {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {}", self.stdout))
    }
}

fn command(app: &TestApp, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"));
    command
        .arg("runs")
        .args(args)
        .args(["--address", &app.base, "--api-key", "test-key"])
        .env_remove("MACP_ADDRESS")
        .env_remove("MACP_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(child: tokio::process::Child, args: &[&str]) -> Outcome {
    let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`runs {}` did not finish in {CLI_TIMEOUT:?}",
                args.join(" ")
            )
        })
        .expect("the CLI runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub(crate) async fn cli(app: &TestApp, args: &[&str]) -> Outcome {
    let child = command(app, args).spawn().expect("the CLI starts");
    finish(child, args).await
}

/// The seqs of human event lines (those starting with a number), in output order.
fn line_seqs(stdout: &str) -> Vec<u32> {
    stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

async fn stored_seqs(app: &TestApp, run_id: &str) -> Vec<u32> {
    app.events(run_id)
        .await
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq") as u32)
        .collect()
}

fn request_file(request: &Value) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), request.to_string()).expect("write the request");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_starts_watches_replays_and_reads_a_run() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let file = request_file(&requests::scripted_decision());
    let path = file.path().to_str().expect("utf-8 path");

    let started = cli(&app, &["start", path, "--json"]).await;
    assert_eq!(started.code, Some(0), "{}", started.stderr);
    let started = started.json();
    let run_id = started["runId"].as_str().expect("runId").to_owned();
    assert_eq!(started["status"], "queued");

    // Watch to completion: exit 0, every stored event once, in seq order, ending completed.
    let watched = cli(&app, &["watch", &run_id]).await;
    assert_eq!(
        watched.code,
        Some(0),
        "{}\n{}",
        watched.stdout,
        watched.stderr
    );
    assert!(
        watched.stdout.contains("run.completed"),
        "{}",
        watched.stdout
    );
    let seqs = line_seqs(&watched.stdout);
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    assert_eq!(seqs, stored_seqs(&app, &run_id).await);
    let last = watched.stdout.lines().last().expect("output");
    assert!(
        last.starts_with("-- run completed | seq"),
        "the last line is the final status: {last}"
    );
    assert!(watched.stdout.contains("decision decision.selected"));

    // Replay as NDJSON: one proto3 JSON item per line, the stored events in order.
    let replayed = cli(&app, &["replay", &run_id, "--mode", "instant", "--json"]).await;
    assert_eq!(replayed.code, Some(0), "{}", replayed.stderr);
    let items: Vec<Value> = replayed
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("an NDJSON line"))
        .collect();
    let replay_seqs: Vec<u32> = items
        .iter()
        .map(|item| item["event"]["seq"].as_u64().expect("an event item") as u32)
        .collect();
    assert_eq!(replay_seqs, stored_seqs(&app, &run_id).await);

    // Step replay in human form: each event, then the status after it.
    let stepped = cli(
        &app,
        &["replay", &run_id, "--mode", "step", "--to-seq", "3"],
    )
    .await;
    assert_eq!(stepped.code, Some(0), "{}", stepped.stderr);
    assert_eq!(line_seqs(&stepped.stdout), [1, 2, 3]);
    assert!(stepped.stdout.contains("-- run "), "{}", stepped.stdout);

    let run = cli(&app, &["get", &run_id, "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let run = run.json();
    assert_eq!(run["id"], json!(run_id));
    assert_eq!(run["status"], "completed");
    let human = cli(&app, &["get", &run_id]).await;
    assert!(
        human.stdout.contains("status:          completed"),
        "{}",
        human.stdout
    );

    let events = cli(
        &app,
        &[
            "events",
            &run_id,
            "--after-seq",
            "2",
            "--limit",
            "3",
            "--json",
        ],
    )
    .await;
    assert_eq!(events.code, Some(0), "{}", events.stderr);
    let seqs: Vec<u64> = events.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let human = cli(&app, &["events", &run_id, "--limit", "2"]).await;
    assert_eq!(line_seqs(&human.stdout), [1, 2]);
    assert!(
        human.stdout.contains("more with --after-seq 2"),
        "{}",
        human.stdout
    );

    let listed = cli(
        &app,
        &["list", "--tag", "test", "--status", "completed", "--json"],
    )
    .await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let listed = listed.json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|run| run["id"].as_str())
        .collect();
    assert_eq!(ids, [run_id.as_str()]);
    let human = cli(&app, &["list", "--limit", "5"]).await;
    assert!(human.stdout.starts_with("ID "), "{}", human.stdout);
    assert!(human.stdout.contains(&run_id));

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_cancels_a_live_run_and_reports_errors() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    // The seed example stays running until cancelled.
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;

    // A watcher follows the live run; the cancel below ends it with the cancelled exit code.
    let watch_args = ["watch", run_id.as_str()];
    let watcher = command(&app, &watch_args).spawn().expect("the CLI starts");

    let cancelled = cli(
        &app,
        &["cancel", &run_id, "--reason", "test over", "--json"],
    )
    .await;
    assert_eq!(cancelled.code, Some(0), "{}", cancelled.stderr);
    assert_eq!(cancelled.json()["status"], "cancelled");

    let watched = finish(watcher, &watch_args).await;
    assert_eq!(
        watched.code,
        Some(3),
        "{}\n{}",
        watched.stdout,
        watched.stderr
    );
    assert!(
        watched.stdout.contains("run.cancelled"),
        "{}",
        watched.stdout
    );
    assert_eq!(line_seqs(&watched.stdout), stored_seqs(&app, &run_id).await);

    // Errors: the errorCode from the status metadata, non-zero exit, JSON with --json.
    let missing = cli(&app, &["get", "no-such-run"]).await;
    assert_ne!(missing.code, Some(0));
    assert!(
        missing.stderr.starts_with("error: RUN_NOT_FOUND: "),
        "{}",
        missing.stderr
    );
    let missing = cli(&app, &["watch", "no-such-run", "--json"]).await;
    assert_ne!(missing.code, Some(0));
    let body: Value = serde_json::from_str(missing.stderr.trim()).expect("a JSON error");
    assert_eq!(body["errorCode"], "RUN_NOT_FOUND");

    // Field problems are listed one per line.
    let mut invalid = requests::scripted_decision();
    invalid["session"]["participants"][1]["id"] = json!("fraud-agent");
    let file = request_file(&invalid);
    let refused = cli(&app, &["start", file.path().to_str().expect("utf-8 path")]).await;
    assert_ne!(refused.code, Some(0));
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert!(
        lines[0].starts_with("error: VALIDATION_ERROR: "),
        "{}",
        refused.stderr
    );
    assert!(
        lines[1..]
            .iter()
            .any(|line| line.starts_with("  session.participants[1].id: ")),
        "{}",
        refused.stderr
    );

    app.stop().await;
}
