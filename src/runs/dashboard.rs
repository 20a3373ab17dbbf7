//! The dashboard overview and the agent figures: the store's aggregates (a few rows per time
//! bucket) laid out as the console's KPIs and charts, with the latest runs and the runtime's
//! health beside them.

use serde::Serialize;

use super::service::RunService;
use crate::domain::dashboard::{AgentMetrics, Chart, Charts, Kpis, OverviewScope};
use crate::domain::query::RunFilter;
use crate::domain::run::Run;
use crate::domain::status::RunStatus;
use crate::error::ApiError;
use crate::runtime::info;
use crate::store::{DashboardAggregates, DashboardScope};

/// Most runs in `recentRuns`.
pub const RECENT_RUNS: u64 = 10;

/// What `GET /dashboard/overview` answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub kpis: Kpis,
    /// The latest runs matching the filters (any time; neither archived nor sandbox).
    pub recent_runs: Vec<Run>,
    pub runtime_health: info::Health,
    pub charts: Charts,
    #[serde(with = "crate::time::rfc3339")]
    pub from: crate::time::Timestamp,
    #[serde(with = "crate::time::rfc3339")]
    pub to: crate::time::Timestamp,
    pub granularity: crate::domain::dashboard::Granularity,
}

impl RunService {
    /// The overview of the runs in `scope`; the aggregates, the latest runs and the runtime's
    /// health are asked for at once.
    pub async fn dashboard_overview(&self, scope: &OverviewScope) -> Result<Overview, ApiError> {
        let store_scope = DashboardScope {
            from: scope.from,
            to: scope.to,
            origin: scope.origin(),
            bucket_secs: scope.granularity.seconds(),
            scenario_ref: scope.scenario_ref.clone(),
            environment: scope.environment.clone(),
        };
        let recent = RunFilter {
            status: None,
            tags: Vec::new(),
            created_after: None,
            created_before: None,
            limit: RECENT_RUNS,
            offset: 0,
            sort_by_updated: false,
            ascending: false,
            environment: scope.environment.clone(),
            search: None,
            scenario_ref: scope.scenario_ref.clone(),
            include_archived: false,
            include_sandbox: false,
        };
        let (aggregates, recent_runs, runtime_health) = tokio::join!(
            self.store().dashboard_aggregates(&store_scope),
            self.list(&recent),
            self.runtime_health(),
        );
        let (kpis, charts) = lay_out(scope, &aggregates?);
        Ok(Overview {
            kpis,
            recent_runs: recent_runs?.data,
            runtime_health,
            charts,
            from: scope.from,
            to: scope.to,
            granularity: scope.granularity,
        })
    }

    /// Every participant's figures, most runs first.
    pub async fn agent_metrics(&self) -> Result<Vec<AgentMetrics>, ApiError> {
        let figures = self.store().participant_figures().await?;
        Ok(figures
            .into_iter()
            .map(|figures| AgentMetrics {
                participant_id: figures.participant_id,
                runs: count(figures.runs),
                messages: count(figures.messages),
                signals: count(figures.signals),
                average_confidence: figures.average_confidence.unwrap_or(0.0),
            })
            .collect())
    }
}

fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// A time series' slot for a bucket the store answered (a bucket outside the scope, which a
/// clock between the two reads could give, is dropped).
fn slot(bucket: i64, buckets: usize) -> Option<usize> {
    usize::try_from(bucket)
        .ok()
        .filter(|index| *index < buckets)
}

/// Time series over the scope's buckets.
struct Series {
    labels: Vec<String>,
}

impl Series {
    fn chart(&self, data: Vec<f64>) -> Chart {
        Chart {
            labels: self.labels.clone(),
            data,
        }
    }
}

/// `(label, value)` pairs, largest first (ties by label), at most ten.
fn ranked(mut pairs: Vec<(String, f64)>) -> Chart {
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    pairs.truncate(10);
    let (labels, data) = pairs.into_iter().unzip();
    Chart { labels, data }
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

fn cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The KPIs and charts from the store's aggregates.
fn lay_out(scope: &OverviewScope, aggregates: &DashboardAggregates) -> (Kpis, Charts) {
    let series = Series {
        labels: scope.labels(),
    };
    let n = series.labels.len();
    let zeros = || vec![0.0; n];

    // Runs created in the range.
    let mut kpis = Kpis::default();
    let mut run_volume = zeros();
    let mut cost = zeros();
    let mut errors: Vec<(String, f64)> = Vec::new();
    let (mut tokens, mut cost_usd, mut completed_ms, mut completed_timed) = (0.0, 0.0, 0.0, 0);
    for group in &aggregates.created {
        let runs = count(group.runs);
        kpis.total_runs += runs;
        tokens += group.tokens;
        cost_usd += group.cost_usd;
        if let Some(index) = slot(group.bucket, n) {
            run_volume[index] += group.runs as f64;
            cost[index] += group.cost_usd;
        }
        match RunStatus::parse(&group.status) {
            Some(RunStatus::Completed) => {
                kpis.completed_runs += runs;
                kpis.declined_runs += count(group.negative);
                completed_ms += group.duration_sum_ms;
                completed_timed += group.durations;
            }
            Some(RunStatus::Failed) => {
                kpis.failed_runs += runs;
                let class = group.error_code.as_deref().unwrap_or("UNKNOWN");
                match errors.iter_mut().find(|(label, _)| label == class) {
                    Some((_, value)) => *value += group.runs as f64,
                    None => errors.push((class.to_owned(), group.runs as f64)),
                }
            }
            Some(RunStatus::Cancelled) => kpis.cancelled_runs += runs,
            Some(RunStatus::Suspended) => {
                kpis.suspended_runs += runs;
                kpis.active_runs += runs;
            }
            Some(_) => kpis.active_runs += runs,
            None => {}
        }
    }
    let ended = kpis.completed_runs + kpis.failed_runs + kpis.cancelled_runs;
    kpis.success_rate = ratio(
        f64::from(kpis.completed_runs - kpis.declined_runs.min(kpis.completed_runs)),
        f64::from(ended),
    );
    kpis.avg_duration_ms = ratio(completed_ms, completed_timed as f64).round();
    kpis.total_tokens = tokens.round();
    kpis.total_cost_usd = cents(cost_usd);

    // Runs that ended in the range, by when they ended.
    let mut throughput = zeros();
    let (mut latency_ms, mut latency_runs) = (zeros(), zeros());
    let (mut succeeded, mut terminal) = (zeros(), zeros());
    let mut outcome = zeros();
    for group in &aggregates.ended {
        let Some(index) = slot(group.bucket, n) else {
            continue;
        };
        throughput[index] += group.runs as f64;
        outcome[index] += (group.positive - group.negative) as f64;
        terminal[index] += group.runs as f64;
        if group.status == RunStatus::Completed.as_str() {
            latency_ms[index] += group.duration_sum_ms;
            latency_runs[index] += group.durations as f64;
            succeeded[index] += (group.runs - group.negative) as f64;
        }
    }
    let per_bucket = |parts: &[f64], wholes: &[f64]| -> Vec<f64> {
        parts
            .iter()
            .zip(wholes)
            .map(|(part, whole)| ratio(*part, *whole))
            .collect()
    };
    let latency: Vec<f64> = per_bucket(&latency_ms, &latency_runs)
        .into_iter()
        .map(f64::round)
        .collect();
    let success_rate = per_bucket(&succeeded, &terminal);

    let (mut p50, mut p95, mut p99) = (zeros(), zeros(), zeros());
    for row in &aggregates.percentiles {
        if let Some(index) = slot(row.bucket, n) {
            p50[index] = row.p50.round();
            p95[index] = row.p95.round();
            p99[index] = row.p99.round();
        }
    }

    let mut signal_volume = zeros();
    for (bucket, signals) in &aggregates.signals {
        kpis.total_signals += count(*signals);
        if let Some(index) = slot(*bucket, n) {
            signal_volume[index] += *signals as f64;
        }
    }

    // Runs waiting at the end of each bucket: those created by then, less those started (or
    // ended without starting) by then.
    let mut queue_change = zeros();
    let mut waiting = 0.0;
    for (created, left, runs) in &aggregates.queue {
        let runs = *runs as f64;
        match slot(*created, n) {
            Some(index) => queue_change[index] += runs,
            None if *created < 0 => waiting += runs,
            None => continue,
        }
        if let Some(index) = left.and_then(|left| slot(left, n)) {
            queue_change[index] -= runs;
        }
    }
    let queue_depth = queue_change
        .into_iter()
        .map(|change| {
            waiting += change;
            waiting
        })
        .collect();

    let scenarios = aggregates
        .scenarios
        .iter()
        .map(|(scenario, runs)| (scenario.clone(), *runs as f64))
        .collect();

    let charts = Charts {
        run_volume: series.chart(run_volume),
        latency: series.chart(latency),
        signal_volume: series.chart(signal_volume),
        error_classes: ranked(errors),
        throughput: series.chart(throughput),
        queue_depth: series.chart(queue_depth),
        latency_p50: series.chart(p50),
        latency_p95: series.chart(p95),
        latency_p99: series.chart(p99),
        cost: series.chart(cost),
        success_rate: series.chart(success_rate),
        decision_outcome: series.chart(outcome),
        per_scenario: ranked(scenarios),
    };
    (kpis, charts)
}

/// How often the rollup changes of the last moments are folded into the rollup rows.
const FOLD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl RunService {
    /// Folds the dashboard's rollup changes into its rollup rows every second, until `until`
    /// (the leader's work: one folder at a time keeps the rollup rows' writers to one).
    pub(super) async fn keep_rollups(self, until: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(FOLD_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = until.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.store().fold_rollup_deltas().await {
                tracing::warn!(%error, "folding the dashboard's rollup changes failed");
            }
        }
    }
}
