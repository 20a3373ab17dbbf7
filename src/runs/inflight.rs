//! Messages the control plane has handed to the runtime whose envelopes the session observer has
//! not stored yet. A run's terminal event waits (up to a bound) until there are none, so that
//! everything the runtime accepted before a cancel is recorded before `run.cancelled`.
//!
//! An id is registered *before* its `Send`, so the observer can never store the envelope first;
//! it is settled when the observer stores the envelope, or at once when the runtime refuses the
//! message or answers that it is a duplicate (its envelope was accepted earlier).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use macp_runtime::pb;
use tokio::sync::Notify;

#[derive(Default)]
pub struct InFlight {
    runs: Mutex<HashMap<String, Pending>>,
    settled: Notify,
}

#[derive(Default)]
struct Pending {
    ids: HashSet<String>,
    /// The reason of a cancel requested through this process: it goes on `run.cancelled`
    /// whichever task writes that event.
    cancel_reason: Option<String>,
}

impl InFlight {
    fn expect(&self, run_id: &str, message_id: &str) {
        self.with_runs(|runs| {
            runs.entry(run_id.to_owned())
                .or_default()
                .ids
                .insert(message_id.to_owned());
        });
    }

    /// Runs `send` for a session message, keeping it in flight from before the send until the
    /// observer stores its envelope.
    pub async fn track<E>(
        &self,
        run_id: &str,
        message_id: &str,
        send: impl Future<Output = Result<pb::Ack, E>>,
    ) -> Result<pb::Ack, E> {
        self.expect(run_id, message_id);
        let sent = send.await;
        if sent.as_ref().is_ok_and(|ack| !ack.duplicate) {
            return sent;
        }
        // Refused, or accepted earlier: no envelope is on its way for this send.
        self.settle(run_id, [message_id]);
        sent
    }

    /// Marks messages as done with: stored, refused, or duplicates.
    pub fn settle<'a>(&self, run_id: &str, message_ids: impl IntoIterator<Item = &'a str>) {
        let removed = self.with_runs(|runs| {
            let Some(pending) = runs.get_mut(run_id) else {
                return false;
            };
            let mut removed = false;
            for id in message_ids {
                removed |= pending.ids.remove(id);
            }
            if pending.ids.is_empty() && pending.cancel_reason.is_none() {
                runs.remove(run_id);
            }
            removed
        });
        if removed {
            self.settled.notify_waiters();
        }
    }

    pub fn is_settled(&self, run_id: &str) -> bool {
        self.with_runs(|runs| {
            runs.get(run_id)
                .is_none_or(|pending| pending.ids.is_empty())
        })
    }

    /// Waits until the run has nothing in flight; `false` when `within` passed first.
    pub async fn wait_settled(&self, run_id: &str, within: Duration) -> bool {
        let wait = async {
            loop {
                // Enabled before the check, so a settle in between is not missed.
                let notified = self.settled.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.is_settled(run_id) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    pub fn set_cancel_reason(&self, run_id: &str, reason: Option<&str>) {
        self.with_runs(|runs| {
            runs.entry(run_id.to_owned()).or_default().cancel_reason = reason.map(str::to_owned);
        });
    }

    pub fn cancel_reason(&self, run_id: &str) -> Option<String> {
        self.with_runs(|runs| {
            runs.get(run_id)
                .and_then(|pending| pending.cancel_reason.clone())
        })
    }

    /// Drops what is known about a finished run.
    pub fn forget(&self, run_id: &str) {
        self.with_runs(|runs| runs.remove(run_id));
    }

    fn with_runs<T>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> T) -> T {
        f(&mut self
            .runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_last_message_settles() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.expect("r1", "m1");
        in_flight.expect("r1", "m2");
        in_flight.expect("r2", "m1");
        assert!(!in_flight.is_settled("r1"));

        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.wait_settled("r1", Duration::from_secs(30)).await }
        });
        in_flight.settle("r1", ["m1"]);
        in_flight.settle("r1", ["m2", "unknown"]);
        assert!(waiter.await.expect("the waiter runs"));
        assert!(in_flight.is_settled("r1"));
        assert!(!in_flight.is_settled("r2"), "runs are kept apart");
    }

    #[tokio::test]
    async fn a_wait_gives_up_after_its_bound() {
        let in_flight = InFlight::default();
        in_flight.expect("r1", "m1");
        assert!(
            !in_flight
                .wait_settled("r1", Duration::from_millis(20))
                .await
        );
    }

    #[test]
    fn the_cancel_reason_lives_until_the_run_is_forgotten() {
        let in_flight = InFlight::default();
        assert!(
            in_flight.is_settled("r1"),
            "an unknown run has nothing in flight"
        );
        in_flight.set_cancel_reason("r1", Some("operator request"));
        assert_eq!(
            in_flight.cancel_reason("r1").as_deref(),
            Some("operator request")
        );
        in_flight.forget("r1");
        assert_eq!(in_flight.cancel_reason("r1"), None);
    }
}
