//! The dashboard's aggregates, computed by the database: every query groups runs (or signal
//! events) into time buckets and answers a few rows per bucket, never a row per run. Runs are
//! read from `dashboard_runs` (migration m0008): one narrow row per run, times as Unix
//! milliseconds, kept by triggers, so a scan compares and divides integers.

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};

use super::{Error, Store, escape_like};
use crate::events::canonical::types;
use crate::time::Timestamp;

/// What the aggregates cover: runs (or events) in `[from, to)` matching the filters, grouped
/// into buckets of `bucket_secs` counted from `origin` (Unix seconds, at or before `from`).
#[derive(Debug, Clone)]
pub struct DashboardScope {
    pub from: Timestamp,
    pub to: Timestamp,
    pub origin: i64,
    pub bucket_secs: i64,
    /// Matches, case-insensitively and in part, the source ref or `metadata.scenarioRef`.
    pub scenario_ref: Option<String>,
    /// `metadata.environment` equals it.
    pub environment: Option<String>,
}

/// Runs created in the scope, per creation bucket, status and error code.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedGroup {
    pub bucket: i64,
    pub status: String,
    pub error_code: Option<String>,
    pub runs: i64,
    pub tokens: f64,
    pub cost_usd: f64,
    /// Runs whose finalized decision had a negative outcome.
    pub negative: i64,
    /// Sum and count of the durations of runs that have both started and ended.
    pub duration_sum_ms: f64,
    pub durations: i64,
}

/// Runs that ended in the scope, per end bucket and status.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedGroup {
    pub bucket: i64,
    pub status: String,
    pub runs: i64,
    pub duration_sum_ms: f64,
    pub durations: i64,
    pub positive: i64,
    pub negative: i64,
}

/// Nearest-rank percentiles of the durations of the runs completed in one end bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationPercentiles {
    pub bucket: i64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Runs waiting to start, as (creation bucket, bucket they started or ended in, count); the
/// creation bucket is -1 for runs created before the scope, the other is `None` for runs still
/// waiting.
pub type QueueGroup = (i64, Option<i64>, i64);

/// Everything the overview's charts and figures are made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DashboardAggregates {
    pub created: Vec<CreatedGroup>,
    pub ended: Vec<EndedGroup>,
    pub percentiles: Vec<DurationPercentiles>,
    /// (bucket, signals emitted in it).
    pub signals: Vec<(i64, i64)>,
    /// (scenario, runs created in the scope), most runs first, at most `SCENARIO_LIMIT`.
    pub scenarios: Vec<(String, i64)>,
    pub queue: Vec<QueueGroup>,
}

/// Agent figures over all stored events, per participant.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantFigures {
    pub participant_id: String,
    pub runs: i64,
    pub messages: i64,
    pub signals: i64,
    /// Mean of the `confidence` its messages carried, if any did.
    pub average_confidence: Option<f64>,
}

/// Most scenarios the per-scenario chart shows.
const SCENARIO_LIMIT: u64 = 10;

/// SQL text with its bound values, placeholders numbered for the backend.
struct Query {
    backend: DbBackend,
    sql: String,
    values: Vec<Value>,
}

impl Query {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            sql: String::new(),
            values: Vec::new(),
        }
    }

    /// Binds `value` and answers its placeholder, numbered (so the text may use it anywhere,
    /// and more than once).
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => format!("?{}", self.values.len()),
        }
    }

    fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.sql, self.values)
    }
}

/// The bucket (counted from `origin`, `bucket_secs` wide) of a Unix-milliseconds column, for
/// values at or after `origin` (integer division truncates).
fn bucket(query: &mut Query, column: &str, scope: &DashboardScope) -> String {
    let origin = query.bind(scope.origin * 1000);
    let width = query.bind(scope.bucket_secs * 1000);
    format!("(({column} - {origin}) / {width})")
}

/// Unix milliseconds.
fn millis(time: Timestamp) -> i64 {
    time.timestamp_millis()
}

const DURATION: &str = "(d.ended_ms - d.started_ms)";

/// ` AND <filters on d>` for the scope's scenario and environment.
fn run_filters(query: &mut Query, scope: &DashboardScope) -> String {
    let mut sql = String::new();
    if let Some(environment) = &scope.environment {
        let value = query.bind(environment.clone());
        sql.push_str(&format!(" AND d.environment = {value}"));
    }
    if let Some(text) = &scope.scenario_ref {
        let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
        let pattern = query.bind(pattern);
        sql.push_str(&format!(
            " AND (LOWER(COALESCE(d.source_ref, '')) LIKE {pattern} ESCAPE '\\' \
             OR LOWER(COALESCE(d.scenario_ref, '')) LIKE {pattern} ESCAPE '\\')"
        ));
    }
    sql
}

/// ` <column> >= from AND <column> < to`, for a Unix-milliseconds column.
fn in_scope(query: &mut Query, column: &str, scope: &DashboardScope) -> String {
    let from = query.bind(millis(scope.from));
    let to = query.bind(millis(scope.to));
    format!(" {column} >= {from} AND {column} < {to}")
}

fn int(row: &QueryResult, index: usize) -> Result<i64, Error> {
    Ok(row.try_get_by_index::<Option<i64>>(index)?.unwrap_or(0))
}

fn float(row: &QueryResult, index: usize) -> Result<f64, Error> {
    Ok(row.try_get_by_index::<Option<f64>>(index)?.unwrap_or(0.0))
}

impl Store {
    /// The overview's aggregates, its queries run side by side.
    pub async fn dashboard_aggregates(
        &self,
        scope: &DashboardScope,
    ) -> Result<DashboardAggregates, Error> {
        let (created, ended, percentiles, signals, scenarios, queue) = tokio::try_join!(
            self.created_groups(scope),
            self.ended_groups(scope),
            self.duration_percentiles(scope),
            self.signal_buckets(scope),
            self.scenario_counts(scope),
            self.queue_groups(scope),
        )?;
        Ok(DashboardAggregates {
            created,
            ended,
            percentiles,
            signals,
            scenarios,
            queue,
        })
    }

    async fn created_groups(&self, scope: &DashboardScope) -> Result<Vec<CreatedGroup>, Error> {
        let mut query = Query::new(self.backend());
        let bucket = bucket(&mut query, "d.created_ms", scope);
        let window = in_scope(&mut query, "d.created_ms", scope);
        let filters = run_filters(&mut query, scope);
        query.push(&format!(
            "SELECT {bucket} AS bucket, d.status, d.error_code, CAST(COUNT(*) AS BIGINT), \
             CAST(COALESCE(SUM(d.total_tokens), 0) AS DOUBLE PRECISION), \
             CAST(COALESCE(SUM(d.cost_usd), 0) AS DOUBLE PRECISION), \
             CAST(COALESCE(SUM(CASE WHEN d.outcome_positive = 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM({DURATION}), 0) AS DOUBLE PRECISION), \
             CAST(COUNT({DURATION}) AS BIGINT) \
             FROM dashboard_runs d WHERE{window}{filters} \
             GROUP BY 1, d.status, d.error_code"
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| {
                Ok(CreatedGroup {
                    bucket: int(row, 0)?,
                    status: row.try_get_by_index(1)?,
                    error_code: row.try_get_by_index(2)?,
                    runs: int(row, 3)?,
                    tokens: float(row, 4)?,
                    cost_usd: float(row, 5)?,
                    negative: int(row, 6)?,
                    duration_sum_ms: float(row, 7)?,
                    durations: int(row, 8)?,
                })
            })
            .collect()
    }

    async fn ended_groups(&self, scope: &DashboardScope) -> Result<Vec<EndedGroup>, Error> {
        let mut query = Query::new(self.backend());
        let bucket = bucket(&mut query, "d.ended_ms", scope);
        let window = in_scope(&mut query, "d.ended_ms", scope);
        let filters = run_filters(&mut query, scope);
        query.push(&format!(
            "SELECT {bucket} AS bucket, d.status, CAST(COUNT(*) AS BIGINT), \
             CAST(COALESCE(SUM({DURATION}), 0) AS DOUBLE PRECISION), \
             CAST(COUNT({DURATION}) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN d.outcome_positive = 1 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN d.outcome_positive = 0 THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM dashboard_runs d WHERE{window}{filters} \
             GROUP BY 1, d.status"
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| {
                Ok(EndedGroup {
                    bucket: int(row, 0)?,
                    status: row.try_get_by_index(1)?,
                    runs: int(row, 2)?,
                    duration_sum_ms: float(row, 3)?,
                    durations: int(row, 4)?,
                    positive: int(row, 5)?,
                    negative: int(row, 6)?,
                })
            })
            .collect()
    }

    /// Nearest-rank percentiles (the value at rank ⌈p·n/100⌉ in each bucket), with window
    /// functions both databases have.
    async fn duration_percentiles(
        &self,
        scope: &DashboardScope,
    ) -> Result<Vec<DurationPercentiles>, Error> {
        let mut query = Query::new(self.backend());
        let bucket = bucket(&mut query, "d.ended_ms", scope);
        let window = in_scope(&mut query, "d.ended_ms", scope);
        let completed = query.bind("completed");
        let filters = run_filters(&mut query, scope);
        let rank = |p: u32| format!("MAX(CASE WHEN rn = ({p} * n + 99) / 100 THEN ms END)");
        query.push(&format!(
            "WITH t AS (SELECT {bucket} AS bucket, {DURATION} AS ms FROM dashboard_runs d \
             WHERE{window} AND d.status = {completed} AND d.started_ms IS NOT NULL{filters}), \
             r AS (SELECT bucket, ms, ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY ms) AS rn, \
             COUNT(*) OVER (PARTITION BY bucket) AS n FROM t) \
             SELECT bucket, CAST({} AS DOUBLE PRECISION), CAST({} AS DOUBLE PRECISION), \
             CAST({} AS DOUBLE PRECISION) FROM r GROUP BY bucket",
            rank(50),
            rank(95),
            rank(99),
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| {
                Ok(DurationPercentiles {
                    bucket: int(row, 0)?,
                    p50: float(row, 1)?,
                    p95: float(row, 2)?,
                    p99: float(row, 3)?,
                })
            })
            .collect()
    }

    /// Signals emitted in the scope per bucket (of the event's time), for the runs the filters
    /// match. Event times are stored as times, so the bucket comes from the time itself.
    async fn signal_buckets(&self, scope: &DashboardScope) -> Result<Vec<(i64, i64)>, Error> {
        let backend = self.backend();
        let mut query = Query::new(backend);
        let origin = query.bind(scope.origin);
        let width = query.bind(scope.bucket_secs);
        let bucket = match backend {
            DbBackend::Postgres => format!(
                "CAST(FLOOR((EXTRACT(EPOCH FROM e.\"ts\") - {origin}) / {width}) AS BIGINT)"
            ),
            _ => format!("((unixepoch(e.\"ts\") - {origin}) / {width})"),
        };
        let signal = query.bind(types::SIGNAL_EMITTED);
        let from = query.bind(scope.from);
        let to = query.bind(scope.to);
        let filters = run_filters(&mut query, scope);
        let join = if filters.is_empty() {
            ""
        } else {
            " JOIN dashboard_runs d ON d.run_id = e.\"run_id\""
        };
        query.push(&format!(
            "SELECT {bucket} AS bucket, CAST(COUNT(*) AS BIGINT) \
             FROM \"run_events_canonical\" e{join} \
             WHERE e.\"event_type\" = {signal} AND e.\"ts\" >= {from} AND e.\"ts\" < {to}{filters} \
             GROUP BY 1"
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| Ok((int(row, 0)?, int(row, 1)?)))
            .collect()
    }

    async fn scenario_counts(&self, scope: &DashboardScope) -> Result<Vec<(String, i64)>, Error> {
        let mut query = Query::new(self.backend());
        let scenario = "COALESCE(d.source_ref, d.scenario_ref)";
        let window = in_scope(&mut query, "d.created_ms", scope);
        let filters = run_filters(&mut query, scope);
        let limit = query.bind(SCENARIO_LIMIT as i64);
        query.push(&format!(
            "SELECT {scenario} AS scenario, CAST(COUNT(*) AS BIGINT) AS runs \
             FROM dashboard_runs d WHERE{window}{filters} AND {scenario} IS NOT NULL \
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {limit}"
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| Ok((row.try_get_by_index(0)?, int(row, 1)?)))
            .collect()
    }

    /// Runs that were waiting to start at some time in the scope: created before its end and
    /// not started (or ended, for runs that never started) before its beginning.
    async fn queue_groups(&self, scope: &DashboardScope) -> Result<Vec<QueueGroup>, Error> {
        let mut query = Query::new(self.backend());
        let left = "COALESCE(d.started_ms, d.ended_ms)";
        let from = query.bind(millis(scope.from));
        let to = query.bind(millis(scope.to));
        let created = bucket(&mut query, "d.created_ms", scope);
        let left_bucket = bucket(&mut query, left, scope);
        let filters = run_filters(&mut query, scope);
        query.push(&format!(
            "SELECT CASE WHEN d.created_ms < {from} THEN -1 ELSE {created} END, \
             CASE WHEN {left} IS NULL THEN NULL ELSE {left_bucket} END, CAST(COUNT(*) AS BIGINT) \
             FROM dashboard_runs d WHERE d.created_ms < {to} \
             AND ({left} IS NULL OR {left} >= {from}){filters} GROUP BY 1, 2"
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    int(row, 0)?,
                    row.try_get_by_index::<Option<i64>>(1)?,
                    int(row, 2)?,
                ))
            })
            .collect()
    }

    /// Per participant (the sender of runtime messages): the runs it took part in, its
    /// messages and signals, and the mean confidence its messages carried.
    pub async fn participant_figures(&self) -> Result<Vec<ParticipantFigures>, Error> {
        let backend = self.backend();
        let mut query = Query::new(backend);
        let (sender, confidence) = match backend {
            DbBackend::Postgres => (
                "(e.\"data\" ->> 'sender')".to_owned(),
                "CASE WHEN jsonb_typeof(e.\"data\" #> '{payload,confidence}') = 'number' \
                 THEN (e.\"data\" #>> '{payload,confidence}')::double precision END"
                    .to_owned(),
            ),
            _ => (
                "json_extract(e.\"data\", '$.sender')".to_owned(),
                "CASE WHEN json_type(e.\"data\", '$.payload.confidence') IN ('integer', 'real') \
                 THEN json_extract(e.\"data\", '$.payload.confidence') END"
                    .to_owned(),
            ),
        };
        let received = query.bind(types::MESSAGE_RECEIVED);
        let signal = query.bind(types::SIGNAL_EMITTED);
        // Every runtime envelope is one `message.received` (with its payload) from its sender;
        // a signal is also a `signal.emitted`, counted apart.
        query.push(&format!(
            "SELECT {sender} AS participant, \
             CAST(COUNT(DISTINCT e.\"run_id\") AS BIGINT), \
             CAST(SUM(CASE WHEN e.\"event_type\" = {received} THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN e.\"event_type\" = {signal} THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(AVG(CASE WHEN e.\"event_type\" = {received} THEN {confidence} END) \
             AS DOUBLE PRECISION) \
             FROM \"run_events_canonical\" e \
             WHERE e.\"event_type\" IN ({received}, {signal}) \
             AND {sender} IS NOT NULL AND {sender} <> '' \
             GROUP BY 1 ORDER BY 2 DESC, 1"
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| {
                Ok(ParticipantFigures {
                    participant_id: row.try_get_by_index(0)?,
                    runs: int(row, 1)?,
                    messages: int(row, 2)?,
                    signals: int(row, 3)?,
                    average_confidence: row.try_get_by_index::<Option<f64>>(4)?,
                })
            })
            .collect()
    }
}
