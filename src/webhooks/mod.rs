//! Webhooks: subscriptions to run lifecycle events and signals (the admin API's CRUD, validated
//! here for both transports), and their delivery. An event a webhook can subscribe to writes an
//! outbox row in the transaction that records it (`store::webhooks`); the worker
//! ([`worker`]) fans it out to one delivery per subscribed webhook and sends each, signed
//! ([`signature`]), retried with backoff until delivered or out of attempts. URLs pass the
//! address guard ([`address`]) when stored and again on every connection.

pub mod address;
mod settings;
pub mod signature;
mod worker;

use std::time::Duration;

use serde_json::Value;

pub use settings::WebhookArgs;

use crate::domain::webhook::{
    DeliveryPage, DeliveryQuery, EVENTS, MAX_SECRET_LEN, MAX_URL_LEN, Webhook,
};
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::store::{NewWebhook, Store, WebhookUpdate};

/// Delivery settings (`WEBHOOK_*`).
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Link-local and cloud metadata addresses are refused unless this is set.
    pub allow_link_local: bool,
    /// Attempts per delivery before it is given up as failed.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each later one (with jitter).
    pub retry_base: Duration,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            allow_link_local: false,
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A subscription as either transport received it; `None` is absent.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub url: Option<String>,
    /// `Some(empty)`: every event.
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub active: Option<bool>,
}

/// The webhooks of one service: its subscriptions and their delivery worker.
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    options: WebhookOptions,
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no webhook {id}"))
}

impl Webhooks {
    pub fn new(store: Store, options: WebhookOptions) -> Webhooks {
        Webhooks { store, options }
    }

    /// Reads `{url?, events?, secret?, active?}` from a JSON body; `fields` are those the
    /// route takes. Every problem is reported by field.
    pub fn parse_input(body: &Value, fields: &[&str]) -> Result<WebhookInput, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::validation(vec![FieldError::new(
                "$",
                "must be an object",
            )]));
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !fields.contains(&key.as_str()) {
                errors.push(FieldError::new(key.clone(), "is not a known field"));
            }
        }
        let text = |field: &str, errors: &mut Vec<FieldError>| match object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                errors.push(FieldError::new(field, "must be a string"));
                None
            }
        };
        let url = text("url", &mut errors);
        let secret = text("secret", &mut errors);
        let events = match object.get("events") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(index, item)| match item.as_str() {
                        Some(text) => Some(text.to_owned()),
                        None => {
                            errors.push(FieldError::new(
                                format!("events[{index}]"),
                                "must be a string",
                            ));
                            None
                        }
                    })
                    .collect(),
            ),
            Some(_) => {
                errors.push(FieldError::new("events", "must be an array of strings"));
                None
            }
        };
        let active = match object.get("active") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(active)) => Some(*active),
            Some(_) => {
                errors.push(FieldError::new("active", "must be a boolean"));
                None
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(WebhookInput {
            url,
            events,
            secret,
            active,
        })
    }

    /// Checks each given field's value; on create `url` and `secret` are required.
    async fn check(
        &self,
        input: &WebhookInput,
        creating: bool,
    ) -> Result<Option<Vec<String>>, ApiError> {
        let mut errors = Vec::new();
        match &input.url {
            Some(url) if url.chars().count() > MAX_URL_LEN => errors.push(FieldError::new(
                "url",
                format!("must be at most {MAX_URL_LEN} characters"),
            )),
            Some(url) if !url.trim().is_empty() => {
                if let Err(reason) = address::check_url(url, self.options.allow_link_local).await {
                    errors.push(FieldError::new("url", reason));
                }
            }
            Some(_) => errors.push(FieldError::new("url", "must not be blank")),
            None if creating => errors.push(FieldError::new("url", "is required")),
            None => {}
        }
        match &input.secret {
            Some(secret) if secret.trim().is_empty() => {
                errors.push(FieldError::new("secret", "must not be blank"));
            }
            Some(secret) if secret.chars().count() > MAX_SECRET_LEN => {
                errors.push(FieldError::new(
                    "secret",
                    format!("must be at most {MAX_SECRET_LEN} characters"),
                ))
            }
            Some(_) => {}
            None if creating => errors.push(FieldError::new("secret", "is required")),
            None => {}
        }
        let events = input.events.as_ref().map(|events| {
            let mut kept: Vec<String> = Vec::with_capacity(events.len());
            for (index, event) in events.iter().enumerate() {
                if !EVENTS.contains(&event.as_str()) {
                    errors.push(FieldError::new(
                        format!("events[{index}]"),
                        format!("must be one of {}", EVENTS.join(", ")),
                    ));
                } else if !kept.contains(event) {
                    kept.push(event.clone());
                }
            }
            kept
        });
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(events)
    }

    /// Stores a subscription; its secret is in this answer and no other.
    pub async fn create(&self, input: WebhookInput) -> Result<Webhook, ApiError> {
        let events = self.check(&input, true).await?.unwrap_or_default();
        let (Some(url), Some(secret)) = (input.url, input.secret) else {
            return Err(ApiError::internal(
                "a checked webhook lacks its url or secret",
            ));
        };
        let id = uuid::Uuid::new_v4().to_string();
        let new = NewWebhook {
            id: id.clone(),
            url,
            events,
            secret: secret.clone(),
            created_by: crate::auth::audit::actor(),
            created_at: crate::time::now(),
        };
        self.store
            .create_webhook(new, crate::auth::audit::take(&id))
            .await
            .inspect_err(|_| crate::auth::audit::put_back())?;
        let mut created = self.get(&id).await?;
        created.secret = Some(secret);
        Ok(created)
    }

    pub async fn list(&self) -> Result<Vec<Webhook>, ApiError> {
        Ok(self.store.webhooks().await?)
    }

    pub async fn get(&self, id: &str) -> Result<Webhook, ApiError> {
        self.store.webhook(id).await?.ok_or_else(|| not_found(id))
    }

    /// Changes the given fields; a webhook paused (`active: false`) gets no new deliveries and
    /// its pending ones wait until it is resumed.
    pub async fn update(&self, id: &str, input: WebhookInput) -> Result<Webhook, ApiError> {
        let events = self.check(&input, false).await?;
        let update = WebhookUpdate {
            url: input.url,
            events,
            secret: input.secret,
            active: input.active,
        };
        match self
            .store
            .update_webhook(id, update, crate::auth::audit::take(id))
            .await
        {
            Ok(Some(webhook)) => Ok(webhook),
            Ok(None) => {
                // Nothing changed, so no change recorded the call: the edge does.
                crate::auth::audit::put_back();
                Err(not_found(id))
            }
            Err(error) => {
                crate::auth::audit::put_back();
                Err(error.into())
            }
        }
    }

    /// Deletes a subscription and its delivery log; answers it as it was.
    pub async fn delete(&self, id: &str) -> Result<Webhook, ApiError> {
        match self
            .store
            .delete_webhook(id, crate::auth::audit::take(id))
            .await
        {
            Ok(Some(webhook)) => Ok(webhook),
            Ok(None) => {
                crate::auth::audit::put_back();
                Err(not_found(id))
            }
            Err(error) => {
                crate::auth::audit::put_back();
                Err(error.into())
            }
        }
    }

    /// A webhook's delivery log, newest first.
    pub async fn deliveries(
        &self,
        id: &str,
        query: DeliveryQuery,
    ) -> Result<DeliveryPage, ApiError> {
        let filter = query.into_filter()?;
        if self.store.webhook(id).await?.is_none() {
            return Err(not_found(id));
        }
        Ok(self.store.webhook_deliveries(id, &filter).await?)
    }

    /// Delivers until `shutdown` (a task of the run service's).
    pub async fn deliver(
        self,
        shutdown: tokio_util::sync::CancellationToken,
        tasks: tokio_util::task::TaskTracker,
    ) {
        worker::run(self.store, self.options, shutdown, tasks).await;
    }
}
