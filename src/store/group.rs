//! Group commit: appends of different runs that are ready at the same moment share one
//! transaction. A committing task per lane owns the write path; each append hands its lane its
//! statements, already rendered, and waits for the outcome. Under load the queue fills while a transaction runs, so
//! the next one carries many appends for the price of one commit (and, on SQLite, one turn of
//! its single writer) instead of queueing each behind the other.
//!
//! SQLite has one lane (it admits one writer). PostgreSQL has a few, each on its own connection,
//! so the server works on several transactions at once; a run always uses the same lane, which
//! with its writer lock keeps its appends in order.
//!
//! A group costs a few round trips, not one per statement: SQLite gets its statements joined,
//! PostgreSQL gets the whole transaction as one script (see `execute_postgres`).

use std::sync::Arc;

use sea_orm::sea_query::{PostgresQueryBuilder, inject_parameters};
use sea_orm::sqlx;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, RuntimeErr, Statement, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::{Error, SqliteWriter};

/// Appends per transaction at most.
const MAX_GROUP: usize = 64;

/// One run's append: a compare-and-set of the run row (exactly one row, or the run was written
/// by someone else), then the rest of its rows.
struct Job {
    run_id: String,
    compare_and_set: Statement,
    statements: Vec<Statement>,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Lanes on PostgreSQL. Each commit waits for the server's WAL flush (about 2 ms here), and
/// an append that arrives while its lane commits waits for that commit too; more lanes, more
/// commits in flight, and the server flushes theirs together. Load generator, 1,000
/// envelopes/s, 2-core machine under other load, p99 accept→SSE over two runs each: 4 lanes
/// 16.8–25.4 ms, 8 lanes 9.0–13.0, 16 lanes 9.3–9.8; at 3,000/s 16 lanes had the worst tail
/// (p99 140 ms against 81–106).
const POSTGRES_LANES: usize = 8;

/// The handle appends go through; the committing tasks end when the last handle is dropped.
#[derive(Clone, Debug)]
pub(super) struct GroupCommit {
    lanes: Arc<[mpsc::UnboundedSender<Job>]>,
}

impl GroupCommit {
    pub(super) fn spawn(db: DatabaseConnection, sqlite: Option<Arc<SqliteWriter>>) -> Self {
        let lanes = if sqlite.is_some() { 1 } else { POSTGRES_LANES };
        let lanes = (0..lanes)
            .map(|_| {
                let (jobs, queue) = mpsc::unbounded_channel();
                tokio::spawn(commit_groups(db.clone(), sqlite.clone(), queue));
                jobs
            })
            .collect();
        GroupCommit { lanes }
    }

    /// Commits one append (with whatever else is waiting) and returns its own outcome.
    pub(super) async fn commit(
        &self,
        run_id: &str,
        compare_and_set: Statement,
        statements: Vec<Statement>,
    ) -> Result<(), Error> {
        let (done, outcome) = oneshot::channel();
        let job = Job {
            run_id: run_id.to_owned(),
            compare_and_set: literal(compare_and_set),
            statements: statements.into_iter().map(literal).collect(),
            done,
        };
        self.lanes[lane(run_id, self.lanes.len())]
            .send(job)
            .map_err(|_| Error::WriterStopped)?;
        outcome.await.map_err(|_| Error::WriterStopped)?
    }
}

fn lane(run_id: &str, lanes: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(run_id) as usize % lanes
}

/// What a committing task executes its groups on.
struct Lane {
    db: DatabaseConnection,
    sqlite: Option<Arc<SqliteWriter>>,
    /// On PostgreSQL, the lane's own connection, taken out of the pool (which would check its
    /// health with a round trip on every acquire and release) and replaced after it breaks.
    connection: Option<sqlx::PgConnection>,
}

impl Lane {
    /// All jobs in one transaction; any failure rolls all of them back.
    async fn execute(&mut self, jobs: &[Job]) -> Result<(), Error> {
        if self.db.get_database_backend() != DbBackend::Postgres {
            return execute_sqlite(&self.db, jobs).await;
        }
        // A connection that died while idle (a server restart, a proxy's idle cut) is found
        // out by the first script; the group is tried once more on a new one. That is safe even
        // if the lost answer was a commit's: the compare-and-sets would then fail, and the
        // writers reload from the store.
        let mut retried = false;
        let mut conflicts = 0;
        loop {
            let mut connection = match self.connection.take() {
                Some(connection) => connection,
                None => self
                    .db
                    .get_postgres_connection_pool()
                    .acquire()
                    .await
                    .map_err(sqlx_error)?
                    .detach(),
            };
            let outcome = execute_postgres(&mut connection, jobs).await;
            // After a failure, ROLLBACK ends whatever transaction the script left open; if even
            // that fails, the connection is broken: it is dropped and the group tried again.
            if outcome.is_ok() || script(&mut connection, "ROLLBACK".to_owned()).await.is_ok() {
                self.connection = Some(connection);
                // A deadlock or serialization failure with another transaction rolled the
                // whole group back: it is tried again as it was, after a moment.
                if conflicts < MAX_CONFLICT_RETRIES
                    && outcome.as_ref().err().is_some_and(transaction_conflict)
                {
                    conflicts += 1;
                    tokio::time::sleep(conflict_pause(conflicts)).await;
                    continue;
                }
                return outcome;
            }
            if retried {
                return outcome;
            }
            retried = true;
        }
    }
}

async fn commit_groups(
    db: DatabaseConnection,
    sqlite: Option<Arc<SqliteWriter>>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let mut lane = Lane {
        db,
        sqlite,
        connection: None,
    };
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let sqlite = lane.sqlite.clone();
        let _turn = match &sqlite {
            Some(writer) => Some(writer.turn(&lane.db).await),
            None => None,
        };
        match lane.execute(&group).await {
            Ok(()) => {
                for job in group.drain(..) {
                    let _ = job.done.send(Ok(()));
                }
            }
            // One append's failure must not fail the others: each is retried alone and gets
            // its own outcome. (Failures are rare: a concurrent writer, a lost connection.)
            Err(error) if group.len() == 1 => {
                if let Some(job) = group.pop() {
                    let _ = job.done.send(Err(error));
                }
            }
            Err(_) => {
                for job in group.drain(..) {
                    let outcome = lane.execute(std::slice::from_ref(&job)).await;
                    let _ = job.done.send(outcome);
                }
            }
        }
    }
}

/// SQLite runs each call on its connection's thread, and binds `?` parameters in order across
/// the statements of one call: the whole group costs four hand-offs, not one per statement.
/// Each compare-and-set matches at most one row, so all of them held exactly when the count of
/// changed rows is the number of jobs.
async fn execute_sqlite(db: &DatabaseConnection, jobs: &[Job]) -> Result<(), Error> {
    let txn = db.begin().await?;
    let compare = joined(jobs.iter().map(|job| &job.compare_and_set));
    if txn.execute_raw(compare).await?.rows_affected() != jobs.len() as u64 {
        txn.rollback().await?;
        return Err(concurrent(jobs));
    }
    let rest = joined(jobs.iter().flat_map(|job| &job.statements));
    txn.execute_raw(rest).await?;
    txn.commit().await?;
    Ok(())
}

/// PostgreSQL takes the group as one script in its simple-query protocol, one round trip:
/// `BEGIN`, the compare-and-sets, each failing the transaction (`macp_refuse()`, SQLSTATE
/// `MC409`, migration 12) when it matches no row, the rest, and `COMMIT`. Sent as two scripts,
/// with the count of changed rows read in between, each transaction stayed open, its rows
/// locked, while the committing task was scheduled to send the second: at 1,000 messages/s
/// over three replicas a few milliseconds per transaction, tens of milliseconds while 100
/// sessions started (`pg_stat_activity`: 1.5 and 2.6 transactions "idle in transaction" on
/// average). The statements' values are already literals (`literal`).
async fn execute_postgres(connection: &mut sqlx::PgConnection, jobs: &[Job]) -> Result<(), Error> {
    let mut sql = "BEGIN;\n".to_owned();
    for job in jobs {
        sql.push_str("WITH held AS (");
        sql.push_str(&job.compare_and_set.sql);
        sql.push_str(" RETURNING 1) SELECT macp_refuse() WHERE NOT EXISTS (SELECT FROM held);\n");
    }
    sql.push_str(&joined(jobs.iter().flat_map(|job| &job.statements)).sql);
    sql.push_str("COMMIT;");
    match script(connection, sql).await {
        Err(error) if sqlstate(&error).as_deref() == Some(CONCURRENT) => Err(concurrent(jobs)),
        outcome => outcome.map(drop),
    }
}

/// The SQLSTATE of `macp_refuse()`: a compare-and-set matched no row.
const CONCURRENT: &str = "MC409";

/// `body` (PL/pgSQL statements) as an anonymous code block, quoted with a dollar tag that
/// does not occur in it (the statements carry their values as literals, which may hold any
/// text).
fn do_block(body: &str) -> String {
    let tag = (0u32..)
        .map(|n| format!("$g{n}$"))
        .find(|tag| !body.contains(tag.as_str()))
        .unwrap_or_default();
    format!("DO {tag}\nBEGIN\n{body}END\n{tag}")
}

fn sqlstate(error: &Error) -> Option<String> {
    let Error::Db(DbErr::Exec(RuntimeErr::SqlxError(error))) = error else {
        return None;
    };
    match error.as_ref() {
        sqlx::Error::Database(error) => error.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// Runs a script; returns the rows its statements changed, summed.
async fn script(connection: &mut sqlx::PgConnection, sql: String) -> Result<u64, Error> {
    let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(connection)
        .await
        .map_err(sqlx_error)?;
    Ok(done.rows_affected())
}

pub(super) fn sqlx_error(error: sqlx::Error) -> Error {
    Error::Db(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error))))
}

/// A PostgreSQL statement with its values written into the SQL as literals, escaped by
/// sea-query's PostgreSQL builder, so that it can go in a script (the simple-query protocol
/// binds no parameters). Rendered by the appending task, not the committing one. Other
/// backends' statements are returned as they are.
fn literal(statement: Statement) -> Statement {
    match (&statement.db_backend, &statement.values) {
        (DbBackend::Postgres, Some(values)) => Statement::from_string(
            DbBackend::Postgres,
            inject_parameters(&statement.sql, &values.0, &PostgresQueryBuilder),
        ),
        _ => statement,
    }
}

/// Times a group rolled back by a conflict with another transaction is tried again.
const MAX_CONFLICT_RETRIES: u32 = 5;

/// PostgreSQL's `deadlock_detected` and `serialization_failure`: the server rolled the
/// transaction back because of another one; the same transaction may pass when tried again.
fn transaction_conflict(error: &Error) -> bool {
    matches!(sqlstate(error).as_deref(), Some("40P01" | "40001"))
}

/// A few milliseconds, more for each attempt and with jitter, so that the transactions that
/// conflicted do not meet again in the same order.
fn conflict_pause(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, RandomState};
    let jitter = RandomState::new().hash_one(attempt) % 1_000;
    std::time::Duration::from_micros(u64::from(attempt) * 2_000 + jitter)
}

fn concurrent(jobs: &[Job]) -> Error {
    let runs: Vec<&str> = jobs.iter().map(|job| job.run_id.as_str()).collect();
    Error::Concurrent(runs.join(", "))
}

/// Statements as one call: their SQL in order, their parameters in the same order.
fn joined<'a>(statements: impl Iterator<Item = &'a Statement>) -> Statement {
    let mut sql = String::new();
    let mut values = Vec::new();
    for statement in statements {
        sql.push_str(&statement.sql);
        sql.push_str(";\n");
        if let Some(bound) = &statement.values {
            values.extend(bound.0.iter().cloned());
        }
    }
    // The tag is SQLite's, the one backend that binds these values; PostgreSQL's statements
    // carry none (`literal`) and only their SQL is used.
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// A transaction of its own, outside the lanes: `insert`, then, only when it inserted its row,
/// `rest`; nothing otherwise. Whether it inserted. PostgreSQL gets it as one script (as a group,
/// `execute_postgres`) whose `DO` block returns early when the insert yielded: no error for
/// the replicas that lost a race to discover a session. On a pooled connection, from a task of
/// its own: a caller that goes away (a client that hung up) cannot leave the connection inside
/// the transaction.
pub(super) async fn insert_guarded(
    db: &DatabaseConnection,
    insert: Statement,
    rest: Vec<Statement>,
) -> Result<bool, Error> {
    if db.get_database_backend() != DbBackend::Postgres {
        let txn = db.begin().await?;
        if txn.execute_raw(insert).await?.rows_affected() == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        for statement in rest {
            txn.execute_raw(statement).await?;
        }
        txn.commit().await?;
        return Ok(true);
    }
    let rest = joined(rest.into_iter().map(literal).collect::<Vec<_>>().iter()).sql;
    let body = format!(
        "{};\nIF NOT FOUND THEN RETURN; END IF;\n{rest}PERFORM set_config('macp.inserted', 'yes', true);\n",
        literal(insert).sql
    );
    let sql = format!(
        "BEGIN;\n{};\nSELECT current_setting('macp.inserted', true) = 'yes';\nCOMMIT;",
        do_block(&body)
    );
    let pool = db.get_postgres_connection_pool().clone();
    tokio::spawn(async move {
        let mut connection = pool.acquire().await.map_err(sqlx_error)?;
        // Every result read, so that a failed `COMMIT` is seen too.
        let outcome = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *connection)
            .await
            .and_then(|rows| match rows.first() {
                Some(row) => sqlx::Row::try_get::<Option<bool>, _>(row, 0),
                None => Ok(None),
            })
            .map(|inserted| inserted == Some(true))
            .map_err(sqlx_error);
        // Back to the pool rolled back, or closed when even that fails.
        if outcome.is_err()
            && script(&mut connection, "ROLLBACK".to_owned())
                .await
                .is_err()
        {
            connection.close_on_drop();
        }
        outcome
    })
    .await
    .map_err(|_| Error::WriterStopped)?
}

#[cfg(test)]
mod tests {
    use super::do_block;

    #[test]
    fn a_do_block_is_quoted_with_a_tag_its_body_does_not_hold() {
        assert_eq!(do_block("NULL;\n"), "DO $g0$\nBEGIN\nNULL;\nEND\n$g0$");
        let hostile = "INSERT INTO t VALUES ('$g0$ END $g0$; $g1$');\n";
        assert!(do_block(hostile).starts_with("DO $g2$\n"));
        assert!(do_block(hostile).ends_with("END\n$g2$"));
    }
}
