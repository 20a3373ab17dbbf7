//! Run management routes: archive, unarchive, delete, clone, compare, export (a document, or
//! NDJSON streamed page by page), batches and projection rebuilds. Literal paths
//! (`/runs/compare`, `/runs/batch/{action}`) take precedence over `/runs/{id}/…` in the router.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::json;

use super::extract::{JsonBody, QueryParams};
use super::streams::boolean;
use super::{Result, run_id};
use crate::error::ApiError;
use crate::runs::RunService;
use crate::runs::manage::{ExportOptions, ExportQuery};

/// The media type of a streamed export: one JSON record a line.
const NDJSON: &str = "application/x-ndjson";

pub fn router() -> Router<RunService> {
    Router::new()
        .route("/runs/compare", post(compare))
        .route("/runs/batch/{action}", post(batch))
        .route("/runs/{id}/archive", post(archive))
        .route("/runs/{id}/unarchive", post(unarchive))
        .route("/runs/{id}/clone", post(clone_run))
        .route("/runs/{id}/export", get(export))
        .route("/runs/{id}/export/stream", get(export_stream))
        .route("/runs/{id}/projection/rebuild", post(rebuild_projection))
}

// The actions without options still read their body as JSON (none, or JSON that is ignored): a
// form or `text/plain` post, which a browser sends cross-origin without asking, is refused (415)
// before anything changes.

async fn archive(
    State(service): State<RunService>,
    Path(id): Path<String>,
    _: Option<JsonBody>,
) -> Result<Response> {
    Ok(Json(service.set_archived(&run_id(&id)?, true).await?).into_response())
}

async fn unarchive(
    State(service): State<RunService>,
    Path(id): Path<String>,
    _: Option<JsonBody>,
) -> Result<Response> {
    Ok(Json(service.set_archived(&run_id(&id)?, false).await?).into_response())
}

/// `DELETE /runs/{id}`: 204 with no body.
pub(super) async fn delete_run(
    State(service): State<RunService>,
    Path(id): Path<String>,
) -> Result<Response> {
    service.delete(&run_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn clone_run(
    State(service): State<RunService>,
    Path(id): Path<String>,
    body: Option<JsonBody>,
) -> Result<Response> {
    let id = run_id(&id)?;
    // No body is no overrides (the console sends `{}` or nothing).
    let body = body.map_or_else(|| json!({}), |JsonBody(body)| body);
    let started = service.clone_run(&id, &body).await?;
    Ok((StatusCode::CREATED, Json(started)).into_response())
}

async fn compare(State(service): State<RunService>, JsonBody(body): JsonBody) -> Result<Response> {
    Ok(Json(service.compare(&body).await?).into_response())
}

async fn batch(
    State(service): State<RunService>,
    Path(action): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    Ok(Json(service.batch(&action, &body).await?).into_response())
}

/// The export parameters of the query string, checked together.
fn export_query(query: &QueryParams) -> std::result::Result<ExportQuery, ApiError> {
    let mut errors = Vec::new();
    let export = ExportQuery {
        include_canonical: boolean(query, "includeCanonical", &mut errors),
        include_raw: boolean(query, "includeRaw", &mut errors),
        event_limit: query.int("eventLimit", &mut errors),
        format: query.string("format"),
    };
    if errors.is_empty() {
        Ok(export)
    } else {
        Err(ApiError::validation(errors))
    }
}

async fn export(
    State(service): State<RunService>,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response> {
    let id = run_id(&id)?;
    let options = export_query(&query)?.validate()?;
    Ok(Json(service.export(&id, options).await?).into_response())
}

/// NDJSON, written as the records are read: a failure after the first record ends the body
/// early (the status is already sent), which a reader sees as a truncated last line or none.
async fn export_stream(
    State(service): State<RunService>,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response> {
    let id = run_id(&id)?;
    let mut errors = Vec::new();
    let options = ExportOptions {
        include_canonical: boolean(&query, "includeCanonical", &mut errors).unwrap_or(true),
        include_raw: boolean(&query, "includeRaw", &mut errors).unwrap_or(false),
        event_limit: None,
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    let records = service.export_records(&id, options).await?;
    let lines = records.map(|record| {
        record
            .and_then(|record| {
                let mut line = serde_json::to_vec(&record).map_err(|error| {
                    ApiError::internal(format!("an export record could not be written: {error}"))
                })?;
                line.push(b'\n');
                Ok(Bytes::from(line))
            })
            .inspect_err(|error| tracing::error!(%error, "export stream ended early"))
    });
    Ok(([(CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response())
}

async fn rebuild_projection(
    State(service): State<RunService>,
    Path(id): Path<String>,
    _: Option<JsonBody>,
) -> Result<Response> {
    Ok(Json(service.rebuild_projection(&run_id(&id)?).await?).into_response())
}
