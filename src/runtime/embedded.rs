//! The MACP reference runtime, served in-process: what `serve` runs when no runtime address is
//! configured, so one command gives a complete system that agents can reach too (by default on
//! the runtime's own address, `127.0.0.1:50051`). The runtime's construction, its listener and
//! its maintenance sweep are shared with the standalone `runtime` subcommand (`standalone.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use macp_runtime::log_store::LogStore;
use macp_runtime::macp_core::receipt::{KeySet, ReceiptSigner};
use macp_runtime::mode_registry::ModeRegistry;
use macp_runtime::pb::macp_runtime_service_server::MacpRuntimeServiceServer;
use macp_runtime::policy::registry::PolicyRegistry;
use macp_runtime::receipts::ReceiptConfig;
use macp_runtime::registry::SessionRegistry;
use macp_runtime::runtime::Runtime;
use macp_runtime::security::SecurityLayer;
use macp_runtime::server::MacpServer;
use macp_runtime::storage::{FileBackend, MemoryBackend, StorageBackend};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

/// The reference runtime's own default address (its `MACP_BIND_ADDR`), where SDK agents look.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:50051";

/// How long a terminal session stays in the embedded runtime's memory after its start (the
/// binary's `MACP_SESSION_RETENTION_SECS` semantics; the binary's default is 3600 s). The
/// runtime keeps about 75 KB per finished session, and it shares a process with the control
/// plane, which has everything of a run in its own store once the run is terminal: it confirms
/// the terminal state within milliseconds and waits at most 5 s for late envelopes. A minute
/// covers those, and an agent reading the outcome of a session shorter than that right after
/// it ends, while the runtime holds at most a minute of sessions (about 45 MB at a steady 10
/// runs/s). A session that lasts longer is evicted at the first sweep after it ends.
pub const DEFAULT_SESSION_RETENTION: Duration = Duration::from_secs(60);

/// The longest retention the runtime's sweep can take: it computes its cutoff in i64
/// milliseconds (100 years; longer is the same as never).
pub const MAX_SESSION_RETENTION_SECS: u64 = 100 * 365 * 24 * 3600;

/// The decoding limit of the binary's default `MACP_MAX_PAYLOAD_BYTES` plus its envelope
/// allowance.
pub(super) const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1_048_576;
pub(super) const ENVELOPE_OVERHEAD_BYTES: usize = 64 * 1024;

/// How often the embedded runtime sweeps: TTL expiry, handoff implicit accepts and eviction
/// (the binary's `MACP_CLEANUP_INTERVAL_SECS`; 1 s makes TTL expiry prompt).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Where the runtime keeps sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing on disk; sessions are lost with the process (and never compacted).
    Memory,
    /// The runtime's file backend: a directory per session under `dir`, recovered at start.
    File { dir: PathBuf },
}

/// How `serve` runs the embedded runtime.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Where it listens; port 0 picks a free port.
    pub bind: SocketAddr,
    /// With a token table (the runtime's MACP_AUTH_TOKENS_JSON format) it authenticates by
    /// token; otherwise it runs in dev mode (the bearer value is the sender).
    pub static_tokens: Option<SecretString>,
    pub storage: Storage,
    /// Terminal sessions are evicted from memory this long after their start; `None` keeps
    /// them for the life of the process.
    pub session_retention: Option<Duration>,
    /// How it signs decision receipts (unsigned by default).
    pub receipts: ReceiptSigning,
}

/// The embedded runtime's decision-receipt signing: the reference binary's variables of the
/// same names, read by `serve` as its own settings (the standalone `runtime` subcommand reads
/// them with the runtime's own `ReceiptConfig::from_env`).
#[derive(Debug, Clone, Default)]
pub struct ReceiptSigning {
    /// `MACP_RECEIPT_SIGNING_KEY_PATH`: an Ed25519 key, a PKCS#8 PEM or a private OKP JWK.
    /// Unset: receipts are unsigned (and the control plane records none).
    pub key_path: Option<PathBuf>,
    /// `MACP_RECEIPT_SIGNING_KID`: the key id, required for a PEM key (a JWK may carry its own).
    pub kid: Option<String>,
    /// `MACP_RUNTIME_ID`: receipts' issuer is `runtime:<id>`; required when signing.
    pub runtime_id: Option<String>,
}

impl ReceiptSigning {
    /// The runtime's receipt configuration; an error names the setting and never echoes key
    /// material (the runtime's `KeyError` does not).
    pub fn config(&self) -> Result<ReceiptConfig, Error> {
        let invalid = |message: String| Error::Receipts(message);
        let runtime_id = self
            .runtime_id
            .as_deref()
            .filter(|id| !id.trim().is_empty());
        let signer = match &self.key_path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    invalid(format!(
                        "MACP_RECEIPT_SIGNING_KEY_PATH: cannot read {}: {error}",
                        path.display()
                    ))
                })?;
                let signer = ReceiptSigner::load(&text, self.kid.as_deref())
                    .map_err(|error| invalid(format!("MACP_RECEIPT_SIGNING_KEY_PATH: {error}")))?;
                if runtime_id.is_none() {
                    return Err(invalid(
                        "MACP_RUNTIME_ID must be set when receipts are signed: it is the issuer \
                         (runtime:<id>) of every signed receipt, stable and distinct per deployment"
                            .to_owned(),
                    ));
                }
                Some(signer)
            }
            None if self.kid.is_some() => {
                return Err(invalid(
                    "MACP_RECEIPT_SIGNING_KID is set but MACP_RECEIPT_SIGNING_KEY_PATH is not"
                        .to_owned(),
                ));
            }
            None => None,
        };
        ReceiptConfig::new(signer, KeySet::new(), runtime_id).map_err(invalid)
    }
}

impl Default for EmbeddedOptions {
    /// Loopback on any free port, memory storage, the default retention: what tests and
    /// benches want. `serve`'s default address is [`DEFAULT_ADDRESS`] (EMBEDDED_RUNTIME_ADDR).
    fn default() -> Self {
        EmbeddedOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            static_tokens: None,
            storage: Storage::Memory,
            session_retention: Some(DEFAULT_SESSION_RETENTION),
            receipts: ReceiptSigning::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot bind the embedded MACP runtime on {0} (EMBEDDED_RUNTIME_ADDR): {1}; set \
         EMBEDDED_RUNTIME_ADDR to a free address (127.0.0.1:0 picks any free port), or \
         RUNTIME_ADDRESS to use a runtime that is already running"
    )]
    Bind(SocketAddr, std::io::Error),
    #[error("invalid runtime token table: {0}")]
    Tokens(String),
    #[error("cannot open the runtime's storage in {0}: {1}")]
    Storage(PathBuf, String),
    #[error("decision receipts: {0}")]
    Receipts(String),
}

/// What a runtime is built from; the standalone runtime fills it from the binary's variables.
pub(super) struct Parts {
    pub storage: Storage,
    /// Recovery errors are fatal (`MACP_STRICT_RECOVERY`).
    pub strict_recovery: bool,
    pub policies: Arc<PolicyRegistry>,
    pub receipts: ReceiptConfig,
}

/// Opens storage, recovers the sessions it holds (file storage) and builds the runtime, the way
/// the reference binary does. Its `MACP_CHECKPOINT_INTERVAL`, `MACP_COMPACT_TERMINAL_LOGS` and
/// `MACP_AUDIT_*` are read from the environment by the runtime itself.
pub(super) async fn open(parts: Parts) -> Result<Arc<Runtime>, Error> {
    let storage: Arc<dyn StorageBackend> = match &parts.storage {
        Storage::Memory => Arc::new(MemoryBackend),
        Storage::File { dir } => Arc::new(open_file_storage(dir)?),
    };
    let registry = Arc::new(SessionRegistry::new());
    let log_store = Arc::new(LogStore::new());
    let modes = Arc::new(ModeRegistry::build_default(Arc::new(
        macp_runtime::policy::DefaultPolicyEvaluator,
    )));
    let mut mismatches = 0;
    if let Storage::File { dir } = &parts.storage {
        let report = macp_runtime::recovery::recover_sessions(
            storage.as_ref(),
            &registry,
            &log_store,
            &modes,
            &parts.policies,
            parts.strict_recovery,
        )
        .await
        .map_err(|error| Error::Storage(dir.clone(), format!("recovery: {error}")))?;
        if report.recovered > 0 {
            tracing::info!(sessions = report.recovered, dir = %dir.display(), "recovered runtime sessions");
        }
        mismatches = report.replay_mismatches;
    }
    let runtime =
        Runtime::with_registries(storage, registry, log_store, modes, parts.policies.clone())
            .with_receipt_config(parts.receipts);
    if mismatches > 0 {
        tracing::warn!(
            mismatches,
            "replay/snapshot divergences detected during recovery (log is authoritative)"
        );
        runtime.metrics().record_replay_mismatch(mismatches);
    }
    Ok(Arc::new(runtime))
}

fn open_file_storage(dir: &Path) -> Result<FileBackend, Error> {
    let failed = |error: std::io::Error| Error::Storage(dir.to_path_buf(), error.to_string());
    std::fs::create_dir_all(dir).map_err(failed)?;
    macp_runtime::storage::migrate_if_needed(dir).map_err(failed)?;
    macp_runtime::storage::cleanup_temp_files(dir);
    FileBackend::new(dir.to_path_buf()).map_err(failed)
}

/// The runtime's gRPC service; decoding is bounded by the payload limit plus the envelope.
pub(super) fn grpc_service(
    runtime: Arc<Runtime>,
    security: SecurityLayer,
    read_only_policies: bool,
    max_payload_bytes: usize,
) -> MacpRuntimeServiceServer<MacpServer> {
    let mut server = MacpServer::new(runtime, security);
    if read_only_policies {
        server = server.with_read_only_policies();
    }
    MacpRuntimeServiceServer::new(server)
        .max_decoding_message_size(max_payload_bytes.saturating_add(ENVELOPE_OVERHEAD_BYTES))
}

/// Binds the listener now, so a taken port fails start-up instead of a background task.
pub(super) fn bind(address: SocketAddr) -> std::io::Result<(TcpIncoming, SocketAddr)> {
    let incoming = TcpIncoming::bind(address)?
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let bound = incoming.local_addr()?;
    Ok((incoming, bound))
}

/// The runtime's maintenance, as the binary's cleanup task runs it.
pub(super) struct Sweep {
    pub interval: Duration,
    /// Terminal sessions leave memory this long after their start (`None`: never).
    pub session_retention: Option<Duration>,
    /// Stored sessions are deleted this long after their start (`None`: never).
    pub disk_retention: Option<Duration>,
}

fn retention_secs(retention: Duration) -> u64 {
    retention.as_secs().min(MAX_SESSION_RETENTION_SECS)
}

/// Each tick: expire sessions past their TTL, settle implicit accepts whose deadline passed
/// (after expiry, so a session whose TTL and deadline both lapsed expires), then evict.
pub(super) fn spawn_sweeper(runtime: Arc<Runtime>, sweep: Sweep) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(sweep.interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            runtime.cleanup_expired_sessions().await;
            runtime.sweep_due_synthetic_accepts().await;
            if let Some(retention) = sweep.session_retention {
                runtime
                    .evict_stale_sessions(retention_secs(retention))
                    .await;
            }
            if let Some(retention) = sweep.disk_retention {
                runtime.gc_disk_sessions(retention_secs(retention)).await;
            }
        }
    })
}

/// Saves every session in memory to storage (the binary's final snapshot at exit).
pub(super) async fn persist_sessions(runtime: &Runtime) {
    for session in runtime.registry.get_all_sessions().await {
        if let Err(error) = runtime.storage.save_session(&session).await {
            tracing::warn!(session_id = %session.session_id, %error, "failed to persist session on shutdown");
        }
    }
}

/// A running embedded runtime; dropping it stops the server and the sweep.
pub struct EmbeddedRuntime {
    address: SocketAddr,
    runtime: Arc<Runtime>,
    persistent: bool,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

impl EmbeddedRuntime {
    /// Starts the reference runtime with memory storage and the default retention on `bind`
    /// (port 0 picks a free port); see [`EmbeddedOptions::static_tokens`].
    pub async fn start(
        bind: SocketAddr,
        static_tokens: Option<&SecretString>,
    ) -> Result<Self, Error> {
        Self::start_with(EmbeddedOptions {
            bind,
            static_tokens: static_tokens.cloned(),
            ..EmbeddedOptions::default()
        })
        .await
    }

    pub async fn start_with(options: EmbeddedOptions) -> Result<Self, Error> {
        let mut security = SecurityLayer::dev_mode();
        if let Some(tokens) = &options.static_tokens {
            security = security
                .with_static_tokens(tokens.expose_secret())
                // The runtime's parse error names the table's structure, not its tokens.
                .map_err(|error| Error::Tokens(error.to_string()))?;
        }
        // Bound before anything else starts, so a taken port is the error start-up reports.
        let (incoming, address) =
            bind(options.bind).map_err(|error| Error::Bind(options.bind, error))?;
        let persistent = matches!(options.storage, Storage::File { .. });
        let receipts = options.receipts.config()?;
        if let Some(kid) = receipts.kid() {
            tracing::info!(
                kid,
                issuer = receipts.issuer(),
                "decision receipts are signed"
            );
        }
        let runtime = open(Parts {
            storage: options.storage.clone(),
            strict_recovery: false,
            policies: Arc::new(PolicyRegistry::new()),
            receipts,
        })
        .await?;
        let service = grpc_service(runtime.clone(), security, false, DEFAULT_MAX_PAYLOAD_BYTES);
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "embedded runtime stopped");
            }
        });
        let sweeper = spawn_sweeper(
            runtime.clone(),
            Sweep {
                interval: SWEEP_INTERVAL,
                session_retention: options.session_retention,
                disk_retention: None,
            },
        );
        let storage = match &options.storage {
            Storage::Memory => "memory".to_owned(),
            Storage::File { dir } => format!("file ({})", dir.display()),
        };
        tracing::info!(
            %address,
            storage,
            session_retention_secs = options.session_retention.map(|retention| retention.as_secs()),
            "embedded MACP reference runtime listening; agents can reach it at {address}"
        );
        Ok(EmbeddedRuntime {
            address,
            runtime,
            persistent,
            server,
            sweeper,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sessions the runtime holds in memory (terminal ones until they are evicted).
    pub async fn sessions_in_memory(&self) -> usize {
        self.runtime.registry.sessions.read().await.len()
    }

    /// Stops serving and sweeping; with file storage, saves the sessions it holds first.
    pub async fn stop(self) {
        self.server.abort();
        self.sweeper.abort();
        if self.persistent {
            persist_sessions(&self.runtime).await;
        }
    }
}

impl Drop for EmbeddedRuntime {
    fn drop(&mut self) {
        self.server.abort();
        self.sweeper.abort();
    }
}
