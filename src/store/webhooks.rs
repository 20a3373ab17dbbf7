//! Webhook rows: subscriptions, the outbox (written in the transaction of the run event it
//! announces) and the deliveries the worker fans it out to and attempts.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, OnConflict, Order, Query, WindowStatement};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, ExprTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement, TransactionTrait,
};
use serde_json::{Value, json};

use super::entities::{webhook, webhook_delivery, webhook_outbox};
use super::{Error, Store, audit_insert, strings};
use crate::domain::audit::AuditEntry;
use crate::domain::status::RunStatus;
use crate::domain::webhook::{
    DeliveryFilter, DeliveryPage, DeliveryStats, DeliveryStatus, EVENTS, SIGNAL_EVENT, Webhook,
    WebhookDelivery, subscribes,
};
use crate::events::canonical::CanonicalEvent;
use crate::time::{self, Timestamp};

/// A subscription to store.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
}

/// The fields an update sets (the others stay).
#[derive(Debug, Clone, Default)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub active: Option<bool>,
}

/// A delivery the worker has claimed for one attempt, with where and how to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub url: String,
    pub secret: String,
    pub payload: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub status: DeliveryStatus,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    /// When a still pending delivery is attempted again.
    pub next_attempt_at: Timestamp,
}

/// The outbox rows of an append: one per event a webhook can subscribe to, in one INSERT. A
/// lifecycle event counts only in the append that changes the run's status; a signal always.
/// An ordinary append writes none, at the cost of comparing its event types.
pub(super) fn outbox_insert(
    backend: DbBackend,
    run_id: &str,
    status_changed: bool,
    events: &[CanonicalEvent],
) -> Option<Statement> {
    let rows: Vec<webhook_outbox::ActiveModel> = events
        .iter()
        .filter(|event| {
            let kind = event.event_type.as_str();
            if kind == SIGNAL_EVENT {
                return true;
            }
            status_changed && EVENTS.contains(&kind)
        })
        .map(|event| {
            let id = uuid::Uuid::new_v4().to_string();
            // The body of every delivery of it, rendered once: the signature covers these bytes.
            let mut payload = json!({
                "id": id,
                "event": event.event_type,
                "runId": run_id,
                "timestamp": time::format(&event.ts),
                "data": event.data,
            });
            // A signal leaves the run's status as it was, so it reports none.
            if event.event_type != SIGNAL_EVENT {
                payload["status"] = json!(status_after(&event.event_type));
            }
            webhook_outbox::ActiveModel {
                id: Set(id),
                event: Set(event.event_type.clone()),
                run_id: Set(run_id.to_owned()),
                payload: Set(payload.to_string()),
                created_at: Set(time::now()),
            }
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    Some(webhook_outbox::Entity::insert_many(rows).build(backend))
}

/// The run status a lifecycle event leaves the run in.
fn status_after(event: &str) -> &'static str {
    let status = match event {
        "run.completed" => RunStatus::Completed,
        "run.failed" => RunStatus::Failed,
        "run.cancelled" => RunStatus::Cancelled,
        "run.suspended" => RunStatus::Suspended,
        _ => RunStatus::Running,
    };
    status.as_str()
}

impl Store {
    /// Woken after a commit that wrote outbox rows: the delivery worker waits on it.
    pub fn webhook_outbox_written(&self) -> &tokio::sync::Notify {
        &self.webhook_outbox
    }

    pub async fn create_webhook(
        &self,
        new: NewWebhook,
        audit: Option<AuditEntry>,
    ) -> Result<(), Error> {
        let backend = self.backend();
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        webhook::Entity::insert(webhook::ActiveModel {
            id: Set(new.id),
            url: Set(new.url),
            events: Set(json!(new.events)),
            secret: Set(new.secret),
            active: Set(true),
            created_by: Set(new.created_by),
            created_at: Set(new.created_at),
            updated_at: Set(new.created_at),
        })
        .exec_without_returning(&txn)
        .await?;
        if let Some(entry) = audit {
            txn.execute_raw(audit_insert(backend, entry)).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Every subscription, oldest first, with its delivery figures.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, Error> {
        let rows = webhook::Entity::find()
            .order_by_asc(webhook::Column::CreatedAt)
            .order_by_asc(webhook::Column::Id)
            .all(&self.db)
            .await?;
        let mut stats = self.delivery_stats(None).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let stats = stats.remove(&row.id).unwrap_or_default();
                webhook_from_row(row, stats)
            })
            .collect())
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>, Error> {
        let Some(row) = webhook::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let stats = self
            .delivery_stats(Some(id))
            .await?
            .remove(id)
            .unwrap_or_default();
        Ok(Some(webhook_from_row(row, stats)))
    }

    /// Deliveries by webhook and outcome, with the last successful one's time.
    async fn delivery_stats(
        &self,
        webhook_id: Option<&str>,
    ) -> Result<HashMap<String, DeliveryStats>, Error> {
        let mut query = webhook_delivery::Entity::find()
            .select_only()
            .column(webhook_delivery::Column::WebhookId)
            .column(webhook_delivery::Column::Status)
            .column_as(webhook_delivery::Column::Id.count(), "count")
            .column_as(webhook_delivery::Column::DeliveredAt.max(), "last")
            .group_by(webhook_delivery::Column::WebhookId)
            .group_by(webhook_delivery::Column::Status);
        if let Some(id) = webhook_id {
            query = query.filter(webhook_delivery::Column::WebhookId.eq(id));
        }
        let rows: Vec<(String, String, i64, Option<Timestamp>)> =
            query.into_tuple().all(&self.db).await?;
        let mut stats: HashMap<String, DeliveryStats> = HashMap::new();
        for (webhook_id, status, count, last) in rows {
            let entry = stats.entry(webhook_id).or_default();
            let count = u64::try_from(count).unwrap_or_default();
            entry.total += count;
            match DeliveryStatus::parse(&status) {
                Some(DeliveryStatus::Delivered) => {
                    entry.succeeded += count;
                    entry.last_delivered_at = last;
                }
                Some(DeliveryStatus::Failed) => entry.failed += count,
                Some(DeliveryStatus::Pending) => entry.pending += count,
                None => {
                    return Err(Error::Corrupt(format!(
                        "a webhook delivery has status {status}"
                    )));
                }
            }
        }
        Ok(stats)
    }

    /// Applies `update` (with the call's audit row); `None` when there is no such webhook.
    pub async fn update_webhook(
        &self,
        id: &str,
        update: WebhookUpdate,
        audit: Option<AuditEntry>,
    ) -> Result<Option<Webhook>, Error> {
        let backend = self.backend();
        {
            let _writer = self.write_turn().await;
            let txn = self.db.begin().await?;
            let mut statement = webhook::Entity::update_many()
                .col_expr(webhook::Column::UpdatedAt, Expr::value(time::now()))
                .filter(webhook::Column::Id.eq(id));
            if let Some(url) = update.url {
                statement = statement.col_expr(webhook::Column::Url, Expr::value(url));
            }
            if let Some(events) = update.events {
                statement = statement.col_expr(webhook::Column::Events, Expr::value(json!(events)));
            }
            if let Some(secret) = update.secret {
                statement = statement.col_expr(webhook::Column::Secret, Expr::value(secret));
            }
            if let Some(active) = update.active {
                statement = statement.col_expr(webhook::Column::Active, Expr::value(active));
            }
            if statement.exec(&txn).await?.rows_affected == 0 {
                txn.rollback().await?;
                return Ok(None);
            }
            if let Some(entry) = audit {
                txn.execute_raw(audit_insert(backend, entry)).await?;
            }
            txn.commit().await?;
        }
        self.webhook(id).await
    }

    /// Deletes a webhook and its deliveries (with the call's audit row); the webhook as it was,
    /// or `None` when there is none.
    pub async fn delete_webhook(
        &self,
        id: &str,
        audit: Option<AuditEntry>,
    ) -> Result<Option<Webhook>, Error> {
        let Some(found) = self.webhook(id).await? else {
            return Ok(None);
        };
        let backend = self.backend();
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        webhook_delivery::Entity::delete_many()
            .filter(webhook_delivery::Column::WebhookId.eq(id))
            .exec(&txn)
            .await?;
        let deleted = webhook::Entity::delete_by_id(id.to_owned())
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        if let Some(entry) = audit {
            txn.execute_raw(audit_insert(backend, entry)).await?;
        }
        txn.commit().await?;
        Ok(Some(found))
    }

    /// A webhook's deliveries, newest first, and how many match in all.
    pub async fn webhook_deliveries(
        &self,
        webhook_id: &str,
        filter: &DeliveryFilter,
    ) -> Result<DeliveryPage, Error> {
        let mut query = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::WebhookId.eq(webhook_id));
        if let Some(status) = filter.status {
            query = query.filter(webhook_delivery::Column::Status.eq(status.as_str()));
        }
        let total = query.clone().count(&self.db).await?;
        let rows = query
            .order_by_desc(webhook_delivery::Column::CreatedAt)
            .order_by_desc(webhook_delivery::Column::Id)
            .limit(filter.limit)
            .offset(filter.offset)
            .all(&self.db)
            .await?;
        Ok(DeliveryPage {
            data: rows
                .into_iter()
                .map(delivery_from_row)
                .collect::<Result<_, _>>()?,
            total,
        })
    }

    /// Turns up to `limit` outbox rows, oldest first, into one pending delivery per active
    /// webhook subscribed to each (and that existed when it was written), and removes them from
    /// the outbox, in one transaction. How many outbox rows it took.
    pub async fn dispatch_webhook_outbox(&self, limit: u64) -> Result<usize, Error> {
        let notes = webhook_outbox::Entity::find()
            .order_by_asc(webhook_outbox::Column::CreatedAt)
            .order_by_asc(webhook_outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        if notes.is_empty() {
            return Ok(0);
        }
        let backend = self.backend();
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        // Read in the transaction, locked against a delete until it ends (PostgreSQL; SQLite's
        // writes take turns): a webhook read before its delete commits would fail the
        // deliveries' foreign key and roll back the whole batch, every round.
        let hooks = webhook::Entity::find()
            .filter(webhook::Column::Active.eq(true))
            .lock_shared()
            .all(&txn)
            .await?;
        let now = time::now();
        let mut deliveries = Vec::new();
        for note in &notes {
            for hook in &hooks {
                let events = strings(hook.events.clone());
                if !subscribes(&events, &note.event) || hook.created_at > note.created_at {
                    continue;
                }
                deliveries.push(webhook_delivery::ActiveModel {
                    id: Set(uuid::Uuid::new_v4().to_string()),
                    webhook_id: Set(hook.id.clone()),
                    outbox_id: Set(note.id.clone()),
                    event: Set(note.event.clone()),
                    run_id: Set(note.run_id.clone()),
                    payload: Set(note.payload.clone()),
                    status: Set(DeliveryStatus::Pending.as_str().to_owned()),
                    attempts: Set(0),
                    next_attempt_at: Set(now),
                    last_attempt_at: Set(None),
                    response_status: Set(None),
                    error_message: Set(None),
                    created_at: Set(now),
                    delivered_at: Set(None),
                });
            }
        }
        if !deliveries.is_empty() {
            // Another process may have fanned the same rows out: one delivery each, still.
            let insert = webhook_delivery::Entity::insert_many(deliveries)
                .on_conflict(
                    OnConflict::columns([
                        webhook_delivery::Column::WebhookId,
                        webhook_delivery::Column::OutboxId,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .build(backend);
            txn.execute_raw(insert).await?;
        }
        webhook_outbox::Entity::delete_many()
            .filter(webhook_outbox::Column::Id.is_in(notes.iter().map(|note| note.id.clone())))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(notes.len())
    }

    /// Claims up to `limit` pending deliveries of active webhooks that are due at `now` for one
    /// attempt each: the attempt is counted and the delivery leased until `lease_until`, so no
    /// other worker takes it meanwhile, and a worker that dies mid-attempt leaves it to be
    /// retried once the lease is over. At most `per_webhook` of one webhook, counting the
    /// attempts the caller has `in_flight` for it, so a slow receiver with many due deliveries
    /// leaves the other webhooks their turn.
    pub async fn claim_webhook_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u64,
        per_webhook: usize,
        in_flight: &HashMap<String, usize>,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        // Each webhook's first `per_webhook` due deliveries; of those, the ones of a webhook
        // with attempts in flight may be passed over below, so that many more are read.
        let ranked = Query::select()
            .column(webhook_delivery::Column::Id)
            .expr_window_as(
                Expr::cust("ROW_NUMBER()"),
                WindowStatement::partition_by(webhook_delivery::Column::WebhookId)
                    .order_by(webhook_delivery::Column::NextAttemptAt, Order::Asc)
                    .order_by(webhook_delivery::Column::Id, Order::Asc)
                    .to_owned(),
                "turn",
            )
            .from(webhook_delivery::Entity)
            .and_where(
                Expr::col(webhook_delivery::Column::Status).eq(DeliveryStatus::Pending.as_str()),
            )
            .and_where(Expr::col(webhook_delivery::Column::NextAttemptAt).lte(now))
            .and_where(active_webhook())
            .to_owned();
        let first_turns = Query::select()
            .column("id")
            .from_subquery(ranked, "ranked")
            .and_where(Expr::col("turn").lte(per_webhook as i64))
            .to_owned();
        let passed_over: usize = in_flight
            .values()
            .map(|count| (*count).min(per_webhook))
            .sum();
        let due = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::Id.in_subquery(first_turns))
            .order_by_asc(webhook_delivery::Column::NextAttemptAt)
            .limit(limit.saturating_add(passed_over as u64))
            .all(&self.db)
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let hooks: HashMap<String, webhook::Model> = webhook::Entity::find()
            .filter(webhook::Column::Id.is_in(due.iter().map(|row| row.webhook_id.clone())))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|hook| (hook.id.clone(), hook))
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        let mut taken_per_webhook = in_flight.clone();
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        for row in due {
            let Some(hook) = hooks.get(&row.webhook_id) else {
                continue;
            };
            let taken_of_hook = taken_per_webhook.entry(row.webhook_id.clone()).or_default();
            if claimed.len() as u64 >= limit || *taken_of_hook >= per_webhook {
                continue;
            }
            let attempt = row.attempts.saturating_add(1);
            let taken = webhook_delivery::Entity::update_many()
                .col_expr(webhook_delivery::Column::Attempts, Expr::value(attempt))
                .col_expr(webhook_delivery::Column::LastAttemptAt, Expr::value(now))
                .col_expr(
                    webhook_delivery::Column::NextAttemptAt,
                    Expr::value(lease_until),
                )
                .filter(webhook_delivery::Column::Id.eq(row.id.clone()))
                .filter(webhook_delivery::Column::Attempts.eq(row.attempts))
                .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
                .exec(&txn)
                .await?;
            if taken.rows_affected == 1 {
                *taken_of_hook += 1;
                claimed.push(ClaimedDelivery {
                    id: row.id,
                    webhook_id: row.webhook_id,
                    event: row.event,
                    url: hook.url.clone(),
                    secret: hook.secret.clone(),
                    payload: row.payload,
                    attempt,
                });
            }
        }
        txn.commit().await?;
        Ok(claimed)
    }

    /// Records how attempt `attempt` of a delivery ended (unless a later attempt has begun).
    pub async fn finish_webhook_attempt(
        &self,
        id: &str,
        attempt: i32,
        outcome: AttemptOutcome,
    ) -> Result<(), Error> {
        let delivered = outcome.status == DeliveryStatus::Delivered;
        let statement = webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                Expr::value(outcome.status.as_str()),
            )
            .col_expr(
                webhook_delivery::Column::ResponseStatus,
                Expr::value(outcome.response_status.map(i32::from)),
            )
            .col_expr(
                webhook_delivery::Column::ErrorMessage,
                Expr::value(outcome.error),
            )
            .col_expr(
                webhook_delivery::Column::NextAttemptAt,
                Expr::value(outcome.next_attempt_at),
            )
            .col_expr(
                webhook_delivery::Column::DeliveredAt,
                Expr::value(delivered.then(time::now)),
            )
            .filter(webhook_delivery::Column::Id.eq(id))
            .filter(webhook_delivery::Column::Attempts.eq(attempt))
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()));
        let _writer = self.write_turn().await;
        statement.exec(&self.db).await?;
        Ok(())
    }

    /// Gives back attempt `attempt` of a delivery that a stopping worker cut short: not counted,
    /// and due at once for the next worker (unless a later attempt has begun).
    pub async fn release_webhook_attempt(&self, id: &str, attempt: i32) -> Result<(), Error> {
        let statement = webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Attempts,
                Expr::value(attempt.saturating_sub(1)),
            )
            .col_expr(
                webhook_delivery::Column::NextAttemptAt,
                Expr::value(time::now()),
            )
            .filter(webhook_delivery::Column::Id.eq(id))
            .filter(webhook_delivery::Column::Attempts.eq(attempt))
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()));
        let _writer = self.write_turn().await;
        statement.exec(&self.db).await?;
        Ok(())
    }

    /// When the next pending delivery of an active webhook not among `busy` is due.
    pub async fn next_webhook_attempt(&self, busy: &[String]) -> Result<Option<Timestamp>, Error> {
        let next: Option<Option<Timestamp>> = webhook_delivery::Entity::find()
            .select_only()
            .column_as(webhook_delivery::Column::NextAttemptAt.min(), "next")
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(active_webhook())
            .filter(webhook_delivery::Column::WebhookId.is_not_in(busy.iter().cloned()))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(next.flatten())
    }
}

/// Deliveries of webhooks that are active (paused ones wait).
fn active_webhook() -> sea_orm::sea_query::SimpleExpr {
    Expr::col(webhook_delivery::Column::WebhookId).in_subquery(
        Query::select()
            .column(webhook::Column::Id)
            .from(webhook::Entity)
            .and_where(Expr::col(webhook::Column::Active).eq(true))
            .to_owned(),
    )
}

fn webhook_from_row(row: webhook::Model, stats: DeliveryStats) -> Webhook {
    Webhook {
        id: row.id,
        url: row.url,
        events: strings(row.events),
        active: row.active,
        created_by: row.created_by,
        created_at: row.created_at,
        updated_at: row.updated_at,
        delivery_stats: stats,
        secret: None,
    }
}

fn delivery_from_row(row: webhook_delivery::Model) -> Result<WebhookDelivery, Error> {
    let status = DeliveryStatus::parse(&row.status).ok_or_else(|| {
        Error::Corrupt(format!(
            "webhook delivery {} has status {}",
            row.id, row.status
        ))
    })?;
    let payload: Value = serde_json::from_str(&row.payload)
        .map_err(|error| Error::Corrupt(format!("webhook delivery {} payload: {error}", row.id)))?;
    Ok(WebhookDelivery {
        id: row.id,
        webhook_id: row.webhook_id,
        event: row.event,
        run_id: row.run_id,
        status,
        attempts: u32::try_from(row.attempts).unwrap_or_default(),
        payload,
        response_status: row
            .response_status
            .and_then(|status| u32::try_from(status).ok()),
        error: row.error_message,
        created_at: row.created_at,
        last_attempt_at: row.last_attempt_at,
        next_attempt_at: (status == DeliveryStatus::Pending).then_some(row.next_attempt_at),
        delivered_at: row.delivered_at,
    })
}
