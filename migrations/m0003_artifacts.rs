//! Run artifacts: traces, reports, logs and bundles attached to a run, inline or by URI.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunArtifacts {
    Table,
    Id,
    RunId,
    Kind,
    Label,
    Uri,
    Inline,
    CreatedAt,
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
                    .table(RunArtifacts::Table)
                    .if_not_exists()
                    .col(string(RunArtifacts::Id).primary_key())
                    .col(string(RunArtifacts::RunId))
                    .col(string(RunArtifacts::Kind))
                    .col(string(RunArtifacts::Label))
                    .col(text_null(RunArtifacts::Uri))
                    .col(json_binary_null(RunArtifacts::Inline))
                    .col(timestamp_with_time_zone(RunArtifacts::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RunArtifacts::Table, RunArtifacts::RunId)
                            .to(Runs::Table, Runs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("run_artifacts_run_id_idx")
                    .if_not_exists()
                    .table(RunArtifacts::Table)
                    .col(RunArtifacts::RunId)
                    .col(RunArtifacts::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(RunArtifacts::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
