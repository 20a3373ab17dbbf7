//! `macp-control-plane runtime`: the MACP reference runtime served alone, configured like the
//! `macp-runtime` binary by its `MACP_*` environment variables, so it can stand in for that
//! binary (tests that stop or restart the runtime apart from the control plane; one binary for
//! both). The runtime, its listener and its sweep are built by `embedded.rs`.
//!
//! Not available here: the binary's optional features (the HTTP/JSON listener, gRPC reflection,
//! OpenTelemetry, RocksDB and Redis storage); asking for one is a start-up error, as it is for a
//! binary built without it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use macp_runtime::pb::macp_runtime_service_server::MacpRuntimeServiceServer;
use macp_runtime::policy::registry::PolicyRegistry;
use macp_runtime::receipts::ReceiptConfig;
use macp_runtime::runtime::Runtime;
use macp_runtime::security::SecurityLayer;
use macp_runtime::server::MacpServer;
use tokio::sync::watch;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use super::embedded::{self, Parts, Storage, Sweep};

/// The binary's settings, read from its variables (`MACP_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub bind: SocketAddr,
    /// `MACP_ALLOW_INSECURE=1`: plaintext, and dev-mode auth when no auth is configured.
    pub allow_insecure: bool,
    /// PEM certificate and key; TLS only when both are set.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub storage: Storage,
    pub strict_recovery: bool,
    pub cleanup_interval: Duration,
    pub session_retention: Duration,
    /// `None`: stored sessions are kept for ever (`MACP_SESSION_DISK_RETENTION_SECS=0`).
    pub disk_retention: Option<Duration>,
    pub request_timeout: Duration,
    pub concurrency_per_connection: usize,
    pub max_concurrent_streams: u32,
    pub shutdown_drain: Duration,
    pub max_payload_bytes: usize,
    pub metrics_addr: Option<String>,
    pub policies_dir: Option<PathBuf>,
    pub policies_dry_run: bool,
}

/// The variables' values, where a variable set to nothing counts as set (as `std::env::var`
/// reads it).
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn number<T>(env: Env, name: &str, default: T, positive: bool, errors: &mut Vec<String>) -> T
where
    T: std::str::FromStr + PartialEq + From<u8>,
{
    let Some(text) = env(name) else {
        return default;
    };
    match text.trim().parse::<T>() {
        Ok(value) if positive && value == T::from(0) => {
            errors.push(format!("{name}: must be a positive integer, got '0'"));
            default
        }
        Ok(value) => value,
        Err(_) => {
            let kind = if positive { "positive" } else { "non-negative" };
            errors.push(format!("{name}: '{text}' is not a valid {kind} integer"));
            default
        }
    }
}

fn secs(env: Env, name: &str, default: u64, positive: bool, errors: &mut Vec<String>) -> Duration {
    let value = number(env, name, default, positive, errors);
    Duration::from_secs(value.min(embedded::MAX_SESSION_RETENTION_SECS))
}

fn flag(env: Env, name: &str) -> bool {
    env(name).as_deref() == Some("1")
}

impl Settings {
    /// Reads and checks every variable; all problems are reported at once.
    pub fn from_env(env: Env) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        let bind_text = env("MACP_BIND_ADDR").unwrap_or_else(|| embedded::DEFAULT_ADDRESS.into());
        let bind = bind_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            errors.push(format!(
                "MACP_BIND_ADDR: '{bind_text}' is not a valid socket address (expected host:port, e.g. 127.0.0.1:50051)"
            ));
            SocketAddr::from(([127, 0, 0, 1], 50051))
        });
        let cert = env("MACP_TLS_CERT_PATH").map(PathBuf::from);
        let key = env("MACP_TLS_KEY_PATH").map(PathBuf::from);
        for (name, path) in [("MACP_TLS_CERT_PATH", &cert), ("MACP_TLS_KEY_PATH", &key)] {
            if let Some(path) = path
                && !path.exists()
            {
                errors.push(format!("{name}: file does not exist: {}", path.display()));
            }
        }
        let memory_only = flag(env, "MACP_MEMORY_ONLY");
        let data_dir = PathBuf::from(env("MACP_DATA_DIR").unwrap_or_else(|| ".macp-data".into()));
        let storage = if memory_only {
            Storage::Memory
        } else {
            match env("MACP_STORAGE_BACKEND").as_deref().unwrap_or("file") {
                "file" => Storage::File { dir: data_dir },
                "memory" => Storage::Memory,
                backend @ ("rocksdb" | "redis") => {
                    errors.push(format!(
                        "MACP_STORAGE_BACKEND: '{backend}' is not available in this build (it has file and memory storage); use MACP_STORAGE_BACKEND=file or MACP_MEMORY_ONLY=1, or the macp-runtime binary built with that backend"
                    ));
                    Storage::Memory
                }
                other => {
                    errors.push(format!(
                        "MACP_STORAGE_BACKEND: unknown storage backend '{other}'; valid: file, memory"
                    ));
                    Storage::Memory
                }
            }
        };
        // Read by the runtime's security layer and the runtime itself; checked here so a bad
        // value stops start-up instead of falling back to a default.
        for name in [
            "MACP_SESSION_START_LIMIT_PER_MINUTE",
            "MACP_MESSAGE_LIMIT_PER_MINUTE",
            "MACP_LIST_SESSIONS_DEFAULT_PAGE_SIZE",
            "MACP_LIST_SESSIONS_MAX_PAGE_SIZE",
        ] {
            number::<u64>(env, name, 1, true, &mut errors);
        }
        let page_max = env("MACP_LIST_SESSIONS_MAX_PAGE_SIZE")
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|max| *max > 0)
            .unwrap_or(macp_runtime::security::MAX_LIST_SESSIONS_PAGE_SIZE as u64);
        if let Some(default) = env("MACP_LIST_SESSIONS_DEFAULT_PAGE_SIZE")
            .and_then(|text| text.trim().parse::<u64>().ok())
            && default > page_max
        {
            errors.push(format!(
                "MACP_LIST_SESSIONS_DEFAULT_PAGE_SIZE ({default}) must not exceed the maximum page size ({page_max}); raise MACP_LIST_SESSIONS_MAX_PAGE_SIZE or lower the default"
            ));
        }
        number::<u64>(env, "MACP_CHECKPOINT_INTERVAL", 0, false, &mut errors);
        if env("MACP_HTTP_BIND_ADDR").is_some_and(|value| !value.is_empty()) {
            errors.push(
                "MACP_HTTP_BIND_ADDR is set, but this runtime has no HTTP/JSON listener; use the \
                 macp-runtime binary built with the `http-listener` feature, or unset \
                 MACP_HTTP_BIND_ADDR"
                    .into(),
            );
        }
        let settings = Settings {
            bind,
            allow_insecure: flag(env, "MACP_ALLOW_INSECURE"),
            tls: cert.zip(key),
            storage,
            strict_recovery: flag(env, "MACP_STRICT_RECOVERY"),
            cleanup_interval: secs(env, "MACP_CLEANUP_INTERVAL_SECS", 60, true, &mut errors),
            session_retention: secs(env, "MACP_SESSION_RETENTION_SECS", 3600, false, &mut errors),
            disk_retention: Some(secs(
                env,
                "MACP_SESSION_DISK_RETENTION_SECS",
                0,
                false,
                &mut errors,
            ))
            .filter(|retention| !retention.is_zero()),
            request_timeout: secs(env, "MACP_REQUEST_TIMEOUT_SECS", 30, true, &mut errors),
            concurrency_per_connection: number(
                env,
                "MACP_CONCURRENCY_LIMIT_PER_CONNECTION",
                64,
                true,
                &mut errors,
            ),
            max_concurrent_streams: number(
                env,
                "MACP_MAX_CONCURRENT_STREAMS",
                128,
                true,
                &mut errors,
            ),
            shutdown_drain: secs(env, "MACP_SHUTDOWN_DRAIN_SECS", 10, false, &mut errors),
            max_payload_bytes: number(
                env,
                "MACP_MAX_PAYLOAD_BYTES",
                embedded::DEFAULT_MAX_PAYLOAD_BYTES,
                true,
                &mut errors,
            ),
            metrics_addr: env("MACP_METRICS_ADDR"),
            policies_dir: env("MACP_POLICIES_DIR").map(PathBuf::from),
            policies_dry_run: flag(env, "MACP_POLICIES_DRY_RUN"),
        };
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }
}

/// Serves the runtime until SIGINT or SIGTERM, then drains for up to MACP_SHUTDOWN_DRAIN_SECS
/// (a second signal exits at once) and saves the sessions (file storage).
pub async fn run() -> Result<ExitCode, String> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    crate::telemetry::init_logging("text", &filter);
    macp_runtime::telemetry::warn_if_configured_without_feature(&|name: &str| {
        std::env::var(name).ok()
    });
    let env = |name: &str| std::env::var(name).ok();
    // Decision-receipt keys: a bad key is fatal, never a silently unsigned runtime.
    let (settings, receipts) = match (Settings::from_env(&env), ReceiptConfig::from_env()) {
        (Ok(settings), Ok(receipts)) => (settings, receipts),
        (settings, receipts) => {
            let mut problems = settings.err().unwrap_or_default();
            problems.extend(receipts.err());
            return Err(format!(
                "startup aborted: {} configuration error(s): {}",
                problems.len(),
                problems.join("; ")
            ));
        }
    };
    if settings.policies_dry_run {
        return Ok(policies_dry_run(settings.policies_dir.as_deref()));
    }
    serve(settings, receipts).await.map(|()| ExitCode::SUCCESS)
}

/// `MACP_POLICIES_DRY_RUN=1`: checks every policy file of MACP_POLICIES_DIR, reports each, and
/// exits 0 when all would load.
fn policies_dry_run(dir: Option<&Path>) -> ExitCode {
    let Some(dir) = dir else {
        eprintln!("MACP_POLICIES_DRY_RUN=1 requires MACP_POLICIES_DIR to be set");
        return ExitCode::FAILURE;
    };
    let outcomes = match PolicyRegistry::validate_dir(dir) {
        Ok(outcomes) => outcomes,
        Err(error) => {
            eprintln!("MACP_POLICIES_DIR: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut rejected = 0usize;
    for outcome in &outcomes {
        match &outcome.result {
            Ok(policy_id) => println!("OK       {} ({policy_id})", outcome.path.display()),
            Err(reason) => {
                rejected += 1;
                println!("REJECTED {}: {reason}", outcome.path.display());
            }
        }
    }
    println!(
        "{} policy file(s) checked in {}, {rejected} rejected",
        outcomes.len(),
        dir.display()
    );
    if outcomes.is_empty() {
        println!(
            "WARNING: no *.json files found in {}; startup would load no policies",
            dir.display()
        );
    }
    if rejected > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn serve(settings: Settings, receipts: ReceiptConfig) -> Result<(), String> {
    let policies = Arc::new(PolicyRegistry::new());
    // Loaded before recovery: recovered sessions resolve their policy against it.
    if let Some(dir) = &settings.policies_dir {
        let count = policies
            .load_from_dir(dir)
            .map_err(|error| format!("MACP_POLICIES_DIR: {error}"))?;
        tracing::info!(count, dir = %dir.display(), "loaded governance policies from directory");
    }
    let signed_receipts = receipts.signed();
    if signed_receipts {
        tracing::info!(
            kid = receipts.kid().unwrap_or_default(),
            issuer = receipts.issuer(),
            "decision receipts are signed"
        );
    }
    let security = SecurityLayer::from_env()
        .map_err(|error| format!("runtime authentication settings (MACP_AUTH_*): {error}"))?;
    if !security.has_configured_auth() {
        if !settings.allow_insecure {
            return Err(
                "no authentication configured: set MACP_AUTH_TOKENS_FILE/MACP_AUTH_TOKENS_JSON \
                 or MACP_AUTH_ISSUER (+JWKS), or explicitly opt into dev-mode auth with \
                 MACP_ALLOW_INSECURE=1 (local development only)"
                    .to_owned(),
            );
        }
        tracing::warn!(
            "no authentication configured (MACP_AUTH_TOKENS_*/MACP_AUTH_ISSUER unset): running in \
             dev-mode auth where ANY bearer token is a fully-privileged identity; permitted only \
             because MACP_ALLOW_INSECURE=1"
        );
    }
    let mut builder = Server::builder()
        .concurrency_limit_per_connection(settings.concurrency_per_connection)
        .max_concurrent_streams(Some(settings.max_concurrent_streams))
        .timeout(settings.request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    builder = match &settings.tls {
        Some((cert, key)) => {
            let read = |path: &PathBuf| {
                std::fs::read(path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))
            };
            let identity = Identity::from_pem(read(cert)?, read(key)?);
            builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|error| format!("MACP_TLS_CERT_PATH/MACP_TLS_KEY_PATH: {error}"))?
        }
        None if settings.allow_insecure => {
            tracing::warn!(
                "starting without TLS because MACP_ALLOW_INSECURE=1; this is not RFC-compliant"
            );
            builder
        }
        None => return Err("TLS is required unless MACP_ALLOW_INSECURE=1 is set".to_owned()),
    };
    let (incoming, address) = embedded::bind(settings.bind).map_err(|error| {
        format!(
            "MACP_BIND_ADDR: cannot listen on {}: {error}",
            settings.bind
        )
    })?;
    let persistent = settings.storage != Storage::Memory;
    let runtime = embedded::open(Parts {
        storage: settings.storage.clone(),
        strict_recovery: settings.strict_recovery,
        policies,
        receipts,
    })
    .await
    .map_err(|error| error.to_string())?;
    if signed_receipts && !runtime.storage.receipts_durable() {
        tracing::warn!(
            "the storage backend cannot persist decision receipts: a restart may serve a \
             different signed receipt for the same session"
        );
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<MacpRuntimeServiceServer<MacpServer>>()
        .await;
    let service = embedded::grpc_service(
        runtime.clone(),
        security,
        settings.policies_dir.is_some(),
        settings.max_payload_bytes,
    );
    let stop = shutdown_signal()?;
    if let Some(metrics_addr) = &settings.metrics_addr {
        serve_metrics(metrics_addr, runtime.clone(), stop.clone()).await?;
    }
    let sweeper = embedded::spawn_sweeper(
        runtime.clone(),
        Sweep {
            interval: settings.cleanup_interval,
            session_retention: Some(settings.session_retention),
            disk_retention: settings.disk_retention,
        },
    );
    tracing::info!(%address, "MACP reference runtime listening");
    let server = builder
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signalled(stop.clone()));
    // Long-lived watch streams would hold the drain open: a deadline ends it.
    let deadline = async {
        signalled(stop).await;
        tokio::time::sleep(settings.shutdown_drain).await;
    };
    tokio::select! {
        served = server => {
            served.map_err(|error| format!("the runtime's server failed: {error}"))?;
            tracing::info!("all connections drained");
        }
        () = deadline => tracing::warn!(
            drain_secs = settings.shutdown_drain.as_secs(),
            "drain deadline reached with connections still open; forcing shutdown"
        ),
    }
    sweeper.abort();
    if persistent {
        embedded::persist_sessions(&runtime).await;
    }
    tracing::info!("state persisted, goodbye");
    Ok(())
}

/// Resolves once shutdown was signalled.
async fn signalled(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The first SIGINT or SIGTERM starts the drain; a second exits at once with 128 + signo.
fn shutdown_signal() -> Result<watch::Receiver<bool>, String> {
    let (sender, receiver) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let install =
            |kind| signal(kind).map_err(|error| format!("cannot install signal handlers: {error}"));
        let mut interrupt = install(SignalKind::interrupt())?;
        let mut terminate = install(SignalKind::terminate())?;
        tokio::spawn(async move {
            let (name, _) = next_signal(&mut interrupt, &mut terminate).await;
            tracing::info!(
                signal = name,
                "shutdown signal received; draining in-flight requests"
            );
            let _ = sender.send(true);
            let (name, code) = next_signal(&mut interrupt, &mut terminate).await;
            tracing::warn!(
                signal = name,
                "second shutdown signal during drain; exiting immediately"
            );
            std::process::exit(i32::from(code));
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = sender.send(true);
    });
    Ok(receiver)
}

/// The next SIGINT or SIGTERM: its name and the conventional exit code, 128 + signo.
#[cfg(unix)]
async fn next_signal(
    interrupt: &mut tokio::signal::unix::Signal,
    terminate: &mut tokio::signal::unix::Signal,
) -> (&'static str, u8) {
    tokio::select! {
        _ = interrupt.recv() => ("SIGINT", 130),
        _ = terminate.recv() => ("SIGTERM", 143),
    }
}

/// `MACP_METRICS_ADDR`: the runtime's counters in Prometheus text format at `GET /metrics`.
async fn serve_metrics(
    address: &str,
    runtime: Arc<Runtime>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("MACP_METRICS_ADDR: cannot listen on {address}: {error}"))?;
    let bound = listener
        .local_addr()
        .map_err(|error| format!("MACP_METRICS_ADDR: {error}"))?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let runtime = runtime.clone();
            async move {
                let metrics = runtime.metrics();
                let mut body = String::new();
                for (mode, snapshot) in metrics.snapshot() {
                    snapshot.prometheus_lines(&mode, &mut body);
                }
                body.push_str(&format!(
                    "macp_replay_mismatches_total {}\n",
                    metrics.replay_mismatches()
                ));
                metrics.receipt_prometheus_lines(&mut body);
                metrics.semconv_prometheus_lines(&mut body);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    body,
                )
            }
        }),
    );
    tracing::info!(metrics_addr = %bound, "metrics endpoint listening (GET /metrics)");
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(signalled(stop))
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, Vec<String>> {
        let values: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Settings::from_env(&move |name: &str| values.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_binarys() {
        let settings = settings(&[]).expect("valid");
        assert_eq!(settings.bind.to_string(), "127.0.0.1:50051");
        assert!(!settings.allow_insecure);
        assert_eq!(
            settings.storage,
            Storage::File {
                dir: PathBuf::from(".macp-data")
            }
        );
        assert_eq!(settings.cleanup_interval, Duration::from_secs(60));
        assert_eq!(settings.session_retention, Duration::from_secs(3600));
        assert_eq!(settings.disk_retention, None);
        assert_eq!(settings.max_payload_bytes, 1_048_576);
        assert_eq!(settings.tls, None);
    }

    #[test]
    fn the_test_invocation_reads_as_the_binary_reads_it() {
        let settings = settings(&[
            ("MACP_BIND_ADDR", "127.0.0.1:50151"),
            ("MACP_ALLOW_INSECURE", "1"),
            ("MACP_MEMORY_ONLY", "1"),
            ("MACP_STORAGE_BACKEND", "redis"),
            ("MACP_CLEANUP_INTERVAL_SECS", "1"),
            ("MACP_SESSION_RETENTION_SECS", "5"),
            ("MACP_SESSION_DISK_RETENTION_SECS", "60"),
        ])
        .expect("valid");
        assert_eq!(settings.bind.to_string(), "127.0.0.1:50151");
        assert!(settings.allow_insecure);
        // Memory only wins over the backend, as in the binary.
        assert_eq!(settings.storage, Storage::Memory);
        assert_eq!(settings.cleanup_interval, Duration::from_secs(1));
        assert_eq!(settings.session_retention, Duration::from_secs(5));
        assert_eq!(settings.disk_retention, Some(Duration::from_secs(60)));
        // Only exactly `1` turns a flag on.
        assert!(
            !self::settings(&[("MACP_ALLOW_INSECURE", "true")])
                .expect("valid")
                .allow_insecure
        );
    }

    #[test]
    fn storage_is_file_under_the_data_dir_or_memory() {
        let file = settings(&[
            ("MACP_DATA_DIR", "/tmp/rt"),
            ("MACP_STORAGE_BACKEND", "file"),
        ])
        .expect("valid");
        assert_eq!(
            file.storage,
            Storage::File {
                dir: PathBuf::from("/tmp/rt")
            }
        );
        let memory = settings(&[("MACP_STORAGE_BACKEND", "memory")]).expect("valid");
        assert_eq!(memory.storage, Storage::Memory);
        for (backend, expected) in [
            ("rocksdb", "'rocksdb' is not available in this build"),
            ("redis", "'redis' is not available in this build"),
            (
                "sqlite",
                "unknown storage backend 'sqlite'; valid: file, memory",
            ),
        ] {
            let errors = settings(&[("MACP_STORAGE_BACKEND", backend)]).expect_err("refused");
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with("MACP_STORAGE_BACKEND: ") && errors[0].contains(expected),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn every_bad_value_is_reported_by_its_variable() {
        let errors = settings(&[
            ("MACP_BIND_ADDR", "localhost"),
            ("MACP_CLEANUP_INTERVAL_SECS", "0"),
            ("MACP_SESSION_RETENTION_SECS", "an hour"),
            ("MACP_MAX_PAYLOAD_BYTES", "-1"),
            ("MACP_TLS_CERT_PATH", "/nonexistent/cert.pem"),
            ("MACP_LIST_SESSIONS_DEFAULT_PAGE_SIZE", "5000"),
            ("MACP_HTTP_BIND_ADDR", "127.0.0.1:8080"),
        ])
        .expect_err("refused");
        let joined = errors.join("\n");
        for expected in [
            "MACP_BIND_ADDR: 'localhost' is not a valid socket address",
            "MACP_CLEANUP_INTERVAL_SECS: must be a positive integer, got '0'",
            "MACP_SESSION_RETENTION_SECS: 'an hour' is not a valid non-negative integer",
            "MACP_MAX_PAYLOAD_BYTES: '-1' is not a valid positive integer",
            "MACP_TLS_CERT_PATH: file does not exist: /nonexistent/cert.pem",
            "MACP_LIST_SESSIONS_DEFAULT_PAGE_SIZE (5000) must not exceed the maximum page size (1000)",
            "MACP_HTTP_BIND_ADDR is set",
        ] {
            assert!(joined.contains(expected), "{expected} in:\n{joined}");
        }
        assert_eq!(errors.len(), 7, "{joined}");
    }
}
