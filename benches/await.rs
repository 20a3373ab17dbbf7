//! AwaitRun benchmark (`cargo bench --bench await`): 1,000 gRPC `AwaitRun` calls on one running
//! run (over 8 HTTP/2 connections, each under the server's 256 concurrent streams), then the run
//! is cancelled; prints how long after its terminal batch was published each waiter had its
//! answer (p50/p99/max) and whether all were within 50 ms. On SQLite, on each live-stream stack
//! (`--stack custom|library`), and with the waiters calling the run service in process (the
//! cost without the transport). `BENCH_WAITERS` sets the waiters (default 1000).

use std::net::SocketAddr;
use std::time::Duration;

use macp_control_plane::api::proto;
use macp_control_plane::api::proto::control_plane_client::ControlPlaneClient;
use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
use macp_control_plane::runs::service::RunOptions;
use macp_control_plane::runtime::credentials::Credentials;
use macp_control_plane::stack::Stack;
use tokio::time::Instant;

// The service binary's allocator (src/main.rs), so that the service in this process allocates
// as it does in production; glibc's malloc and free were a sixth of this bench's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BUDGET_MS: f64 = 50.0;
const CONNECTIONS: usize = 8;

fn waiters() -> usize {
    std::env::var("BENCH_WAITERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000)
}

async fn start_app(dir: &tempfile::TempDir, stack: Stack) -> App {
    App::start(AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("await.db").display()
        )
        .into(),
        store: Default::default(),
        runtime: RuntimeTarget::Embedded(Default::default()),
        credentials: Credentials::Dev {
            observer: "macp-control-plane".into(),
        },
        request_timeout: Duration::from_secs(120),
        run_options: RunOptions {
            stack,
            ..RunOptions::default()
        },
        registry: macp_control_plane::registry::RegistryOptions::new("packs"),
        cors_origins: Vec::new(),
        edge: Default::default(),
        otlp_endpoint: None,
        limits: Default::default(),
        auth: Default::default(),
    })
    .await
    .expect("app starts")
}

/// The seed example: a session that stays open until someone ends it.
fn open_session_request() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/seed-decision.json"
    ))
    .expect("examples/seed-decision.json");
    let mut request: serde_json::Value = serde_json::from_str(&text).expect("seed is JSON");
    request["execution"]["idempotencyKey"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
    request
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// How the waiters ask: through the gRPC API, or the run service in process (what the hub and
/// the shared final read cost, without the transport).
#[derive(Debug, Clone, Copy)]
enum Via {
    Grpc,
    Service,
}

async fn bench(stack: Stack, via: Via) {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = start_app(&dir, stack).await;
    let service = app.service.clone();
    let run_id = service
        .start(open_session_request())
        .await
        .expect("run starts")
        .run_id;
    let mut batches = service.subscribe(&run_id);
    while service.get(&run_id).await.expect("run").status.as_str() != "running" {
        batches.recv().await.expect("hub open");
    }

    let base = format!("http://{}", app.address);
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(
            ControlPlaneClient::connect(base.clone())
                .await
                .expect("grpc connects"),
        );
    }
    let count = waiters();
    let before = service.live_subscribers();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let run_id = run_id.clone();
        match via {
            Via::Grpc => {
                let mut client = clients[index % CONNECTIONS].clone();
                tasks.spawn(async move {
                    let result = client
                        .await_run(proto::AwaitRunRequest {
                            run_id,
                            timeout_ms: Some(120_000),
                        })
                        .await;
                    let status = result.map(|result| result.into_inner().run.map(|run| run.status));
                    (Instant::now(), status.map_err(|error| error.to_string()))
                });
            }
            Via::Service => {
                let service = service.clone();
                tasks.spawn(async move {
                    let result = service.await_end(&run_id, Duration::from_secs(120)).await;
                    let status = result.map(|outcome| Some(outcome.run.status.as_str().to_owned()));
                    (Instant::now(), status.map_err(|error| error.to_string()))
                });
            }
        }
    }
    // Setup only: every waiter has subscribed before the run ends, or the measure would count
    // waiters that never waited.
    while service.live_subscribers() < before + count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    service
        .cancel(&run_id, Some("benchmark".to_owned()))
        .await
        .expect("cancel");
    let terminal_at = loop {
        let batch = batches.recv().await.expect("hub open");
        if batch
            .events
            .iter()
            .any(|event| event.event_type == "run.cancelled")
        {
            break batch.published_at;
        }
    };
    let mut latencies = Vec::with_capacity(count);
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("waiter task") {
            (at, Ok(Some(status))) if status == "cancelled" => {
                latencies.push(at.saturating_duration_since(terminal_at).as_secs_f64() * 1e3);
            }
            (_, other) => {
                failures += 1;
                eprintln!("waiter failed: {other:?}");
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "await {stack:?} via {via:?}: {} waiters answered (failed {failures}) after the terminal batch: \
         p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms — {}",
        latencies.len(),
        if failures == 0 && max <= BUDGET_MS {
            format!("all within {BUDGET_MS} ms")
        } else {
            format!("OVER the {BUDGET_MS} ms target")
        }
    );
    app.stop().await;
}

#[tokio::main]
async fn main() {
    for stack in [Stack::Custom, Stack::Library] {
        for via in [Via::Grpc, Via::Service] {
            bench(stack, via).await;
        }
    }
}
