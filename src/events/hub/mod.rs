//! Live fan-out: after a batch of a run's events is committed, it is published here with the
//! projection it produced. Subscribers that fall behind re-read from the store (the hub keeps
//! only the batches some subscriber has yet to read, a bounded number), so a slow reader cannot
//! lose events.
//!
//! Two channels implement it, chosen by [`Stack`]: `ring`, built for one writer and thousands
//! of readers (a reader registers for the next batch under the lock it reads with, and learns
//! that nothing new came without it), and `broadcast`, tokio's broadcast channel. The streams
//! benchmark measures one against the other (ARCHITECTURE.md, "The transport A/B").

mod broadcast;
mod ring;

use std::future::poll_fn;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;

pub use ring::{Bounds, Deliveries};

use super::canonical::CanonicalEvent;
use crate::projection::state::RunState;
use crate::stack::Stack;

/// A value shared by every subscriber, with its JSON and its wire frame rendered once for all of
/// them (a thousand SSE clients of one run serialize and frame each event once, not a thousand
/// times).
#[derive(Debug)]
pub struct Shared<T> {
    value: T,
    json: OnceLock<Arc<str>>,
    frame: OnceLock<Bytes>,
}

impl<T: serde::Serialize> Shared<T> {
    pub fn new(value: T) -> Arc<Self> {
        Arc::new(Shared {
            value,
            json: OnceLock::new(),
            frame: OnceLock::new(),
        })
    }

    /// A value whose JSON is already known (the writer serializes each projection once, for the
    /// store, and the hub reuses that text).
    pub fn with_json(value: T, json: Arc<str>) -> Arc<Self> {
        Arc::new(Shared {
            value,
            json: OnceLock::from(json),
            frame: OnceLock::new(),
        })
    }

    /// The value as a wire frame built from its JSON by `render` (the edge's one framing, SSE):
    /// rendered by the first subscriber that asks, then shared by reference.
    pub fn frame(&self, render: impl FnOnce(&str) -> Bytes) -> Bytes {
        self.frame.get_or_init(|| render(&self.json())).clone()
    }

    pub fn json(&self) -> Arc<str> {
        self.json
            .get_or_init(|| {
                // Our own types always serialize; an empty object keeps the stream alive if not.
                serde_json::to_string(&self.value)
                    .unwrap_or_else(|_| "{}".to_owned())
                    .into()
            })
            .clone()
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// One committed batch of a run, and the projection after it.
#[derive(Debug)]
pub struct Published {
    pub events: Vec<Arc<Shared<CanonicalEvent>>>,
    pub state: Arc<Shared<RunState>>,
    /// When it was published (subscribers time their heartbeats from it, without a clock
    /// read each).
    pub published_at: tokio::time::Instant,
    /// The frames of all the events, back to back: what most subscribers are sent.
    frames: OnceLock<Bytes>,
}

impl Published {
    pub fn new(events: Vec<Arc<Shared<CanonicalEvent>>>, state: Arc<Shared<RunState>>) -> Self {
        Published {
            events,
            state,
            published_at: tokio::time::Instant::now(),
            frames: OnceLock::new(),
        }
    }

    /// About the memory the batch holds once its subscribers have rendered it: each event's
    /// JSON, its SSE frame and the batch's frames are three copies of about the same bytes (the
    /// events' JSON is rendered here, as the first subscriber would); and the projection's size
    /// when its JSON is rendered already (`None` otherwise: rendering a projection nobody may
    /// ask for would cost more than the estimate is worth).
    pub(crate) fn weight(&self) -> (usize, Option<usize>) {
        /// The event's and its frame's own allocations and headers.
        const PER_EVENT: usize = 256;
        let events = self
            .events
            .iter()
            .map(|event| 3 * event.json().len() + PER_EVENT)
            .sum();
        (events, self.state.json.get().map(|json| json.len()))
    }

    /// Every event's frame (`frame` renders one), back to back in one buffer, rendered by the
    /// first subscriber that asks: a batch of several events reaches each subscriber without a
    /// buffer of its own.
    pub fn frames(&self, frame: impl Fn(&Arc<Shared<CanonicalEvent>>) -> Bytes) -> Bytes {
        self.frames
            .get_or_init(|| match self.events.as_slice() {
                [event] => frame(event),
                events => {
                    let frames: Vec<Bytes> = events.iter().map(&frame).collect();
                    let mut all = Vec::with_capacity(frames.iter().map(Bytes::len).sum());
                    frames.iter().for_each(|one| all.extend_from_slice(one));
                    Bytes::from(all)
                }
            })
            .clone()
    }
}

/// Why a subscription returned no batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell this many batches behind; it reads on from the oldest kept one.
    #[error("fell {0} batches behind")]
    Lagged(u64),
    /// The hub is gone (the service is shutting down).
    #[error("the hub is closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    #[error("no batch yet")]
    Empty,
    #[error(transparent)]
    Recv(#[from] RecvError),
}

/// The hub: a channel per run with subscribers.
#[derive(Clone)]
pub struct Hub {
    channels: Channels,
}

#[derive(Clone)]
enum Channels {
    Ring(ring::Hub),
    Broadcast(Arc<broadcast::Hub>),
}

impl Hub {
    /// A hub of `stack`'s channels, each keeping at most `bounds` for its readers (tokio's
    /// broadcast channel bounds batches only).
    pub fn new(stack: Stack, bounds: Bounds) -> Self {
        let channels = match stack {
            Stack::Custom => Channels::Ring(ring::Hub::new(bounds)),
            Stack::Library => Channels::Broadcast(Arc::new(broadcast::Hub::new(bounds.batches))),
        };
        Hub { channels }
    }

    /// Batches published after this call.
    pub fn subscribe(&self, run_id: &str) -> Subscription {
        // Without a limit there is always a subscription.
        self.subscribe_limited(run_id, usize::MAX)
            .unwrap_or_else(|| unreachable!("no run has usize::MAX subscribers"))
    }

    /// Batches published after this call; `None` when the run has `limit` subscribers
    /// already (checked and counted in one step, so concurrent subscribers cannot pass it).
    pub fn subscribe_limited(&self, run_id: &str, limit: usize) -> Option<Subscription> {
        match &self.channels {
            Channels::Ring(hub) => hub.subscribe(run_id, limit).map(Subscription::Ring),
            Channels::Broadcast(hub) => hub.subscribe(run_id, limit).map(Subscription::Broadcast),
        }
    }

    /// Publishes a committed batch; a run's channel goes away with its last subscriber.
    pub fn publish(&self, run_id: &str, batch: Published) {
        match &self.channels {
            Channels::Ring(hub) => hub.publish(run_id, batch),
            Channels::Broadcast(hub) => hub.publish(run_id, batch),
        }
    }

    /// Whether a publication is waking subscribers right now, for the hand-written server
    /// (see [`Deliveries`]); the broadcast channel does not say.
    pub fn deliveries(&self) -> Option<Arc<Deliveries>> {
        match &self.channels {
            Channels::Ring(hub) => Some(hub.deliveries()),
            Channels::Broadcast(_) => None,
        }
    }

    /// Ends every live subscription once it has read what was published (shutdown: open
    /// streams end, so the server's graceful stop does not wait for them).
    pub fn close(&self) {
        match &self.channels {
            Channels::Ring(hub) => hub.close(),
            Channels::Broadcast(hub) => hub.close(),
        }
    }

    /// Whether anybody subscribes to the run now (a replica follows another's runs only
    /// while somebody here reads them).
    pub fn has_subscribers(&self, run_id: &str) -> bool {
        match &self.channels {
            Channels::Ring(hub) => hub.has_subscribers(run_id),
            Channels::Broadcast(hub) => hub.has_subscribers(run_id),
        }
    }

    /// The runs somebody subscribes to now.
    pub fn subscribed_runs(&self) -> Vec<String> {
        match &self.channels {
            Channels::Ring(hub) => hub.subscribed_runs(),
            Channels::Broadcast(hub) => hub.subscribed_runs(),
        }
    }

    /// Live subscribers over all runs.
    pub fn total_subscribers(&self) -> usize {
        match &self.channels {
            Channels::Ring(hub) => hub.total_subscribers(),
            Channels::Broadcast(hub) => hub.total_subscribers(),
        }
    }
}

/// A subscriber's place in a run's channel.
pub enum Subscription {
    Ring(ring::Subscription),
    Broadcast(broadcast::Subscription),
}

impl Subscription {
    /// The next batch; `Pending` (woken by the next publication) when there is none yet.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Published>, RecvError>> {
        match self {
            Subscription::Ring(subscription) => subscription.poll_recv(cx),
            Subscription::Broadcast(subscription) => subscription.poll_recv(cx),
        }
    }

    pub async fn recv(&mut self) -> Result<Arc<Published>, RecvError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next batch if one is there.
    pub fn try_recv(&mut self) -> Result<Arc<Published>, TryRecvError> {
        match self {
            Subscription::Ring(subscription) => subscription.try_recv(),
            Subscription::Broadcast(subscription) => subscription.try_recv(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::events::canonical::{EventDraft, Source};

    const STACKS: [Stack; 2] = [Stack::Custom, Stack::Library];

    pub(super) fn bounds(batches: usize) -> Bounds {
        Bounds {
            batches,
            bytes: usize::MAX,
        }
    }

    /// A batch of one event with this seq.
    pub(super) fn batch(seq: i64) -> Published {
        sized_batch(seq, 0)
    }

    /// A batch of one event with this seq and a `blob` of this many bytes.
    pub(super) fn sized_batch(seq: i64, blob: usize) -> Published {
        let draft = EventDraft::new(
            "run.created",
            crate::time::now(),
            None,
            Source::control_plane("test"),
            serde_json::json!({"blob": "x".repeat(blob)}),
        );
        Published::new(
            vec![Shared::new(CanonicalEvent::from_draft(
                draft, "run", seq, None,
            ))],
            Shared::new(RunState::empty("run")),
        )
    }

    pub(super) fn seq(batch: &Published) -> i64 {
        batch.events[0].seq
    }

    #[test]
    fn each_subscriber_reads_every_batch_in_order() {
        for stack in STACKS {
            let hub = Hub::new(stack, bounds(8));
            let mut early = hub.subscribe("run");
            hub.publish("run", batch(1));
            let mut late = hub.subscribe("run");
            hub.publish("run", batch(2));
            hub.publish("run", batch(3));
            let read = |subscription: &mut Subscription| {
                std::iter::from_fn(|| subscription.try_recv().ok().map(|batch| seq(&batch)))
                    .collect::<Vec<_>>()
            };
            assert_eq!(read(&mut early), vec![1, 2, 3]);
            assert_eq!(
                read(&mut late),
                vec![2, 3],
                "only what was published after it came"
            );
            assert_eq!(early.try_recv().err(), Some(TryRecvError::Empty));
        }
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_far_and_reads_on_from_the_oldest_kept() {
        for stack in STACKS {
            let hub = Hub::new(stack, bounds(2));
            let mut slow = hub.subscribe("run");
            let _other = hub.subscribe("run");
            for seq in 1..=5 {
                hub.publish("run", batch(seq));
            }
            assert_eq!(
                slow.try_recv().err(),
                Some(TryRecvError::Recv(RecvError::Lagged(3)))
            );
            assert_eq!(slow.try_recv().map(|batch| seq(&batch)), Ok(4));
            assert_eq!(slow.try_recv().map(|batch| seq(&batch)), Ok(5));
        }
    }

    #[tokio::test]
    async fn subscribers_learn_that_the_hub_is_gone() {
        for stack in STACKS {
            let hub = Hub::new(stack, bounds(8));
            let mut subscription = hub.subscribe("run");
            hub.publish("run", batch(1));
            let waiting = tokio::spawn(async move {
                let first = subscription.recv().await.map(|batch| seq(&batch));
                (first, subscription.recv().await.map(|batch| seq(&batch)))
            });
            tokio::task::yield_now().await;
            drop(hub);
            let (first, then) = waiting.await.expect("joined");
            assert_eq!(first, Ok(1), "what was published is still read");
            assert_eq!(then, Err(RecvError::Closed));
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_comes_after_close_learns_it_at_once() {
        for stack in STACKS {
            let hub = Hub::new(stack, bounds(8));
            hub.close();
            let mut late = hub.subscribe("run");
            assert_eq!(late.recv().await.err(), Some(RecvError::Closed));
        }
    }

    #[test]
    fn a_run_channel_goes_with_its_last_subscriber() {
        for stack in STACKS {
            let hub = Hub::new(stack, bounds(8));
            let subscription = hub.subscribe("run");
            assert_eq!(hub.total_subscribers(), 1);
            drop(subscription);
            assert_eq!(hub.total_subscribers(), 0);
            hub.publish("run", batch(1));
            let mut next = hub.subscribe("run");
            hub.publish("run", batch(2));
            assert_eq!(next.try_recv().map(|batch| seq(&batch)), Ok(2));
        }
    }

    #[test]
    fn a_batch_of_several_events_is_one_buffer_rendered_once() {
        let mut several = batch(1);
        several.events.push(batch(2).events[0].clone());
        let renders = AtomicUsize::new(0);
        let render = |event: &Arc<Shared<CanonicalEvent>>| {
            renders.fetch_add(1, Ordering::Relaxed);
            Bytes::from(format!("{};", event.seq))
        };
        assert_eq!(several.frames(render), Bytes::from("1;2;"));
        assert_eq!(several.frames(render), Bytes::from("1;2;"));
        assert_eq!(renders.load(Ordering::Relaxed), 2, "each event once");
    }

    #[derive(Default)]
    pub(super) struct WakeCount(AtomicUsize);

    impl WakeCount {
        pub(super) fn count(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}
