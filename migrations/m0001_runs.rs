//! Runs, their runtime sessions, raw and canonical events, and projections.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    Status,
    Mode,
    RuntimeKind,
    RuntimeVersion,
    RuntimeSessionId,
    TraceId,
    IdempotencyKey,
    LastEventSeq,
    SourceKind,
    SourceRef,
    Tags,
    Metadata,
    ErrorCode,
    ErrorMessage,
    CreatedAt,
    StartedAt,
    EndedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RuntimeSessions {
    Table,
    RunId,
    RuntimeSessionId,
    ModeName,
    ModeVersion,
    ConfigurationVersion,
    PolicyVersion,
    Initiator,
    SessionState,
    LastOrdinal,
    Participants,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RunEventsRaw {
    Table,
    RunId,
    Seq,
    Ts,
    Kind,
    Ordinal,
    Payload,
}

#[derive(DeriveIden)]
enum RunEventsCanonical {
    Table,
    RunId,
    Seq,
    Id,
    Ts,
    EventType,
    SubjectKind,
    SubjectId,
    SourceKind,
    SourceName,
    RawType,
    TraceId,
    SpanId,
    ParentSpanId,
    SchemaVersion,
    Data,
}

#[derive(DeriveIden)]
enum RunProjections {
    Table,
    RunId,
    Version,
    SchemaVersion,
    State,
    UpdatedAt,
}

fn run_fk(
    table: impl IntoIden + 'static,
    column: impl IntoIden + 'static,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Runs::Table, Runs::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .if_not_exists()
                    .col(string(Runs::Id).primary_key())
                    .col(string(Runs::Status))
                    .col(string(Runs::Mode))
                    .col(string(Runs::RuntimeKind))
                    .col(string_null(Runs::RuntimeVersion))
                    .col(string_null(Runs::RuntimeSessionId).unique_key())
                    .col(string_null(Runs::TraceId))
                    .col(string_null(Runs::IdempotencyKey).unique_key())
                    .col(big_integer(Runs::LastEventSeq).default(0))
                    .col(string_null(Runs::SourceKind))
                    .col(text_null(Runs::SourceRef))
                    .col(json_binary(Runs::Tags))
                    .col(json_binary(Runs::Metadata))
                    .col(string_null(Runs::ErrorCode))
                    .col(text_null(Runs::ErrorMessage))
                    .col(timestamp_with_time_zone(Runs::CreatedAt))
                    .col(timestamp_with_time_zone_null(Runs::StartedAt))
                    .col(timestamp_with_time_zone_null(Runs::EndedAt))
                    .col(timestamp_with_time_zone(Runs::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("runs_status_idx", Runs::Status),
            ("runs_created_at_idx", Runs::CreatedAt),
            ("runs_updated_at_idx", Runs::UpdatedAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .if_not_exists()
                        .table(Runs::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(RuntimeSessions::Table)
                    .if_not_exists()
                    .col(string(RuntimeSessions::RunId).primary_key())
                    .col(string(RuntimeSessions::RuntimeSessionId).unique_key())
                    .col(string(RuntimeSessions::ModeName))
                    .col(string(RuntimeSessions::ModeVersion))
                    .col(string(RuntimeSessions::ConfigurationVersion))
                    .col(string_null(RuntimeSessions::PolicyVersion))
                    .col(string(RuntimeSessions::Initiator))
                    .col(string(RuntimeSessions::SessionState))
                    .col(big_integer(RuntimeSessions::LastOrdinal).default(0))
                    .col(json_binary(RuntimeSessions::Participants))
                    .col(timestamp_with_time_zone(RuntimeSessions::CreatedAt))
                    .col(timestamp_with_time_zone(RuntimeSessions::UpdatedAt))
                    .foreign_key(&mut run_fk(RuntimeSessions::Table, RuntimeSessions::RunId))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RunEventsRaw::Table)
                    .if_not_exists()
                    .col(string(RunEventsRaw::RunId))
                    .col(big_integer(RunEventsRaw::Seq))
                    .col(timestamp_with_time_zone(RunEventsRaw::Ts))
                    .col(string(RunEventsRaw::Kind))
                    .col(big_integer_null(RunEventsRaw::Ordinal))
                    .col(json_binary(RunEventsRaw::Payload))
                    .primary_key(
                        Index::create()
                            .col(RunEventsRaw::RunId)
                            .col(RunEventsRaw::Seq),
                    )
                    .foreign_key(&mut run_fk(RunEventsRaw::Table, RunEventsRaw::RunId))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RunEventsCanonical::Table)
                    .if_not_exists()
                    .col(string(RunEventsCanonical::RunId))
                    .col(big_integer(RunEventsCanonical::Seq))
                    .col(string(RunEventsCanonical::Id))
                    .col(timestamp_with_time_zone(RunEventsCanonical::Ts))
                    .col(string(RunEventsCanonical::EventType))
                    .col(string_null(RunEventsCanonical::SubjectKind))
                    .col(string_null(RunEventsCanonical::SubjectId))
                    .col(string(RunEventsCanonical::SourceKind))
                    .col(string(RunEventsCanonical::SourceName))
                    .col(string_null(RunEventsCanonical::RawType))
                    .col(string_null(RunEventsCanonical::TraceId))
                    .col(string_null(RunEventsCanonical::SpanId))
                    .col(string_null(RunEventsCanonical::ParentSpanId))
                    .col(integer(RunEventsCanonical::SchemaVersion))
                    .col(json_binary(RunEventsCanonical::Data))
                    .primary_key(
                        Index::create()
                            .col(RunEventsCanonical::RunId)
                            .col(RunEventsCanonical::Seq),
                    )
                    .foreign_key(&mut run_fk(
                        RunEventsCanonical::Table,
                        RunEventsCanonical::RunId,
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "run_events_canonical_type_idx",
                vec![RunEventsCanonical::EventType],
            ),
            ("run_events_canonical_ts_idx", vec![RunEventsCanonical::Ts]),
        ] {
            let mut index = Index::create();
            index
                .name(name)
                .if_not_exists()
                .table(RunEventsCanonical::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(RunProjections::Table)
                    .if_not_exists()
                    .col(string(RunProjections::RunId).primary_key())
                    .col(big_integer(RunProjections::Version))
                    .col(integer(RunProjections::SchemaVersion))
                    .col(json_binary(RunProjections::State))
                    .col(timestamp_with_time_zone(RunProjections::UpdatedAt))
                    .foreign_key(&mut run_fk(RunProjections::Table, RunProjections::RunId))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RunProjections::Table.into_iden(),
            RunEventsCanonical::Table.into_iden(),
            RunEventsRaw::Table.into_iden(),
            RuntimeSessions::Table.into_iden(),
            Runs::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
