//! The hub over tokio's broadcast channel, one per run: the libraries' side of the transport
//! A/B (ARCHITECTURE.md). A run's channel goes with its last subscriber, as in `ring`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{Published, RecvError, TryRecvError};

pub(super) struct Hub {
    channels: Arc<Channels>,
    /// Set under the `channels` lock by `close`: a channel asked for after it starts closed.
    closed: AtomicBool,
    capacity: usize,
}

type Channels = Mutex<HashMap<String, broadcast::Sender<Arc<Published>>>>;

fn lock(channels: &Channels) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Arc<Published>>>> {
    // The map is consistent at every step: a panic elsewhere leaves nothing to repair.
    channels
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub(super) fn new(capacity: usize) -> Self {
        Hub {
            channels: Arc::default(),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
        }
    }

    pub(super) fn subscribe(&self, run_id: &str, limit: usize) -> Option<Subscription> {
        let mut channels = lock(&self.channels);
        let receiver = if self.closed.load(Ordering::Acquire) {
            // A sender dropped at once: the receiver answers `Closed`.
            broadcast::channel(1).0.subscribe()
        } else {
            let sender = channels
                .entry(run_id.to_owned())
                .or_insert_with(|| broadcast::channel(self.capacity).0);
            if sender.receiver_count() >= limit {
                return None;
            }
            sender.subscribe()
        };
        Some(Subscription {
            stream: Some(BroadcastStream::new(receiver)),
            run_id: run_id.to_owned(),
            channels: Arc::downgrade(&self.channels),
        })
    }

    pub(super) fn publish(&self, run_id: &str, batch: Published) {
        // Sent outside the hub's lock: waking the subscribers must not hold up other runs.
        let Some(sender) = lock(&self.channels).get(run_id).cloned() else {
            return;
        };
        if sender.send(Arc::new(batch)).is_err() {
            let mut channels = lock(&self.channels);
            // Still the same channel, and still nobody on it (one may have come meanwhile).
            if channels
                .get(run_id)
                .is_some_and(|kept| kept.same_channel(&sender) && kept.receiver_count() == 0)
            {
                channels.remove(run_id);
            }
        }
    }

    pub(super) fn close(&self) {
        let mut channels = lock(&self.channels);
        self.closed.store(true, Ordering::Release);
        // Dropping the senders: receivers read what is left, then learn the channel closed.
        channels.clear();
    }

    pub(super) fn has_subscribers(&self, run_id: &str) -> bool {
        lock(&self.channels)
            .get(run_id)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    pub(super) fn subscribed_runs(&self) -> Vec<String> {
        lock(&self.channels)
            .iter()
            .filter(|(_, sender)| sender.receiver_count() > 0)
            .map(|(run_id, _)| run_id.clone())
            .collect()
    }

    pub(super) fn total_subscribers(&self) -> usize {
        lock(&self.channels)
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum()
    }
}

pub struct Subscription {
    /// `None` only while it is dropped.
    stream: Option<BroadcastStream<Arc<Published>>>,
    run_id: String,
    channels: std::sync::Weak<Channels>,
}

impl Subscription {
    pub(super) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Arc<Published>, RecvError>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Err(RecvError::Closed));
        };
        stream.poll_next_unpin(cx).map(|next| match next {
            Some(Ok(batch)) => Ok(batch),
            Some(Err(BroadcastStreamRecvError::Lagged(missed))) => Err(RecvError::Lagged(missed)),
            None => Err(RecvError::Closed),
        })
    }

    pub(super) fn try_recv(&mut self) -> Result<Arc<Published>, TryRecvError> {
        // The stream's receive future keeps its place; a later poll with a real waker
        // registers that one instead.
        match self.poll_recv(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(received) => received.map_err(TryRecvError::Recv),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(channels) = self.channels.upgrade() else {
            return;
        };
        let mut channels = lock(&channels);
        drop(self.stream.take());
        if channels
            .get(&self.run_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.run_id);
        }
    }
}
