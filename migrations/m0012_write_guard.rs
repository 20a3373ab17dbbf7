//! PostgreSQL: `macp_refuse()`, which fails the transaction it runs in with SQLSTATE `MC409`.
//! A group commit (`store::group`) sends its compare-and-sets, its rows and its `COMMIT` as one
//! script; a compare-and-set that matched no row calls it, and the script stops there. Called
//! only then, it costs the writes that hold nothing (a `DO` block around the compare-and-sets
//! did the same, for PostgreSQL's time compiling it on every group: at 3,000 messages/s on one
//! replica, 2,665 observed/s against 2,892). SQLite counts changed rows instead.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE OR REPLACE FUNCTION macp_refuse() RETURNS boolean LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'a run was written concurrently' USING ERRCODE = 'MC409'; END $$",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("DROP FUNCTION IF EXISTS macp_refuse()")
            .await?;
        Ok(())
    }
}
