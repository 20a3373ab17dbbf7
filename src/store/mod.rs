//! Persistence (the only module that imports sea-orm). SQLite by default, PostgreSQL through a
//! `postgres://` URL; the same migrations and queries serve both.

mod cluster;
mod dashboard;
mod entities;
mod group;
mod manage;
#[path = "../../migrations/mod.rs"]
mod migrations;
mod retention;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::sea_query::{Expr, InsertStatement, IntoIden, IntoTableRef, OnConflict, Query};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, RuntimeErr, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde_json::Value;

use entities::{
    api_key, artifact, audit, canonical_event, checkpoint, projection, raw_event, run,
    runtime_session,
};

use crate::domain::artifact::Artifact;
use crate::domain::audit::{ApiKeyInfo, AuditEntry, AuditFilter, AuditPage, StoredKey};
use crate::domain::query::{EventQuery, RunFilter, RunPage};
use crate::domain::run::{BoundSession, Run};
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode};
use crate::events::canonical::{CanonicalEvent, SCHEMA_VERSION, Source, Subject, TraceRef};
use crate::projection::state::RunState;
use crate::time::Timestamp;
pub use cluster::{Committed, Leadership, Listener, LiveReplica, Notification, Owner};
pub use dashboard::{DashboardAggregates, DashboardScope};
pub use manage::{Deleted, RunFigures};
pub use webhooks::{AttemptOutcome, ClaimedDelivery, NewWebhook, WebhookUpdate};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// Another writer appended to the run since this writer last read it.
    #[error("run {0} was written concurrently")]
    Concurrent(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The committing task is gone (the process is shutting down).
    #[error("the store's writer has stopped")]
    WriterStopped,
}

impl Error {
    pub fn to_api_error(&self) -> ApiError {
        match self.sqlite_code().map(|code| code & 0xff) {
            Some(SQLITE_BUSY) => ApiError::new(
                ErrorCode::StoreBusy,
                "the database is locked by another process (SQLite SQLITE_BUSY, still locked \
                 after SQLITE_BUSY_TIMEOUT_MS); the write was rolled back: retry shortly",
            ),
            Some(SQLITE_FULL) => ApiError::new(
                ErrorCode::StoreFull,
                "the database is full (SQLite SQLITE_FULL: no room left on the disk, or \
                 SQLITE_MAX_PAGE_COUNT reached); the write was rolled back: free space and retry",
            ),
            _ => ApiError::internal(self.to_string()),
        }
    }

    /// SQLite's extended result code, when SQLite refused the statement.
    fn sqlite_code(&self) -> Option<i32> {
        let Error::Db(
            DbErr::Conn(RuntimeErr::SqlxError(error))
            | DbErr::Exec(RuntimeErr::SqlxError(error))
            | DbErr::Query(RuntimeErr::SqlxError(error)),
        ) = self
        else {
            return None;
        };
        use sea_orm::sqlx::error::DatabaseError as _;
        let sea_orm::sqlx::Error::Database(error) = error.as_ref() else {
            return None;
        };
        error
            .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()?
            .code()?
            .parse()
            .ok()
    }
}

/// SQLite's primary result codes (the low byte of an extended one) that have codes of ours.
const SQLITE_BUSY: i32 = 5;
const SQLITE_FULL: i32 = 13;

/// SQLite connection settings (`SQLITE_BUSY_TIMEOUT_MS`, `SQLITE_MAX_PAGE_COUNT`).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a write waits for another process's lock before it fails with `STORE_BUSY`.
    pub sqlite_busy_timeout: Duration,
    /// The database file grows to at most this many pages; past it, writes fail with
    /// `STORE_FULL` (as on a full disk). `None`: SQLite's own limit.
    pub sqlite_max_page_count: Option<u64>,
    /// Connections of a PostgreSQL pool (`prime_pool` opens them all).
    pub postgres_pool_size: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sqlite_busy_timeout: Duration::from_secs(10),
            sqlite_max_page_count: None,
            postgres_pool_size: 16,
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        error.to_api_error()
    }
}

/// A new run row.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub mode: String,
    pub runtime_kind: String,
    pub runtime_version: Option<String>,
    pub trace_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub source_kind: Option<String>,
    pub source_ref: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Value,
    pub created_at: Timestamp,
    /// The authenticated actor who started it.
    pub created_by: Option<String>,
    /// The runtime session it is for, known from the start: pre-allocated for the runs we
    /// start, the session's own for discovered runs. Unique: a session is never two runs.
    pub runtime_session_id: Option<String>,
    /// `Queued` for the runs we start; `Running` for a discovered session, bound at once.
    pub status: RunStatus,
    pub started_at: Option<Timestamp>,
    /// The bound session row of a discovered run, written with it.
    pub session: Option<BoundSession>,
    /// The audit row of the call that starts it, written in the same transaction.
    pub audit: Option<AuditEntry>,
}

pub enum CreateOutcome {
    Created(Run),
    /// Another run is already for this runtime session (discovery lost the race, or saw it
    /// before): nothing was written.
    SessionTaken,
    /// The idempotency key belongs to this run already.
    Existing(Run),
}

/// A raw runtime item, keyed by the seq of its first canonical event.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub seq: i64,
    pub ts: Timestamp,
    pub kind: String,
    pub ordinal: Option<i64>,
    pub payload: Value,
}

/// Changes to the run row that travel with an append.
#[derive(Debug, Clone, Default)]
pub struct RunChange {
    pub status: Option<RunStatus>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub runtime_session_id: Option<String>,
    pub error: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum SessionChange {
    Bind(BoundSession),
    Progress {
        last_ordinal: Option<i64>,
        state: Option<String>,
    },
}

/// Everything one transaction writes for a run: the seq range, raw and canonical events, the
/// run/session rows and, when the writer says so, the projection after them.
pub struct Append<'a> {
    pub run_id: &'a str,
    pub expected_last_seq: i64,
    pub events: &'a [CanonicalEvent],
    pub raw: &'a [RawRecord],
    pub projection: Option<ProjectionRow<'a>>,
    pub run: RunChange,
    pub session: Option<SessionChange>,
    pub artifact: Option<Artifact>,
    /// The audit row of the call that made this change.
    pub audit: Option<AuditEntry>,
}

/// The projection after an append's events, for the run's projection row.
pub struct ProjectionRow<'a> {
    /// Serialized once, for the store and the hub alike.
    pub json: &'a str,
    /// The seq it is at.
    pub seq: i64,
    /// Also keep it as a checkpoint at that seq.
    pub checkpoint: bool,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    sqlite_writer: Option<Arc<SqliteWriter>>,
    appends: group::GroupCommit,
    /// Notified after a commit that wrote webhook outbox rows (`webhooks::outbox_insert`).
    webhook_outbox: Arc<tokio::sync::Notify>,
    /// This replica's id when several share the database (`CLUSTER_ENABLED`): runs it creates
    /// are leased to it, and its appends hold only while the lease is its own.
    replica: Option<Replica>,
}

/// What a replica's store adds: its id, and the announcer of its commits.
#[derive(Clone, Debug)]
struct Replica {
    id: Arc<str>,
    announcer: cluster::Announcer,
}

/// SQLite write transactions between two WAL checkpoints. Small and often: a group commit
/// carries many appends, and a checkpoint of 512 of them stalled commits beside it for over
/// 10 ms (paced bench: p99 accept→stored 5.5–7.3 ms at 512, 2.6–3.0 at 64, 1.7–1.9 at 16).
const WAL_CHECKPOINT_EVERY: u64 = 16;

#[derive(Debug)]
struct SqliteWriter {
    /// SQLite admits one writer at a time; queueing writers here, in order, replaces SQLite's
    /// busy-wait retries (sleeps of up to 100 ms) with a fair hand-off.
    turn: tokio::sync::Mutex<()>,
    writes: AtomicU64,
    /// SQLite's own checkpoint runs inside a commit and stalls it for the sync (tens of ms
    /// here); ours runs beside the writers (PASSIVE), one at a time.
    checkpointing: AtomicBool,
}

impl SqliteWriter {
    /// Waits for the single writer's turn; every `WAL_CHECKPOINT_EVERY` turns also starts a
    /// checkpoint beside it.
    async fn turn(self: &Arc<Self>, db: &DatabaseConnection) -> tokio::sync::MutexGuard<'_, ()> {
        let turn = self.turn.lock().await;
        if self.writes.fetch_add(1, Ordering::Relaxed) % WAL_CHECKPOINT_EVERY
            == WAL_CHECKPOINT_EVERY - 1
        {
            self.checkpoint_wal(db.clone());
        }
        turn
    }

    /// Copies the WAL into the database file in the background (what SQLite would otherwise do
    /// inside some commit). A checkpoint beside the writers never catches up with them, and
    /// SQLite only starts the WAL over once every frame in it is in the database file: under a
    /// steady load the WAL grew without end (1.4 GB in 25 s at 1,000 envelopes/s). So when it
    /// has passed `WAL_RESTART_FRAMES`, the frames written during the checkpoint are copied too,
    /// in the writers' turn: the next write then starts the WAL over, and `journal_size_limit`
    /// trims the file.
    fn checkpoint_wal(self: &Arc<Self>, db: DatabaseConnection) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let writer = self.clone();
        tokio::spawn(async move {
            let outcome = match checkpoint_passive(&db).await {
                Ok(frames) if frames >= WAL_RESTART_FRAMES => {
                    let _turn = writer.turn.lock().await;
                    checkpoint_passive(&db).await.map(drop)
                }
                outcome => outcome.map(drop),
            };
            if let Err(error) = outcome {
                tracing::warn!(%error, "SQLite WAL checkpoint failed");
            }
            writer.checkpointing.store(false, Ordering::Release);
        });
    }
}

/// A WAL this many frames long (about 32 MB of 4 KB pages) is copied whole and started over.
const WAL_RESTART_FRAMES: i64 = 8_192;

/// Runs a PASSIVE checkpoint; returns the frames the WAL holds.
async fn checkpoint_passive(db: &DatabaseConnection) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA wal_checkpoint(PASSIVE)",
        ))
        .await?;
    // The row is (busy, frames in the WAL, frames checkpointed).
    Ok(row
        .and_then(|row| row.try_get_by_index::<i64>(1).ok())
        .unwrap_or(0))
}

/// A database URL fit to print: the password of its user, if any, replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The statuses that are terminal (`true`) or not.
fn statuses(terminal: bool) -> Vec<&'static str> {
    RunStatus::ALL
        .into_iter()
        .filter(|status| status.is_terminal() == terminal)
        .map(RunStatus::as_str)
        .collect()
}

/// The tables `prime_pool` has every connection read the catalog entries of: those a run's
/// creation, appends, reads and the cluster's leases touch.
const PRIMED_TABLES: &[&str] = &[
    "runs",
    "run_events_canonical",
    "run_events_raw",
    "run_projections",
    "runtime_sessions",
    "webhook_outbox",
    "audit_log",
    "replicas",
    "dashboard_runs",
    "dashboard_rollup_deltas",
];
/// How long `prime_pool` waits for the pool's connections.
const PRIMING_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Connects with the default options; a SQLite file is created on first use and run in
    /// WAL mode.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    pub async fn connect_with(url: &str, store_options: &StoreOptions) -> Result<Store, Error> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            // One writer at a time is SQLite's model; WAL lets readers proceed alongside it.
            let store_options = store_options.clone();
            options
                .max_connections(8)
                .map_sqlx_sqlite_opts(move |sqlite| {
                    let sqlite = sqlite
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(store_options.sqlite_busy_timeout)
                        .foreign_keys(true)
                        .pragma("wal_autocheckpoint", "0")
                        // The WAL file is cut back to this when it starts over.
                        .pragma("journal_size_limit", "67108864");
                    // A per-connection setting: every connection of the pool gets it.
                    match store_options.sqlite_max_page_count {
                        Some(pages) => sqlite.pragma("max_page_count", pages.to_string()),
                        None => sqlite,
                    }
                });
            // A write SQLite rolled back by itself (SQLITE_FULL, for one) leaves sqlx counting
            // a transaction that is gone: its ROLLBACK fails, the connection's next BEGIN is a
            // SAVEPOINT, and a failure there (ROLLBACK TO) leaves a write transaction open that
            // holds the database's lock for good: every other write then waited out the busy
            // timeout. Such a connection is closed rather than used again.
            options.map_sqlx_sqlite_before_acquire(|connection, _| {
                Box::pin(async move {
                    let clean = !sea_orm::sqlx::Connection::is_in_transaction(connection);
                    if !clean {
                        tracing::warn!("closing a SQLite connection left inside a transaction");
                    }
                    Ok(clean)
                })
            });
        } else {
            options.max_connections(store_options.postgres_pool_size);
        }
        let sqlite = url.starts_with("sqlite:");
        let db = Database::connect(options).await?;
        let sqlite_writer = sqlite.then(|| {
            Arc::new(SqliteWriter {
                turn: tokio::sync::Mutex::new(()),
                writes: AtomicU64::new(0),
                checkpointing: AtomicBool::new(false),
            })
        });
        Ok(Store {
            appends: group::GroupCommit::spawn(db.clone(), sqlite_writer.clone()),
            db,
            sqlite_writer,
            webhook_outbox: Arc::default(),
            replica: None,
        })
    }

    /// The store as replica `replica` of several on one PostgreSQL (`cluster.rs`).
    pub fn for_replica(mut self, replica: &str) -> Store {
        self.replica = Some(Replica {
            id: replica.into(),
            announcer: cluster::Announcer::spawn(self.db.clone()),
        });
        self
    }

    /// This replica's id, when several share the database.
    pub fn replica(&self) -> Option<&str> {
        self.replica.as_ref().map(|replica| &*replica.id)
    }

    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.sqlite_writer.as_ref()?.turn(&self.db).await)
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        // Replicas starting together would otherwise race to create the same tables.
        let _exclusive = match self.backend() {
            DbBackend::Postgres => Some(cluster::MigrationLock::take(&self.db).await?),
            _ => None,
        };
        migrations::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Opens every connection of a PostgreSQL pool and has each read the catalog entries of
    /// the tables every run touches, so that the first burst of work after a start pays for
    /// neither. A new PostgreSQL connection is a server process of its own, which loads a
    /// table's catalog entries on its first statement about it: with the pool opened on
    /// demand, 100 sessions beginning in the first second of three new replicas waited on
    /// both (cluster bench, 10-second rows, six each: p99 over every message 282–659 ms
    /// without, 176–252 ms with). Connections the pool opens later, after idling out or a
    /// lost connection, load them on first use. Nothing on SQLite.
    pub async fn prime_pool(&self) {
        if self.backend() != DbBackend::Postgres {
            return;
        }
        let pool = self.db.get_postgres_connection_pool();
        let sql = PRIMED_TABLES
            .iter()
            .map(|table| format!("SELECT 1 FROM {table} WHERE false"))
            .collect::<Vec<_>>()
            .join("; ");
        let opened = tokio::time::timeout(
            PRIMING_TIMEOUT,
            futures::future::join_all(
                (0..pool.options().get_max_connections()).map(|_| pool.acquire()),
            ),
        )
        .await;
        // A pool that cannot open them all now (the server's connection limit, a slow
        // start) opens the rest on demand, as without priming.
        let Ok(connections) = opened else {
            tracing::warn!("the PostgreSQL pool was not opened within {PRIMING_TIMEOUT:?}");
            return;
        };
        for mut connection in connections.into_iter().flatten() {
            let primed = sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut *connection)
                .await;
            if let Err(error) = primed {
                tracing::warn!(%error, "priming a PostgreSQL connection failed");
            }
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        self.db.ping().await?;
        Ok(())
    }

    /// Inserts a run with its first events and projection (and its bound session, when given)
    /// in one transaction. A run with the same idempotency key wins over this one: it is
    /// returned and nothing is written; so does a run for the same runtime session.
    pub async fn create_run(
        &self,
        new: NewRun,
        events: &[CanonicalEvent],
        state: &RunState,
    ) -> Result<CreateOutcome, Error> {
        let backend = self.backend();
        let row = run::Model {
            id: new.id.clone(),
            status: new.status.as_str().to_owned(),
            mode: new.mode,
            runtime_kind: new.runtime_kind,
            runtime_version: new.runtime_version,
            runtime_session_id: new.runtime_session_id.clone(),
            trace_id: new.trace_id,
            idempotency_key: new.idempotency_key.clone(),
            last_event_seq: events.last().map(|event| event.seq).unwrap_or(0),
            source_kind: new.source_kind,
            source_ref: new.source_ref,
            tags: serde_json::json!(new.tags),
            metadata: new.metadata,
            error_code: None,
            error_message: None,
            created_at: new.created_at,
            started_at: new.started_at,
            ended_at: None,
            updated_at: new.created_at,
            created_by: new.created_by,
            archived_at: None,
            owner_replica: self.replica().map(str::to_owned),
        };
        let conflict = match (&new.idempotency_key, &new.runtime_session_id) {
            (Some(_), _) => Some(OnConflict::column(run::Column::IdempotencyKey)),
            // Any unique column: two replicas discovering one session insert the same run id
            // too (a discovered run's id is its session's), and when the loser's insert got
            // past the session column's check before the winner's row was there, PostgreSQL
            // failed it on the primary key instead of letting it yield.
            (None, Some(_)) => Some(OnConflict::new()),
            (None, None) => None,
        };
        let mut insert = run::Entity::insert(run::ActiveModel::from(row.clone()));
        if let Some(mut conflict) = conflict {
            insert = insert.on_conflict(conflict.do_nothing().to_owned());
        }
        let mut rest = Vec::with_capacity(5);
        rest.extend(insert_events(backend, events));
        rest.push(upsert_projection(
            backend,
            &new.id,
            state.timeline.latest_seq,
            state_text(state)?,
        )?);
        if let Some(session) = &new.session {
            rest.push(bind_session(backend, session, new.created_at));
        }
        // Kept for the answer to a call that finds its idempotency key taken.
        let audit_of_existing = new.audit.clone().filter(|_| new.idempotency_key.is_some());
        rest.extend(new.audit.map(|entry| audit_insert(backend, entry)));
        // A discovered run is created running, with its `run.started`.
        let outbox = webhooks::outbox_insert(backend, &new.id, true, events);
        let notify = outbox.is_some();
        rest.extend(outbox);

        let _writer = self.write_turn().await;
        let inserted = group::insert_guarded(&self.db, insert.build(backend), rest).await?;
        if inserted {
            // Announced as an append is: a replica where a client waits for this run (a
            // stream opened for a session's run before it exists) starts following it now,
            // not at its first append.
            if let Some(replica) = &self.replica {
                replica.announcer.committed(&replica.id, &new.id, events);
            }
            if notify {
                self.webhook_outbox.notify_one();
            }
            return Ok(CreateOutcome::Created(run_from_row(row)?));
        }
        let Some(key) = new.idempotency_key else {
            return Ok(CreateOutcome::SessionTaken);
        };
        let existing = run::Entity::find()
            .filter(run::Column::IdempotencyKey.eq(key.clone()))
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("idempotency key {key} has no run")))?;
        // The call still happened, and answered the existing run: it is audited alone, about
        // that run, in the write turn already held (`insert_audit` would wait for it).
        if let Some(mut entry) = audit_of_existing {
            entry.resource_id = Some(existing.id.clone());
            self.db.execute_raw(audit_insert(backend, entry)).await?;
        }
        Ok(CreateOutcome::Existing(run_from_row(existing)?))
    }

    /// Appends events to a run in one transaction. Fails with [`Error::Concurrent`] (and writes
    /// nothing) when the run's last seq is not `expected_last_seq`.
    pub async fn append(&self, append: Append<'_>) -> Result<(), Error> {
        // Everything is rendered to SQL here, by the caller: the committing task (on SQLite,
        // the one writer) only executes it.
        let backend = self.backend();
        let now = crate::time::now();
        let new_last = append
            .events
            .last()
            .map(|event| event.seq)
            .unwrap_or(append.expected_last_seq);
        let mut update = run::Entity::update_many()
            .col_expr(run::Column::LastEventSeq, Expr::value(new_last))
            .col_expr(run::Column::UpdatedAt, Expr::value(now))
            .filter(run::Column::Id.eq(append.run_id))
            .filter(run::Column::LastEventSeq.eq(append.expected_last_seq));
        let change = &append.run;
        if let Some(status) = change.status {
            update = update.col_expr(run::Column::Status, Expr::value(status.as_str()));
        }
        if let Some(started_at) = change.started_at {
            update = update.col_expr(run::Column::StartedAt, Expr::value(started_at));
        }
        if let Some(ended_at) = change.ended_at {
            update = update.col_expr(run::Column::EndedAt, Expr::value(ended_at));
        }
        if let Some(session_id) = &change.runtime_session_id {
            update = update.col_expr(
                run::Column::RuntimeSessionId,
                Expr::value(session_id.clone()),
            );
        }
        if let Some((code, message)) = &change.error {
            update = update
                .col_expr(run::Column::ErrorCode, Expr::value(code.clone()))
                .col_expr(run::Column::ErrorMessage, Expr::value(message.clone()));
        }
        if let Some(replica) = self.replica() {
            update = cluster::fenced(update, replica, change.status);
        }
        let compare_and_set = update.build(backend);

        let mut statements = Vec::with_capacity(6);
        statements.extend(insert_raw(backend, append.run_id, append.raw));
        statements.extend(insert_events(backend, append.events));
        if let Some(projection) = &append.projection {
            if projection.checkpoint {
                statements.push(insert_checkpoint(
                    backend,
                    append.run_id,
                    projection.seq,
                    projection.json.to_owned(),
                )?);
            }
            statements.push(upsert_projection(
                backend,
                append.run_id,
                projection.seq,
                projection.json.to_owned(),
            )?);
        }
        if let Some(artifact) = append.artifact {
            statements.push(
                artifact::Entity::insert(artifact::ActiveModel {
                    id: Set(artifact.id),
                    run_id: Set(artifact.run_id),
                    kind: Set(artifact.kind),
                    label: Set(artifact.label),
                    uri: Set(artifact.uri),
                    inline: Set(artifact.inline),
                    created_at: Set(artifact.created_at),
                })
                .build(backend),
            );
        }
        if let Some(entry) = append.audit {
            statements.push(audit_insert(backend, entry));
        }
        match append.session {
            Some(SessionChange::Bind(session)) => {
                statements.push(bind_session(backend, &session, now));
            }
            Some(SessionChange::Progress {
                last_ordinal,
                state,
            }) => {
                let mut update = runtime_session::Entity::update_many()
                    .col_expr(runtime_session::Column::UpdatedAt, Expr::value(now))
                    .filter(runtime_session::Column::RunId.eq(append.run_id));
                if let Some(ordinal) = last_ordinal {
                    update =
                        update.col_expr(runtime_session::Column::LastOrdinal, Expr::value(ordinal));
                }
                if let Some(state) = state {
                    update =
                        update.col_expr(runtime_session::Column::SessionState, Expr::value(state));
                }
                statements.push(update.build(backend));
            }
            None => {}
        }
        let outbox = webhooks::outbox_insert(
            backend,
            append.run_id,
            change.status.is_some(),
            append.events,
        );
        let notify = outbox.is_some();
        statements.extend(outbox);
        self.appends
            .commit(append.run_id, compare_and_set, statements)
            .await?;
        if let Some(replica) = &self.replica {
            replica
                .announcer
                .committed(&replica.id, append.run_id, append.events);
        }
        if notify {
            self.webhook_outbox.notify_one();
        }
        Ok(())
    }

    pub async fn run(&self, id: &str) -> Result<Option<Run>, Error> {
        run::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(run_from_row)
            .transpose()
    }

    pub async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, Error> {
        let mut query = manage::list_filters(self.backend(), run::Entity::find(), filter);
        if let Some(status) = filter.status {
            query = query.filter(run::Column::Status.eq(status.as_str()));
        }
        if let Some(after) = filter.created_after {
            query = query.filter(run::Column::CreatedAt.gt(after));
        }
        if let Some(before) = filter.created_before {
            query = query.filter(run::Column::CreatedAt.lt(before));
        }
        for tag in &filter.tags {
            // Every tag must be present: match the quoted element in the JSON array text.
            let quoted = serde_json::Value::String(tag.clone()).to_string();
            let pattern = format!("%{}%", escape_like(&quoted));
            query = query.filter(
                Expr::col(run::Column::Tags)
                    .cast_as("text")
                    .like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\')),
            );
        }
        let total = query.clone().count(&self.db).await?;
        let column = if filter.sort_by_updated {
            run::Column::UpdatedAt
        } else {
            run::Column::CreatedAt
        };
        query = if filter.ascending {
            query.order_by_asc(column).order_by_asc(run::Column::Id)
        } else {
            query.order_by_desc(column).order_by_desc(run::Column::Id)
        };
        let rows = query
            .offset(filter.offset)
            .limit(filter.limit)
            .all(&self.db)
            .await?;
        let data = rows
            .into_iter()
            .map(run_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunPage {
            data,
            total,
            limit: filter.limit,
            offset: filter.offset,
        })
    }

    /// Runs that are not terminal (the ones an observer may have to resume).
    pub async fn active_runs(&self) -> Result<Vec<Run>, Error> {
        run::Entity::find()
            .filter(run::Column::Status.is_in(statuses(false)))
            .order_by_asc(run::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(run_from_row)
            .collect()
    }

    /// The run's projection row: its state at the row's seq, which may be behind the run's last
    /// event (`runs::writer::current_state` folds the rest in).
    pub async fn projection(&self, run_id: &str) -> Result<Option<RunState>, Error> {
        let text: Option<String> = projection::Entity::find_by_id(run_id.to_owned())
            .select_only()
            .column_as(
                Expr::col(projection::Column::State).cast_as("text"),
                "state",
            )
            .into_tuple()
            .one(&self.db)
            .await?;
        text.map(|text| parse_state(&text, "projection", run_id))
            .transpose()
    }

    /// The run for a runtime session, if any (bound, or pre-allocated when we start it).
    pub async fn run_by_session(&self, session_id: &str) -> Result<Option<Run>, Error> {
        run::Entity::find()
            .filter(run::Column::RuntimeSessionId.eq(session_id))
            .one(&self.db)
            .await?
            .map(run_from_row)
            .transpose()
    }

    pub async fn session(&self, run_id: &str) -> Result<Option<BoundSession>, Error> {
        let row = runtime_session::Entity::find_by_id(run_id.to_owned())
            .one(&self.db)
            .await?;
        Ok(row.map(|row| BoundSession {
            run_id: row.run_id,
            session_id: row.runtime_session_id,
            mode_name: row.mode_name,
            mode_version: row.mode_version,
            configuration_version: row.configuration_version,
            policy_version: row.policy_version,
            initiator: row.initiator,
            session_state: row.session_state,
            last_ordinal: row.last_ordinal,
            participants: serde_json::from_value(row.participants).unwrap_or_default(),
        }))
    }

    /// Events with `after < seq <= up_to`, oldest first, at most `limit`.
    pub async fn events_between(
        &self,
        run_id: &str,
        after: i64,
        up_to: Option<i64>,
        limit: u64,
    ) -> Result<Vec<CanonicalEvent>, Error> {
        let mut query = canonical_event::Entity::find()
            .filter(canonical_event::Column::RunId.eq(run_id))
            .filter(canonical_event::Column::Seq.gt(after));
        if let Some(up_to) = up_to {
            query = query.filter(canonical_event::Column::Seq.lte(up_to));
        }
        let rows = query
            .order_by_asc(canonical_event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(event_from_row).collect())
    }

    /// Events matching `query`, at most `query.limit` of them.
    pub async fn query_events(&self, query: &EventQuery) -> Result<Vec<CanonicalEvent>, Error> {
        let mut select = event_filter(query);
        // One run's events are in seq order (times from different writers may tie or cross);
        // across runs, time order is the only meaningful one.
        if query.run_id.is_none() {
            select = select
                .order_by_asc(canonical_event::Column::Ts)
                .order_by_asc(canonical_event::Column::RunId);
        }
        let rows = select
            .order_by_asc(canonical_event::Column::Seq)
            .limit(query.limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(event_from_row).collect())
    }

    /// How many events match `query`, whatever its limit (the `total` of a listed page).
    pub async fn count_events(&self, query: &EventQuery) -> Result<u64, Error> {
        Ok(event_filter(query).count(&self.db).await?)
    }

    pub async fn artifacts(&self, run_id: &str) -> Result<Vec<Artifact>, Error> {
        let rows = artifact::Entity::find()
            .filter(artifact::Column::RunId.eq(run_id))
            .order_by_asc(artifact::Column::CreatedAt)
            .order_by_asc(artifact::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Artifact {
                id: row.id,
                run_id: row.run_id,
                kind: row.kind,
                label: row.label,
                uri: row.uri,
                inline: row.inline,
                created_at: row.created_at,
            })
            .collect())
    }

    /// How many events of each type a run has.
    pub async fn event_type_counts(&self, run_id: &str) -> Result<Vec<(String, i64)>, Error> {
        let rows: Vec<(String, i64)> = canonical_event::Entity::find()
            .select_only()
            .column(canonical_event::Column::EventType)
            .column_as(canonical_event::Column::Seq.count(), "count")
            .filter(canonical_event::Column::RunId.eq(run_id))
            .group_by(canonical_event::Column::EventType)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows)
    }

    /// Times of a run's first and last events.
    pub async fn event_time_range(
        &self,
        run_id: &str,
    ) -> Result<(Option<Timestamp>, Option<Timestamp>), Error> {
        let first = canonical_event::Entity::find()
            .filter(canonical_event::Column::RunId.eq(run_id))
            .order_by_asc(canonical_event::Column::Seq)
            .one(&self.db)
            .await?;
        let last = canonical_event::Entity::find()
            .filter(canonical_event::Column::RunId.eq(run_id))
            .order_by_desc(canonical_event::Column::Seq)
            .one(&self.db)
            .await?;
        Ok((first.map(|row| row.ts), last.map(|row| row.ts)))
    }

    /// The latest projection checkpoint at or before `seq`.
    pub async fn checkpoint_at_or_before(
        &self,
        run_id: &str,
        seq: i64,
    ) -> Result<Option<RunState>, Error> {
        let text: Option<String> = checkpoint::Entity::find()
            .select_only()
            .column_as(
                Expr::col(checkpoint::Column::State).cast_as("text"),
                "state",
            )
            .filter(checkpoint::Column::RunId.eq(run_id))
            .filter(checkpoint::Column::Seq.lte(seq))
            .order_by_desc(checkpoint::Column::Seq)
            .into_tuple()
            .one(&self.db)
            .await?;
        text.map(|text| parse_state(&text, "checkpoint", run_id))
            .transpose()
    }

    /// Raw events of a run, oldest first.
    pub async fn raw_events(&self, run_id: &str) -> Result<Vec<RawRecord>, Error> {
        let rows = raw_event::Entity::find()
            .filter(raw_event::Column::RunId.eq(run_id))
            .order_by_asc(raw_event::Column::Seq)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| RawRecord {
                seq: row.seq,
                ts: row.ts,
                kind: row.kind,
                ordinal: row.ordinal,
                payload: row.payload,
            })
            .collect())
    }

    /// Row counts of a run's tables (used to check that refused requests write nothing).
    /// Records one audit row on its own (a call that changed nothing, or was refused).
    pub async fn insert_audit(&self, entry: AuditEntry) -> Result<(), Error> {
        let statement = audit_insert(self.backend(), entry);
        let _writer = self.write_turn().await;
        self.db.execute_raw(statement).await?;
        Ok(())
    }

    /// Audit rows matching `filter`, newest first, and how many match in all.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<AuditPage, Error> {
        let mut query = audit::Entity::find();
        if let Some(actor) = &filter.actor {
            query = query.filter(audit::Column::Actor.eq(actor.clone()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit::Column::Action.eq(action.clone()));
        }
        if let Some(resource) = &filter.resource {
            query = query.filter(audit::Column::Resource.eq(resource.clone()));
        }
        if let Some(resource_id) = &filter.resource_id {
            query = query.filter(audit::Column::ResourceId.eq(resource_id.clone()));
        }
        if let Some(after) = filter.created_after {
            query = query.filter(audit::Column::CreatedAt.gte(after));
        }
        if let Some(before) = filter.created_before {
            query = query.filter(audit::Column::CreatedAt.lte(before));
        }
        let total = query.clone().count(&self.db).await?;
        let rows = query
            .order_by_desc(audit::Column::CreatedAt)
            .order_by_desc(audit::Column::Id)
            .limit(filter.limit)
            .offset(filter.offset)
            .all(&self.db)
            .await?;
        Ok(AuditPage {
            data: rows
                .into_iter()
                .map(audit_from_row)
                .collect::<Result<_, _>>()?,
            total,
        })
    }

    /// Stores a new API key (its digest, never the key) with the audit row of the call.
    pub async fn create_api_key(
        &self,
        info: &ApiKeyInfo,
        digest: String,
        audit: Option<AuditEntry>,
    ) -> Result<(), Error> {
        let backend = self.backend();
        let insert = api_key::Entity::insert(api_key::ActiveModel {
            id: Set(info.id.clone()),
            actor: Set(info.actor.clone()),
            roles: Set(serde_json::json!(info.roles)),
            participants: Set(serde_json::json!(info.participants)),
            digest: Set(digest),
            prefix: Set(info.prefix.clone()),
            created_by: Set(info.created_by.clone()),
            created_at: Set(info.created_at),
            revoked_at: Set(None),
        })
        .build(backend);
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        txn.execute_raw(insert).await?;
        if let Some(entry) = audit {
            txn.execute_raw(audit_insert(backend, entry)).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Every stored key, newest first (revoked ones included, marked).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, Error> {
        let rows = api_key::Entity::find()
            .order_by_desc(api_key::Column::CreatedAt)
            .order_by_desc(api_key::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(key_info).collect())
    }

    /// How many stored keys are not revoked.
    pub async fn count_active_api_keys(&self) -> Result<u64, Error> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::RevokedAt.is_null())
            .count(&self.db)
            .await?)
    }

    /// Revokes a key (with the audit row of the call); `None` when there is no such key. A
    /// key revoked before keeps its first revocation time.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        audit: Option<AuditEntry>,
    ) -> Result<Option<ApiKeyInfo>, Error> {
        let backend = self.backend();
        let now = crate::time::now();
        let update = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .build(backend);
        {
            let _writer = self.write_turn().await;
            let txn = self.db.begin().await?;
            let row = api_key::Entity::find_by_id(id.to_owned()).one(&txn).await?;
            if row.is_none() {
                txn.rollback().await?;
                return Ok(None);
            }
            txn.execute_raw(update).await?;
            if let Some(entry) = audit {
                txn.execute_raw(audit_insert(backend, entry)).await?;
            }
            txn.commit().await?;
        }
        Ok(api_key::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(key_info))
    }

    /// The active stored key with this digest (hex SHA-256).
    pub async fn api_key_by_digest(&self, digest: &str) -> Result<Option<StoredKey>, Error> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::Digest.eq(digest))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .map(|row| StoredKey {
                id: row.id,
                actor: row.actor,
                roles: strings(row.roles),
                participants: strings(row.participants),
                digest: row.digest,
            }))
    }

    pub async fn count_rows(&self) -> Result<u64, Error> {
        Ok(run::Entity::find().count(&self.db).await?
            + canonical_event::Entity::find().count(&self.db).await?
            + raw_event::Entity::find().count(&self.db).await?
            + projection::Entity::find().count(&self.db).await?
            + checkpoint::Entity::find().count(&self.db).await?
            + artifact::Entity::find().count(&self.db).await?
            + runtime_session::Entity::find().count(&self.db).await?)
    }
}

/// The rows `query` selects, unordered and unlimited.
fn event_filter(query: &EventQuery) -> sea_orm::Select<canonical_event::Entity> {
    let mut select = canonical_event::Entity::find();
    if let Some(run_id) = &query.run_id {
        select = select.filter(canonical_event::Column::RunId.eq(run_id.clone()));
    }
    if query.after_seq > 0 {
        select = select.filter(canonical_event::Column::Seq.gt(query.after_seq));
    }
    if !query.types.is_empty() {
        select = select.filter(canonical_event::Column::EventType.is_in(query.types.clone()));
    }
    if let Some(after) = query.after_ts {
        select = select.filter(canonical_event::Column::Ts.gte(after));
    }
    if let Some(before) = query.before_ts {
        select = select.filter(canonical_event::Column::Ts.lt(before));
    }
    select
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn audit_insert(backend: DbBackend, entry: AuditEntry) -> Statement {
    audit::Entity::insert(audit::ActiveModel {
        id: Set(entry.id),
        actor: Set(entry.actor),
        actor_type: Set(entry.actor_type),
        action: Set(entry.action),
        resource: Set(entry.resource),
        resource_id: Set(entry.resource_id),
        outcome: Set(entry.outcome.as_str().to_owned()),
        error_code: Set(entry.error_code),
        request_id: Set(entry.request_id),
        details: Set(entry.details),
        created_at: Set(entry.created_at),
    })
    .build(backend)
}

fn audit_from_row(row: audit::Model) -> Result<AuditEntry, Error> {
    let outcome = crate::domain::audit::Outcome::parse(&row.outcome).ok_or_else(|| {
        Error::Corrupt(format!("audit row {} has outcome {}", row.id, row.outcome))
    })?;
    Ok(AuditEntry {
        id: row.id,
        actor: row.actor,
        actor_type: row.actor_type,
        action: row.action,
        resource: row.resource,
        resource_id: row.resource_id,
        outcome,
        error_code: row.error_code,
        request_id: row.request_id,
        details: row.details,
        created_at: row.created_at,
    })
}

fn strings(value: Value) -> Vec<String> {
    serde_json::from_value(value).unwrap_or_default()
}

fn key_info(row: api_key::Model) -> ApiKeyInfo {
    ApiKeyInfo {
        id: row.id,
        actor: row.actor,
        roles: strings(row.roles),
        participants: strings(row.participants),
        prefix: row.prefix,
        created_by: row.created_by,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    }
}

fn insert_events(backend: DbBackend, events: &[CanonicalEvent]) -> Option<Statement> {
    if events.is_empty() {
        return None;
    }
    let rows = events.iter().map(|event| {
        let trace = event.trace.clone().unwrap_or_default();
        canonical_event::ActiveModel {
            run_id: Set(event.run_id.clone()),
            seq: Set(event.seq),
            id: Set(event.id.clone()),
            ts: Set(event.ts),
            event_type: Set(event.event_type.clone()),
            subject_kind: Set(event.subject.as_ref().map(|s| s.kind.clone())),
            subject_id: Set(event.subject.as_ref().map(|s| s.id.clone())),
            source_kind: Set(event.source.kind.clone()),
            source_name: Set(event.source.name.clone()),
            raw_type: Set(event.source.raw_type.clone()),
            trace_id: Set(trace.trace_id),
            span_id: Set(trace.span_id),
            parent_span_id: Set(trace.parent_span_id),
            schema_version: Set(event.schema_version as i32),
            data: Set(event.data.clone()),
        }
    });
    Some(canonical_event::Entity::insert_many(rows).build(backend))
}

fn insert_raw(backend: DbBackend, run_id: &str, raw: &[RawRecord]) -> Option<Statement> {
    if raw.is_empty() {
        return None;
    }
    let rows = raw.iter().map(|record| raw_event::ActiveModel {
        run_id: Set(run_id.to_owned()),
        seq: Set(record.seq),
        ts: Set(record.ts),
        kind: Set(record.kind.clone()),
        ordinal: Set(record.ordinal),
        payload: Set(record.payload.clone()),
    });
    Some(raw_event::Entity::insert_many(rows).build(backend))
}

/// A stored projection, read as text and parsed straight into its type: long runs have
/// megabyte projections, and going through a `serde_json::Value` tree doubles the work.
fn parse_state(text: &str, what: &str, run_id: &str) -> Result<RunState, Error> {
    serde_json::from_str(text)
        .map_err(|error| Error::Corrupt(format!("{what} of {run_id}: {error}")))
}

/// A projection as JSON text, straight from its type (no `serde_json::Value` tree in between).
pub fn state_text(state: &RunState) -> Result<String, Error> {
    serde_json::to_string(state)
        .map_err(|error| Error::Corrupt(format!("projection does not serialize: {error}")))
}

/// JSON text bound as a JSON column's value: SQLite stores the text as it is; PostgreSQL casts
/// it to `jsonb` on the server.
fn json_text(backend: DbBackend, text: String) -> Expr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_values("CAST($1 AS jsonb)", [text]),
        _ => Expr::value(text),
    }
}

fn column_count(error: sea_orm::sea_query::error::Error) -> Error {
    Error::Corrupt(format!("statement does not match its table: {error}"))
}

/// One row into `table` (the shared length keeps columns and values in step).
fn insert_row<const N: usize>(
    table: impl IntoTableRef,
    columns: [impl IntoIden; N],
    values: [Expr; N],
) -> Result<InsertStatement, Error> {
    let mut insert = Query::insert();
    insert
        .into_table(table)
        .columns(columns)
        .values(values)
        .map_err(column_count)?;
    Ok(insert)
}

fn upsert_projection(
    backend: DbBackend,
    run_id: &str,
    version: i64,
    text: String,
) -> Result<Statement, Error> {
    let mut insert = insert_row(
        projection::Entity,
        [
            projection::Column::RunId,
            projection::Column::Version,
            projection::Column::SchemaVersion,
            projection::Column::State,
            projection::Column::UpdatedAt,
        ],
        [
            Expr::value(run_id.to_owned()),
            Expr::value(version),
            Expr::value(SCHEMA_VERSION as i32),
            json_text(backend, text),
            Expr::value(crate::time::now()),
        ],
    )?;
    insert.on_conflict(
        OnConflict::column(projection::Column::RunId)
            .update_columns([
                projection::Column::Version,
                projection::Column::SchemaVersion,
                projection::Column::State,
                projection::Column::UpdatedAt,
            ])
            .to_owned(),
    );
    Ok(backend.build(&insert))
}

fn insert_checkpoint(
    backend: DbBackend,
    run_id: &str,
    seq: i64,
    text: String,
) -> Result<Statement, Error> {
    let insert = insert_row(
        checkpoint::Entity,
        [
            checkpoint::Column::RunId,
            checkpoint::Column::Seq,
            checkpoint::Column::State,
        ],
        [
            Expr::value(run_id.to_owned()),
            Expr::value(seq),
            json_text(backend, text),
        ],
    )?;
    Ok(backend.build(&insert))
}

fn bind_session(backend: DbBackend, session: &BoundSession, now: Timestamp) -> Statement {
    let row = runtime_session::ActiveModel {
        run_id: Set(session.run_id.clone()),
        runtime_session_id: Set(session.session_id.clone()),
        mode_name: Set(session.mode_name.clone()),
        mode_version: Set(session.mode_version.clone()),
        configuration_version: Set(session.configuration_version.clone()),
        policy_version: Set(session.policy_version.clone()),
        initiator: Set(session.initiator.clone()),
        session_state: Set(session.session_state.clone()),
        last_ordinal: Set(session.last_ordinal),
        participants: Set(serde_json::json!(session.participants)),
        created_at: Set(now),
        updated_at: Set(now),
    };
    runtime_session::Entity::insert(row).build(backend)
}

fn run_from_row(row: run::Model) -> Result<Run, Error> {
    let status = RunStatus::parse(&row.status)
        .ok_or_else(|| Error::Corrupt(format!("run {} has status {}", row.id, row.status)))?;
    Ok(Run {
        id: row.id,
        status,
        mode: row.mode,
        runtime_kind: row.runtime_kind,
        runtime_version: row.runtime_version,
        runtime_session_id: row.runtime_session_id,
        trace_id: row.trace_id,
        idempotency_key: row.idempotency_key,
        last_event_seq: row.last_event_seq,
        source_kind: row.source_kind,
        source_ref: row.source_ref,
        tags: serde_json::from_value(row.tags).unwrap_or_default(),
        metadata: row.metadata,
        error_code: row.error_code,
        error_message: row.error_message,
        created_at: row.created_at,
        started_at: row.started_at,
        ended_at: row.ended_at,
        updated_at: row.updated_at,
        created_by: row.created_by,
        archived_at: row.archived_at,
    })
}

fn event_from_row(row: canonical_event::Model) -> CanonicalEvent {
    let subject = match (row.subject_kind, row.subject_id) {
        (Some(kind), Some(id)) => Some(Subject { kind, id }),
        _ => None,
    };
    let trace = TraceRef {
        trace_id: row.trace_id,
        span_id: row.span_id,
        parent_span_id: row.parent_span_id,
    };
    let has_trace =
        trace.trace_id.is_some() || trace.span_id.is_some() || trace.parent_span_id.is_some();
    CanonicalEvent {
        id: row.id,
        run_id: row.run_id,
        seq: row.seq,
        ts: row.ts,
        event_type: row.event_type,
        schema_version: u32::try_from(row.schema_version).unwrap_or(SCHEMA_VERSION),
        subject,
        source: Source {
            kind: row.source_kind,
            name: row.source_name,
            raw_type: row.raw_type,
        },
        trace: has_trace.then_some(trace),
        data: row.data,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn printed_database_urls_hide_the_password() {
        for (url, printed) in [
            (
                "postgres://app:s3cr:et@db.example:5432/cp?sslmode=require",
                "postgres://app:***@db.example:5432/cp?sslmode=require",
            ),
            ("postgres://app@db/cp", "postgres://app@db/cp"),
            ("postgres://db/cp?user=a", "postgres://db/cp?user=a"),
            ("sqlite://cp.db?mode=rwc", "sqlite://cp.db?mode=rwc"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redacted_url(url), printed);
        }
    }

    #[tokio::test]
    async fn sqlite_leaves_wal_checkpoints_to_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("connects");
        let row = store
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                store.backend(),
                "PRAGMA wal_autocheckpoint",
            ))
            .await
            .expect("pragma")
            .expect("a row");
        let pages: i64 = row.try_get_by_index(0).expect("a number");
        assert_eq!(pages, 0, "SQLite would checkpoint inside commits");
        for _ in 0..WAL_CHECKPOINT_EVERY {
            drop(store.write_turn().await);
        }
        let writer = store.sqlite_writer.as_ref().expect("a SQLite writer");
        assert_eq!(writer.writes.load(Ordering::Relaxed), WAL_CHECKPOINT_EVERY);
    }

    /// Under writes that never pause the WAL is still started over: a checkpoint beside them
    /// never catches up, so the one that finds the WAL long finishes in the writers' turn. Eight
    /// runs append 2,000 events each at once, with reads beside them; without the turn the WAL
    /// reached 200 MB here, with it it stays within `journal_size_limit` (64 MB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_wal_stays_bounded_under_steady_writes() {
        use crate::events::canonical::{EventDraft, Source, types};
        let (dir, store) = sqlite_store().await;
        let filler = serde_json::json!({ "filler": "x".repeat(512) });
        let wal = dir.path().join("t.db-wal");
        let largest = Arc::new(AtomicU64::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for run in 0..8 {
            let run_id = format!("run-{run}");
            store
                .create_run(new_run(&run_id), &[], &RunState::empty(&run_id))
                .await
                .expect("created");
            let (store, filler, wal, largest) =
                (store.clone(), filler.clone(), wal.clone(), largest.clone());
            writers.spawn(async move {
                for seq in 1..=2_000 {
                    let draft = EventDraft::new(
                        types::SIGNAL_EMITTED,
                        crate::time::now(),
                        None,
                        Source::control_plane("test"),
                        filler.clone(),
                    );
                    let events = [CanonicalEvent::from_draft(draft, &run_id, seq, None)];
                    let append = Append {
                        events: &events,
                        projection: None,
                        ..start(&run_id, seq - 1, "")
                    };
                    store.append(append).await.expect("appended");
                    let size = std::fs::metadata(&wal).map(|meta| meta.len()).unwrap_or(0);
                    largest.fetch_max(size, Ordering::Relaxed);
                }
            });
        }
        // Readers come and go all the time, as the service's do.
        let reading = tokio::spawn({
            let store = store.clone();
            async move {
                loop {
                    store.run("run-0").await.expect("reads");
                    tokio::task::yield_now().await;
                }
            }
        });
        writers.join_all().await;
        reading.abort();
        let largest = largest.load(Ordering::Relaxed);
        assert!(
            largest <= 64 * 1024 * 1024,
            "the WAL reached {largest} bytes"
        );
    }

    pub(crate) fn new_run(id: &str) -> NewRun {
        NewRun {
            id: id.to_owned(),
            mode: "macp.mode.decision.v1".to_owned(),
            runtime_kind: "rust".to_owned(),
            runtime_version: None,
            trace_id: None,
            idempotency_key: None,
            source_kind: None,
            source_ref: None,
            tags: Vec::new(),
            metadata: serde_json::json!({}),
            created_at: crate::time::now(),
            created_by: None,
            runtime_session_id: None,
            status: RunStatus::Queued,
            started_at: None,
            session: None,
            audit: None,
        }
    }

    fn start<'a>(run_id: &'a str, expected_last_seq: i64, projection: &'a str) -> Append<'a> {
        Append {
            run_id,
            expected_last_seq,
            events: &[],
            raw: &[],
            projection: Some(ProjectionRow {
                json: projection,
                seq: 0,
                checkpoint: false,
            }),
            run: RunChange {
                status: Some(RunStatus::Starting),
                ..RunChange::default()
            },
            session: None,
            artifact: None,
            audit: None,
        }
    }

    /// A migrated SQLite store in a temporary directory (kept alive by the returned guard).
    pub(crate) async fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("connects");
        store.migrate().await.expect("migrates");
        (dir, store)
    }

    /// A discovered run whose id is taken already (another replica inserting the same session's
    /// run got its row in first, past the session column's check) yields as it does when the
    /// session is taken, instead of failing on the primary key.
    #[tokio::test]
    async fn a_discovered_run_that_loses_on_its_id_yields() {
        let (_dir, store) = sqlite_store().await;
        let id = "5d1e0c8a-6b2f-4f7e-9a41-0c2d5e8f7b13";
        let first = store
            .create_run(new_run(id), &[], &RunState::empty(id))
            .await
            .expect("created");
        assert!(matches!(first, CreateOutcome::Created(_)));
        let discovered = NewRun {
            runtime_session_id: Some(id.to_owned()),
            ..new_run(id)
        };
        let second = store
            .create_run(discovered, &[], &RunState::empty(id))
            .await
            .expect("yields rather than failing");
        assert!(matches!(second, CreateOutcome::SessionTaken));
    }

    /// Two runs' appends in one group, one of them stale: the other still commits.
    #[tokio::test]
    async fn a_failed_append_fails_alone_in_its_group() {
        let (_dir, store) = sqlite_store().await;
        for id in ["run-a", "run-b"] {
            store
                .create_run(new_run(id), &[], &RunState::empty(id))
                .await
                .expect("created");
        }
        let projection = state_text(&RunState::empty("run")).expect("serializes");
        // Both appends queue while the write turn is held here, so the committer takes them
        // together (this test runs on one thread: it runs only when we yield).
        let turn = store.write_turn().await;
        let mut both = Box::pin(async {
            tokio::join!(
                store.append(start("run-a", 0, &projection)),
                store.append(start("run-b", 7, &projection)),
            )
        });
        assert!(futures::poll!(&mut both).is_pending());
        tokio::task::yield_now().await;
        drop(turn);
        let (fresh, stale) = both.await;
        fresh.expect("the fresh append commits");
        assert!(matches!(stale, Err(Error::Concurrent(run)) if run == "run-b"));
        let status = |id: &'static str| {
            let store = store.clone();
            async move { store.run(id).await.expect("reads").expect("exists").status }
        };
        assert_eq!(status("run-a").await, RunStatus::Starting);
        assert_eq!(status("run-b").await, RunStatus::Queued);
    }
}
