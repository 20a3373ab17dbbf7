//! `/metrics`: the exposition parses with a strict Prometheus text-format parser, made-up gRPC
//! paths add no series (their route label is `unmatched`), and a finished run is counted in
//! `macp_run_duration_seconds`.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::requests;

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

/// `GET /metrics`, parsed; a text the parser refuses fails the test.
async fn scrape(http: &reqwest::Client, base: &str) -> (String, Exposition) {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.expect("text");
    let parsed =
        parse_prometheus(&text).unwrap_or_else(|error| panic!("{error}; exposition:\n{text}"));
    (text, parsed)
}

/// Every series (family and label set), except those of the runtime calls the service makes on
/// its own: the session watcher opens its stream in the background, whenever it gets to it.
fn series(exposition: &Exposition) -> BTreeSet<(String, Vec<(String, String)>)> {
    exposition
        .families
        .values()
        .filter(|family| !family.family_name.starts_with("macp_runtime_call"))
        .flat_map(|family| {
            family.iter_samples().map(|sample| {
                let labels = sample.get_labelset().expect("labels");
                let labels = labels
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                (family.family_name.clone(), labels)
            })
        })
        .collect()
}

/// A `serve` process of its own (the registry is process-wide, and other tests in this binary
/// add series as they run), with SQLite in `dir` and the embedded runtime; its base URL.
async fn serve(dir: &tempfile::TempDir) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"))
        .arg("serve")
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("metrics.db").display()
            ),
        )
        .env("PACKS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/packs"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    // The address it listens on is in its "listening" log line (the embedded runtime logs its
    // own address before it); both streams are read to
    // their end so that logging never blocks it.
    let (lines, mut received) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    for mut reader in [
        BufReader::new(Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>).lines(),
        BufReader::new(Box::new(stderr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>).lines(),
    ] {
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = lines.send(line);
            }
        });
    }
    drop(lines);
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = received.recv().await {
            if let Ok(log) = serde_json::from_str::<Value>(&line)
                && log["fields"]["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("macp-control-plane listening"))
                && let Some(address) = log["fields"]["address"].as_str()
            {
                return address.to_owned();
            }
        }
        panic!("serve exited without listening");
    })
    .await
    .expect("serve listens within 30 s");
    (child, format!("http://{address}"))
}

/// A gRPC call (HTTP/2, an empty message) to `path`; its HTTP status and `grpc-status`.
async fn grpc_call(client: &reqwest::Client, base: &str, path: &str) -> (u16, Option<String>) {
    let response = client
        .post(format!("{base}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8; 5])
        .send()
        .await
        .expect("grpc request");
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), grpc_status)
}

/// Made-up paths: methods our services do not have, and services we do not serve, some with
/// (percent-encoded) quotes and backslashes.
fn made_up_path(n: usize) -> String {
    match n % 4 {
        0 => format!("/macp.control_plane.v1.ControlPlane/Nope{n}"),
        1 => format!("/foo.Bar/Baz{n}"),
        2 => format!("/macp.control_plane.v1.ControlPlane/Nope{n}%22%5C"),
        _ => format!("/foo.Bar/Baz{n}%22%5C%22"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_grpc_paths_add_no_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, base) = serve(&dir).await;
    let grpc = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let http = reqwest::Client::new();

    // Warm-up: one of each kind, so the `unmatched` series exist; a real RPC is named.
    assert_eq!(
        grpc_call(&grpc, &base, &made_up_path(0)).await,
        (200, Some("12".to_owned())),
        "an unknown method of a served service is UNIMPLEMENTED"
    );
    assert_eq!(grpc_call(&grpc, &base, &made_up_path(1)).await.0, 404);
    grpc_call(&grpc, &base, "/macp.control_plane.v1.ControlPlane/ListRuns").await;
    // A scrape is counted once it has been answered: the first one's series is in the second.
    scrape(&http, &base).await;
    let (_, before) = scrape(&http, &base).await;

    let answers: Vec<(u16, Option<String>)> = futures::stream::iter(0..1000)
        .map(|n| {
            let (grpc, base) = (&grpc, &base);
            async move { grpc_call(grpc, base, &made_up_path(n)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let unimplemented = answers
        .iter()
        .filter(|answer| **answer == (200, Some("12".to_owned())))
        .count();
    let not_found = answers.iter().filter(|(status, _)| *status == 404).count();
    assert_eq!((unimplemented, not_found), (500, 500), "{answers:?}");

    let (text, after) = scrape(&http, &base).await;
    assert_eq!(series(&before), series(&after), "{text}");
    for made_up in ["Nope", "foo.Bar", "Baz", "%22", "\\\""] {
        assert!(!text.contains(made_up), "{made_up} in\n{text}");
    }
    let requests = &after.families["http_requests_total"];
    let routes: BTreeSet<String> = requests
        .iter_samples()
        .filter_map(|sample| {
            let labels = sample.get_labelset().ok()?;
            if labels.get_label_value("transport") != Some("grpc") {
                return None;
            }
            labels.get_label_value("route").map(str::to_owned)
        })
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from([
            "/macp.control_plane.v1.ControlPlane/ListRuns".to_owned(),
            "unmatched".to_owned()
        ])
    );
    child.kill().await.expect("serve stops");
}

fn completed_runs(exposition: &Exposition) -> u64 {
    exposition.families["macp_run_duration_seconds"]
        .iter_samples()
        .find(|sample| {
            sample
                .get_labelset()
                .is_ok_and(|labels| labels.get_label_value("status") == Some("completed"))
        })
        .and_then(|sample| match &sample.value {
            PrometheusValue::Histogram(histogram) => histogram.count,
            _ => None,
        })
        .expect("macp_run_duration_seconds{status=\"completed\"} is a histogram")
}

/// Against a `serve` process of its own, so nothing else finishes runs meanwhile: the run is
/// counted exactly once, under its terminal status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_is_counted_in_run_duration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, base) = serve(&dir).await;
    let http = reqwest::Client::new();
    let (_, before) = scrape(&http, &base).await;
    let started: Value = http
        .post(format!("{base}/runs"))
        .json(&requests::scripted_decision())
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let run_id = started["runId"].as_str().expect("runId");
    // The live stream ends after the run's terminal event.
    let mut stream = http
        .get(format!(
            "{base}/runs/{run_id}/stream?endAtTerminal=true&includeSnapshot=false"
        ))
        .send()
        .await
        .expect("stream")
        .bytes_stream();
    while let Some(chunk) = stream.next().await {
        chunk.expect("stream chunk");
    }
    let run: Value = http
        .get(format!("{base}/runs/{run_id}"))
        .send()
        .await
        .expect("run")
        .json()
        .await
        .expect("json");
    assert_eq!(run["status"], "completed", "{run}");
    let (text, after) = scrape(&http, &base).await;
    assert_eq!(
        completed_runs(&after),
        completed_runs(&before) + 1,
        "the run is counted once:\n{text}"
    );
    child.kill().await.expect("serve stops");
}
