//! Admin routes: the audit log and stored API keys.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};

use super::Result;
use super::extract::{JsonBody, QueryParams};
use crate::auth::admin::Admin;
use crate::domain::audit::AuditQuery;
use crate::error::ApiError;

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/audit", get(list_audit))
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{keyId}", delete(revoke_key))
        .with_state(admin)
}

async fn list_audit(State(admin): State<Admin>, query: QueryParams) -> Result<Response> {
    let mut errors = Vec::new();
    let audit_query = AuditQuery {
        actor: query.string("actor"),
        action: query.string("action"),
        resource: query.string("resource"),
        resource_id: query.string("resourceId"),
        created_after: query.string("createdAfter"),
        created_before: query.string("createdBefore"),
        limit: query.int("limit", &mut errors),
        offset: query.int("offset", &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    Ok(Json(admin.audit(audit_query).await?).into_response())
}

async fn create_key(State(admin): State<Admin>, JsonBody(body): JsonBody) -> Result<Response> {
    let created = admin.create_key(Admin::parse_new_key(&body)?).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list_keys(State(admin): State<Admin>) -> Result<Response> {
    Ok(Json(serde_json::json!({ "data": admin.keys().await? })).into_response())
}

async fn revoke_key(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(admin.revoke_key(&id).await?).into_response())
}
