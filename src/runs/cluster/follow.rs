//! Another replica's runs, as this replica's subscribers see them: a commit announced by the
//! run's owner wakes the run's follower here (only while somebody here subscribes to the run),
//! which reads the new events from the store, folds them into the run's state and publishes
//! them to the local hub. Subscribers then go through the one watch pipeline as for a local
//! run: a batch that does not follow on from what they have sent makes them re-read the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::error::ApiError;
use crate::events::hub::{Published, Shared};
use crate::projection::state::RunState;
use crate::runs::RunService;
use crate::store::Committed;

/// Events read per store query while catching up.
const PAGE: u64 = 1_000;

/// The runs this replica follows, each with the wake-up of its follower task.
#[derive(Default)]
pub(crate) struct Followers {
    runs: Mutex<HashMap<String, Arc<Follower>>>,
}

struct Follower {
    wake: Notify,
    /// The first seq of the commit that started the follower: what its first batch holds.
    from: i64,
}

impl Followers {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Follower>>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Another replica committed events of a run: its follower here catches up, if anybody
    /// here subscribes to the run.
    pub(crate) fn committed(&self, service: &RunService, committed: Committed) {
        if !service.hub().has_subscribers(&committed.run_id) {
            return;
        }
        let mut runs = self.runs();
        if let Some(follower) = runs.get(&committed.run_id) {
            follower.wake.notify_one();
            return;
        }
        let follower = Arc::new(Follower {
            wake: Notify::new(),
            from: committed.first_seq,
        });
        follower.wake.notify_one();
        runs.insert(committed.run_id.clone(), follower.clone());
        drop(runs);
        let service = service.clone();
        service
            .inner
            .tasks
            .clone()
            .spawn(async move { follow(service, committed.run_id, follower).await });
    }

    /// Every follower catches up from the store (announcements may have been lost).
    pub(crate) fn wake_all(&self) {
        for follower in self.runs().values() {
            follower.wake.notify_one();
        }
    }

    /// Ends a follower whose run nobody here reads any more; `false` when it was woken again
    /// meanwhile by a subscriber's run (it keeps going).
    fn retire(&self, service: &RunService, run_id: &str, follower: &Arc<Follower>) -> bool {
        let mut runs = self.runs();
        if service.hub().has_subscribers(run_id) {
            return false;
        }
        if runs
            .get(run_id)
            .is_some_and(|kept| Arc::ptr_eq(kept, follower))
        {
            runs.remove(run_id);
        }
        true
    }
}

async fn follow(service: RunService, run_id: String, follower: Arc<Follower>) {
    let Some(cluster) = service.inner.cluster.as_ref() else {
        return;
    };
    let shutdown = service.inner.shutdown.clone();
    let mut state: Option<RunState> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = follower.wake.notified() => {}
        }
        if cluster.followers.retire(&service, &run_id, &follower) {
            return;
        }
        match catch_up(&service, &run_id, follower.from, &mut state).await {
            Ok(()) => {}
            // Tried again at the next announcement or resynchronization; subscribers meanwhile
            // see nothing new, and no gap.
            Err(error) => tracing::warn!(%run_id, %error, "following a run failed"),
        }
    }
}

/// Publishes the run's events after those already published here, with the state after them.
async fn catch_up(
    service: &RunService,
    run_id: &str,
    from: i64,
    state: &mut Option<RunState>,
) -> Result<(), ApiError> {
    let store = service.store();
    loop {
        let (after, current) = match state.take() {
            Some(current) => (current.timeline.latest_seq, current),
            None => {
                // The first batch: the run's state now, and the events of the announcement
                // that woke the follower up to it.
                let current = service.state(run_id).await?;
                let events = store
                    .events_between(run_id, from - 1, Some(current.timeline.latest_seq), PAGE)
                    .await?;
                if !events.is_empty() {
                    publish(service, run_id, events, &current);
                }
                *state = Some(current);
                continue;
            }
        };
        let events = store.events_between(run_id, after, None, PAGE).await?;
        let mut current = current;
        if events.is_empty() {
            *state = Some(current);
            return Ok(());
        }
        for event in &events {
            crate::projection::reducer::apply(&mut current, event);
        }
        let full = events.len() as u64 == PAGE;
        publish(service, run_id, events, &current);
        *state = Some(current);
        if !full {
            return Ok(());
        }
    }
}

fn publish(
    service: &RunService,
    run_id: &str,
    events: Vec<crate::events::canonical::CanonicalEvent>,
    state: &RunState,
) {
    service.hub().publish(
        run_id,
        Published::new(
            events.into_iter().map(Shared::new).collect(),
            Shared::new(state.clone()),
        ),
    );
}
