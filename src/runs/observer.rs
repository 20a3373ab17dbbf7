//! The session observer: one task per active run that holds a passive `StreamSession`
//! subscription, persists what arrives in batches, resubscribes from the last persisted runtime
//! ordinal after any disconnect, and finalizes the run on the runtime's terminal state.

use std::time::Duration;

use futures::FutureExt;
use macp_runtime::pb::{SessionMetadata, SessionState, stream_session_response::Response};
use opentelemetry::trace::FutureExt as _;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::task::AbortOnDropHandle;

use super::service::{RunService, SessionSignal};
use super::writer::Change;
use crate::domain::run::Run;
use crate::domain::status::RunStatus;
use crate::error::ApiError;
use crate::events::canonical::{EventDraft, Source, Subject, types};
use crate::events::normalizer::RuntimeItem;
use crate::runtime::Error as RuntimeError;
use crate::runtime::client::Subscription;

/// Items persisted per transaction at most (more are taken in the next one).
const MAX_BATCH: usize = 512;
/// How long a terminal session state may wait for envelopes still on their way (its Commitment,
/// messages the control plane got accepted) before the run ends anyway.
const COMMITMENT_GRACE: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
/// How long a new subscription's `session.stream.opened` waits for the first batch to go in
/// with; a session with nothing to replay gets it recorded alone then.
const OPENED_WAIT: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Starts observing a bound session. `kickoff_done` turns true when the executor has sent its
/// last kickoff message: the run is finalized only after that, so its terminal event is last.
pub fn spawn(
    service: &RunService,
    run_id: &str,
    session_id: &str,
    reader: &str,
    kickoff_done: watch::Receiver<bool>,
) {
    spawn_opened(service, run_id, session_id, reader, kickoff_done, None);
}

/// A session's stream from its first envelope, being opened while its run is being made.
pub(super) struct Opening(AbortOnDropHandle<Result<Subscription, RuntimeError>>);

/// Starts opening the stream of `session_id` from its first envelope, in `run_id`'s trace:
/// for a discovered session, beside the insert of its run (the two took tens of milliseconds
/// each, one after the other, in a burst of new sessions). Dropped, it is closed.
pub(super) fn open_early(
    service: &RunService,
    run_id: &str,
    session_id: &str,
    reader: &str,
) -> Opening {
    let (service, run_id, session_id, reader) = (
        service.clone(),
        run_id.to_owned(),
        session_id.to_owned(),
        reader.to_owned(),
    );
    Opening(AbortOnDropHandle::new(tokio::spawn(async move {
        open(&service, &run_id, &session_id, 0, &reader).await
    })))
}

/// `spawn`, with the first subscription's stream already being opened (`open_early`).
pub(super) fn spawn_opened(
    service: &RunService,
    run_id: &str,
    session_id: &str,
    reader: &str,
    kickoff_done: watch::Receiver<bool>,
    opening: Option<Opening>,
) {
    let signals = service.register_observer(session_id);
    let observer = Observer {
        service: service.clone(),
        run_id: run_id.to_owned(),
        session_id: session_id.to_owned(),
        reader: reader.to_owned(),
        signals,
        kickoff_done,
        commitment_seen: false,
        pending_terminal: None,
        down_since: None,
        history_gap_recorded: false,
        opening,
    };
    service.inner.tasks.spawn(observer.run());
}

/// Opens the session's stream after ordinal `after`, in the run's trace.
async fn open(
    service: &RunService,
    run_id: &str,
    session_id: &str,
    after: u64,
    reader: &str,
) -> Result<Subscription, RuntimeError> {
    let span = service.tracing().child(
        run_id,
        "runtime.StreamSession",
        vec![opentelemetry::KeyValue::new(
            "macp.after_sequence",
            after as i64,
        )],
    );
    let subscribed = service
        .runtime()
        .subscribe(session_id, after, reader)
        .with_context(span.context())
        .await;
    drop(span);
    subscribed
}

/// Picks up a run found active at startup.
pub async fn recover(service: RunService, run: Run) -> Result<(), ApiError> {
    let session_id = run
        .metadata
        .get("sessionId")
        .and_then(|value| value.as_str())
        .map(str::to_owned);
    let request = run
        .metadata
        .get("executionRequest")
        .cloned()
        .unwrap_or_default();
    // A running run of ours that died mid-kickoff finishes its kickoff first.
    if run.status == RunStatus::Running
        && let (Ok((parsed, _)), Some(session_id)) = (super::request::parse(&request), &session_id)
        && parsed.session.session_id.is_none()
    {
        let from = super::executor::kickoff_recorded(&service, &run.id).await?;
        if from < parsed.kickoff.len() {
            tracing::info!(run_id = %run.id, from, "resuming the kickoff after restart");
            let plan = super::executor::Plan {
                run_id: run.id,
                session_id: session_id.clone(),
                request: parsed,
            };
            super::executor::resume_kickoff(service, plan, from).await;
            return Ok(());
        }
    }
    // A bound run (a discovered one has no request of ours) is observed again as it was.
    if matches!(run.status, RunStatus::Running | RunStatus::Suspended)
        && let (Some(session_id), Some(bound)) = (&session_id, service.session(&run.id).await?)
    {
        tracing::info!(run_id = %run.id, status = %run.status, "resuming run after restart");
        let (_, done) = watch::channel(true);
        spawn(&service, &run.id, session_id, &bound.initiator, done);
        return Ok(());
    }
    let (parsed, session_id) = match (super::request::parse(&request), session_id) {
        (Ok((parsed, _)), Some(session_id)) => (parsed, session_id),
        _ => {
            let error = ApiError::new(
                crate::error::ErrorCode::Internal,
                "run cannot be recovered: its stored request or session id is missing",
            );
            return service
                .finalize_without_session(&run.id, RunStatus::Failed, Some(&error))
                .await;
        }
    };
    tracing::info!(run_id = %run.id, status = %run.status, "resuming run after restart");
    match run.status {
        RunStatus::Running | RunStatus::Suspended => {
            let bound = service.session(&run.id).await?;
            let reader = bound
                .map(|session| session.initiator)
                .unwrap_or_else(|| parsed.session.initiator.clone());
            let (_, done) = watch::channel(true);
            spawn(&service, &run.id, &session_id, &reader, done);
            Ok(())
        }
        _ => {
            super::executor::execute(
                service,
                super::executor::Plan {
                    run_id: run.id,
                    session_id,
                    request: parsed,
                },
            )
            .await;
            Ok(())
        }
    }
}

struct Observer {
    service: RunService,
    run_id: String,
    session_id: String,
    reader: String,
    signals: mpsc::UnboundedReceiver<SessionSignal>,
    kickoff_done: watch::Receiver<bool>,
    commitment_seen: bool,
    /// A terminal state reported before we could finalize (waiting for the Commitment, for the
    /// kickoff to finish, or for accepted messages to arrive).
    pending_terminal: Option<SessionMetadata>,
    /// When the session stream broke, while it has yet to be reopened.
    down_since: Option<tokio::time::Instant>,
    /// `session.history.unavailable` is recorded (once per observer).
    history_gap_recorded: bool,
    /// The first subscription's stream, opened early (`open_early`).
    opening: Option<Opening>,
}

enum Next {
    Resubscribe,
    Done,
}

impl Observer {
    async fn run(mut self) {
        let shutdown = self.service.inner.shutdown.clone();
        let mut backoff = BACKOFF_START;
        let mut attempt: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.observe_once(attempt).await {
                Ok(Next::Done) => return,
                Ok(Next::Resubscribe) => {
                    if self.down_since.is_none() {
                        backoff = BACKOFF_START;
                    }
                    match self.on_disconnected().await {
                        Ok(Some(Next::Done)) => return,
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(run_id = %self.run_id, %error, "session observer error");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(run_id = %self.run_id, %error, "session observer error");
                }
            }
            attempt += 1;
            // Jittered, so that the runs of a runtime that comes back do not all resubscribe
            // at once; never past the grace, so a runtime gone for good fails the run on time.
            let grace_left = self.down_since.map_or(BACKOFF_MAX, |since| {
                (since + self.service.inner.options.runtime_outage_grace)
                    .saturating_duration_since(tokio::time::Instant::now())
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(jittered(backoff).min(grace_left)) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The session stream broke: recorded once per outage (`session.stream.disconnected`);
    /// past the grace the run fails with `RUNTIME_UNAVAILABLE`.
    async fn on_disconnected(&mut self) -> Result<Option<Next>, ApiError> {
        let grace = self.service.inner.options.runtime_outage_grace;
        let Some(since) = self.down_since else {
            self.down_since = Some(tokio::time::Instant::now());
            self.record(
                types::SESSION_STREAM_DISCONNECTED,
                json!({ "sessionId": self.session_id, "graceMs": grace.as_millis() as u64 }),
            )
            .await?;
            return Ok(None);
        };
        if since.elapsed() < grace {
            return Ok(None);
        }
        let error = ApiError::new(
            crate::error::ErrorCode::RuntimeUnavailable,
            format!(
                "the runtime was unreachable for longer than {} ms (RUNTIME_OUTAGE_GRACE_MS)",
                grace.as_millis()
            ),
        );
        self.service
            .finalize_without_session(&self.run_id, RunStatus::Failed, Some(&error))
            .await?;
        self.service.unregister_observer(&self.session_id);
        Ok(Some(Next::Done))
    }

    /// The ordinal to resume after, or `None` when the run is gone or already terminal. The
    /// lease is asked about from the second attempt on: the first follows the run's creation,
    /// or its claim, by this replica (and a write without the lease is refused anyway).
    async fn resume_point(&mut self, attempt: u32) -> Result<Option<u64>, ApiError> {
        if attempt > 0 && !self.service.may_write(&self.run_id).await? {
            // Another replica took the run over (this one's lease had expired): it observes now.
            tracing::info!(run_id = %self.run_id, "the run's lease is another replica's now");
            self.service.unregister_observer(&self.session_id);
            return Ok(None);
        }
        let guard = self.service.inner.writers.lock(&self.run_id).await?;
        let Some(writer) = guard.as_ref() else {
            return Ok(None);
        };
        if writer.status().is_terminal() {
            return Ok(None);
        }
        let finalized = writer
            .state()
            .decision
            .current
            .as_ref()
            .is_some_and(|decision| decision.finalized);
        self.commitment_seen |= finalized;
        Ok(Some(writer.last_ordinal().max(0) as u64))
    }

    /// One subscription: from the last persisted ordinal until it breaks or the run ends.
    async fn observe_once(&mut self, attempt: u32) -> Result<Next, ApiError> {
        let Some(after) = self.resume_point(attempt).await? else {
            return Ok(Next::Done);
        };
        let subscribed = match self.opening.take() {
            Some(Opening(opening)) if after == 0 => opening.await.unwrap_or_else(|error| {
                Err(RuntimeError::Unavailable(format!(
                    "opening the session's stream failed: {error}"
                )))
            }),
            _ => {
                open(
                    &self.service,
                    &self.run_id,
                    &self.session_id,
                    after,
                    &self.reader,
                )
                .await
            }
        };
        let subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(error) => return self.on_subscribe_error(error, after).await,
        };
        let mut responses = subscription.responses;
        // A first subscription's `session.stream.opened` goes in with the first batch (the
        // session's history replays at once): one append less per new run, and the run's
        // first messages stored a commit sooner, which in a burst of new sessions was tens of
        // milliseconds. Anything else that comes first, or `OPENED_WAIT`, records it alone.
        let opened = self.stream_opened(attempt, after);
        let mut opened = match self.down_since.take() {
            None if attempt == 0 => Some(opened),
            None => {
                self.record_drafts(vec![opened]).await?;
                None
            }
            Some(since) => {
                let reconnected = self.draft(
                    types::SESSION_STREAM_RECONNECTED,
                    json!({
                        "sessionId": self.session_id,
                        "afterSequence": after,
                        "downMs": since.elapsed().as_millis() as u64,
                    }),
                );
                self.record_drafts(vec![opened, reconnected]).await?;
                None
            }
        };
        let opened_by = tokio::time::Instant::now() + OPENED_WAIT;
        if attempt > 0
            && let Some(next) = self.reconcile().await?
        {
            return Ok(next);
        }
        let mut ordinal = after;
        let mut reconcile = tokio::time::interval(self.service.inner.options.reconcile_interval);
        reconcile.reset();
        let shutdown = self.service.inner.shutdown.clone();
        loop {
            let grace = async {
                match &self.pending_terminal {
                    Some(_) => tokio::time::sleep(COMMITMENT_GRACE).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Next::Done),
                () = tokio::time::sleep_until(opened_by), if opened.is_some() => {
                    self.record_opened(&mut opened).await?;
                }
                frame = responses.next() => {
                    let Some(frame) = frame else {
                        self.record_opened(&mut opened).await?;
                        return Ok(Next::Resubscribe);
                    };
                    let first = match frame {
                        Ok(first) => first,
                        Err(status) => {
                            self.record_opened(&mut opened).await?;
                            tracing::info!(run_id = %self.run_id, code = ?status.code(), message = status.message(), "session stream ended");
                            // A replay the runtime cannot give is refused on the stream.
                            let error = crate::runtime::client::error_from_status(&status);
                            if error.runtime_code() == Some("HISTORY_UNAVAILABLE") {
                                return self.on_history_unavailable(&error, after).await;
                            }
                            return Ok(Next::Resubscribe);
                        }
                    };
                    let mut frames = vec![first];
                    // Take whatever else is already here: one transaction for the burst.
                    while frames.len() < MAX_BATCH {
                        match responses.next().now_or_never() {
                            Some(Some(Ok(frame))) => frames.push(frame),
                            _ => break,
                        }
                    }
                    let items = self.items(frames, &mut ordinal);
                    if self.persist(opened.take(), &items).await? {
                        return Ok(Next::Done);
                    }
                    reconcile.reset();
                    if let Some(next) = self.after_batch().await? {
                        return Ok(next);
                    }
                }
                signal = self.signals.recv() => {
                    let Some(metadata) = signal else { continue };
                    self.record_opened(&mut opened).await?;
                    if let Some(next) = self.on_state(metadata).await? {
                        return Ok(next);
                    }
                }
                changed = self.kickoff_done.changed(), if !*self.kickoff_done.borrow() => {
                    self.record_opened(&mut opened).await?;
                    if changed.is_err() {
                        // The executor is gone (it failed and recorded that itself).
                        return Ok(Next::Done);
                    }
                    if let Some(next) = self.after_batch().await? {
                        return Ok(next);
                    }
                }
                _ = reconcile.tick() => {
                    self.record_opened(&mut opened).await?;
                    if let Some(next) = self.reconcile().await? {
                        return Ok(next);
                    }
                }
                _ = grace => {
                    self.record_opened(&mut opened).await?;
                    // The Commitment never showed up on the stream; the runtime's state wins.
                    if let Some(metadata) = self.pending_terminal.take() {
                        return self.finish(metadata).await;
                    }
                }
            }
        }
    }

    fn items(
        &mut self,
        frames: Vec<macp_runtime::pb::StreamSessionResponse>,
        ordinal: &mut u64,
    ) -> Vec<RuntimeItem> {
        frames
            .into_iter()
            .filter_map(|frame| match frame.response? {
                Response::Envelope(envelope) => {
                    *ordinal += 1;
                    if envelope.message_type == "Commitment" {
                        self.commitment_seen = true;
                    }
                    Some(RuntimeItem::Envelope {
                        envelope,
                        ordinal: *ordinal,
                    })
                }
                Response::Error(error) => Some(RuntimeItem::InlineError(error)),
            })
            .collect()
    }

    /// Stores a batch; `true` when the run had already ended (the observer stops).
    /// Stores a batch after `lead` (the stream's `session.stream.opened`, when it is still to
    /// be recorded); `true` when the run had already ended (the observer stops).
    async fn persist(
        &self,
        lead: Option<EventDraft>,
        items: &[RuntimeItem],
    ) -> Result<bool, ApiError> {
        if items.is_empty() {
            self.record_drafts(lead.into_iter().collect()).await?;
            return Ok(false);
        }
        let writers = &self.service.inner.writers;
        let mut guard = writers.lock(&self.run_id).await?;
        let Some(writer) = guard.as_mut() else {
            return Ok(true);
        };
        let ended = writer.status().is_terminal();
        if ended {
            // Accepted before the end but later than the catch-up bound: kept rather than lost.
            tracing::warn!(run_id = %self.run_id, count = items.len(), "session envelopes arrived after the run ended");
        }
        // The terminal event stays last.
        let lead = lead.filter(|_| !ended).into_iter().collect();
        writers
            .ingest_between(
                writer,
                lead,
                items,
                crate::time::now(),
                Vec::new(),
                Change::default(),
            )
            .await?;
        Ok(ended)
    }

    /// After new items: a Commitment means the session may have resolved; confirm with the
    /// runtime (the authority) rather than assuming it.
    async fn after_batch(&mut self) -> Result<Option<Next>, ApiError> {
        if let Some(metadata) = self.pending_terminal.take() {
            return self.on_state(metadata).await;
        }
        if self.commitment_seen {
            return self.reconcile().await;
        }
        Ok(None)
    }

    async fn on_state(&mut self, metadata: SessionMetadata) -> Result<Option<Next>, ApiError> {
        let state = SessionState::try_from(metadata.state).unwrap_or(SessionState::Unspecified);
        match state {
            SessionState::Resolved | SessionState::Expired | SessionState::Cancelled => {
                let waiting_for_commitment =
                    state == SessionState::Resolved && !self.commitment_seen;
                if waiting_for_commitment
                    || !*self.kickoff_done.borrow()
                    || !self.service.caught_up(&self.run_id, &metadata).await?
                {
                    self.pending_terminal = Some(metadata);
                    return Ok(None);
                }
                self.finish(metadata).await.map(Some)
            }
            SessionState::Suspended | SessionState::Open => {
                self.service
                    .finalize(&self.run_id, Some(metadata), None)
                    .await?;
                Ok(None)
            }
            SessionState::Unspecified => Ok(None),
        }
    }

    async fn finish(&mut self, metadata: SessionMetadata) -> Result<Next, ApiError> {
        self.service
            .finalize(&self.run_id, Some(metadata), None)
            .await?;
        self.service.unregister_observer(&self.session_id);
        Ok(Next::Done)
    }

    /// Asks the runtime for the session's state and acts on a terminal one.
    async fn reconcile(&mut self) -> Result<Option<Next>, ApiError> {
        let span = self
            .service
            .tracing()
            .child(&self.run_id, "runtime.GetSession", Vec::new());
        let session = self
            .service
            .runtime()
            .get_session(&self.session_id, &self.reader)
            .with_context(span.context())
            .await;
        drop(span);
        match session {
            Ok(metadata) => self.on_state(metadata).await,
            Err(error) => {
                tracing::debug!(run_id = %self.run_id, %error, "session reconcile failed");
                Ok(None)
            }
        }
    }

    async fn on_subscribe_error(
        &mut self,
        error: RuntimeError,
        after: u64,
    ) -> Result<Next, ApiError> {
        match error.runtime_code() {
            // The session is gone from the runtime's memory: its state cannot be observed any
            // more. A run still open here can only be failed honestly.
            Some("SESSION_NOT_FOUND") => {
                if let Some(next) = self.reconcile().await? {
                    return Ok(next);
                }
                let error = ApiError::new(
                    crate::error::ErrorCode::RuntimeRejected,
                    "the runtime no longer knows this run's session",
                );
                self.service
                    .finalize_without_session(&self.run_id, RunStatus::Failed, Some(&error))
                    .await?;
                self.service.unregister_observer(&self.session_id);
                Ok(Next::Done)
            }
            // Compacted history: the transcript before the compaction point cannot be read;
            // the state can.
            Some("HISTORY_UNAVAILABLE") => self.on_history_unavailable(&error, after).await,
            _ => {
                tracing::warn!(run_id = %self.run_id, %error, "cannot subscribe to the session; retrying");
                self.record_reconnecting(&error).await?;
                Ok(Next::Resubscribe)
            }
        }
    }

    /// The runtime compacted the transcript past what is stored: what is missing is recorded
    /// (`session.history.unavailable`), never skipped silently; the state is still readable,
    /// and a session that has ended ends the run at once (no envelope can come any more).
    async fn on_history_unavailable(
        &mut self,
        error: &RuntimeError,
        after: u64,
    ) -> Result<Next, ApiError> {
        if !self.history_gap_recorded {
            self.record(
                types::SESSION_HISTORY_UNAVAILABLE,
                json!({
                    "sessionId": self.session_id,
                    "afterSequence": after,
                    "detail": error.to_string(),
                }),
            )
            .await?;
            self.history_gap_recorded = true;
        }
        let metadata = match self
            .service
            .runtime()
            .get_session(&self.session_id, &self.reader)
            .await
        {
            Ok(metadata) => metadata,
            Err(_) => return Ok(Next::Resubscribe),
        };
        match SessionState::try_from(metadata.state) {
            Ok(SessionState::Resolved | SessionState::Expired | SessionState::Cancelled) => {
                self.finish(metadata).await
            }
            _ => Ok(Next::Resubscribe),
        }
    }

    /// Records a subscription's `session.stream.opened` still waiting for the first batch.
    async fn record_opened(&self, opened: &mut Option<EventDraft>) -> Result<(), ApiError> {
        self.record_drafts(opened.take().into_iter().collect())
            .await
    }

    /// The `session.stream.opened` of a subscription that has just opened.
    fn stream_opened(&self, attempt: u32, after: u64) -> EventDraft {
        let status = if attempt == 0 {
            "opened"
        } else {
            crate::telemetry::metrics::record_stream_reconnect();
            "resumed"
        };
        self.draft(
            types::SESSION_STREAM_OPENED,
            json!({
                "sessionId": self.session_id,
                "status": status,
                "afterSequence": after,
            }),
        )
    }

    async fn record_reconnecting(&self, error: &RuntimeError) -> Result<(), ApiError> {
        self.record(
            types::SESSION_STREAM_OPENED,
            json!({
                "sessionId": self.session_id,
                "status": "reconnecting",
                "detail": error.to_string(),
            }),
        )
        .await
    }

    async fn record(
        &self,
        event_type: &'static str,
        data: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.record_drafts(vec![self.draft(event_type, data)]).await
    }

    /// An event of the observer's about the session.
    fn draft(&self, event_type: &'static str, data: serde_json::Value) -> EventDraft {
        EventDraft::new(
            event_type,
            crate::time::now(),
            Some(Subject::new("session", self.session_id.clone())),
            Source::control_plane("session-observer"),
            data,
        )
    }

    /// Records `drafts` (nothing for none), unless the run has ended.
    async fn record_drafts(&self, drafts: Vec<EventDraft>) -> Result<(), ApiError> {
        if drafts.is_empty() {
            return Ok(());
        }
        let writers = &self.service.inner.writers;
        let mut guard = writers.lock(&self.run_id).await?;
        let Some(writer) = guard.as_mut() else {
            return Ok(());
        };
        if writer.status().is_terminal() {
            return Ok(());
        }
        writers.emit(writer, drafts, Change::default()).await?;
        Ok(())
    }
}

/// Between half of `backoff` and all of it, at random.
fn jittered(backoff: Duration) -> Duration {
    let random = getrandom::u64().unwrap_or(u64::MAX) as f64 / u64::MAX as f64;
    backoff.mul_f64(0.5 + 0.5 * random)
}
