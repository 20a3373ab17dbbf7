//! REST routes of the scenario registry (the shapes of the public registry's API, which the MACP
//! UI console reads). Handlers only parse, call the registry or the launcher, and serialize.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::Result;
use super::extract::{JsonBody, QueryParams};
use crate::launch::{self, LaunchRequest, registry_call};
use crate::registry::Registry;
use crate::runs::RunService;

#[derive(Clone)]
struct Registries {
    registry: Registry,
    runs: RunService,
}

pub fn router(registry: Registry, runs: RunService) -> Router {
    Router::new()
        .route("/packs", get(list_packs))
        .route("/packs/{pack}/scenarios", get(list_scenarios))
        .route("/scenarios", get(list_all_scenarios))
        .route(
            "/packs/{pack}/scenarios/{scenario}/versions/{version}/launch-schema",
            get(launch_schema),
        )
        .route("/launch/compile", post(compile))
        .route("/launch", post(launch))
        // The UI console's name for the same call.
        .route("/examples/run", post(launch))
        .route("/agents", get(list_agents))
        .route("/agents/{ref}", get(get_agent))
        .with_state(Registries { registry, runs })
}

async fn list_packs(State(state): State<Registries>) -> Result<Response> {
    let packs = registry_call(&state.registry, |registry| Ok(registry.list_packs())).await?;
    Ok(Json(packs).into_response())
}

async fn list_scenarios(
    State(state): State<Registries>,
    Path(pack): Path<String>,
) -> Result<Response> {
    let scenarios = registry_call(&state.registry, move |registry| {
        registry.list_scenarios(&pack)
    })
    .await?;
    Ok(Json(scenarios).into_response())
}

async fn list_all_scenarios(State(state): State<Registries>) -> Result<Response> {
    let scenarios = registry_call(
        &state.registry,
        |registry| Ok(registry.list_all_scenarios()),
    )
    .await?;
    Ok(Json(scenarios).into_response())
}

async fn launch_schema(
    State(state): State<Registries>,
    Path((pack, scenario, version)): Path<(String, String, String)>,
    query: QueryParams,
) -> Result<Response> {
    let template = query.string("template");
    let schema = registry_call(&state.registry, move |registry| {
        registry.launch_schema(&pack, &scenario, &version, template.as_deref())
    })
    .await?;
    Ok(Json(schema).into_response())
}

async fn compile(State(state): State<Registries>, JsonBody(body): JsonBody) -> Result<Response> {
    let preview = launch::compile(&state.registry, body).await?;
    Ok((StatusCode::CREATED, Json(preview)).into_response())
}

async fn launch(State(state): State<Registries>, JsonBody(body): JsonBody) -> Result<Response> {
    let request = LaunchRequest::from_json(&body)?;
    let launched = launch::launch(&state.registry, &state.runs, request).await?;
    // As `POST /runs`: a repeated idempotency key returns the existing run with 200.
    let status = if launched.run.as_ref().is_some_and(|run| run.existing) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(launched)).into_response())
}

async fn list_agents(State(state): State<Registries>) -> Result<Response> {
    let agents = registry_call(&state.registry, |registry| Ok(registry.agents())).await?;
    Ok(Json(agents).into_response())
}

async fn get_agent(
    State(state): State<Registries>,
    Path(agent_ref): Path<String>,
) -> Result<Response> {
    let agent = registry_call(&state.registry, move |registry| registry.agent(&agent_ref)).await?;
    Ok(Json(agent).into_response())
}
