//! The reference runtime where agents reach it: the embedded one at its reported address, and
//! `macp-control-plane runtime`, the standalone process that stands in for the `macp-runtime`
//! binary (its MACP_* variables), stopped by PID like that binary.

use std::process::Stdio;
use std::time::Duration;

use macp_control_plane::api::proto::GetRuntimeHealthRequest;
use macp_control_plane::app::RuntimeTarget;
use macp_control_plane::runtime::embedded::{EmbeddedOptions, EmbeddedRuntime, Storage};
use macp_runtime::pb::macp_runtime_service_client::MacpRuntimeServiceClient;
use macp_runtime::pb::{
    ClientInfo, GetSessionRequest, InitializeRequest, ListModesRequest, SessionState,
};
use tokio::io::AsyncBufReadExt as _;

use crate::requests;
use crate::support::{self, Backend, TestApp};

const BINARY: &str = env!("CARGO_BIN_EXE_macp-control-plane");
const STARTUP: Duration = Duration::from_secs(60);

/// A `macp-control-plane runtime` process; its stderr is drained into `log`.
pub(crate) struct RuntimeProcess {
    child: tokio::process::Child,
    pub(crate) address: String,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Starts the standalone runtime the way the reference runtime's own harness starts its binary,
/// on a port of its choosing (`:0`), read back from its "listening" line.
pub(crate) async fn spawn_runtime(extra: &[(&str, &str)]) -> RuntimeProcess {
    let mut command = tokio::process::Command::new(BINARY);
    command
        .arg("runtime")
        .env_clear()
        .env("MACP_BIND_ADDR", "127.0.0.1:0")
        .env("MACP_ALLOW_INSECURE", "1")
        .env("MACP_CLEANUP_INTERVAL_SECS", "1")
        .env("MACP_SHUTDOWN_DRAIN_SECS", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the runtime starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(STARTUP, async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            if line.contains("MACP reference runtime listening")
                && let Some(rest) = line.split("address=").nth(1)
            {
                return rest
                    .split_whitespace()
                    .next()
                    .expect("an address")
                    .to_owned();
            }
        }
        panic!("the runtime ended before listening");
    })
    .await
    .expect("listening within 60 s");
    // Read to the end, so logging never blocks the process.
    let (sender, log) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    RuntimeProcess {
        child,
        address,
        log,
    }
}

impl RuntimeProcess {
    /// SIGKILL by PID: no drain, no goodbye (what a crash or an OOM kill leaves).
    pub(crate) async fn kill(mut self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().await.expect("waits");
    }

    /// SIGTERM by PID (as an orchestrator stops the binary): it drains, saves and exits 0.
    async fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s of SIGTERM")
            .expect("waits");
        let mut log = Vec::new();
        while let Some(line) = self.log.recv().await {
            log.push(line);
        }
        assert!(exit.success(), "{exit:?}: {log:#?}");
        log
    }
}

async fn runtime_client(address: &str) -> MacpRuntimeServiceClient<tonic::transport::Channel> {
    MacpRuntimeServiceClient::connect(format!("http://{address}"))
        .await
        .expect("the runtime connects")
}

/// `GetSession` as `reader` (dev mode: the bearer value is the sender).
async fn get_session(
    address: &str,
    session_id: &str,
    reader: &str,
) -> Result<SessionState, tonic::Status> {
    let mut request = tonic::Request::new(GetSessionRequest {
        session_id: session_id.to_owned(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {reader}").parse().expect("header"),
    );
    let metadata = runtime_client(address)
        .await
        .get_session(request)
        .await?
        .into_inner()
        .metadata
        .expect("metadata");
    Ok(SessionState::try_from(metadata.state).expect("a state"))
}

async fn run_a_decision(app: &TestApp) -> String {
    let run_id = app.start_run(&requests::scripted_decision()).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed", "{state:?}");
    state.run.runtime_session_id.clone().expect("session bound")
}

/// The control plane runs against `macp-control-plane runtime` as against the reference
/// binary: a run to completion, the runtime reported as external, the process stopped by PID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_runtime_process_serves_the_control_plane() {
    let runtime = spawn_runtime(&[("MACP_MEMORY_ONLY", "1")]).await;
    let app = support::start_with(
        Backend::Sqlite,
        support::Options {
            runtime: RuntimeTarget::External {
                address: runtime.address.clone(),
                tls: false,
            },
            ..Default::default()
        },
    )
    .await
    .expect("SQLite is always available");
    let session_id = run_a_decision(&app).await;
    assert_eq!(
        get_session(&runtime.address, &session_id, "coordinator")
            .await
            .expect("GetSession"),
        SessionState::Resolved
    );
    let (status, health) = app.get("/runtime/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["ok"], true, "{health}");
    assert!(
        health.get("embeddedAddress").is_none(),
        "an external runtime has no embedded address: {health}"
    );
    app.stop().await;
    let log = runtime.terminate().await;
    assert!(log.iter().any(|line| line.contains("goodbye")), "{log:#?}");
}

/// With file storage (the binary's default), a session outlives a restart of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_standalone_runtime_recovers_its_sessions_from_files() {
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().to_str().expect("utf-8 path");
    let settings = [
        ("MACP_DATA_DIR", data_dir),
        ("MACP_STORAGE_BACKEND", "file"),
    ];
    let runtime = spawn_runtime(&settings).await;
    let app = support::start_with(
        Backend::Sqlite,
        support::Options {
            runtime: RuntimeTarget::External {
                address: runtime.address.clone(),
                tls: false,
            },
            ..Default::default()
        },
    )
    .await
    .expect("SQLite is always available");
    let session_id = run_a_decision(&app).await;
    app.stop().await;
    runtime.terminate().await;
    assert!(data.path().join("sessions").join(&session_id).is_dir());

    let restarted = spawn_runtime(&settings).await;
    assert_eq!(
        get_session(&restarted.address, &session_id, "coordinator")
            .await
            .expect("GetSession after the restart"),
        SessionState::Resolved
    );
    restarted.terminate().await;
}

/// What the binary refuses, this refuses, naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_runtime_refuses_what_the_binary_refuses() {
    for (settings, expected) in [
        (
            &[
                ("MACP_ALLOW_INSECURE", "1"),
                ("MACP_STORAGE_BACKEND", "rocksdb"),
            ][..],
            "MACP_STORAGE_BACKEND: 'rocksdb' is not available in this build",
        ),
        (
            &[
                ("MACP_ALLOW_INSECURE", "1"),
                ("MACP_BIND_ADDR", "localhost:1"),
            ],
            "MACP_BIND_ADDR: 'localhost:1' is not a valid socket address",
        ),
        // No auth and no opt-in: refused, as the binary refuses.
        (
            &[("MACP_MEMORY_ONLY", "1"), ("MACP_BIND_ADDR", "127.0.0.1:0")],
            "no authentication configured",
        ),
    ] {
        let output = tokio::process::Command::new(BINARY)
            .arg("runtime")
            .env_clear()
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(STARTUP, output)
            .await
            .expect("exits by itself")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{settings:?}: {stderr}");
        assert!(stderr.contains(expected), "{settings:?}: {stderr}");
    }
}

/// Agents find the embedded runtime where the service says it is, and speak MACP to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_runtime_is_reported_and_speaks_macp() {
    let app = support::start(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let address = app.app.embedded_runtime().expect("embedded").to_string();
    let (status, health) = app.get("/runtime/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["embeddedAddress"], address.as_str(), "{health}");
    let (status, manifest) = app.get("/runtime/manifest").await;
    assert_eq!(status, 200);
    assert_eq!(manifest["embeddedAddress"], address.as_str(), "{manifest}");
    let grpc_health = app
        .grpc()
        .await
        .get_runtime_health(GetRuntimeHealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        grpc_health.embedded_address.as_deref(),
        Some(address.as_str())
    );

    let mut client = runtime_client(&address).await;
    let initialized = client
        .initialize(InitializeRequest {
            supported_protocol_versions: vec!["1.0".to_owned()],
            client_info: Some(ClientInfo {
                name: "sdk-style-agent".to_owned(),
                version: "0.0.0".to_owned(),
                ..Default::default()
            }),
            capabilities: None,
        })
        .await
        .expect("Initialize")
        .into_inner();
    assert_eq!(initialized.selected_protocol_version, "1.0");
    let modes = client
        .list_modes(ListModesRequest {})
        .await
        .expect("ListModes")
        .into_inner()
        .modes;
    assert!(
        modes
            .iter()
            .any(|mode| mode.mode == "macp.mode.decision.v1"),
        "{modes:?}"
    );
    app.stop().await;
}

/// A taken EMBEDDED_RUNTIME_ADDR stops `serve` at start with an error naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_embedded_runtime_address_is_a_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let output = tokio::process::Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("EMBEDDED_RUNTIME_ADDR", &address)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()),
        )
        .env("PACKS_DIR", dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(STARTUP, output)
        .await
        .expect("exits by itself")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot bind the embedded MACP runtime on {address} (EMBEDDED_RUNTIME_ADDR)"
        )),
        "{stderr}"
    );
    drop(taken);
}

/// Terminal sessions leave the embedded runtime's memory after the retention; the run stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sessions_are_evicted_from_the_embedded_runtime() {
    let app = support::start_with(
        Backend::Sqlite,
        support::Options {
            runtime: RuntimeTarget::Embedded(EmbeddedOptions {
                session_retention: Some(Duration::from_secs(1)),
                ..EmbeddedOptions::default()
            }),
            ..Default::default()
        },
    )
    .await
    .expect("SQLite is always available");
    let address = app.app.embedded_runtime().expect("embedded").to_string();
    let run_id = app.start_run(&requests::scripted_decision()).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed");
    let session_id = state.run.runtime_session_id.expect("session bound");
    // The runtime's sweep says nothing when it evicts: ask until it no longer knows the session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match get_session(&address, &session_id, "coordinator").await {
            Ok(state) => assert_eq!(state, SessionState::Resolved),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session was not evicted within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "completed", "{run}");
    app.stop().await;
}

/// EMBEDDED_RUNTIME_STORAGE=file: the runtime's file storage, recovered by the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_runtime_can_keep_sessions_in_files() {
    let data = tempfile::tempdir().expect("dir");
    let storage = Storage::File {
        dir: data.path().to_path_buf(),
    };
    let app = support::start_with(
        Backend::Sqlite,
        support::Options {
            runtime: RuntimeTarget::Embedded(EmbeddedOptions {
                storage: storage.clone(),
                ..EmbeddedOptions::default()
            }),
            ..Default::default()
        },
    )
    .await
    .expect("SQLite is always available");
    let session_id = run_a_decision(&app).await;
    app.stop().await;
    assert!(data.path().join("sessions").join(&session_id).is_dir());

    let restarted = EmbeddedRuntime::start_with(EmbeddedOptions {
        storage,
        ..EmbeddedOptions::default()
    })
    .await
    .expect("starts on the same files");
    assert_eq!(restarted.sessions_in_memory().await, 1);
    assert_eq!(
        get_session(&restarted.address().to_string(), &session_id, "coordinator")
            .await
            .expect("GetSession after the restart"),
        SessionState::Resolved
    );
    restarted.stop().await;
}

/// Discovery across a runtime crash: a session started just before the runtime is killed and
/// one started after it comes back (its file storage recovered, on the same address) each
/// become one run, and the session discovered before the crash, replayed on reconnect, is not
/// made twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_survives_a_runtime_restart_without_duplicates() {
    use crate::discovery::{Agents, wait_for_run};
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().to_str().expect("utf-8 path").to_owned();
    let runtime = spawn_runtime(&[
        ("MACP_DATA_DIR", &data_dir),
        ("MACP_STORAGE_BACKEND", "file"),
    ])
    .await;
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
    .expect("SQLite is always available");
    let before = uuid::Uuid::new_v4().to_string();
    let at_the_crash = uuid::Uuid::new_v4().to_string();
    let after = uuid::Uuid::new_v4().to_string();
    let mut agents = Agents::connect_to(&address).await;
    agents.start_decision(&before).await;
    wait_for_run(&app, &before).await;
    // Accepted (stored by the runtime), then the runtime dies before or after telling us.
    agents.start_decision(&at_the_crash).await;
    runtime.kill().await;

    let restarted = spawn_runtime(&[
        ("MACP_DATA_DIR", &data_dir),
        ("MACP_STORAGE_BACKEND", "file"),
        ("MACP_BIND_ADDR", &address),
    ])
    .await;
    assert_eq!(restarted.address, address);
    let mut agents = Agents::connect_to(&address).await;
    agents.start_decision(&after).await;
    for session in [&before, &at_the_crash, &after] {
        wait_for_run(&app, session).await;
    }
    let (_, page) = app.get("/runs?limit=200").await;
    let mut sessions: Vec<&str> = page["data"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["runtimeSessionId"].as_str().expect("a session"))
        .collect();
    sessions.sort_unstable();
    let mut expected = vec![before.as_str(), at_the_crash.as_str(), after.as_str()];
    expected.sort_unstable();
    assert_eq!(
        sessions, expected,
        "one run per session, none twice: {page}"
    );
    app.stop().await;
    restarted.terminate().await;
}
