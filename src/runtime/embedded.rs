//! The MACP reference runtime, served in-process on loopback: what `serve` runs when no runtime
//! address is configured, so one command gives a complete system.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use macp_runtime::log_store::LogStore;
use macp_runtime::pb::macp_runtime_service_server::MacpRuntimeServiceServer;
use macp_runtime::registry::SessionRegistry;
use macp_runtime::runtime::Runtime;
use macp_runtime::security::SecurityLayer;
use macp_runtime::server::MacpServer;
use macp_runtime::storage::MemoryBackend;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;

/// How often expired sessions and handoff implicit accepts are swept (the binary's
/// `MACP_CLEANUP_INTERVAL_SECS`; 1 s makes TTL expiry prompt).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A running embedded runtime; dropping it stops the server and the sweep.
pub struct EmbeddedRuntime {
    address: SocketAddr,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the embedded runtime on {0}: {1}")]
    Bind(SocketAddr, String),
    #[error("invalid runtime token table: {0}")]
    Tokens(String),
}

impl EmbeddedRuntime {
    /// Starts the reference runtime (memory storage) on `bind` (port 0 picks a free port).
    /// With `static_tokens` (the runtime's MACP_AUTH_TOKENS_JSON format) it authenticates by
    /// token table; otherwise it runs in dev mode (the bearer value is the sender).
    pub async fn start(
        bind: SocketAddr,
        static_tokens: Option<&SecretString>,
    ) -> Result<Self, Error> {
        let runtime = Arc::new(Runtime::new(
            Arc::new(MemoryBackend),
            Arc::new(SessionRegistry::new()),
            Arc::new(LogStore::new()),
        ));
        let mut security = SecurityLayer::dev_mode();
        if let Some(tokens) = static_tokens {
            security = security
                .with_static_tokens(tokens.expose_secret())
                // The runtime's parse error names the table's structure, not its tokens.
                .map_err(|error| Error::Tokens(error.to_string()))?;
        }
        let service = MacpRuntimeServiceServer::new(MacpServer::new(runtime.clone(), security))
            .max_decoding_message_size(1_048_576 + 65_536);
        let incoming = tonic::transport::server::TcpIncoming::bind(bind)
            .map_err(|error| Error::Bind(bind, error.to_string()))?
            .with_nodelay(Some(true));
        let address = incoming
            .local_addr()
            .map_err(|error| Error::Bind(bind, error.to_string()))?;
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "embedded runtime stopped");
            }
        });
        let sweeper = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                runtime.cleanup_expired_sessions().await;
                runtime.sweep_due_synthetic_accepts().await;
            }
        });
        tracing::info!(%address, "embedded MACP reference runtime listening");
        Ok(EmbeddedRuntime {
            address,
            server,
            sweeper,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for EmbeddedRuntime {
    fn drop(&mut self) {
        self.server.abort();
        self.sweeper.abort();
    }
}
