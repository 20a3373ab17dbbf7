//! RunDescriptor runs: the agents start the session under the id the request named, and the
//! run waits for them — asking the runtime with backoff, and woken at once when discovery sees
//! the session — then binds and observes it like any run. Past the session's ttl with no
//! session, the run fails `SESSION_NOT_STARTED`.

use std::time::Duration;

use macp_runtime::pb::SessionMetadata;
use tokio::sync::watch;

use super::executor::Plan;
use super::service::RunService;
use super::writer::Change;
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode};
use crate::events::canonical::Source;
use crate::store::{RunChange, SessionChange};

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Waits for the plan's session to be started by its agents, then binds and observes it.
pub(super) async fn bind_when_started(service: &RunService, plan: &Plan) -> Result<(), ApiError> {
    let run = service.get(&plan.run_id).await?;
    let ttl = Duration::from_millis(u64::try_from(plan.request.session.ttl_ms).unwrap_or(0));
    let deadline =
        run.created_at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::zero());
    let waiter = service.register_waiter(&plan.session_id);
    let outcome = wait(service, plan, &waiter, deadline).await;
    service.unregister_waiter(&plan.session_id);
    match outcome? {
        Some(metadata) => bind(service, plan, &metadata).await,
        None => Ok(()),
    }
}

/// The session's metadata once it exists; `None` when the run ended meanwhile (cancelled) or
/// the service is stopping.
async fn wait(
    service: &RunService,
    plan: &Plan,
    waiter: &tokio::sync::Notify,
    deadline: crate::time::Timestamp,
) -> Result<Option<SessionMetadata>, ApiError> {
    let initiator = &plan.request.session.initiator;
    let shutdown = service.inner.shutdown.clone();
    let mut backoff = BACKOFF_START;
    loop {
        match service
            .runtime()
            .get_session(&plan.session_id, initiator)
            .await
        {
            Ok(metadata) => return Ok(Some(metadata)),
            Err(error) if error.runtime_code() == Some("SESSION_NOT_FOUND") => {}
            Err(error) => {
                tracing::debug!(run_id = %plan.run_id, %error, "waiting for the agents' session");
            }
        }
        if service.get(&plan.run_id).await?.status.is_terminal() {
            return Ok(None);
        }
        let remaining = (deadline - crate::time::now()).to_std().unwrap_or_default();
        if remaining.is_zero() {
            return Err(ApiError::new(
                ErrorCode::SessionNotStarted,
                format!(
                    "the agents did not start session {} within its ttl ({} ms)",
                    plan.session_id, plan.request.session.ttl_ms
                ),
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            () = waiter.notified() => {}
            () = tokio::time::sleep(backoff.min(remaining)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Binds the run to the session its agents started, and observes it from ordinal 0.
async fn bind(
    service: &RunService,
    plan: &Plan,
    metadata: &SessionMetadata,
) -> Result<(), ApiError> {
    let session = super::discovery::bound_session(&plan.run_id, metadata);
    let now = crate::time::now();
    let source = Source::control_plane("executor");
    let mut drafts = super::discovery::binding_drafts(metadata, &session, &source, now);
    drafts.push(super::discovery::opened_draft(metadata, source, now));
    let writers = &service.inner.writers;
    {
        let mut guard = writers.lock(&plan.run_id).await?;
        let Some(writer) = guard.as_mut() else {
            return Ok(());
        };
        if writer.status().is_terminal() {
            return Ok(());
        }
        writers
            .emit(
                writer,
                drafts,
                Change {
                    run: RunChange {
                        status: Some(RunStatus::Running),
                        runtime_session_id: Some(plan.session_id.clone()),
                        ..RunChange::default()
                    },
                    session: Some(SessionChange::Bind(session.clone())),
                    ..Change::default()
                },
            )
            .await?;
    }
    let (_, kickoff_done) = watch::channel(true);
    super::observer::spawn(
        service,
        &plan.run_id,
        &plan.session_id,
        &session.initiator,
        kickoff_done,
    );
    Ok(())
}
