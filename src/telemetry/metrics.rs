//! Process metrics (`GET /metrics`): a `prometheus-client` registry rendered in the Prometheus
//! text format 0.0.4. Every label value comes from a bounded set the service chooses (route
//! templates, RPC names, statuses, runtime methods), never from what a client sent.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::status::RunStatus;

/// The `Content-Type` of what `render` returns.
pub use prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the request-duration histogram.
const REQUEST_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Upper bounds (seconds) of the run-duration histogram: a run refused at once ends in well under
/// a second, one waiting on people can last hours.
const RUN_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    14400.0,
];

/// One HTTP or gRPC request's labels; `route` is a route template, an RPC path or `unmatched`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    pub transport: &'static str,
    pub method: &'static str,
    pub route: Cow<'static, str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

/// How a webhook delivery attempt ended.
const WEBHOOK_OUTCOMES: [&str; 3] = ["delivered", "retried", "failed"];
/// The runtime circuit breaker's states.
const BREAKER_STATES: [&str; 3] = ["CLOSED", "OPEN", "HALF_OPEN"];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    request_seconds: Histograms<Request>,
    active_streams: Family<Kind, Gauge>,
    subscribers: Gauge,
    stream_reconnects: Counter,
    unmatched_signals: Counter,
    events_ingested: Counter,
    transitions: Family<Status, Counter>,
    run_seconds: Histograms<Status>,
    runtime_calls: Family<Method, Counter>,
    runtime_call_errors: Family<Method, Counter>,
    runtime_call_seconds: Family<Method, Counter<f64, AtomicU64>>,
    webhook_attempts: Family<Status, Counter>,
    breaker_transitions: Family<State, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
            active_streams: Family::default(),
            subscribers: Gauge::default(),
            stream_reconnects: Counter::default(),
            unmatched_signals: Counter::default(),
            events_ingested: Counter::default(),
            transitions: Family::default(),
            run_seconds: Family::new_with_constructor(|| Histogram::new(RUN_BUCKETS)),
            runtime_calls: Family::default(),
            runtime_call_errors: Family::default(),
            runtime_call_seconds: Family::default(),
            webhook_attempts: Family::default(),
            breaker_transitions: Family::default(),
        };
        for status in WEBHOOK_OUTCOMES {
            let _ = metrics.webhook_attempts.get_or_create(&Status { status });
        }
        for state in BREAKER_STATES {
            let _ = metrics.breaker_transitions.get_or_create(&State { state });
        }
        // Every status from the start, so a rate over them has a zero to start from.
        for status in RunStatus::ALL {
            let label = Status {
                status: status.as_str(),
            };
            let _ = metrics.transitions.get_or_create(&label);
            if status.is_terminal() {
                let _ = metrics.run_seconds.get_or_create(&label);
            }
        }
        // The library adds `_total` to counters and the unit to the name.
        let registry = &mut metrics.registry;
        registry.register(
            "http_requests",
            "HTTP and gRPC requests served",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP and gRPC request durations",
            Unit::Seconds,
            metrics.request_seconds.clone(),
        );
        registry.register(
            "macp_active_streams",
            "Open live streams (SSE, gRPC WatchRun)",
            metrics.active_streams.clone(),
        );
        registry.register(
            "macp_stream_subscribers",
            "Live subscribers of run hubs",
            metrics.subscribers.clone(),
        );
        registry.register(
            "macp_stream_reconnects",
            "Runtime session streams resumed after a break",
            metrics.stream_reconnects.clone(),
        );
        registry.register(
            "macp_ambient_signals_unmatched",
            "Ambient signals (WatchSignals) that matched no open run and were dropped",
            metrics.unmatched_signals.clone(),
        );
        registry.register(
            "macp_events_ingested",
            "Canonical events persisted",
            metrics.events_ingested.clone(),
        );
        registry.register(
            "run_state_transitions",
            "Run status transitions",
            metrics.transitions.clone(),
        );
        registry.register_with_unit(
            "macp_run_duration",
            "Runs from start to end, by terminal status",
            Unit::Seconds,
            metrics.run_seconds.clone(),
        );
        registry.register(
            "macp_runtime_calls",
            "Runtime gRPC calls",
            metrics.runtime_calls.clone(),
        );
        registry.register(
            "macp_runtime_call_errors",
            "Failed runtime gRPC calls",
            metrics.runtime_call_errors.clone(),
        );
        registry.register_with_unit(
            "macp_runtime_call",
            "Time spent in runtime calls",
            Unit::Seconds,
            metrics.runtime_call_seconds.clone(),
        );
        registry.register(
            "macp_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, retried, failed: out of attempts)",
            metrics.webhook_attempts.clone(),
        );
        registry.register(
            "macp_circuit_breaker_transitions",
            "Runtime circuit breaker state changes, by the state entered",
            metrics.breaker_transitions.clone(),
        );
        metrics
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// One webhook attempt's outcome: `delivered`, `retried` or `failed` (out of attempts).
pub fn record_webhook_attempt(outcome: &'static str) {
    metrics()
        .webhook_attempts
        .get_or_create(&Status { status: outcome })
        .inc();
}

/// The runtime circuit breaker entered `state` (`CLOSED`, `OPEN` or `HALF_OPEN`).
pub fn record_breaker_transition(state: &'static str) {
    metrics()
        .breaker_transitions
        .get_or_create(&State { state })
        .inc();
}

pub fn record_events(count: usize) {
    metrics().events_ingested.inc_by(count as u64);
}

pub fn record_stream_reconnect() {
    metrics().stream_reconnects.inc();
}

pub fn record_unmatched_signal() {
    metrics().unmatched_signals.inc();
}

pub fn record_request(labels: Request, elapsed: Duration) {
    let metrics = metrics();
    metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    metrics.requests.get_or_create(&labels).inc();
}

/// Counts an open live stream (`sse`, `grpc`) until the returned guard is dropped.
pub fn open_stream(kind: &'static str) -> StreamGuard {
    metrics().active_streams.get_or_create(&Kind { kind }).inc();
    StreamGuard(kind)
}

pub struct StreamGuard(&'static str);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics()
            .active_streams
            .get_or_create(&Kind { kind: self.0 })
            .dec();
    }
}

pub fn record_transition(status: RunStatus) {
    metrics()
        .transitions
        .get_or_create(&Status {
            status: status.as_str(),
        })
        .inc();
}

/// A run that reached `status` (terminal) after running for `ran`.
pub fn record_run_duration(status: RunStatus, ran: Duration) {
    metrics()
        .run_seconds
        .get_or_create(&Status {
            status: status.as_str(),
        })
        .observe(ran.as_secs_f64());
}

pub fn record_runtime_call(method: &'static str, elapsed: Duration, ok: bool) {
    let metrics = metrics();
    let label = Method { method };
    metrics.runtime_calls.get_or_create(&label).inc();
    metrics
        .runtime_call_seconds
        .get_or_create(&label)
        .inc_by(elapsed.as_secs_f64());
    // Created on every call, so a method's error count reads 0 rather than missing.
    let errors = metrics.runtime_call_errors.get_or_create(&label);
    if !ok {
        errors.inc();
    }
}

/// The current values as Prometheus text; `subscribers` is the hub's live subscriber count.
pub fn render(subscribers: usize) -> Result<String, std::fmt::Error> {
    let metrics = metrics();
    metrics
        .subscribers
        .set(i64::try_from(subscribers).unwrap_or(i64::MAX));
    let mut text = String::new();
    prometheus_text::encode(&mut text, &metrics.registry)?;
    Ok(text)
}
