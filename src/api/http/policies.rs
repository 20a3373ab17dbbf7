//! The runtime's governance policies: list, get, register, unregister.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::Result;
use super::extract::{JsonBody, QueryParams};
use crate::runs::RunService;
use crate::runtime::policies::{self, Policy};

pub fn router() -> Router<RunService> {
    Router::new()
        .route("/runtime/policies", get(list).post(register))
        .route(
            "/runtime/policies/{policyId}",
            get(get_one).delete(unregister),
        )
}

async fn list(State(service): State<RunService>, query: QueryParams) -> Result<Response> {
    let mode = query.string("mode");
    let policies = policies::list(service.runtime(), mode.as_deref()).await?;
    Ok(Json(policies).into_response())
}

async fn get_one(
    State(service): State<RunService>,
    Path(policy_id): Path<String>,
) -> Result<Response> {
    Ok(Json(policies::get(service.runtime(), &policy_id).await?).into_response())
}

async fn register(State(service): State<RunService>, JsonBody(body): JsonBody) -> Result<Response> {
    let policy = Policy::from_json(&body)?;
    let change = policies::register(service.runtime(), policy).await?;
    Ok((StatusCode::CREATED, Json(change)).into_response())
}

async fn unregister(
    State(service): State<RunService>,
    Path(policy_id): Path<String>,
) -> Result<Response> {
    Ok(Json(policies::unregister(service.runtime(), &policy_id).await?).into_response())
}
