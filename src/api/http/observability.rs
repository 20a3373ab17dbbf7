//! Per-run observability routes: trace summary, artifacts, metrics.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::extract::JsonBody;
use super::{Result, run_id};
use crate::runs::RunService;

pub fn router() -> Router<RunService> {
    Router::new()
        .route("/runs/{id}/traces", get(traces))
        .route(
            "/runs/{id}/artifacts",
            get(list_artifacts).post(create_artifact),
        )
        .route("/runs/{id}/metrics", get(metrics))
}

async fn traces(State(service): State<RunService>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(service.traces(&run_id(&id)?).await?).into_response())
}

async fn list_artifacts(
    State(service): State<RunService>,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(service.artifacts(&run_id(&id)?).await?).into_response())
}

async fn create_artifact(
    State(service): State<RunService>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let artifact = service.create_artifact(&run_id(&id)?, &body).await?;
    Ok((StatusCode::CREATED, Json(artifact)).into_response())
}

async fn metrics(State(service): State<RunService>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(service.metrics(&run_id(&id)?).await?).into_response())
}
