//! SSE and event routes: the live stream, replay, state-at-seq and the event queries. The
//! streams are the domain streams of `runs::watch` and `replay`, rendered as SSE frames:
//! `snapshot` (the projection), `canonical_event` (`id:` = seq) and `heartbeat`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::extract::{JsonBody, QueryParams};
use super::{HttpError, Result, run_id};
use crate::domain::query::{
    DEFAULT_CROSS_RUN_LIMIT, DEFAULT_EVENT_LIMIT, EventsQuery, MAX_UINT32, MIN_HEARTBEAT_MS,
};
use crate::error::{ApiError, FieldError};
use crate::events::canonical::CanonicalEvent;
use crate::events::hub::Shared;
use crate::events::type_filter::TypeFilter;
use crate::runs::RunService;
use crate::runs::replay::{ReplayItem, ReplayQuery};
use crate::runs::watch::{WatchItem, WatchOptions, wait_for_run};

pub fn router() -> Router<RunService> {
    Router::new()
        .route("/runs/{id}/stream", get(stream_run))
        .route("/runs/{id}/replay", post(create_replay))
        .route("/runs/{id}/replay/stream", get(replay_stream))
        .route("/runs/{id}/replay/state", get(replay_state))
        .route("/events", get(list_events))
}

/// `true` or `false`; anything else is a field error.
pub(super) fn boolean(
    query: &QueryParams,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> Option<bool> {
    match query.string(key)?.as_str() {
        "true" => Some(true),
        "false" => Some(false),
        other => {
            errors.push(FieldError::new(
                key,
                format!("must be true or false, got '{other}'"),
            ));
            None
        }
    }
}

/// Frames coalesced into one body chunk at most.
const MAX_COALESCED: usize = 256;

/// One SSE frame. `data` is compact JSON, which never holds a raw line break, so it is one
/// `data:` line.
fn sse_event(name: &str, id: Option<i64>, data: &str) -> Bytes {
    let mut frame = String::with_capacity(data.len() + 48);
    frame.push_str("event: ");
    frame.push_str(name);
    if let Some(id) = id {
        frame.push_str("\nid: ");
        frame.push_str(&id.to_string());
    }
    frame.push_str("\ndata: ");
    frame.push_str(data);
    frame.push_str("\n\n");
    Bytes::from(frame)
}

fn event_frame(event: &Arc<Shared<CanonicalEvent>>) -> Bytes {
    event.frame(|json| sse_event("canonical_event", Some(event.seq), json))
}

fn sse_frame(item: WatchItem) -> Bytes {
    match item {
        WatchItem::Snapshot(state) => state.frame(|json| sse_event("snapshot", None, json)),
        WatchItem::Event(event) => event_frame(&event),
        WatchItem::Events(batch) => batch.frames(event_frame),
        WatchItem::Heartbeat(ts) => sse_event(
            "heartbeat",
            None,
            &format!("{{\"ts\":\"{}\"}}", crate::time::format(&ts)),
        ),
    }
}

fn error_frame(error: &ApiError) -> Bytes {
    sse_event("error", None, &error.body().to_string())
}

/// A domain stream as an SSE response body: each item rendered as a frame by `render`, the
/// frames that are ready together sent as one chunk (a committed batch reaches each subscriber
/// as one HTTP/2 DATA frame instead of one per event; a lone frame, the usual case, is passed
/// on as it is, shared with every other subscriber). A failure mid-stream becomes one `error`
/// frame, then the end. One struct around the stream, so that polling the body of one of
/// thousands of subscribers touches little memory.
struct SseBody<S, T> {
    items: S,
    render: fn(T) -> Bytes,
    done: bool,
    /// Counts the stream in `/metrics` while the client is there.
    _open: crate::telemetry::metrics::StreamGuard,
}

impl<S, T> SseBody<S, T> {
    fn frame(&mut self, item: std::result::Result<T, ApiError>) -> Bytes {
        match item {
            Ok(item) => (self.render)(item),
            Err(error) => {
                self.done = true;
                error_frame(&error)
            }
        }
    }
}

impl<S, T> http_body::Body for SseBody<S, T>
where
    S: Stream<Item = std::result::Result<T, ApiError>> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let first = match ready!(this.items.poll_next_unpin(cx)) {
            Some(item) => this.frame(item),
            None => {
                this.done = true;
                return Poll::Ready(None);
            }
        };
        let mut chunk: Option<BytesMut> = None;
        for _ in 1..MAX_COALESCED {
            if this.done {
                break;
            }
            match this.items.poll_next_unpin(cx) {
                Poll::Ready(Some(item)) => {
                    let frame = this.frame(item);
                    chunk
                        .get_or_insert_with(|| BytesMut::from(&first[..]))
                        .extend_from_slice(&frame);
                }
                Poll::Ready(None) => this.done = true,
                Poll::Pending => break,
            }
        }
        let data = chunk.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Renders a domain stream as an SSE response.
fn sse<S, T>(stream: S, render: fn(T) -> Bytes) -> Response
where
    S: Stream<Item = std::result::Result<T, ApiError>> + Unpin + Send + 'static,
    T: Send + 'static,
{
    let body = SseBody {
        items: stream,
        render,
        done: false,
        _open: crate::telemetry::metrics::open_stream("sse"),
    };
    (
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        Body::new(body),
    )
        .into_response()
}

async fn stream_run(
    State(service): State<RunService>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: QueryParams,
) -> Result<Response> {
    let id = run_id(&id)?;
    let mut errors = Vec::new();
    // The query wins over the header an EventSource sends when it reconnects.
    let after_seq = match query.int("afterSeq", &mut errors) {
        Some(seq) => Some(seq),
        None => match headers.get("last-event-id").map(|value| value.to_str()) {
            None => None,
            Some(Ok(text)) if text.trim().parse::<i64>().is_ok() => text.trim().parse().ok(),
            Some(_) => {
                errors.push(FieldError::new("Last-Event-ID", "must be an event seq"));
                None
            }
        },
    };
    if after_seq.is_some_and(|seq| !(0..=MAX_UINT32).contains(&seq)) {
        errors.push(FieldError::new(
            "afterSeq",
            format!("must be between 0 and {MAX_UINT32}"),
        ));
    }
    let include_snapshot = boolean(&query, "includeSnapshot", &mut errors).unwrap_or(true);
    let end_at_terminal = boolean(&query, "endAtTerminal", &mut errors).unwrap_or(false);
    let types = TypeFilter::parse(&query.all("types"), "types").unwrap_or_else(|error| {
        errors.push(error);
        None
    });
    let heartbeat = match query.int("heartbeatMs", &mut errors) {
        Some(ms) if (MIN_HEARTBEAT_MS..=MAX_UINT32).contains(&ms) => {
            Duration::from_millis(ms as u64)
        }
        Some(_) => {
            errors.push(FieldError::new(
                "heartbeatMs",
                format!("must be between {MIN_HEARTBEAT_MS} and {MAX_UINT32}"),
            ));
            service.options().heartbeat
        }
        None => service.options().heartbeat,
    };
    let wait_for_run = wait_for_run(query.int("waitForRunMs", &mut errors), "waitForRunMs")
        .unwrap_or_else(|error| {
            errors.push(error);
            Duration::ZERO
        });
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    let stream = service
        .watch(
            &id,
            WatchOptions {
                after_seq: after_seq.unwrap_or(0),
                include_snapshot,
                heartbeat,
                end_at_terminal,
                types,
                wait_for_run,
            },
        )
        .await?;
    Ok(sse(stream, sse_frame))
}

fn replay_query(query: &QueryParams, errors: &mut Vec<FieldError>) -> ReplayQuery {
    let speed = query
        .string("speed")
        .and_then(|text| match text.trim().parse::<f64>() {
            Ok(speed) if speed.is_finite() => Some(speed),
            _ => {
                errors.push(FieldError::new(
                    "speed",
                    format!("must be a number, got '{text}'"),
                ));
                None
            }
        });
    ReplayQuery {
        mode: query.string("mode"),
        speed,
        from_seq: query.int("fromSeq", errors),
        to_seq: query.int("toSeq", errors),
    }
}

fn replay_body(body: Option<serde_json::Value>) -> std::result::Result<ReplayQuery, ApiError> {
    let Some(body) = body else {
        return Ok(ReplayQuery::default());
    };
    let mut errors = Vec::new();
    let object = match body.as_object() {
        Some(object) => object,
        None => {
            return Err(ApiError::validation(vec![FieldError::new(
                "$",
                "must be an object",
            )]));
        }
    };
    let string = |key: &str, errors: &mut Vec<FieldError>| match object.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        Some(_) => {
            errors.push(FieldError::new(key, "must be a string"));
            None
        }
    };
    let number = |key: &str, errors: &mut Vec<FieldError>| match object.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => match value.as_f64() {
            Some(number) => Some(number),
            None => {
                errors.push(FieldError::new(key, "must be a number"));
                None
            }
        },
    };
    let integer = |key: &str, errors: &mut Vec<FieldError>| match object.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(number) => Some(number),
            None => {
                errors.push(FieldError::new(key, "must be an integer"));
                None
            }
        },
    };
    let query = ReplayQuery {
        mode: string("mode", &mut errors),
        speed: number("speed", &mut errors),
        from_seq: integer("fromSeq", &mut errors),
        to_seq: integer("toSeq", &mut errors),
    };
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::validation(errors))
    }
}

async fn create_replay(
    State(service): State<RunService>,
    Path(id): Path<String>,
    body: Option<JsonBody>,
) -> Result<Response> {
    let id = run_id(&id)?;
    let request = replay_body(body.map(|JsonBody(body)| body))?.validate()?;
    let descriptor = service.replay_descriptor(&id, request).await?;
    Ok((axum::http::StatusCode::CREATED, Json(descriptor)).into_response())
}

fn replay_frame(item: ReplayItem) -> Bytes {
    match item {
        ReplayItem::Event(event) => sse_frame(WatchItem::Event(event)),
        ReplayItem::Snapshot(state) => sse_frame(WatchItem::Snapshot(state)),
    }
}

async fn replay_stream(
    State(service): State<RunService>,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response> {
    let id = run_id(&id)?;
    let mut errors = Vec::new();
    let replay = replay_query(&query, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    let stream = service.replay(&id, replay.validate()?).await?;
    Ok(sse(Box::pin(stream), replay_frame))
}

async fn replay_state(
    State(service): State<RunService>,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response> {
    let id = run_id(&id)?;
    let mut errors = Vec::new();
    let seq = query.int("seq", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors).into());
    }
    Ok(Json(service.state_at(&id, seq).await?).into_response())
}

/// Event filters from the query string (shared by `/events` and `/runs/{id}/events`).
pub(super) fn events_query(
    query: &QueryParams,
    run_id: Option<String>,
) -> std::result::Result<EventsQuery, HttpError> {
    let mut errors = Vec::new();
    let mut types = query.all("type");
    types.extend(query.all("types"));
    let events = EventsQuery {
        run_id: run_id.or_else(|| query.string("runId")),
        types,
        after_seq: query.int("afterSeq", &mut errors),
        after_ts: query.string("afterTs"),
        before_ts: query.string("beforeTs"),
        limit: query.int("limit", &mut errors),
    };
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(ApiError::validation(errors).into())
    }
}

/// `GET /runs/{id}/events`: a bare array (what the UI console reads), or the page object
/// `{data, total, limit, nextCursor}` when filters are given.
pub(super) async fn run_events(
    service: &RunService,
    id: String,
    query: &QueryParams,
) -> Result<Response> {
    let events = events_query(query, Some(id))?;
    let filtered = events.has_filters();
    let page = service
        .query_events(events.validate(DEFAULT_EVENT_LIMIT)?)
        .await?;
    if filtered {
        Ok(Json(page).into_response())
    } else {
        Ok(Json(page.data).into_response())
    }
}

async fn list_events(State(service): State<RunService>, query: QueryParams) -> Result<Response> {
    let events = events_query(&query, None)?;
    let page = service
        .query_events(events.validate(DEFAULT_CROSS_RUN_LIMIT)?)
        .await?;
    Ok(Json(page).into_response())
}
