//! Secrets never print: runtime tokens, API keys and database passwords stay out of `--help`
//! (environment values and defaults), logs, `/metrics`, other answers and error messages, while
//! the tokens still do their work (a run completes on them).

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::requests;

const BINARY: &str = env!("CARGO_BIN_EXE_macp-control-plane");

/// Every secret below holds this, so one search finds any of them.
const MARK: &str = "5ecret";

/// The scripted decision's senders.
const SENDERS: [&str; 4] = ["coordinator", "fraud-agent", "risk-agent", "growth-agent"];

fn token_table() -> String {
    let table: serde_json::Map<String, Value> = SENDERS
        .iter()
        .map(|sender| (sender.to_string(), json!(format!("tok-{MARK}-{sender}"))))
        .collect();
    Value::Object(table).to_string()
}

fn observer_token() -> String {
    format!("tok-{MARK}-observer")
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(MARK), "a secret in {what}:\n{text}");
}

/// Every secret-bearing setting in the environment: help shows none of the values.
#[test]
fn help_shows_no_secret_from_the_environment() {
    for (args, names) in [
        (
            &["serve", "--help"][..],
            &[
                "--runtime-tokens",
                "--runtime-bearer-token",
                "--database-url",
            ][..],
        ),
        (&["migrate", "--help"], &["--database-url"]),
        (&["runs", "list", "--help"], &["--api-key"]),
    ] {
        let output = std::process::Command::new(BINARY)
            .args(args)
            .env_clear()
            .env("RUNTIME_TOKENS", token_table())
            .env("RUNTIME_BEARER_TOKEN", observer_token())
            .env("DATABASE_URL", format!("postgres://app:pw-{MARK}@db/cp"))
            .env("MACP_API_KEY", format!("key-{MARK}"))
            .env("AUTH_API_KEYS", format!("key-{MARK}-a,key-{MARK}-b"))
            .env("AUTH_JWT_SECRET", format!("jwt-{MARK}"))
            .output()
            .expect("the binary runs");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {help}");
        for name in names {
            assert!(help.contains(name), "{args:?} documents {name}:\n{help}");
        }
        assert_no_secret(&format!("{args:?}"), &help);
        assert_no_secret(
            &format!("{args:?} stderr"),
            &String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// A URL the database library cannot use is quoted in its error; the password is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_database_url_is_reported_without_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (args, url, printed) in [
        // No driver for it: the library quotes the URL.
        (
            &["migrate"][..],
            format!("mysql://app:pw-{MARK}@127.0.0.1/cp"),
            Some("mysql://app:***@127.0.0.1/cp"),
        ),
        (
            &["serve"],
            format!("mysql://app:pw-{MARK}@127.0.0.1/cp"),
            Some("mysql://app:***@127.0.0.1/cp"),
        ),
        // Nothing listens on port 1.
        (
            &["migrate"],
            format!("postgres://app:pw-{MARK}@127.0.0.1:1/cp"),
            None,
        ),
    ] {
        let output = tokio::process::Command::new(BINARY)
            .args(args)
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &url)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .expect("ends within 60 s")
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} {url}: {stderr}");
        if let Some(printed) = printed {
            assert!(stderr.contains(printed), "{args:?}: {stderr}");
        }
        assert_no_secret(&format!("{args:?} stderr"), &stderr);
        assert_no_secret(
            &format!("{args:?} stdout"),
            &String::from_utf8_lossy(&output.stdout),
        );
    }
}

/// A `serve` process, its base URL, and the log lines it wrote: `seen` so far, the rest to come
/// on `lines` until it is killed.
struct Served {
    child: tokio::process::Child,
    base: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

/// `serve` with a runtime token table (the embedded runtime authenticates by it) and debug
/// logging.
async fn serve(dir: &tempfile::TempDir) -> Served {
    let mut child = tokio::process::Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "debug")
        .env("RUNTIME_TOKENS", token_table())
        .env("RUNTIME_BEARER_TOKEN", observer_token())
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("secrets.db").display()
            ),
        )
        .env("PACKS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/packs"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    // Both streams are read to their end, so logging never blocks the process.
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
    let mut seen = Vec::new();
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = received.recv().await {
            let listening = serde_json::from_str::<Value>(&line).ok().and_then(|log| {
                let message = log["fields"]["message"].as_str()?;
                message
                    .starts_with("macp-control-plane listening")
                    .then(|| log["fields"]["address"].as_str().map(str::to_owned))?
            });
            seen.push(line);
            if let Some(address) = listening {
                return address;
            }
        }
        panic!("serve exited without listening:\n{}", seen.join("\n"));
    })
    .await
    .expect("serve listens within 30 s");
    Served {
        child,
        base: format!("http://{address}"),
        lines: received,
        seen,
    }
}

async fn text(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_instance_prints_no_runtime_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Served {
        mut child,
        base,
        lines: mut received,
        seen: mut logs,
    } = serve(&dir).await;
    let http = reqwest::Client::new();

    // A run that completes: every kickoff went out with its sender's token.
    let (status, started) = text(
        http.post(format!("{base}/runs"))
            .json(&requests::scripted_decision()),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    assert_no_secret("POST /runs", &started);
    let started: Value = serde_json::from_str(&started).expect("json");
    let run_id = started["runId"].as_str().expect("runId");
    let mut stream = http
        .get(format!(
            "{base}/runs/{run_id}/stream?endAtTerminal=true&includeSnapshot=false"
        ))
        .send()
        .await
        .expect("stream")
        .bytes_stream();
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.next().await {
        streamed.extend_from_slice(&chunk.expect("stream chunk"));
    }
    assert_no_secret("the run's stream", &String::from_utf8_lossy(&streamed));

    let mut answers = Vec::new();
    for path in [
        format!("/runs/{run_id}"),
        format!("/runs/{run_id}/state"),
        format!("/runs/{run_id}/events"),
        "/runtime/health".to_owned(),
        "/readyz".to_owned(),
        "/metrics".to_owned(),
    ] {
        let (status, body) = text(http.get(format!("{base}{path}"))).await;
        answers.push((path, status, body));
    }
    let run: Value = serde_json::from_str(&answers[0].2).expect("run");
    assert_eq!(run["status"], "completed", "{run}");
    let metrics = &answers[5];
    assert_eq!(metrics.1, 200);
    assert!(
        metrics.2.contains("macp_runtime_call"),
        "runtime calls are measured: {}",
        metrics.2
    );

    // A sender without a token is refused; the refusal names the sender, not a token.
    let mut tokenless = requests::scripted_decision();
    tokenless["session"]["participants"][0]["id"] = json!("tokenless-agent");
    tokenless["kickoff"][0]["from"] = json!("tokenless-agent");
    let (status, refused) = text(http.post(format!("{base}/runs")).json(&tokenless)).await;
    assert_eq!(status, 400, "{refused}");
    answers.push(("POST /runs (tokenless)".to_owned(), status, refused));

    for (path, _, body) in &answers {
        assert_no_secret(path, body);
    }

    // Everything it logged, at debug level, from start to kill.
    child.kill().await.expect("serve stops");
    while let Some(line) = received.recv().await {
        logs.push(line);
    }
    assert!(logs.len() > 1, "serve logged: {logs:?}");
    assert_no_secret("the logs", &logs.join("\n"));
}
