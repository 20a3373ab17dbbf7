//! PostgreSQL keeps each run's projection uncompressed. Every append rewrites the whole
//! projection; compressing it each time (TOAST's pglz) cost more CPU than the database spent on
//! anything else in the write path, to save I/O that a write-ahead log absorbs easily. SQLite
//! never compresses: nothing to do there.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_storage(manager, "EXTERNAL").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_storage(manager, "EXTENDED").await
    }
}

/// The projection column's TOAST strategy: EXTERNAL (out of line, uncompressed) or EXTENDED
/// (PostgreSQL's default, compressed).
async fn set_storage(manager: &SchemaManager<'_>, storage: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "ALTER TABLE run_projections ALTER COLUMN state SET STORAGE {storage}"
        ))
        .await
        .map(|_| ())
}
