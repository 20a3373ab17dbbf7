//! One slot of concurrent load: decision sessions played one after another by their agents,
//! each watched on the control plane while it runs.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::agents::{self, Outgoing, Sent};
use super::report::SessionOutcome;
use super::watch::Note;

/// Runs sessions in this slot: one, or with a duration, a new one whenever the last ended
/// until the duration has passed. Slot `index` starts its first session `index / sessions` of
/// the ramp in, so sessions arrive rather than all at once; with a duration its first session is
/// also shorter in proportion to the index, so the slots' sessions end at different times
/// rather than all together, wave after wave.
pub async fn slot(shared: Arc<Shared>, index: usize) -> Vec<SessionOutcome> {
    let mut outcomes = Vec::new();
    let offset = shared
        .config
        .ramp
        .mul_f64(index as f64 / shared.config.sessions as f64);
    tokio::time::sleep_until(shared.started + offset).await;
    let full = shared.config.messages;
    let mut messages = match shared.config.duration {
        Some(_) => (full * (index + 1)).div_ceil(shared.config.sessions).max(1),
        None => full,
    };
    loop {
        outcomes.push(session(&shared, index, messages).await);
        messages = full;
        if shared.config.duration.is_none() || shared.past_end() {
            return outcomes;
        }
    }
}

struct Session<'a> {
    shared: &'a Shared,
    runtime: &'a agents::Runtime,
    id: String,
    outcome: SessionOutcome,
    notes: mpsc::UnboundedSender<Note>,
}

impl Session<'_> {
    /// Sends on the next turn; returns when it was accepted.
    async fn send(&mut self, outgoing: Outgoing, measured: bool) -> Option<Instant> {
        self.shared.pacer.turn().await;
        let message_id = uuid::Uuid::new_v4().to_string();
        self.outcome.sent += 1;
        match self.runtime.send(&self.id, &message_id, outgoing).await {
            Sent::Accepted { at, took } => {
                self.outcome.accepted += 1;
                self.outcome.ack_times.push(took);
                self.shared.progress.accepted();
                // The watcher is gone only when it panicked; the session goes on regardless.
                let _ = self.notes.send(Note::Accepted {
                    message_id,
                    at,
                    measured,
                });
                Some(at)
            }
            Sent::Rejected(reason) => {
                self.outcome.rejected += 1;
                self.outcome
                    .problem
                    .get_or_insert(format!("refused: {reason}"));
                None
            }
            Sent::Failed(reason) => {
                self.outcome.failed += 1;
                self.outcome
                    .problem
                    .get_or_insert(format!("send failed: {reason}"));
                None
            }
        }
    }
}

async fn session(shared: &Shared, index: usize, messages: usize) -> SessionOutcome {
    let id = uuid::Uuid::new_v4().to_string();
    let (notes, notes_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        shared,
        runtime: &shared.runtimes[index % shared.runtimes.len()],
        outcome: SessionOutcome {
            session_id: id.clone(),
            ..SessionOutcome::default()
        },
        id: id.clone(),
        notes,
    };
    let Some(started) = session.send(agents::session_start(), false).await else {
        return session.outcome;
    };
    session.outcome.started = true;
    let followed = index % shared.control_planes.len();
    let watcher = tokio::spawn(shared.control_planes[followed].clone().observe(
        followed,
        id,
        started,
        notes_rx,
        shared.config.grace,
        shared.progress.clone(),
    ));
    // The agents talk at once, as agents do: waiting for the control plane would offer it less
    // load the slower it is (coordinated omission). What they say before the run is found
    // reaches the stream in its backfill, late, and is measured so.
    // A session in progress when a timed run's duration passes still says all it has to: a
    // cut would end every slot's session in the same instant.
    for message in 0..messages {
        session.send(agents::message(message, messages), true).await;
    }
    session.send(agents::commitment(), true).await;
    let _ = session.notes.send(Note::Done(Instant::now()));
    let Session { mut outcome, .. } = session;
    match watcher.await {
        Ok(observed) => outcome.observed = observed,
        Err(error) => {
            outcome
                .problem
                .get_or_insert(format!("watcher failed: {error}"));
        }
    }
    outcome
}
