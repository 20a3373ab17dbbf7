//! RunService: the domain API both transports call (start, validate, query, cancel, runtime
//! discovery), plus the background work behind a run (executor, observer, session watcher).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use macp_runtime::pb::SessionMetadata;
use opentelemetry::trace::FutureExt as _;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cluster::{self, Call, Route};
use super::request::{self, ExecutionRequest};
use super::requested_reasons::RequestedReasons;
use super::writer::{Change, Writers};
use super::{executor, observer, watcher};
use crate::domain::query::{EventQuery, RunFilter, RunPage};
use crate::domain::run::{BoundSession, Run};
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::events::canonical::{CanonicalEvent, EventDraft, Source, Subject, types};
use crate::events::hub::{Deliveries, Hub, Subscription};
use crate::events::normalizer::RuntimeItem;
use crate::projection::state::RunState;
use crate::runtime::{RuntimeClient, info};
use crate::store::{CreateOutcome, NewRun, RunChange, SessionChange, Store};
use crate::telemetry::trace::Tracing;

/// How long what `Initialize` tells (supported modes, signed receipts) is reused.
const INITIALIZE_TTL: Duration = Duration::from_secs(30);
/// How long a cancel waits for envelopes the runtime accepted to arrive on the session stream.
const CATCH_UP_BOUND: Duration = Duration::from_secs(2);
/// The runtime kind this control plane drives.
pub const RUNTIME_KIND: &str = "rust";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartOutcome {
    pub run_id: String,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The idempotency key matched an existing run; nothing was started.
    pub existing: bool,
}

/// What the control plane reads from the runtime's `Initialize` answer.
#[derive(Debug, Clone)]
pub(super) struct RuntimeTraits {
    pub supported_modes: Vec<String>,
    /// It issues signed decision receipts (`GetDecisionReceipt`).
    pub signs_receipts: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeCheck {
    pub reachable: bool,
    pub supported_modes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    pub valid: bool,
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
    pub runtime: RuntimeCheck,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub ok: bool,
    pub database: String,
    pub runtime: info::Health,
    /// `ok` while the runtime's session feed (`WatchSessions`) is followed, else `unhealthy`.
    pub stream_consumer: String,
    /// The runtime circuit breaker: `CLOSED`, `OPEN` or `HALF_OPEN`.
    pub circuit_breaker: String,
    /// This replica, the runs it owns and the cluster's live replicas (`CLUSTER_ENABLED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::cluster::ClusterReadiness>,
}

/// A page of canonical events (`GET /events`, filtered `GET /runs/{id}/events`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub data: Vec<CanonicalEvent>,
    pub total: u64,
    pub limit: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// A terminal (or suspend/resume) transition the runtime reported for a session.
pub type SessionSignal = SessionMetadata;

/// The service's parts, private to `runs`: the store, the hub and the writers are reached from
/// outside only through the service's methods.
pub(super) struct Inner {
    pub(super) store: Store,
    runtime: RuntimeClient,
    hub: Hub,
    pub(super) writers: Writers,
    /// The reasons of cancels, suspends and resumes requested through this process: each goes on
    /// the event recording its change (`run.cancelled`, `run.suspended`, `run.resumed`)
    /// whichever task writes that event.
    requested_reasons: RequestedReasons,
    /// Runtime session id → the observer of its run.
    observers: Mutex<HashMap<String, mpsc::UnboundedSender<SessionSignal>>>,
    /// Sessions discovery has already matched to a run (a cache: the store decides).
    pub(super) discovered: super::discovery::Seen,
    /// Message ids of the ambient Signals this process sent: `WatchSignals` hands them back,
    /// and they are recorded already.
    pub(super) own_signals: super::discovery::Seen,
    /// RunDescriptor runs waiting for their agents to start the session, by session id.
    waiters: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// What the AwaitRun waiters of an ending run share (`outcome`).
    pub(super) outcomes: super::outcome::Outcomes,
    initialized: tokio::sync::Mutex<Option<(Instant, RuntimeTraits)>>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
    pub(super) tracing: Tracing,
    pub(super) options: RunOptions,
    webhooks: crate::webhooks::Webhooks,
    /// Whether the `WatchSessions` stream is open now (readiness' `streamConsumer`).
    pub(super) sessions_watched: std::sync::atomic::AtomicBool,
    /// This replica's part in a cluster, when it is one.
    pub(super) cluster: Option<super::cluster::Cluster>,
}

/// Tunables of the background work.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How often an observer asks the runtime for its session's state when nothing arrives.
    pub reconcile_interval: Duration,
    /// Default heartbeat interval of live streams.
    pub heartbeat: Duration,
    /// Committed batches a live subscriber may fall behind before it re-reads from the store.
    pub hub_capacity: usize,
    /// About the memory a run's channel keeps for its slowest live subscriber.
    pub hub_max_bytes: usize,
    /// The live-stream channel implementation (`--stack`).
    pub stack: crate::stack::Stack,
    /// Live-stream subscribers (SSE, WatchRun) one run may have at once.
    pub max_subscribers_per_run: usize,
    /// Sessions agents start themselves become runs, and ambient Signals are matched to runs
    /// (`SESSION_DISCOVERY_ENABLED`).
    pub discovery: bool,
    /// The embedded runtime's address (agents connect to it), reported by the runtime's health
    /// and manifest; `None` with an external runtime.
    pub embedded_runtime: Option<std::net::SocketAddr>,
    /// Webhook delivery (`WEBHOOK_*`).
    pub webhooks: crate::webhooks::WebhookOptions,
    /// The runtime client's circuit breaker (`RUNTIME_CIRCUIT_BREAKER_*`).
    pub circuit_breaker: crate::runtime::breaker::BreakerOptions,
    /// Deleting ended runs past their TTL (`DATA_RETENTION_*`).
    pub retention: super::retention::RetentionOptions,
    /// How long a run's session stream may stay broken before the run fails
    /// (`RUNTIME_OUTAGE_GRACE_MS`).
    pub runtime_outage_grace: Duration,
    /// This process as one replica of several on one PostgreSQL (`CLUSTER_ENABLED`).
    pub cluster: Option<super::cluster::ClusterOptions>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            reconcile_interval: Duration::from_secs(15),
            heartbeat: Duration::from_secs(15),
            hub_capacity: 1024,
            hub_max_bytes: 64 * 1024 * 1024,
            stack: crate::stack::Stack::default(),
            max_subscribers_per_run: 20_000,
            discovery: true,
            embedded_runtime: None,
            webhooks: crate::webhooks::WebhookOptions::default(),
            circuit_breaker: crate::runtime::breaker::BreakerOptions::default(),
            retention: super::retention::RetentionOptions::default(),
            runtime_outage_grace: Duration::from_secs(60),
            cluster: None,
        }
    }
}

#[derive(Clone)]
pub struct RunService {
    pub(super) inner: Arc<Inner>,
}

pub(super) fn not_found(run_id: &str) -> ApiError {
    ApiError::new(ErrorCode::RunNotFound, format!("run {run_id} not found"))
}

impl RunService {
    pub fn new(
        store: Store,
        runtime: RuntimeClient,
        options: RunOptions,
        tracing: Tracing,
    ) -> Self {
        let hub = Hub::new(
            options.stack,
            crate::events::hub::Bounds {
                batches: options.hub_capacity,
                bytes: options.hub_max_bytes,
            },
        );
        let webhooks = crate::webhooks::Webhooks::new(store.clone(), options.webhooks.clone());
        RunService {
            inner: Arc::new(Inner {
                writers: Writers::new(store.clone(), hub.clone(), tracing.clone()),
                tracing,
                store,
                runtime,
                hub,
                requested_reasons: RequestedReasons::default(),
                observers: Mutex::default(),
                discovered: super::discovery::Seen::default(),
                own_signals: super::discovery::Seen::default(),
                waiters: Mutex::default(),
                outcomes: super::outcome::Outcomes::default(),
                initialized: tokio::sync::Mutex::new(None),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                webhooks,
                sessions_watched: std::sync::atomic::AtomicBool::new(false),
                cluster: options.cluster.clone().map(super::cluster::Cluster::new),
                options,
            }),
        }
    }

    pub fn options(&self) -> &RunOptions {
        &self.inner.options
    }

    pub fn tracing(&self) -> &Tracing {
        &self.inner.tracing
    }

    pub(super) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(super) fn writers(&self) -> &Writers {
        &self.inner.writers
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether the database answers (liveness).
    pub async fn ping_store(&self) -> Result<(), ApiError> {
        Ok(self.inner.store.ping().await?)
    }

    /// Live-stream subscribers of every run, now.
    pub fn live_subscribers(&self) -> usize {
        self.inner.hub.total_subscribers()
    }

    /// When a publication is waking subscribers, for the server's connection turns; `None` when
    /// the live-stream channel does not say (the broadcast stack).
    pub fn deliveries(&self) -> Option<Arc<Deliveries>> {
        self.inner.hub.deliveries()
    }

    /// The batches committed for a run from now on, as they are published (each with the
    /// projection after it): what waits on a run's progress subscribes here.
    pub fn subscribe(&self, run_id: &str) -> Subscription {
        self.inner.hub.subscribe(run_id)
    }

    /// Appends runtime items (normalized, with their raw records) and control-plane events to
    /// a run through its writer, in one transaction, then publishes them: what the observer
    /// does with a batch. Tests and benchmarks drive the write path with it.
    pub async fn ingest(
        &self,
        run_id: &str,
        items: &[RuntimeItem],
        extra: Vec<EventDraft>,
    ) -> Result<Vec<CanonicalEvent>, ApiError> {
        let writers = &self.inner.writers;
        let mut guard = writers.lock(run_id).await?;
        let writer = guard.as_mut().ok_or_else(|| not_found(run_id))?;
        Ok(writers
            .ingest(writer, items, crate::time::now(), extra, Change::default())
            .await?)
    }

    /// The runtime session bound to a run, once the executor has bound one.
    pub async fn session(&self, run_id: &str) -> Result<Option<BoundSession>, ApiError> {
        Ok(self.inner.store.session(run_id).await?)
    }

    /// Who takes part in a run: its session's participants and initiator once bound, before
    /// that those its request named. `RUN_NOT_FOUND` for no such run.
    pub async fn members(&self, run_id: &str) -> Result<Vec<String>, ApiError> {
        if let Some(session) = self.session(run_id).await? {
            let mut members = session.participants;
            members.push(session.initiator);
            return Ok(members);
        }
        let run = self.get(run_id).await?;
        let session = &run.metadata["executionRequest"]["session"];
        let mut members: Vec<String> = session["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|participant| {
                participant
                    .as_str()
                    .or_else(|| participant["id"].as_str())
                    .map(str::to_owned)
            })
            .collect();
        members.extend(
            [
                &run.metadata["initiator"],
                &session["initiatorParticipantId"],
            ]
            .into_iter()
            .filter_map(|id| id.as_str().map(str::to_owned)),
        );
        Ok(members)
    }

    pub fn runtime(&self) -> &RuntimeClient {
        &self.inner.runtime
    }

    /// Webhook subscriptions (their deliveries run in the background).
    pub fn webhooks(&self) -> &crate::webhooks::Webhooks {
        &self.inner.webhooks
    }

    /// Starts the session watcher and resumes runs left active by a previous process.
    pub async fn start_background(&self) -> Result<(), ApiError> {
        let service = self.clone();
        self.inner
            .tasks
            .spawn(async move { watcher::watch_sessions(service).await });
        if self.inner.options.discovery {
            let service = self.clone();
            self.inner
                .tasks
                .spawn(async move { watcher::watch_signals(service).await });
        }
        if self.inner.cluster.is_some() {
            // Runs are resumed as their leases are claimed; the leader delivers webhooks.
            return self.join_cluster().await;
        }
        self.spawn_leader_work(&self.inner.shutdown);
        for run in self.inner.store.active_runs().await? {
            self.spawn_recovery(run);
        }
        Ok(())
    }

    /// Stops background work and waits (bounded) for it to finish, then ends live streams.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within {grace:?}");
        }
        self.leave_cluster().await;
        // Live streams end once they have sent what was published, so the server's graceful
        // stop does not wait on them; their clients resume elsewhere from their last seq.
        self.inner.hub.close();
    }

    /// What the runtime's `Initialize` told (cached briefly); `Err` when it is unreachable.
    pub(super) async fn runtime_traits(&self) -> Result<RuntimeTraits, crate::runtime::Error> {
        let mut cache = self.inner.initialized.lock().await;
        if let Some((fetched, traits)) = cache.as_ref()
            && fetched.elapsed() < INITIALIZE_TTL
        {
            return Ok(traits.clone());
        }
        let answer = self.inner.runtime.initialize().await?;
        let traits = RuntimeTraits {
            signs_receipts: answer
                .capabilities
                .and_then(|capabilities| capabilities.decision_receipt)
                .is_some_and(|receipts| receipts.get_decision_receipt && receipts.signed),
            supported_modes: answer.supported_modes,
        };
        *cache = Some((Instant::now(), traits.clone()));
        Ok(traits)
    }

    /// Supported modes from the runtime (cached briefly); `Err` when it is unreachable.
    pub async fn supported_modes(&self) -> Result<Vec<String>, crate::runtime::Error> {
        Ok(self.runtime_traits().await?.supported_modes)
    }

    /// Parses and checks a request: structure, credentials, and the mode against the runtime.
    async fn check(
        &self,
        raw: &Value,
    ) -> (
        Option<ExecutionRequest>,
        Vec<FieldError>,
        Vec<String>,
        RuntimeCheck,
    ) {
        let (parsed, mut errors, mut warnings) = match request::parse(raw) {
            Ok((request, warnings)) => (Some(request), Vec::new(), warnings),
            Err(problems) => (None, problems.errors, problems.warnings),
        };
        let runtime = match self.supported_modes().await {
            Ok(modes) => RuntimeCheck {
                reachable: true,
                supported_modes: modes,
            },
            Err(error) => {
                warnings.push(format!("runtime not reachable: {error}"));
                RuntimeCheck {
                    reachable: false,
                    supported_modes: Vec::new(),
                }
            }
        };
        if let Some(request) = &parsed {
            let session = &request.session;
            if runtime.reachable && !runtime.supported_modes.contains(&session.mode_name) {
                errors.push(FieldError::new(
                    "session.modeName",
                    format!(
                        "runtime does not support mode '{}'; supported: {}",
                        session.mode_name,
                        runtime.supported_modes.join(", ")
                    ),
                ));
            }
            let credentials = self.inner.runtime.credentials();
            if !credentials.can_send_as(&session.initiator) {
                errors.push(FieldError::new(
                    "session.initiatorParticipantId",
                    format!(
                        "no runtime credential for initiator '{}'",
                        session.initiator
                    ),
                ));
            }
            for (position, message) in request.kickoff.iter().enumerate() {
                if !credentials.can_send_as(&message.from) {
                    errors.push(FieldError::new(
                        format!("kickoff[{position}].from"),
                        format!("no runtime credential for sender '{}'", message.from),
                    ));
                }
            }
        }
        (parsed, errors, warnings, runtime)
    }

    pub async fn validate(&self, raw: &Value) -> ValidationReport {
        let (_, errors, warnings, runtime) = self.check(raw).await;
        ValidationReport {
            valid: errors.is_empty(),
            errors,
            warnings,
            runtime,
        }
    }

    /// Creates a run and starts it in the background. A repeated idempotency key returns the
    /// stored run and does nothing else.
    pub async fn start(&self, raw: Value) -> Result<StartOutcome, ApiError> {
        let (parsed, errors, _, _) = self.check(&raw).await;
        let request = match parsed {
            Some(request) if errors.is_empty() => request,
            _ => return Err(ApiError::validation(errors)),
        };
        // A RunDescriptor names its session; the run takes its id when that is a UUID, so the
        // UI console finds the run under the session id it navigates by.
        let (run_id, session_id) = match &request.session.session_id {
            Some(session_id) => {
                let run_id = uuid::Uuid::parse_str(session_id)
                    .map(|uuid| uuid.to_string())
                    .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
                (run_id, session_id.clone())
            }
            None => (
                uuid::Uuid::new_v4().to_string(),
                uuid::Uuid::new_v4().to_string(),
            ),
        };
        // The run's trace id is the id of its lifecycle span's trace when traces are exported.
        if request.session.session_id.is_some()
            && let Some(existing) = self.inner.store.run_by_session(&session_id).await?
        {
            return Err(ApiError::new(
                ErrorCode::SessionAlreadyExists,
                format!("session {session_id} already has run {}", existing.id),
            )
            .with_details(
                json!({"errors": [FieldError::new("session.sessionId", "already has a run")]}),
            ));
        }
        let trace_id = self
            .inner
            .tracing
            .start_run(&run_id, &request.session.mode_name)
            .unwrap_or_else(crate::telemetry::new_trace_id);
        let now = crate::time::now();
        let session = &request.session;
        let metadata_str = |key: &str| {
            session
                .metadata
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let mut metadata = json!({
            "executionRequest": request.raw,
            "sessionId": session_id,
            "modeName": session.mode_name,
            "initiator": session.initiator,
        });
        if let Some(map) = metadata.as_object_mut() {
            for key in ["scenarioRef", "templateId", "environment"] {
                if let Some(value) = metadata_str(key) {
                    map.insert(key.to_owned(), json!(value));
                }
            }
            if request.requester.actor_id.is_some() || request.requester.actor_type.is_some() {
                map.insert(
                    "requester".to_owned(),
                    json!({
                        "actorId": request.requester.actor_id,
                        "actorType": request.requester.actor_type,
                    }),
                );
            }
        }
        let created_event = EventDraft::new(
            types::RUN_CREATED,
            now,
            Some(Subject::new("run", run_id.clone())),
            Source::control_plane("run-service"),
            json!({
                "status": RunStatus::Queued.as_str(),
                "modeName": session.mode_name,
                "runtimeKind": request.runtime_kind,
                "runtimeVersion": request.runtime_version,
                "traceId": trace_id,
                "sessionId": session_id,
            }),
        );
        let trace = Some(crate::events::canonical::TraceRef {
            trace_id: Some(trace_id.clone()),
            ..Default::default()
        });
        let created =
            crate::events::canonical::CanonicalEvent::from_draft(created_event, &run_id, 1, trace);
        let state = crate::projection::reducer::fold(&run_id, [&created]);
        let outcome = self
            .inner
            .store
            .create_run(
                NewRun {
                    id: run_id.clone(),
                    mode: request.mode.as_str().to_owned(),
                    runtime_kind: request.runtime_kind.clone(),
                    runtime_version: request.runtime_version.clone(),
                    trace_id: Some(trace_id),
                    idempotency_key: request.idempotency_key.clone(),
                    source_kind: metadata_str("source"),
                    source_ref: metadata_str("sourceRef"),
                    tags: request.tags.clone(),
                    metadata,
                    created_at: now,
                    created_by: crate::auth::audit::actor(),
                    // Pre-allocated: discovery will see this session and find its run.
                    runtime_session_id: Some(session_id.clone()),
                    status: RunStatus::Queued,
                    started_at: None,
                    session: None,
                    audit: crate::auth::audit::take(&run_id),
                },
                std::slice::from_ref(&created),
                &state,
            )
            .await
            .inspect_err(|_| crate::auth::audit::put_back())?;
        match outcome {
            CreateOutcome::SessionTaken => {
                // Only a RunDescriptor's named session can have one already.
                self.inner.tracing.discard_run(&run_id);
                Err(ApiError::new(
                    ErrorCode::SessionAlreadyExists,
                    format!("session {session_id} already has a run"),
                )
                .with_details(
                    json!({"errors": [FieldError::new("session.sessionId", "already has a run")]}),
                ))
            }
            CreateOutcome::Existing(run) => {
                self.inner.tracing.discard_run(&run_id);
                Ok(StartOutcome {
                    run_id: run.id,
                    status: run.status,
                    trace_id: run.trace_id,
                    existing: true,
                })
            }
            CreateOutcome::Created(run) => {
                crate::telemetry::metrics::record_transition(RunStatus::Queued);
                let service = self.clone();
                let plan = executor::Plan {
                    run_id: run.id.clone(),
                    session_id,
                    request,
                };
                self.inner
                    .tasks
                    .spawn(async move { executor::execute(service, plan).await });
                Ok(StartOutcome {
                    run_id: run.id,
                    status: run.status,
                    trace_id: run.trace_id,
                    existing: false,
                })
            }
        }
    }

    pub async fn get(&self, run_id: &str) -> Result<Run, ApiError> {
        self.inner
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| not_found(run_id))
    }

    /// A page of run records (with their figures, `records`).
    pub async fn list(&self, filter: &RunFilter) -> Result<RunPage, ApiError> {
        let mut page = self.inner.store.list_runs(filter).await?;
        page.data = self.with_figures(page.data).await?;
        Ok(page)
    }

    /// The run's current projection (the fold of every committed event).
    pub async fn state(&self, run_id: &str) -> Result<RunState, ApiError> {
        match super::writer::current_state(&self.inner.store, run_id).await? {
            Some(state) => Ok(state),
            None => {
                self.get(run_id).await?;
                Ok(RunState::empty(run_id))
            }
        }
    }

    /// Events matching a query, as a page (`nextCursor` = the last seq when the page is full).
    pub async fn query_events(&self, query: EventQuery) -> Result<EventPage, ApiError> {
        if let Some(run_id) = &query.run_id {
            self.get(run_id).await?;
        }
        let total = self.inner.store.count_events(&query).await?;
        let data = self.inner.store.query_events(&query).await?;
        let next_cursor = (data.len() as u64 == query.limit)
            .then(|| data.last().map(|event| event.seq))
            .flatten();
        Ok(EventPage {
            data,
            total,
            limit: query.limit,
            next_cursor,
        })
    }

    /// Cancels the run's runtime session (as its initiator) and marks the run cancelled on the
    /// runtime's answer. A terminal run is returned unchanged.
    pub async fn cancel(&self, run_id: &str, reason: Option<String>) -> Result<Run, ApiError> {
        let call = Call::Cancel {
            reason: reason.clone(),
        };
        if let Route::Answered(answer) = self.route(run_id, call).await? {
            cluster::answer::<()>(answer)?;
            return self.get(run_id).await;
        }
        let run = self.get(run_id).await?;
        if run.status.is_terminal() {
            return Ok(run);
        }
        let reason = reason.unwrap_or_else(|| "cancelled by control plane".to_owned());
        match self.session(run_id).await? {
            Some(session) => {
                // Set before asking: the observer may write `run.cancelled` as soon as the
                // runtime has cancelled.
                self.requested_reasons()
                    .request(run_id, RunStatus::Cancelled, reason.clone());
                let span = self
                    .inner
                    .tracing
                    .child(run_id, "runtime.CancelSession", Vec::new());
                let ack = self
                    .inner
                    .runtime
                    .cancel_session(&session.session_id, &reason, &session.initiator)
                    .with_context(span.context())
                    .await
                    .map_err(|error| {
                        self.requested_reasons().take(run_id, RunStatus::Cancelled);
                        error.to_api_error()
                    })?;
                drop(span);
                let metadata = match self
                    .inner
                    .runtime
                    .get_session(&session.session_id, &session.initiator)
                    .await
                {
                    Ok(metadata) => metadata,
                    Err(_) => SessionMetadata {
                        session_id: session.session_id.clone(),
                        state: ack.session_state,
                        mode: session.mode_name.clone(),
                        ..Default::default()
                    },
                };
                // The session takes nothing new now; what it accepted before is stored before
                // `run.cancelled`, unless it takes longer than the bound to arrive.
                if !self
                    .wait_caught_up(run_id, &metadata, CATCH_UP_BOUND)
                    .await?
                {
                    tracing::warn!(%run_id, "accepted envelopes not yet stored; cancelling anyway");
                }
                self.finalize(run_id, Some(metadata), Some(reason)).await?;
            }
            None => {
                // Not bound yet: the executor sees the terminal status and stops (cancelling a
                // session it may have started meanwhile).
                self.finalize_without_session(run_id, RunStatus::Cancelled, None)
                    .await?;
            }
        }
        self.get(run_id).await
    }

    pub(super) fn requested_reasons(&self) -> &RequestedReasons {
        &self.inner.requested_reasons
    }

    /// Whether every envelope the runtime had accepted when it reported `metadata` is stored.
    /// Ordinals count accepted envelopes (the SessionStart is 1); the runtime counts each
    /// sender's accepted messages, so the last ordinal is one more than their sum. Envelopes the
    /// runtime synthesizes are not in those counts: with them, this may answer early.
    pub(crate) async fn caught_up(
        &self,
        run_id: &str,
        metadata: &SessionMetadata,
    ) -> Result<bool, ApiError> {
        let accepted: i64 = 1 + metadata
            .participant_activity
            .iter()
            .map(|activity| i64::from(activity.message_count))
            .sum::<i64>();
        let guard = self.inner.writers.lock(run_id).await?;
        Ok(guard
            .as_ref()
            .is_none_or(|writer| writer.last_ordinal() >= accepted))
    }

    /// Waits up to `within` for [`Self::caught_up`]; `false` when the bound passed first.
    async fn wait_caught_up(
        &self,
        run_id: &str,
        metadata: &SessionMetadata,
        within: Duration,
    ) -> Result<bool, ApiError> {
        // Subscribed before the first check, so a batch stored in between wakes us.
        let mut batches = self.inner.hub.subscribe(run_id);
        let wait = async {
            while !self.caught_up(run_id, metadata).await? {
                if let Err(crate::events::hub::RecvError::Closed) = batches.recv().await {
                    return Ok(false);
                }
            }
            Ok::<_, ApiError>(true)
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or(Ok(false))
    }

    /// Ends a run on a terminal session state reported by the runtime (the authority). No-op
    /// when the run is already terminal or the state is not terminal.
    pub(crate) async fn finalize(
        &self,
        run_id: &str,
        metadata: Option<SessionMetadata>,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        let Some(metadata) = metadata else {
            return Ok(());
        };
        let state = macp_runtime::pb::SessionState::try_from(metadata.state)
            .unwrap_or(macp_runtime::pb::SessionState::Unspecified);
        use macp_runtime::pb::SessionState as S;
        let status = match state {
            S::Resolved => RunStatus::Completed,
            S::Expired => RunStatus::Failed,
            S::Cancelled => RunStatus::Cancelled,
            S::Suspended | S::Open | S::Unspecified => {
                return self.record_session_state(run_id, metadata, reason).await;
            }
        };
        let mut guard = self.inner.writers.lock(run_id).await?;
        let Some(writer) = guard.as_mut() else {
            return Err(not_found(run_id));
        };
        if writer.status().is_terminal() {
            return Ok(());
        }
        let now = crate::time::now();
        let error = (status == RunStatus::Failed).then(|| {
            (
                ErrorCode::SessionExpired.as_str().to_owned(),
                "runtime session expired before it resolved".to_owned(),
            )
        });
        let requested = self.requested_reasons().take(run_id, RunStatus::Cancelled);
        let reason = match status {
            RunStatus::Cancelled => reason.or(requested),
            _ => reason,
        };
        let mut events = Vec::with_capacity(2);
        // Asked under the run's lock, so only the finalize that ends the run records it; in the
        // terminal event's transaction, so a finalize repeated after a restart records no second.
        if status == RunStatus::Completed
            && let Some(initiator) = writer.state().run.initiator.as_deref()
        {
            events.extend(
                self.receipt_event(run_id, &metadata.session_id, initiator, now)
                    .await,
            );
        }
        events.push(terminal_event(
            run_id,
            writer.state(),
            status,
            now,
            error.as_ref(),
            reason,
        ));
        let session_state = crate::events::normalizer::state_name(metadata.state).to_owned();
        let session_id = metadata.session_id.clone();
        self.inner
            .writers
            .ingest(
                writer,
                &[RuntimeItem::SessionState(metadata)],
                now,
                events,
                Change {
                    run: RunChange {
                        status: Some(status),
                        ended_at: Some(now),
                        error,
                        ..RunChange::default()
                    },
                    session: Some(SessionChange::Progress {
                        last_ordinal: None,
                        state: Some(session_state),
                    }),
                    ..Change::default()
                },
            )
            .await?;
        drop(guard);
        self.inner.writers.forget(run_id);
        self.unregister_observer(&session_id);
        self.inner.tracing.end_run(run_id, status.as_str(), None);
        Ok(())
    }

    /// Records a non-terminal session state change: a running run suspended, a suspended one
    /// resumed (`run.suspended`, `run.resumed`). Other changes (an open session of a run still
    /// binding) are the observer's.
    async fn record_session_state(
        &self,
        run_id: &str,
        metadata: SessionMetadata,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        use macp_runtime::pb::SessionState as S;
        let status = match S::try_from(metadata.state) {
            Ok(S::Suspended) => RunStatus::Suspended,
            Ok(S::Open) => RunStatus::Running,
            _ => return Ok(()),
        };
        let mut guard = self.inner.writers.lock(run_id).await?;
        let Some(writer) = guard.as_mut() else {
            return Err(not_found(run_id));
        };
        let from = writer.status();
        if !from.may_become(status) {
            return Ok(());
        }
        if super::suspend::toggles(from, status)
            && let Some(reader) = writer.state().run.initiator.clone()
            && !self
                .session_still(&metadata.session_id, metadata.state, &reader)
                .await
        {
            return Ok(());
        }
        let now = crate::time::now();
        let event =
            super::suspend::transition_event(run_id, writer.state(), from, status, now, || {
                reason.or_else(|| self.requested_reasons().take(run_id, status))
            });
        let session_state = crate::events::normalizer::state_name(metadata.state).to_owned();
        self.inner
            .writers
            .ingest(
                writer,
                &[RuntimeItem::SessionState(metadata)],
                now,
                event.into_iter().collect(),
                Change {
                    run: RunChange {
                        status: Some(status),
                        ..RunChange::default()
                    },
                    session: Some(SessionChange::Progress {
                        last_ordinal: None,
                        state: Some(session_state),
                    }),
                    ..Change::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Ends a run that has no runtime session (refused before binding, cancelled early).
    pub(crate) async fn finalize_without_session(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&ApiError>,
    ) -> Result<(), ApiError> {
        let mut guard = self.inner.writers.lock(run_id).await?;
        let Some(writer) = guard.as_mut() else {
            return Err(not_found(run_id));
        };
        if writer.status().is_terminal() {
            return Ok(());
        }
        let now = crate::time::now();
        let error = error.map(|error| (error.code.as_str().to_owned(), error.message.clone()));
        let error_message = error.as_ref().map(|(_, message)| message.clone());
        let terminal = terminal_event(run_id, writer.state(), status, now, error.as_ref(), None);
        self.inner
            .writers
            .emit(
                writer,
                vec![terminal],
                Change {
                    run: RunChange {
                        status: Some(status),
                        ended_at: Some(now),
                        error,
                        ..RunChange::default()
                    },
                    session: None,
                    ..Change::default()
                },
            )
            .await?;
        drop(guard);
        self.inner.writers.forget(run_id);
        self.requested_reasons().forget(run_id);
        self.inner
            .tracing
            .end_run(run_id, status.as_str(), error_message.as_deref());
        Ok(())
    }

    pub(crate) fn register_observer(
        &self,
        session_id: &str,
    ) -> mpsc::UnboundedReceiver<SessionSignal> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inner
            .observers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(session_id.to_owned(), sender);
        receiver
    }

    /// A RunDescriptor run's wake-up call for when its session appears (discovery sees it).
    pub(crate) fn register_waiter(&self, session_id: &str) -> Arc<tokio::sync::Notify> {
        self.waiters()
            .entry(session_id.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn unregister_waiter(&self, session_id: &str) {
        self.waiters().remove(session_id);
    }

    pub(crate) fn wake_waiter(&self, session_id: &str) {
        if let Some(waiter) = self.waiters().get(session_id) {
            waiter.notify_one();
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Notify>>> {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this process observes the session.
    pub(crate) fn is_observed(&self, session_id: &str) -> bool {
        self.inner
            .observers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(session_id)
    }

    pub(crate) fn unregister_observer(&self, session_id: &str) {
        self.inner
            .observers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(session_id);
    }

    /// Hands a lifecycle event to the observer of its session, if this process has one.
    pub(crate) fn signal_session(&self, metadata: SessionMetadata) {
        let observers = self
            .inner
            .observers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(observer) = observers.get(&metadata.session_id) {
            let _ = observer.send(metadata);
        }
    }

    /// Resumes a run found active at startup: re-running the executor is safe because every
    /// message it sends has a deterministic id the runtime de-duplicates.
    pub(super) fn spawn_recovery(&self, run: Run) {
        let service = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(error) = observer::recover(service, run.clone()).await {
                tracing::error!(run_id = %run.id, %error, "run recovery failed");
            }
        });
    }

    pub async fn runtime_manifest(&self) -> Result<info::Manifest, ApiError> {
        self.inner
            .runtime
            .get_manifest()
            .await
            .map(|manifest| info::Manifest {
                embedded_address: self.embedded_runtime_address(),
                ..manifest.into()
            })
            .map_err(|error| error.to_api_error())
    }

    fn embedded_runtime_address(&self) -> Option<String> {
        self.inner
            .options
            .embedded_runtime
            .map(|address| address.to_string())
    }

    pub async fn runtime_modes(&self) -> Result<Vec<info::Mode>, ApiError> {
        let modes = self
            .inner
            .runtime
            .list_modes()
            .await
            .map_err(|error| error.to_api_error())?;
        Ok(modes.into_iter().map(info::Mode::from).collect())
    }

    pub async fn runtime_roots(&self) -> Result<Vec<info::Root>, ApiError> {
        let roots = self
            .inner
            .runtime
            .list_roots()
            .await
            .map_err(|error| error.to_api_error())?;
        Ok(roots.into_iter().map(info::Root::from).collect())
    }

    pub async fn runtime_health(&self) -> info::Health {
        match self.inner.runtime.get_manifest().await {
            Ok(manifest) => info::Health {
                ok: true,
                runtime_kind: RUNTIME_KIND.to_owned(),
                detail: Some(format!("reachable at {}", self.inner.runtime.address())),
                manifest: Some(manifest.into()),
                embedded_address: self.embedded_runtime_address(),
            },
            Err(error) => info::Health {
                ok: false,
                runtime_kind: RUNTIME_KIND.to_owned(),
                detail: Some(error.to_string()),
                manifest: None,
                embedded_address: self.embedded_runtime_address(),
            },
        }
    }

    /// Ready when the database answers and the runtime completes `Initialize`.
    pub async fn readiness(&self) -> Readiness {
        let database = match self.inner.store.ping().await {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!("unhealthy: {error}"),
        };
        let runtime = match self.inner.runtime.initialize().await {
            Ok(response) => info::Health {
                ok: true,
                runtime_kind: RUNTIME_KIND.to_owned(),
                detail: response
                    .runtime_info
                    .map(|info| format!("{} {}", info.name, info.version)),
                manifest: None,
                embedded_address: None,
            },
            Err(error) => info::Health {
                ok: false,
                runtime_kind: RUNTIME_KIND.to_owned(),
                detail: Some(error.to_string()),
                manifest: None,
                embedded_address: None,
            },
        };
        let watched = self
            .inner
            .sessions_watched
            .load(std::sync::atomic::Ordering::Relaxed);
        Readiness {
            ok: database == "ok" && runtime.ok,
            database,
            runtime,
            stream_consumer: if watched { "ok" } else { "unhealthy" }.to_owned(),
            circuit_breaker: self
                .inner
                .runtime
                .circuit_breaker()
                .state()
                .as_str()
                .to_owned(),
            cluster: self.cluster_readiness().await,
        }
    }
}

/// `run.completed` / `run.failed` / `run.cancelled` for a run.
fn terminal_event(
    run_id: &str,
    state: &RunState,
    status: RunStatus,
    now: crate::time::Timestamp,
    error: Option<&(String, String)>,
    reason: Option<String>,
) -> EventDraft {
    let event_type = match status {
        RunStatus::Completed => types::RUN_COMPLETED,
        RunStatus::Cancelled => types::RUN_CANCELLED,
        _ => types::RUN_FAILED,
    };
    let mut data = json!({
        "status": status.as_str(),
        "endedAt": crate::time::format(&now),
        "runtimeSessionId": state.run.runtime_session_id,
        "traceId": state.run.trace_id,
    });
    if let Some(map) = data.as_object_mut() {
        if let Some((code, message)) = error {
            map.insert("errorCode".to_owned(), json!(code));
            map.insert("error".to_owned(), json!(message));
        }
        if let Some(reason) = reason {
            map.insert("reason".to_owned(), json!(reason));
        }
    }
    EventDraft::new(
        event_type,
        now,
        Some(Subject::new("run", run_id.to_owned())),
        Source::control_plane("run-service"),
        data,
    )
}
