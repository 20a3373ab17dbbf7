//! Run management, what the MACP UI console's run actions call: archive and unarchive, delete
//! (terminal runs only, everything stored with it), clone, compare, export (one document, or a
//! stream of records read page by page), batches of these, and rebuilding a run's projection.

use futures::Stream;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::json_fields::{Obj, Problems, index};
use super::observability::Metrics;
use super::service::{RunService, StartOutcome, not_found};
use super::writer;
use crate::auth::audit;
use crate::domain::artifact::Artifact;
use crate::domain::audit::AuditEntry;
use crate::domain::run::{BoundSession, Run};
use crate::domain::status::RunStatus;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::events::canonical::CanonicalEvent;
use crate::projection::state::RunState;
use crate::store::{self, Deleted, RawRecord};
use crate::time::{self, Timestamp};

/// Events of each kind an export carries by default, and at most.
pub const DEFAULT_EXPORT_EVENTS: u64 = 10_000;
pub const MAX_EXPORT_EVENTS: i64 = 50_000;
pub const EXPORT_FORMATS: &[&str] = &["json", "jsonl"];
pub const BATCH_ACTIONS: &[&str] = &["cancel", "archive", "delete", "export"];
/// Runs one batch may name.
pub const MAX_BATCH_RUNS: usize = 100;
/// Events a batch export carries in all, shared evenly by its runs (its answer is one document
/// in memory): [`DEFAULT_EXPORT_EVENTS`] each for up to 5 runs, 500 each for 100.
pub const MAX_BATCH_EXPORT_EVENTS: u64 = 50_000;
/// Events read per query by a streamed export.
const EXPORT_PAGE: u64 = 500;

/// Unvalidated export parameters, as either transport received them.
#[derive(Debug, Clone, Default)]
pub struct ExportQuery {
    pub include_canonical: Option<bool>,
    pub include_raw: Option<bool>,
    pub event_limit: Option<i64>,
    pub format: Option<String>,
}

/// What an export carries.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    pub include_canonical: bool,
    pub include_raw: bool,
    /// Most events of each kind (a streamed export has none).
    pub event_limit: Option<u64>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            include_canonical: true,
            include_raw: false,
            event_limit: Some(DEFAULT_EXPORT_EVENTS),
        }
    }
}

impl ExportQuery {
    /// `format` is checked but changes nothing: `jsonl` answers the same document, from which
    /// the MACP UI console writes the lines itself (`StreamRunExport` is the line form).
    pub fn validate(self) -> Result<ExportOptions, ApiError> {
        let mut errors = Vec::new();
        let event_limit = match self.event_limit {
            None => DEFAULT_EXPORT_EVENTS,
            Some(limit) if (1..=MAX_EXPORT_EVENTS).contains(&limit) => limit as u64,
            Some(_) => {
                errors.push(FieldError::new(
                    "eventLimit",
                    format!("must be between 1 and {MAX_EXPORT_EVENTS}"),
                ));
                DEFAULT_EXPORT_EVENTS
            }
        };
        if let Some(format) = self.format.as_deref().filter(|format| !format.is_empty())
            && !EXPORT_FORMATS.contains(&format)
        {
            errors.push(FieldError::new(
                "format",
                format!("must be one of {}", EXPORT_FORMATS.join(", ")),
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(ExportOptions {
            include_canonical: self.include_canonical.unwrap_or(true),
            include_raw: self.include_raw.unwrap_or(false),
            event_limit: Some(event_limit),
        })
    }
}

/// Everything about a run but its events: an export's first part, a streamed export's first
/// record.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportHeader {
    pub run: Run,
    /// The bound runtime session; absent before one is bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Value>,
    pub projection: RunState,
    pub metrics: Metrics,
    pub artifacts: Vec<Artifact>,
    #[serde(with = "time::rfc3339")]
    pub exported_at: Timestamp,
}

/// A run exported as one document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunExport {
    #[serde(flatten)]
    pub header: ExportHeader,
    pub canonical_events: Vec<CanonicalEvent>,
    /// Each `{seq, ts, kind, ordinal?, payload}`.
    pub raw_events: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSide {
    pub run_id: String,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ParticipantsDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub common: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SignalsDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// Two runs side by side; deltas and differences are right minus left.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunComparison {
    pub left: RunSide,
    pub right: RunSide,
    pub status_match: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_delta_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence_delta: Option<f64>,
    pub participants_diff: ParticipantsDiff,
    pub signals_diff: SignalsDiff,
}

/// One run's outcome in a batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    pub run_id: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The run's export, for `export`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Box<RunExport>>,
    /// For `export`: the most events it carries for this run (the batch's share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_limit: Option<u64>,
    /// For `export`: the run has more events than `eventLimit`, which were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

/// The events a batch export of `runs` runs carries for each.
fn batch_export_limit(runs: usize) -> u64 {
    (MAX_BATCH_EXPORT_EVENTS / runs.max(1) as u64).min(DEFAULT_EXPORT_EVENTS)
}

/// Keeps the first `limit` items; whether any were dropped.
fn cut<T>(items: &mut Vec<T>, limit: u64) -> bool {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let cut = items.len() > limit;
    items.truncate(limit);
    cut
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchOutcome {
    pub results: Vec<BatchResult>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rebuilt {
    pub rebuilt: bool,
    /// The seq of the last event folded in.
    pub latest_seq: i64,
    /// The stored projection (its row with the later events folded in), or one of its
    /// checkpoints, was not the fold of the events up to it.
    pub differed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchAction {
    Cancel,
    Archive,
    Delete,
    Export,
}

fn session_json(session: BoundSession) -> Value {
    let mut value = json!({
        "runId": session.run_id,
        "sessionId": session.session_id,
        "modeName": session.mode_name,
        "modeVersion": session.mode_version,
        "configurationVersion": session.configuration_version,
        "initiatorParticipantId": session.initiator,
        "sessionState": session.session_state,
        "lastOrdinal": session.last_ordinal,
        "participants": session.participants,
    });
    if let (Some(policy), Some(map)) = (session.policy_version, value.as_object_mut()) {
        map.insert("policyVersion".to_owned(), json!(policy));
    }
    value
}

fn raw_json(raw: RawRecord) -> Value {
    let mut value = json!({
        "seq": raw.seq,
        "ts": time::format(&raw.ts),
        "kind": raw.kind,
        "payload": raw.payload,
    });
    if let (Some(ordinal), Some(map)) = (raw.ordinal, value.as_object_mut()) {
        map.insert("ordinal".to_owned(), json!(ordinal));
    }
    value
}

/// A streamed export's record: `record` says which kind, the rest is the thing itself (an
/// event keeps its own `type`).
fn record(kind: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert("record".to_owned(), json!(kind));
    if let Value::Object(fields) = value {
        map.extend(fields);
    }
    Value::Object(map)
}

fn internal(error: serde_json::Error) -> ApiError {
    ApiError::internal(format!("an export could not be rendered: {error}"))
}

/// A run id from a request body: a UUID, else a field problem.
fn uuid_field(value: Option<&Value>, field: &str, problems: &mut Problems) -> Option<String> {
    match value.and_then(Value::as_str) {
        Some(text) => match uuid::Uuid::parse_str(text) {
            Ok(uuid) => Some(uuid.to_string()),
            Err(_) => {
                problems.push(field, "must be a UUID");
                None
            }
        },
        None if value.is_some_and(|value| !value.is_null()) => {
            problems.push(field, "must be a string");
            None
        }
        None => {
            problems.push(field, "is required");
            None
        }
    }
}

/// Names in `right` and not in `left`, in `left` and not in `right`, and in both, each in its
/// first order, without repeats.
fn differences(left: &[String], right: &[String]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let unique = |names: &[String]| {
        let mut seen = std::collections::HashSet::new();
        names
            .iter()
            .filter(|name| seen.insert(name.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (left, right) = (unique(left), unique(right));
    let added = right.iter().filter(|name| !left.contains(name)).cloned();
    let removed = left.iter().filter(|name| !right.contains(name)).cloned();
    let common = left.iter().filter(|name| right.contains(name)).cloned();
    (added.collect(), removed.collect(), common.collect())
}

impl RunService {
    /// Archives the run (`archive`) or brings it back; answers the run.
    pub async fn set_archived(&self, run_id: &str, archive: bool) -> Result<Run, ApiError> {
        let at = archive.then(time::now);
        let found = self
            .store()
            .set_archived(run_id, at, audit::take(run_id))
            .await
            .inspect_err(|_| audit::put_back())?;
        if !found {
            audit::put_back();
            return Err(not_found(run_id));
        }
        self.run_record(run_id).await
    }

    /// Deletes a run that has ended, with everything stored for it, in one transaction.
    pub async fn delete(&self, run_id: &str) -> Result<(), ApiError> {
        self.delete_recorded(run_id, audit::take(run_id))
            .await
            .inspect_err(|_| audit::put_back())
    }

    /// [`Self::delete`] with the audit row given (data retention's, which runs outside any
    /// call).
    pub(super) async fn delete_recorded(
        &self,
        run_id: &str,
        audit: Option<AuditEntry>,
    ) -> Result<(), ApiError> {
        // Under the run's writer: nothing of this process appends to it meanwhile.
        let mut guard = self.writers().lock(run_id).await?;
        let deleted = self.store().delete_run(run_id, audit).await?;
        if deleted == Deleted::Gone {
            // A call waiting for this writer reloads it, finds no run, and answers so (its
            // cached head would have appended to a run that is gone).
            *guard = None;
        }
        drop(guard);
        match deleted {
            Deleted::Gone => {
                self.writers().forget(run_id);
                Ok(())
            }
            Deleted::NotFound => Err(not_found(run_id)),
            Deleted::NotTerminal(status) => Err(ApiError::new(
                ErrorCode::RunNotTerminal,
                format!(
                    "run {run_id} is {}; only completed, failed or cancelled runs can be deleted",
                    status.as_str()
                ),
            )),
        }
    }

    /// Starts a new run from the run's stored ExecutionRequest: `tags` (when given) replace its
    /// tags, `context` keys are merged over its session context. The clone has no idempotency
    /// key and no session id of its own: the control plane opens a new session for it.
    pub async fn clone_run(&self, run_id: &str, body: &Value) -> Result<StartOutcome, ApiError> {
        let mut problems = Problems::default();
        let overrides = Obj::expect(body, "", &mut problems).map(|object| {
            object.warn_unknown(&["tags", "context"], &mut problems);
            let tags = object
                .get("tags")
                .is_some()
                .then(|| object.optional_strings("tags", &mut problems));
            let context = object.optional_map("context", &mut problems);
            (tags, context)
        });
        let Some((tags, context)) = overrides.filter(|_| problems.is_empty()) else {
            return Err(ApiError::validation(problems.errors));
        };
        let run = self.get(run_id).await?;
        let Some(mut request) = run.metadata.get("executionRequest").cloned() else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "run {run_id} has no stored ExecutionRequest to clone (its session was \
                     started by agents, not through this service)"
                ),
            ));
        };
        let Some(map) = request.as_object_mut() else {
            return Err(ApiError::internal(format!(
                "run {run_id} stores an ExecutionRequest that is not an object"
            )));
        };
        let execution = map
            .entry("execution")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(execution) = execution {
            execution.remove("idempotencyKey");
            execution.remove("idempotency_key");
            if let Some(tags) = tags {
                execution.insert("tags".to_owned(), json!(tags));
            }
        }
        if let Some(session) = map.get_mut("session").and_then(Value::as_object_mut) {
            session.remove("sessionId");
            session.remove("session_id");
            if let Some(overrides) = context {
                let merged = session
                    .entry("context")
                    .or_insert_with(|| json!({}))
                    .as_object_mut();
                if let Some(merged) = merged {
                    merged.extend(overrides);
                } else {
                    session.insert("context".to_owned(), Value::Object(overrides));
                }
            }
        }
        self.start(request).await
    }

    /// Compares two runs (`{leftRunId, rightRunId}`).
    pub async fn compare(&self, body: &Value) -> Result<RunComparison, ApiError> {
        let mut problems = Problems::default();
        let ids = Obj::expect(body, "", &mut problems).and_then(|object| {
            let left = uuid_field(object.get("leftRunId"), "leftRunId", &mut problems);
            let right = uuid_field(object.get("rightRunId"), "rightRunId", &mut problems);
            Some((left?, right?))
        });
        let Some((left_id, right_id)) = ids.filter(|_| problems.is_empty()) else {
            return Err(ApiError::validation(problems.errors));
        };
        let now = time::now();
        let side = async |run_id: &str| -> Result<(RunSide, RunState), ApiError> {
            let run = self.get(run_id).await?;
            let state = self.state(run_id).await?;
            let mode_name = state.run.mode_name.clone().or_else(|| {
                run.metadata
                    .get("modeName")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            let side = RunSide {
                duration_ms: run.duration_ms(now),
                run_id: run.id,
                status: run.status,
                mode_name,
            };
            Ok((side, state))
        };
        let (left, left_state) = side(&left_id).await?;
        let (right, right_state) = side(&right_id).await?;
        let participants = |state: &RunState| -> Vec<String> {
            state
                .participants
                .iter()
                .map(|participant| participant.participant_id.clone())
                .collect()
        };
        let signals = |state: &RunState| -> Vec<String> {
            state
                .signals
                .signals
                .iter()
                .map(|signal| signal.name.clone())
                .collect()
        };
        let confidence = |state: &RunState| {
            state
                .decision
                .current
                .as_ref()
                .and_then(|decision| decision.confidence)
        };
        let (added, removed, common) =
            differences(&participants(&left_state), &participants(&right_state));
        let (signals_added, signals_removed, _) =
            differences(&signals(&left_state), &signals(&right_state));
        Ok(RunComparison {
            status_match: left.status == right.status,
            duration_delta_ms: left
                .duration_ms
                .zip(right.duration_ms)
                .map(|(left, right)| right - left),
            confidence_delta: confidence(&left_state)
                .zip(confidence(&right_state))
                .map(|(left, right)| right - left),
            participants_diff: ParticipantsDiff {
                added,
                removed,
                common,
            },
            signals_diff: SignalsDiff {
                added: signals_added,
                removed: signals_removed,
            },
            left,
            right,
        })
    }

    async fn export_header(&self, run_id: &str) -> Result<ExportHeader, ApiError> {
        let run = self.run_record(run_id).await?;
        Ok(ExportHeader {
            session: self.session(run_id).await?.map(session_json),
            projection: self.state(run_id).await?,
            metrics: self.metrics(run_id).await?,
            artifacts: self.artifacts(run_id).await?,
            exported_at: time::now(),
            run,
        })
    }

    /// The run as one document.
    pub async fn export(
        &self,
        run_id: &str,
        options: ExportOptions,
    ) -> Result<RunExport, ApiError> {
        let header = self.export_header(run_id).await?;
        let limit = options.event_limit.unwrap_or(DEFAULT_EXPORT_EVENTS);
        let canonical_events = if options.include_canonical {
            self.store().events_between(run_id, 0, None, limit).await?
        } else {
            Vec::new()
        };
        let raw_events = if options.include_raw {
            let raw = self.store().raw_events_after(run_id, 0, limit).await?;
            raw.into_iter().map(raw_json).collect()
        } else {
            Vec::new()
        };
        Ok(RunExport {
            header,
            canonical_events,
            raw_events,
        })
    }

    /// The run as records: `{record: "header", …}`, then `{record: "canonical_event", …event}`
    /// for each event, then `{record: "raw_event", …}`, read `EXPORT_PAGE` at a time, so a run
    /// of any length streams in bounded memory. An unknown run fails before the first record.
    pub async fn export_records(
        &self,
        run_id: &str,
        options: ExportOptions,
    ) -> Result<impl Stream<Item = Result<Value, ApiError>> + Send + 'static, ApiError> {
        let header = self.export_header(run_id).await?;
        let header = record("header", serde_json::to_value(&header).map_err(internal)?);
        let (service, run_id) = (self.clone(), run_id.to_owned());
        Ok(async_stream::try_stream! {
            yield header;
            if options.include_canonical {
                let mut after = 0;
                loop {
                    let page = service
                        .store()
                        .events_between(&run_id, after, None, EXPORT_PAGE)
                        .await
                        .map_err(ApiError::from)?;
                    for event in &page {
                        after = event.seq;
                        yield record("canonical_event", serde_json::to_value(event).map_err(internal)?);
                    }
                    if (page.len() as u64) < EXPORT_PAGE {
                        break;
                    }
                }
            }
            if options.include_raw {
                let mut after = 0;
                loop {
                    let page = service
                        .store()
                        .raw_events_after(&run_id, after, EXPORT_PAGE)
                        .await
                        .map_err(ApiError::from)?;
                    let full = page.len() as u64 == EXPORT_PAGE;
                    for raw in page {
                        after = raw.seq;
                        yield record("raw_event", raw_json(raw));
                    }
                    if !full {
                        break;
                    }
                }
            }
        })
    }

    /// One action on many runs (`{runIds}`), each answered on its own; the request itself is
    /// checked whole first (an unknown action, a malformed id: nothing is done).
    pub async fn batch(&self, action: &str, body: &Value) -> Result<BatchOutcome, ApiError> {
        let mut problems = Problems::default();
        let action = match action {
            "cancel" => Some(BatchAction::Cancel),
            "archive" => Some(BatchAction::Archive),
            "delete" => Some(BatchAction::Delete),
            "export" => Some(BatchAction::Export),
            _ => {
                problems.push(
                    "action",
                    format!("must be one of {}", BATCH_ACTIONS.join(", ")),
                );
                None
            }
        };
        let mut run_ids = Vec::new();
        if let Some(object) = Obj::expect(body, "", &mut problems) {
            if object.get("runIds").is_none() {
                problems.push("runIds", "is required");
            } else if let Some(items) = object.optional_array("runIds", &mut problems) {
                if items.is_empty() || items.len() > MAX_BATCH_RUNS {
                    problems.push("runIds", format!("must name 1 to {MAX_BATCH_RUNS} runs"));
                }
                for (position, item) in items.iter().enumerate() {
                    let field = index("runIds", position);
                    run_ids.extend(uuid_field(Some(item), &field, &mut problems));
                }
            }
        }
        let Some(action) = action.filter(|_| problems.is_empty()) else {
            return Err(ApiError::validation(problems.errors));
        };
        // One audit row per run the batch changes, each in that change's transaction.
        audit::per_change();
        let export_limit = batch_export_limit(run_ids.len());
        let mut results = Vec::with_capacity(run_ids.len());
        for run_id in run_ids {
            let rows = audit::taken();
            let outcome = match action {
                BatchAction::Cancel => self.cancel(&run_id, None).await.map(|_| None),
                BatchAction::Archive => self.set_archived(&run_id, true).await.map(|_| None),
                BatchAction::Delete => self.delete(&run_id).await.map(|()| None),
                // One more than the share is read, to tell a run that has more.
                BatchAction::Export => {
                    let options = ExportOptions {
                        event_limit: Some(export_limit + 1),
                        ..ExportOptions::default()
                    };
                    self.export(&run_id, options).await.map(|mut export| {
                        let truncated = cut(&mut export.canonical_events, export_limit)
                            | cut(&mut export.raw_events, export_limit);
                        Some((Box::new(export), truncated))
                    })
                }
            };
            // A change the run's observer wrote (a cancel the runtime reported first) took no
            // row here: the batch records one for the run itself.
            if outcome.is_ok()
                && action != BatchAction::Export
                && audit::taken() == rows
                && let Some(entry) = audit::take(&run_id)
                && let Err(error) = self.store().insert_audit(entry).await
            {
                audit::put_back();
                tracing::warn!(%run_id, %error, "the batch's audit row was not written");
            }
            results.push(match outcome {
                Ok(export) => BatchResult {
                    run_id,
                    ok: true,
                    error_code: None,
                    error_message: None,
                    event_limit: export.as_ref().map(|_| export_limit),
                    truncated: export.as_ref().map(|(_, truncated)| *truncated),
                    export: export.map(|(export, _)| export),
                },
                Err(error) => BatchResult {
                    run_id,
                    ok: false,
                    error_code: Some(error.code.as_str().to_owned()),
                    error_message: Some(error.message),
                    export: None,
                    event_limit: None,
                    truncated: None,
                },
            });
        }
        Ok(BatchOutcome { results })
    }

    /// Folds every stored event of the run into a fresh projection and stores it as the run's
    /// projection row, its checkpoints refolded at their seqs too, under the run's writer (no
    /// append of this process interleaves).
    pub async fn rebuild_projection(&self, run_id: &str) -> Result<Rebuilt, ApiError> {
        let mut guard = self.writers().lock(run_id).await?;
        if guard.is_none() {
            return Err(not_found(run_id));
        }
        let store = self.store();
        let mut differed = false;
        let mut rebuilt = RunState::empty(run_id);
        let mut checkpoints = Vec::new();
        for seq in store.checkpoint_seqs(run_id).await? {
            rebuilt = writer::fold_forward(store, run_id, rebuilt, Some(seq)).await?;
            let stored = store.checkpoint_at_or_before(run_id, seq).await?;
            differed |= stored.as_ref() != Some(&rebuilt);
            checkpoints.push((seq, store::state_text(&rebuilt)?));
        }
        let rebuilt = writer::fold_forward(store, run_id, rebuilt, None).await?;
        let stored = writer::current_state(store, run_id).await?;
        differed |= stored.as_ref() != Some(&rebuilt);
        let latest_seq = rebuilt.timeline.latest_seq;
        store
            .replace_projection(
                run_id,
                latest_seq,
                store::state_text(&rebuilt)?,
                checkpoints,
                audit::take(run_id),
            )
            .await
            .inspect_err(|_| audit::put_back())?;
        // The cached writer may hold the state the old row gave it: reloaded on next use.
        *guard = None;
        Ok(Rebuilt {
            rebuilt: true,
            latest_seq,
            differed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_export_shares_its_event_budget() {
        assert_eq!(batch_export_limit(1), DEFAULT_EXPORT_EVENTS);
        assert_eq!(batch_export_limit(5), DEFAULT_EXPORT_EVENTS);
        assert_eq!(batch_export_limit(10), 5_000);
        assert_eq!(batch_export_limit(MAX_BATCH_RUNS), 500);
        assert!(
            batch_export_limit(MAX_BATCH_RUNS) * MAX_BATCH_RUNS as u64 <= MAX_BATCH_EXPORT_EVENTS
        );
        let mut events = vec![1, 2, 3];
        assert!(!cut(&mut events, 3));
        assert!(cut(&mut events, 2));
        assert_eq!(events, [1, 2]);
    }

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn differences_are_right_minus_left_in_first_order() {
        let (added, removed, common) =
            differences(&names(&["a", "b", "b", "c"]), &names(&["c", "d", "a", "d"]));
        assert_eq!(added, names(&["d"]));
        assert_eq!(removed, names(&["b"]));
        assert_eq!(common, names(&["a", "c"]));
    }

    #[test]
    fn export_parameters_are_checked_together() {
        let error = ExportQuery {
            event_limit: Some(0),
            format: Some("xml".to_owned()),
            ..ExportQuery::default()
        }
        .validate()
        .expect_err("both are out of range");
        let details = error.details.expect("field errors");
        let fields: Vec<&str> = details["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|error| error["field"].as_str())
            .collect();
        assert_eq!(fields, ["eventLimit", "format"]);
        let options = ExportQuery {
            format: Some("jsonl".to_owned()),
            ..ExportQuery::default()
        }
        .validate()
        .expect("jsonl is a format");
        assert!(options.include_canonical && !options.include_raw);
        assert_eq!(options.event_limit, Some(DEFAULT_EXPORT_EVENTS));
    }

    #[test]
    fn a_record_keeps_the_things_own_fields() {
        let line = record("canonical_event", json!({"type": "run.created", "seq": 1}));
        assert_eq!(
            line,
            json!({"record": "canonical_event", "type": "run.created", "seq": 1})
        );
    }
}
