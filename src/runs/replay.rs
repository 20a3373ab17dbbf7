//! Replay of stored runs: the event stream as it happened (instantly, or with the original
//! spacing scaled by `speed`), and the projection as it was after any event. Replay reads the
//! store only; it never touches the runtime.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde::Serialize;

use super::service::RunService;
use super::writer::fold_forward;
use crate::domain::query::MAX_UINT32;
use crate::error::{ApiError, FieldError};
use crate::events::canonical::CanonicalEvent;
use crate::events::hub::Shared;
use crate::projection::reducer;
use crate::projection::state::RunState;

/// Longest pause between two replayed events, whatever the original gap.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
const PAGE: u64 = 500;
pub const MIN_SPEED: f64 = 0.1;
pub const MAX_SPEED: f64 = 1000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayMode {
    /// Every event at once.
    Instant,
    /// The original spacing divided by `speed` (each pause capped at [`MAX_DELAY`]).
    Timed,
    /// Every event at once, each followed by the projection after it.
    Step,
}

impl ReplayMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayMode::Instant => "instant",
            ReplayMode::Timed => "timed",
            ReplayMode::Step => "step",
        }
    }
}

/// Replay parameters as a transport received them.
#[derive(Debug, Clone, Default)]
pub struct ReplayQuery {
    pub mode: Option<String>,
    pub speed: Option<f64>,
    pub from_seq: Option<i64>,
    pub to_seq: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRequest {
    pub mode: ReplayMode,
    pub speed: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_seq: Option<i64>,
}

impl ReplayQuery {
    /// Validates every parameter, reporting all problems at once.
    pub fn validate(self) -> Result<ReplayRequest, ApiError> {
        let mut errors = Vec::new();
        let mode = match self.mode.as_deref() {
            None | Some("") | Some("timed") => ReplayMode::Timed,
            Some("instant") => ReplayMode::Instant,
            Some("step") => ReplayMode::Step,
            Some(other) => {
                errors.push(FieldError::new(
                    "mode",
                    format!("must be instant, timed or step; got '{other}'"),
                ));
                ReplayMode::Timed
            }
        };
        let speed = self.speed.unwrap_or(1.0);
        if !(MIN_SPEED..=MAX_SPEED).contains(&speed) {
            errors.push(FieldError::new(
                "speed",
                format!("must be between {MIN_SPEED} and {MAX_SPEED}"),
            ));
        }
        for (field, value) in [("fromSeq", self.from_seq), ("toSeq", self.to_seq)] {
            if value.is_some_and(|seq| !(1..=MAX_UINT32).contains(&seq)) {
                errors.push(FieldError::new(
                    field,
                    format!("must be between 1 and {MAX_UINT32}"),
                ));
            }
        }
        if let (Some(from), Some(to)) = (self.from_seq, self.to_seq)
            && from > to
        {
            errors.push(FieldError::new("toSeq", "must not be below fromSeq"));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(ReplayRequest {
            mode,
            speed,
            from_seq: self.from_seq,
            to_seq: self.to_seq,
        })
    }
}

/// What `POST /runs/{id}/replay` answers: where to read the replay.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayDescriptor {
    pub run_id: String,
    #[serde(flatten)]
    pub request: ReplayRequest,
    pub stream_url: String,
    pub state_url: String,
}

#[derive(Debug, Clone)]
pub enum ReplayItem {
    Event(Arc<Shared<CanonicalEvent>>),
    /// The projection after the preceding event (step mode).
    Snapshot(Arc<Shared<RunState>>),
}

impl RunService {
    pub async fn replay_descriptor(
        &self,
        run_id: &str,
        request: ReplayRequest,
    ) -> Result<ReplayDescriptor, ApiError> {
        let run = self.get(run_id).await?;
        // Every parameter is carried into the stream URL.
        let mut query = format!("mode={}&speed={}", request.mode.as_str(), request.speed);
        if let Some(from) = request.from_seq {
            query.push_str(&format!("&fromSeq={from}"));
        }
        if let Some(to) = request.to_seq {
            query.push_str(&format!("&toSeq={to}"));
        }
        Ok(ReplayDescriptor {
            stream_url: format!("/runs/{}/replay/stream?{query}", run.id),
            state_url: format!("/runs/{}/replay/state", run.id),
            run_id: run.id,
            request,
        })
    }

    /// The projection after event `seq` (all events when `None`): the nearest checkpoint, then a
    /// short fold.
    pub async fn state_at(&self, run_id: &str, seq: Option<i64>) -> Result<RunState, ApiError> {
        let run = self.get(run_id).await?;
        let target = seq.unwrap_or(run.last_event_seq);
        if !(0..=MAX_UINT32).contains(&target) {
            return Err(ApiError::validation(vec![FieldError::new(
                "seq",
                format!("must be between 0 and {MAX_UINT32}"),
            )]));
        }
        let checkpoint = self
            .store()
            .checkpoint_at_or_before(run_id, target)
            .await?
            .unwrap_or_else(|| RunState::empty(run_id));
        Ok(fold_forward(self.store(), run_id, checkpoint, Some(target)).await?)
    }

    /// The stored events of a run as they happened.
    pub async fn replay(
        &self,
        run_id: &str,
        request: ReplayRequest,
    ) -> Result<impl Stream<Item = Result<ReplayItem, ApiError>> + Send + use<>, ApiError> {
        let first = request.from_seq.unwrap_or(1);
        let mut state = self.state_at(run_id, Some(first - 1)).await?;
        let service = self.clone();
        let run_id = run_id.to_owned();
        Ok(async_stream::try_stream! {
            let mut cursor = first - 1;
            let mut previous: Option<crate::time::Timestamp> = None;
            loop {
                let events = service
                    .store()
                    .events_between(&run_id, cursor, request.to_seq, PAGE)
                    .await?;
                let done = (events.len() as u64) < PAGE;
                for event in events {
                    cursor = event.seq;
                    if request.mode == ReplayMode::Timed
                        && let Some(previous) = previous
                    {
                        let gap = (event.ts - previous).to_std().unwrap_or_default();
                        let pause = gap.div_f64(request.speed).min(MAX_DELAY);
                        tokio::time::sleep(pause).await;
                    }
                    previous = Some(event.ts);
                    if request.mode == ReplayMode::Step {
                        reducer::apply(&mut state, &event);
                        yield ReplayItem::Event(Shared::new(event));
                        yield ReplayItem::Snapshot(Shared::new(state.clone()));
                    } else {
                        yield ReplayItem::Event(Shared::new(event));
                    }
                }
                if done {
                    break;
                }
            }
        })
    }
}
