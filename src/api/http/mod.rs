//! REST + JSON routes over the run service. Handlers only parse, call the domain, and serialize.

mod admin;
mod dashboard;
mod docs;
mod extract;
mod manage;
mod messages;
mod observability;
mod policies;
mod registry;
mod streams;
mod webhooks;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use self::extract::{JsonBody, QueryParams};
use crate::domain::query::RunQuery;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::registry::Registry;
use crate::runs::RunService;

/// An error answered as `{statusCode, errorCode, message, details?}` with the matching status.
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        HttpError(error)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let mut response = (
            status,
            [("x-error-code", self.0.code.as_str())],
            Json(self.0.body()),
        )
            .into_response();
        if let Some(seconds) = self.0.code.retry_after_secs() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

type Result<T> = std::result::Result<T, HttpError>;

/// The REST routes; JSON bodies are read up to `max_body_bytes` (`extract::JsonBody`).
pub fn router(
    service: RunService,
    registry: Registry,
    admin: crate::auth::admin::Admin,
    max_body_bytes: usize,
) -> Router {
    Router::new()
        .route("/runs", post(start_run).get(list_runs))
        .route("/runs/validate", post(validate_run))
        .route("/runs/{id}", get(get_run).delete(manage::delete_run))
        .route("/runs/{id}/state", get(get_run_state))
        .route("/runs/{id}/events", get(list_run_events))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/suspend", post(suspend_run))
        .route("/runs/{id}/resume", post(resume_run))
        .route("/runs/{id}/await", get(await_run))
        .route("/runs/{id}/what-if", post(what_if))
        .route("/runs/{id}/receipt", get(run_receipt))
        .route("/runtime/manifest", get(runtime_manifest))
        .route("/runtime/modes", get(runtime_modes))
        .route("/runtime/roots", get(runtime_roots))
        .route("/runtime/health", get(runtime_health))
        .route("/runtime/receipt-keys", get(runtime_receipt_keys))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(streams::router())
        .merge(docs::router())
        .merge(messages::router())
        .merge(observability::router())
        .merge(manage::router())
        .merge(policies::router())
        .merge(webhooks::router())
        .merge(dashboard::router())
        .with_state(service.clone())
        .merge(registry::router(registry, service))
        .merge(admin::router(admin))
        .fallback(not_found)
        .layer(axum::Extension(extract::BodyLimit(max_body_bytes)))
}

/// Run ids are UUIDs; anything else is a bad request rather than an unknown run.
fn run_id(id: &str) -> Result<String> {
    match uuid::Uuid::parse_str(id) {
        Ok(uuid) => Ok(uuid.to_string()),
        Err(_) => Err(ApiError::validation(vec![FieldError::new("id", "must be a UUID")]).into()),
    }
}

/// `timeoutMs` of the query as an await timeout.
fn await_timeout(query: &QueryParams) -> Result<std::time::Duration> {
    let mut errors = Vec::new();
    let ms = query.int("timeoutMs", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    // A negative number is out of range like any other.
    let ms = ms.map(|ms| u64::try_from(ms).unwrap_or(0));
    Ok(crate::runs::outcome::await_timeout(ms, "timeoutMs")?)
}

async fn start_run(
    State(service): State<RunService>,
    query: QueryParams,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let mut errors = Vec::new();
    let wait = streams::boolean(&query, "await", &mut errors).unwrap_or(false);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    // Checked before anything starts: bad input changes nothing.
    let timeout = await_timeout(&query)?;
    let outcome = service.start(body).await?;
    let status = if outcome.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    if !wait {
        return Ok((status, Json(outcome)).into_response());
    }
    let result = service.await_end(&outcome.run_id, timeout).await?;
    let mut body =
        serde_json::to_value(&outcome).map_err(|error| ApiError::internal(error.to_string()))?;
    body["result"] =
        serde_json::to_value(&*result).map_err(|error| ApiError::internal(error.to_string()))?;
    Ok((status, Json(body)).into_response())
}

async fn what_if(
    State(service): State<RunService>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let id = run_id(&id)?;
    Ok(Json(service.what_if(&id, &body).await?).into_response())
}

async fn run_receipt(
    State(service): State<RunService>,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(service.receipt(&run_id(&id)?).await?).into_response())
}

async fn await_run(
    State(service): State<RunService>,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response> {
    let id = run_id(&id)?;
    let timeout = await_timeout(&query)?;
    let outcome = service.await_end(&id, timeout).await?;
    Ok(Json(&*outcome).into_response())
}

async fn validate_run(
    State(service): State<RunService>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    Ok(Json(service.validate(&body).await).into_response())
}

async fn list_runs(State(service): State<RunService>, query: QueryParams) -> Result<Response> {
    let mut errors = Vec::new();
    let run_query = RunQuery {
        status: query.string("status"),
        tags: query.all("tags"),
        created_after: query.string("createdAfter"),
        created_before: query.string("createdBefore"),
        limit: query.int("limit", &mut errors),
        offset: query.int("offset", &mut errors),
        sort_by: query.string("sortBy"),
        sort_order: query.string("sortOrder"),
        environment: query.string("environment"),
        search: query.string("search"),
        scenario_ref: query.string("scenarioRef"),
        include_archived: streams::boolean(&query, "includeArchived", &mut errors),
        include_sandbox: streams::boolean(&query, "includeSandbox", &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    let filter = run_query.into_filter()?;
    Ok(Json(service.list(&filter).await?).into_response())
}

async fn get_run(State(service): State<RunService>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(service.run_record(&run_id(&id)?).await?).into_response())
}

async fn get_run_state(
    State(service): State<RunService>,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(service.state(&run_id(&id)?).await?).into_response())
}

async fn list_run_events(
    State(service): State<RunService>,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response> {
    streams::run_events(&service, run_id(&id)?, &query).await
}

/// The `reason` of a cancel, suspend or resume. No body is no options; a body, when sent, is an
/// object (as `POST /runs/{id}/replay`).
fn reason(body: Option<JsonBody>) -> Result<Option<String>> {
    match body.map(|JsonBody(body)| body) {
        None => Ok(None),
        Some(Value::Object(map)) => match map.get("reason") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(reason)) => Ok(Some(reason.clone())),
            Some(_) => Err(ApiError::validation(vec![FieldError::new(
                "reason",
                "must be a string",
            )])
            .into()),
        },
        Some(_) => {
            Err(ApiError::validation(vec![FieldError::new("$", "must be an object")]).into())
        }
    }
}

async fn cancel_run(
    State(service): State<RunService>,
    Path(id): Path<String>,
    body: Option<JsonBody>,
) -> Result<Response> {
    let id = run_id(&id)?;
    let reason = reason(body)?;
    Ok(Json(service.cancel(&id, reason).await?).into_response())
}

async fn suspend_run(
    State(service): State<RunService>,
    Path(id): Path<String>,
    body: Option<JsonBody>,
) -> Result<Response> {
    let id = run_id(&id)?;
    let reason = reason(body)?;
    Ok(Json(service.suspend(&id, reason).await?).into_response())
}

async fn resume_run(
    State(service): State<RunService>,
    Path(id): Path<String>,
    body: Option<JsonBody>,
) -> Result<Response> {
    let id = run_id(&id)?;
    let reason = reason(body)?;
    Ok(Json(service.resume(&id, reason).await?).into_response())
}

async fn runtime_manifest(State(service): State<RunService>) -> Result<Response> {
    Ok(Json(service.runtime_manifest().await?).into_response())
}

async fn runtime_receipt_keys(State(service): State<RunService>) -> Result<Response> {
    Ok(Json(json!({ "jwks": service.runtime_receipt_keys().await? })).into_response())
}

async fn runtime_modes(State(service): State<RunService>) -> Result<Response> {
    Ok(Json(service.runtime_modes().await?).into_response())
}

async fn runtime_roots(State(service): State<RunService>) -> Result<Response> {
    Ok(Json(service.runtime_roots().await?).into_response())
}

async fn runtime_health(State(service): State<RunService>) -> Response {
    Json(service.runtime_health().await).into_response()
}

async fn healthz(State(service): State<RunService>) -> Response {
    let ok = service.ping_store().await.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ok": ok, "service": "macp-control-plane"})),
    )
        .into_response()
}

async fn readyz(State(service): State<RunService>) -> Response {
    let readiness = service.readiness().await;
    let status = if readiness.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

async fn metrics(State(service): State<RunService>) -> Result<Response> {
    use crate::telemetry::metrics;
    let text = metrics::render(service.live_subscribers())
        .map_err(|error| ApiError::internal(format!("metrics could not be rendered: {error}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

async fn not_found(uri: axum::http::Uri) -> HttpError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {}", uri.path())).into()
}
