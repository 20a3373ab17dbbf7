//! Extractors that report bad input in our error shape instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde_json::Value;

use super::HttpError;
use crate::error::{ApiError, ErrorCode, FieldError};

/// Largest accepted JSON body.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body (any content type is read as JSON, as browsers' `fetch` wrappers vary).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|error| ApiError::new(ErrorCode::ValidationError, error.body_text()))?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            )
            .into());
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(ErrorCode::ValidationError, "request body is empty").into());
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                ApiError::validation(vec![FieldError::new("$", format!("invalid JSON: {error}"))])
                    .into()
            })
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequest<S> for JsonBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|error| ApiError::new(ErrorCode::ValidationError, error.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(|value| Some(JsonBody(value)))
            .map_err(|error| {
                ApiError::validation(vec![FieldError::new("$", format!("invalid JSON: {error}"))])
                    .into()
            })
    }
}

/// Query parameters as raw pairs, parsed explicitly so a bad number is a field error.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|error| {
            ApiError::new(
                ErrorCode::ValidationError,
                format!("invalid query string: {error}"),
            )
        })?;
        Ok(QueryParams(pairs))
    }
}

impl QueryParams {
    /// The last value of `key`.
    pub fn string(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    }

    /// Every value of `key` (repeated parameters and comma lists are both accepted by callers).
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
            .collect()
    }

    pub fn int(&self, key: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
        let text = self.string(key)?;
        match text.trim().parse::<i64>() {
            Ok(number) => Some(number),
            Err(_) => {
                errors.push(FieldError::new(
                    key,
                    format!("must be an integer, got '{text}'"),
                ));
                None
            }
        }
    }
}
