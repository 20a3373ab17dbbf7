//! Telemetry: spans reach an OTLP collector (an in-process one here) with the run's trace id,
//! W3C trace context from the caller is joined, and `/metrics` moves as a run proceeds.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

use crate::requests;
use crate::support::{self, Backend};

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_spans_reach_the_collector_with_the_runs_trace_id() {
    let collector = Collector::default();
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
            .expect("collector port");
    let address = incoming.local_addr().expect("address");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(incoming),
    );
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            otlp_endpoint: Some(format!("http://{address}")),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (_, before) = text(&app, "/metrics").await;

    // The caller's trace context is joined: the run's trace is the caller's trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .http
        .post(format!("{}/runs", app.base))
        .header(
            "traceparent",
            format!("00-{caller_trace}-00f067aa0ba902b7-01"),
        )
        .json(&requests::scripted_decision())
        .send()
        .await
        .expect("start");
    assert!(response.headers().contains_key("x-request-id"));
    let started: Value = response.json().await.expect("json");
    assert_eq!(started["traceId"], caller_trace);
    let run_id = started["runId"].as_str().expect("runId").to_owned();
    app.wait_terminal(&run_id).await;
    let (_, traces) = app.get(&format!("/runs/{run_id}/traces")).await;
    assert_eq!(traces["traceId"], caller_trace);

    let (_, after) = text(&app, "/metrics").await;
    for counter in [
        "http_requests_total{transport=\"http\",method=\"POST\",route=\"/runs\"",
        "run_state_transitions_total{status=\"completed\"}",
        "macp_events_ingested_total",
        "macp_runtime_calls_total{method=\"Send\"}",
    ] {
        assert!(
            metric(&after, counter) > metric(&before, counter),
            "{counter} did not move:\n{after}"
        );
    }

    app.stop().await; // flushes the spans
    let spans = collector.spans.lock().expect("lock").clone();
    let run_span = spans
        .iter()
        .find(|span| span.name == "run.lifecycle")
        .expect("a run.lifecycle span");
    assert_eq!(hex(&run_span.trace_id), caller_trace);
    assert_eq!(hex(&run_span.parent_span_id), "00f067aa0ba902b7");
    for child in [
        "runtime.Initialize",
        "runtime.Send",
        "runtime.StreamSession",
        "events.persist",
        "events.publish",
    ] {
        let span = spans
            .iter()
            .find(|span| span.name == child)
            .unwrap_or_else(|| panic!("no {child} span"));
        assert_eq!(hex(&span.trace_id), caller_trace, "{child}");
        assert_eq!(
            span.parent_span_id, run_span.span_id,
            "{child} is a child of the run span"
        );
    }
    assert!(
        spans
            .iter()
            .filter(|span| span.name == "runtime.Send")
            .count()
            >= 8
    );
    server.abort();
}

async fn text(app: &support::TestApp, path: &str) -> (u16, String) {
    let response = app
        .http
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("request");
    (
        response.status().as_u16(),
        response.text().await.expect("text"),
    )
}
