//! Proto ⇄ domain conversion for the dashboard RPCs.

use tonic::Status;

use super::{health_message, run_message, status};
use crate::api::proto;
use crate::domain::dashboard::{Chart, Charts, Kpis, OverviewQuery};
use crate::runs::RunService;

pub async fn overview(
    service: &RunService,
    request: proto::GetDashboardOverviewRequest,
) -> Result<proto::DashboardOverview, Status> {
    let scope = OverviewQuery {
        window: request.window,
        range: request.range,
        from: request.from,
        to: request.to,
        scenario_ref: request.scenario_ref,
        environment: request.environment,
    }
    .into_scope(crate::time::now())
    .map_err(status)?;
    let overview = service.dashboard_overview(&scope).await.map_err(status)?;
    Ok(proto::DashboardOverview {
        kpis: Some(kpis_message(overview.kpis)),
        recent_runs: overview
            .recent_runs
            .iter()
            .map(run_message)
            .collect::<Result<_, _>>()?,
        runtime_health: Some(health_message(overview.runtime_health)?),
        charts: Some(charts_message(overview.charts)),
        from: crate::time::format(&overview.from),
        to: crate::time::format(&overview.to),
        granularity: overview.granularity.as_str().to_owned(),
    })
}

pub async fn agent_metrics(
    service: &RunService,
) -> Result<proto::ListAgentMetricsResponse, Status> {
    let metrics = service.agent_metrics().await.map_err(status)?;
    Ok(proto::ListAgentMetricsResponse {
        data: metrics
            .into_iter()
            .map(|metrics| proto::AgentMetrics {
                participant_id: metrics.participant_id,
                runs: metrics.runs,
                messages: metrics.messages,
                signals: metrics.signals,
                average_confidence: metrics.average_confidence,
            })
            .collect(),
    })
}

fn kpis_message(kpis: Kpis) -> proto::DashboardKpis {
    proto::DashboardKpis {
        total_runs: kpis.total_runs,
        active_runs: kpis.active_runs,
        completed_runs: kpis.completed_runs,
        declined_runs: kpis.declined_runs,
        failed_runs: kpis.failed_runs,
        cancelled_runs: kpis.cancelled_runs,
        suspended_runs: kpis.suspended_runs,
        success_rate: kpis.success_rate,
        avg_duration_ms: kpis.avg_duration_ms,
        total_signals: kpis.total_signals,
        total_tokens: kpis.total_tokens,
        total_cost_usd: kpis.total_cost_usd,
    }
}

fn charts_message(charts: Charts) -> proto::DashboardCharts {
    let chart = |Chart { labels, data }: Chart| Some(proto::DashboardChart { labels, data });
    proto::DashboardCharts {
        run_volume: chart(charts.run_volume),
        latency: chart(charts.latency),
        signal_volume: chart(charts.signal_volume),
        error_classes: chart(charts.error_classes),
        throughput: chart(charts.throughput),
        queue_depth: chart(charts.queue_depth),
        latency_p50: chart(charts.latency_p50),
        latency_p95: chart(charts.latency_p95),
        latency_p99: chart(charts.latency_p99),
        cost: chart(charts.cost),
        success_rate: chart(charts.success_rate),
        decision_outcome: chart(charts.decision_outcome),
        per_scenario: chart(charts.per_scenario),
    }
}
