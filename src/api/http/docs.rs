//! `GET /openapi.json` and `GET /docs`: the generated OpenAPI document and its HTML rendering,
//! both built once, when the router is built.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::HttpError;
use crate::api::openapi;
use crate::error::ApiError;

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let (json, html) = match openapi::render() {
        Ok((json, html)) => (Bytes::from(json), Bytes::from(html)),
        Err(error) => {
            // The tests build the document; should it still fail, both routes say why rather
            // than the service refusing to start over its documentation.
            tracing::error!(%error, "OpenAPI document not generated");
            let message = error.to_string();
            let answer = move || {
                let error = ApiError::internal(message.clone());
                async move { HttpError(error).into_response() }
            };
            return Router::new()
                .route("/openapi.json", get(answer.clone()))
                .route("/docs", get(answer));
        }
    };
    Router::new()
        .route(
            "/openapi.json",
            get(move || page("application/json", json.clone())),
        )
        .route(
            "/docs",
            get(move || page("text/html; charset=utf-8", html.clone())),
        )
}

async fn page(content_type: &'static str, body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
