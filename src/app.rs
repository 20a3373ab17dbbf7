//! Assembly: store, runtime (embedded or external), run service and the one listener.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::edge::EdgeOptions;
use crate::api::server::{Connections, Limits};
use crate::config::{DatabaseUrl, ServeArgs};
use crate::registry::{Registry, RegistryOptions};
use crate::runs::RunService;
use crate::runs::service::RunOptions;
use crate::runtime::RuntimeClient;
use crate::runtime::credentials::Credentials;
use crate::runtime::embedded::{EmbeddedOptions, EmbeddedRuntime};
use crate::store::Store;

/// Where the runtime is.
#[derive(Debug, Clone)]
pub enum RuntimeTarget {
    /// Start the reference runtime in-process, where agents can reach it too; with a token
    /// table (the runtime's MACP_AUTH_TOKENS_JSON) it authenticates by token.
    Embedded(EmbeddedOptions),
    External {
        address: String,
        tls: bool,
    },
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub bind: SocketAddr,
    /// Printed redacted (it may hold a password).
    pub database_url: DatabaseUrl,
    /// SQLite's busy timeout and size cap.
    pub store: crate::store::StoreOptions,
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
    /// Credentials, roles and rate limits.
    pub auth: crate::auth::AuthArgs,
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
    /// The configuration is unsafe to serve with (auth posture).
    #[error("{0}")]
    Refused(String),
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
            None => RuntimeTarget::Embedded(args.runtime.embedded_options()?),
        };
        Ok(AppConfig {
            bind,
            database_url: args.database.database_url.clone(),
            store: args.database.store_options(),
            runtime,
            credentials: args.runtime.credentials()?,
            request_timeout: args.runtime.request_timeout(),
            run_options: RunOptions {
                heartbeat: Duration::from_millis(args.stream_heartbeat_ms),
                stack: args.connections.stack,
                max_subscribers_per_run: args.connections.max_subscribers_per_run as usize,
                discovery: args.session_discovery_enabled,
                hub_max_bytes: usize::try_from(args.connections.hub_max_bytes_per_run)
                    .unwrap_or(usize::MAX),
                webhooks: args.webhooks.options(),
                circuit_breaker: args.runtime.circuit_breaker(),
                retention: args.retention.options(),
                runtime_outage_grace: Duration::from_millis(args.runtime.runtime_outage_grace_ms),
                cluster: args
                    .cluster
                    .options(args.database.database_url.expose_secret())
                    .map_err(|error| Error::Config(crate::config::Error::Invalid(error)))?,
                ..RunOptions::default()
            },
            registry: args.registry.options(),
            cors_origins: args.cors_origins.clone(),
            edge: args.edge()?,
            otlp_endpoint: args.otlp_endpoint.clone(),
            limits: args.connections.limits(),
            auth: args.auth.clone(),
        })
    }
}

/// How long a stop takes at most before the embedded runtime's own stop (SIGTERM's promise is
/// an exit within 2 s).
const STOP_BUDGET: Duration = Duration::from_millis(1_700);
/// How long background work (observers mid-append, the executor mid-call, webhook attempts)
/// gets to stop; the rest of the budget is the connections'.
const BACKGROUND_GRACE: Duration = Duration::from_millis(1_000);

/// A running service.
pub struct App {
    pub address: SocketAddr,
    database_url: DatabaseUrl,
    pub service: RunService,
    embedded: Option<EmbeddedRuntime>,
    server: JoinHandle<()>,
    stop: CancellationToken,
}

impl App {
    pub async fn start(config: AppConfig) -> Result<App, Error> {
        let store = Store::connect_with(config.database_url.expose_secret(), &config.store)
            .await
            .map_err(|error| Error::Other(config.database_url.redact_in(&error.to_string())))?;
        store.migrate().await?;
        store.prime_pool().await;
        let store = match &config.run_options.cluster {
            Some(cluster) => store.for_replica(&cluster.replica_id),
            None => store,
        };
        let (embedded, address, tls) = match &config.runtime {
            RuntimeTarget::Embedded(options) => {
                let embedded = EmbeddedRuntime::start_with(options.clone()).await?;
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
        )?
        .with_circuit_breaker(config.run_options.circuit_breaker.clone());
        let tracing = match &config.otlp_endpoint {
            Some(endpoint) => {
                crate::telemetry::trace::Tracing::otlp(endpoint, "macp-control-plane")
                    .map_err(|error| Error::Other(error.to_string()))?
            }
            None => crate::telemetry::trace::Tracing::disabled(),
        };
        let stored_keys = store.count_active_api_keys().await?;
        let setup = config
            .auth
            .setup(config.bind.ip(), store.clone(), stored_keys)
            .map_err(Error::Refused)?;
        if !setup.enabled {
            tracing::warn!(
                bind = %config.bind,
                "authentication is off: no API keys or JWT configured (loopback only); every caller is an admin"
            );
        }
        if let Some(jwt) = &setup.jwt {
            jwt.prefetch().await;
        }
        let authenticator = crate::auth::Authenticator::new(setup);
        let admin = crate::auth::admin::Admin::new(store.clone(), Some(authenticator.clone()));
        let run_options = RunOptions {
            embedded_runtime: embedded.as_ref().map(EmbeddedRuntime::address),
            ..config.run_options.clone()
        };
        let service = RunService::new(store, runtime, run_options, tracing);
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
        let guard = std::sync::Arc::new(crate::api::guard::Guard {
            auth: authenticator,
            throttle: crate::auth::Throttle::new(config.auth.throttle()),
            refusal_rows: crate::auth::Throttle::new(config.auth.throttle()),
            admin,
            service: service.clone(),
            max_body_bytes: config.edge.max_request_body_bytes,
            max_grpc_message_bytes: config.edge.grpc_max_decoding_message_bytes,
        });
        let router = crate::api::router(
            service.clone(),
            Registry::new(config.registry.clone()),
            guard,
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

    /// The database URL in full, password included: for connecting to it.
    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    /// The embedded runtime's address, when there is one.
    pub fn embedded_runtime(&self) -> Option<SocketAddr> {
        self.embedded.as_ref().map(EmbeddedRuntime::address)
    }

    /// Sessions the embedded runtime holds in memory, when there is one (the soak bench).
    pub async fn embedded_runtime_sessions(&self) -> Option<usize> {
        match &self.embedded {
            Some(embedded) => Some(embedded.sessions_in_memory().await),
            None => None,
        }
    }

    /// Stops accepting requests, lets background work finish what it is writing (its
    /// transactions commit and are published), ends live streams after what was published,
    /// and lets the connections finish their open requests: within [`STOP_BUDGET`] in all,
    /// what is left then is cut (an orchestrator's SIGKILL would follow soon anyway, and every
    /// run resumes from the store).
    pub async fn stop(self) {
        let deadline = tokio::time::Instant::now() + STOP_BUDGET;
        self.stop.cancel();
        self.service.shutdown(BACKGROUND_GRACE).await;
        self.service.tracing().flush();
        let mut server = self.server;
        if tokio::time::timeout_at(deadline, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("server did not stop within {STOP_BUDGET:?}; closing its connections");
            server.abort();
        }
        if let Some(embedded) = self.embedded {
            embedded.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn debug_output_of_the_config_never_holds_a_secret() {
        let (token, observer, password) = ("tok-5ecret-a", "tok-5ecret-obs", "pw-5ecret");
        let serve = Serve::try_parse_from([
            "serve",
            "--runtime-tokens",
            &format!(r#"{{"agent-a": "{token}"}}"#),
            "--runtime-bearer-token",
            observer,
            "--database-url",
            &format!("postgres://app:{password}@db.example/cp"),
        ])
        .expect("parses")
        .args;
        let config = AppConfig::from_args(&serve).expect("valid settings");
        for printed in [format!("{config:?}"), format!("{config:#?}")] {
            assert!(!printed.contains("5ecret"), "{printed}");
            // What is not secret still helps: where the database is, who the senders are.
            assert!(
                printed.contains("postgres://app:***@db.example/cp"),
                "{printed}"
            );
            assert!(printed.contains("agent-a"), "{printed}");
        }
    }
}
