//! Transport edge: gRPC (tonic), grpc-web and REST (axum) on one listener, each a thin adapter
//! over the same domain calls (`RunService`, the scenario `Registry` and `launch`). Nothing below
//! this module knows about either transport.

pub mod edge;
pub mod grpc;
pub mod guard;
pub mod http;
pub mod openapi;
pub mod proto;
pub mod routes;
pub mod server;
mod unread;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::OnceLock;

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
/// speaks grpc-web (HTTP/1.1 included) for browsers, and CORS covers everything. `local` is the
/// address listened on, which decides whether the host check applies (`edge::HostCheck`).
pub fn router(
    service: RunService,
    registry: Registry,
    guard: std::sync::Arc<guard::Guard>,
    cors_origins: &[String],
    edge: &edge::EdgeOptions,
    local: std::net::IpAddr,
) -> Result<axum::Router, tonic_reflection::server::Error> {
    // gRPC server reflection (v1, and v1alpha for older grpcurl and Postman) over our
    // descriptor set, which holds every service we serve.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let control_plane = GrpcWebLayer::new().layer(grpc::WithAwaitRoute::new(
        ControlPlaneServer::new(grpc::ControlPlaneApi::new(
            service.clone(),
            guard.admin.clone(),
        ))
        .max_decoding_message_size(edge.grpc_max_decoding_message_bytes)
        .max_encoding_message_size(edge.grpc_max_encoding_message_bytes),
        grpc::AwaitRunRoute::new(
            service.clone(),
            edge.grpc_max_decoding_message_bytes,
            edge.grpc_max_encoding_message_bytes,
        ),
    ));
    let scenario_registry = GrpcWebLayer::new().layer(
        ScenarioRegistryServer::new(ScenarioRegistryApi::new(registry.clone(), service.clone()))
            .max_decoding_message_size(edge.grpc_max_decoding_message_bytes)
            .max_encoding_message_size(edge.grpc_max_encoding_message_bytes),
    );
    let host_check = edge::HostCheck::new(local, &edge.allowed_hosts);
    let admin = guard.admin.clone();
    Ok(
        http::router(service, registry, admin, edge.max_request_body_bytes)
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
            // Innermost: only requests the edge checks let through are authenticated.
            .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
            // Inside `observe_request`, so refused requests are logged and counted too.
            .layer(axum::middleware::from_fn_with_state(
                edge::OriginCheck::new(cors_origins),
                edge::check_origin,
            ))
            .layer(axum::middleware::from_fn_with_state(
                host_check,
                edge::check_host,
            ))
            .layer(axum::middleware::from_fn(unread::close_unread))
            .layer(axum::middleware::from_fn(observe_request))
            .layer(cors(cors_origins)),
    )
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
    let route = route_label(transport, &request);
    let method = method_label(request.method());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", %request_id, %method, %route, %transport);
    let mut request = request;
    request
        .extensions_mut()
        .insert(guard::RequestId(request_id.clone()));
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
        crate::telemetry::metrics::Request {
            transport,
            method,
            route,
            status,
        },
        started.elapsed(),
    );
    response
}

/// A request's `route` label: a REST route's template, or the path of an RPC we serve; anything
/// else is `unmatched`, so no client can grow the label set or write into the exposition.
fn route_label(transport: &str, request: &axum::extract::Request) -> Cow<'static, str> {
    let unmatched = Cow::Borrowed("unmatched");
    if transport == "http" {
        return request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or(unmatched, |path| Cow::Owned(path.as_str().to_owned()));
    }
    served_rpcs()
        .get(request.uri().path())
        .map_or(unmatched, |path| Cow::Borrowed(path.as_str()))
}

/// `/<package.Service>/<Method>` of every RPC the router serves: the methods of the services in
/// the descriptor sets it serves (ours, and gRPC reflection's).
fn served_rpcs() -> &'static HashSet<String> {
    static RPCS: OnceLock<HashSet<String>> = OnceLock::new();
    RPCS.get_or_init(|| {
        [
            proto::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .filter_map(|set| {
            prost_reflect::DescriptorPool::decode(set)
                .inspect_err(|error| tracing::error!(%error, "a served descriptor set is invalid"))
                .ok()
        })
        .flat_map(|pool| {
            pool.services()
                .flat_map(|service| {
                    service
                        .methods()
                        .map(|method| format!("/{}/{}", service.full_name(), method.name()))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
    })
}

/// A request's `method` label: a client may send any token as its method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Browsers may call REST, SSE and grpc-web from the configured origins, and read the gRPC status
/// and our error code from responses.
fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = match edge::allowed_origins(origins) {
        None => AllowOrigin::any(),
        Some(origins) => AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
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
            header::RETRY_AFTER,
        ])
}
