//! The operator CLI's API key: sent as `authorization: Bearer <key>` on every call, unary and
//! streaming, from `--api-key` or `MACP_API_KEY`; a 401 or 403 answer is one line on stderr with
//! a hint, and a non-zero exit. The service's side of auth is not what is under test here, so
//! the CLI talks to a stub on loopback that records the header and refuses as the service does
//! (gRPC status, `x-error-code`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Response, Uri};

/// Generous: the binary starts on a loaded 2-core machine.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

const UNAUTHENTICATED: &str = "error: 401 UNAUTHENTICATED: missing or invalid credentials (hint: pass a valid key with --api-key or MACP_API_KEY)";
const FORBIDDEN: &str = "error: 403 FORBIDDEN: this credential lacks the 'operate' permission (hint: this key's role lacks the permission; ask an admin)";

/// What the stub saw of each call: the gRPC method and the `authorization` header.
type Calls = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A gRPC server that refuses every call: `viewer-key` lacks the permission (403), anything
/// else is unknown (401). Answers are trailers-only, as tonic sends a refusal.
async fn stub() -> (SocketAddr, Calls) {
    let calls = Calls::default();
    let seen = calls.clone();
    let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let authorization = headers
                .get("authorization")
                .map(|value| value.to_str().expect("ascii").to_owned());
            let (status, code, message) = match authorization.as_deref() {
                Some("Bearer viewer-key") => (
                    "7",
                    "FORBIDDEN",
                    "this credential lacks the 'operate' permission",
                ),
                _ => ("16", "UNAUTHENTICATED", "missing or invalid credentials"),
            };
            seen.lock()
                .expect("lock")
                .push((uri.path().to_owned(), authorization));
            Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", status)
                // Percent-encoded, as gRPC carries messages.
                .header("grpc-message", message.replace(' ', "%20"))
                .header("x-error-code", code)
                .body(Body::empty())
                .expect("response")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, calls)
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `runs <args>` against `address`, with `MACP_API_KEY` set to `env_key` (or unset).
async fn cli(address: SocketAddr, args: &[&str], env_key: Option<&str>) -> Outcome {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"));
    command
        .arg("runs")
        .args(args)
        .args(["--address", &format!("http://{address}")])
        .env_remove("MACP_ADDRESS")
        .env_remove("MACP_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(key) = env_key {
        command.env("MACP_API_KEY", key);
    }
    let output = tokio::time::timeout(CLI_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`runs {}` did not finish", args.join(" ")))
        .expect("the CLI runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn assert_refused(outcome: &Outcome, line: &str) {
    assert_eq!(outcome.code, Some(1), "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stderr, format!("{line}\n"), "one line on stderr");
    assert_eq!(outcome.stdout, "");
}

const CONTROL_PLANE: &str = "/macp.control_plane.v1.ControlPlane";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_its_key_and_shows_401_and_403_as_one_line_with_a_hint() {
    let (address, calls) = stub().await;

    // A key the service does not know, from the flag.
    let unknown = cli(address, &["list", "--api-key", "unknown-key-9d2f"], None).await;
    assert_refused(&unknown, UNAUTHENTICATED);
    assert!(!unknown.stderr.contains("unknown-key-9d2f"));

    // A key without the permission, from the environment; a refused cancel.
    let forbidden = cli(address, &["cancel", "run-1"], Some("viewer-key")).await;
    assert_refused(&forbidden, FORBIDDEN);

    // A live stream carries the key too.
    let watch = cli(
        address,
        &["watch", "run-1", "--api-key", "viewer-key"],
        None,
    )
    .await;
    assert_refused(&watch, FORBIDDEN);

    // No key: no header at all.
    let none = cli(address, &["get", "run-1"], None).await;
    assert_refused(&none, UNAUTHENTICATED);

    // --json keeps its machine-readable error.
    let json = cli(address, &["list", "--json"], Some("viewer-key")).await;
    assert_eq!(json.code, Some(1));
    let error: serde_json::Value = serde_json::from_str(json.stderr.trim()).expect("JSON");
    assert_eq!(error["errorCode"], "FORBIDDEN");

    let bearer = |key: &str| Some(format!("Bearer {key}"));
    assert_eq!(
        *calls.lock().expect("lock"),
        [
            (
                format!("{CONTROL_PLANE}/ListRuns"),
                bearer("unknown-key-9d2f")
            ),
            (format!("{CONTROL_PLANE}/CancelRun"), bearer("viewer-key")),
            (format!("{CONTROL_PLANE}/WatchRun"), bearer("viewer-key")),
            (format!("{CONTROL_PLANE}/GetRun"), None),
            (format!("{CONTROL_PLANE}/ListRuns"), bearer("viewer-key")),
        ]
    );
}
