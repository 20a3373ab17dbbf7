//! Dashboard routes: the overview and the agent figures.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::Result;
use super::extract::QueryParams;
use crate::domain::dashboard::OverviewQuery;
use crate::runs::RunService;

pub fn router() -> Router<RunService> {
    Router::new()
        .route("/dashboard/overview", get(overview))
        .route("/dashboard/agents/metrics", get(agent_metrics))
}

async fn overview(State(service): State<RunService>, query: QueryParams) -> Result<Response> {
    let scope = OverviewQuery {
        window: query.string("window"),
        range: query.string("range"),
        from: query.string("from"),
        to: query.string("to"),
        scenario_ref: query.string("scenarioRef"),
        environment: query.string("environment"),
    }
    .into_scope(crate::time::now())?;
    Ok(Json(service.dashboard_overview(&scope).await?).into_response())
}

/// A bare array, what the console reads.
async fn agent_metrics(State(service): State<RunService>) -> Result<Response> {
    Ok(Json(service.agent_metrics().await?).into_response())
}
