//! The dashboard's aggregates over many runs. Reading them from `runs` and the projection
//! documents costs too much per run (text times to parse, a JSON document per run), so:
//! - a run's tokens, cost and decision outcome are kept beside its projection document as
//!   generated columns, computed when the row is written (SQLite cannot add a stored generated
//!   column to a table, so there the table is rebuilt with them);
//! - `dashboard_runs` holds one narrow row per run (times as Unix milliseconds, status, error
//!   code, scenario, environment and those figures), kept by triggers on `runs` and
//!   `run_projections`, so no writer changes and the overview scans integers only.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunProjections {
    Table,
    RunId,
    Version,
    SchemaVersion,
    State,
    UpdatedAt,
    TotalTokens,
    CostUsd,
    OutcomePositive,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
}

/// SQLite's table while it is rebuilt.
const SQLITE_NEW_TABLE: &str = "run_projections_dashboard";

/// The generated columns: (column, SQL type, PostgreSQL expression, SQLite expression). A value
/// that is not a number (or a finalized decision's true/false) is NULL, never an error.
fn figures() -> [(RunProjections, &'static str, &'static str, &'static str); 3] {
    [
        (
            RunProjections::TotalTokens,
            "double precision",
            "CASE WHEN jsonb_typeof(state #> '{llm,totals,totalTokens}') = 'number' \
             THEN (state #>> '{llm,totals,totalTokens}')::double precision END",
            "CASE WHEN json_type(state, '$.llm.totals.totalTokens') IN ('integer', 'real') \
             THEN json_extract(state, '$.llm.totals.totalTokens') END",
        ),
        (
            RunProjections::CostUsd,
            "double precision",
            "CASE WHEN jsonb_typeof(state #> '{llm,totals,estimatedCostUsd}') = 'number' \
             THEN (state #>> '{llm,totals,estimatedCostUsd}')::double precision END",
            "CASE WHEN json_type(state, '$.llm.totals.estimatedCostUsd') IN ('integer', 'real') \
             THEN json_extract(state, '$.llm.totals.estimatedCostUsd') END",
        ),
        // 1 positive, 0 negative, NULL while no decision is finalized or it has no outcome.
        (
            RunProjections::OutcomePositive,
            "integer",
            "CASE WHEN state #> '{decision,current,finalized}' = 'true'::jsonb \
             THEN CASE state #> '{decision,current,outcomePositive}' \
             WHEN 'true'::jsonb THEN 1 WHEN 'false'::jsonb THEN 0 END END",
            "CASE WHEN json_type(state, '$.decision.current.finalized') = 'true' \
             THEN CASE json_type(state, '$.decision.current.outcomePositive') \
             WHEN 'true' THEN 1 WHEN 'false' THEN 0 END END",
        ),
    ]
}

fn generated(column: RunProjections, sql_type: &str, expression: &str) -> ColumnDef {
    ColumnDef::new(column)
        .custom(Alias::new(sql_type))
        .extra(format!("GENERATED ALWAYS AS ({expression}) STORED"))
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        match backend {
            DbBackend::Postgres => {
                for (column, sql_type, expression, _) in figures() {
                    manager
                        .alter_table(
                            Table::alter()
                                .table(RunProjections::Table)
                                .add_column(generated(column, sql_type, expression))
                                .to_owned(),
                        )
                        .await?;
                }
            }
            _ => rebuild_sqlite_projections(manager).await?,
        }
        let connection = manager.get_connection();
        let statements = match backend {
            DbBackend::Postgres => POSTGRES_DASHBOARD_RUNS,
            _ => SQLITE_DASHBOARD_RUNS,
        };
        for statement in statements {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        let statements = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        for statement in statements {
            connection.execute_unprepared(statement).await?;
        }
        for (column, ..) in figures() {
            manager
                .alter_table(
                    Table::alter()
                        .table(RunProjections::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// One narrow row per run: its times as Unix milliseconds, what the filters match, its figures.
const TABLE: &str = "CREATE TABLE dashboard_runs (
    run_id VARCHAR NOT NULL PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    ended_ms BIGINT,
    status VARCHAR NOT NULL,
    error_code VARCHAR,
    source_ref TEXT,
    scenario_ref TEXT,
    environment TEXT,
    total_tokens DOUBLE PRECISION,
    cost_usd DOUBLE PRECISION,
    outcome_positive INTEGER)";

const SQLITE_DASHBOARD_RUNS: &[&str] = &[
    TABLE,
    "CREATE INDEX dashboard_runs_created_idx ON dashboard_runs (created_ms)",
    "CREATE INDEX dashboard_runs_ended_idx ON dashboard_runs (ended_ms)",
    "CREATE TRIGGER dashboard_runs_insert AFTER INSERT ON runs BEGIN
        INSERT INTO dashboard_runs (run_id, created_ms, started_ms, ended_ms, status, error_code,
            source_ref, scenario_ref, environment)
        VALUES (NEW.id, CAST(ROUND(unixepoch(NEW.created_at, 'subsec') * 1000) AS INTEGER),
            CAST(ROUND(unixepoch(NEW.started_at, 'subsec') * 1000) AS INTEGER),
            CAST(ROUND(unixepoch(NEW.ended_at, 'subsec') * 1000) AS INTEGER),
            NEW.status, NEW.error_code, NEW.source_ref,
            json_extract(NEW.metadata, '$.scenarioRef'), json_extract(NEW.metadata, '$.environment'));
    END",
    // Runs are updated on every append (their last seq); their row here only when it changes.
    "CREATE TRIGGER dashboard_runs_update AFTER UPDATE ON runs
        WHEN NEW.status IS NOT OLD.status OR NEW.started_at IS NOT OLD.started_at
            OR NEW.ended_at IS NOT OLD.ended_at OR NEW.error_code IS NOT OLD.error_code
            OR NEW.source_ref IS NOT OLD.source_ref OR NEW.metadata IS NOT OLD.metadata
    BEGIN
        UPDATE dashboard_runs SET
            started_ms = CAST(ROUND(unixepoch(NEW.started_at, 'subsec') * 1000) AS INTEGER),
            ended_ms = CAST(ROUND(unixepoch(NEW.ended_at, 'subsec') * 1000) AS INTEGER),
            status = NEW.status, error_code = NEW.error_code, source_ref = NEW.source_ref,
            scenario_ref = json_extract(NEW.metadata, '$.scenarioRef'),
            environment = json_extract(NEW.metadata, '$.environment')
        WHERE run_id = NEW.id;
    END",
    // The run's delete removes its rows itself (it cannot count on SQLite's foreign-key pragma).
    "CREATE TRIGGER dashboard_runs_delete AFTER DELETE ON runs BEGIN
        DELETE FROM dashboard_runs WHERE run_id = OLD.id;
    END",
    "CREATE TRIGGER dashboard_runs_projection_insert AFTER INSERT ON run_projections BEGIN
        UPDATE dashboard_runs SET total_tokens = NEW.total_tokens, cost_usd = NEW.cost_usd,
            outcome_positive = NEW.outcome_positive WHERE run_id = NEW.run_id;
    END",
    // Every append rewrites the projection; the figures rarely change.
    "CREATE TRIGGER dashboard_runs_projection_update AFTER UPDATE ON run_projections
        WHEN NEW.total_tokens IS NOT OLD.total_tokens OR NEW.cost_usd IS NOT OLD.cost_usd
            OR NEW.outcome_positive IS NOT OLD.outcome_positive
    BEGIN
        UPDATE dashboard_runs SET total_tokens = NEW.total_tokens, cost_usd = NEW.cost_usd,
            outcome_positive = NEW.outcome_positive WHERE run_id = NEW.run_id;
    END",
    "INSERT INTO dashboard_runs (run_id, created_ms, started_ms, ended_ms, status, error_code,
        source_ref, scenario_ref, environment, total_tokens, cost_usd, outcome_positive)
     SELECT r.id, CAST(ROUND(unixepoch(r.created_at, 'subsec') * 1000) AS INTEGER),
        CAST(ROUND(unixepoch(r.started_at, 'subsec') * 1000) AS INTEGER),
        CAST(ROUND(unixepoch(r.ended_at, 'subsec') * 1000) AS INTEGER),
        r.status, r.error_code, r.source_ref, json_extract(r.metadata, '$.scenarioRef'),
        json_extract(r.metadata, '$.environment'), p.total_tokens, p.cost_usd, p.outcome_positive
     FROM runs r LEFT JOIN run_projections p ON p.run_id = r.id",
];

const POSTGRES_DASHBOARD_RUNS: &[&str] = &[
    TABLE,
    "CREATE INDEX dashboard_runs_created_idx ON dashboard_runs (created_ms)",
    "CREATE INDEX dashboard_runs_ended_idx ON dashboard_runs (ended_ms)",
    "CREATE FUNCTION dashboard_runs_from_run() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        INSERT INTO dashboard_runs (run_id, created_ms, started_ms, ended_ms, status, error_code,
            source_ref, scenario_ref, environment)
        VALUES (NEW.id, ROUND(EXTRACT(EPOCH FROM NEW.created_at) * 1000)::bigint,
            ROUND(EXTRACT(EPOCH FROM NEW.started_at) * 1000)::bigint,
            ROUND(EXTRACT(EPOCH FROM NEW.ended_at) * 1000)::bigint,
            NEW.status, NEW.error_code, NEW.source_ref, NEW.metadata ->> 'scenarioRef',
            NEW.metadata ->> 'environment')
        ON CONFLICT (run_id) DO UPDATE SET started_ms = EXCLUDED.started_ms,
            ended_ms = EXCLUDED.ended_ms, status = EXCLUDED.status,
            error_code = EXCLUDED.error_code, source_ref = EXCLUDED.source_ref,
            scenario_ref = EXCLUDED.scenario_ref, environment = EXCLUDED.environment;
        RETURN NULL;
     END $$",
    "CREATE TRIGGER dashboard_runs_run_insert AFTER INSERT ON runs
        FOR EACH ROW EXECUTE FUNCTION dashboard_runs_from_run()",
    // Runs are updated on every append (their last seq); their row here only when it changes.
    "CREATE TRIGGER dashboard_runs_run_update AFTER UPDATE ON runs
        FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
            OR NEW.started_at IS DISTINCT FROM OLD.started_at
            OR NEW.ended_at IS DISTINCT FROM OLD.ended_at
            OR NEW.error_code IS DISTINCT FROM OLD.error_code
            OR NEW.source_ref IS DISTINCT FROM OLD.source_ref
            OR NEW.metadata IS DISTINCT FROM OLD.metadata)
        EXECUTE FUNCTION dashboard_runs_from_run()",
    "CREATE FUNCTION dashboard_runs_from_projection() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        UPDATE dashboard_runs SET total_tokens = NEW.total_tokens, cost_usd = NEW.cost_usd,
            outcome_positive = NEW.outcome_positive WHERE run_id = NEW.run_id;
        RETURN NULL;
     END $$",
    "CREATE TRIGGER dashboard_runs_projection_insert AFTER INSERT ON run_projections
        FOR EACH ROW EXECUTE FUNCTION dashboard_runs_from_projection()",
    // Every append rewrites the projection; the figures rarely change.
    "CREATE TRIGGER dashboard_runs_projection_update AFTER UPDATE ON run_projections
        FOR EACH ROW WHEN (NEW.total_tokens IS DISTINCT FROM OLD.total_tokens
            OR NEW.cost_usd IS DISTINCT FROM OLD.cost_usd
            OR NEW.outcome_positive IS DISTINCT FROM OLD.outcome_positive)
        EXECUTE FUNCTION dashboard_runs_from_projection()",
    "INSERT INTO dashboard_runs (run_id, created_ms, started_ms, ended_ms, status, error_code,
        source_ref, scenario_ref, environment, total_tokens, cost_usd, outcome_positive)
     SELECT r.id, ROUND(EXTRACT(EPOCH FROM r.created_at) * 1000)::bigint,
        ROUND(EXTRACT(EPOCH FROM r.started_at) * 1000)::bigint,
        ROUND(EXTRACT(EPOCH FROM r.ended_at) * 1000)::bigint,
        r.status, r.error_code, r.source_ref, r.metadata ->> 'scenarioRef',
        r.metadata ->> 'environment', p.total_tokens, p.cost_usd, p.outcome_positive
     FROM runs r LEFT JOIN run_projections p ON p.run_id = r.id",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS dashboard_runs_projection_update",
    "DROP TRIGGER IF EXISTS dashboard_runs_projection_insert",
    "DROP TRIGGER IF EXISTS dashboard_runs_delete",
    "DROP TRIGGER IF EXISTS dashboard_runs_update",
    "DROP TRIGGER IF EXISTS dashboard_runs_insert",
    "DROP TABLE IF EXISTS dashboard_runs",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS dashboard_runs_projection_update ON run_projections",
    "DROP TRIGGER IF EXISTS dashboard_runs_projection_insert ON run_projections",
    "DROP TRIGGER IF EXISTS dashboard_runs_run_update ON runs",
    "DROP TRIGGER IF EXISTS dashboard_runs_run_insert ON runs",
    "DROP FUNCTION IF EXISTS dashboard_runs_from_projection()",
    "DROP FUNCTION IF EXISTS dashboard_runs_from_run()",
    "DROP TABLE IF EXISTS dashboard_runs",
];

/// Rebuilds `run_projections` with the generated columns: a new table as m0001 made it plus
/// them, the rows copied, the old table dropped and the new one renamed. One batch in one
/// transaction, so every step runs on the same connection and a failure leaves the old table.
async fn rebuild_sqlite_projections(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let new_table = Alias::new(SQLITE_NEW_TABLE);
    let mut table = Table::create();
    table
        .table(new_table.clone())
        .col(string(RunProjections::RunId).primary_key())
        .col(big_integer(RunProjections::Version))
        .col(integer(RunProjections::SchemaVersion))
        .col(json_binary(RunProjections::State))
        .col(timestamp_with_time_zone(RunProjections::UpdatedAt))
        .foreign_key(
            ForeignKey::create()
                .from(new_table.clone(), RunProjections::RunId)
                .to(Runs::Table, Runs::Id)
                .on_delete(ForeignKeyAction::Cascade),
        );
    for (column, sql_type, _, expression) in figures() {
        table.col(generated(column, sql_type, expression));
    }
    let create = table.to_string(SqliteQueryBuilder);
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "BEGIN; {create}; \
             INSERT INTO {SQLITE_NEW_TABLE} (run_id, version, schema_version, state, updated_at) \
             SELECT run_id, version, schema_version, state, updated_at FROM run_projections; \
             DROP TABLE run_projections; \
             ALTER TABLE {SQLITE_NEW_TABLE} RENAME TO run_projections; COMMIT;"
        ))
        .await
        .map(|_| ())
}
