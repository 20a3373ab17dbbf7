//! The delivery worker. Each round fans the outbox out into deliveries, claims the due ones (at
//! most [`CONCURRENT`] in flight, [`PER_WEBHOOK`] of one webhook) and sends each in a task of its
//! own; an attempt is delivered
//! on a 2xx answer, otherwise retried `retry_base · 2^(attempt−1)` later (with jitter, at most
//! [`MAX_BACKOFF`]) until `max_attempts`. Everything is in the database, so a restart loses
//! nothing: an attempt a stop cuts short is given back uncounted, and one whose process died is
//! retried once its lease is over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::WebhookOptions;
use super::address::{self, GuardedResolver};
use super::signature::{self, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::domain::webhook::DeliveryStatus;
use crate::store::{self, AttemptOutcome, ClaimedDelivery, Store};
use crate::time::{self, Timestamp};

/// Deliveries in flight at once.
const CONCURRENT: usize = 16;
/// Deliveries of one webhook in flight at once: a slow receiver holds no more slots than this.
const PER_WEBHOOK: usize = 2;
/// Outbox rows fanned out per transaction.
const OUTBOX_BATCH: u64 = 100;
/// The longest wait between rounds: deliveries another process wrote are found this late.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// The shortest: a round that found nothing it could claim does not spin.
const MIN_WAIT: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long past an attempt's timeout a claimed delivery stays leased to its worker.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Error text kept per attempt.
const MAX_ERROR_LEN: usize = 500;

struct Worker {
    store: Store,
    options: WebhookOptions,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    /// Attempts under way per webhook.
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// One attempt's place in [`Worker::in_flight`], given up when the attempt's task ends.
struct InFlight {
    webhook_id: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    fn take(in_flight: &Arc<Mutex<HashMap<String, usize>>>, webhook_id: &str) -> InFlight {
        *lock(in_flight).entry(webhook_id.to_owned()).or_default() += 1;
        InFlight {
            webhook_id: webhook_id.to_owned(),
            in_flight: in_flight.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = lock(&self.in_flight);
        if let Some(count) = counts.get_mut(&self.webhook_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.webhook_id);
            }
        }
    }
}

/// The counts stay consistent even if a holder panicked: each change is one statement.
fn lock(
    in_flight: &Mutex<HashMap<String, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) async fn run(
    store: Store,
    options: WebhookOptions,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let client = match reqwest::Client::builder()
        .timeout(options.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            allow_link_local: options.allow_link_local,
        }))
        .user_agent(concat!("macp-control-plane/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook deliveries are off: no HTTP client");
            return;
        }
    };
    let worker = Worker {
        store,
        options,
        client,
        slots: Arc::new(Semaphore::new(CONCURRENT)),
        in_flight: Arc::default(),
        shutdown,
        tasks,
    };
    worker.run().await;
}

impl Worker {
    async fn run(self) {
        let wake = self.store.webhook_outbox_written();
        loop {
            let wait = match self.round().await {
                Ok(next) if self.slots.available_permits() > 0 => next.map_or(IDLE_POLL, until),
                // Every slot is busy: a finishing delivery wakes the worker.
                Ok(_) => IDLE_POLL,
                Err(error) => {
                    tracing::warn!(%error, "webhook round failed; retrying");
                    IDLE_POLL
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait.clamp(MIN_WAIT, IDLE_POLL)) => {}
            }
        }
    }

    /// Fans out the outbox, starts the due deliveries; when the next one is due.
    async fn round(&self) -> Result<Option<Timestamp>, store::Error> {
        while self.store.dispatch_webhook_outbox(OUTBOX_BATCH).await? == OUTBOX_BATCH as usize {}
        let free = self.slots.available_permits();
        if free > 0 {
            let now = time::now();
            let leased_until = chrono::Duration::from_std(self.options.timeout + LEASE_MARGIN)
                .ok()
                .and_then(|lease| now.checked_add_signed(lease))
                .unwrap_or(Timestamp::MAX_UTC);
            let in_flight = lock(&self.in_flight).clone();
            let claimed = self
                .store
                .claim_webhook_deliveries(now, leased_until, free as u64, PER_WEBHOOK, &in_flight)
                .await?;
            for delivery in claimed {
                // At most `free` were claimed, and only this loop takes slots.
                let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                    break;
                };
                let place = InFlight::take(&self.in_flight, &delivery.webhook_id);
                let (store, options, client) = (
                    self.store.clone(),
                    self.options.clone(),
                    self.client.clone(),
                );
                let shutdown = self.shutdown.clone();
                self.tasks.spawn(async move {
                    let outcome = tokio::select! {
                        _ = shutdown.cancelled() => {
                            // Given back for the next process; if this fails, the lease ends.
                            if let Err(error) = store.release_webhook_attempt(&delivery.id, delivery.attempt).await {
                                tracing::warn!(%error, delivery = %delivery.id, "a webhook attempt cut short stays leased");
                            }
                            return;
                        }
                        outcome = attempt(&client, &options, &delivery) => outcome,
                    };
                    if let Err(error) = store
                        .finish_webhook_attempt(&delivery.id, delivery.attempt, outcome)
                        .await
                    {
                        tracing::warn!(%error, delivery = %delivery.id, "a webhook attempt's outcome was not stored; it is retried");
                    }
                    drop((slot, place));
                    store.webhook_outbox_written().notify_one();
                });
            }
        }
        // A webhook with PER_WEBHOOK attempts under way waits for one to finish, which wakes
        // the worker; its due deliveries would only make it spin.
        let busy: Vec<String> = lock(&self.in_flight)
            .iter()
            .filter(|(_, count)| **count >= PER_WEBHOOK)
            .map(|(webhook_id, _)| webhook_id.clone())
            .collect();
        self.store.next_webhook_attempt(&busy).await
    }
}

/// From now until `at` (zero when it has passed).
fn until(at: Timestamp) -> Duration {
    (at - time::now()).to_std().unwrap_or(Duration::ZERO)
}

/// One attempt and what it leaves the delivery as.
async fn attempt(
    client: &reqwest::Client,
    options: &WebhookOptions,
    delivery: &ClaimedDelivery,
) -> AttemptOutcome {
    let outcome = match send(client, options, delivery).await {
        Ok(status) => AttemptOutcome {
            status: DeliveryStatus::Delivered,
            response_status: Some(status),
            error: None,
            next_attempt_at: time::now(),
        },
        Err((status, error)) => {
            let exhausted =
                u32::try_from(delivery.attempt).unwrap_or(u32::MAX) >= options.max_attempts;
            tracing::info!(delivery = %delivery.id, attempt = delivery.attempt, exhausted, %error, "webhook attempt failed");
            AttemptOutcome {
                status: if exhausted {
                    DeliveryStatus::Failed
                } else {
                    DeliveryStatus::Pending
                },
                response_status: status,
                error: Some(error.chars().take(MAX_ERROR_LEN).collect()),
                next_attempt_at: time::now() + backoff(options.retry_base, delivery.attempt),
            }
        }
    };
    crate::telemetry::metrics::record_webhook_attempt(match outcome.status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retried",
        DeliveryStatus::Failed => "failed",
    });
    outcome
}

/// Sends the delivery, signed: the 2xx status, or the status (if any) and why it failed.
async fn send(
    client: &reqwest::Client,
    options: &WebhookOptions,
    delivery: &ClaimedDelivery,
) -> Result<u16, (Option<u16>, String)> {
    let url = reqwest::Url::parse(&delivery.url)
        .map_err(|error| (None, format!("invalid URL: {error}")))?;
    address::check_target(&url, options.allow_link_local).map_err(|reason| (None, reason))?;
    let timestamp = chrono::Utc::now().timestamp();
    let body = delivery.payload.clone().into_bytes();
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, &delivery.event)
        .header(DELIVERY_HEADER, &delivery.id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            signature::sign(&delivery.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await
        // Without the URL: webhook URLs often carry a token in their path.
        .map_err(|error| (None, with_causes(&error.without_url())))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err((
            Some(status.as_u16()),
            format!("the receiver answered {status}"),
        ))
    }
}

/// An error with its causes (reqwest's own message hides why a connection failed).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The wait after failed attempt `attempt` (from 1): `base · 2^(attempt−1)`, at most
/// [`MAX_BACKOFF`], of which a random half is taken off so receivers that failed together are
/// not retried together.
fn backoff(base: Duration, attempt: i32) -> chrono::Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let full = base.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    let random = getrandom::u64().unwrap_or(u64::MAX) as f64 / u64::MAX as f64;
    let wait = full.mul_f64(0.5 + 0.5 * random);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(1000);
        for attempt in 1..=5 {
            let full = 1000 * (1i64 << (attempt - 1));
            let wait = backoff(base, attempt).num_milliseconds();
            assert!(
                (full / 2..=full).contains(&wait),
                "attempt {attempt}: {wait} ms not in [{}, {full}]",
                full / 2
            );
        }
        let capped = backoff(base, 40).to_std().expect("positive");
        assert!(capped <= MAX_BACKOFF && capped >= MAX_BACKOFF / 2);
    }

    #[tokio::test]
    async fn a_failed_sends_error_leaves_the_url_out() {
        // Nothing listens on the discard port; the connection is refused.
        let delivery = ClaimedDelivery {
            id: "d1".to_owned(),
            webhook_id: "w1".to_owned(),
            event: "run.completed".to_owned(),
            url: "http://127.0.0.1:9/hooks/s3cr3t-token".to_owned(),
            secret: "secret".to_owned(),
            payload: "{}".to_owned(),
            attempt: 1,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let (status, error) = send(&client, &WebhookOptions::default(), &delivery)
            .await
            .expect_err("nothing listens");
        assert_eq!(status, None);
        assert!(!error.contains("s3cr3t-token"), "{error}");
    }

    #[test]
    fn error_text_keeps_its_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(io);
        assert!(with_causes(&outer).contains("refused"));
    }
}
