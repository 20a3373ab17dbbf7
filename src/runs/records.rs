//! Run records as the API shows them: the stored row with figures the MACP UI console reads
//! from `metadata` (its runs table, run page and comparison): `durationMs` (live while the run
//! has not ended), `eventCount`, `signalCount`, `totalTokens`, `estimatedCostUsd`, and
//! `finalAction`/`finalConfidence` once a decision is finalized. Computed on read, never stored:
//! the figures come from the projection row (as of its last write) and the event counts.

use serde_json::{Value, json};

use super::service::RunService;
use crate::domain::run::Run;
use crate::error::ApiError;
use crate::store::RunFigures;

impl RunService {
    /// One run as the API shows it.
    pub async fn run_record(&self, run_id: &str) -> Result<Run, ApiError> {
        let run = self.get(run_id).await?;
        let mut records = self.with_figures(vec![run]).await?;
        records
            .pop()
            .ok_or_else(|| ApiError::internal("a run record went missing"))
    }

    /// `runs` with their figures in `metadata`: two queries for the lot.
    pub(super) async fn with_figures(&self, mut runs: Vec<Run>) -> Result<Vec<Run>, ApiError> {
        let ids: Vec<String> = runs.iter().map(|run| run.id.clone()).collect();
        let mut figures = self.store().run_figures(&ids).await?;
        let now = crate::time::now();
        for run in &mut runs {
            let figures = figures.remove(&run.id).unwrap_or_default();
            add_figures(run, &figures, now);
        }
        Ok(runs)
    }
}

fn add_figures(run: &mut Run, figures: &RunFigures, now: crate::time::Timestamp) {
    let duration = run.duration_ms(now);
    // Seqs are dense from 1: the last one is the number of events.
    let event_count = run.last_event_seq;
    let Value::Object(metadata) = &mut run.metadata else {
        return;
    };
    let mut set = |key: &str, value: Value| {
        metadata.insert(key.to_owned(), value);
    };
    if let Some(duration) = duration {
        set("durationMs", json!(duration));
    }
    set("eventCount", json!(event_count));
    set("signalCount", json!(figures.signal_count));
    set("totalTokens", json!(figures.total_tokens));
    set("estimatedCostUsd", json!(figures.estimated_cost_usd));
    if let Some(action) = &figures.final_action {
        set("finalAction", json!(action));
    }
    if let Some(confidence) = figures.final_confidence {
        set("finalConfidence", json!(confidence));
    }
}
