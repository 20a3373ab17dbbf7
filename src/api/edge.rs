//! What the edge enforces before any handler runs, for both transports: the host names the
//! service answers to (a browser tricked by DNS rebinding sends the attacker's name), the
//! origins whose pages may change things, and the size limits of requests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::http::HttpError;
use crate::error::{ApiError, ErrorCode};

/// Default largest REST request body: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;
/// Default largest gRPC request message: 4 MiB (tonic's own default).
pub const DEFAULT_GRPC_MAX_DECODING_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default largest gRPC response message: 64 MiB, what the operator CLI accepts, since a page of
/// up to 10,000 events can pass 4 MiB.
pub const DEFAULT_GRPC_MAX_ENCODING_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The edge's settings.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Largest REST request body (`MAX_REQUEST_BODY_BYTES`); larger ones get 413.
    pub max_request_body_bytes: usize,
    /// Largest gRPC request message (`GRPC_MAX_DECODING_MESSAGE_BYTES`).
    pub grpc_max_decoding_message_bytes: usize,
    /// Largest gRPC response message (`GRPC_MAX_ENCODING_MESSAGE_BYTES`).
    pub grpc_max_encoding_message_bytes: usize,
    /// Host names (no port) accepted besides the loopback names (`ALLOWED_HOSTS`), lowercase.
    pub allowed_hosts: Vec<String>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            grpc_max_decoding_message_bytes: DEFAULT_GRPC_MAX_DECODING_MESSAGE_BYTES,
            grpc_max_encoding_message_bytes: DEFAULT_GRPC_MAX_ENCODING_MESSAGE_BYTES,
            allowed_hosts: Vec::new(),
        }
    }
}

/// An `ALLOWED_HOSTS` entry: a host name or IP address without port (any port is accepted),
/// lowercased.
pub fn host_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    match text.parse::<Authority>() {
        Ok(authority) if authority.as_str() == authority.host() => Ok(text.to_ascii_lowercase()),
        _ => Err(format!(
            "'{text}' is not a host name without port (e.g. `cp.example.com`)"
        )),
    }
}

/// The host names a request may be addressed to: loopback names and the configured ones.
#[derive(Debug, Clone)]
pub struct HostCheck {
    allowed: Arc<[String]>,
}

impl HostCheck {
    /// The check for a listener on `local`: on loopback, or when names are configured; `None`
    /// (any host) otherwise, as a service reachable from other machines has no way to tell
    /// which names reach it.
    pub fn new(local: IpAddr, allowed_hosts: &[String]) -> Option<HostCheck> {
        (local.to_canonical().is_loopback() || !allowed_hosts.is_empty()).then(|| HostCheck {
            allowed: allowed_hosts.into(),
        })
    }

    fn accepts(&self, host: &str) -> bool {
        is_loopback_name(host)
            || self
                .allowed
                .iter()
                .any(|name| name.eq_ignore_ascii_case(host))
    }
}

/// `localhost`, `127.x.x.x` or `[::1]`.
fn is_loopback_name(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return ip.is_loopback();
    }
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// The host a request is addressed to: HTTP/2's `:authority` (the URI's), else HTTP/1.1's `Host`.
fn request_host(request: &Request) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.host().to_owned());
    }
    let value = request.headers().get(header::HOST)?.to_str().ok()?;
    value
        .parse::<Authority>()
        .ok()
        .map(|authority| authority.host().to_owned())
}

/// Refuses, with 421, a request addressed to a host name that is not ours, before any work.
pub async fn check_host(
    State(check): State<Option<HostCheck>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(check) = check else {
        return next.run(request).await;
    };
    match request_host(&request) {
        Some(host) if check.accepts(&host) => next.run(request).await,
        host => HttpError(ApiError::new(
            ErrorCode::MisdirectedRequest,
            format!(
                "this service does not answer to host '{}'; loopback names and ALLOWED_HOSTS do",
                host.unwrap_or_default()
            ),
        ))
        .into_response(),
    }
}

/// The browser origins whose pages may change things here: the CORS allow-list, and the
/// service's own pages. CORS alone lets a page send a "simple" request (a POST without a body or
/// with a form body) and only hides the answer; this refuses the request itself.
#[derive(Debug, Clone)]
pub struct OriginCheck {
    /// `None`: any origin (`CORS_ORIGINS=*`).
    allowed: Option<Arc<[String]>>,
}

/// The browser origins `CORS_ORIGINS` allows, as browsers write them (lowercase, no trailing
/// `/`); `None` when it allows any (`*`). CORS and the origin check both read it.
pub fn allowed_origins(cors_origins: &[String]) -> Option<Vec<String>> {
    let origins: Vec<&str> = cors_origins.iter().map(|origin| origin.trim()).collect();
    (!origins.contains(&"*")).then(|| {
        origins
            .iter()
            .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| !origin.is_empty())
            .collect()
    })
}

impl OriginCheck {
    pub fn new(cors_origins: &[String]) -> Self {
        OriginCheck {
            allowed: allowed_origins(cors_origins).map(Arc::from),
        }
    }

    fn accepts(&self, origin: &str, request: &Request) -> bool {
        let Some(allowed) = &self.allowed else {
            return true;
        };
        let origin = origin.to_ascii_lowercase();
        allowed.contains(&origin) || same_origin(&origin, request)
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host and port the request was sent to.
fn same_origin(origin: &str, request: &Request) -> bool {
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let addressed = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        });
    addressed.is_some_and(|addressed| addressed.eq_ignore_ascii_case(authority))
}

/// Refuses, with 403, a request that changes things (any method but GET, HEAD and OPTIONS)
/// sent by a page of an origin that is neither allowed nor ours. Clients other than browsers
/// send no `Origin` and are not concerned.
pub async fn check_origin(
    State(check): State<OriginCheck>,
    request: Request,
    next: Next,
) -> Response {
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|value| value.to_str().unwrap_or("?").to_owned());
    match origin {
        Some(origin) if !reads && !check.accepts(&origin, &request) => HttpError(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "a page of origin '{origin}' may not change anything here; add it to CORS_ORIGINS"
            ),
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_recognised() {
        for host in ["localhost", "LocalHost", "127.0.0.1", "127.1.2.3", "[::1]"] {
            assert!(is_loopback_name(host), "{host}");
        }
        for host in [
            "evil.example",
            "10.0.0.1",
            "[::2]",
            "localhost.evil.example",
            "::1",
        ] {
            assert!(!is_loopback_name(host), "{host}");
        }
    }

    #[test]
    fn the_check_applies_on_loopback_or_with_configured_names() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let any = IpAddr::from([0, 0, 0, 0]);
        assert!(HostCheck::new(loopback, &[]).is_some());
        assert!(HostCheck::new(IpAddr::from(Ipv6Addr::LOCALHOST), &[]).is_some());
        assert!(HostCheck::new(any, &[]).is_none());
        let named = HostCheck::new(any, &["cp.example.com".to_owned()]).expect("a check");
        assert!(named.accepts("CP.example.com"));
        assert!(named.accepts("localhost"));
        assert!(!named.accepts("10.0.0.1"));
    }

    #[test]
    fn allowed_hosts_are_names_without_port() {
        assert_eq!(
            host_name(" CP.Example.com ").as_deref(),
            Ok("cp.example.com")
        );
        assert_eq!(host_name("[::1]").as_deref(), Ok("[::1]"));
        for bad in ["cp.example.com:8080", "user@cp.example.com", "", "a b"] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
    }
}
