//! Service settings: command-line flags over environment variables over an optional TOML file
//! (`--config`) over built-in defaults. Every setting is documented in `--help`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use crate::api::edge::{self, EdgeOptions};
use crate::api::server::Limits;
use crate::registry::RegistryOptions;
use crate::runs::service::RunOptions;
use crate::runtime::breaker::BreakerOptions;
use crate::runtime::credentials::Credentials;
use crate::runtime::embedded::{self, EmbeddedOptions, ReceiptSigning, Storage};
use crate::stack::Stack;

/// Default SQLite database, created in the working directory on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://macp-control-plane.db?mode=rwc";

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Interface to listen on (gRPC, grpc-web and REST share one port).
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (3001 is what the MACP UI console expects).
    #[arg(long, env = "PORT", default_value_t = 3001)]
    pub port: u16,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub connections: ConnectionArgs,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,

    #[command(flatten)]
    pub webhooks: crate::webhooks::WebhookArgs,

    #[command(flatten)]
    pub retention: crate::runs::retention::RetentionArgs,

    #[command(flatten)]
    pub cluster: crate::runs::cluster::ClusterArgs,

    /// Browser origins allowed to call the API (REST, SSE, grpc-web), comma separated; the
    /// default is the UI console on this machine; `*` allows any origin.
    #[arg(
        long,
        env = "CORS_ORIGINS",
        default_value = "http://localhost:3000,http://127.0.0.1:3000",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Host names (no port; any port is accepted) the service answers to besides `localhost`,
    /// `127.x.x.x` and `[::1]`, comma separated. Listening on loopback, a request addressed to
    /// any other name is refused with 421 (DNS rebinding); listening elsewhere, the names are
    /// checked only when set.
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Largest REST request body, in bytes; a larger one is refused with 413.
    #[arg(long, env = "MAX_REQUEST_BODY_BYTES", default_value_t = edge::DEFAULT_MAX_REQUEST_BODY_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_request_body_bytes: u64,

    /// Largest gRPC request message, in bytes; a larger one is refused with OUT_OF_RANGE.
    #[arg(long, env = "GRPC_MAX_DECODING_MESSAGE_BYTES", default_value_t = edge::DEFAULT_GRPC_MAX_DECODING_MESSAGE_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub grpc_max_decoding_message_bytes: u64,

    /// Largest gRPC response message, in bytes (a page of events can be large); a larger one
    /// fails with OUT_OF_RANGE.
    #[arg(long, env = "GRPC_MAX_ENCODING_MESSAGE_BYTES", default_value_t = edge::DEFAULT_GRPC_MAX_ENCODING_MESSAGE_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub grpc_max_encoding_message_bytes: u64,

    /// Sessions agents start themselves on the runtime become runs (observed to their end), and
    /// ambient Signals (`WatchSignals`) are stored with the runs they correlate with.
    #[arg(long, env = "SESSION_DISCOVERY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub session_discovery_enabled: bool,

    /// Heartbeat interval of live streams (SSE and WatchRun) when nothing happens, in ms.
    #[arg(long, env = "STREAM_SSE_HEARTBEAT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub stream_heartbeat_ms: u64,

    /// OTLP/gRPC collector for traces (e.g. `http://127.0.0.1:4317`): a span per run lifecycle
    /// with children for runtime calls, persistence and delivery. Unset: no traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `macp_control_plane=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// A TOML file with any of these settings (snake_case keys, e.g. `port = 3002`);
    /// flags and environment variables override it.
    #[arg(long, env = "MACP_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://file.db?mode=rwc` or `postgres://user:password@host/db`;
    /// the default is `sqlite://macp-control-plane.db?mode=rwc`. The value may hold a
    /// password, so help never shows it.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub database_url: DatabaseUrl,

    /// SQLite: how long a write waits, in ms, while another process holds the database's
    /// write lock; past it the request fails with 503 STORE_BUSY (rolled back, retry).
    #[arg(long, env = "SQLITE_BUSY_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub sqlite_busy_timeout_ms: u64,

    /// SQLite: the database file grows to at most this many pages (of 4 KiB); past it writes
    /// fail with 507 STORE_FULL, as on a full disk. Unset: SQLite's own limit.
    #[arg(long, env = "SQLITE_MAX_PAGE_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub sqlite_max_page_count: Option<u64>,

    /// PostgreSQL: connections in the pool, all opened at start. The server must take every
    /// replica's pool and three more per replica (its listening, announcing and leader
    /// connections in a cluster) within its `max_connections`.
    #[arg(long, env = "POSTGRES_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub postgres_pool_size: u32,
}

impl DatabaseArgs {
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            sqlite_busy_timeout: Duration::from_millis(self.sqlite_busy_timeout_ms),
            sqlite_max_page_count: self.sqlite_max_page_count,
            postgres_pool_size: self.postgres_pool_size,
        }
    }
}

/// A database URL. It may hold a password, so `Debug` and `Display` print it redacted
/// (`postgres://app:***@host/db`); [`DatabaseUrl::expose_secret`] is for connecting.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL without its password: the user-info one (`store::redacted_url`) and a
    /// `password=` query parameter, which the PostgreSQL driver reads too.
    pub fn redacted(&self) -> String {
        let full = self.expose_secret();
        let mut url = crate::store::redacted_url(full);
        // A password with an unescaped `/`, `?` or `#` hides from that parse, and such a URL is
        // just the one an error message quotes: hide all user info before the last `@` then
        // (which may hide more than the password, never less).
        if url == full
            && let Some((scheme, rest)) = full.split_once("://")
            && let Some((user_info, after)) = rest.rsplit_once('@')
            && user_info.contains(':')
        {
            url = format!("{scheme}://***@{after}");
        }
        let Some((base, query)) = url.split_once('?') else {
            return url;
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        format!("{base}?{}", query.join("&"))
    }

    /// `text` (an error's message) with this URL in it redacted: the database library quotes
    /// the whole URL when it cannot parse it or has no driver for it.
    pub fn redact_in(&self, text: &str) -> String {
        match self.expose_secret() {
            "" => text.to_owned(),
            url => text.replace(url, &self.redacted()),
        }
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        DatabaseUrl(SecretString::from(url))
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        DatabaseUrl(SecretString::from(url))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Address of the MACP runtime (`host:port` or a URL). Unset: the reference runtime runs
    /// in-process on loopback.
    #[arg(long, env = "RUNTIME_ADDRESS")]
    pub runtime_address: Option<String>,

    /// Use TLS (system roots) to reach the runtime.
    #[arg(long, env = "RUNTIME_TLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub runtime_tls: bool,

    /// Allow plaintext gRPC to an external runtime (required without RUNTIME_TLS).
    #[arg(long, env = "RUNTIME_ALLOW_INSECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub runtime_allow_insecure: bool,

    /// Dev-mode credentials: send every message as `authorization: Bearer <sender id>` (the
    /// reference runtime's dev mode). Turn off to use RUNTIME_TOKENS.
    #[arg(long, env = "RUNTIME_USE_DEV_HEADER", default_value_t = true, action = clap::ArgAction::Set)]
    pub runtime_use_dev_header: bool,

    /// The control plane's own identity in dev mode (used for session-wide watches).
    #[arg(
        long,
        env = "RUNTIME_DEV_AGENT_ID",
        default_value = "macp-control-plane"
    )]
    pub runtime_dev_agent_id: String,

    /// Runtime token table as JSON: `{"<sender>": "<token>", ...}`. Each kickoff or agent
    /// message is sent with its sender's token.
    #[arg(
        long,
        env = "RUNTIME_TOKENS",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub runtime_tokens: Option<SecretString>,

    /// File holding the runtime token table (same JSON as RUNTIME_TOKENS).
    #[arg(long, env = "RUNTIME_TOKENS_FILE")]
    pub runtime_tokens_file: Option<PathBuf>,

    /// The control plane's own runtime token (an observer identity), with RUNTIME_TOKENS.
    #[arg(
        long,
        env = "RUNTIME_BEARER_TOKEN",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub runtime_bearer_token: Option<SecretString>,

    /// Deadline of each unary runtime call, in milliseconds.
    #[arg(long, env = "RUNTIME_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub runtime_request_timeout_ms: u64,

    /// Consecutive unary runtime calls that find the runtime down (unreachable, timed out,
    /// failing internally; not refusals or NOT_FOUND) before calls fail at once without
    /// trying; 0 never stops trying.
    #[arg(long, env = "RUNTIME_CIRCUIT_BREAKER_THRESHOLD", default_value_t = BreakerOptions::default().threshold)]
    pub runtime_circuit_breaker_threshold: u32,

    /// How long calls fail at once before one trial call is let through, in ms.
    #[arg(long, env = "RUNTIME_CIRCUIT_BREAKER_RESET_MS", default_value_t = BreakerOptions::default().reset.as_millis() as u64)]
    pub runtime_circuit_breaker_reset_ms: u64,

    /// How long a run's session stream may stay broken (the runtime unreachable) before the
    /// run fails with RUNTIME_UNAVAILABLE, in ms; a runtime back within it finds its runs as
    /// they were.
    #[arg(long, env = "RUNTIME_OUTAGE_GRACE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub runtime_outage_grace_ms: u64,

    /// Where the embedded runtime listens (without RUNTIME_ADDRESS), for the control plane and
    /// for agents: the reference runtime's own default, so SDK agents find it. `127.0.0.1:0`
    /// or `:0` picks any free port. Off loopback it requires RUNTIME_TOKENS.
    #[arg(long, env = "EMBEDDED_RUNTIME_ADDR", default_value = embedded::DEFAULT_ADDRESS)]
    pub embedded_runtime_addr: String,

    /// The embedded runtime forgets a finished session this many seconds after the session
    /// started (the runtime's MACP_SESSION_RETENTION_SECS), which bounds its memory; the
    /// control plane keeps the run.
    #[arg(long, env = "EMBEDDED_RUNTIME_SESSION_RETENTION_SECS", default_value_t = embedded::DEFAULT_SESSION_RETENTION.as_secs(), value_parser = clap::value_parser!(u64).range(0..=embedded::MAX_SESSION_RETENTION_SECS))]
    pub embedded_runtime_session_retention_secs: u64,

    /// Where the embedded runtime keeps sessions: `memory`, or `file` (the runtime's file
    /// storage in EMBEDDED_RUNTIME_DATA_DIR, recovered at the next start).
    #[arg(long, env = "EMBEDDED_RUNTIME_STORAGE", default_value = "memory", value_parser = ["memory", "file"])]
    pub embedded_runtime_storage: String,

    /// The embedded runtime's directory with EMBEDDED_RUNTIME_STORAGE=file (the runtime's
    /// MACP_DATA_DIR; relative to the working directory).
    #[arg(long, env = "EMBEDDED_RUNTIME_DATA_DIR", default_value = ".macp-data")]
    pub embedded_runtime_data_dir: PathBuf,

    /// The embedded runtime signs decision receipts with this Ed25519 key (a PKCS#8 PEM, or a
    /// private OKP JWK); each resolved run then records its receipt (`decision.receipt`,
    /// `GET /runs/{id}/receipt`). Requires MACP_RUNTIME_ID. An external runtime is configured
    /// on its own side.
    #[arg(long, env = "MACP_RECEIPT_SIGNING_KEY_PATH")]
    pub receipt_signing_key_path: Option<PathBuf>,

    /// The signing key's id (`kid`), required with a PEM key; a JWK may carry its own.
    #[arg(long, env = "MACP_RECEIPT_SIGNING_KID")]
    pub receipt_signing_kid: Option<String>,

    /// The embedded runtime's stable identity: its receipts' issuer is `runtime:<id>`.
    #[arg(long, env = "MACP_RUNTIME_ID")]
    pub runtime_id: Option<String>,
}

/// What clients may hold of the server: connections, streams and subscribers.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Open connections at most; one more is closed as soon as it is accepted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = Limits::default().max_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A request's headers must arrive within this many ms, or the connection is closed (slow
    /// clients, slow-loris): HTTP/1.1's each time the connection waits for one, so an idle
    /// keep-alive connection closes after it too; and the first request of any connection,
    /// HTTP/2 preface included.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = Limits::default().header_read_timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// A connection with no request in flight for this many ms is closed (HTTP/2: GOAWAY;
    /// keepalive PINGs are not requests), and one whose writes have not moved for as long (a
    /// client that stopped reading, live streams included) is dropped. An open live stream is a
    /// request in flight.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = Limits::default().idle_timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// HTTP/2 keepalive: a PING every this many ms; a peer that does not answer within as long
    /// is dropped.
    #[arg(long, env = "HTTP2_KEEPALIVE_MS", default_value_t = Limits::default().http2_keepalive.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub http2_keepalive_ms: u64,

    /// HTTP/2 streams (requests, live streams) one connection may have open at once.
    #[arg(long, env = "HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = Limits::default().http2_max_concurrent_streams, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,

    /// Live-stream subscribers (SSE, WatchRun) one run may have at once; one more gets
    /// `429 TOO_MANY_SUBSCRIBERS`.
    #[arg(long, env = "MAX_SUBSCRIBERS_PER_RUN", default_value_t = RunOptions::default().max_subscribers_per_run as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_subscribers_per_run: u32,

    /// About the memory (bytes) a run's live-stream channel keeps for its slowest subscriber;
    /// past it, the oldest batches go and a subscriber that had yet to read them catches up
    /// from the database.
    #[arg(long, env = "HUB_MAX_BYTES_PER_RUN", default_value_t = RunOptions::default().hub_max_bytes as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub hub_max_bytes_per_run: u64,

    /// The live-stream transport: `custom` (connection turns with batched writes, the ring hub
    /// channel) or `library` (hyper-util's stock executor, tokio's broadcast channel). Both
    /// are kept for the streams benchmark's A/B; see ARCHITECTURE.md.
    #[arg(long, env = "STACK", value_enum, default_value_t = Stack::Custom)]
    pub stack: Stack,
}

impl ConnectionArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections as usize,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            http2_keepalive: Duration::from_millis(self.http2_keepalive_ms),
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Root of the scenario packs tree served by the scenario registry (`/packs`, `/launch`, …).
    #[arg(long, env = "PACKS_DIR", default_value = "packs")]
    pub packs_dir: PathBuf,

    /// How long the registry reuses a loaded packs tree, in milliseconds; 0 reads the files on
    /// every call, so edited packs show up without a restart.
    #[arg(long, env = "REGISTRY_CACHE_TTL_MS", default_value_t = 0)]
    pub registry_cache_ttl_ms: u64,
}

impl ServeArgs {
    /// The edge's settings; empty `ALLOWED_HOSTS` entries (`ALLOWED_HOSTS=`) are none.
    pub fn edge(&self) -> Result<EdgeOptions, Error> {
        let allowed_hosts = self
            .allowed_hosts
            .iter()
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                edge::host_name(entry)
                    .map_err(|reason| Error::Invalid(format!("ALLOWED_HOSTS: {reason}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(EdgeOptions {
            max_request_body_bytes: bytes(self.max_request_body_bytes),
            grpc_max_decoding_message_bytes: bytes(self.grpc_max_decoding_message_bytes),
            grpc_max_encoding_message_bytes: bytes(self.grpc_max_encoding_message_bytes),
            allowed_hosts,
        })
    }
}

/// A byte limit as a size; past what this platform addresses it is no limit.
fn bytes(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

impl RegistryArgs {
    pub fn options(&self) -> RegistryOptions {
        RegistryOptions {
            cache_ttl_ms: self.registry_cache_ttl_ms,
            ..RegistryOptions::new(&self.packs_dir)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid runtime token table: {0}")]
    Tokens(String),
    #[error("{0}")]
    Invalid(String),
}

impl RuntimeArgs {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.runtime_request_timeout_ms.max(1))
    }

    pub fn circuit_breaker(&self) -> BreakerOptions {
        BreakerOptions {
            threshold: self.runtime_circuit_breaker_threshold,
            reset: Duration::from_millis(self.runtime_circuit_breaker_reset_ms),
        }
    }

    /// The token table (sender → token), from RUNTIME_TOKENS or RUNTIME_TOKENS_FILE.
    fn token_table(&self) -> Result<Option<HashMap<String, String>>, Error> {
        let text = match (&self.runtime_tokens, &self.runtime_tokens_file) {
            (Some(text), _) => SecretString::from(text.expose_secret()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(SecretString::from)
                .map_err(|error| {
                    Error::Tokens(format!("cannot read {}: {error}", path.display()))
                })?,
            (None, None) => return Ok(None),
        };
        // serde_json's message can quote the input (`invalid type: string "…"`): say only
        // where the problem is.
        let table: HashMap<String, String> =
            serde_json::from_str(text.expose_secret()).map_err(|error| {
                Error::Tokens(format!(
                    "expected a JSON object of sender → token (problem at line {}, column {})",
                    error.line(),
                    error.column()
                ))
            })?;
        if table.values().any(|token| token.trim().is_empty()) {
            return Err(Error::Tokens("tokens must not be empty".to_owned()));
        }
        Ok(Some(table))
    }

    pub fn credentials(&self) -> Result<Credentials, Error> {
        match self.token_table()? {
            Some(by_sender) => {
                let observer_token = self.runtime_bearer_token.as_ref().ok_or_else(|| {
                    Error::Tokens(
                        "RUNTIME_BEARER_TOKEN (the control plane's own token) is required with a token table"
                            .to_owned(),
                    )
                })?;
                Ok(Credentials::tokens(
                    by_sender,
                    observer_token.expose_secret().to_owned(),
                ))
            }
            None if self.runtime_use_dev_header => Ok(Credentials::Dev {
                observer: self.runtime_dev_agent_id.clone(),
            }),
            None => Err(Error::Invalid(
                "no runtime credentials: set RUNTIME_TOKENS (or RUNTIME_TOKENS_FILE), or RUNTIME_USE_DEV_HEADER=true"
                    .to_owned(),
            )),
        }
    }

    /// The embedded runtime's token table (its MACP_AUTH_TOKENS_JSON format), when tokens are
    /// configured: every sender may start sessions; the control plane's identity observes.
    pub fn embedded_token_json(&self) -> Result<Option<SecretString>, Error> {
        let Some(table) = self.token_table()? else {
            return Ok(None);
        };
        let mut entries: Vec<serde_json::Value> = table
            .iter()
            .map(|(sender, token)| {
                serde_json::json!({"token": token, "sender": sender, "can_start_sessions": true})
            })
            .collect();
        if let Some(token) = &self.runtime_bearer_token {
            entries.push(serde_json::json!({
                "token": token.expose_secret(),
                "sender": self.runtime_dev_agent_id,
                "can_start_sessions": false,
                "is_observer": true,
            }));
        }
        Ok(Some(SecretString::from(
            serde_json::json!({ "tokens": entries }).to_string(),
        )))
    }

    /// The embedded runtime's settings (used without RUNTIME_ADDRESS).
    pub fn embedded_options(&self) -> Result<EmbeddedOptions, Error> {
        let text = self.embedded_runtime_addr.trim();
        // `:port` is loopback, as in the runtime's own examples.
        let bind = match text.strip_prefix(':') {
            Some(port) => format!("127.0.0.1:{port}").parse::<SocketAddr>(),
            None => text.parse::<SocketAddr>(),
        }
        .map_err(|_| {
            Error::Invalid(format!(
                "EMBEDDED_RUNTIME_ADDR: '{text}' is not an IP address and port (e.g. 127.0.0.1:50051, or :0 for any free port)"
            ))
        })?;
        let static_tokens = self.embedded_token_json()?;
        // Without tokens the runtime takes any bearer value as that sender (dev mode).
        if static_tokens.is_none() && !bind.ip().is_loopback() {
            return Err(Error::Invalid(format!(
                "EMBEDDED_RUNTIME_ADDR={bind} is not a loopback address: without RUNTIME_TOKENS the embedded runtime lets any caller act as any agent; set RUNTIME_TOKENS (and RUNTIME_BEARER_TOKEN), or listen on 127.0.0.1"
            )));
        }
        let storage = match self.embedded_runtime_storage.as_str() {
            "file" => Storage::File {
                dir: self.embedded_runtime_data_dir.clone(),
            },
            _ => Storage::Memory,
        };
        let receipts = ReceiptSigning {
            key_path: self.receipt_signing_key_path.clone(),
            kid: self.receipt_signing_kid.clone(),
            runtime_id: self.runtime_id.clone(),
        };
        // Checked now, so a bad key is a configuration error, not a runtime that starts unsigned.
        receipts
            .config()
            .map_err(|error| Error::Invalid(error.to_string()))?;
        Ok(EmbeddedOptions {
            bind,
            static_tokens,
            storage,
            session_retention: Some(Duration::from_secs(
                self.embedded_runtime_session_retention_secs,
            )),
            receipts,
        })
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.runtime_address.is_some() && !self.runtime_tls && !self.runtime_allow_insecure {
            return Err(Error::Invalid(
                "RUNTIME_ALLOW_INSECURE=false requires RUNTIME_TLS=true for an external runtime"
                    .to_owned(),
            ));
        }
        if self.runtime_address.is_some() && self.receipt_signing_key_path.is_some() {
            return Err(Error::Invalid(
                "MACP_RECEIPT_SIGNING_KEY_PATH signs the embedded runtime's receipts; with \
                 RUNTIME_ADDRESS the external runtime signs with its own key (set it there)"
                    .to_owned(),
            ));
        }
        self.credentials().map(|_| ())
    }
}

/// The `--config` path from the arguments or MACP_CONFIG, found before clap runs so the file's
/// values can become defaults.
fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
    }
    std::env::var_os("MACP_CONFIG").map(PathBuf::from)
}

/// Installs the `--config` file's values as defaults of `subcommand`'s arguments, so flags and
/// environment variables still win over them.
pub fn apply_file_defaults(
    command: clap::Command,
    subcommand: &str,
    args: &[String],
) -> Result<clap::Command, Error> {
    let Some(path) = config_path(args) else {
        return Ok(command);
    };
    let values = read_file(&path)?;
    let Some(sub) = command.find_subcommand(subcommand) else {
        return Ok(command);
    };
    for (key, _) in &values {
        if !sub.get_arguments().any(|arg| arg.get_id() == key.as_str()) {
            return Err(Error::File {
                path: path.clone(),
                reason: format!("unknown setting '{key}'"),
            });
        }
    }
    Ok(command.mut_subcommand(subcommand, |mut sub| {
        for (key, value) in values {
            sub = sub.mut_arg(key, |arg| arg.default_value(value));
        }
        sub
    }))
}

fn read_file(path: &PathBuf) -> Result<Vec<(String, String)>, Error> {
    let text = std::fs::read_to_string(path).map_err(|error| Error::File {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    // toml's own message quotes the offending line, which may hold a secret: the position only.
    let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        Error::File {
            path: path.clone(),
            reason: match line {
                Some(line) => format!("not valid TOML (line {line}): {}", error.message()),
                None => format!("not valid TOML: {}", error.message()),
            },
        }
    })?;
    table
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                toml::Value::Boolean(flag) => flag.to_string(),
                other => {
                    return Err(Error::File {
                        path: path.clone(),
                        reason: format!(
                            "setting '{key}' must be a string, number or boolean, not {}",
                            other.type_str()
                        ),
                    });
                }
            };
            Ok((key, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Serve(ServeArgs),
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, String> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let command =
            apply_file_defaults(Cli::command(), "serve", &args).map_err(|e| e.to_string())?;
        let matches = command
            .try_get_matches_from(&args)
            .map_err(|e| e.to_string())?;
        let Command::Serve(serve) = Cli::from_arg_matches(&matches)
            .map_err(|e| e.to_string())?
            .command;
        Ok(serve)
    }

    #[test]
    fn the_embedded_runtime_address_is_checked_by_its_setting() {
        let options = |extra: &[&str]| {
            let mut args = vec!["cp", "serve"];
            args.extend_from_slice(extra);
            parse(&args)
                .expect("parses")
                .runtime
                .embedded_options()
                .map_err(|error| error.to_string())
        };
        let any = options(&["--embedded-runtime-addr", ":0"]).expect("valid");
        assert_eq!(any.bind.to_string(), "127.0.0.1:0");
        let given = options(&["--embedded-runtime-addr", "127.0.0.1:50151"]).expect("valid");
        assert_eq!(given.bind.to_string(), "127.0.0.1:50151");
        let error = options(&["--embedded-runtime-addr", "localhost:1"]).expect_err("refused");
        assert!(
            error.contains("EMBEDDED_RUNTIME_ADDR: 'localhost:1'"),
            "{error}"
        );
        // Off loopback, dev mode would let anyone on the network act as any agent.
        let error = options(&["--embedded-runtime-addr", "0.0.0.0:50051"]).expect_err("refused");
        assert!(error.contains("RUNTIME_TOKENS"), "{error}");
        let tokens = options(&[
            "--embedded-runtime-addr",
            "0.0.0.0:50051",
            "--runtime-tokens",
            r#"{"agent-a": "token-a"}"#,
            "--runtime-bearer-token",
            "token-observer",
        ])
        .expect("valid with tokens");
        assert!(tokens.static_tokens.is_some());
    }

    #[test]
    fn receipt_signing_is_checked_by_its_settings() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("key.jwk");
        // A private OKP JWK (seed of 7s), as `ReceiptSigner::load` reads it.
        std::fs::write(
            &key,
            r#"{"kty":"OKP","crv":"Ed25519","d":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc","kid":"k1"}"#,
        )
        .expect("key file");
        let key = key.to_str().expect("utf-8 path");
        let runtime = |extra: &[&str]| {
            let mut args = vec!["cp", "serve"];
            args.extend_from_slice(extra);
            parse(&args).expect("parses").runtime
        };
        let refusal = |extra: &[&str]| {
            runtime(extra)
                .embedded_options()
                .expect_err("refused")
                .to_string()
        };
        let signed = runtime(&["--receipt-signing-key-path", key, "--runtime-id", "rt-1"])
            .embedded_options()
            .expect("valid");
        let config = signed.receipts.config().expect("a configuration");
        assert_eq!(config.kid(), Some("k1"));
        assert_eq!(config.issuer(), "runtime:rt-1");
        assert!(
            refusal(&["--receipt-signing-key-path", key]).contains("MACP_RUNTIME_ID"),
            "the issuer is required when signing"
        );
        let missing = dir.path().join("absent.pem");
        let error = refusal(&[
            "--receipt-signing-key-path",
            missing.to_str().expect("utf-8 path"),
            "--runtime-id",
            "rt-1",
        ]);
        assert!(
            error.contains("MACP_RECEIPT_SIGNING_KEY_PATH: cannot read"),
            "{error}"
        );
        assert!(refusal(&["--receipt-signing-kid", "k1"]).contains("MACP_RECEIPT_SIGNING_KID"));
        let external = runtime(&[
            "--runtime-address",
            "127.0.0.1:50051",
            "--receipt-signing-key-path",
            key,
        ]);
        let error = external.check().expect_err("refused").to_string();
        assert!(error.contains("external runtime signs"), "{error}");
    }

    #[test]
    fn the_config_file_sets_defaults_that_flags_override() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cp.toml");
        std::fs::write(
            &file,
            "port = 4100\nlog_format = \"json\"\nruntime_request_timeout_ms = 2500\n",
        )
        .expect("write");
        let path = file.display().to_string();
        let from_file = parse(&["cp", "serve", "--config", &path]).expect("parses");
        assert_eq!(from_file.port, 4100);
        assert_eq!(from_file.log_format, "json");
        assert_eq!(from_file.runtime.runtime_request_timeout_ms, 2500);
        let overridden =
            parse(&["cp", "serve", "--config", &path, "--port", "4200"]).expect("parses");
        assert_eq!(overridden.port, 4200);
    }

    #[test]
    fn unknown_or_malformed_file_settings_are_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cp.toml");
        std::fs::write(&file, "prot = 4100\n").expect("write");
        let error =
            parse(&["cp", "serve", "--config", &file.display().to_string()]).expect_err("refused");
        assert!(error.contains("unknown setting 'prot'"), "{error}");
        std::fs::write(&file, "port = [1]\n").expect("write");
        assert!(parse(&["cp", "serve", "--config", &file.display().to_string()]).is_err());
    }

    #[test]
    fn edge_settings_from_flags_and_file() {
        let defaults = parse(&["cp", "serve"])
            .expect("parses")
            .edge()
            .expect("valid");
        assert!(defaults.allowed_hosts.is_empty());
        assert_eq!(defaults.max_request_body_bytes, 1024 * 1024);
        let args = parse(&[
            "cp",
            "serve",
            "--allowed-hosts",
            "CP.example.com,cp.local",
            "--max-request-body-bytes",
            "2048",
        ])
        .expect("parses")
        .edge()
        .expect("valid");
        assert_eq!(args.allowed_hosts, ["cp.example.com", "cp.local"]);
        assert_eq!(args.max_request_body_bytes, 2048);
        let with_port = parse(&["cp", "serve", "--allowed-hosts", "cp.example.com:8080"]);
        assert!(with_port.expect("parses").edge().is_err());
        let empty = parse(&["cp", "serve", "--allowed-hosts", ""]).expect("parses");
        assert!(empty.edge().expect("valid").allowed_hosts.is_empty());
        assert!(parse(&["cp", "serve", "--max-request-body-bytes", "0"]).is_err());

        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cp.toml");
        std::fs::write(&file, "allowed_hosts = \"a.example,b.example\"\n").expect("write");
        let from_file = parse(&["cp", "serve", "--config", &file.display().to_string()])
            .expect("parses")
            .edge()
            .expect("valid");
        assert_eq!(from_file.allowed_hosts, ["a.example", "b.example"]);
    }

    #[test]
    fn a_token_table_needs_the_control_planes_own_token() {
        let mut args = parse(&["cp", "serve"]).expect("parses").runtime;
        args.runtime_tokens = Some(r#"{"agent-a": "secret"}"#.into());
        assert!(args.credentials().is_err());
        args.runtime_bearer_token = Some("observer".into());
        assert!(matches!(args.credentials(), Ok(Credentials::Tokens { .. })));
        args.runtime_tokens = Some("not json".into());
        assert!(args.check().is_err());
    }

    /// Secret values used by the tests below; none of them may be printed.
    const TOKEN_A: &str = "tok-a-5ecret-7f3e";
    const OBSERVER_TOKEN: &str = "tok-observer-5ecret-91c2";
    const DB_PASSWORD: &str = "pw-5ecret-d41d";

    fn assert_no_secret(printed: &str) {
        for secret in [TOKEN_A, OBSERVER_TOKEN, DB_PASSWORD] {
            assert!(!printed.contains(secret), "{secret} printed in:\n{printed}");
        }
    }

    fn secret_args() -> ServeArgs {
        let tokens = format!(r#"{{"agent-a": "{TOKEN_A}"}}"#);
        let url = format!("postgres://app:{DB_PASSWORD}@db.example/cp?sslmode=require");
        parse(&[
            "cp",
            "serve",
            "--runtime-tokens",
            &tokens,
            "--runtime-bearer-token",
            OBSERVER_TOKEN,
            "--database-url",
            &url,
        ])
        .expect("parses")
    }

    #[test]
    fn debug_output_of_settings_never_holds_a_secret() {
        let args = secret_args();
        assert_no_secret(&format!("{args:?}"));
        assert_no_secret(&format!("{args:#?}"));
        let credentials = args.runtime.credentials().expect("a token table");
        assert_no_secret(&format!("{credentials:?}"));
        let table = args.runtime.embedded_token_json().expect("valid");
        assert_no_secret(&format!("{table:?}"));
        // What is redacted is still there to be used.
        assert!(
            table
                .expect("a table")
                .expose_secret()
                .contains(OBSERVER_TOKEN)
        );
        assert!(
            args.database
                .database_url
                .expose_secret()
                .contains(DB_PASSWORD)
        );
    }

    #[test]
    fn database_urls_print_without_their_password() {
        for (url, printed) in [
            (
                format!("postgres://app:{DB_PASSWORD}@db.example:5432/cp?sslmode=require"),
                "postgres://app:***@db.example:5432/cp?sslmode=require",
            ),
            (
                format!("postgres://db.example/cp?user=app&password={DB_PASSWORD}&sslmode=require"),
                "postgres://db.example/cp?user=app&password=***&sslmode=require",
            ),
            (
                format!("postgres://app:{DB_PASSWORD}/x?y#z@db.example/cp"),
                "postgres://***@db.example/cp",
            ),
            (
                "postgres://app@db.example/cp?application_name=cp@host".to_owned(),
                "postgres://app@db.example/cp?application_name=cp@host",
            ),
            (
                DEFAULT_DATABASE_URL.to_owned(),
                "sqlite://macp-control-plane.db?mode=rwc",
            ),
        ] {
            let url = DatabaseUrl::from(url);
            assert_eq!(url.to_string(), printed);
            assert_eq!(format!("{url:?}"), format!("DatabaseUrl({printed:?})"));
        }
        let url = DatabaseUrl::from(format!("mysql://app:{DB_PASSWORD}@db/cp"));
        let message = format!(
            "The connection string '{}' has no driver.",
            url.expose_secret()
        );
        assert_eq!(
            url.redact_in(&message),
            "The connection string 'mysql://app:***@db/cp' has no driver."
        );
    }

    #[test]
    fn help_never_shows_a_secret_from_the_config_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cp.toml");
        std::fs::write(
            &file,
            format!(
                "runtime_tokens = '{{\"agent-a\": \"{TOKEN_A}\"}}'\n\
                 runtime_bearer_token = \"{OBSERVER_TOKEN}\"\n\
                 database_url = \"postgres://app:{DB_PASSWORD}@db/cp\"\n"
            ),
        )
        .expect("write");
        let path = file.display().to_string();
        // The file's values are in force…
        let args = parse(&["cp", "serve", "--config", &path]).expect("parses");
        assert!(args.runtime.credentials().is_ok());
        // …and help, where they are defaults, does not show them.
        let help = parse(&["cp", "serve", "--config", &path, "--help"]).expect_err("help");
        assert!(help.contains("--runtime-bearer-token"), "{help}");
        assert!(help.contains(DEFAULT_DATABASE_URL), "{help}");
        assert_no_secret(&help);
    }

    #[test]
    fn a_malformed_token_table_is_reported_without_its_content() {
        let mut args = parse(&["cp", "serve"]).expect("parses").runtime;
        args.runtime_bearer_token = Some(OBSERVER_TOKEN.into());
        // serde_json would say `invalid type: string "<the token>"`.
        args.runtime_tokens = Some(format!("\"{TOKEN_A}\"").into());
        let error = args.credentials().expect_err("not a table").to_string();
        assert!(error.contains("line 1"), "{error}");
        assert_no_secret(&error);
    }

    #[test]
    fn a_broken_config_file_is_reported_without_its_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cp.toml");
        let path = file.display().to_string();
        let read = |text: String| {
            std::fs::write(&file, text).expect("write");
            read_file(&file).expect_err("refused").to_string()
        };
        // A syntax error on a line holding a secret (the quote is never closed).
        let error = read(format!(
            "port = 3002\nruntime_bearer_token = \"{OBSERVER_TOKEN}\n"
        ));
        assert!(error.contains("line 2") && error.contains(&path), "{error}");
        assert_no_secret(&error);
        // A value of the wrong kind.
        let error = read(format!("auth_api_keys = [\"{TOKEN_A}\"]\n"));
        assert!(error.contains("array"), "{error}");
        assert_no_secret(&error);
    }
}
