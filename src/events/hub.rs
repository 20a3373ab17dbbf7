//! Live fan-out: after a batch of a run's events is committed, it is published here with the
//! projection it produced. Subscribers that fall behind re-read from the store (the hub never
//! holds history), so a slow reader cannot lose events.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::canonical::CanonicalEvent;
use crate::projection::state::RunState;

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
}

#[derive(Clone)]
pub struct Hub {
    channels: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<Published>>>>>,
    /// Batches per run a reader may fall behind before it catches up from the store.
    capacity: usize,
}

impl Hub {
    pub fn with_capacity(capacity: usize) -> Self {
        Hub {
            channels: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    pub fn subscribe(&self, run_id: &str) -> broadcast::Receiver<Arc<Published>> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        channels
            .entry(run_id.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Publishes a committed batch; channels without subscribers are dropped.
    pub fn publish(&self, run_id: &str, batch: Published) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(sender) = channels.get(run_id) else {
            return;
        };
        if sender.send(Arc::new(batch)).is_err() {
            channels.remove(run_id);
        }
    }

    /// Live subscribers over all runs.
    pub fn total_subscribers(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum()
    }
}
