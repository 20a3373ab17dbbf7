//! Transport edge: gRPC (tonic), grpc-web and REST (axum) on one listener, each a thin adapter
//! over the same domain calls (`RunService`, the scenario `Registry` and `launch`). Nothing below
//! this module knows about either transport.

pub mod batched_io;
pub mod grpc;
pub mod http;
pub mod openapi;
pub mod proto;
pub mod routes;
pub mod server;

use axum::http::{HeaderName, HeaderValue, Method, header};
use opentelemetry::trace::FutureExt as _;
use tonic::server::NamedService;
use tonic_web::GrpcWebLayer;
use tower::Layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument as _;

use crate::registry::Registry;
use crate::runs::RunService;
use grpc::registry::ScenarioRegistryApi;
use proto::control_plane_server::ControlPlaneServer;
use proto::scenario_registry_server::ScenarioRegistryServer;

/// The whole service: REST routes and the gRPC services on one router. gRPC services are mounted
/// by path (`/<package.Service>/<Method>`), so unknown paths still get REST's JSON 404; each also
/// speaks grpc-web (HTTP/1.1 included) for browsers, and CORS covers everything.
pub fn router(
    service: RunService,
    registry: Registry,
    cors_origins: &[String],
) -> Result<axum::Router, tonic_reflection::server::Error> {
    // gRPC server reflection (v1, and v1alpha for older grpcurl and Postman) over our
    // descriptor set, which holds every service we serve.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let control_plane = GrpcWebLayer::new().layer(ControlPlaneServer::new(
        grpc::ControlPlaneApi::new(service.clone()),
    ));
    let scenario_registry = GrpcWebLayer::new().layer(ScenarioRegistryServer::new(
        ScenarioRegistryApi::new(registry.clone(), service.clone()),
    ));
    Ok(http::router(service, registry)
        .route_service(
            &format!(
                "/{}/{{*method}}",
                ControlPlaneServer::<grpc::ControlPlaneApi>::NAME
            ),
            control_plane,
        )
        .route_service(
            &format!(
                "/{}/{{*method}}",
                ScenarioRegistryServer::<ScenarioRegistryApi>::NAME
            ),
            scenario_registry,
        )
        .route_service(
            "/grpc.reflection.v1.ServerReflection/{*method}",
            reflection_v1,
        )
        .route_service(
            "/grpc.reflection.v1alpha.ServerReflection/{*method}",
            reflection_v1alpha,
        )
        .layer(axum::middleware::from_fn(observe_request))
        .layer(cors(cors_origins)))
}

/// Every request, either transport: its W3C trace context becomes the current context (so a
/// run started by it joins the caller's trace), it gets a request id (echoed as `x-request-id`
/// and carried by its logs), and it is counted and timed for `/metrics`.
async fn observe_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let parent = crate::telemetry::trace::extract(request.headers());
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let transport = if content_type.starts_with("application/grpc-web") {
        "grpc-web"
    } else if content_type.starts_with("application/grpc") {
        "grpc"
    } else {
        "http"
    };
    // Route templates keep the label set bounded; gRPC paths name the method.
    let route = match (
        transport,
        request.extensions().get::<axum::extract::MatchedPath>(),
    ) {
        ("http", Some(path)) => path.as_str().to_owned(),
        ("http", None) => "unmatched".to_owned(),
        _ => request.uri().path().to_owned(),
    };
    let method = request.method().to_string();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", %request_id, %method, %route, %transport);
    let mut response = next
        .run(request)
        .with_context(parent)
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    // A gRPC error answered at once carries its status in the headers.
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|code| code.parse::<u16>().ok())
        .unwrap_or_else(|| response.status().as_u16());
    crate::telemetry::metrics::record_request(
        transport,
        &method,
        &route,
        status,
        started.elapsed(),
    );
    response
}

/// Browsers may call REST, SSE and grpc-web from the configured origins, and read the gRPC status
/// and our error code from responses.
fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static("x-error-code"),
            HeaderName::from_static("x-error-details-bin"),
        ])
}
