//! The hand-written hub channel: built for one writer and thousands of readers. A reader is
//! woken by the publication it waits for and reads it under the channel's lock, registering for
//! the next one in the same step; polled again with nothing new, it returns at once without the
//! lock (an event reaches each subscriber with one lock, where a broadcast channel takes two or
//! three).

#[cfg(all(test, feature = "shuttle"))]
mod model;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

// The model tests run the locks and atomics on shuttle's scheduler.
#[cfg(feature = "shuttle")]
use shuttle::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};
#[cfg(not(feature = "shuttle"))]
use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use super::{Published, RecvError, TryRecvError};

/// The hub: a channel per run with subscribers.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    /// Set (under the `channels` lock) by `close`: a channel made after it is closed too.
    closed: AtomicBool,
    deliveries: Arc<Deliveries>,
    /// What a run's channel keeps for readers that have yet to read it.
    bounds: Bounds,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent at every step, so a panic elsewhere while
    // one was held leaves nothing to repair.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub fn new(bounds: Bounds) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                channels: Mutex::default(),
                closed: AtomicBool::new(false),
                deliveries: Arc::default(),
                bounds: Bounds {
                    batches: bounds.batches.max(1),
                    bytes: bounds.bytes,
                },
            }),
        }
    }

    /// Batches published after this call; `None` when the run has `limit` subscribers already.
    pub fn subscribe(&self, run_id: &str, limit: usize) -> Option<Subscription> {
        let mut channels = lock(&self.inner.channels);
        let channel = channels
            .entry(run_id.to_owned())
            .or_insert_with(|| {
                let channel = Channel::new(run_id, Arc::downgrade(&self.inner), self.inner.bounds);
                if self.inner.closed.load(Ordering::Acquire) {
                    // No subscriber of a new channel is waiting yet: nothing to wake.
                    drop(channel.close());
                }
                Arc::new(channel)
            })
            .clone();
        let position = {
            let mut ring = lock(&channel.ring);
            if ring.subscribers >= limit {
                return None;
            }
            ring.subscribers += 1;
            ring.next
        };
        Some(Subscription {
            channel,
            position,
            registered: None,
        })
    }

    /// Publishes a committed batch; a run's channel goes away with its last subscriber.
    pub fn publish(&self, run_id: &str, batch: Published) {
        let Some(channel) = lock(&self.inner.channels).get(run_id).cloned() else {
            return;
        };
        let subscribed = channel.publish(Arc::new(batch), &self.inner.deliveries);
        if !subscribed {
            self.inner.forget_if_unused(run_id, &channel);
        }
    }

    /// Whether a publication is waking subscribers right now (see [`Deliveries`]).
    pub fn deliveries(&self) -> Arc<Deliveries> {
        self.inner.deliveries.clone()
    }

    /// Ends every live subscription once it has read what was published (shutdown: open
    /// streams end, so the server's graceful stop does not wait for them).
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether anybody subscribes to the run now.
    pub fn has_subscribers(&self, run_id: &str) -> bool {
        let channel = lock(&self.inner.channels).get(run_id).cloned();
        channel.is_some_and(|channel| lock(&channel.ring).subscribers > 0)
    }

    /// The runs somebody subscribes to now.
    pub fn subscribed_runs(&self) -> Vec<String> {
        lock(&self.inner.channels)
            .iter()
            .filter(|(_, channel)| lock(&channel.ring).subscribers > 0)
            .map(|(run_id, _)| run_id.clone())
            .collect()
    }

    /// Live subscribers over all runs.
    pub fn total_subscribers(&self) -> usize {
        lock(&self.inner.channels)
            .values()
            .map(|channel| lock(&channel.ring).subscribers)
            .sum()
    }
}

/// Waiting subscribers from which a publication holds connection turns ([`Deliveries`]).
const WIDE_FAN_OUT: usize = 64;

/// Whether a publication is waking its subscribers right now. Waking ten thousand of them
/// takes a few milliseconds, during which the transport would otherwise write each
/// connection's frames in dribs and drabs as its streams wake one by one (a connection's streams
/// are spread over the subscriber list); the server holds a connection's turn until the
/// wake-ups are done, and then writes what they brought at once.
#[derive(Default)]
pub struct Deliveries {
    in_progress: AtomicUsize,
    waiting: Mutex<Vec<Waker>>,
}

impl Deliveries {
    /// `Ready` when no publication is waking subscribers; otherwise `Pending`, and `cx` is
    /// woken when one ends (not necessarily the last: the wait is short even on a hub that
    /// publishes without pause).
    pub fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.in_progress.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        lock(&self.waiting).push(cx.waker().clone());
        // Looked at again: the last one may have ended before the waker was there (the
        // waker then wakes a task that has moved on, which is harmless).
        if self.in_progress.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// A publication waking subscribers, until the guard is dropped.
    pub(crate) fn begin(&self) -> Delivering<'_> {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        Delivering(self)
    }
}

pub(crate) struct Delivering<'a>(&'a Deliveries);

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
        let waiting = std::mem::take(&mut *lock(&self.0.waiting));
        waiting.into_iter().for_each(Waker::wake);
    }
}

impl HubInner {
    /// Every subscriber reads what was published, then learns that nothing more will come.
    fn close(&self) {
        let wakers: Vec<Waker> = {
            let channels = lock(&self.channels);
            self.closed.store(true, Ordering::Release);
            channels
                .values()
                .flat_map(|channel| channel.close())
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Forgets a run's channel that has no subscribers left (checked again under both locks:
    /// a subscriber may have arrived since).
    fn forget_if_unused(&self, run_id: &str, channel: &Arc<Channel>) {
        let mut channels = lock(&self.channels);
        if channels
            .get(run_id)
            .is_some_and(|current| Arc::ptr_eq(current, channel))
            && lock(&channel.ring).subscribers == 0
        {
            channels.remove(run_id);
        }
    }
}

impl Drop for HubInner {
    fn drop(&mut self) {
        self.close();
    }
}

struct Channel {
    run_id: String,
    /// The hub, which forgets the channel when its last subscriber leaves.
    hub: Weak<HubInner>,
    ring: Mutex<Ring>,
    /// `ring.next`, readable without the lock: a subscriber that has read everything and is
    /// registered for the next batch learns that nothing new came from this alone.
    published: AtomicU64,
}

/// How much a run's channel keeps for its slowest reader: the oldest batches go past either
/// bound, and a reader that had yet to read them catches up from the store. The newest batch
/// is always kept, however large.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub batches: usize,
    /// About the memory the kept batches hold once rendered ([`Published::weight`]).
    pub bytes: usize,
}

struct Ring {
    /// The batches at positions `first ..`, each with how many subscribers have yet to read
    /// it; a batch every subscriber has read is dropped (its slot stays until it is oldest).
    slots: VecDeque<Slot>,
    first: u64,
    /// Position of the next batch published.
    next: u64,
    bounds: Bounds,
    /// The weight of the batches kept.
    bytes: usize,
    /// The size of the last projection seen rendered: the estimate for those that are not.
    state_bytes: usize,
    subscribers: usize,
    /// Subscribers waiting for batch `next`; emptied when it is published.
    wakers: Vec<Option<Waker>>,
    /// Slots of `wakers` left by subscribers that went away, for the next to register: a
    /// run that publishes nothing for hours while clients come and go keeps a short list.
    free: Vec<usize>,
    /// An emptied `wakers` kept for the next round, so its capacity is not grown again.
    spare: Vec<Option<Waker>>,
    closed: bool,
}

struct Slot {
    batch: Option<Arc<Published>>,
    unread: usize,
    /// Counted in `Ring::bytes` while the batch is kept.
    weight: usize,
}

impl Ring {
    /// One subscriber's read of the batch at `position` (at or after `first`): the last reader
    /// takes the batch rather than a copy of the pointer, and the slots at the front that
    /// every subscriber has read go.
    fn read(&mut self, position: u64) -> Option<Arc<Published>> {
        let slot = &mut self.slots[(position - self.first) as usize];
        slot.unread = slot.unread.saturating_sub(1);
        let batch = if slot.unread == 0 {
            self.bytes -= std::mem::take(&mut slot.weight);
            slot.batch.take()
        } else {
            slot.batch.clone()
        };
        while self.slots.front().is_some_and(|slot| slot.batch.is_none()) {
            self.slots.pop_front();
            self.first += 1;
        }
        batch
    }
}

impl Channel {
    /// Marks the channel closed; returns the wakers of the subscribers waiting on it.
    fn close(&self) -> Vec<Waker> {
        let mut ring = lock(&self.ring);
        ring.closed = true;
        // No subscriber may take the lock-free "nothing new" answer any more.
        self.published.store(u64::MAX, Ordering::Release);
        // Taken one by one: the list keeps its length, which registrations index.
        ring.wakers.iter_mut().filter_map(Option::take).collect()
    }

    fn new(run_id: &str, hub: Weak<HubInner>, bounds: Bounds) -> Self {
        Channel {
            run_id: run_id.to_owned(),
            hub,
            ring: Mutex::new(Ring {
                slots: VecDeque::new(),
                first: 0,
                next: 0,
                bounds,
                bytes: 0,
                state_bytes: 0,
                subscribers: 0,
                wakers: Vec::new(),
                free: Vec::new(),
                spare: Vec::new(),
                closed: false,
            }),
            published: AtomicU64::new(0),
        }
    }

    /// Appends a batch and wakes the waiting subscribers; `false` when there are none at all.
    fn publish(&self, batch: Arc<Published>, deliveries: &Deliveries) -> bool {
        // Rendered here, before the subscribers that would render them are woken.
        let (events_weight, state_bytes) = batch.weight();
        let (wakers, evicted) = {
            let mut ring = lock(&self.ring);
            if ring.subscribers == 0 {
                return false;
            }
            if let Some(rendered) = state_bytes {
                ring.state_bytes = rendered;
            }
            let weight = events_weight + ring.state_bytes;
            let unread = ring.subscribers;
            ring.slots.push_back(Slot {
                batch: Some(batch),
                unread,
                weight,
            });
            ring.bytes += weight;
            let mut evicted = Vec::new();
            while ring.slots.len() > 1
                && (ring.slots.len() > ring.bounds.batches || ring.bytes > ring.bounds.bytes)
            {
                let Some(oldest) = ring.slots.pop_front() else {
                    break;
                };
                ring.first += 1;
                ring.bytes -= oldest.weight;
                evicted.extend(oldest.batch);
            }
            ring.next += 1;
            self.published.store(ring.next, Ordering::Release);
            let spare = std::mem::take(&mut ring.spare);
            ring.free.clear();
            (std::mem::replace(&mut ring.wakers, spare), evicted)
        };
        // Woken and dropped outside the lock: the woken subscribers take it right away.
        drop(evicted);
        let mut wakers = wakers;
        // Only a wide fan-out is worth holding connection turns for: a few wake-ups are over
        // before a turn could start (and other runs' streams need not wait for them).
        let waiting = wakers.iter().flatten().count();
        let delivering = (waiting >= WIDE_FAN_OUT).then(|| deliveries.begin());
        wakers.drain(..).flatten().for_each(Waker::wake);
        drop(delivering);
        let mut ring = lock(&self.ring);
        if ring.spare.capacity() < wakers.capacity() {
            ring.spare = wakers;
        }
        true
    }
}

/// A subscriber's place in a run's channel.
pub struct Subscription {
    channel: Arc<Channel>,
    /// Position of the next batch to read.
    position: u64,
    /// Registered to be woken by the batch at this position: (position, index in
    /// `wakers`, the waker).
    registered: Option<(u64, usize, Waker)>,
}

impl Subscription {
    /// The next batch; `Pending` (woken by the next publication) when there is none yet.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Published>, RecvError>> {
        if let Some((position, _, waker)) = &self.registered
            && *position == self.position
            && self.channel.published.load(Ordering::Acquire) == self.position
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let mut ring = lock(&self.channel.ring);
        let received = take(&mut self.position, &mut ring);
        // Registered for the batch after everything there is, in the same step: the usual
        // next poll finds nothing new and returns without the lock.
        if matches!(received, Ok(_) | Err(TryRecvError::Empty)) && !ring.closed {
            register(&mut self.registered, &mut ring, cx.waker());
        }
        drop(ring);
        match received {
            Ok(batch) => Poll::Ready(Ok(batch)),
            Err(TryRecvError::Empty) => Poll::Pending,
            Err(TryRecvError::Recv(error)) => Poll::Ready(Err(error)),
        }
    }

    /// The next batch if one is there.
    pub fn try_recv(&mut self) -> Result<Arc<Published>, TryRecvError> {
        let mut ring = lock(&self.channel.ring);
        take(&mut self.position, &mut ring)
    }
}

/// Reads the batch at `position` and moves past it.
fn take(position: &mut u64, ring: &mut Ring) -> Result<Arc<Published>, TryRecvError> {
    if *position < ring.first {
        let missed = ring.first - *position;
        *position = ring.first;
        return Err(RecvError::Lagged(missed).into());
    }
    while *position < ring.next {
        let batch = ring.read(*position);
        *position += 1;
        // Every subscriber counted in `unread` reads a position once, so the batch is
        // there; were it not, the next one is.
        if let Some(batch) = batch {
            return Ok(batch);
        }
    }
    Err(if ring.closed {
        RecvError::Closed.into()
    } else {
        TryRecvError::Empty
    })
}

/// Registers `waker` to be woken by the next batch published, once per batch.
fn register(registered: &mut Option<(u64, usize, Waker)>, ring: &mut Ring, waker: &Waker) {
    match registered {
        Some((position, index, registered)) if *position == ring.next => {
            if !registered.will_wake(waker) {
                *registered = waker.clone();
                ring.wakers[*index] = Some(waker.clone());
            }
        }
        _ => {
            let index = match ring.free.pop() {
                Some(index) => {
                    ring.wakers[index] = Some(waker.clone());
                    index
                }
                None => {
                    ring.wakers.push(Some(waker.clone()));
                    ring.wakers.len() - 1
                }
            };
            *registered = Some((ring.next, index, waker.clone()));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut ring = lock(&self.channel.ring);
        ring.subscribers -= 1;
        if let Some((position, index, _)) = self.registered.take()
            && position == ring.next
            && let Some(waker) = ring.wakers.get_mut(index)
            && waker.take().is_some()
        {
            ring.free.push(index);
        }
        // What this subscriber would have read no longer waits for it.
        for position in self.position.max(ring.first)..ring.next {
            ring.read(position);
        }
        let unused = ring.subscribers == 0;
        drop(ring);
        if unused && let Some(hub) = self.channel.hub.upgrade() {
            hub.forget_if_unused(&self.channel.run_id, &self.channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;
    use crate::events::hub::tests::{WakeCount, batch, bounds, seq, sized_batch};

    /// A published batch is kept while a subscriber has yet to read it, and no longer.
    #[test]
    fn a_batch_goes_once_every_subscriber_has_read_it_or_left() {
        let hub = Hub::new(bounds(8));
        let mut first = hub.subscribe("run", usize::MAX).expect("subscribed");
        let mut second = hub.subscribe("run", usize::MAX).expect("subscribed");
        let leaving = hub.subscribe("run", usize::MAX).expect("subscribed");
        hub.publish("run", batch(1));
        let kept: Weak<Published> = Arc::downgrade(&first.try_recv().expect("published"));
        assert!(
            kept.upgrade().is_some(),
            "two subscribers have yet to read it"
        );
        drop(leaving);
        assert!(
            kept.upgrade().is_some(),
            "one subscriber has yet to read it"
        );
        drop(second.try_recv().expect("published"));
        assert!(kept.upgrade().is_none(), "read by all: the hub let it go");
    }

    /// A subscriber that has read everything is woken by the next batch and reads it; polled
    /// again before that, it answers at once that nothing came.
    #[test]
    fn a_waiting_subscriber_is_woken_by_the_next_batch() {
        let hub = Hub::new(bounds(8));
        let mut subscription = hub.subscribe("run", usize::MAX).expect("subscribed");
        let woken = Arc::new(WakeCount::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(subscription.poll_recv(&mut cx).is_pending());
        assert!(subscription.poll_recv(&mut cx).is_pending());
        hub.publish("run", batch(1));
        assert_eq!(woken.count(), 1);
        match subscription.poll_recv(&mut cx) {
            Poll::Ready(Ok(batch)) => assert_eq!(seq(&batch), 1),
            other => panic!("expected batch 1, got {other:?}"),
        }
        assert!(subscription.poll_recv(&mut cx).is_pending());
        hub.publish("run", batch(2));
        assert_eq!(
            woken.count(),
            2,
            "registered again in the same step as the read"
        );
        // Polled with another waker, it is that one the next batch wakes.
        let noop = futures::task::noop_waker();
        assert!(
            subscription
                .poll_recv(&mut Context::from_waker(&noop))
                .is_ready()
        );
        assert!(
            subscription
                .poll_recv(&mut Context::from_waker(&noop))
                .is_pending()
        );
        hub.publish("run", batch(3));
        assert_eq!(woken.count(), 2);
    }

    /// A reader that reads nothing holds at most about `bytes` of batches (the newest is kept
    /// whatever its size); it is told how far it fell behind and reads on.
    #[test]
    fn a_slow_reader_holds_at_most_the_byte_bound() {
        let bound = 40 * 1024;
        let hub = Hub::new(Bounds {
            batches: 1024,
            bytes: bound,
        });
        let mut slow = hub.subscribe("run", usize::MAX).expect("subscribed");
        let channel = lock(&hub.inner.channels)["run"].clone();
        let held = || {
            let ring = lock(&channel.ring);
            (ring.bytes, ring.slots.len())
        };
        for seq in 1..=100 {
            hub.publish("run", sized_batch(seq, 4 * 1024));
            let (bytes, slots) = held();
            assert!(bytes <= bound, "{bytes} bytes held in {slots} batches");
        }
        let (_, slots) = held();
        assert!(slots >= 2, "the bound keeps what fits ({slots} batches)");
        match slow.try_recv() {
            Err(TryRecvError::Recv(RecvError::Lagged(missed))) => {
                assert_eq!(missed as usize, 100 - slots)
            }
            other => panic!("expected Lagged, got {other:?}"),
        }
        let read: Vec<i64> = std::iter::from_fn(|| slow.try_recv().ok().map(|b| seq(&b))).collect();
        assert_eq!(read, ((100 - slots as i64 + 1)..=100).collect::<Vec<_>>());
        assert_eq!(held(), (0, 0), "read by all: nothing held");
        // One batch over the bound on its own is still delivered.
        hub.publish("run", sized_batch(101, 2 * bound));
        assert_eq!(slow.try_recv().map(|b| seq(&b)), Ok(101));
    }

    #[test]
    fn subscribers_that_come_and_go_between_batches_reuse_their_slots() {
        let hub = Hub::new(bounds(8));
        let _staying = hub.subscribe("run", usize::MAX).expect("subscribed");
        let noop = futures::task::noop_waker();
        for _ in 0..100 {
            let mut subscription = hub.subscribe("run", usize::MAX).expect("subscribed");
            assert!(
                subscription
                    .poll_recv(&mut Context::from_waker(&noop))
                    .is_pending()
            );
        }
        let channel = lock(&hub.inner.channels)["run"].clone();
        assert_eq!(lock(&channel.ring).wakers.len(), 1);
    }
}
