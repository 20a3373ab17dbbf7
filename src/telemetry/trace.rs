//! OpenTelemetry traces: one span per run lifecycle (its trace id is the run's `traceId`), child
//! spans for runtime calls, persistence and delivery, W3C trace context sent to the runtime on
//! every call and accepted from incoming requests. Exported over OTLP when an endpoint is set;
//! otherwise nothing is recorded and the calls cost next to nothing.
//!
//! The provider belongs to the `App`, not to the process, so each instance (and each test)
//! exports to its own endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter: {0}")]
pub struct Error(String);

/// Span context of the runs this process is executing.
#[derive(Clone, Default)]
pub struct Tracing {
    exporter: Option<(SdkTracerProvider, SdkTracer)>,
    runs: Arc<Mutex<HashMap<String, Context>>>,
}

/// Ends its span when dropped.
pub struct SpanGuard {
    context: Context,
}

impl SpanGuard {
    /// The context to run the traced work in (`opentelemetry::trace::FutureExt::with_context`).
    pub fn context(&self) -> Context {
        self.context.clone()
    }

    pub fn fail(&self, message: impl Into<String>) {
        self.context
            .span()
            .set_status(Status::error(message.into()));
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        self.context.span().end();
    }
}

impl Tracing {
    pub fn disabled() -> Self {
        Tracing::default()
    }

    /// Exports spans to an OTLP/gRPC collector at `endpoint` (e.g. `http://127.0.0.1:4317`).
    pub fn otlp(endpoint: &str, service_name: &str) -> Result<Self, Error> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|error| Error(error.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("macp-control-plane");
        Ok(Tracing {
            exporter: Some((provider, tracer)),
            runs: Arc::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.exporter.is_some()
    }

    /// Starts the span of a run's lifecycle as a child of the current context (an incoming
    /// request's trace, if it carried one) and returns its trace id, the run's `traceId`.
    pub fn start_run(&self, run_id: &str, mode: &str) -> Option<String> {
        let (_, tracer) = self.exporter.as_ref()?;
        let parent = Context::current();
        let span = tracer
            .span_builder("run.lifecycle")
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("macp.run_id", run_id.to_owned()),
                KeyValue::new("macp.mode_name", mode.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        let trace_id = span.span_context().trace_id().to_string();
        let context = parent.with_span(span);
        self.lock().insert(run_id.to_owned(), context);
        Some(trace_id)
    }

    /// A child span of the run's span (or a detached no-op when the run has none here).
    pub fn child(&self, run_id: &str, name: &'static str, attributes: Vec<KeyValue>) -> SpanGuard {
        let Some((_, tracer)) = &self.exporter else {
            return SpanGuard {
                context: Context::new(),
            };
        };
        let parent = self.lock().get(run_id).cloned().unwrap_or_default();
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        SpanGuard {
            context: parent.with_span(span),
        }
    }

    /// Forgets a run's span without exporting it (the run was not created after all).
    pub fn discard_run(&self, run_id: &str) {
        self.lock().remove(run_id);
    }

    /// Ends the run's span with its terminal status.
    pub fn end_run(&self, run_id: &str, status: &str, error: Option<&str>) {
        let Some(context) = self.lock().remove(run_id) else {
            return;
        };
        let span = context.span();
        span.set_attribute(KeyValue::new("run.terminal_status", status.to_owned()));
        if let Some(error) = error {
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }

    /// Exports everything recorded so far.
    pub fn flush(&self) {
        if let Some((provider, _)) = &self.exporter
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "could not flush spans");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Context>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Adds the current span's W3C `traceparent` (and `tracestate`) to outgoing gRPC metadata.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let context = Context::current();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
    }
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// The trace context an incoming request (REST, gRPC or grpc-web) carries, if any.
pub fn extract(headers: &axum::http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}
