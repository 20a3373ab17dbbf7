//! Suspending and resuming a run: the runtime's SuspendSession / ResumeSession, asked with the
//! session initiator's credentials (the runtime lets only the initiator, or a role its policy
//! delegates to, do it). The run's status follows what the runtime then reports, on this path
//! or through `WatchSessions` when someone else suspends the session, whichever comes first:
//! `run.suspended` and `run.resumed` record it once.

use macp_runtime::pb::SessionMetadata;
use opentelemetry::trace::FutureExt as _;
use serde_json::{Value, json};

use super::cluster::{self, Call, Route};
use super::service::RunService;
use crate::domain::run::Run;
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode};
use crate::events::canonical::{EventDraft, Source, Subject, types};
use crate::events::hub::RecvError;
use crate::projection::state::RunState;

/// How long a suspend waits for the run's kickoff to be out.
const KICKOFF_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Which way a run is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Toggle {
    Suspend,
    Resume,
}

impl Toggle {
    /// The status the run leaves, and the one it reaches.
    fn statuses(self) -> (RunStatus, RunStatus) {
        match self {
            Toggle::Suspend => (RunStatus::Running, RunStatus::Suspended),
            Toggle::Resume => (RunStatus::Suspended, RunStatus::Running),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Toggle::Suspend => "suspended",
            Toggle::Resume => "resumed",
        }
    }
}

impl RunService {
    /// Suspends a running run's session. A suspended run is returned as it is.
    pub async fn suspend(&self, run_id: &str, reason: Option<String>) -> Result<Run, ApiError> {
        let call = Call::Suspend {
            reason: reason.clone(),
        };
        if let Route::Answered(answer) = self.route(run_id, call).await? {
            cluster::answer::<()>(answer)?;
            return self.get(run_id).await;
        }
        self.toggle(run_id, Toggle::Suspend, reason).await
    }

    /// Resumes a suspended run's session. A running run is returned as it is.
    pub async fn resume(&self, run_id: &str, reason: Option<String>) -> Result<Run, ApiError> {
        let call = Call::Resume {
            reason: reason.clone(),
        };
        if let Route::Answered(answer) = self.route(run_id, call).await? {
            cluster::answer::<()>(answer)?;
            return self.get(run_id).await;
        }
        self.toggle(run_id, Toggle::Resume, reason).await
    }

    async fn toggle(
        &self,
        run_id: &str,
        toggle: Toggle,
        reason: Option<String>,
    ) -> Result<Run, ApiError> {
        let run = self.get(run_id).await?;
        let (from, to) = toggle.statuses();
        if run.status == to {
            return Ok(run);
        }
        let session = match self.session(run_id).await? {
            Some(session) if run.status == from => session,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "run {run_id} is {}: only a {} run can be {}",
                        run.status,
                        from,
                        toggle.verb()
                    ),
                ));
            }
        };
        if toggle == Toggle::Suspend {
            self.kickoff_sent(&run).await?;
        }
        let reason = reason.unwrap_or_else(|| format!("{} by control plane", toggle.verb()));
        // Set before asking: WatchSessions may report the change before the call returns.
        self.requested_reasons().request(run_id, to, reason.clone());
        let runtime = self.runtime();
        let (id, initiator) = (&session.session_id, &session.initiator);
        let name = match toggle {
            Toggle::Suspend => "runtime.SuspendSession",
            Toggle::Resume => "runtime.ResumeSession",
        };
        let ask = async {
            match toggle {
                Toggle::Suspend => runtime.suspend_session(id, &reason, initiator).await,
                Toggle::Resume => runtime.resume_session(id, &reason, initiator).await,
            }
        };
        let span = self.tracing().child(run_id, name, Vec::new());
        let ack = ask.with_context(span.context()).await.map_err(|error| {
            self.requested_reasons().take(run_id, to);
            error.to_api_error()
        })?;
        drop(span);
        let metadata = SessionMetadata {
            session_id: session.session_id.clone(),
            state: ack.session_state,
            mode: session.mode_name.clone(),
            ..Default::default()
        };
        self.finalize(run_id, Some(metadata), None).await?;
        // Taken by whichever path recorded the change; left only when the runtime changed
        // nothing the run did not have already, and then it must not go on a later event.
        self.requested_reasons().take(run_id, to);
        self.get(run_id).await
    }

    /// Waits (a bounded while) until the run's kickoff is out: a suspended session refuses
    /// messages, so suspending it mid-kickoff would fail the run on its next kickoff message.
    /// Sent or refused, each kickoff message is counted in `outboundMessages` once it is
    /// recorded.
    async fn kickoff_sent(&self, run: &Run) -> Result<(), ApiError> {
        let kickoff = run
            .metadata
            .pointer("/executionRequest/kickoff")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as i64;
        // Subscribed before the first look, so a batch stored in between wakes us.
        let mut batches = self.subscribe(&run.id);
        let wait = async {
            while self.state(&run.id).await?.outbound_messages.total < kickoff {
                if let Err(RecvError::Closed) = batches.recv().await {
                    break;
                }
            }
            Ok::<_, ApiError>(())
        };
        match tokio::time::timeout(KICKOFF_BOUND, wait).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ApiError::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "run {} is still sending its kickoff; suspend it when that is done",
                    run.id
                ),
            )),
        }
    }

    /// Whether the runtime's session is still in `state`. Reports of a suspension or a resumption
    /// arrive late (WatchSessions replays a session's creation, and a call's answer races the
    /// runtime's own event), so a move between running and suspended waits for the authority's
    /// word; a question it does not answer leaves the report as it is.
    pub(super) async fn session_still(&self, session_id: &str, state: i32, reader: &str) -> bool {
        match self.runtime().get_session(session_id, reader).await {
            Ok(current) => current.state == state,
            Err(_) => true,
        }
    }
}

/// Whether a run moving from `from` to `to` is suspended or resumed.
pub(super) fn toggles(from: RunStatus, to: RunStatus) -> bool {
    matches!(
        (from, to),
        (RunStatus::Running, RunStatus::Suspended) | (RunStatus::Suspended, RunStatus::Running)
    )
}

/// The event recording a move between running and suspended; none for other moves (an open
/// session reported while the run is still binding). `reason` is asked only when there is one.
pub(super) fn transition_event(
    run_id: &str,
    state: &RunState,
    from: RunStatus,
    to: RunStatus,
    now: crate::time::Timestamp,
    reason: impl FnOnce() -> Option<String>,
) -> Option<EventDraft> {
    if !toggles(from, to) {
        return None;
    }
    let event_type = match to {
        RunStatus::Suspended => types::RUN_SUSPENDED,
        _ => types::RUN_RESUMED,
    };
    let mut data = json!({
        "status": to.as_str(),
        "runtimeSessionId": state.run.runtime_session_id,
        "traceId": state.run.trace_id,
    });
    if let (Some(reason), Some(map)) = (reason(), data.as_object_mut()) {
        map.insert("reason".to_owned(), json!(reason));
    }
    Some(EventDraft::new(
        event_type,
        now,
        Some(Subject::new("run", run_id.to_owned())),
        Source::control_plane("run-service"),
        data,
    ))
}
