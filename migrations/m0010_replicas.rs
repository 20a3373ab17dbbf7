//! Several replicas on one PostgreSQL (`CLUSTER_ENABLED`): each replica's lease (renewed by
//! its heartbeat), the replica that owns each active run, and the calls one replica hands to
//! the owner of a run. Created on SQLite too (one schema), where nothing uses them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    OwnerReplica,
}

#[derive(DeriveIden)]
enum Replicas {
    Table,
    Id,
    StartedAt,
    HeartbeatAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ReplicaCalls {
    Table,
    Id,
    Replica,
    Caller,
    RunId,
    Call,
    Answer,
    CreatedAt,
    TakenAt,
    AnsweredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(string_null(Runs::OwnerReplica))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_runs_owner_replica")
                    .table(Runs::Table)
                    .col(Runs::OwnerReplica)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Replicas::Table)
                    .if_not_exists()
                    .col(string(Replicas::Id).primary_key())
                    .col(timestamp_with_time_zone(Replicas::StartedAt))
                    .col(timestamp_with_time_zone(Replicas::HeartbeatAt))
                    .col(timestamp_with_time_zone(Replicas::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ReplicaCalls::Table)
                    .if_not_exists()
                    .col(string(ReplicaCalls::Id).primary_key())
                    // The replica asked to run the call (the run's owner when it was made).
                    .col(string(ReplicaCalls::Replica))
                    .col(string(ReplicaCalls::Caller))
                    .col(string(ReplicaCalls::RunId))
                    .col(json_binary(ReplicaCalls::Call))
                    .col(json_binary_null(ReplicaCalls::Answer))
                    .col(timestamp_with_time_zone(ReplicaCalls::CreatedAt))
                    .col(timestamp_with_time_zone_null(ReplicaCalls::TakenAt))
                    .col(timestamp_with_time_zone_null(ReplicaCalls::AnsweredAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ReplicaCalls::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Replicas::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_runs_owner_replica")
                    .table(Runs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::OwnerReplica)
                    .to_owned(),
            )
            .await
    }
}
