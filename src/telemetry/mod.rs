//! Logs and metrics.

pub mod metrics;
pub mod trace;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber: human-readable text, or one JSON object per line.
pub fn init_logging(format: &str, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true),
            )
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = installed;
}

/// A W3C trace id (32 lowercase hex digits) for a new run.
pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
