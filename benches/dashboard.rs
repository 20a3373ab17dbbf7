//! Dashboard benchmark (`cargo bench --bench dashboard`): 100,000 stored runs (inserted in bulk
//! straight into the database: runs, projection rows, one signal event per five runs, spread
//! over the last 29 days), then `GetDashboardOverview` through the service (SQL aggregates, the
//! latest runs, the embedded runtime's health) for each window (1h and 6h in minute buckets, 24h
//! in hours, 7d and 30d in days: the 30-day window holds every run), and with a scenario or an
//! environment filter.
//! Prints p50/p99 per case and whether p99 stays within 100 ms.
//!
//! Both SQLite and PostgreSQL (127.0.0.1:5432, skipped with a message when unreachable).
//! `BENCH_RUNS` sets the runs (default 100000); `BENCH_BACKENDS` picks the databases (default
//! `sqlite,postgres`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use macp_control_plane::app::{App, AppConfig, RuntimeTarget};
use macp_control_plane::domain::dashboard::OverviewQuery;
use macp_control_plane::runs::service::RunOptions;
use macp_control_plane::runtime::credentials::Credentials;
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend};
use serde_json::json;

const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const BUDGET_MS: f64 = 100.0;
const ITERATIONS: usize = 30;
/// Rows per INSERT (SQLite binds at most 32,766 values a statement).
const CHUNK: usize = 1000;

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000)
}

/// A fresh database.
async fn database(backend: &str, dir: &tempfile::TempDir) -> Option<String> {
    match backend {
        "sqlite" => Some(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("dashboard.db").display()
        )),
        _ => {
            let admin = match Database::connect(POSTGRES_ADMIN).await {
                Ok(admin) => admin,
                Err(error) => {
                    println!("postgres: SKIPPED (PostgreSQL unreachable: {error})");
                    return None;
                }
            };
            let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .ok()?;
            Some(format!("postgres://postgres@127.0.0.1:5432/{name}"))
        }
    }
}

async fn drop_database(url: &str) {
    if let Some(name) = url.strip_prefix("postgres://postgres@127.0.0.1:5432/")
        && let Ok(admin) = Database::connect(POSTGRES_ADMIN).await
    {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

async fn start_app(database_url: String) -> App {
    App::start(AppConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: database_url.into(),
        store: Default::default(),
        runtime: RuntimeTarget::Embedded(Default::default()),
        credentials: Credentials::Dev {
            observer: "macp-control-plane".into(),
        },
        request_timeout: Duration::from_secs(10),
        run_options: RunOptions::default(),
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

fn json_value(backend: DbBackend, value: serde_json::Value) -> SimpleExpr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_values("CAST($1 AS jsonb)", [value.to_string()]),
        _ => Expr::value(value.to_string()),
    }
}

fn time(at: DateTime<Utc>) -> SimpleExpr {
    Expr::value(at)
}

fn optional_time(at: Option<DateTime<Utc>>) -> SimpleExpr {
    Expr::value(at)
}

/// One run's rows: its `runs` row, its projection row and, for one run in five, a signal.
struct Synthetic {
    run: Vec<SimpleExpr>,
    projection: Vec<SimpleExpr>,
    signal: Option<Vec<SimpleExpr>>,
}

fn synthetic(backend: DbBackend, index: usize, now: DateTime<Utc>) -> Synthetic {
    let id = uuid::Uuid::new_v4().to_string();
    // Spread over the last 29 days, newest last.
    let age_ms = (29.0 * 86_400_000.0 * (1.0 - index as f64 / runs() as f64)) as i64;
    let created = now - chrono::Duration::milliseconds(age_ms);
    let started = created + chrono::Duration::milliseconds(200 + (index % 50) as i64);
    let ended = started + chrono::Duration::milliseconds(1_000 + (index * 7919 % 60_000) as i64);
    let (status, started, ended, error) = match index % 100 {
        0..=79 => ("completed", Some(started), Some(ended), None),
        80..=87 => (
            "failed",
            Some(started),
            Some(ended),
            Some(["RUNTIME_UNAVAILABLE", "SESSION_EXPIRED", "POLICY_DENIED"][index % 3]),
        ),
        88..=92 => ("cancelled", Some(started), Some(ended), None),
        93..=97 => ("running", Some(started), None, None),
        _ => ("queued", None, None, None),
    };
    let scenario = format!("fraud/scenario-{}@1.0.0", index % 20);
    let environment = ["dev", "staging", "prod"][index % 3];
    let metadata = json!({
        "scenarioRef": scenario,
        "environment": environment,
        "intent": "benchmark",
    });
    let run = vec![
        Expr::value(id.clone()),
        Expr::value(status),
        Expr::value(if index.is_multiple_of(50) {
            "sandbox"
        } else {
            "live"
        }),
        Expr::value("rust"),
        Expr::value(Some("v1")),
        Expr::value(Option::<String>::None),
        Expr::value(Option::<String>::None),
        Expr::value(Option::<String>::None),
        Expr::value(12i64),
        Expr::value(Some("scenario")),
        Expr::value(index.is_multiple_of(2).then_some(scenario)),
        json_value(backend, json!(["bench"])),
        json_value(backend, metadata),
        Expr::value(error),
        Expr::value(error.map(|code| format!("{code}: synthetic"))),
        time(created),
        optional_time(started),
        optional_time(ended),
        time(ended.or(started).unwrap_or(created)),
        Expr::value(Option::<String>::None),
        optional_time(None),
    ];
    let tokens = 500 + (index % 2000) as i64;
    let state = json!({
        "run": {"runId": id, "status": status},
        "participants": [{"participantId": "fraud-agent"}, {"participantId": "risk-agent"}],
        "decision": {"current": {
            "action": "decision.selected", "confidence": 0.8, "finalized": status == "completed",
            "outcomePositive": !index.is_multiple_of(10),
        }},
        "llm": {"calls": [], "totals": {
            "callCount": 2, "promptTokens": tokens - 100, "completionTokens": 100,
            "totalTokens": tokens, "estimatedCostUsd": tokens as f64 * 0.000_002,
        }},
    });
    let projection = vec![
        Expr::value(id.clone()),
        Expr::value(12i64),
        Expr::value(3i32),
        json_value(backend, state),
        time(ended.or(started).unwrap_or(created)),
    ];
    let signal = index.is_multiple_of(5).then(|| {
        vec![
            Expr::value(id.clone()),
            Expr::value(13i64),
            Expr::value(uuid::Uuid::new_v4().to_string()),
            time(started.unwrap_or(created)),
            Expr::value("signal.emitted"),
            Expr::value(Some("signal")),
            Expr::value(Some(format!("s-{index}"))),
            Expr::value("runtime"),
            Expr::value("macp-runtime"),
            Expr::value(Some("Signal")),
            Expr::value(Option::<String>::None),
            Expr::value(Option::<String>::None),
            Expr::value(Option::<String>::None),
            Expr::value(3i32),
            json_value(
                backend,
                json!({"sender": "risk-agent", "signalType": "suspicious_device", "confidence": 0.7}),
            ),
        ]
    });
    Synthetic {
        run,
        projection,
        signal,
    }
}

async fn insert(
    db: &DatabaseConnection,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<SimpleExpr>>,
) {
    if rows.is_empty() {
        return;
    }
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new(table))
        .columns(columns.iter().map(|column| Alias::new(*column)));
    for row in rows {
        insert.values(row).expect("a row as wide as its columns");
    }
    if table == "runs" {
        insert.on_conflict(OnConflict::new().do_nothing().to_owned());
    }
    let backend = db.get_database_backend();
    db.execute_raw(backend.build(&insert))
        .await
        .expect("bulk insert");
}

/// Inserts the synthetic runs, a chunk a transaction-free statement at a time.
async fn fill(url: &str, total: usize) -> Duration {
    let db = Database::connect(url).await.expect("connects");
    let backend = db.get_database_backend();
    let now = Utc::now();
    let started = Instant::now();
    for chunk in (0..total).collect::<Vec<_>>().chunks(CHUNK) {
        let rows: Vec<Synthetic> = chunk
            .iter()
            .map(|index| synthetic(backend, *index, now))
            .collect();
        let (mut runs, mut projections, mut signals) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            runs.push(row.run);
            projections.push(row.projection);
            signals.extend(row.signal);
        }
        insert(
            &db,
            "runs",
            &[
                "id",
                "status",
                "mode",
                "runtime_kind",
                "runtime_version",
                "runtime_session_id",
                "trace_id",
                "idempotency_key",
                "last_event_seq",
                "source_kind",
                "source_ref",
                "tags",
                "metadata",
                "error_code",
                "error_message",
                "created_at",
                "started_at",
                "ended_at",
                "updated_at",
                "created_by",
                "archived_at",
            ],
            runs,
        )
        .await;
        insert(
            &db,
            "run_projections",
            &["run_id", "version", "schema_version", "state", "updated_at"],
            projections,
        )
        .await;
        insert(
            &db,
            "run_events_canonical",
            &[
                "run_id",
                "seq",
                "id",
                "ts",
                "event_type",
                "subject_kind",
                "subject_id",
                "source_kind",
                "source_name",
                "raw_type",
                "trace_id",
                "span_id",
                "parent_span_id",
                "schema_version",
                "data",
            ],
            signals,
        )
        .await;
    }
    // What a database that has been running for a while has: planner statistics.
    db.execute_unprepared("ANALYZE").await.expect("ANALYZE");
    started.elapsed()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn bench(backend: &str, dir: &tempfile::TempDir) {
    let Some(url) = database(backend, dir).await else {
        return;
    };
    let total = runs();
    // The service first: it applies the migrations the rows need.
    let app = start_app(url.clone()).await;
    let filled = fill(&url, total).await;
    // The leader folds the rollup changes every second (PostgreSQL); folded here at once, so
    // that every timed read finds them folded, as in a service that has been running.
    macp_control_plane::store::Store::connect(&url)
        .await
        .expect("store")
        .fold_rollup_deltas()
        .await
        .expect("fold");
    println!(
        "{backend:8} {total} runs inserted in {:.1} s",
        filled.as_secs_f64()
    );
    // Every window, then the day-charted ones (the rollups' range) with each filter.
    let window = |name: &str| OverviewQuery {
        window: Some(name.into()),
        ..Default::default()
    };
    let mut cases: Vec<(String, OverviewQuery)> = ["1h", "6h", "24h", "7d", "30d"]
        .into_iter()
        .map(|name| (format!("window={name}"), window(name)))
        .collect();
    for name in ["7d", "30d"] {
        cases.push((
            format!("window={name}&scenarioRef=scenario-7"),
            OverviewQuery {
                scenario_ref: Some("scenario-7".into()),
                ..window(name)
            },
        ));
        cases.push((
            format!("window={name}&environment=prod"),
            OverviewQuery {
                environment: Some("prod".into()),
                ..window(name)
            },
        ));
    }
    cases.push((
        "window=24h&scenarioRef=scenario-7".into(),
        OverviewQuery {
            scenario_ref: Some("scenario-7".into()),
            ..window("24h")
        },
    ));
    for (name, query) in cases {
        let mut samples = Vec::with_capacity(ITERATIONS);
        let mut in_range = 0;
        for iteration in 0..ITERATIONS + 2 {
            let started = Instant::now();
            let scope = query
                .clone()
                .into_scope(macp_control_plane::time::now())
                .expect("a valid query");
            let overview = app
                .service
                .dashboard_overview(&scope)
                .await
                .expect("overview");
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            in_range = overview.kpis.total_runs;
            // The first two warm the caches.
            if iteration >= 2 {
                samples.push(elapsed);
            }
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
        println!(
            "{backend:8} overview {name:34} {in_range:6} runs in range: p50 {p50:6.1} ms  p99 {p99:6.1} ms  {}",
            if p99 <= BUDGET_MS {
                "within 100 ms"
            } else {
                "OVER 100 ms"
            }
        );
    }
    app.stop().await;
    drop_database(&url).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        println!(
            "macp-control-plane dashboard benchmark ({} runs, {} cores)",
            runs(),
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        );
        let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        for backend in backends.split(',').map(str::trim) {
            let dir = tempfile::tempdir().expect("temp dir");
            bench(backend, &dir).await;
        }
    });
}
