//! Proto ⇄ domain conversion for webhooks and the runtime circuit breaker.

use tonic::Status;

use super::{status, to_struct, to_u32};
use crate::api::proto;
use crate::domain::webhook::{DeliveryQuery, Webhook, WebhookDelivery};
use crate::error::{ApiError, FieldError};
use crate::runs::RunService;
use crate::runtime::breaker::Transition;
use crate::webhooks::WebhookInput;

fn webhook_message(webhook: Webhook) -> proto::Webhook {
    let stats = webhook.delivery_stats;
    proto::Webhook {
        id: webhook.id,
        url: webhook.url,
        events: webhook.events,
        active: webhook.active,
        created_by: webhook.created_by,
        created_at: crate::time::format(&webhook.created_at),
        updated_at: crate::time::format(&webhook.updated_at),
        delivery_stats: Some(proto::WebhookDeliveryStats {
            total: to_u32(i64::try_from(stats.total).unwrap_or(i64::MAX)),
            succeeded: to_u32(i64::try_from(stats.succeeded).unwrap_or(i64::MAX)),
            failed: to_u32(i64::try_from(stats.failed).unwrap_or(i64::MAX)),
            pending: to_u32(i64::try_from(stats.pending).unwrap_or(i64::MAX)),
            last_delivered_at: stats.last_delivered_at.as_ref().map(crate::time::format),
        }),
        secret: webhook.secret,
    }
}

fn delivery_message(delivery: WebhookDelivery) -> Result<proto::WebhookDelivery, Status> {
    let format = |time: &Option<crate::time::Timestamp>| time.as_ref().map(crate::time::format);
    Ok(proto::WebhookDelivery {
        payload: to_struct(&delivery.payload)?,
        last_attempt_at: format(&delivery.last_attempt_at),
        next_attempt_at: format(&delivery.next_attempt_at),
        delivered_at: format(&delivery.delivered_at),
        created_at: crate::time::format(&delivery.created_at),
        id: delivery.id,
        webhook_id: delivery.webhook_id,
        event: delivery.event,
        run_id: delivery.run_id,
        status: delivery.status.as_str().to_owned(),
        attempts: delivery.attempts,
        response_status: delivery.response_status,
        error: delivery.error,
    })
}

/// proto3 strings have no absence: an empty one is a field not given.
fn given(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub async fn create(
    service: &RunService,
    request: proto::CreateWebhookRequest,
) -> Result<proto::Webhook, Status> {
    let input = WebhookInput {
        url: given(request.url),
        events: Some(request.events),
        secret: given(request.secret),
        active: None,
    };
    service
        .webhooks()
        .create(input)
        .await
        .map(webhook_message)
        .map_err(status)
}

pub async fn list(service: &RunService) -> Result<proto::ListWebhooksResponse, Status> {
    let webhooks = service.webhooks().list().await.map_err(status)?;
    Ok(proto::ListWebhooksResponse {
        data: webhooks.into_iter().map(webhook_message).collect(),
    })
}

pub async fn update(
    service: &RunService,
    request: proto::UpdateWebhookRequest,
) -> Result<proto::Webhook, Status> {
    // `events` is a JSON list (it has presence, unlike a repeated field): strings only.
    let events = match request.events {
        None => None,
        Some(list) => {
            let mut errors = Vec::new();
            let events = list
                .values
                .into_iter()
                .enumerate()
                .filter_map(|(index, value)| match value.kind {
                    Some(pbjson_types::value::Kind::StringValue(text)) => Some(text),
                    _ => {
                        errors.push(FieldError::new(
                            format!("events[{index}]"),
                            "must be a string",
                        ));
                        None
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(status(ApiError::validation(errors)));
            }
            Some(events)
        }
    };
    let input = WebhookInput {
        url: request.url,
        events,
        secret: request.secret,
        active: request.active,
    };
    service
        .webhooks()
        .update(&request.webhook_id, input)
        .await
        .map(webhook_message)
        .map_err(status)
}

pub async fn delete(service: &RunService, id: &str) -> Result<proto::Webhook, Status> {
    service
        .webhooks()
        .delete(id)
        .await
        .map(webhook_message)
        .map_err(status)
}

pub async fn deliveries(
    service: &RunService,
    request: proto::ListWebhookDeliveriesRequest,
) -> Result<proto::ListWebhookDeliveriesResponse, Status> {
    let page = service
        .webhooks()
        .deliveries(
            &request.webhook_id,
            DeliveryQuery {
                status: request.status,
                limit: request.limit.map(i64::from),
                offset: request.offset.map(i64::from),
            },
        )
        .await
        .map_err(status)?;
    Ok(proto::ListWebhookDeliveriesResponse {
        data: page
            .data
            .into_iter()
            .map(delivery_message)
            .collect::<Result<_, _>>()?,
        total: to_u32(i64::try_from(page.total).unwrap_or(i64::MAX)),
    })
}

pub fn reset_breaker(service: &RunService) -> proto::CircuitBreakerReset {
    let state = service.runtime().circuit_breaker().reset();
    proto::CircuitBreakerReset {
        status: "ok".to_owned(),
        state: state.as_str().to_owned(),
    }
}

pub fn breaker_history(
    service: &RunService,
    request: &proto::GetCircuitBreakerHistoryRequest,
) -> Result<proto::CircuitBreakerHistory, Status> {
    let start = crate::runtime::breaker::history_start(
        request.window.as_deref(),
        request.since.as_deref(),
        crate::time::now(),
    )
    .map_err(status)?;
    let (state, history) = service.runtime().circuit_breaker().history(start);
    Ok(proto::CircuitBreakerHistory {
        state: state.as_str().to_owned(),
        history: history
            .into_iter()
            .map(
                |Transition {
                     state,
                     entered_at,
                     reason,
                 }| proto::CircuitBreakerTransition {
                    state: state.as_str().to_owned(),
                    entered_at: crate::time::format(&entered_at),
                    reason,
                },
            )
            .collect(),
    })
}
