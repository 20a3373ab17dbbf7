//! Agent messaging routes: thin adapters over `RunService::{send_message, send_signal,
//! update_context, messages}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::extract::JsonBody;
use super::{Result, run_id};
use crate::runs::RunService;

pub fn router() -> Router<RunService> {
    Router::new()
        .route("/runs/{id}/messages", post(send_message).get(list_messages))
        .route("/runs/{id}/signal", post(send_signal))
        .route("/runs/{id}/context", post(update_context))
}

async fn send_message(
    State(service): State<RunService>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let receipt = service.send_message(&run_id(&id)?, &body).await?;
    Ok((StatusCode::CREATED, Json(receipt)).into_response())
}

async fn send_signal(
    State(service): State<RunService>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let receipt = service.send_signal(&run_id(&id)?, &body).await?;
    Ok((StatusCode::CREATED, Json(receipt)).into_response())
}

async fn update_context(
    State(service): State<RunService>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let receipt = service.update_context(&run_id(&id)?, &body).await?;
    Ok((StatusCode::CREATED, Json(receipt)).into_response())
}

async fn list_messages(
    State(service): State<RunService>,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(service.messages(&run_id(&id)?).await?).into_response())
}
