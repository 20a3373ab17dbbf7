//! Extractors that report bad input in our error shape instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use serde_json::Value;

use super::HttpError;
use crate::api::edge::DEFAULT_MAX_REQUEST_BODY_BYTES;
use crate::error::{ApiError, ErrorCode, FieldError};

/// The largest request body the JSON extractors read (`MAX_REQUEST_BODY_BYTES`), a request
/// extension the router sets; without it, the default.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body: `application/json` or `application/*+json` only. Any other content type (a
/// browser's `text/plain` or form post, which needs no CORS preflight) is 415 before anything is
/// read, and so is a body without a content type.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = read(request).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(ErrorCode::ValidationError, "request body is empty").into());
        }
        parse(&bytes).map(JsonBody)
    }
}

/// An optional JSON body: for actions whose body only adds options (`cancel`, `replay`), a
/// request with no body at all, and no content type, is accepted as no options.
impl<S: Send + Sync> axum::extract::OptionalFromRequest<S> for JsonBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, _: &S) -> Result<Option<Self>, Self::Rejection> {
        let bytes = read(request).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        parse(&bytes).map(|value| Some(JsonBody(value)))
    }
}

/// The body of a request whose content type is JSON, or an empty one without a content type;
/// 415 for anything else and 413 past the limit, both from the headers before reading when
/// they tell.
async fn read(request: Request) -> Result<Bytes, HttpError> {
    let json = match request.headers().get(header::CONTENT_TYPE) {
        Some(value) if is_json(value) => true,
        Some(value) => return Err(unsupported(value.to_str().unwrap_or("(not text)"))),
        None => false,
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if !json && declared.is_some_and(|length| length > 0) {
        return Err(unsupported("(none)"));
    }
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(DEFAULT_MAX_REQUEST_BODY_BYTES, |limit| limit.0);
    let too_large = || {
        HttpError::from(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {limit} bytes"),
        ))
    };
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut body = request.into_body().into_data_stream();
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::new(
                ErrorCode::ValidationError,
                format!("cannot read the request body: {error}"),
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    if !json && !bytes.is_empty() {
        return Err(unsupported("(none)"));
    }
    Ok(bytes.freeze())
}

/// `application/json` or `application/<anything>+json`, with any parameters.
fn is_json(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.strip_prefix("application/").is_some_and(|subtype| {
        subtype == "json" || (subtype.len() > "+json".len() && subtype.ends_with("+json"))
    })
}

fn unsupported(content_type: &str) -> HttpError {
    ApiError::new(
        ErrorCode::UnsupportedMediaType,
        format!("content type {content_type} is not accepted; send application/json"),
    )
    .into()
}

fn parse(bytes: &[u8]) -> Result<Value, HttpError> {
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::validation(vec![FieldError::new("$", format!("invalid JSON: {error}"))]).into()
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for accepted in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.macp.run+json",
            "application/problem+json ; charset=UTF-8",
        ] {
            assert!(is_json(&HeaderValue::from_static(accepted)), "{accepted}");
        }
        for refused in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/+json",
            "application/jsonp",
            "text/json",
            "",
        ] {
            assert!(!is_json(&HeaderValue::from_static(refused)), "{refused}");
        }
    }
}
