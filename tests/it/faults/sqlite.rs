//! SQLite refusing writes: another process holding the database's write lock past the busy
//! timeout (SQLITE_BUSY) and a database at its size cap (SQLITE_FULL, from
//! `SQLITE_MAX_PAGE_COUNT`). The API answers with a stable code and a message naming the
//! cause, nothing is half-written, and the service serves on.

use std::time::Duration;

use sea_orm::sqlx::sqlite::SqliteConnection;
use sea_orm::sqlx::{Connection as _, Row as _};
use serde_json::Value;

use super::process::{Service, poll};
use super::summary::Tally;
use crate::requests;

const BINARY: &str = env!("CARGO_BIN_EXE_macp-control-plane");

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// Status, `Retry-After` and body.
    async fn start_run(&self) -> (u16, Option<String>, Value) {
        let response = self
            .http
            .post(format!("{}/runs", self.base))
            .json(&requests::seed_example())
            .send()
            .await
            .expect("POST /runs");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        (
            status,
            retry_after,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn query_i64(connection: &mut SqliteConnection, sql: &'static str) -> Vec<i64> {
    sea_orm::sqlx::query(sql)
        .fetch_all(connection)
        .await
        .expect("query")
        .iter()
        .map(|row| row.get::<i64, _>(0))
        .collect()
}

/// Runs whose stored events are not exactly seqs 1..=last_event_seq: a write half-done.
async fn half_written(connection: &mut SqliteConnection) -> Vec<i64> {
    query_i64(
        connection,
        "SELECT COUNT(*) FROM runs r WHERE r.last_event_seq != \
         (SELECT COUNT(*) FROM run_events_canonical e WHERE e.run_id = r.id) \
         OR r.last_event_seq != \
         (SELECT COALESCE(MAX(seq), 0) FROM run_events_canonical e WHERE e.run_id = r.id)",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_process_answers_store_busy() {
    let mut tally = Tally::begin("sqlite busy");
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
    let service = Service::spawn(&[
        ("DATABASE_URL", url.clone()),
        ("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0".to_owned()),
        ("SQLITE_BUSY_TIMEOUT_MS", "200".to_owned()),
    ])
    .await;
    let api = Api {
        http: reqwest::Client::new(),
        base: service.base.clone(),
    };
    let (status, _, body) = api.start_run().await;
    assert_eq!(status, 201, "{body}");
    let first = body["runId"].as_str().expect("runId").to_owned();
    poll(Duration::from_secs(30), "the first run is running", || {
        let api = &api;
        let path = format!("/runs/{first}");
        async move { (api.get(&path).await.1["status"] == "running").then_some(()) }
    })
    .await;

    // Another process (this one) takes the write lock and keeps it.
    let mut holder = SqliteConnection::connect(&url).await.expect("connects");
    sea_orm::sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .expect("takes the write lock");
    tally.injected += 1;
    let (status, retry_after, body) = api.start_run().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errorCode"], "STORE_BUSY", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("locked by another process") && message.contains("rolled back"),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"), "a retry hint");
    // Reads go on (WAL: a writer's lock does not block them), and so does readiness.
    let (status, run) = api.get(&format!("/runs/{first}")).await;
    assert_eq!((status, &run["status"]), (200, &Value::from("running")));
    assert_eq!(api.get("/readyz").await.0, 200);

    sea_orm::sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("lets go");
    let (status, _, body) = api.start_run().await;
    assert_eq!(status, 201, "the service writes again: {body}");
    tally.runs += 2;
    let (_, listed) = api.get("/runs").await;
    assert_eq!(
        listed["total"], 2,
        "the refused start left no run: {listed}"
    );
    assert_eq!(
        query_i64(&mut holder, "SELECT COUNT(*) FROM runs").await,
        [2]
    );
    assert_eq!(half_written(&mut holder).await, [0]);
    service.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_answers_store_full() {
    let mut tally = Tally::begin("sqlite full");
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
    let migrated = tokio::process::Command::new(BINARY)
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &url)
        .status()
        .await
        .expect("migrate runs");
    assert!(migrated.success());
    let mut connection = SqliteConnection::connect(&url).await.expect("connects");
    let pages = query_i64(&mut connection, "PRAGMA page_count").await[0];
    // Room for a few runs past the empty schema (pages of 4 KiB).
    let cap = pages + 24;
    let env = [
        ("DATABASE_URL", url.clone()),
        ("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0".to_owned()),
    ];
    let capped = [
        env.as_slice(),
        &[("SQLITE_MAX_PAGE_COUNT", cap.to_string())],
    ]
    .concat();
    let service = Service::spawn(&capped).await;
    tally.injected += 1;
    let api = Api {
        http: reqwest::Client::new(),
        base: service.base.clone(),
    };
    let mut started = 0;
    let refusal = loop {
        let (status, retry_after, body) = api.start_run().await;
        match status {
            201 => started += 1,
            _ => break (status, retry_after, body),
        }
        assert!(started < 200, "{cap} pages never filled");
    };
    let (status, retry_after, body) = refusal;
    println!("faults::sqlite: {started} runs filled {cap} pages; then {status} {body}");
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["errorCode"], "STORE_FULL", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("database is full") && message.contains("rolled back"),
        "{body}"
    );
    assert_eq!(retry_after, None, "a full database does not pass by itself");
    // Every later write is refused the same way, at once: a connection SQLite had rolled back
    // under sqlx is not used again (one was, and its leftover transaction held the write lock,
    // so writes waited out the 10 s busy timeout and failed STORE_BUSY).
    let refused = std::time::Instant::now();
    for _ in 0..5 {
        let (status, _, body) = api.start_run().await;
        assert_eq!(
            (status, &body["errorCode"]),
            (507, &Value::from("STORE_FULL")),
            "{body}"
        );
    }
    assert!(
        refused.elapsed() < Duration::from_secs(5),
        "{:?}",
        refused.elapsed()
    );
    // The process is alive and reads are served.
    assert_eq!(api.get("/healthz").await.0, 200);
    let (status, listed) = api.get("/runs").await;
    assert_eq!(
        (status, &listed["total"]),
        (200, &Value::from(started)),
        "{listed}"
    );
    assert_eq!(
        query_i64(&mut connection, "SELECT COUNT(*) FROM runs").await,
        [started],
        "the refused start left no run"
    );
    assert_eq!(half_written(&mut connection).await, [0]);
    service.terminate(false).await;

    // Room made (the cap lifted): the same database takes writes again.
    let service = Service::spawn(&env).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: service.base.clone(),
    };
    let (status, _, body) = api.start_run().await;
    assert_eq!(status, 201, "{body}");
    tally.runs += started as usize + 1;
    assert_eq!(half_written(&mut connection).await, [0]);
    service.kill().await;
}
