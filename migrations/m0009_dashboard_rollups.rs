//! Per-day rollups of `dashboard_runs`, so a dashboard charted in days (7d, 30d, long ranges)
//! reads a few rows per day instead of every run in its range:
//! - `dashboard_dims` names each distinct (status, error code, source ref, scenario, environment)
//!   a run has had, and `dashboard_runs.dim_id` points at its own; the filters are matched
//!   against these few rows, not against every run;
//! - `dashboard_rollups` holds, per kind (0 by creation day, 1 by end day, 2 by creation day and
//!   the day the run left the queue), day and dims, the runs' count and summed figures, kept by
//!   triggers on `dashboard_runs` in the writer's transaction (the old row's figures taken off,
//!   the new row's added), so it always equals a regrouping of `dashboard_runs`;
//! - an index on (end day, duration, dims) of completed runs answers a day's nearest-rank
//!   percentile by walking to its rank (from either end) instead of sorting the day.
//!
//! Days are Unix days (UTC), `ms / 86400000`, the same as the day buckets of a range (their
//! origin is a UTC midnight).

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The rollup kinds (`dashboard_rollups.kind`).
const CREATED: i32 = 0;
const ENDED: i32 = 1;
const QUEUE: i32 = 2;

const DIMS: &str = "status, error_code, source_ref, scenario_ref, environment";

pub(super) const FIGURES: [&str; 7] = [
    "runs",
    "tokens",
    "cost_usd",
    "positive",
    "negative",
    "duration_sum_ms",
    "durations",
];

/// The figures of the row `row` (NEW or OLD) for its rollup row of `kind`, times `sign`.
fn contribution(kind: i32, row: &str, sign: i32) -> String {
    let (day, left_day, when) = match kind {
        CREATED => (
            format!("{row}.created_ms / 86400000"),
            "0".to_owned(),
            String::new(),
        ),
        ENDED => (
            format!("{row}.ended_ms / 86400000"),
            "0".to_owned(),
            format!(" AND {row}.ended_ms IS NOT NULL"),
        ),
        _ => (
            format!("{row}.created_ms / 86400000"),
            format!("COALESCE(COALESCE({row}.started_ms, {row}.ended_ms) / 86400000, -1)"),
            String::new(),
        ),
    };
    format!(
        "SELECT {kind} AS kind, {day} AS day, {left_day} AS left_day, {row}.dim_id AS dim_id, \
            {sign} AS runs, {sign} * COALESCE({row}.total_tokens, 0) AS tokens, \
            {sign} * COALESCE({row}.cost_usd, 0) AS cost_usd, \
            {sign} * (CASE WHEN {row}.outcome_positive = 1 THEN 1 ELSE 0 END) AS positive, \
            {sign} * (CASE WHEN {row}.outcome_positive = 0 THEN 1 ELSE 0 END) AS negative, \
            {sign} * COALESCE({row}.ended_ms - {row}.started_ms, 0) AS duration_sum_ms, \
            {sign} * (CASE WHEN {row}.ended_ms - {row}.started_ms IS NULL THEN 0 ELSE 1 END) \
            AS durations \
         WHERE {row}.dim_id IS NOT NULL{when}"
    )
}

/// One `INSERT ... ON CONFLICT` applying a row change to every kind of rollup: the figures of
/// `rows` ((NEW or OLD, 1 to add or -1 to take off)) netted per rollup row, rows whose net is
/// nothing left out, and the rest written in key order, so that two writers lock the rows
/// they share in the same order (no deadlock) and a change that moves nothing locks nothing.
fn apply(backend: DbBackend, rows: &[(&str, i32)]) -> String {
    let target = match backend {
        DbBackend::Postgres => "dashboard_rollups.",
        _ => "",
    };
    let set = FIGURES
        .map(|column| format!("{column} = {target}{column} + excluded.{column}"))
        .join(", ");
    format!(
        "INSERT INTO dashboard_rollups (kind, day, left_day, dim_id, {}) {} \
         ON CONFLICT (kind, day, left_day, dim_id) DO UPDATE SET {set};",
        FIGURES.join(", "),
        netted(rows),
    )
}

/// The rollup rows a row change moves: the figures of `rows` ((NEW or OLD, 1 to add or -1 to
/// take off)) netted per rollup row, rows whose net is nothing left out, in key order.
pub(super) fn netted(rows: &[(&str, i32)]) -> String {
    let parts: Vec<String> = rows
        .iter()
        .flat_map(|(row, sign)| [CREATED, ENDED, QUEUE].map(|kind| contribution(kind, row, *sign)))
        .collect();
    let sums = FIGURES.map(|column| format!("SUM(c.{column})")).join(", ");
    let moved = FIGURES
        .map(|column| format!("SUM(c.{column}) <> 0"))
        .join(" OR ");
    format!(
        "SELECT c.kind, c.day, c.left_day, c.dim_id, {sums} FROM ({}) c WHERE 1 = 1 \
         GROUP BY c.kind, c.day, c.left_day, c.dim_id HAVING {moved} \
         ORDER BY c.kind, c.day, c.left_day, c.dim_id",
        parts.join(" UNION ALL ")
    )
}

/// The rollups of the rows already there, one kind at a time.
fn backfill(kind: i32) -> String {
    let (day, left_day, when) = match kind {
        CREATED => ("created_ms / 86400000", "0", ""),
        ENDED => ("ended_ms / 86400000", "0", " AND ended_ms IS NOT NULL"),
        _ => (
            "created_ms / 86400000",
            "COALESCE(COALESCE(started_ms, ended_ms) / 86400000, -1)",
            "",
        ),
    };
    format!(
        "INSERT INTO dashboard_rollups (kind, day, left_day, dim_id, runs, tokens, cost_usd, \
            positive, negative, duration_sum_ms, durations) \
         SELECT {kind}, {day}, {left_day}, dim_id, COUNT(*), COALESCE(SUM(total_tokens), 0), \
            COALESCE(SUM(cost_usd), 0), \
            SUM(CASE WHEN outcome_positive = 1 THEN 1 ELSE 0 END), \
            SUM(CASE WHEN outcome_positive = 0 THEN 1 ELSE 0 END), \
            COALESCE(SUM(ended_ms - started_ms), 0), COUNT(ended_ms - started_ms) \
         FROM dashboard_runs WHERE dim_id IS NOT NULL{when} GROUP BY 1, 2, 3, 4"
    )
}

/// `a` and `b` are the same value, NULLs included.
fn same(backend: DbBackend, a: &str, b: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("{a} IS NOT DISTINCT FROM {b}"),
        _ => format!("{a} IS {b}"),
    }
}

/// The dims row matching the dashboard row `row`.
fn dims_match(backend: DbBackend, row: &str) -> String {
    DIMS.split(", ")
        .map(|column| same(backend, &format!("m.{column}"), &format!("{row}.{column}")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn create_tables(backend: DbBackend) -> Vec<String> {
    let id = match backend {
        DbBackend::Postgres => "BIGSERIAL PRIMARY KEY",
        _ => "INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    vec![
        format!(
            "CREATE TABLE dashboard_dims (id {id}, status VARCHAR NOT NULL, error_code VARCHAR, \
             source_ref TEXT, scenario_ref TEXT, environment TEXT)"
        ),
        "CREATE INDEX dashboard_dims_idx ON dashboard_dims (status, scenario_ref, environment)"
            .to_owned(),
        "CREATE TABLE dashboard_rollups (kind SMALLINT NOT NULL, day BIGINT NOT NULL, \
         left_day BIGINT NOT NULL, dim_id BIGINT NOT NULL, runs BIGINT NOT NULL, \
         tokens DOUBLE PRECISION NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, \
         positive BIGINT NOT NULL, negative BIGINT NOT NULL, duration_sum_ms BIGINT NOT NULL, \
         durations BIGINT NOT NULL, PRIMARY KEY (kind, day, left_day, dim_id))"
            .to_owned(),
        // The queue's rows of runs that left the queue in (or after) a range, or are still in it.
        "CREATE INDEX dashboard_rollups_left_idx ON dashboard_rollups (kind, left_day, day)"
            .to_owned(),
        "ALTER TABLE dashboard_runs ADD COLUMN dim_id BIGINT".to_owned(),
        format!("INSERT INTO dashboard_dims ({DIMS}) SELECT DISTINCT {DIMS} FROM dashboard_runs"),
        format!(
            "UPDATE dashboard_runs SET dim_id = (SELECT MIN(m.id) FROM dashboard_dims m \
             WHERE {})",
            dims_match(backend, "dashboard_runs")
        ),
        // A day's completed runs in duration order (the percentiles' walk), with their dims;
        // on PostgreSQL with the columns an index-only scan needs.
        format!(
            "CREATE INDEX dashboard_runs_duration_idx ON dashboard_runs \
             ((ended_ms / 86400000), (ended_ms - started_ms){}) \
             WHERE status = 'completed' AND started_ms IS NOT NULL",
            match backend {
                DbBackend::Postgres => ") INCLUDE (dim_id, ended_ms, started_ms",
                _ => ", dim_id",
            }
        ),
        // Runs that left the queue at a time (the queue's edge days).
        "CREATE INDEX dashboard_runs_left_idx ON dashboard_runs ((COALESCE(started_ms, ended_ms)))"
            .to_owned(),
        // Signals in a range, without the other events of that range.
        "CREATE INDEX run_events_canonical_type_ts_idx ON run_events_canonical (event_type, ts)"
            .to_owned(),
        backfill(CREATED),
        backfill(ENDED),
        backfill(QUEUE),
    ]
}

fn sqlite_triggers() -> Vec<String> {
    let backend = DbBackend::Sqlite;
    // SQLite cannot set NEW in a trigger: the row's dims are set by an update of the row, which
    // the rollup trigger sees as one more change (taken off, added back).
    let set_dims = format!(
        "INSERT INTO dashboard_dims ({DIMS}) SELECT NEW.status, NEW.error_code, NEW.source_ref, \
            NEW.scenario_ref, NEW.environment \
         WHERE NOT EXISTS (SELECT 1 FROM dashboard_dims m WHERE {matching});
         UPDATE dashboard_runs SET dim_id = (SELECT MIN(m.id) FROM dashboard_dims m \
            WHERE {matching}) WHERE run_id = NEW.run_id;",
        matching = dims_match(backend, "NEW"),
    );
    vec![
        format!(
            "CREATE TRIGGER dashboard_runs_dims_insert AFTER INSERT ON dashboard_runs BEGIN
             {set_dims}
             END"
        ),
        format!(
            "CREATE TRIGGER dashboard_runs_dims_update AFTER UPDATE ON dashboard_runs
             WHEN NEW.status IS NOT OLD.status OR NEW.error_code IS NOT OLD.error_code
                OR NEW.source_ref IS NOT OLD.source_ref OR NEW.scenario_ref IS NOT OLD.scenario_ref
                OR NEW.environment IS NOT OLD.environment
             BEGIN
             {set_dims}
             END"
        ),
        format!(
            "CREATE TRIGGER dashboard_rollups_insert AFTER INSERT ON dashboard_runs BEGIN
             {}
             END",
            apply(backend, &[("NEW", 1)])
        ),
        format!(
            "CREATE TRIGGER dashboard_rollups_update AFTER UPDATE ON dashboard_runs BEGIN
             {}
             END",
            apply(backend, &[("OLD", -1), ("NEW", 1)])
        ),
        format!(
            "CREATE TRIGGER dashboard_rollups_delete AFTER DELETE ON dashboard_runs BEGIN
             {}
             END",
            apply(backend, &[("OLD", -1)])
        ),
    ]
}

/// The transaction-level advisory lock that writers of `dashboard_rollups` take in turn: a
/// group commit changes several runs' rollup rows in one transaction, one statement after
/// another, and without turns two such transactions deadlocked (132 of 200 runs started at once
/// failed with `deadlock detected`).
const ROLLUP_LOCK: i64 = 0x6d61_6370_726f_6c6c; // "macproll"

fn postgres_triggers() -> Vec<String> {
    let backend = DbBackend::Postgres;
    vec![
        format!(
            "CREATE FUNCTION dashboard_runs_dims() RETURNS trigger LANGUAGE plpgsql AS $$
             DECLARE dims BIGINT;
             BEGIN
                SELECT MIN(m.id) INTO dims FROM dashboard_dims m WHERE {matching};
                IF dims IS NULL THEN
                    INSERT INTO dashboard_dims ({DIMS}) VALUES (NEW.status, NEW.error_code,
                        NEW.source_ref, NEW.scenario_ref, NEW.environment) RETURNING id INTO dims;
                END IF;
                NEW.dim_id := dims;
                RETURN NEW;
             END $$",
            matching = dims_match(backend, "NEW"),
        ),
        "CREATE TRIGGER dashboard_runs_dims BEFORE INSERT OR UPDATE OF status, error_code, \
         source_ref, scenario_ref, environment ON dashboard_runs \
         FOR EACH ROW EXECUTE FUNCTION dashboard_runs_dims()"
            .to_owned(),
        rollups_apply_function(),
        "CREATE TRIGGER dashboard_rollups_apply AFTER INSERT OR UPDATE OR DELETE ON dashboard_runs \
         FOR EACH ROW EXECUTE FUNCTION dashboard_rollups_apply()"
            .to_owned(),
    ]
}

/// The PostgreSQL rollup trigger's function (m0011 goes back to it when undone).
pub(super) fn rollups_apply_function() -> String {
    trigger_function(
        "CREATE FUNCTION",
        &format!(
            "-- Rollup rows are shared by every run of a day: transactions that change them
            -- take turns (held to commit), so two can never lock them in opposite orders.
            IF TG_OP <> 'UPDATE' OR OLD IS DISTINCT FROM NEW THEN
                PERFORM pg_advisory_xact_lock({ROLLUP_LOCK});
            END IF;"
        ),
        |rows| apply(DbBackend::Postgres, rows),
    )
}

/// `dashboard_rollups_apply()` made by `create` (`CREATE FUNCTION`, `CREATE OR REPLACE
/// FUNCTION`): `prelude`, then the statement `apply` makes of the row's change.
pub(super) fn trigger_function(
    create: &str,
    prelude: &str,
    apply: impl Fn(&[(&str, i32)]) -> String,
) -> String {
    format!(
        "{create} dashboard_rollups_apply() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
            {prelude}
            IF TG_OP = 'INSERT' THEN
                {}
            ELSIF TG_OP = 'UPDATE' THEN
                {}
            ELSE
                {}
            END IF;
            RETURN NULL;
         END $$",
        apply(&[("NEW", 1)]),
        apply(&[("OLD", -1), ("NEW", 1)]),
        apply(&[("OLD", -1)])
    )
}

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS dashboard_rollups_delete",
    "DROP TRIGGER IF EXISTS dashboard_rollups_update",
    "DROP TRIGGER IF EXISTS dashboard_rollups_insert",
    "DROP TRIGGER IF EXISTS dashboard_runs_dims_update",
    "DROP TRIGGER IF EXISTS dashboard_runs_dims_insert",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS dashboard_rollups_apply ON dashboard_runs",
    "DROP TRIGGER IF EXISTS dashboard_runs_dims ON dashboard_runs",
    "DROP FUNCTION IF EXISTS dashboard_rollups_apply()",
    "DROP FUNCTION IF EXISTS dashboard_runs_dims()",
];

const COMMON_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS run_events_canonical_type_ts_idx",
    "DROP INDEX IF EXISTS dashboard_runs_left_idx",
    "DROP INDEX IF EXISTS dashboard_runs_duration_idx",
    "ALTER TABLE dashboard_runs DROP COLUMN dim_id",
    "DROP TABLE IF EXISTS dashboard_rollups",
    "DROP TABLE IF EXISTS dashboard_dims",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let triggers = match backend {
            DbBackend::Postgres => postgres_triggers(),
            _ => sqlite_triggers(),
        };
        let connection = manager.get_connection();
        for statement in create_tables(backend).iter().chain(&triggers) {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let down = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        let connection = manager.get_connection();
        for statement in down.iter().chain(COMMON_DOWN) {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
