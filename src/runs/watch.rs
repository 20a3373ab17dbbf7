//! The one live-stream pipeline behind gRPC `WatchRun`, SSE `/runs/{id}/stream` and grpc-web:
//! subscribe to the hub first, backfill from the store after the client's cursor, then follow
//! the hub, dropping anything at or below the cursor. A subscriber that falls behind the hub
//! (or sees a gap) re-reads from the store instead of losing events.
//!
//! [`Watch`] is a hand-written stream rather than a generator: with thousands of subscribers
//! on a run, each event polls every one of them, and this keeps what a poll touches to one
//! small struct (the store queries, large futures, are boxed and live only while they run).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::service::RunService;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::events::canonical::CanonicalEvent;
use crate::events::hub::{Published, RecvError, Shared, Subscription, TryRecvError};
use crate::events::type_filter::TypeFilter;
use crate::projection::state::RunState;
use crate::time::Timestamp;

/// Events read from the store per backfill query.
const BACKFILL_PAGE: u64 = 500;

#[derive(Debug, Clone)]
pub enum WatchItem {
    Snapshot(Arc<Shared<RunState>>),
    Event(Arc<Shared<CanonicalEvent>>),
    /// Every event of a published batch, in order: how live events usually come (a batch
    /// partly sent already comes as single events instead).
    Events(Arc<Published>),
    Heartbeat(Timestamp),
}

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Resume after this seq (exclusive).
    pub after_seq: i64,
    /// Send the current projection first.
    pub include_snapshot: bool,
    /// Quiet interval after which a heartbeat is sent.
    pub heartbeat: Duration,
    /// End the stream after the run's terminal event instead of staying open.
    pub end_at_terminal: bool,
    /// Send only these types (`None`: all). The cursor moves past the others too, so a
    /// filtered stream resumes after its last event exactly as an unfiltered one.
    pub types: Option<TypeFilter>,
    /// How long to wait for a run that does not exist yet (zero: not at all).
    pub wait_for_run: Duration,
}

pub(super) fn is_terminal_event(event: &CanonicalEvent) -> bool {
    matches!(
        event.event_type.as_str(),
        crate::events::canonical::types::RUN_COMPLETED
            | crate::events::canonical::types::RUN_FAILED
            | crate::events::canonical::types::RUN_CANCELLED
    )
}

/// The longest a stream's client may wait for its run to appear.
pub const MAX_WAIT_FOR_RUN_MS: i64 = 60_000;

/// The wait for a run a stream request asks for: `field` in milliseconds, none when absent.
pub fn wait_for_run(ms: Option<i64>, field: &str) -> Result<Duration, FieldError> {
    match ms {
        None => Ok(Duration::ZERO),
        Some(ms) if (0..=MAX_WAIT_FOR_RUN_MS).contains(&ms) => {
            Ok(Duration::from_millis(ms.unsigned_abs()))
        }
        Some(_) => Err(FieldError::new(
            field,
            format!("must be between 0 and {MAX_WAIT_FOR_RUN_MS}"),
        )),
    }
}

impl RunService {
    /// A live stream of a run. Fails only if the run does not exist (after waiting
    /// `wait_for_run` for it) or has too many subscribers.
    pub async fn watch(&self, run_id: &str, options: WatchOptions) -> Result<Watch, ApiError> {
        // Subscribing before the first read is what makes the seam between stored and live
        // events lossless.
        let limit = self.options().max_subscribers_per_run;
        let mut live = self.hub().subscribe_limited(run_id, limit).ok_or_else(|| {
            ApiError::new(
                ErrorCode::TooManySubscribers,
                format!("run {run_id} has {limit} live subscribers already; try again later"),
            )
        })?;
        let run = match self.get(run_id).await {
            Err(error)
                if error.code == ErrorCode::RunNotFound && !options.wait_for_run.is_zero() =>
            {
                self.appearance(run_id, &mut live, options.wait_for_run)
                    .await?
            }
            found => found?,
        };
        let cursor = options.after_seq.max(0);
        let ended_at = run.status.is_terminal().then_some(run.last_event_seq);
        let now = Instant::now();
        let mut watch = Watch {
            service: self.clone(),
            run_id: run.id,
            live,
            cursor,
            ended: ended_at.is_some_and(|last| last <= cursor),
            ended_at,
            phase: Phase::Done,
            ready: VecDeque::new(),
            heartbeat: Box::pin(tokio::time::sleep_until(now + options.heartbeat)),
            heartbeat_waker: None,
            heartbeat_at: now + options.heartbeat,
            last_sent: now,
            options,
        };
        watch.phase = if watch.options.include_snapshot {
            let (service, run_id) = (watch.service.clone(), watch.run_id.clone());
            Phase::Snapshot(Box::pin(async move { service.state(&run_id).await }))
        } else {
            watch.backfill()
        };
        Ok(watch)
    }

    /// The run `run_id` once it exists, or `RUN_NOT_FOUND` after `wait`. A run's first
    /// publication here (its owner's commit, or another replica's announced and followed,
    /// since `live` makes this replica a subscriber of the run) is the wake-up; what it carried
    /// is left to the backfill, which reads the store after it. The store is read once more
    /// at the deadline: a wake-up can be lost (an announcement is), the answer cannot.
    async fn appearance(
        &self,
        run_id: &str,
        live: &mut Subscription,
        wait: Duration,
    ) -> Result<crate::domain::run::Run, ApiError> {
        let deadline = Instant::now() + wait;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        match self.get(run_id).await {
                            Err(error) if error.code == ErrorCode::RunNotFound => {}
                            found => return found,
                        }
                    }
                    Err(RecvError::Closed) => return self.get(run_id).await,
                },
                () = tokio::time::sleep_until(deadline) => return self.get(run_id).await,
            }
        }
    }
}

type Query<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send>>;

enum Phase {
    /// Reading the projection for the first item.
    Snapshot(Query<RunState>),
    /// Reading a page of stored events after the cursor.
    Backfill(Query<Vec<CanonicalEvent>>),
    /// Following the hub.
    Live,
    Done,
}

/// A run's live stream (see the module documentation); its items are in `seq` order, each
/// event once.
pub struct Watch {
    service: RunService,
    run_id: String,
    live: Subscription,
    options: WatchOptions,
    /// The last event sent.
    cursor: i64,
    /// The run's terminal event was sent, or the run had ended when the stream began and its
    /// stored events are sent.
    ended: bool,
    /// The run's last seq, when it had ended when the stream began.
    ended_at: Option<i64>,
    phase: Phase,
    /// Items to send before anything else is read.
    ready: VecDeque<WatchItem>,
    /// Armed for the next heartbeat; re-armed only when it fires, not per batch: with
    /// thousands of subscribers, a timer reset per event adds up.
    heartbeat: Pin<Box<Sleep>>,
    /// The waker the armed timer holds, and its deadline.
    heartbeat_waker: Option<Waker>,
    heartbeat_at: Instant,
    last_sent: Instant,
}

impl Watch {
    fn wanted(&self, event: &CanonicalEvent) -> bool {
        self.options
            .types
            .as_ref()
            .is_none_or(|types| types.matches(&event.event_type))
    }

    fn backfill(&self) -> Phase {
        let (service, run_id, after) = (self.service.clone(), self.run_id.clone(), self.cursor);
        Phase::Backfill(Box::pin(async move {
            Ok(service
                .store()
                .events_between(&run_id, after, None, BACKFILL_PAGE)
                .await?)
        }))
    }

    fn backfilled(&mut self, events: Vec<CanonicalEvent>) {
        let full = events.len() as u64 == BACKFILL_PAGE;
        for event in events {
            self.cursor = event.seq;
            self.ended |= is_terminal_event(&event);
            if self.wanted(&event) {
                self.ready.push_back(WatchItem::Event(Shared::new(event)));
            }
        }
        if full {
            self.phase = self.backfill();
            return;
        }
        // A run that had ended when the stream began is over once its stored events are
        // sent, even if envelopes later than the catch-up bound follow its terminal event.
        self.ended |= self.ended_at.is_some_and(|last| last <= self.cursor);
        self.phase = if self.ended && self.options.end_at_terminal {
            Phase::Done
        } else {
            Phase::Live
        };
    }

    /// Takes a published batch, and with snapshots whatever else is ready (one snapshot for
    /// the burst). Without snapshots there is nothing to gain from looking further, and each
    /// look takes the channel's lock, which every subscriber of the run shares.
    fn follow(&mut self, batch: Arc<Published>) {
        let mut next = Some(batch);
        let mut last = None;
        while let Some(batch) = next.take() {
            if !self.take_events(&batch) {
                self.phase = self.backfill();
                return;
            }
            if self.options.include_snapshot {
                match self.live.try_recv() {
                    Ok(batch) => next = Some(batch),
                    Err(TryRecvError::Recv(RecvError::Lagged(_))) => {
                        self.phase = self.backfill();
                        return;
                    }
                    Err(_) => {}
                }
            }
            last = Some(batch);
        }
        let Some(last) = last else { return };
        if self.options.include_snapshot {
            self.ready
                .push_back(WatchItem::Snapshot(last.state.clone()));
        }
        self.last_sent = last.published_at;
        if self.ended && self.options.end_at_terminal {
            self.phase = Phase::Done;
        }
    }

    /// Queues the batch's events after the cursor; `false` on a gap (events the hub did not
    /// bring this subscriber, which the store has).
    fn take_events(&mut self, batch: &Arc<Published>) -> bool {
        // A batch's seqs are dense, so when its first is the next one, all of it is new (and
        // goes whole when the filter, if any, keeps all of it).
        if let (Some(first), Some(last)) = (batch.events.first(), batch.events.last())
            && first.seq == self.cursor + 1
            && last.seq == first.seq + batch.events.len() as i64 - 1
            && (self.options.types.is_none() || batch.events.iter().all(|event| self.wanted(event)))
        {
            self.cursor = last.seq;
            self.ended |= batch.events.iter().any(|event| is_terminal_event(event));
            self.ready.push_back(WatchItem::Events(batch.clone()));
            return true;
        }
        for event in &batch.events {
            if event.seq <= self.cursor {
                continue;
            }
            if event.seq != self.cursor + 1 {
                return false;
            }
            self.cursor = event.seq;
            self.ended |= is_terminal_event(event);
            if self.wanted(event) {
                self.ready.push_back(WatchItem::Event(event.clone()));
            }
        }
        true
    }

    /// Queues a heartbeat when the stream has been quiet for the interval; `false` (with the
    /// timer armed) when it is not due.
    fn poll_heartbeat(&mut self, cx: &mut Context<'_>) -> bool {
        // The armed timer keeps the waker it was polled with, so until its deadline it needs
        // no poll unless the stream is polled with another waker: a timer poll (or even a
        // look at its state, in memory of its own) per event and subscriber adds up.
        if self
            .heartbeat_waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
            && Instant::now() < self.heartbeat_at
        {
            return false;
        }
        // Outside the cooperative budget: a timer that declined for want of budget would hold
        // no waker, and the check above would never poll it again.
        while std::pin::pin!(tokio::task::unconstrained(self.heartbeat.as_mut()))
            .poll(cx)
            .is_ready()
        {
            let now = Instant::now();
            let due = self.last_sent + self.options.heartbeat;
            if now >= due {
                self.ready
                    .push_back(WatchItem::Heartbeat(crate::time::now()));
                self.last_sent = now;
                self.heartbeat_at = now + self.options.heartbeat;
                self.heartbeat.as_mut().reset(self.heartbeat_at);
                // Re-armed, but not yet polled with a waker.
                self.heartbeat_waker = None;
                return true;
            }
            self.heartbeat_at = due;
            self.heartbeat.as_mut().reset(due);
        }
        self.heartbeat_waker = Some(cx.waker().clone());
        false
    }
}

impl Stream for Watch {
    type Item = Result<WatchItem, ApiError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(item)));
            }
            // A failed query ends the stream after its error.
            let failed = |this: &mut Watch, error| {
                this.phase = Phase::Done;
                Poll::Ready(Some(Err(error)))
            };
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Snapshot(query) => match ready!(query.as_mut().poll(cx)) {
                    Ok(state) => {
                        this.ready
                            .push_back(WatchItem::Snapshot(Shared::new(state)));
                        this.phase = this.backfill();
                    }
                    Err(error) => return failed(this, error),
                },
                Phase::Backfill(query) => match ready!(query.as_mut().poll(cx)) {
                    Ok(events) => this.backfilled(events),
                    Err(error) => return failed(this, error),
                },
                Phase::Live => match this.live.poll_recv(cx) {
                    Poll::Ready(Ok(batch)) => this.follow(batch),
                    Poll::Ready(Err(RecvError::Lagged(_))) => this.phase = this.backfill(),
                    Poll::Ready(Err(RecvError::Closed)) => this.phase = Phase::Done,
                    Poll::Pending => {
                        if !this.poll_heartbeat(cx) {
                            return Poll::Pending;
                        }
                    }
                },
            }
        }
    }
}
