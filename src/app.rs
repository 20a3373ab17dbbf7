//! Assembly: store, runtime (embedded or external), run service and the one listener.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::edge::EdgeOptions;
use crate::api::server::{Connections, Limits};
use crate::config::ServeArgs;
use crate::registry::{Registry, RegistryOptions};
use crate::runs::RunService;
use crate::runs::service::RunOptions;
use crate::runtime::RuntimeClient;
use crate::runtime::credentials::Credentials;
use crate::runtime::embedded::EmbeddedRuntime;
use crate::store::Store;

/// Where the runtime is.
#[derive(Debug, Clone)]
pub enum RuntimeTarget {
    /// Start the reference runtime in-process; with a token table it authenticates by token.
    Embedded {
        static_tokens: Option<String>,
    },
    External {
        address: String,
        tls: bool,
    },
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub bind: SocketAddr,
    pub database_url: String,
    pub runtime: RuntimeTarget,
    pub credentials: Credentials,
    pub request_timeout: Duration,
    pub run_options: RunOptions,
    /// The scenario registry (`PACKS_DIR`, `REGISTRY_CACHE_TTL_MS`).
    pub registry: RegistryOptions,
    /// Browser origins allowed by CORS (`*` = any).
    pub cors_origins: Vec<String>,
    /// Body and message limits, and the host names answered to.
    pub edge: EdgeOptions,
    /// OTLP/gRPC collector for traces (`OTEL_EXPORTER_OTLP_ENDPOINT`); `None` records none.
    pub otlp_endpoint: Option<String>,
    /// What clients may hold of the server.
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error("invalid listen address: {0}")]
    Address(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Embedded(#[from] crate::runtime::embedded::Error),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl AppConfig {
    pub fn from_args(args: &ServeArgs) -> Result<AppConfig, Error> {
        args.runtime.check()?;
        let bind: SocketAddr = format!("{}:{}", args.host, args.port)
            .parse()
            .or_else(|_| {
                use std::net::ToSocketAddrs;
                (args.host.as_str(), args.port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addresses| addresses.next())
                    .ok_or(())
            })
            .map_err(|_| Error::Address(format!("{}:{}", args.host, args.port)))?;
        let runtime = match &args.runtime.runtime_address {
            Some(address) => RuntimeTarget::External {
                address: address.clone(),
                tls: args.runtime.runtime_tls,
            },
            None => RuntimeTarget::Embedded {
                static_tokens: args.runtime.embedded_token_json()?,
            },
        };
        Ok(AppConfig {
            bind,
            database_url: args.database.database_url.clone(),
            runtime,
            credentials: args.runtime.credentials()?,
            request_timeout: args.runtime.request_timeout(),
            run_options: RunOptions {
                heartbeat: Duration::from_millis(args.stream_heartbeat_ms),
                stack: args.connections.stack,
                max_subscribers_per_run: args.connections.max_subscribers_per_run as usize,
                hub_max_bytes: usize::try_from(args.connections.hub_max_bytes_per_run)
                    .unwrap_or(usize::MAX),
                ..RunOptions::default()
            },
            registry: args.registry.options(),
            cors_origins: args.cors_origins.clone(),
            edge: args.edge()?,
            otlp_endpoint: args.otlp_endpoint.clone(),
            limits: args.connections.limits(),
        })
    }
}

/// A running service.
pub struct App {
    pub address: SocketAddr,
    database_url: String,
    pub service: RunService,
    embedded: Option<EmbeddedRuntime>,
    server: JoinHandle<()>,
    stop: CancellationToken,
}

impl App {
    pub async fn start(config: AppConfig) -> Result<App, Error> {
        let store = Store::connect(&config.database_url).await?;
        store.migrate().await?;
        let (embedded, address, tls) = match &config.runtime {
            RuntimeTarget::Embedded { static_tokens } => {
                let embedded = EmbeddedRuntime::start(
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    static_tokens.as_deref(),
                )
                .await?;
                let address = embedded.address().to_string();
                (Some(embedded), address, false)
            }
            RuntimeTarget::External { address, tls } => (None, address.clone(), *tls),
        };
        let runtime = RuntimeClient::connect_lazy(
            &address,
            config.credentials.clone(),
            config.request_timeout,
            tls,
        )?;
        let tracing = match &config.otlp_endpoint {
            Some(endpoint) => {
                crate::telemetry::trace::Tracing::otlp(endpoint, "macp-control-plane")
                    .map_err(|error| Error::Other(error.to_string()))?
            }
            None => crate::telemetry::trace::Tracing::disabled(),
        };
        let service = RunService::new(store, runtime, config.run_options.clone(), tracing);
        service
            .start_background()
            .await
            .map_err(|error| Error::Other(error.to_string()))?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|error| Error::Listen(config.bind, error))?;
        let address = listener
            .local_addr()
            .map_err(|error| Error::Listen(config.bind, error))?;
        let router = crate::api::router(
            service.clone(),
            Registry::new(config.registry.clone()),
            &config.cors_origins,
            &config.edge,
            address.ip(),
        )
        .map_err(|error| Error::Other(format!("gRPC reflection: {error}")))?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        // The ring hub says when a publication is waking subscribers, which connection turns
        // wait for; with the broadcast channel, connections are served the stock way.
        let connections = match service.deliveries() {
            Some(deliveries) => Connections::Turns(deliveries),
            None => Connections::Stock,
        };
        let server = tokio::spawn(crate::api::server::serve(
            listener,
            router,
            connections,
            config.limits.clone(),
            stopped,
        ));
        Ok(App {
            address,
            database_url: config.database_url.clone(),
            service,
            embedded,
            server,
            stop,
        })
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The embedded runtime's address, when there is one.
    pub fn embedded_runtime(&self) -> Option<SocketAddr> {
        self.embedded.as_ref().map(EmbeddedRuntime::address)
    }

    /// Stops accepting requests, then stops background work (bounded wait).
    pub async fn stop(self) {
        self.stop.cancel();
        self.service.shutdown(Duration::from_secs(5)).await;
        self.service.tracing().flush();
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            tracing::warn!("server did not stop within 5 s; closing its connections");
            server.abort();
        }
        drop(self.embedded);
    }
}
