//! The `ControlPlane` gRPC service: proto ⇄ domain conversion around the same `RunService` calls
//! the REST routes make. The `ScenarioRegistry` service is in [`registry`].

mod admin;
mod await_route;
mod dashboard;
mod manage;
pub mod registry;
mod webhooks;

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tonic::{Request, Response, Status};

pub use await_route::{AwaitRunRoute, WithAwaitRoute};

use super::proto;
use crate::domain::artifact::Artifact;
use crate::domain::query::{
    DEFAULT_CROSS_RUN_LIMIT, DEFAULT_EVENT_LIMIT, EventsQuery, MIN_HEARTBEAT_MS, RunQuery,
};
use crate::domain::run::Run;
use crate::error::{ApiError, FieldError};
use crate::events::canonical::CanonicalEvent;
use crate::events::type_filter::TypeFilter;
use crate::runs::RunService;
use crate::runs::replay::{ReplayItem, ReplayQuery};
use crate::runs::watch::{WatchItem, WatchOptions, wait_for_run};
use crate::runtime::{info, policies};

pub struct ControlPlaneApi {
    service: RunService,
    admin: crate::auth::admin::Admin,
}

impl ControlPlaneApi {
    pub fn new(service: RunService, admin: crate::auth::admin::Admin) -> Self {
        ControlPlaneApi { service, admin }
    }
}

/// Our error as a gRPC status: the code, the message, and the stable `errorCode` (plus JSON
/// details) in metadata so clients can branch on it.
pub fn status(error: ApiError) -> Status {
    let mut status = Status::new(
        tonic::Code::from_i32(error.code.grpc_code()),
        error.message.clone(),
    );
    if let Ok(code) = error.code.as_str().parse() {
        status.metadata_mut().insert("x-error-code", code);
    }
    if let Some(details) = &error.details {
        let bytes =
            tonic::metadata::BinaryMetadataValue::from_bytes(details.to_string().as_bytes());
        status
            .metadata_mut()
            .insert_bin("x-error-details-bin", bytes);
    }
    status
}

fn internal(message: impl std::fmt::Display) -> Status {
    status(ApiError::internal(message.to_string()))
}

/// A free-form JSON object as `google.protobuf.Struct`, read in place (no copy of the value
/// first: a run's metadata, converted for every AwaitRun waiter, is its whole request).
fn to_struct(value: &Value) -> Result<Option<pbjson_types::Struct>, Status> {
    match value {
        Value::Null => Ok(None),
        Value::Object(_) => <pbjson_types::Struct as serde::Deserialize>::deserialize(value)
            .map(Some)
            .map_err(internal),
        other => Err(internal(format!("expected a JSON object, got {other}"))),
    }
}

/// A proto message as its proto3 JSON (the form the domain parses requests from).
fn to_json<T: serde::Serialize>(message: &T) -> Result<Value, Status> {
    serde_json::to_value(message).map_err(internal)
}

fn to_u32(number: i64) -> u32 {
    u32::try_from(number.max(0)).unwrap_or(u32::MAX)
}

/// By reference: the run of an AwaitRun answer is shared by all the run's waiters.
pub fn run_message(run: &Run) -> Result<proto::Run, Status> {
    Ok(proto::Run {
        id: run.id.clone(),
        status: run.status.as_str().to_owned(),
        mode: run.mode.clone(),
        runtime_kind: run.runtime_kind.clone(),
        runtime_version: run.runtime_version.clone(),
        runtime_session_id: run.runtime_session_id.clone(),
        trace_id: run.trace_id.clone(),
        idempotency_key: run.idempotency_key.clone(),
        last_event_seq: to_u32(run.last_event_seq),
        source_kind: run.source_kind.clone(),
        source_ref: run.source_ref.clone(),
        tags: run.tags.clone(),
        metadata: to_struct(&run.metadata)?,
        error_code: run.error_code.clone(),
        error_message: run.error_message.clone(),
        created_at: crate::time::format(&run.created_at),
        started_at: run.started_at.as_ref().map(crate::time::format),
        ended_at: run.ended_at.as_ref().map(crate::time::format),
        updated_at: crate::time::format(&run.updated_at),
        created_by: run.created_by.clone(),
        archived_at: run.archived_at.as_ref().map(crate::time::format),
    })
}

fn started_message(outcome: crate::runs::service::StartOutcome) -> proto::RunStartResponse {
    proto::RunStartResponse {
        run_id: outcome.run_id,
        status: outcome.status.as_str().to_owned(),
        trace_id: outcome.trace_id,
        existing: outcome.existing,
        result: None,
    }
}

fn await_timeout(ms: Option<u32>, field: &str) -> Result<Duration, Status> {
    crate::runs::outcome::await_timeout(ms.map(u64::from), field).map_err(status)
}

fn result_message(outcome: &crate::runs::outcome::RunOutcome) -> Result<proto::RunResult, Status> {
    Ok(proto::RunResult {
        run: Some(run_message(&outcome.run)?),
        decision: outcome
            .decision
            .as_ref()
            .map(|decision| proto::RunDecision {
                action: decision.action.clone(),
                outcome_positive: decision.outcome_positive,
                confidence: decision.confidence,
                proposal_id: decision.proposal_id.clone(),
                resolved_by: decision.resolved_by.clone(),
            }),
        terminal_seq: to_u32(outcome.terminal_seq),
    })
}

/// What an `AwaitRun` call waits for; the router serves the RPC with [`AwaitRunRoute`].
async fn await_outcome(
    service: &RunService,
    request: proto::AwaitRunRequest,
) -> Result<std::sync::Arc<crate::runs::outcome::RunOutcome>, Status> {
    let timeout = await_timeout(request.timeout_ms, "timeoutMs")?;
    service
        .await_end(&request.run_id, timeout)
        .await
        .map_err(status)
}

fn metrics_message(metrics: crate::runs::observability::Metrics) -> proto::RunMetrics {
    proto::RunMetrics {
        run_id: metrics.run_id,
        event_count: to_u32(metrics.event_count),
        message_count: to_u32(metrics.message_count),
        signal_count: to_u32(metrics.signal_count),
        proposal_count: to_u32(metrics.proposal_count),
        tool_call_count: to_u32(metrics.tool_call_count),
        decision_count: to_u32(metrics.decision_count),
        stream_reconnect_count: to_u32(metrics.stream_reconnect_count),
        first_event_at: metrics.first_event_at,
        last_event_at: metrics.last_event_at,
        duration_ms: metrics.duration_ms,
        session_state: metrics.session_state,
        prompt_tokens: to_u32(metrics.prompt_tokens),
        completion_tokens: to_u32(metrics.completion_tokens),
        total_tokens: to_u32(metrics.total_tokens),
        estimated_cost_usd: metrics.estimated_cost_usd,
    }
}

pub fn event_message(event: CanonicalEvent) -> Result<proto::CanonicalEvent, Status> {
    Ok(proto::CanonicalEvent {
        id: event.id,
        run_id: event.run_id,
        seq: to_u32(event.seq),
        ts: crate::time::format(&event.ts),
        r#type: event.event_type,
        schema_version: event.schema_version,
        subject: event.subject.map(|subject| proto::EventSubject {
            kind: subject.kind,
            id: subject.id,
        }),
        source: Some(proto::EventSource {
            kind: event.source.kind,
            name: event.source.name,
            raw_type: event.source.raw_type,
        }),
        trace: event.trace.map(|trace| proto::EventTrace {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent_span_id: trace.parent_span_id,
        }),
        data: to_struct(&event.data)?,
    })
}

/// A request's run id, and its proto3 JSON without `runId` (the path parameter of the REST
/// twin), so both transports hand the domain the same body.
fn run_and_body<T: serde::Serialize>(request: T) -> Result<(String, Value), Status> {
    let mut body = to_json(&request)?;
    let run_id = body
        .as_object_mut()
        .and_then(|map| map.remove("runId"))
        .and_then(|id| id.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok((run_id, body))
}

fn receipt_message(
    receipt: crate::runs::messages::MessageReceipt,
) -> proto::SendRunMessageResponse {
    proto::SendRunMessageResponse {
        message_id: receipt.message_id,
        ack: Some(proto::RuntimeAck {
            ok: receipt.ack.ok,
            duplicate: receipt.ack.duplicate,
            message_id: receipt.ack.message_id,
            session_id: receipt.ack.session_id,
            accepted_at_unix_ms: receipt.ack.accepted_at_unix_ms,
            session_state: receipt.ack.session_state,
        }),
    }
}

fn policy_message(policy: policies::Policy) -> Result<proto::PolicyDescriptor, Status> {
    Ok(proto::PolicyDescriptor {
        policy_id: policy.policy_id,
        mode: policy.mode,
        description: policy.description,
        rules: to_struct(&Value::Object(policy.rules))?,
        schema_version: policy.schema_version,
        registered_at_unix_ms: policy.registered_at_unix_ms,
    })
}

fn artifact_message(artifact: Artifact) -> Result<proto::Artifact, Status> {
    Ok(proto::Artifact {
        id: artifact.id,
        run_id: artifact.run_id,
        kind: artifact.kind,
        label: artifact.label,
        uri: artifact.uri,
        inline: artifact
            .inline
            .map(|inline| serde_json::from_value(inline).map_err(internal))
            .transpose()?,
        created_at: crate::time::format(&artifact.created_at),
    })
}

/// The projection as a `google.protobuf.Struct`.
fn state_struct(
    state: &crate::projection::state::RunState,
) -> Result<pbjson_types::Struct, Status> {
    let json = serde_json::to_value(state).map_err(internal)?;
    Ok(to_struct(&json)?.unwrap_or_default())
}

type BoxStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// A live stream's item as `WatchRun` messages: one per event, so a batch becomes several.
fn watch_responses(
    item: Result<WatchItem, ApiError>,
) -> Vec<Result<proto::WatchRunResponse, Status>> {
    use proto::watch_run_response::Item;
    let respond =
        |item: Result<Item, Status>| item.map(|item| proto::WatchRunResponse { item: Some(item) });
    let event = |event: &CanonicalEvent| event_message(event.clone()).map(Item::Event);
    match item {
        Err(error) => vec![Err(status(error))],
        Ok(WatchItem::Snapshot(state)) => vec![respond(state_struct(&state).map(Item::Snapshot))],
        Ok(WatchItem::Event(one)) => vec![respond(event(&one))],
        Ok(WatchItem::Events(batch)) => {
            batch.events.iter().map(|one| respond(event(one))).collect()
        }
        Ok(WatchItem::Heartbeat(ts)) => vec![Ok(proto::WatchRunResponse {
            item: Some(Item::Heartbeat(proto::Heartbeat {
                ts: crate::time::format(&ts),
            })),
        })],
    }
}

fn health_message(health: info::Health) -> Result<proto::RuntimeHealth, Status> {
    Ok(proto::RuntimeHealth {
        ok: health.ok,
        runtime_kind: health.runtime_kind,
        detail: health.detail,
        manifest: health.manifest.map(manifest_message).transpose()?,
        embedded_address: health.embedded_address,
    })
}

fn manifest_message(manifest: info::Manifest) -> Result<proto::RuntimeManifest, Status> {
    Ok(proto::RuntimeManifest {
        agent_id: manifest.agent_id,
        title: manifest.title,
        description: manifest.description,
        supported_modes: manifest.supported_modes,
        metadata: to_struct(&serde_json::to_value(&manifest.metadata).map_err(internal)?)?,
        embedded_address: manifest.embedded_address,
    })
}

fn request_json(request: Option<proto::ExecutionRequest>) -> Result<Value, Status> {
    match request {
        Some(request) => to_json(&request),
        None => Ok(Value::Object(Default::default())),
    }
}

#[tonic::async_trait]
impl proto::control_plane_server::ControlPlane for ControlPlaneApi {
    async fn run_start(
        &self,
        request: Request<proto::RunStartRequest>,
    ) -> Result<Response<proto::RunStartResponse>, Status> {
        let request = request.into_inner();
        // Checked before anything starts: bad input changes nothing.
        let timeout = await_timeout(request.await_timeout_ms, "awaitTimeoutMs")?;
        let body = request_json(request.request)?;
        let outcome = self.service.start(body).await.map_err(status)?;
        let result = if request.await_result {
            let result = self.service.await_end(&outcome.run_id, timeout).await;
            Some(result_message(&*result.map_err(status)?)?)
        } else {
            None
        };
        Ok(Response::new(proto::RunStartResponse {
            result,
            ..started_message(outcome)
        }))
    }

    async fn what_if_run(
        &self,
        request: Request<proto::WhatIfRunRequest>,
    ) -> Result<Response<proto::WhatIfReport>, Status> {
        let request = request.into_inner();
        // A Struct carries every number as a double; the policy's schemaVersion is an integer.
        let mut body = crate::registry::values::normalize_numbers(to_json(&request)?);
        if let Some(body) = body.as_object_mut() {
            body.remove("runId");
        }
        let report = self
            .service
            .what_if(&request.run_id, &body)
            .await
            .map_err(status)?;
        // The report's JSON is the message's proto3 JSON.
        serde_json::from_value(serde_json::to_value(report).map_err(internal)?)
            .map(Response::new)
            .map_err(internal)
    }

    async fn get_run_receipt(
        &self,
        request: Request<proto::GetRunReceiptRequest>,
    ) -> Result<Response<proto::RunReceipt>, Status> {
        let receipt = self
            .service
            .receipt(&request.into_inner().run_id)
            .await
            .map_err(status)?;
        let record = receipt.record;
        Ok(Response::new(proto::RunReceipt {
            run_id: receipt.run_id,
            seq: to_u32(receipt.seq),
            session_id: record.session_id,
            issuer: record.issuer,
            key_id: record.key_id,
            algorithm: record.algorithm,
            signature: record.signature,
            issued_at: record.issued_at,
            commitment_hash: record.commitment_hash,
            receipt_format: record.receipt_format,
            receipt_json: record.receipt_json,
        }))
    }

    async fn await_run(
        &self,
        request: Request<proto::AwaitRunRequest>,
    ) -> Result<Response<proto::RunResult>, Status> {
        let outcome = await_outcome(&self.service, request.into_inner()).await?;
        Ok(Response::new(result_message(&outcome)?))
    }

    async fn validate_run(
        &self,
        request: Request<proto::ValidateRunRequest>,
    ) -> Result<Response<proto::ValidateRunResponse>, Status> {
        let body = request_json(request.into_inner().request)?;
        let report = self.service.validate(&body).await;
        Ok(Response::new(proto::ValidateRunResponse {
            valid: report.valid,
            errors: report
                .errors
                .into_iter()
                .map(|error| proto::FieldViolation {
                    field: error.field,
                    message: error.message,
                })
                .collect(),
            warnings: report.warnings,
            runtime: Some(proto::RuntimeCheck {
                reachable: report.runtime.reachable,
                supported_modes: report.runtime.supported_modes,
            }),
        }))
    }

    async fn get_run(
        &self,
        request: Request<proto::GetRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let run = self
            .service
            .run_record(&request.into_inner().run_id)
            .await
            .map_err(status)?;
        Ok(Response::new(run_message(&run)?))
    }

    async fn list_runs(
        &self,
        request: Request<proto::ListRunsRequest>,
    ) -> Result<Response<proto::ListRunsResponse>, Status> {
        let request = request.into_inner();
        let filter = RunQuery {
            status: request.status,
            tags: request.tags,
            created_after: request.created_after,
            created_before: request.created_before,
            limit: request.limit.map(i64::from),
            offset: request.offset.map(i64::from),
            sort_by: request.sort_by,
            sort_order: request.sort_order,
            environment: request.environment,
            search: request.search,
            scenario_ref: request.scenario_ref,
            include_archived: request.include_archived,
            include_sandbox: request.include_sandbox,
        }
        .into_filter()
        .map_err(status)?;
        let page = self.service.list(&filter).await.map_err(status)?;
        Ok(Response::new(proto::ListRunsResponse {
            data: page
                .data
                .iter()
                .map(run_message)
                .collect::<Result<_, _>>()?,
            total: to_u32(page.total as i64),
            limit: to_u32(page.limit as i64),
            offset: to_u32(page.offset as i64),
        }))
    }

    async fn get_run_state(
        &self,
        request: Request<proto::GetRunStateRequest>,
    ) -> Result<Response<pbjson_types::Struct>, Status> {
        let state = self
            .service
            .state(&request.into_inner().run_id)
            .await
            .map_err(status)?;
        Ok(Response::new(state_struct(&state)?))
    }

    async fn list_run_events(
        &self,
        request: Request<proto::ListRunEventsRequest>,
    ) -> Result<Response<proto::ListRunEventsResponse>, Status> {
        let request = request.into_inner();
        let query = EventsQuery {
            run_id: Some(request.run_id),
            types: request.types,
            after_seq: request.after_seq.map(i64::from),
            after_ts: request.after_ts,
            before_ts: request.before_ts,
            limit: request.limit.map(i64::from),
        }
        .validate(DEFAULT_EVENT_LIMIT)
        .map_err(status)?;
        let page = self.service.query_events(query).await.map_err(status)?;
        Ok(Response::new(proto::ListRunEventsResponse {
            data: page
                .data
                .into_iter()
                .map(event_message)
                .collect::<Result<_, _>>()?,
            total: to_u32(page.total as i64),
            limit: to_u32(page.limit as i64),
            next_cursor: page.next_cursor.map(to_u32),
        }))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let request = request.into_inner();
        let query = EventsQuery {
            run_id: request.run_id,
            types: request.types,
            after_seq: request.after_seq.map(i64::from),
            after_ts: request.after_ts,
            before_ts: request.before_ts,
            limit: request.limit.map(i64::from),
        }
        .validate(DEFAULT_CROSS_RUN_LIMIT)
        .map_err(status)?;
        let page = self.service.query_events(query).await.map_err(status)?;
        Ok(Response::new(proto::ListEventsResponse {
            data: page
                .data
                .into_iter()
                .map(event_message)
                .collect::<Result<_, _>>()?,
            total: to_u32(page.total as i64),
            limit: to_u32(page.limit as i64),
            next_cursor: page.next_cursor.map(to_u32),
        }))
    }

    type WatchRunStream = BoxStream<proto::WatchRunResponse>;

    async fn watch_run(
        &self,
        request: Request<proto::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let request = request.into_inner();
        let types = TypeFilter::parse(&request.types, "types")
            .map_err(|error| status(ApiError::validation(vec![error])))?;
        let heartbeat = match request.heartbeat_ms {
            Some(ms) if i64::from(ms) < MIN_HEARTBEAT_MS => {
                return Err(status(ApiError::validation(vec![FieldError::new(
                    "heartbeatMs",
                    format!("must be at least {MIN_HEARTBEAT_MS}"),
                )])));
            }
            Some(ms) => Duration::from_millis(u64::from(ms)),
            None => self.service.options().heartbeat,
        };
        let wait_for_run = wait_for_run(request.wait_for_run_ms.map(i64::from), "waitForRunMs")
            .map_err(|error| status(ApiError::validation(vec![error])))?;
        let stream = self
            .service
            .watch(
                &request.run_id,
                WatchOptions {
                    after_seq: request.after_seq.map(i64::from).unwrap_or(0),
                    include_snapshot: request.include_snapshot.unwrap_or(true),
                    heartbeat,
                    end_at_terminal: request.end_at_terminal,
                    types,
                    wait_for_run,
                },
            )
            .await
            .map_err(status)?;
        let open = crate::telemetry::metrics::open_stream("grpc");
        let items = stream.flat_map(move |item| {
            let _ = &open;
            futures::stream::iter(watch_responses(item))
        });
        Ok(Response::new(Box::pin(items)))
    }

    async fn create_replay(
        &self,
        request: Request<proto::CreateReplayRequest>,
    ) -> Result<Response<proto::ReplayDescriptor>, Status> {
        let request = request.into_inner();
        let replay = ReplayQuery {
            mode: request.mode,
            speed: request.speed,
            from_seq: request.from_seq.map(i64::from),
            to_seq: request.to_seq.map(i64::from),
        }
        .validate()
        .map_err(status)?;
        let descriptor = self
            .service
            .replay_descriptor(&request.run_id, replay)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ReplayDescriptor {
            run_id: descriptor.run_id,
            mode: descriptor.request.mode.as_str().to_owned(),
            speed: descriptor.request.speed,
            from_seq: descriptor.request.from_seq.map(to_u32),
            to_seq: descriptor.request.to_seq.map(to_u32),
            stream_url: descriptor.stream_url,
            state_url: descriptor.state_url,
        }))
    }

    type ReplayStream = BoxStream<proto::ReplayResponse>;

    async fn replay(
        &self,
        request: Request<proto::ReplayRunRequest>,
    ) -> Result<Response<Self::ReplayStream>, Status> {
        let request = request.into_inner();
        let replay = ReplayQuery {
            mode: request.mode,
            speed: request.speed,
            from_seq: request.from_seq.map(i64::from),
            to_seq: request.to_seq.map(i64::from),
        }
        .validate()
        .map_err(status)?;
        let stream = self
            .service
            .replay(&request.run_id, replay)
            .await
            .map_err(status)?;
        let items = stream.map(|item| {
            let item = match item.map_err(status)? {
                ReplayItem::Event(event) => {
                    proto::replay_response::Item::Event(event_message((**event).clone())?)
                }
                ReplayItem::Snapshot(state) => {
                    proto::replay_response::Item::Snapshot(state_struct(&state)?)
                }
            };
            Ok(proto::ReplayResponse { item: Some(item) })
        });
        Ok(Response::new(Box::pin(items)))
    }

    async fn get_replay_state(
        &self,
        request: Request<proto::GetReplayStateRequest>,
    ) -> Result<Response<pbjson_types::Struct>, Status> {
        let request = request.into_inner();
        let state = self
            .service
            .state_at(&request.run_id, request.seq.map(i64::from))
            .await
            .map_err(status)?;
        Ok(Response::new(state_struct(&state)?))
    }

    async fn cancel_run(
        &self,
        request: Request<proto::CancelRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let request = request.into_inner();
        let run = self
            .service
            .cancel(&request.run_id, request.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(run_message(&run)?))
    }

    async fn suspend_session(
        &self,
        request: Request<proto::SuspendSessionRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let request = request.into_inner();
        let run = self
            .service
            .suspend(&request.run_id, request.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(run_message(&run)?))
    }

    async fn resume_session(
        &self,
        request: Request<proto::ResumeSessionRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let request = request.into_inner();
        let run = self
            .service
            .resume(&request.run_id, request.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(run_message(&run)?))
    }

    async fn send_run_message(
        &self,
        request: Request<proto::SendRunMessageRequest>,
    ) -> Result<Response<proto::SendRunMessageResponse>, Status> {
        let (run_id, body) = run_and_body(request.into_inner())?;
        let receipt = self
            .service
            .send_message(&run_id, &body)
            .await
            .map_err(status)?;
        Ok(Response::new(receipt_message(receipt)))
    }

    async fn send_run_signal(
        &self,
        request: Request<proto::SendRunSignalRequest>,
    ) -> Result<Response<proto::SendRunMessageResponse>, Status> {
        let (run_id, body) = run_and_body(request.into_inner())?;
        let receipt = self
            .service
            .send_signal(&run_id, &body)
            .await
            .map_err(status)?;
        Ok(Response::new(receipt_message(receipt)))
    }

    async fn update_run_context(
        &self,
        request: Request<proto::UpdateRunContextRequest>,
    ) -> Result<Response<proto::SendRunMessageResponse>, Status> {
        let (run_id, body) = run_and_body(request.into_inner())?;
        let receipt = self
            .service
            .update_context(&run_id, &body)
            .await
            .map_err(status)?;
        Ok(Response::new(receipt_message(receipt)))
    }

    async fn list_run_messages(
        &self,
        request: Request<proto::ListRunMessagesRequest>,
    ) -> Result<Response<proto::ListRunMessagesResponse>, Status> {
        let messages = self
            .service
            .messages(&request.into_inner().run_id)
            .await
            .map_err(status)?;
        let messages = messages
            .into_iter()
            .map(|message| {
                let json = serde_json::to_value(&message).map_err(internal)?;
                Ok(to_struct(&json)?.unwrap_or_default())
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(proto::ListRunMessagesResponse { messages }))
    }

    async fn traces(
        &self,
        request: Request<proto::TracesRequest>,
    ) -> Result<Response<proto::TraceSummary>, Status> {
        let summary = self
            .service
            .traces(&request.into_inner().run_id)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::TraceSummary {
            trace_id: summary.trace_id,
            span_count: to_u32(summary.span_count),
            last_span_id: summary.last_span_id,
            linked_artifacts: summary.linked_artifacts,
            run_status: summary.run_status,
            scenario_ref: summary.scenario_ref,
        }))
    }

    async fn list_run_artifacts(
        &self,
        request: Request<proto::ListRunArtifactsRequest>,
    ) -> Result<Response<proto::ListRunArtifactsResponse>, Status> {
        let artifacts = self
            .service
            .artifacts(&request.into_inner().run_id)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListRunArtifactsResponse {
            artifacts: artifacts
                .into_iter()
                .map(artifact_message)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn create_run_artifact(
        &self,
        request: Request<proto::CreateRunArtifactRequest>,
    ) -> Result<Response<proto::Artifact>, Status> {
        let (run_id, body) = run_and_body(request.into_inner())?;
        let artifact = self
            .service
            .create_artifact(&run_id, &body)
            .await
            .map_err(status)?;
        Ok(Response::new(artifact_message(artifact)?))
    }

    async fn get_run_metrics(
        &self,
        request: Request<proto::GetRunMetricsRequest>,
    ) -> Result<Response<proto::RunMetrics>, Status> {
        let metrics = self
            .service
            .metrics(&request.into_inner().run_id)
            .await
            .map_err(status)?;
        Ok(Response::new(metrics_message(metrics)))
    }

    async fn get_runtime_manifest(
        &self,
        _: Request<proto::GetRuntimeManifestRequest>,
    ) -> Result<Response<proto::RuntimeManifest>, Status> {
        let manifest = self.service.runtime_manifest().await.map_err(status)?;
        Ok(Response::new(manifest_message(manifest)?))
    }

    async fn get_runtime_receipt_keys(
        &self,
        _: Request<proto::GetRuntimeReceiptKeysRequest>,
    ) -> Result<Response<proto::RuntimeReceiptKeys>, Status> {
        let jwks = self.service.runtime_receipt_keys().await.map_err(status)?;
        Ok(Response::new(proto::RuntimeReceiptKeys {
            jwks: to_struct(&jwks)?,
        }))
    }

    async fn list_runtime_modes(
        &self,
        _: Request<proto::ListRuntimeModesRequest>,
    ) -> Result<Response<proto::ListRuntimeModesResponse>, Status> {
        let modes = self.service.runtime_modes().await.map_err(status)?;
        let modes = modes
            .into_iter()
            .map(|mode| {
                Ok(proto::RuntimeMode {
                    schema_uris: to_struct(
                        &serde_json::to_value(&mode.schema_uris).map_err(internal)?,
                    )?,
                    mode: mode.mode,
                    mode_version: mode.mode_version,
                    title: mode.title,
                    description: mode.description,
                    determinism_class: mode.determinism_class,
                    participant_model: mode.participant_model,
                    message_types: mode.message_types,
                    terminal_message_types: mode.terminal_message_types,
                })
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(proto::ListRuntimeModesResponse { modes }))
    }

    async fn list_runtime_roots(
        &self,
        _: Request<proto::ListRuntimeRootsRequest>,
    ) -> Result<Response<proto::ListRuntimeRootsResponse>, Status> {
        let roots = self.service.runtime_roots().await.map_err(status)?;
        Ok(Response::new(proto::ListRuntimeRootsResponse {
            roots: roots
                .into_iter()
                .map(|root| proto::Root {
                    uri: root.uri,
                    name: root.name,
                })
                .collect(),
        }))
    }

    async fn get_runtime_health(
        &self,
        _: Request<proto::GetRuntimeHealthRequest>,
    ) -> Result<Response<proto::RuntimeHealth>, Status> {
        health_message(self.service.runtime_health().await).map(Response::new)
    }

    async fn list_policies(
        &self,
        request: Request<proto::ListPoliciesRequest>,
    ) -> Result<Response<proto::ListPoliciesResponse>, Status> {
        let mode = request.into_inner().mode;
        let policies = policies::list(self.service.runtime(), mode.as_deref())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListPoliciesResponse {
            policies: policies
                .into_iter()
                .map(policy_message)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn get_policy(
        &self,
        request: Request<proto::GetPolicyRequest>,
    ) -> Result<Response<proto::PolicyDescriptor>, Status> {
        let policy_id = request.into_inner().policy_id;
        let policy = policies::get(self.service.runtime(), &policy_id)
            .await
            .map_err(status)?;
        Ok(Response::new(policy_message(policy)?))
    }

    async fn register_policy(
        &self,
        request: Request<proto::RegisterPolicyRequest>,
    ) -> Result<Response<proto::PolicyChange>, Status> {
        let policy =
            policies::Policy::from_json(&to_json(&request.into_inner())?).map_err(status)?;
        let change = policies::register(self.service.runtime(), policy)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::PolicyChange { ok: change.ok }))
    }

    async fn unregister_policy(
        &self,
        request: Request<proto::UnregisterPolicyRequest>,
    ) -> Result<Response<proto::PolicyChange>, Status> {
        let policy_id = request.into_inner().policy_id;
        let change = policies::unregister(self.service.runtime(), &policy_id)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::PolicyChange { ok: change.ok }))
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        admin::list_audit(&self.admin, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreatedApiKey>, Status> {
        admin::create_key(&self.admin, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_api_keys(
        &self,
        _: Request<proto::ListApiKeysRequest>,
    ) -> Result<Response<proto::ListApiKeysResponse>, Status> {
        admin::list_keys(&self.admin).await.map(Response::new)
    }

    async fn revoke_api_key(
        &self,
        request: Request<proto::RevokeApiKeyRequest>,
    ) -> Result<Response<proto::ApiKey>, Status> {
        admin::revoke_key(&self.admin, &request.into_inner().key_id)
            .await
            .map(Response::new)
    }

    async fn create_webhook(
        &self,
        request: Request<proto::CreateWebhookRequest>,
    ) -> Result<Response<proto::Webhook>, Status> {
        webhooks::create(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_webhooks(
        &self,
        _: Request<proto::ListWebhooksRequest>,
    ) -> Result<Response<proto::ListWebhooksResponse>, Status> {
        webhooks::list(&self.service).await.map(Response::new)
    }

    async fn update_webhook(
        &self,
        request: Request<proto::UpdateWebhookRequest>,
    ) -> Result<Response<proto::Webhook>, Status> {
        webhooks::update(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_webhook(
        &self,
        request: Request<proto::DeleteWebhookRequest>,
    ) -> Result<Response<proto::Webhook>, Status> {
        webhooks::delete(&self.service, &request.into_inner().webhook_id)
            .await
            .map(Response::new)
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<proto::ListWebhookDeliveriesResponse>, Status> {
        webhooks::deliveries(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn reset_circuit_breaker(
        &self,
        _: Request<proto::ResetCircuitBreakerRequest>,
    ) -> Result<Response<proto::CircuitBreakerReset>, Status> {
        Ok(Response::new(webhooks::reset_breaker(&self.service)))
    }

    async fn get_circuit_breaker_history(
        &self,
        request: Request<proto::GetCircuitBreakerHistoryRequest>,
    ) -> Result<Response<proto::CircuitBreakerHistory>, Status> {
        webhooks::breaker_history(&self.service, request.get_ref()).map(Response::new)
    }

    async fn archive_run(
        &self,
        request: Request<proto::ArchiveRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        manage::archive(&self.service, &request.into_inner().run_id, true)
            .await
            .map(Response::new)
    }

    async fn unarchive_run(
        &self,
        request: Request<proto::UnarchiveRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        manage::archive(&self.service, &request.into_inner().run_id, false)
            .await
            .map(Response::new)
    }

    async fn delete_run(
        &self,
        request: Request<proto::DeleteRunRequest>,
    ) -> Result<Response<proto::DeleteRunResponse>, Status> {
        manage::delete(&self.service, &request.into_inner().run_id)
            .await
            .map(Response::new)
    }

    async fn clone_run(
        &self,
        request: Request<proto::CloneRunRequest>,
    ) -> Result<Response<proto::RunStartResponse>, Status> {
        manage::clone_run(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn compare_runs(
        &self,
        request: Request<proto::CompareRunsRequest>,
    ) -> Result<Response<proto::RunComparison>, Status> {
        manage::compare(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn export_run(
        &self,
        request: Request<proto::ExportRunRequest>,
    ) -> Result<Response<proto::RunExport>, Status> {
        manage::export(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    type StreamRunExportStream = BoxStream<pbjson_types::Struct>;

    async fn stream_run_export(
        &self,
        request: Request<proto::StreamRunExportRequest>,
    ) -> Result<Response<Self::StreamRunExportStream>, Status> {
        manage::export_records(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn batch_runs(
        &self,
        request: Request<proto::BatchRunsRequest>,
    ) -> Result<Response<proto::BatchRunsResponse>, Status> {
        manage::batch(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn rebuild_projection(
        &self,
        request: Request<proto::RebuildProjectionRequest>,
    ) -> Result<Response<proto::RebuildProjectionResponse>, Status> {
        manage::rebuild_projection(&self.service, &request.into_inner().run_id)
            .await
            .map(Response::new)
    }

    async fn get_dashboard_overview(
        &self,
        request: Request<proto::GetDashboardOverviewRequest>,
    ) -> Result<Response<proto::DashboardOverview>, Status> {
        dashboard::overview(&self.service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_agent_metrics(
        &self,
        _: Request<proto::ListAgentMetricsRequest>,
    ) -> Result<Response<proto::ListAgentMetricsResponse>, Status> {
        dashboard::agent_metrics(&self.service)
            .await
            .map(Response::new)
    }
}
