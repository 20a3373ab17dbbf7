//! The single write path of a run: seq allocation, raw + canonical events, the run row and, every
//! `PROJECTION_EVERY` events or on a status change, the projection row, in one transaction; then
//! publication to the hub (invariant 2). Writers are per run and serialized by a lock, so seqs
//! are dense and published in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::run::{BoundSession, Run};
use crate::domain::status::RunStatus;
use crate::events::canonical::{CanonicalEvent, EventDraft, TraceRef};
use crate::events::hub::{Hub, Published, Shared};
use crate::events::normalizer::{self, NormalizerContext, RuntimeItem};
use crate::projection::reducer;
use crate::projection::state::RunState;
use crate::store::{self, Append, ProjectionRow, RawRecord, RunChange, SessionChange, Store};
use crate::telemetry::trace::Tracing;
use crate::time::Timestamp;
use opentelemetry::KeyValue;

/// The cached head of a run: what the next append builds on.
pub struct RunWriter {
    run_id: String,
    last_seq: i64,
    status: RunStatus,
    /// Shared with the hub's subscribers, so it is published without a copy.
    state: Arc<Shared<RunState>>,
    normalizer: NormalizerContext,
    trace: Option<TraceRef>,
    last_ordinal: i64,
    /// An append was started and did not finish here (it failed, or its caller went away while
    /// it waited for its group's commit, which may still have committed it): the store is the
    /// truth, and the writer is reloaded from it before its next use.
    stale: bool,
}

impl RunWriter {
    pub fn status(&self) -> RunStatus {
        self.status
    }

    pub fn last_ordinal(&self) -> i64 {
        self.last_ordinal
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    pub fn set_participants(&mut self, participants: Vec<String>) {
        self.normalizer.participants = participants;
    }

    async fn load(store: &Store, run_id: &str) -> Result<Option<RunWriter>, store::Error> {
        let Some(run) = store.run(run_id).await? else {
            return Ok(None);
        };
        let state = current_state(store, run_id)
            .await?
            .unwrap_or_else(|| RunState::empty(run_id));
        let session = store.session(run_id).await?;
        Ok(Some(RunWriter::new(&run, state, session.as_ref())))
    }

    /// The writer of `run` whose stored events fold to `state`, bound to `session`.
    pub fn new(run: &Run, state: RunState, session: Option<&BoundSession>) -> RunWriter {
        let mut normalizer = NormalizerContext::default();
        if let Some(session) = session {
            normalizer.mode = session.mode_name.clone();
            normalizer.participants = session.participants.clone();
        }
        normalizer.seen = state
            .participants
            .iter()
            .map(|participant| participant.participant_id.clone())
            .collect();
        RunWriter {
            run_id: run.id.clone(),
            last_seq: run.last_event_seq,
            status: run.status,
            state: Shared::new(state),
            normalizer,
            trace: run.trace_id.clone().map(|trace_id| TraceRef {
                trace_id: Some(trace_id),
                ..TraceRef::default()
            }),
            last_ordinal: session.map(|session| session.last_ordinal).unwrap_or(0),
            stale: false,
        }
    }

    fn materialize(&self, drafts: Vec<EventDraft>, first_seq: i64) -> Vec<CanonicalEvent> {
        drafts
            .into_iter()
            .enumerate()
            .map(|(offset, draft)| {
                CanonicalEvent::from_draft(
                    draft,
                    &self.run_id,
                    first_seq + offset as i64,
                    self.trace.clone(),
                )
            })
            .collect()
    }
}

/// A projection checkpoint is kept every this many events.
pub const CHECKPOINT_EVERY: i64 = 250;

/// The run's projection row is rewritten every this many events, and whenever its status
/// changes; a reader folds the events after the row into it (`current_state`). Rewriting the
/// whole document on every append cost more than the rest of the append (a 13 KB JSON document
/// parsed and stored per envelope, on a run of a few hundred messages). At 1,000 envelopes/s on
/// PostgreSQL, accept→stored p99 was 3.6-8.5 ms with a row every 32 events and 2.3-4.8 ms with
/// one every 128; a read folds at most 127 events (about as many as state-at-seq's checkpoints
/// leave it), a millisecond or two.
const PROJECTION_EVERY: i64 = 128;

/// Events read per query when folding.
const FOLD_PAGE: u64 = 500;

/// Whether an append moving the last seq from `before` to `after` passes a multiple of `every`.
fn crosses(before: i64, after: i64, every: i64) -> bool {
    after / every > before / every
}

/// A run's current projection: its projection row with the events stored after it folded in,
/// so exactly the fold of every committed event. `None` when the run has no row (no run).
pub async fn current_state(store: &Store, run_id: &str) -> Result<Option<RunState>, store::Error> {
    match store.projection(run_id).await? {
        Some(state) => fold_forward(store, run_id, state, None).await.map(Some),
        None => Ok(None),
    }
}

/// `state` with the stored events after its `latestSeq`, up to `up_to` (all when `None`), folded
/// in.
pub async fn fold_forward(
    store: &Store,
    run_id: &str,
    mut state: RunState,
    up_to: Option<i64>,
) -> Result<RunState, store::Error> {
    loop {
        let events = store
            .events_between(run_id, state.timeline.latest_seq, up_to, FOLD_PAGE)
            .await?;
        for event in &events {
            reducer::apply(&mut state, event);
        }
        if (events.len() as u64) < FOLD_PAGE {
            return Ok(state);
        }
    }
}

/// What one append changes besides events.
#[derive(Default)]
pub struct Change {
    pub run: RunChange,
    pub session: Option<SessionChange>,
    /// An artifact row written with the events.
    pub artifact: Option<crate::domain::artifact::Artifact>,
}

/// All writers of this process, loaded on first use.
#[derive(Clone)]
pub struct Writers {
    store: Store,
    hub: Hub,
    tracing: Tracing,
    writers: Arc<Mutex<HashMap<String, WriterSlot>>>,
}

/// A run's writer, `None` until loaded (or when the run does not exist).
type WriterSlot = Arc<tokio::sync::Mutex<Option<RunWriter>>>;

pub type WriterGuard = tokio::sync::OwnedMutexGuard<Option<RunWriter>>;

impl Writers {
    pub fn new(store: Store, hub: Hub, tracing: Tracing) -> Self {
        Writers {
            store,
            hub,
            tracing,
            writers: Arc::default(),
        }
    }

    /// The slot of `run_id`'s writer, made empty when there is none.
    fn slot(&self, run_id: &str) -> WriterSlot {
        let mut writers = self
            .writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        writers
            .entry(run_id.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone()
    }

    /// Locks the writer of `run_id`, loading it from the store when needed. `None` inside the
    /// guard means the run does not exist.
    pub async fn lock(&self, run_id: &str) -> Result<WriterGuard, store::Error> {
        let mut guard = self.slot(run_id).lock_owned().await;
        if guard.as_ref().is_none_or(|writer| writer.stale) {
            *guard = RunWriter::load(&self.store, run_id).await?;
        }
        Ok(guard)
    }

    /// Caches the writer of a run just created here, whose first use would otherwise read
    /// back what its creator has in hand; a slot already in use keeps what it has.
    pub fn seed(&self, writer: RunWriter) {
        let slot = self.slot(&writer.run_id);
        if let Ok(mut guard) = slot.try_lock()
            && guard.is_none()
        {
            *guard = Some(writer);
        }
    }

    /// Drops the cached writer of a finished run (it is reloaded if written again), unless a
    /// call holds or waits for it: removed then, the next call would load a second writer of
    /// the same run beside it, and one of the two would fail its compare-and-set (a 500
    /// schemathesis found on `POST /runs/{id}/artifacts` right after a run ended). Slots are
    /// only handed out under this same lock, so the count cannot grow while it is read.
    pub fn forget(&self, run_id: &str) {
        let mut writers = self
            .writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if writers
            .get(run_id)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            writers.remove(run_id);
        }
    }

    /// Appends control-plane events with their run/session changes.
    pub async fn emit(
        &self,
        writer: &mut RunWriter,
        drafts: Vec<EventDraft>,
        change: Change,
    ) -> Result<Vec<CanonicalEvent>, store::Error> {
        self.append(writer, drafts, Vec::new(), change).await
    }

    /// Normalizes runtime items and appends their raw and canonical events in one transaction.
    pub async fn ingest(
        &self,
        writer: &mut RunWriter,
        items: &[RuntimeItem],
        observed_at: Timestamp,
        extra: Vec<EventDraft>,
        change: Change,
    ) -> Result<Vec<CanonicalEvent>, store::Error> {
        self.ingest_between(writer, Vec::new(), items, observed_at, extra, change)
            .await
    }

    /// [`Writers::ingest`] with `lead` recorded before the items' events.
    pub async fn ingest_between(
        &self,
        writer: &mut RunWriter,
        lead: Vec<EventDraft>,
        items: &[RuntimeItem],
        observed_at: Timestamp,
        extra: Vec<EventDraft>,
        change: Change,
    ) -> Result<Vec<CanonicalEvent>, store::Error> {
        let mut normalizer = writer.normalizer.clone();
        let mut drafts = Vec::with_capacity(lead.len() + items.len() * 3 + extra.len());
        drafts.extend(lead);
        let mut raw = Vec::with_capacity(items.len());
        let mut max_ordinal = None;
        for item in items {
            let item_drafts = normalizer::normalize(&mut normalizer, item, observed_at);
            raw.push(RawRecord {
                seq: writer.last_seq + drafts.len() as i64 + 1,
                ts: observed_at,
                kind: item.raw_kind().to_owned(),
                ordinal: match item {
                    RuntimeItem::Envelope { ordinal, .. } => {
                        max_ordinal = Some(*ordinal as i64);
                        Some(*ordinal as i64)
                    }
                    _ => None,
                },
                payload: item.raw_payload(),
            });
            drafts.extend(item_drafts);
        }
        drafts.extend(extra);
        let mut change = change;
        if let Some(ordinal) = max_ordinal {
            change.session = match change.session {
                Some(SessionChange::Progress { state, .. }) => Some(SessionChange::Progress {
                    last_ordinal: Some(ordinal),
                    state,
                }),
                None => Some(SessionChange::Progress {
                    last_ordinal: Some(ordinal),
                    state: None,
                }),
                other => other,
            };
        }
        let events = self.append(writer, drafts, raw, change).await?;
        writer.normalizer = normalizer;
        if let Some(ordinal) = max_ordinal {
            writer.last_ordinal = writer.last_ordinal.max(ordinal);
        }
        Ok(events)
    }

    async fn append(
        &self,
        writer: &mut RunWriter,
        drafts: Vec<EventDraft>,
        raw: Vec<RawRecord>,
        change: Change,
    ) -> Result<Vec<CanonicalEvent>, store::Error> {
        let events = writer.materialize(drafts, writer.last_seq + 1);
        let mut state = RunState::clone(&writer.state);
        for event in &events {
            reducer::apply(&mut state, event);
        }
        let mut run_change = change.run;
        // A status change must be a legal transition from the status the row has now.
        if let Some(status) = run_change.status
            && !writer.status.may_become(status)
        {
            run_change.status = None;
            run_change.ended_at = None;
            run_change.error = None;
        }
        let new_status = run_change.status;
        let bound = match &change.session {
            Some(SessionChange::Bind(session)) => {
                Some((session.mode_name.clone(), session.participants.clone()))
            }
            _ => None,
        };
        let latest = state.timeline.latest_seq;
        let checkpoint = crosses(writer.last_seq, latest, CHECKPOINT_EVERY);
        let write_row = checkpoint
            || new_status.is_some()
            || crosses(writer.last_seq, latest, PROJECTION_EVERY);
        let state = if write_row {
            let json = store::state_text(&state)?;
            Shared::with_json(state, json.into())
        } else {
            // Serialized only if a subscriber asks for a snapshot.
            Shared::new(state)
        };
        let expected_last_seq = writer.last_seq;
        // Taken here, in the caller's task: a request's change carries its audit row; the
        // observer's appends run outside any request and carry none.
        let audit = crate::auth::audit::take(&writer.run_id);
        let (store, hub, tracing) = (self.store.clone(), self.hub.clone(), self.tracing.clone());
        let (run_id, published) = (writer.run_id.clone(), state.clone());
        // Committed and published by a task of its own: a caller that goes away (a client
        // that disconnects) cannot leave a batch committed but never published.
        let committed = tokio::spawn(async move {
            let row = write_row.then(|| published.json());
            let persist = tracing.child(
                &run_id,
                "events.persist",
                vec![KeyValue::new("macp.event_count", events.len() as i64)],
            );
            store
                .append(Append {
                    run_id: &run_id,
                    expected_last_seq,
                    events: &events,
                    raw: &raw,
                    projection: row.as_deref().map(|json| ProjectionRow {
                        json,
                        seq: latest,
                        checkpoint,
                    }),
                    run: run_change,
                    session: change.session,
                    artifact: change.artifact,
                    audit,
                })
                .await?;
            drop(persist);
            // Counted before it is published: whoever sees the batch sees it counted.
            count_committed(events.len(), new_status, &published);
            let _publish = tracing.child(&run_id, "events.publish", Vec::new());
            hub.publish(
                &run_id,
                Published::new(events.iter().cloned().map(Shared::new).collect(), published),
            );
            Ok::<_, store::Error>(events)
        });
        // Until the outcome is known here, the store is the truth.
        writer.stale = true;
        let events = committed
            .await
            .map_err(|_| store::Error::WriterStopped)
            .flatten()
            // The call's audit row went down with the change: the edge records the failure.
            .inspect_err(|_| crate::auth::audit::put_back())?;
        writer.stale = false;
        if let Some(last) = events.last() {
            writer.last_seq = last.seq;
        }
        // Announced participants are not announced again when their first envelope arrives.
        for event in &events {
            if event.event_type == crate::events::canonical::types::PARTICIPANT_SEEN
                && let Some(id) = event.data.get("participantId").and_then(|id| id.as_str())
            {
                writer.normalizer.seen.insert(id.to_owned());
            }
        }
        if let Some((mode, participants)) = bound {
            writer.normalizer.mode = mode;
            writer.normalizer.participants = participants;
        }
        if let Some(status) = new_status {
            writer.status = status;
        }
        writer.state = state;
        Ok(events)
    }
}

/// What a committed append adds to `/metrics`. A run reaches a terminal status once: in the
/// commit that records it, so its duration is observed here and nowhere else.
fn count_committed(events: usize, status: Option<RunStatus>, state: &RunState) {
    use crate::telemetry::metrics;
    metrics::record_events(events);
    if let Some(status) = status {
        metrics::record_transition(status);
        if status.is_terminal() {
            metrics::record_run_duration(status, ran_for(state));
        }
    }
}

/// How long a run ran, from its start to its end as its projection records them; a run that
/// ended before it started (cancelled while queued) ran for no time.
fn ran_for(state: &RunState) -> std::time::Duration {
    let time = |field: &Option<String>| field.as_deref().and_then(crate::time::parse);
    match (time(&state.run.started_at), time(&state.run.ended_at)) {
        (Some(started), Some(ended)) => (ended - started).to_std().unwrap_or_default(),
        _ => std::time::Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::canonical::{Source, types};

    fn opened() -> Vec<EventDraft> {
        vec![EventDraft::new(
            types::SESSION_STREAM_OPENED,
            crate::time::now(),
            None,
            Source::control_plane("test"),
            serde_json::json!({"status": "opened"}),
        )]
    }

    /// Between two projection rows, readers and a reloaded writer fold the stored tail into the
    /// row: what they see is the fold of every committed event.
    #[tokio::test]
    async fn the_state_between_projection_rows_is_the_row_and_its_tail() {
        let (_dir, store) = store::tests::sqlite_store().await;
        store
            .create_run(
                store::tests::new_run("run-a"),
                &[],
                &RunState::empty("run-a"),
            )
            .await
            .expect("created");
        let writers = Writers::new(
            store.clone(),
            Hub::new(
                crate::stack::Stack::Custom,
                crate::events::hub::Bounds {
                    batches: 8,
                    bytes: usize::MAX,
                },
            ),
            Tracing::disabled(),
        );
        let append = |count: usize| {
            let writers = writers.clone();
            async move {
                for _ in 0..count {
                    let mut guard = writers.lock("run-a").await.expect("lock");
                    let writer = guard.as_mut().expect("the run exists");
                    writers
                        .emit(writer, opened(), Change::default())
                        .await
                        .expect("appended");
                }
            }
        };
        let row_seq = || async {
            let row = store.projection("run-a").await.expect("reads");
            row.expect("a row").timeline.latest_seq
        };
        let assert_current = |last: i64| {
            let store = store.clone();
            async move {
                let current = current_state(&store, "run-a")
                    .await
                    .expect("reads")
                    .expect("a row");
                let events = store
                    .events_between("run-a", 0, None, 1_000)
                    .await
                    .expect("events");
                assert_eq!(current.timeline.latest_seq, last);
                assert_eq!(current, reducer::fold("run-a", events.iter()));
            }
        };

        append(5).await;
        assert_eq!(
            row_seq().await,
            0,
            "no row before {PROJECTION_EVERY} events"
        );
        assert_current(5).await;
        // A reloaded writer builds on the row and its tail, not on the row alone.
        writers.forget("run-a");
        append(1).await;
        assert_current(6).await;
        append(PROJECTION_EVERY as usize - 6).await;
        assert_eq!(row_seq().await, PROJECTION_EVERY);
        append(1).await;
        assert_eq!(row_seq().await, PROJECTION_EVERY);
        assert_current(PROJECTION_EVERY + 1).await;
    }

    /// A run's writer forgotten while another call waits for it stays: that call and the next
    /// share one writer, rather than the next loading a second one beside it.
    #[tokio::test]
    async fn a_writer_another_call_waits_for_is_not_forgotten() {
        let (_dir, store) = store::tests::sqlite_store().await;
        store
            .create_run(
                store::tests::new_run("run-a"),
                &[],
                &RunState::empty("run-a"),
            )
            .await
            .expect("created");
        let hub = Hub::new(
            crate::stack::Stack::Custom,
            crate::events::hub::Bounds {
                batches: 8,
                bytes: usize::MAX,
            },
        );
        let writers = Writers::new(store.clone(), hub, Tracing::disabled());
        let first = writers.lock("run-a").await.expect("lock");
        let mut waiting = Box::pin(writers.lock("run-a"));
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(first);
        writers.forget("run-a");
        let cached = || {
            writers
                .writers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains_key("run-a")
        };
        assert!(cached(), "a waiting call's writer was forgotten");
        let mut guard = waiting.await.expect("lock");
        let writer = guard.as_mut().expect("the run exists");
        writers
            .emit(writer, opened(), Change::default())
            .await
            .expect("appended");
        drop(guard);
        writers.forget("run-a");
        assert!(!cached(), "an idle writer is forgotten");
    }

    /// A caller that goes away while its append waits for the group's commit: the batch is
    /// still committed and published, and the writer does not build on what it had cached.
    #[tokio::test]
    async fn an_abandoned_append_is_published_and_the_writer_reloads() {
        let (_dir, store) = store::tests::sqlite_store().await;
        let state = RunState::empty("run-a");
        store
            .create_run(store::tests::new_run("run-a"), &[], &state)
            .await
            .expect("created");
        let hub = Hub::new(
            crate::stack::Stack::Custom,
            crate::events::hub::Bounds {
                batches: 8,
                bytes: usize::MAX,
            },
        );
        let mut live = hub.subscribe("run-a");
        let writers = Writers::new(store.clone(), hub, Tracing::disabled());
        {
            let mut guard = writers.lock("run-a").await.expect("lock");
            let writer = guard.as_mut().expect("the run exists");
            let mut abandoned = Box::pin(writers.emit(writer, opened(), Change::default()));
            // One poll starts the append; then its caller goes away.
            assert!(futures::poll!(&mut abandoned).is_pending());
        }
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), live.recv())
            .await
            .expect("the abandoned batch is published")
            .expect("the hub is open");
        assert_eq!(batch.events.first().map(|event| event.seq), Some(1));
        let mut guard = writers.lock("run-a").await.expect("lock");
        let writer = guard.as_mut().expect("the run exists");
        writers
            .emit(writer, opened(), Change::default())
            .await
            .expect("the next append builds on what was committed");
        let events = store
            .events_between("run-a", 0, None, 10)
            .await
            .expect("events");
        let seqs: Vec<i64> = events.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }
}
