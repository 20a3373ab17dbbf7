//! AwaitRun: how a run ended, waited for on the hub rather than by polling. A waiter subscribes
//! first, then reads the run: ended already, or it waits for the batch holding the terminal
//! event, or for its deadline. The waiters of one run share one read of the final record and
//! decision, so a thousand of them cost one query when the run ends, and one copy of it: the
//! run's record carries its whole request, and copying it for each waiter took most of the
//! in-process time of a thousand waiters' answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::service::RunService;
use super::watch::is_terminal_event;
use crate::domain::query::EventQuery;
use crate::domain::run::Run;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::events::canonical::types;
use crate::events::hub::RecvError;
use crate::projection::state::Decision;

/// How long a waiter waits when it names no timeout.
pub const DEFAULT_AWAIT_TIMEOUT_MS: u64 = 30_000;
/// The longest wait one call may ask for (an hour).
pub const MAX_AWAIT_TIMEOUT_MS: u64 = 3_600_000;

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    pub run: Run,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<OutcomeDecision>,
    pub terminal_seq: i64,
}

/// The decision of the run's projection, in short.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeDecision {
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_positive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

impl From<Decision> for OutcomeDecision {
    fn from(decision: Decision) -> Self {
        OutcomeDecision {
            action: decision.action,
            outcome_positive: decision.outcome_positive.as_ref().and_then(Value::as_bool),
            confidence: decision.confidence,
            proposal_id: decision.proposal_id,
            resolved_by: decision.resolved_by,
        }
    }
}

type SharedOutcome = Arc<OnceCell<Result<Arc<RunOutcome>, ApiError>>>;

/// Run id → the final read the run's current waiters share; an entry goes with its last waiter.
#[derive(Default)]
pub(super) struct Outcomes(Mutex<HashMap<String, SharedOutcome>>);

/// The wait a request asks for: `field` in milliseconds, the default when absent.
pub fn await_timeout(ms: Option<u64>, field: &str) -> Result<Duration, ApiError> {
    match ms {
        None => Ok(Duration::from_millis(DEFAULT_AWAIT_TIMEOUT_MS)),
        Some(ms) if (1..=MAX_AWAIT_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(_) => Err(ApiError::validation(vec![FieldError::new(
            field,
            format!("must be between 1 and {MAX_AWAIT_TIMEOUT_MS}"),
        )])),
    }
}

impl RunService {
    /// How the run ended, once it has; `AWAIT_TIMEOUT` (with the current run) past `timeout`.
    pub async fn await_end(
        &self,
        run_id: &str,
        timeout: Duration,
    ) -> Result<Arc<RunOutcome>, ApiError> {
        let deadline = Instant::now() + timeout;
        // Subscribing before reading the run: a terminal batch committed in between is either
        // in the store when it is read or in the subscription.
        let limit = self.options().max_subscribers_per_run;
        let mut live = self.hub().subscribe_limited(run_id, limit).ok_or_else(|| {
            ApiError::new(
                ErrorCode::TooManySubscribers,
                format!("run {run_id} has {limit} live subscribers already; try again later"),
            )
        })?;
        let run = self.get(run_id).await?;
        if !run.status.is_terminal() {
            loop {
                match tokio::time::timeout_at(deadline, live.recv()).await {
                    Err(_) => return Err(self.await_timed_out(run_id, timeout).await),
                    Ok(Ok(batch)) => {
                        if batch.events.iter().any(|event| is_terminal_event(event)) {
                            break;
                        }
                    }
                    // The batches it missed are in the store, and so is the run's status.
                    Ok(Err(RecvError::Lagged(_))) => {
                        if self.get(run_id).await?.status.is_terminal() {
                            break;
                        }
                    }
                    Ok(Err(RecvError::Closed)) => {
                        return Err(ApiError::new(
                            ErrorCode::RuntimeUnavailable,
                            "the service is stopping",
                        ));
                    }
                }
            }
        }
        drop(live);
        self.shared_outcome(run_id).await
    }

    async fn await_timed_out(&self, run_id: &str, timeout: Duration) -> ApiError {
        let run = match self.run_record(run_id).await {
            Ok(run) => run,
            Err(error) => return error,
        };
        let mut error = ApiError::new(
            ErrorCode::AwaitTimeout,
            format!(
                "run {run_id} is still {} after {} ms",
                run.status.as_str(),
                timeout.as_millis()
            ),
        );
        error.details = Some(json!({ "run": run }));
        error
    }

    /// The ended run's outcome, read once for all its waiters of the moment.
    async fn shared_outcome(&self, run_id: &str) -> Result<Arc<RunOutcome>, ApiError> {
        let outcomes = &self.inner.outcomes.0;
        let lock = || {
            outcomes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        let cell = lock().entry(run_id.to_owned()).or_default().clone();
        let outcome = cell
            .get_or_init(|| async { self.read_outcome(run_id).await.map(Arc::new) })
            .await
            .clone();
        // Clones are made and dropped under the lock only, so the count is exact there.
        let mut map = lock();
        drop(cell);
        if map
            .get(run_id)
            .is_some_and(|cell| Arc::strong_count(cell) == 1)
        {
            map.remove(run_id);
        }
        outcome
    }

    async fn read_outcome(&self, run_id: &str) -> Result<RunOutcome, ApiError> {
        let run = self.run_record(run_id).await?;
        let state = self.state(run_id).await?;
        let terminal = self
            .store()
            .query_events(&EventQuery {
                run_id: Some(run_id.to_owned()),
                types: [
                    types::RUN_COMPLETED,
                    types::RUN_FAILED,
                    types::RUN_CANCELLED,
                ]
                .map(str::to_owned)
                .to_vec(),
                limit: 1,
                ..EventQuery::default()
            })
            .await?;
        Ok(RunOutcome {
            terminal_seq: terminal
                .first()
                .map_or(run.last_event_seq, |event| event.seq),
            decision: state.decision.current.map(OutcomeDecision::from),
            run,
        })
    }
}
