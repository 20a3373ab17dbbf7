//! What a run cost and where its traces are: the trace summary, artifacts, and metrics. Metrics
//! are computed from the stored events on read, so they always equal the events' counts (no
//! counters to race on).

use serde::Serialize;
use serde_json::{Value, json};

use super::cluster::{self, Call, Route};
use super::json_fields::{Obj, Problems};
use super::service::RunService;
use super::writer::Change;
use crate::domain::artifact::{ARTIFACT_KINDS, Artifact, MAX_INLINE_BYTES, MAX_LABEL_LEN};
use crate::domain::query::{EventQuery, MAX_EVENT_LIMIT};
use crate::error::{ApiError, ErrorCode};
use crate::events::canonical::{EventDraft, Source, Subject, types};
use crate::time;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub span_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_span_id: Option<String>,
    pub linked_artifacts: Vec<String>,
    pub run_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario_ref: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub run_id: String,
    pub event_count: i64,
    pub message_count: i64,
    pub signal_count: i64,
    pub proposal_count: i64,
    pub tool_call_count: i64,
    pub decision_count: i64,
    pub stream_reconnect_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_event_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_state: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub estimated_cost_usd: f64,
}

impl RunService {
    pub async fn traces(&self, run_id: &str) -> Result<TraceSummary, ApiError> {
        let run = self.get(run_id).await?;
        let state = self.state(run_id).await?;
        let scenario_ref = run.source_ref.clone().or_else(|| {
            run.metadata
                .get("scenarioRef")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok(TraceSummary {
            trace_id: run.trace_id,
            span_count: state.trace.span_count,
            last_span_id: state.trace.last_span_id,
            linked_artifacts: state.trace.linked_artifacts,
            run_status: run.status.as_str().to_owned(),
            scenario_ref,
        })
    }

    pub async fn artifacts(&self, run_id: &str) -> Result<Vec<Artifact>, ApiError> {
        self.get(run_id).await?;
        Ok(self.store().artifacts(run_id).await?)
    }

    /// Attaches an artifact (`{kind, label, uri?, inline?}`, at least one of uri/inline) and
    /// records `artifact.created`, in one transaction.
    pub async fn create_artifact(&self, run_id: &str, body: &Value) -> Result<Artifact, ApiError> {
        let call = Call::Artifact { body: body.clone() };
        if let Route::Answered(answer) = self.route(run_id, call).await? {
            return cluster::answer(answer);
        }
        self.get(run_id).await?;
        let mut problems = Problems::default();
        let parsed = Obj::expect(body, "", &mut problems).and_then(|object| {
            object.warn_unknown(&["kind", "label", "uri", "inline"], &mut problems);
            let kind = object.required_str("kind", &mut problems);
            if let Some(kind) = &kind
                && !ARTIFACT_KINDS.contains(&kind.as_str())
            {
                problems.push(
                    "kind",
                    format!("must be one of {}", ARTIFACT_KINDS.join(", ")),
                );
            }
            let label = object.required_str("label", &mut problems);
            if label
                .as_ref()
                .is_some_and(|label| label.chars().count() > MAX_LABEL_LEN)
            {
                problems.push(
                    "label",
                    format!("must be at most {MAX_LABEL_LEN} characters"),
                );
            }
            let uri = object.optional_str("uri", &mut problems);
            let inline = object.get("inline").cloned();
            if inline
                .as_ref()
                .is_some_and(|inline| inline.to_string().len() > MAX_INLINE_BYTES)
            {
                problems.push(
                    "inline",
                    format!("must be at most {MAX_INLINE_BYTES} bytes of JSON"),
                );
            }
            if uri.is_none() && inline.is_none() {
                problems.push("uri", "give a uri or inline content");
            }
            Some((kind?, label?, uri, inline))
        });
        let Some((kind, label, uri, inline)) = parsed.filter(|_| problems.is_empty()) else {
            return Err(ApiError::validation(problems.errors));
        };
        let artifact = Artifact {
            id: uuid::Uuid::new_v4().to_string(),
            run_id: run_id.to_owned(),
            kind,
            label,
            uri,
            inline,
            created_at: time::now(),
        };
        let mut data = json!({
            "artifactId": artifact.id,
            "kind": artifact.kind,
            "label": artifact.label,
        });
        if let (Some(uri), Some(map)) = (&artifact.uri, data.as_object_mut()) {
            map.insert("uri".to_owned(), json!(uri));
        }
        let writers = self.writers();
        let mut guard = writers.lock(run_id).await?;
        let Some(writer) = guard.as_mut() else {
            return Err(ApiError::new(
                ErrorCode::RunNotFound,
                format!("run {run_id} not found"),
            ));
        };
        writers
            .emit(
                writer,
                vec![EventDraft::new(
                    types::ARTIFACT_CREATED,
                    artifact.created_at,
                    Some(Subject::new("artifact", artifact.id.clone())),
                    Source::control_plane("artifacts"),
                    data,
                )],
                Change {
                    artifact: Some(artifact.clone()),
                    ..Change::default()
                },
            )
            .await?;
        Ok(artifact)
    }

    /// Counts of the run's stored events by kind, token usage and timing. `durationMs` is the
    /// run's: from its start to its end, or to now while it has not ended (not first to last
    /// event, which is 0 for a run that has barely begun).
    pub async fn metrics(&self, run_id: &str) -> Result<Metrics, ApiError> {
        let run = self.get(run_id).await?;
        let counts = self.store().event_type_counts(run_id).await?;
        let count = |predicate: &dyn Fn(&str) -> bool| -> i64 {
            counts
                .iter()
                .filter(|(kind, _)| predicate(kind))
                .map(|(_, count)| count)
                .sum()
        };
        let reconnects = self
            .store()
            .query_events(&EventQuery {
                run_id: Some(run_id.to_owned()),
                types: vec![types::SESSION_STREAM_OPENED.to_owned()],
                limit: MAX_EVENT_LIMIT,
                ..EventQuery::default()
            })
            .await?
            .iter()
            .filter(|event| event.data["status"] == "resumed")
            .count() as i64;
        let state = self.state(run_id).await?;
        let (first, last) = self.store().event_time_range(run_id).await?;
        let totals = &state.llm.totals;
        Ok(Metrics {
            run_id: run_id.to_owned(),
            event_count: count(&|_| true),
            message_count: count(&|kind| kind.starts_with("message.")),
            signal_count: count(&|kind| kind == types::SIGNAL_EMITTED),
            proposal_count: count(&|kind| kind.starts_with("proposal.")),
            tool_call_count: count(&|kind| kind.starts_with("tool.")),
            decision_count: count(&|kind| kind == types::DECISION_FINALIZED),
            stream_reconnect_count: reconnects,
            first_event_at: first.as_ref().map(time::format),
            last_event_at: last.as_ref().map(time::format),
            duration_ms: run.duration_ms(time::now()),
            session_state: state.run.session_state,
            prompt_tokens: totals.prompt_tokens,
            completion_tokens: totals.completion_tokens,
            total_tokens: totals.total_tokens,
            estimated_cost_usd: totals.estimated_cost_usd,
        })
    }
}
