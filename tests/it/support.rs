//! Test harness: a served control plane on loopback (embedded reference runtime, SQLite in a temp
//! directory or a fresh PostgreSQL database), REST and gRPC clients, and event-driven waits.

use std::net::SocketAddr;
use std::time::Duration;

use macp_control_plane::api::edge::EdgeOptions;
use macp_control_plane::api::proto::control_plane_client::ControlPlaneClient;
use macp_control_plane::api::server::Limits;
use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
use macp_control_plane::auth::AuthArgs;
use macp_control_plane::projection::state::RunState;
use macp_control_plane::registry::RegistryOptions;
use macp_control_plane::runs::retention::RetentionOptions;
use macp_control_plane::runs::service::RunOptions;
use macp_control_plane::runtime::breaker::BreakerOptions;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::runtime::embedded::EmbeddedOptions;
use macp_control_plane::stack::Stack;
use macp_control_plane::store::Store;
use macp_control_plane::webhooks::WebhookOptions;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tonic::transport::Channel;

/// Admin connection for creating per-test PostgreSQL databases.
const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub app: App,
    pub base: String,
    pub http: reqwest::Client,
    /// What it was started with, for `restart`.
    config: AppConfig,
    _dir: tempfile::TempDir,
    postgres_db: TestDatabase,
}

/// A test's own PostgreSQL database, dropped with it: `TestApp::stop` drops it after the
/// service, and a test that ends without stopping (or fails) leaves none behind either.
struct TestDatabase(Option<String>);

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            // Nothing can be awaited here: a thread with a runtime of its own drops it.
            let _ = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(drop_database(&name));
                }
            })
            .join();
        }
    }
}

pub(crate) fn postgres_admin_url() -> String {
    std::env::var("MACP_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.into())
}

/// A fresh database URL for `backend`, or `None` (with a visible message) when PostgreSQL is
/// not reachable outside CI. In CI an unreachable PostgreSQL fails the test.
pub(crate) async fn database_url(
    backend: Backend,
    dir: &tempfile::TempDir,
) -> Option<(String, Option<String>)> {
    match backend {
        Backend::Sqlite => {
            let path = dir.path().join("control-plane.db");
            Some((format!("sqlite://{}?mode=rwc", path.display()), None))
        }
        Backend::Postgres => {
            let admin_url = postgres_admin_url();
            let admin = match Database::connect(&admin_url).await {
                Ok(admin) => admin,
                Err(error) => {
                    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                        panic!("PostgreSQL unreachable at {admin_url} in CI: {error}");
                    }
                    eprintln!(
                        "SKIPPED: PostgreSQL unreachable at {admin_url} ({error}); set MACP_TEST_POSTGRES_URL to run the PostgreSQL suite"
                    );
                    return None;
                }
            };
            let name = format!("cp_test_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            let base = admin_url
                .rsplit_once('/')
                .map(|(base, _)| base.to_owned())
                .unwrap_or(admin_url);
            Some((format!("{base}/{name}"), Some(name)))
        }
    }
}

/// Drops a test's PostgreSQL database (made by `database_url`), whoever is still connected.
pub(crate) async fn drop_database(name: &str) {
    if let Ok(admin) = Database::connect(&postgres_admin_url()).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

pub fn dev_credentials() -> Credentials {
    Credentials::Dev {
        observer: "macp-control-plane".to_owned(),
    }
}

pub struct Options {
    pub runtime: RuntimeTarget,
    /// Live batches a subscriber may fall behind before it re-reads from the store.
    pub hub_capacity: Option<usize>,
    /// Runtime credentials (dev mode when `None`).
    pub credentials: Option<Credentials>,
    /// OTLP collector to export traces to.
    pub otlp_endpoint: Option<String>,
    /// Body and message limits, allowed host names.
    pub edge: EdgeOptions,
    /// Connection limits.
    pub limits: Limits,
    /// The live-stream transport.
    pub stack: Stack,
    pub max_subscribers_per_run: usize,
    /// Credentials, roles and rate limits (auth off on loopback by default).
    pub auth: AuthArgs,
    /// Webhook delivery settings.
    pub webhooks: WebhookOptions,
    /// The runtime client's circuit breaker.
    pub circuit_breaker: BreakerOptions,
    /// Data retention.
    pub retention: RetentionOptions,
    /// How long a run's session stream may stay broken before the run fails.
    pub runtime_outage_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Port 0: parallel tests never compete for the runtime's default port.
            runtime: RuntimeTarget::Embedded(EmbeddedOptions {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..EmbeddedOptions::default()
            }),
            hub_capacity: None,
            credentials: None,
            otlp_endpoint: None,
            edge: EdgeOptions::default(),
            limits: Limits::default(),
            stack: Stack::default(),
            max_subscribers_per_run: RunOptions::default().max_subscribers_per_run,
            auth: AuthArgs::default(),
            webhooks: WebhookOptions::default(),
            circuit_breaker: BreakerOptions::default(),
            retention: RetentionOptions::default(),
            runtime_outage_grace: RunOptions::default().runtime_outage_grace,
        }
    }
}

pub async fn start(backend: Backend) -> Option<TestApp> {
    start_with(backend, Options::default()).await
}

pub async fn start_with(backend: Backend, options: Options) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (database_url, postgres_db) = database_url(backend, &dir).await?;
    // A test configured with API keys calls with the first of them.
    let http = match options.auth.auth_api_keys.first() {
        Some(key) => {
            use secrecy::ExposeSecret as _;
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", key.expose_secret())
                    .parse()
                    .expect("a header value"),
            );
            reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client")
        }
        None => reqwest::Client::new(),
    };
    let config = AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: database_url.into(),
        store: Default::default(),
        runtime: options.runtime,
        credentials: options.credentials.unwrap_or_else(dev_credentials),
        request_timeout: Duration::from_secs(5),
        run_options: RunOptions {
            reconcile_interval: Duration::from_secs(2),
            hub_capacity: options
                .hub_capacity
                .unwrap_or(RunOptions::default().hub_capacity),
            stack: options.stack,
            max_subscribers_per_run: options.max_subscribers_per_run,
            webhooks: options.webhooks,
            circuit_breaker: options.circuit_breaker,
            retention: options.retention,
            runtime_outage_grace: options.runtime_outage_grace,
            ..RunOptions::default()
        },
        // The repository's sample packs.
        registry: RegistryOptions::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packs"),
        ),
        cors_origins: vec!["http://localhost:3000".to_owned()],
        otlp_endpoint: options.otlp_endpoint,
        edge: options.edge,
        limits: options.limits,
        auth: options.auth,
    };
    let app = App::start(config.clone()).await.expect("app starts");
    let base = format!("http://{}", app.address);
    Some(TestApp {
        app,
        base,
        http,
        config,
        _dir: dir,
        postgres_db: TestDatabase(postgres_db),
    })
}

impl TestApp {
    /// Stops the service and starts a new one on the same database (a new port, and a new
    /// embedded runtime): what a restart of the process does.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// `restart` with settings changed by `change`.
    pub async fn restart_with(mut self, change: impl FnOnce(&mut AppConfig)) -> TestApp {
        self.app.stop().await;
        change(&mut self.config);
        let app = App::start(self.config.clone()).await.expect("app restarts");
        TestApp {
            base: format!("http://{}", app.address),
            app,
            ..self
        }
    }

    pub async fn stop(self) {
        self.app.stop().await;
        let mut database = self.postgres_db;
        if let Some(name) = database.0.take() {
            drop_database(&name).await;
        }
    }

    /// A store of the test's own on the app's database: what a test reads (or writes, as
    /// another process would) beside the service.
    pub async fn store(&self) -> Store {
        Store::connect(self.app.database_url())
            .await
            .expect("the test's store connects")
    }

    /// Ends every server process connected to this app's PostgreSQL database (what a server
    /// restart does to its clients). Nothing on SQLite.
    pub async fn cut_database_connections(&self) {
        let Some(name) = &self.postgres_db.0 else {
            return;
        };
        let admin = Database::connect(&postgres_admin_url())
            .await
            .expect("admin connects");
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        );
        // Termination is asynchronous: done when no process of the database is left.
        while !admin
            .query_all_raw(sea_orm::Statement::from_string(
                admin.get_database_backend(),
                &sql,
            ))
            .await
            .expect("backends terminated")
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn grpc(&self) -> ControlPlaneClient<Channel> {
        ControlPlaneClient::connect(self.base.clone())
            .await
            .expect("grpc connects")
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts a run over REST and returns its id.
    /// Stores an API key (a viewer's) through the admin route; its id.
    pub async fn create_viewer_key(&self) -> String {
        let (status, key) = self
            .post(
                "/keys",
                &serde_json::json!({"actor": "ops", "roles": ["viewer"]}),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        key["info"]["id"].as_str().expect("a key id").to_owned()
    }

    pub async fn start_run(&self, request: &Value) -> String {
        let (status, body) = self.post("/runs", request).await;
        assert_eq!(status, 201, "start failed: {body}");
        body["runId"].as_str().expect("runId").to_owned()
    }

    /// Waits, without polling on a timer, until the run's projection satisfies `done`: checks
    /// the stored state, then each batch the hub publishes.
    pub async fn wait_for(&self, run_id: &str, done: impl Fn(&RunState) -> bool) -> RunState {
        let service = &self.app.service;
        let mut batches = service.subscribe(run_id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut state = service.state(run_id).await.expect("state");
        while !done(&state) {
            match tokio::time::timeout_at(deadline, batches.recv()).await {
                Ok(Ok(batch)) => state = RunState::clone(&batch.state),
                Ok(Err(macp_control_plane::events::hub::RecvError::Lagged(_))) => {
                    state = service.state(run_id).await.expect("state");
                }
                Ok(Err(error)) => panic!("hub closed: {error}"),
                Err(_) => panic!(
                    "run {run_id} did not reach the expected state in 30 s; last: {}",
                    serde_json::to_string_pretty(&state).unwrap_or_default()
                ),
            }
        }
        state
    }

    pub async fn wait_terminal(&self, run_id: &str) -> RunState {
        self.wait_for(run_id, |state| {
            matches!(
                state.run.status.as_str(),
                "completed" | "failed" | "cancelled"
            )
        })
        .await
    }

    pub async fn events(&self, run_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/runs/{run_id}/events?limit=10000"))
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().expect("event array")
    }

    pub async fn event_types(&self, run_id: &str) -> Vec<String> {
        self.events(run_id)
            .await
            .iter()
            .map(|event| event["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Declares one test per backend for an async scenario `fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario($crate::support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario($crate::support::Backend::Postgres).await;
            }
        }
    };
}

/// Runs `async fn name(stack: Stack)` scenarios on each live-stream transport (`--stack`).
#[macro_export]
macro_rules! on_both_stacks {
    ($($scenario:ident),+ $(,)?) => {
        $(mod $scenario {
            use macp_control_plane::stack::Stack;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn custom() {
                super::$scenario(Stack::Custom).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn library() {
                super::$scenario(Stack::Library).await;
            }
        })+
    };
}

/// The API key `admin_key_auth` configures (an admin).
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// Auth on with one static admin key, which `TestApp::http` then sends; no rate limits.
pub fn admin_key_auth() -> AuthArgs {
    AuthArgs {
        auth_api_keys: vec![ADMIN_KEY.to_owned().into()],
        throttle_limit: 0,
        throttle_read_limit: 0,
        ..AuthArgs::default()
    }
}
