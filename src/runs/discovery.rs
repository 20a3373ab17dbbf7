//! Sessions agents start themselves become runs, and ambient Signals find theirs
//! (`SESSION_DISCOVERY_ENABLED`). A discovered session is one `WatchSessions` reports and no run
//! is for: its run is created bound (run id = session id when that is a UUID) and observed from
//! ordinal 0 through the same observer, writer and hub as every run. `runs.runtime_session_id`
//! is unique and the runs we start hold theirs from creation, so a session is never two runs,
//! whichever process or path sees it first.

use std::collections::HashSet;
use std::sync::Mutex;

use macp_runtime::pb::{Envelope, SessionMetadata, SessionState};
use prost::Message as _;
use serde_json::json;
use tokio::sync::watch;

use super::service::RunService;
use super::writer::Change;
use crate::domain::run::BoundSession;
use crate::domain::status::RunStatus;
use crate::error::ApiError;
use crate::events::canonical::{CanonicalEvent, EventDraft, Source, Subject, TraceRef, types};
use crate::events::normalizer::RuntimeItem;
use crate::store::{CreateOutcome, NewRun};

/// Where a discovered run says it came from (`source.kind` on the run).
pub const SOURCE: &str = "session-discovery";

/// Ids remembered at most before the set starts over (it is a cache; the store decides).
const SEEN_CAPACITY: usize = 100_000;

/// A bounded set of ids already dealt with.
#[derive(Default)]
pub struct Seen(Mutex<HashSet<String>>);

impl Seen {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    pub fn insert(&self, id: &str) {
        let mut seen = self.lock();
        if seen.len() >= SEEN_CAPACITY {
            seen.clear();
        }
        seen.insert(id.to_owned());
    }

    /// Whether `id` was there (and is not any more).
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id)
    }
}

/// Makes a run for a session no run is for yet; nothing for a session that has one.
pub(crate) async fn discover(
    service: &RunService,
    metadata: &SessionMetadata,
) -> Result<(), ApiError> {
    let session_id = metadata.session_id.as_str();
    if session_id.is_empty()
        || service.is_observed(session_id)
        || service.inner.discovered.contains(session_id)
    {
        return Ok(());
    }
    if service
        .inner
        .store
        .run_by_session(session_id)
        .await?
        .is_some()
    {
        // Ours, or a RunDescriptor's that waits for this very session: wake it.
        service.wake_waiter(session_id);
        service.inner.discovered.insert(session_id);
        return Ok(());
    }
    let run_id = match uuid::Uuid::parse_str(session_id) {
        Ok(uuid) if uuid.to_string() == session_id => session_id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let tracing = &service.inner.tracing;
    let trace_id = tracing
        .start_run(&run_id, &metadata.mode)
        .unwrap_or_else(crate::telemetry::new_trace_id);
    let now = crate::time::now();
    let session = bound_session(&run_id, metadata);
    let events = first_events(&run_id, &trace_id, metadata, &session, now);
    let state = crate::projection::reducer::fold(&run_id, &events);
    let opening = super::observer::open_early(service, &run_id, session_id, &session.initiator);
    let ttl_ms = (metadata.expires_at_unix_ms > metadata.started_at_unix_ms)
        .then(|| metadata.expires_at_unix_ms - metadata.started_at_unix_ms);
    let outcome = service
        .inner
        .store
        .create_run(
            NewRun {
                id: run_id.clone(),
                mode: "live".to_owned(),
                runtime_kind: "rust".to_owned(),
                runtime_version: None,
                trace_id: Some(trace_id),
                idempotency_key: None,
                source_kind: Some(SOURCE.to_owned()),
                source_ref: None,
                tags: Vec::new(),
                metadata: json!({
                    "sessionId": session_id,
                    "modeName": metadata.mode,
                    "initiator": metadata.initiator,
                    "source": SOURCE,
                    "discoveredAt": crate::time::format(&now),
                    "ttlMs": ttl_ms,
                }),
                created_at: now,
                created_by: None,
                runtime_session_id: Some(session_id.to_owned()),
                status: RunStatus::Running,
                started_at: Some(now),
                session: Some(session.clone()),
                audit: None,
            },
            &events,
            &state,
        )
        .await?;
    service.inner.discovered.insert(session_id);
    match outcome {
        CreateOutcome::Created(run) => {
            crate::telemetry::metrics::record_transition(RunStatus::Running);
            service
                .inner
                .writers
                .seed(super::writer::RunWriter::new(&run, state, Some(&session)));
            tracing::info!(run_id = %run.id, %session_id, mode = %metadata.mode, "discovered a session");
            // Nothing of ours to wait for: the session is the agents'.
            let (_, kickoff_done) = watch::channel(true);
            super::observer::spawn_opened(
                service,
                &run.id,
                session_id,
                &session.initiator,
                kickoff_done,
                Some(opening),
            );
        }
        CreateOutcome::SessionTaken | CreateOutcome::Existing(_) => {
            tracing.discard_run(&run_id);
        }
    }
    Ok(())
}

pub(super) fn bound_session(run_id: &str, metadata: &SessionMetadata) -> BoundSession {
    let state = SessionState::try_from(metadata.state).unwrap_or(SessionState::Unspecified);
    BoundSession {
        run_id: run_id.to_owned(),
        session_id: metadata.session_id.clone(),
        mode_name: metadata.mode.clone(),
        mode_version: metadata.mode_version.clone(),
        configuration_version: metadata.configuration_version.clone(),
        policy_version: Some(metadata.policy_version.clone()).filter(|policy| !policy.is_empty()),
        initiator: metadata.initiator.clone(),
        session_state: state.as_str_name().to_owned(),
        last_ordinal: 0,
        participants: metadata.participants.clone(),
    }
}

/// The events a started run has by the time it is running, told from the runtime's metadata.
fn first_events(
    run_id: &str,
    trace_id: &str,
    metadata: &SessionMetadata,
    session: &BoundSession,
    now: crate::time::Timestamp,
) -> Vec<CanonicalEvent> {
    let source = Source::control_plane("session-discovery");
    let mut drafts = vec![
        EventDraft::new(
            types::RUN_CREATED,
            now,
            Some(Subject::new("run", run_id)),
            source.clone(),
            json!({
                "status": RunStatus::Queued.as_str(),
                "modeName": metadata.mode,
                "runtimeKind": "rust",
                "traceId": trace_id,
                "sessionId": metadata.session_id,
                "source": SOURCE,
            }),
        ),
        EventDraft::new(
            types::RUN_STARTED,
            now,
            Some(Subject::new("run", run_id)),
            source.clone(),
            json!({
                "status": RunStatus::Starting.as_str(),
                "startedAt": crate::time::format(&now),
                "modeName": metadata.mode,
                "runtimeKind": "rust",
            }),
        ),
    ];
    drafts.extend(binding_drafts(metadata, session, &source, now));
    drafts.push(opened_draft(metadata, source, now));
    let trace = TraceRef {
        trace_id: Some(trace_id.to_owned()),
        ..Default::default()
    };
    drafts
        .into_iter()
        .enumerate()
        .map(|(index, draft)| {
            CanonicalEvent::from_draft(draft, run_id, index as i64 + 1, Some(trace.clone()))
        })
        .collect()
}

/// `session.bound` and a `participant.seen` per member, for a session the agents started.
pub(super) fn binding_drafts(
    metadata: &SessionMetadata,
    session: &BoundSession,
    source: &Source,
    now: crate::time::Timestamp,
) -> Vec<EventDraft> {
    let mut drafts = vec![EventDraft::new(
        types::SESSION_BOUND,
        now,
        Some(Subject::new("session", metadata.session_id.clone())),
        source.clone(),
        json!({
            "sessionId": metadata.session_id,
            "runtimeSessionId": metadata.session_id,
            "initiator": metadata.initiator,
            "state": session.session_state,
            "modeName": metadata.mode,
            "modeVersion": metadata.mode_version,
            "configurationVersion": metadata.configuration_version,
            "policyVersion": session.policy_version.clone().unwrap_or_else(|| "policy.default".to_owned()),
            "participants": metadata.participants,
            "contextId": Some(metadata.context_id.clone()).filter(|id| !id.is_empty()),
            "extensionKeys": metadata.extension_keys,
            "startedByAgents": true,
        }),
    )];
    let mut seen = HashSet::new();
    for participant in metadata
        .participants
        .iter()
        .chain(std::iter::once(&metadata.initiator))
        .filter(|id| !id.is_empty())
    {
        if !seen.insert(participant.as_str()) {
            continue;
        }
        let role = (participant == &metadata.initiator
            && !metadata.participants.contains(participant))
        .then_some("initiator");
        drafts.push(EventDraft::new(
            types::PARTICIPANT_SEEN,
            now,
            Some(Subject::new("participant", participant.clone())),
            source.clone(),
            json!({ "participantId": participant, "role": role, "status": "idle" }),
        ));
    }
    drafts
}

/// The session is open: the run is running.
pub(super) fn opened_draft(
    metadata: &SessionMetadata,
    source: Source,
    now: crate::time::Timestamp,
) -> EventDraft {
    EventDraft::new(
        types::SESSION_STATE_CHANGED,
        now,
        Some(Subject::new("session", metadata.session_id.clone())),
        source,
        json!({ "sessionId": metadata.session_id, "state": SessionState::Open.as_str_name() }),
    )
}

/// The session an ambient envelope belongs to: its own, else its Signal's correlation.
fn correlated_session(envelope: &Envelope) -> Option<String> {
    if !envelope.session_id.is_empty() {
        return Some(envelope.session_id.clone());
    }
    if envelope.message_type != "Signal" {
        return None;
    }
    macp_runtime::pb::SignalPayload::decode(envelope.payload.as_slice())
        .ok()
        .map(|signal| signal.correlation_session_id)
        .filter(|session| !session.is_empty())
}

/// Stores an ambient envelope (`WatchSignals`) as events of its run, in order with the run's
/// others; one that matches no run, or only one that has ended, is counted and dropped.
pub(crate) async fn ambient(service: &RunService, envelope: Envelope) -> Result<(), ApiError> {
    if service.inner.own_signals.remove(&envelope.message_id) {
        // Sent through this control plane, and recorded then.
        return Ok(());
    }
    let run = match correlated_session(&envelope) {
        Some(session_id) => service.inner.store.run_by_session(&session_id).await?,
        None => None,
    };
    let Some(run) = run else {
        crate::telemetry::metrics::record_unmatched_signal();
        return Ok(());
    };
    let writers = &service.inner.writers;
    let mut guard = writers.lock(&run.id).await?;
    let Some(writer) = guard.as_mut() else {
        crate::telemetry::metrics::record_unmatched_signal();
        return Ok(());
    };
    if writer.status().is_terminal() {
        // The terminal event stays last.
        crate::telemetry::metrics::record_unmatched_signal();
        return Ok(());
    }
    writers
        .ingest(
            writer,
            &[RuntimeItem::Ambient(envelope)],
            crate::time::now(),
            Vec::new(),
            Change::default(),
        )
        .await?;
    Ok(())
}
