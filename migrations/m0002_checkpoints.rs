//! Projection checkpoints: the projection at some seqs of a run, so the state at any seq is a
//! short fold from the nearest checkpoint instead of a fold over the whole history.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunProjectionCheckpoints {
    Table,
    RunId,
    Seq,
    State,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunProjectionCheckpoints::Table)
                    .if_not_exists()
                    .col(string(RunProjectionCheckpoints::RunId))
                    .col(big_integer(RunProjectionCheckpoints::Seq))
                    .col(json_binary(RunProjectionCheckpoints::State))
                    .primary_key(
                        Index::create()
                            .col(RunProjectionCheckpoints::RunId)
                            .col(RunProjectionCheckpoints::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                RunProjectionCheckpoints::Table,
                                RunProjectionCheckpoints::RunId,
                            )
                            .to(Runs::Table, Runs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(RunProjectionCheckpoints::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
