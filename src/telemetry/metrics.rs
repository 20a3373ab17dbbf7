//! Process metrics in the Prometheus text format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::runs::status::RunStatus;

#[derive(Default)]
struct CallStats {
    count: u64,
    errors: u64,
    seconds: f64,
}

/// Upper bounds (seconds) of the request-duration histogram.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// (transport, method, route, status)
type RequestKey = (&'static str, String, String, u16);

#[derive(Default)]
struct Registry {
    events_ingested: AtomicU64,
    stream_reconnects: AtomicU64,
    transitions: Mutex<BTreeMap<&'static str, u64>>,
    runtime_calls: Mutex<BTreeMap<&'static str, CallStats>>,
    requests: Mutex<BTreeMap<RequestKey, Histogram>>,
    active_streams: Mutex<BTreeMap<&'static str, i64>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

pub fn record_events(count: usize) {
    registry()
        .events_ingested
        .fetch_add(count as u64, Ordering::Relaxed);
}

pub fn record_stream_reconnect() {
    registry().stream_reconnects.fetch_add(1, Ordering::Relaxed);
}

/// One HTTP or gRPC request: `route` is the route template (`/runs/{id}`) or the gRPC method.
pub fn record_request(
    transport: &'static str,
    method: &str,
    route: &str,
    status: u16,
    elapsed: Duration,
) {
    let mut requests = registry()
        .requests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let histogram = requests
        .entry((transport, method.to_owned(), route.to_owned(), status))
        .or_default();
    let seconds = elapsed.as_secs_f64();
    histogram.count += 1;
    histogram.sum += seconds;
    for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
        if seconds <= bound {
            *bucket += 1;
        }
    }
}

/// Counts an open live stream (`sse`, `grpc`) until the returned guard is dropped.
pub fn open_stream(kind: &'static str) -> StreamGuard {
    adjust_streams(kind, 1);
    StreamGuard(kind)
}

pub struct StreamGuard(&'static str);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        adjust_streams(self.0, -1);
    }
}

fn adjust_streams(kind: &'static str, delta: i64) {
    let mut streams = registry()
        .active_streams
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *streams.entry(kind).or_default() += delta;
}

pub fn record_transition(status: RunStatus) {
    let mut transitions = registry()
        .transitions
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *transitions.entry(status.as_str()).or_default() += 1;
}

pub fn record_runtime_call(method: &'static str, elapsed: Duration, ok: bool) {
    let mut calls = registry()
        .runtime_calls
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let stats = calls.entry(method).or_default();
    stats.count += 1;
    stats.seconds += elapsed.as_secs_f64();
    if !ok {
        stats.errors += 1;
    }
}

/// The current values as Prometheus text; `subscribers` is the hub's live subscriber count.
pub fn render(subscribers: usize) -> String {
    let registry = registry();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP http_requests_total HTTP and gRPC requests served."
    );
    let _ = writeln!(out, "# TYPE http_requests_total counter");
    let requests = registry
        .requests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for ((transport, method, route, status), histogram) in requests.iter() {
        let _ = writeln!(
            out,
            "http_requests_total{{transport=\"{transport}\",method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
            histogram.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP http_request_duration_seconds HTTP and gRPC request durations."
    );
    let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
    for ((transport, method, route, status), histogram) in requests.iter() {
        let labels = format!(
            "transport=\"{transport}\",method=\"{method}\",route=\"{route}\",status=\"{status}\""
        );
        for (bound, count) in BUCKETS.iter().zip(histogram.buckets) {
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{{labels}}} {:.6}",
            histogram.sum
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_count{{{labels}}} {}",
            histogram.count
        );
    }
    drop(requests);
    let _ = writeln!(
        out,
        "# HELP macp_active_streams Open live streams (SSE, gRPC WatchRun)."
    );
    let _ = writeln!(out, "# TYPE macp_active_streams gauge");
    for (kind, count) in registry
        .active_streams
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
    {
        let _ = writeln!(out, "macp_active_streams{{kind=\"{kind}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "# HELP macp_stream_subscribers Live subscribers of run hubs."
    );
    let _ = writeln!(out, "# TYPE macp_stream_subscribers gauge");
    let _ = writeln!(out, "macp_stream_subscribers {subscribers}");
    let _ = writeln!(
        out,
        "# HELP macp_stream_reconnects_total Runtime session streams resumed after a break."
    );
    let _ = writeln!(out, "# TYPE macp_stream_reconnects_total counter");
    let _ = writeln!(
        out,
        "macp_stream_reconnects_total {}",
        registry.stream_reconnects.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP macp_events_ingested_total Canonical events persisted."
    );
    let _ = writeln!(out, "# TYPE macp_events_ingested_total counter");
    let _ = writeln!(
        out,
        "macp_events_ingested_total {}",
        registry.events_ingested.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP run_state_transitions_total Run status transitions."
    );
    let _ = writeln!(out, "# TYPE run_state_transitions_total counter");
    for (status, count) in registry
        .transitions
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "run_state_transitions_total{{status=\"{status}\"}} {count}"
        );
    }
    let _ = writeln!(out, "# HELP macp_runtime_calls_total Runtime gRPC calls.");
    let _ = writeln!(out, "# TYPE macp_runtime_calls_total counter");
    let calls = registry
        .runtime_calls
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (method, stats) in calls.iter() {
        let _ = writeln!(
            out,
            "macp_runtime_calls_total{{method=\"{method}\"}} {}",
            stats.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP macp_runtime_call_errors_total Failed runtime gRPC calls."
    );
    let _ = writeln!(out, "# TYPE macp_runtime_call_errors_total counter");
    for (method, stats) in calls.iter() {
        let _ = writeln!(
            out,
            "macp_runtime_call_errors_total{{method=\"{method}\"}} {}",
            stats.errors
        );
    }
    let _ = writeln!(
        out,
        "# HELP macp_runtime_call_seconds_total Time spent in runtime calls."
    );
    let _ = writeln!(out, "# TYPE macp_runtime_call_seconds_total counter");
    for (method, stats) in calls.iter() {
        let _ = writeln!(
            out,
            "macp_runtime_call_seconds_total{{method=\"{method}\"}} {:.6}",
            stats.seconds
        );
    }
    out
}
