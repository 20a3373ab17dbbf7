//! Webhooks: subscriptions, the outbox (one row per run status change a webhook may want,
//! written in the transaction of that change) and the deliveries the outbox fans out to, one per
//! subscribed webhook, each retried until delivered or out of attempts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    Url,
    Events,
    Secret,
    Active,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookOutbox {
    Table,
    Id,
    Event,
    RunId,
    Payload,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    OutboxId,
    Event,
    RunId,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LastAttemptAt,
    ResponseStatus,
    ErrorMessage,
    CreatedAt,
    DeliveredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Webhooks::Table)
                    .if_not_exists()
                    .col(string(Webhooks::Id).primary_key())
                    .col(text(Webhooks::Url))
                    .col(json_binary(Webhooks::Events))
                    .col(text(Webhooks::Secret))
                    .col(boolean(Webhooks::Active))
                    .col(string_null(Webhooks::CreatedBy))
                    .col(timestamp_with_time_zone(Webhooks::CreatedAt))
                    .col(timestamp_with_time_zone(Webhooks::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookOutbox::Table)
                    .if_not_exists()
                    .col(string(WebhookOutbox::Id).primary_key())
                    .col(string(WebhookOutbox::Event))
                    // No foreign key: a notification outlives the run it is about.
                    .col(string(WebhookOutbox::RunId))
                    // The JSON body as sent, byte for byte (it is what the signature covers).
                    .col(text(WebhookOutbox::Payload))
                    .col(timestamp_with_time_zone(WebhookOutbox::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .if_not_exists()
                    .col(string(WebhookDeliveries::Id).primary_key())
                    .col(string(WebhookDeliveries::WebhookId))
                    .col(string(WebhookDeliveries::OutboxId))
                    .col(string(WebhookDeliveries::Event))
                    .col(string(WebhookDeliveries::RunId))
                    .col(text(WebhookDeliveries::Payload))
                    .col(string(WebhookDeliveries::Status))
                    .col(integer(WebhookDeliveries::Attempts))
                    .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::LastAttemptAt,
                    ))
                    .col(integer_null(WebhookDeliveries::ResponseStatus))
                    .col(text_null(WebhookDeliveries::ErrorMessage))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::DeliveredAt,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("webhook_deliveries_webhook_fk")
                            .from(WebhookDeliveries::Table, WebhookDeliveries::WebhookId)
                            .to(Webhooks::Table, Webhooks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A notification becomes one delivery per webhook, however many processes fan it out.
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_once_idx")
                    .if_not_exists()
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::WebhookId)
                    .col(WebhookDeliveries::OutboxId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The worker's question: which pending deliveries are due.
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_due_idx")
                    .if_not_exists()
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_outbox_created_at_idx")
                    .if_not_exists()
                    .table(WebhookOutbox::Table)
                    .col(WebhookOutbox::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookDeliveries::Table.into_iden(),
            WebhookOutbox::Table.into_iden(),
            Webhooks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
