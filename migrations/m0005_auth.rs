//! Caller identity: API keys managed through the admin API (stored as SHA-256 digests), the
//! audit log, and the authenticated actor who created each run.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Actor,
    Roles,
    Participants,
    Digest,
    Prefix,
    CreatedBy,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    Actor,
    ActorType,
    Action,
    Resource,
    ResourceId,
    Outcome,
    ErrorCode,
    RequestId,
    Details,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    CreatedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(string(ApiKeys::Id).primary_key())
                    .col(string(ApiKeys::Actor))
                    .col(json_binary(ApiKeys::Roles))
                    .col(json_binary(ApiKeys::Participants))
                    .col(string(ApiKeys::Digest).unique_key())
                    .col(string(ApiKeys::Prefix))
                    .col(string_null(ApiKeys::CreatedBy))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .if_not_exists()
                    .col(string(AuditLog::Id).primary_key())
                    .col(string(AuditLog::Actor))
                    .col(string(AuditLog::ActorType))
                    .col(string(AuditLog::Action))
                    .col(string(AuditLog::Resource))
                    .col(string_null(AuditLog::ResourceId))
                    .col(string(AuditLog::Outcome))
                    .col(string_null(AuditLog::ErrorCode))
                    .col(string_null(AuditLog::RequestId))
                    .col(json_binary(AuditLog::Details))
                    .col(timestamp_with_time_zone(AuditLog::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("audit_log_created_at_idx", AuditLog::CreatedAt),
            ("audit_log_actor_idx", AuditLog::Actor),
            ("audit_log_action_idx", AuditLog::Action),
            ("audit_log_resource_id_idx", AuditLog::ResourceId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .if_not_exists()
                        .table(AuditLog::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(string_null(Runs::CreatedBy))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::CreatedBy)
                    .to_owned(),
            )
            .await?;
        for table in [AuditLog::Table.into_iden(), ApiKeys::Table.into_iden()] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
