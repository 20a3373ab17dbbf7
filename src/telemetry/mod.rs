//! Logs and metrics.

pub mod metrics;
pub mod trace;

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber, writing to stderr: human-readable text, or one JSON object
/// per line.
pub fn init_logging(format: &str, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        // Colour codes are for people at a terminal; in a file or a pipe they are noise.
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = installed;
}

/// A W3C trace id (32 lowercase hex digits) for a new run.
pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
