//! Another replica's runs, as this replica's subscribers see them: a commit announced by the
//! run's owner wakes the run's follower here (only while somebody here subscribes to the run),
//! which reads the new events from the store, folds them into the run's state and publishes
//! them to the local hub. Subscribers then go through the one watch pipeline as for a local
//! run: a batch that does not follow on from what they have sent makes them re-read the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::error::ApiError;
use crate::events::canonical::CanonicalEvent;
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
    /// What announcements since the last catch-up carried: each commit's events, or `None`
    /// for one that came without them (they are then read from the store).
    carried: Mutex<Vec<Option<Vec<CanonicalEvent>>>>,
    /// The first seq of the commit that started the follower: what its first batch holds;
    /// `None` for a follower started by a resynchronization, whose first batch is the run's
    /// latest event (a subscriber that had it skips it, one that is further behind re-reads
    /// the store).
    from: Option<i64>,
}

impl Followers {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Follower>>> {
        lock(&self.runs)
    }

    /// Another replica committed events of a run: its follower here catches up, if anybody
    /// here subscribes to the run.
    pub(crate) fn committed(&self, service: &RunService, committed: Committed) {
        if !service.hub().has_subscribers(&committed.run_id) {
            return;
        }
        let events = committed.events();
        let mut runs = self.runs();
        let follower = Self::wake_or_start(
            &mut runs,
            service,
            committed.run_id,
            Some(committed.first_seq),
        );
        lock(&follower.carried).push(events);
    }

    fn wake_or_start(
        runs: &mut HashMap<String, Arc<Follower>>,
        service: &RunService,
        run_id: String,
        from: Option<i64>,
    ) -> Arc<Follower> {
        if let Some(follower) = runs.get(&run_id) {
            follower.wake.notify_one();
            return follower.clone();
        }
        let follower = Arc::new(Follower {
            wake: Notify::new(),
            carried: Mutex::default(),
            from,
        });
        follower.wake.notify_one();
        runs.insert(run_id.clone(), follower.clone());
        let (service, started) = (service.clone(), follower.clone());
        service
            .inner
            .tasks
            .clone()
            .spawn(async move { follow(service, run_id, started).await });
        follower
    }

    /// Announcements may have been lost: every run somebody here subscribes to is caught up
    /// from the store, by its follower or by one started for it (a run of this replica's gets
    /// one too, which finds nothing its subscribers lack and retires at its next wake-up).
    pub(crate) fn resynchronize(&self, service: &RunService) {
        let subscribed = service.hub().subscribed_runs();
        let mut runs = self.runs();
        for follower in runs.values() {
            follower.wake.notify_one();
        }
        for run_id in subscribed {
            if !runs.contains_key(&run_id) {
                // Nothing carried: the new follower reads the store.
                Self::wake_or_start(&mut runs, service, run_id, None);
            }
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
    // A run followed from its creation's announcement has no events before those it carried:
    // its state is their fold, as its creator's was, with nothing read from the store.
    let mut state = (follower.from == Some(1)).then(|| RunState::empty(&run_id));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = follower.wake.notified() => {}
        }
        if cluster.followers.retire(&service, &run_id, &follower) {
            return;
        }
        let carried = std::mem::take(&mut *lock(&follower.carried));
        if let Some(current) = state.as_mut()
            && let Some(events) = follows_on(current, carried)
        {
            for event in &events {
                crate::projection::reducer::apply(current, event);
            }
            publish(&service, &run_id, events, current);
            continue;
        }
        match catch_up(&service, &run_id, follower.from, &mut state).await {
            Ok(()) => {}
            // Tried again at the next announcement or resynchronization; subscribers meanwhile
            // see nothing new, and no gap.
            Err(error) => tracing::warn!(%run_id, %error, "following a run failed"),
        }
    }
}

/// The events the announcements carried, when together they are exactly the ones after those
/// published here (announcements of one run may arrive out of order; one without its events,
/// or a gap, means the store is read instead).
fn follows_on(
    state: &RunState,
    carried: Vec<Option<Vec<CanonicalEvent>>>,
) -> Option<Vec<CanonicalEvent>> {
    let mut commits = carried.into_iter().collect::<Option<Vec<_>>>()?;
    commits.retain(|events| !events.is_empty());
    commits.sort_by_key(|events| events[0].seq);
    let mut next = state.timeline.latest_seq + 1;
    let mut events = Vec::new();
    for commit in commits {
        for event in commit {
            if event.seq < next {
                continue;
            }
            if event.seq != next {
                return None;
            }
            next += 1;
            events.push(event);
        }
    }
    (!events.is_empty()).then_some(events)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Publishes the run's events after those already published here, with the state after them.
async fn catch_up(
    service: &RunService,
    run_id: &str,
    from: Option<i64>,
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
                let latest = current.timeline.latest_seq;
                let events = store
                    .events_between(run_id, from.unwrap_or(latest) - 1, Some(latest), PAGE)
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

fn publish(service: &RunService, run_id: &str, events: Vec<CanonicalEvent>, state: &RunState) {
    service.hub().publish(
        run_id,
        Published::new(
            events.into_iter().map(Shared::new).collect(),
            Shared::new(state.clone()),
        ),
    );
}
