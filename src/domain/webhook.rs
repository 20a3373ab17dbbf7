//! Webhook subscriptions and their deliveries as the admin API shows them, the run events they
//! can subscribe to, and the delivery log's query.

use serde::Serialize;
use serde_json::Value;

use super::audit::optional_rfc3339;
use super::query::page;
use crate::error::{ApiError, FieldError};
use crate::time::{self, Timestamp};

/// The run events a webhook can subscribe to: the lifecycle events, and the signals participants
/// emit (the UI console's default subscription has them). An empty list subscribes to the
/// lifecycle events only ([`subscribes`]).
pub const EVENTS: &[&str] = &[
    "run.started",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.suspended",
    "run.resumed",
    SIGNAL_EVENT,
];

/// The one subscribable event that does not change the run's status.
pub const SIGNAL_EVENT: &str = "signal.emitted";

/// Whether a webhook subscribed to `events` gets `event`. An empty list is the run lifecycle
/// events, as it meant before signals could be subscribed to; signals only by name.
pub fn subscribes(events: &[String], event: &str) -> bool {
    if events.is_empty() {
        event != SIGNAL_EVENT
    } else {
        events.iter().any(|subscribed| subscribed == event)
    }
}

pub const DEFAULT_DELIVERY_LIMIT: u64 = 50;
pub const MAX_DELIVERY_LIMIT: u64 = 200;
/// Longest webhook URL and secret.
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_SECRET_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted again at `nextAttemptAt`.
    Pending,
    Delivered,
    /// Out of attempts.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    pub fn names() -> Vec<&'static str> {
        DeliveryStatus::ALL
            .iter()
            .map(|status| status.as_str())
            .collect()
    }
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// Empty: every lifecycle event (not `signal.emitted`).
    pub events: Vec<String>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(with = "time::rfc3339")]
    pub created_at: Timestamp,
    #[serde(with = "time::rfc3339")]
    pub updated_at: Timestamp,
    pub delivery_stats: DeliveryStats,
    /// Only in the answer that created it: the secret is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A webhook's deliveries by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStats {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub pending: u64,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_rfc3339"
    )]
    pub last_delivered_at: Option<Timestamp>,
}

/// One notification to one webhook, with its attempts so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub run_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The body sent (the same on every attempt).
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::rfc3339")]
    pub created_at: Timestamp,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_rfc3339"
    )]
    pub last_attempt_at: Option<Timestamp>,
    /// When a pending delivery is attempted next.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_rfc3339"
    )]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_rfc3339"
    )]
    pub delivered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryPage {
    pub data: Vec<WebhookDelivery>,
    pub total: u64,
}

/// Unvalidated delivery log parameters.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Validated delivery log filters, newest first.
#[derive(Debug, Clone)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub limit: u64,
    pub offset: u64,
}

impl DeliveryQuery {
    pub fn into_filter(self) -> Result<DeliveryFilter, ApiError> {
        let mut errors = Vec::new();
        let status = match self.status.filter(|text| !text.is_empty()) {
            None => None,
            Some(text) => {
                let status = DeliveryStatus::parse(&text);
                if status.is_none() {
                    errors.push(FieldError::new(
                        "status",
                        format!("must be one of {}", DeliveryStatus::names().join(", ")),
                    ));
                }
                status
            }
        };
        let (limit, offset) = page(
            self.limit,
            self.offset,
            DEFAULT_DELIVERY_LIMIT,
            MAX_DELIVERY_LIMIT,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(DeliveryFilter {
            status,
            limit,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_subscription_is_the_lifecycle_events_and_signals_are_named() {
        for event in EVENTS {
            assert_eq!(subscribes(&[], event), *event != SIGNAL_EVENT, "{event}");
        }
        let signals = [SIGNAL_EVENT.to_owned()];
        assert!(subscribes(&signals, SIGNAL_EVENT));
        assert!(!subscribes(&signals, "run.completed"));
    }
}
