//! The reasons of status changes requested through this process (cancel, suspend, resume), kept
//! until the event recording the change takes its own, whichever task writes that event. Kept
//! per run and status asked for: a suspend and a cancel of one run at once each keep theirs, so
//! neither's reason goes on the other's event, nor is dropped when the other finishes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::domain::status::RunStatus;

#[derive(Default)]
pub(super) struct RequestedReasons(Mutex<HashMap<(String, RunStatus), String>>);

impl RequestedReasons {
    /// Keeps `reason` for the run's change to `to`.
    pub(super) fn request(&self, run_id: &str, to: RunStatus, reason: String) {
        self.reasons().insert((run_id.to_owned(), to), reason);
    }

    /// Takes the reason asked for the run's change to `to`.
    pub(super) fn take(&self, run_id: &str, to: RunStatus) -> Option<String> {
        self.reasons().remove(&(run_id.to_owned(), to))
    }

    /// Drops whatever a run that has ended still has.
    pub(super) fn forget(&self, run_id: &str) {
        self.reasons().retain(|(id, _), _| id != run_id);
    }

    fn reasons(&self) -> MutexGuard<'_, HashMap<(String, RunStatus), String>> {
        // Each change is one map operation: a panicking holder leaves the map whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspend_and_a_cancel_of_one_run_keep_their_own_reasons() {
        let reasons = RequestedReasons::default();
        reasons.request("run", RunStatus::Cancelled, "stop".to_owned());
        reasons.request("run", RunStatus::Suspended, "pause".to_owned());
        assert_eq!(
            reasons.take("run", RunStatus::Cancelled).as_deref(),
            Some("stop"),
            "the cancel's event gets the cancel's reason"
        );
        reasons.request("run", RunStatus::Cancelled, "stop".to_owned());
        // The suspend finishing takes only its own.
        assert_eq!(
            reasons.take("run", RunStatus::Suspended).as_deref(),
            Some("pause")
        );
        assert_eq!(reasons.take("run", RunStatus::Suspended), None);
        assert_eq!(
            reasons.take("run", RunStatus::Cancelled).as_deref(),
            Some("stop")
        );
    }

    #[test]
    fn an_ended_run_s_reasons_are_forgotten_and_no_other_s() {
        let reasons = RequestedReasons::default();
        reasons.request("run", RunStatus::Suspended, "pause".to_owned());
        reasons.request("run", RunStatus::Cancelled, "stop".to_owned());
        reasons.request("other", RunStatus::Cancelled, "stop too".to_owned());
        reasons.forget("run");
        assert_eq!(reasons.take("run", RunStatus::Suspended), None);
        assert_eq!(reasons.take("run", RunStatus::Cancelled), None);
        assert_eq!(
            reasons.take("other", RunStatus::Cancelled).as_deref(),
            Some("stop too")
        );
    }
}
