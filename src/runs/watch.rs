//! The one live-stream pipeline behind gRPC `WatchRun`, SSE `/runs/{id}/stream` and grpc-web:
//! subscribe to the hub first, backfill from the store after the client's cursor, then follow
//! the hub, dropping anything at or below the cursor. A subscriber that falls behind the hub
//! (or sees a gap) re-reads from the store instead of losing events.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::service::RunService;
use crate::error::ApiError;
use crate::events::canonical::CanonicalEvent;
use crate::events::hub::{Published, Shared};
use crate::projection::state::RunState;
use crate::time::Timestamp;

/// Events read from the store per backfill query.
const BACKFILL_PAGE: u64 = 500;

#[derive(Debug, Clone)]
pub enum WatchItem {
    Snapshot(Arc<Shared<RunState>>),
    Event(Arc<Shared<CanonicalEvent>>),
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
}

fn is_terminal_event(event: &CanonicalEvent) -> bool {
    matches!(
        event.event_type.as_str(),
        crate::events::canonical::types::RUN_COMPLETED
            | crate::events::canonical::types::RUN_FAILED
            | crate::events::canonical::types::RUN_CANCELLED
    )
}

impl RunService {
    /// A live stream of a run. Fails only if the run does not exist.
    pub async fn watch(
        &self,
        run_id: &str,
        options: WatchOptions,
    ) -> Result<impl Stream<Item = Result<WatchItem, ApiError>> + Send + use<>, ApiError> {
        // Subscribing before the first read is what makes the seam between stored and live
        // events lossless.
        let mut live = self.hub().subscribe(run_id);
        let run = self.get(run_id).await?;
        let service = self.clone();
        let run_id = run.id.clone();
        Ok(async_stream::try_stream! {
            let mut cursor = options.after_seq.max(0);
            let mut ended = run.status.is_terminal() && run.last_event_seq <= cursor;
            if options.include_snapshot {
                let state = service.state(&run_id).await?;
                yield WatchItem::Snapshot(Shared::new(state));
            }
            // Backfill, then follow the hub; any gap or lag goes back to the store.
            let mut backfill = true;
            // The heartbeat timer is re-armed only when it fires, not per batch: with
            // thousands of subscribers, a timer reset per event adds up.
            let heartbeat = tokio::time::sleep(options.heartbeat);
            tokio::pin!(heartbeat);
            let mut last_sent = tokio::time::Instant::now();
            loop {
                if backfill {
                    loop {
                        let (events, _) = service.store().events(&run_id, cursor, BACKFILL_PAGE).await?;
                        let count = events.len() as u64;
                        for event in events {
                            cursor = event.seq;
                            ended |= is_terminal_event(&event);
                            yield WatchItem::Event(Shared::new(event));
                        }
                        if count < BACKFILL_PAGE {
                            break;
                        }
                    }
                    backfill = false;
                    // A run that had ended when we subscribed is over once its stored events
                    // are sent, even if envelopes later than the catch-up bound follow its
                    // terminal event.
                    ended |= run.status.is_terminal() && run.last_event_seq <= cursor;
                    if ended && options.end_at_terminal {
                        break;
                    }
                }
                tokio::select! {
                    biased;
                    batch = live.recv() => {
                        let mut batches: Vec<Arc<Published>> = Vec::new();
                        match batch {
                            Ok(batch) => batches.push(batch),
                            Err(RecvError::Lagged(_)) => { backfill = true; continue; }
                            Err(RecvError::Closed) => break,
                        }
                        // Coalesce whatever else is ready: one snapshot for the burst. (Without
                        // snapshots there is nothing to gain, and each look costs a lock shared
                        // by every subscriber of the run.)
                        if options.include_snapshot {
                            loop {
                                match live.try_recv() {
                                    Ok(batch) => batches.push(batch),
                                    Err(TryRecvError::Lagged(_)) => { backfill = true; break; }
                                    Err(_) => break,
                                }
                            }
                        }
                        let mut latest_state = None;
                        for batch in &batches {
                            for event in &batch.events {
                                if event.seq <= cursor {
                                    continue;
                                }
                                if event.seq != cursor + 1 {
                                    backfill = true;
                                    break;
                                }
                                cursor = event.seq;
                                ended |= is_terminal_event(event);
                                yield WatchItem::Event(event.clone());
                            }
                            if backfill {
                                break;
                            }
                            latest_state = Some(batch.state.clone());
                        }
                        if backfill {
                            continue;
                        }
                        if let Some(state) = latest_state
                            && options.include_snapshot
                        {
                            yield WatchItem::Snapshot(state);
                        }
                        last_sent = tokio::time::Instant::now();
                        if ended && options.end_at_terminal {
                            break;
                        }
                    }
                    () = &mut heartbeat => {
                        let now = tokio::time::Instant::now();
                        let due = last_sent + options.heartbeat;
                        if now >= due {
                            yield WatchItem::Heartbeat(crate::time::now());
                            last_sent = now;
                            heartbeat.as_mut().reset(now + options.heartbeat);
                        } else {
                            heartbeat.as_mut().reset(due);
                        }
                    }
                }
            }
        })
    }
}
