//! The dashboard's aggregates over many runs. A run's tokens, cost and decision outcome live in
//! its projection document; reading them out of 100,000 documents per overview is far too slow,
//! so the database keeps them beside the document as generated columns, computed when the row is
//! written (the writers stay as they are). SQLite cannot add a stored generated column to a
//! table, so there the table is rebuilt with them. Plus the indexes the overview's range scans
//! use.

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
    CreatedAt,
    EndedAt,
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
        match manager.get_database_backend() {
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
        // Covering: the overview joins runs to these figures without reading documents.
        let mut covering = Index::create();
        covering
            .name("run_projections_figures_idx")
            .table(RunProjections::Table)
            .col(RunProjections::RunId);
        for (column, ..) in figures() {
            covering.col(column);
        }
        manager.create_index(covering.to_owned()).await?;
        for (name, columns) in [
            ("runs_ended_at_idx", vec![Runs::EndedAt]),
            ("runs_created_at_id_idx", vec![Runs::CreatedAt, Runs::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Runs::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [
            ("runs_created_at_id_idx", Runs::Table.into_iden()),
            ("runs_ended_at_idx", Runs::Table.into_iden()),
            (
                "run_projections_figures_idx",
                RunProjections::Table.into_iden(),
            ),
        ] {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        // SQLite (3.35+) drops a generated column that no index uses.
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
