//! Calls that write a run, made on a replica that does not own it: handed to the owner through
//! the database (a `replica_calls` row and a notification in one transaction), run there as if
//! made there, and answered the same way. The caller waits for the answer; when the owner's
//! lease expires first, the call is withdrawn and made again wherever the run is then owned
//! (here, once this replica has claimed it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::error::{ApiError, ErrorCode};
use crate::runs::RunService;

/// What a replica asks a run's owner to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "camelCase")]
pub(crate) enum Call {
    Cancel { reason: Option<String> },
    Suspend { reason: Option<String> },
    Resume { reason: Option<String> },
    Message { body: Value },
    Signal { body: Value },
    Context { body: Value },
    Artifact { body: Value },
}

/// How long a caller waits for an answer before it gives up (`REPLICA_UNAVAILABLE`).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Callers waiting for answers, by call id.
#[derive(Default)]
pub(crate) struct Waiting {
    calls: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiting {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn answered(&self, id: &str) {
        if let Some(waiter) = self.calls().get(id) {
            waiter.notify_one();
        }
    }

    /// Every caller reads its answer again (announcements may have been lost).
    pub(crate) fn wake_all(&self) {
        for waiter in self.calls().values() {
            waiter.notify_one();
        }
    }
}

/// Where a call that writes a run is carried out.
pub(crate) enum Route {
    /// Here: this replica owns the run (or it has ended, or there is no cluster).
    Here,
    /// On the run's owner, which answered this.
    Answered(Value),
}

impl RunService {
    /// Carries `call` out on the run's owner when that is another live replica; `Here` when
    /// it is this one. A run no live replica owns is claimed here first.
    pub(crate) async fn route(&self, run_id: &str, call: Call) -> Result<Route, ApiError> {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return Ok(Route::Here);
        };
        let me = cluster.options.replica_id.as_str();
        let store = self.store();
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        loop {
            let Some(owner) = store.run_owner(run_id).await? else {
                // No such run: the local path answers RUN_NOT_FOUND.
                return Ok(Route::Here);
            };
            let owner = match owner.replica {
                Some(replica) if replica == me => return Ok(Route::Here),
                Some(replica) if owner.live => replica,
                // Ended runs have no owner, and an orphaned active run is taken over here.
                _ => {
                    self.claim_orphan(run_id).await?;
                    return Ok(Route::Here);
                }
            };
            if let Some(answer) = self.hand_over(run_id, &owner, &call, deadline).await? {
                return Ok(Route::Answered(answer));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::new(
                    ErrorCode::ReplicaUnavailable,
                    format!("replica {owner}, which owns run {run_id}, did not answer"),
                ));
            }
        }
    }

    /// One call to `owner`: its answer, or `None` when the owner lost the run before taking
    /// the call (it is withdrawn; the caller routes it again).
    async fn hand_over(
        &self,
        run_id: &str,
        owner: &str,
        call: &Call,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Value>, ApiError> {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return Ok(None);
        };
        let store = self.store();
        let id = uuid::Uuid::new_v4().to_string();
        let waiter = Arc::new(Notify::new());
        cluster.calls.calls().insert(id.clone(), waiter.clone());
        let _registered = Unregister(&cluster.calls, &id);
        let body =
            serde_json::to_value(call).map_err(|error| ApiError::internal(error.to_string()))?;
        store.send_call(&id, owner, run_id, body).await?;
        let check_every = cluster.options.lease_ttl / 3;
        loop {
            let woken = tokio::time::timeout(check_every, waiter.notified())
                .await
                .is_ok();
            if let Some(answer) = store.call_answer(&id).await? {
                return Ok(Some(answer));
            }
            if woken {
                continue;
            }
            let moved = match store.run_owner(run_id).await? {
                Some(now) => !(now.live && now.replica.as_deref() == Some(owner)),
                None => true,
            };
            if (moved || tokio::time::Instant::now() >= deadline)
                && store.withdraw_call(&id).await?
            {
                return Ok(None);
            }
        }
    }

    /// Claims a run no live replica owns, and resumes it here, before acting on it.
    async fn claim_orphan(&self, run_id: &str) -> Result<(), ApiError> {
        if let Some(run) = self.store().claim_run(run_id).await? {
            tracing::info!(%run_id, "took over a run to answer a call");
            self.spawn_recovery(run);
        }
        Ok(())
    }

    /// Takes a call addressed to this replica and answers it (in a task of its own).
    pub(crate) fn take_call(&self, id: String) {
        let service = self.clone();
        self.inner.tasks.spawn(async move {
            let taken = match service.store().take_call(&id).await {
                Ok(taken) => taken,
                Err(error) => {
                    tracing::warn!(call = %id, %error, "a call could not be read");
                    return;
                }
            };
            let Some((run_id, body)) = taken else { return };
            let answer = match serde_json::from_value::<Call>(body) {
                Ok(call) => service.carry_out(&run_id, call).await,
                Err(error) => Err(ApiError::internal(format!("unreadable call: {error}"))),
            };
            let answer = match answer {
                Ok(value) => json!({ "ok": value }),
                Err(error) => json!({ "error": {
                    "errorCode": error.code.as_str(),
                    "message": error.message,
                    "details": error.details,
                }}),
            };
            if let Err(error) = service.store().answer_call(&id, answer).await {
                tracing::warn!(call = %id, %error, "a call's answer could not be stored");
            }
        });
    }

    /// Runs a call as the owner (the same methods a local call takes).
    async fn carry_out(&self, run_id: &str, call: Call) -> Result<Value, ApiError> {
        match call {
            Call::Cancel { reason } => value(self.cancel(run_id, reason).await.map(|_| ())),
            Call::Suspend { reason } => value(self.suspend(run_id, reason).await.map(|_| ())),
            Call::Resume { reason } => value(self.resume(run_id, reason).await.map(|_| ())),
            Call::Message { body } => value(self.send_message(run_id, &body).await),
            Call::Signal { body } => value(self.send_signal(run_id, &body).await),
            Call::Context { body } => value(self.update_context(run_id, &body).await),
            Call::Artifact { body } => value(self.create_artifact(run_id, &body).await),
        }
    }
}

fn value<T: Serialize>(result: Result<T, ApiError>) -> Result<Value, ApiError> {
    result.and_then(|value| {
        serde_json::to_value(value).map_err(|error| ApiError::internal(error.to_string()))
    })
}

/// The owner's answer as the caller's result: its value, or its error as it was.
pub(crate) fn answer<T: serde::de::DeserializeOwned>(answer: Value) -> Result<T, ApiError> {
    if let Some(error) = answer.get("error") {
        let code = error["errorCode"]
            .as_str()
            .and_then(|code| ErrorCode::ALL.iter().find(|known| known.as_str() == code))
            .copied()
            .unwrap_or(ErrorCode::Internal);
        let message = error["message"].as_str().unwrap_or_default().to_owned();
        let error = ApiError::new(code, message);
        return Err(match error_details(&answer) {
            Some(details) => error.with_details(details),
            None => error,
        });
    }
    serde_json::from_value(answer.get("ok").cloned().unwrap_or(Value::Null))
        .map_err(|error| ApiError::internal(format!("unreadable answer: {error}")))
}

fn error_details(answer: &Value) -> Option<Value> {
    answer["error"]
        .get("details")
        .filter(|details| !details.is_null())
        .cloned()
}

/// Drops a caller's registration however its wait ends.
struct Unregister<'a>(&'a Waiting, &'a str);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.calls().remove(self.1);
    }
}
