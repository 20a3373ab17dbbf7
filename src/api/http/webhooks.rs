//! Admin routes: webhooks and the runtime circuit breaker.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::json;

use super::Result;
use super::extract::{JsonBody, QueryParams};
use crate::domain::webhook::DeliveryQuery;
use crate::error::ApiError;
use crate::runs::RunService;
use crate::webhooks::Webhooks;

pub fn router() -> Router<RunService> {
    Router::new()
        .route("/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/webhooks/{webhookId}",
            patch(update_webhook).delete(delete_webhook),
        )
        .route("/webhooks/{webhookId}/deliveries", get(list_deliveries))
        .route("/admin/circuit-breaker/reset", post(reset_breaker))
        .route("/admin/circuit-breaker/history", get(breaker_history))
}

async fn create_webhook(
    State(service): State<RunService>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let input = Webhooks::parse_input(&body, &["url", "events", "secret"])?;
    let created = service.webhooks().create(input).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// A bare array, what the console reads.
async fn list_webhooks(State(service): State<RunService>) -> Result<Response> {
    Ok(Json(service.webhooks().list().await?).into_response())
}

async fn update_webhook(
    State(service): State<RunService>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let input = Webhooks::parse_input(&body, &["url", "events", "secret", "active"])?;
    Ok(Json(service.webhooks().update(&id, input).await?).into_response())
}

async fn delete_webhook(
    State(service): State<RunService>,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(service.webhooks().delete(&id).await?).into_response())
}

async fn list_deliveries(
    State(service): State<RunService>,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response> {
    let mut errors = Vec::new();
    let delivery_query = DeliveryQuery {
        status: query.string("status"),
        limit: query.int("limit", &mut errors),
        offset: query.int("offset", &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    Ok(Json(service.webhooks().deliveries(&id, delivery_query).await?).into_response())
}

/// Takes no options: the console sends no body (with a JSON content type); a body, when sent,
/// is JSON like any other route's, and ignored.
async fn reset_breaker(State(service): State<RunService>, _: Option<JsonBody>) -> Response {
    let state = service.runtime().circuit_breaker().reset();
    Json(json!({ "status": "ok", "state": state.as_str() })).into_response()
}

async fn breaker_history(
    State(service): State<RunService>,
    query: QueryParams,
) -> Result<Response> {
    let start = crate::runtime::breaker::history_start(
        query.string("window").as_deref(),
        query.string("since").as_deref(),
        crate::time::now(),
    )?;
    let (state, history) = service.runtime().circuit_breaker().history(start);
    Ok(Json(json!({ "state": state, "history": history })).into_response())
}
