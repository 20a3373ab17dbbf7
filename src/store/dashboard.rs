//! The dashboard's aggregates, computed by the database: every query groups runs (or signal
//! events) into time buckets and answers a few rows per bucket, never a row per run. Runs are
//! read from `dashboard_runs` (migration m0008): one narrow row per run, times as Unix
//! milliseconds, kept by triggers, so a scan compares and divides integers. A range charted in
//! days reads its whole days from `dashboard_rollups` (migration m0009: per day, dims and kind,
//! kept by triggers) and scans runs only for its partial first and last day.

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

/// ` <column> in [from, to)`, for a Unix-milliseconds column, less the whole days the rollups
/// answer for.
fn in_scope(query: &mut Query, column: &str, scope: &DashboardScope) -> String {
    let from = query.bind(millis(scope.from));
    let to = query.bind(millis(scope.to));
    match scope.whole_days() {
        None => format!(" {column} >= {from} AND {column} < {to}"),
        Some(days) => {
            let first = query.bind(days.start * DAY_MS);
            let end = query.bind(days.end * DAY_MS);
            format!(
                " (({column} >= {from} AND {column} < {first}) \
                 OR ({column} >= {end} AND {column} < {to}))"
            )
        }
    }
}

const DAY_MS: i64 = 86_400_000;

impl DashboardScope {
    /// The Unix days wholly inside the scope when it is charted in days: those the rollups
    /// answer for (a day bucket's origin is a UTC midnight).
    fn whole_days(&self) -> Option<std::ops::Range<i64>> {
        if self.bucket_secs != 86_400 || self.origin.rem_euclid(86_400) != 0 {
            return None;
        }
        let first = (millis(self.from) + DAY_MS - 1).div_euclid(DAY_MS);
        let end = millis(self.to).div_euclid(DAY_MS);
        (first < end).then_some(first..end)
    }

    /// The Unix day of the first bucket.
    fn origin_day(&self) -> i64 {
        self.origin.div_euclid(86_400)
    }

    /// The days only partly inside the scope (its first and last, when not whole).
    fn partial_days(&self, days: &std::ops::Range<i64>) -> Vec<i64> {
        let mut partial = Vec::new();
        if days.start * DAY_MS > millis(self.from) {
            partial.push(days.start - 1);
        }
        if days.end * DAY_MS < millis(self.to) {
            partial.push(days.end);
        }
        partial
    }
}

/// `FROM dashboard_rollups r JOIN dashboard_dims d` with the rows of `kind` for `days` whose
/// dims the filters match (aliased `d`, as `run_filters` reads).
fn rollup_rows(
    query: &mut Query,
    kind: i32,
    days: &std::ops::Range<i64>,
    scope: &DashboardScope,
) -> String {
    let kind = query.bind(kind);
    let first = query.bind(days.start);
    let end = query.bind(days.end);
    let filters = run_filters(query, scope);
    format!(
        " FROM dashboard_rollups r JOIN dashboard_dims d ON d.id = r.dim_id \
         WHERE r.kind = {kind} AND r.day >= {first} AND r.day < {end}{filters}"
    )
}

/// The rollup kinds (migration m0009).
const CREATED: i32 = 0;
const ENDED: i32 = 1;
const QUEUE: i32 = 2;

fn int(row: &QueryResult, index: usize) -> Result<i64, Error> {
    Ok(row.try_get_by_index::<Option<i64>>(index)?.unwrap_or(0))
}

fn float(row: &QueryResult, index: usize) -> Result<f64, Error> {
    Ok(row.try_get_by_index::<Option<f64>>(index)?.unwrap_or(0.0))
}

impl Store {
    /// PostgreSQL: moves the rollup changes the writers' triggers left in
    /// `dashboard_rollup_deltas` into the rollup rows (migration m0011), in one statement;
    /// how many rollup rows it changed. One task at a time runs it (the leader's work); on
    /// SQLite, whose trigger writes the rollup rows itself, it does nothing.
    pub async fn fold_rollup_deltas(&self) -> Result<u64, Error> {
        if self.backend() != DbBackend::Postgres {
            return Ok(0);
        }
        let folded = self
            .db
            .execute_unprepared(&super::migrations::m0011_rollup_deltas::fold())
            .await?;
        Ok(folded.rows_affected())
    }

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
        let mut rows = self.db.query_all_raw(query.statement()).await?;
        if let Some(days) = scope.whole_days() {
            let mut query = Query::new(self.backend());
            let origin = query.bind(scope.origin_day());
            let from = rollup_rows(&mut query, CREATED, &days, scope);
            query.push(&format!(
                "SELECT r.day - {origin}, d.status, d.error_code, CAST(SUM(r.runs) AS BIGINT), \
                 CAST(SUM(r.tokens) AS DOUBLE PRECISION), \
                 CAST(SUM(r.cost_usd) AS DOUBLE PRECISION), CAST(SUM(r.negative) AS BIGINT), \
                 CAST(SUM(r.duration_sum_ms) AS DOUBLE PRECISION), \
                 CAST(SUM(r.durations) AS BIGINT){from} \
                 GROUP BY 1, d.status, d.error_code HAVING SUM(r.runs) <> 0"
            ));
            rows.extend(self.db.query_all_raw(query.statement()).await?);
        }
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
        let mut rows = self.db.query_all_raw(query.statement()).await?;
        if let Some(days) = scope.whole_days() {
            let mut query = Query::new(self.backend());
            let origin = query.bind(scope.origin_day());
            let from = rollup_rows(&mut query, ENDED, &days, scope);
            query.push(&format!(
                "SELECT r.day - {origin}, d.status, CAST(SUM(r.runs) AS BIGINT), \
                 CAST(SUM(r.duration_sum_ms) AS DOUBLE PRECISION), \
                 CAST(SUM(r.durations) AS BIGINT), CAST(SUM(r.positive) AS BIGINT), \
                 CAST(SUM(r.negative) AS BIGINT){from} \
                 GROUP BY 1, d.status HAVING SUM(r.runs) <> 0"
            ));
            rows.extend(self.db.query_all_raw(query.statement()).await?);
        }
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

    /// Nearest-rank percentiles (the value at rank ⌈p·n/100⌉ in each bucket): whole days
    /// walked to, the other buckets sorted.
    async fn duration_percentiles(
        &self,
        scope: &DashboardScope,
    ) -> Result<Vec<DurationPercentiles>, Error> {
        let mut rows = self.scanned_percentiles(scope).await?;
        if let Some(days) = scope.whole_days() {
            rows.extend(self.walked_percentiles(scope, &days).await?);
        }
        Ok(rows)
    }

    /// The percentiles of the buckets whose runs are scanned, sorted per bucket with window
    /// functions both databases have.
    async fn scanned_percentiles(
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

    /// The percentiles of whole days: each day's count from the rollups gives the ranks, and
    /// the index of completed runs by (end day, duration) is walked to each rank, from the
    /// nearer end, instead of sorting the day. With filters the walk passes (in the index) the
    /// runs they do not match too.
    async fn walked_percentiles(
        &self,
        scope: &DashboardScope,
        days: &std::ops::Range<i64>,
    ) -> Result<Vec<DurationPercentiles>, Error> {
        let backend = self.backend();
        // The dims the filters match, as a list the walk can test in the index.
        let dims = if scope.environment.is_some() || scope.scenario_ref.is_some() {
            let mut query = Query::new(backend);
            let filters = run_filters(&mut query, scope);
            query.push(&format!(
                "SELECT d.id FROM dashboard_dims d WHERE d.status = 'completed'{filters}"
            ));
            let rows = self.db.query_all_raw(query.statement()).await?;
            let ids = rows
                .iter()
                .map(|row| int(row, 0))
                .collect::<Result<Vec<_>, Error>>()?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            Some(ids)
        } else {
            None
        };
        let mut query = Query::new(backend);
        let from = rollup_rows(&mut query, ENDED, days, scope);
        query.push(&format!(
            "SELECT r.day, CAST(SUM(r.durations) AS BIGINT){from} AND d.status = 'completed' \
             GROUP BY r.day HAVING SUM(r.durations) > 0 ORDER BY r.day"
        ));
        let counts = self
            .db
            .query_all_raw(query.statement())
            .await?
            .iter()
            .map(|row| Ok((int(row, 0)?, int(row, 1)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        // (day, from the longest, runs to pass) for p50, p95 and p99 of each day.
        let walks: Vec<(i64, bool, i64)> = counts
            .iter()
            .flat_map(|(day, n)| {
                [50, 95, 99].map(|p| {
                    let rank = (p * n + 99) / 100;
                    if rank * 2 <= *n {
                        (*day, false, rank - 1)
                    } else {
                        (*day, true, n - rank)
                    }
                })
            })
            .collect();
        let mut query = Query::new(backend);
        let in_dims = match &dims {
            Some(ids) => {
                let ids: Vec<String> = ids.iter().map(|id| query.bind(*id)).collect();
                format!(" AND x.dim_id IN ({})", ids.join(", "))
            }
            None => String::new(),
        };
        // The literals match the partial expression index of migration m0009.
        let walk = |day: &str, order: &str, offset: &str| {
            format!(
                "(SELECT x.ended_ms - x.started_ms FROM dashboard_runs x \
                 WHERE x.status = 'completed' AND x.started_ms IS NOT NULL \
                 AND x.ended_ms / 86400000 = {day}{in_dims} \
                 ORDER BY x.ended_ms - x.started_ms {order} LIMIT 1 OFFSET {offset})"
            )
        };
        let values: Vec<i64> = match backend {
            // One plan for every walk: PostgreSQL plans each subquery of a statement apart.
            DbBackend::Postgres => {
                let rows: Vec<String> = walks
                    .iter()
                    .enumerate()
                    .map(|(index, (day, descending, offset))| {
                        format!(
                            "(CAST({} AS BIGINT), CAST({} AS BIGINT), CAST({} AS BOOLEAN), \
                             CAST({} AS BIGINT))",
                            query.bind(index as i64),
                            query.bind(*day),
                            query.bind(*descending),
                            query.bind(*offset)
                        )
                    })
                    .collect();
                query.push(&format!(
                    "SELECT CASE WHEN w.descending THEN {} ELSE {} END \
                     FROM (VALUES {}) AS w (walk, day, descending, passed) ORDER BY w.walk",
                    walk("w.day", "DESC", "w.passed"),
                    walk("w.day", "ASC", "w.passed"),
                    rows.join(", ")
                ));
                self.db
                    .query_all_raw(query.statement())
                    .await?
                    .iter()
                    .map(|row| int(row, 0))
                    .collect::<Result<_, Error>>()?
            }
            // SQLite's OFFSET cannot name an outer column: a subquery a walk, in one row.
            _ => {
                let columns: Vec<String> = walks
                    .iter()
                    .map(|(day, descending, offset)| {
                        let day = query.bind(*day);
                        let offset = query.bind(*offset);
                        walk(&day, if *descending { "DESC" } else { "ASC" }, &offset)
                    })
                    .collect();
                query.push(&format!("SELECT {}", columns.join(", ")));
                match self.db.query_one_raw(query.statement()).await? {
                    Some(row) => (0..walks.len())
                        .map(|index| int(&row, index))
                        .collect::<Result<_, Error>>()?,
                    None => Vec::new(),
                }
            }
        };
        let origin = scope.origin_day();
        Ok(counts
            .iter()
            .zip(values.chunks(3))
            .filter_map(|((day, _), ms)| match ms {
                [p50, p95, p99] => Some(DurationPercentiles {
                    bucket: day - origin,
                    p50: *p50 as f64,
                    p95: *p95 as f64,
                    p99: *p99 as f64,
                }),
                _ => None,
            })
            .collect())
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
        // The filters are matched against the dims, not each signal's run.
        let join = if filters.is_empty() {
            String::new()
        } else {
            format!(
                " JOIN dashboard_runs x ON x.run_id = e.\"run_id\" AND x.dim_id IN \
                 (SELECT d.id FROM dashboard_dims d WHERE 1 = 1{filters})"
            )
        };
        query.push(&format!(
            "SELECT {bucket} AS bucket, CAST(COUNT(*) AS BIGINT) \
             FROM \"run_events_canonical\" e{join} \
             WHERE e.\"event_type\" = {signal} AND e.\"ts\" >= {from} AND e.\"ts\" < {to} \
             GROUP BY 1"
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| Ok((int(row, 0)?, int(row, 1)?)))
            .collect()
    }

    /// The scenarios with most runs created in the scope: the rollups' counts of whole days
    /// and the runs of the other days, added up before they are ranked.
    async fn scenario_counts(&self, scope: &DashboardScope) -> Result<Vec<(String, i64)>, Error> {
        let mut query = Query::new(self.backend());
        let scenario = "COALESCE(d.source_ref, d.scenario_ref)";
        let window = in_scope(&mut query, "d.created_ms", scope);
        let filters = run_filters(&mut query, scope);
        let mut parts = vec![format!(
            "SELECT {scenario} AS scenario, 1 AS runs FROM dashboard_runs d WHERE{window}{filters}"
        )];
        if let Some(days) = scope.whole_days() {
            let from = rollup_rows(&mut query, CREATED, &days, scope);
            parts.push(format!("SELECT {scenario}, r.runs{from}"));
        }
        let limit = query.bind(SCENARIO_LIMIT as i64);
        query.push(&format!(
            "SELECT scenario, CAST(SUM(runs) AS BIGINT) AS runs FROM ({}) s \
             WHERE scenario IS NOT NULL GROUP BY 1 HAVING SUM(runs) > 0 \
             ORDER BY 2 DESC, 1 LIMIT {limit}",
            parts.join(" UNION ALL ")
        ));
        let rows = self.db.query_all_raw(query.statement()).await?;
        rows.iter()
            .map(|row| Ok((row.try_get_by_index(0)?, int(row, 1)?)))
            .collect()
    }

    /// Runs that were waiting to start at some time in the scope: created before its end and
    /// not started (or ended, for runs that never started) before its beginning. With whole
    /// days, runs created and leaving outside the partial days are counted from the rollups.
    async fn queue_groups(&self, scope: &DashboardScope) -> Result<Vec<QueueGroup>, Error> {
        let mut query = Query::new(self.backend());
        let left = "COALESCE(d.started_ms, d.ended_ms)";
        let from = query.bind(millis(scope.from));
        let to = query.bind(millis(scope.to));
        let created = bucket(&mut query, "d.created_ms", scope);
        let left_bucket = bucket(&mut query, left, scope);
        let filters = run_filters(&mut query, scope);
        let days = scope.whole_days();
        let partial = days
            .as_ref()
            .map(|days| scope.partial_days(days))
            .unwrap_or_default();
        // With whole days, the scan is only of runs created or leaving on a partial day (and
        // none without partial days).
        let edges = match &days {
            None => Some(String::new()),
            Some(_) => {
                let mut ranges = Vec::new();
                for day in &partial {
                    let start = query.bind(day * DAY_MS);
                    let end = query.bind((day + 1) * DAY_MS);
                    for column in ["d.created_ms", left] {
                        ranges.push(format!("({column} >= {start} AND {column} < {end})"));
                    }
                }
                (!ranges.is_empty()).then(|| format!(" AND ({})", ranges.join(" OR ")))
            }
        };
        let mut rows = match edges {
            Some(edges) => {
                query.push(&format!(
                    "SELECT CASE WHEN d.created_ms < {from} THEN -1 ELSE {created} END, \
                     CASE WHEN {left} IS NULL THEN NULL ELSE {left_bucket} END, \
                     CAST(COUNT(*) AS BIGINT) FROM dashboard_runs d WHERE d.created_ms < {to} \
                     AND ({left} IS NULL OR {left} >= {from}){filters}{edges} GROUP BY 1, 2"
                ));
                self.db.query_all_raw(query.statement()).await?
            }
            None => Vec::new(),
        };
        if let Some(days) = days {
            // Created before the scope's end and not left before its beginning, in whole days.
            let mut query = Query::new(self.backend());
            let origin = query.bind(scope.origin_day());
            let first = query.bind(days.start);
            let end = query.bind(days.end);
            let kind = query.bind(QUEUE);
            let filters = run_filters(&mut query, scope);
            let mut outside = String::new();
            for day in &partial {
                let day = query.bind(*day);
                outside.push_str(&format!(" AND r.day <> {day} AND r.left_day <> {day}"));
            }
            query.push(&format!(
                "SELECT CASE WHEN r.day < {first} THEN -1 ELSE r.day - {origin} END, \
                 CASE WHEN r.left_day = -1 THEN NULL ELSE r.left_day - {origin} END, \
                 CAST(SUM(r.runs) AS BIGINT) \
                 FROM dashboard_rollups r JOIN dashboard_dims d ON d.id = r.dim_id \
                 WHERE r.kind = {kind} AND r.day < {end} \
                 AND (r.left_day = -1 OR r.left_day >= {first}){outside}{filters} \
                 GROUP BY 1, 2 HAVING SUM(r.runs) <> 0"
            ));
            rows.extend(self.db.query_all_raw(query.statement()).await?);
        }
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
