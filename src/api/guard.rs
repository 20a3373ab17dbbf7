//! Auth at the edge, for REST, SSE, gRPC, grpc-web and reflection alike: resolves the route or
//! RPC to its one permission (`routes::RPC_PERMISSIONS`), authenticates the credential
//! (`authorization: Bearer …` or `x-api-key`), rate-limits the actor, scopes agents to their
//! runs and participant ids, and opens the audit [`Call`] the domain stamps its change with;
//! calls the domain did not record (refusals, no-ops) are recorded here once answered.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::routes::{
    ALIAS_ROUTES, OPS_PERMISSIONS, REFLECTION_PERMISSION, RPC_PERMISSIONS, RPC_ROUTES,
};
use crate::auth::admin::Admin;
use crate::auth::audit::{self, Action, Call};
use crate::auth::{
    Access, Authenticator, Permission, Principal, Throttle, forbidden, not_your_participant,
};
use crate::error::{ApiError, ErrorCode};
use crate::runs::RunService;

/// Everything the guard consults.
pub struct Guard {
    pub auth: Authenticator,
    pub throttle: Throttle,
    /// Audit rows of refusals, per actor (all unauthenticated callers are one): the write
    /// budget again, so a flood of refused calls cannot become a flood of rows.
    pub refusal_rows: Throttle,
    pub admin: Admin,
    pub service: RunService,
    /// Bodies read to find a run id or sender are read up to these.
    pub max_body_bytes: usize,
    pub max_grpc_message_bytes: usize,
}

/// A request's id, as `observe_request` assigned it.
#[derive(Clone)]
pub struct RequestId(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Http,
    Grpc,
    GrpcWeb,
    GrpcWebText,
}

impl Transport {
    fn of(headers: &HeaderMap) -> Transport {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if content_type.starts_with("application/grpc-web-text") {
            Transport::GrpcWebText
        } else if content_type.starts_with("application/grpc-web") {
            Transport::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Transport::Grpc
        } else {
            Transport::Http
        }
    }
}

/// What a route or RPC requires.
#[derive(Debug, Clone, Copy)]
struct Rule {
    rpc: Option<&'static str>,
    permission: Permission,
    action: Option<Action>,
    /// Counted against the write budget (POST, PATCH, DELETE and their RPCs).
    write: bool,
}

struct Rules {
    /// (method, route template) → rule.
    rest: HashMap<(&'static str, &'static str), Rule>,
    /// RPC name → rule (names are unique across our services).
    rpc: HashMap<&'static str, Rule>,
    ops: HashMap<&'static str, Permission>,
    pool: Option<DescriptorPool>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut rpc = HashMap::new();
        for (name, permission, action) in RPC_PERMISSIONS {
            let write = RPC_ROUTES
                .iter()
                .any(|(rpc, method, _)| rpc == name && *method != "GET");
            rpc.insert(
                *name,
                Rule {
                    rpc: Some(name),
                    permission: *permission,
                    action: *action,
                    write,
                },
            );
        }
        let rest = RPC_ROUTES
            .iter()
            .chain(ALIAS_ROUTES)
            .filter_map(|(name, method, path)| Some(((*method, *path), *rpc.get(name)?)))
            .collect();
        let pool = DescriptorPool::decode(super::proto::FILE_DESCRIPTOR_SET)
            .inspect_err(|error| tracing::error!(%error, "our descriptor set is invalid"))
            .ok();
        Rules {
            rest,
            rpc,
            ops: OPS_PERMISSIONS.iter().copied().collect(),
            pool,
        }
    })
}

/// An unknown path needs a reader's credential before it is answered 404.
const UNROUTED: Rule = Rule {
    rpc: None,
    permission: Permission::Read,
    action: None,
    write: false,
};

/// A route the router serves that the table does not list (or a method it does not have):
/// an admin's, so a route added without a permission is closed rather than open.
const UNLISTED: Rule = Rule {
    rpc: None,
    permission: Permission::Admin,
    action: None,
    write: true,
};

/// The transport and rule of a request, decided by the route it matched, never by what its
/// content type claims: a gRPC mount is served by tonic whatever the content type, and a REST
/// route by axum.
fn resolve(request: &Request) -> (Transport, Rule) {
    let rules = rules();
    let path = request.uri().path();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if let Some(template) = template
        && template.ends_with("/{*method}")
    {
        let transport = match Transport::of(request.headers()) {
            Transport::Http => Transport::Grpc,
            grpc => grpc,
        };
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, method) = (parts.next().unwrap_or_default(), parts.next());
        if service.starts_with("grpc.reflection.") {
            return (
                transport,
                Rule {
                    permission: REFLECTION_PERMISSION,
                    ..UNROUTED
                },
            );
        }
        let rule = method
            .and_then(|method| rules.rpc.get(method))
            .copied()
            .unwrap_or(UNLISTED);
        return (transport, rule);
    }
    if let Some(permission) = rules.ops.get(path) {
        let rule = Rule {
            permission: *permission,
            ..UNROUTED
        };
        return (Transport::Http, rule);
    }
    // HEAD is GET without the body: the same rule.
    let method = match *request.method() {
        Method::HEAD => "GET",
        ref method => method.as_str(),
    };
    let rule = match template {
        Some(template) => rules
            .rest
            .get(&(method, template))
            .copied()
            .unwrap_or(UNLISTED),
        None => UNROUTED,
    };
    (Transport::Http, rule)
}

/// The credential a request carries: `authorization: Bearer <credential>` (a bare value is
/// taken too, as the TypeScript control plane does), else `x-api-key`.
fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        let value = value.trim();
        return Some(
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or(value)
                .trim(),
        );
    }
    headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let (transport, rule) = resolve(&request);
    if guard.auth.is_public(rule.permission) {
        return next.run(request).await;
    }
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    // Known before anything is refused, so refusals name what they were about (a gRPC
    // request's run id is in its message, read only once the caller is let in).
    let path_id = path_id(&request);
    let principal = match guard.auth.authenticate(credential(request.headers())).await {
        Ok(principal) => principal,
        Err(error) => {
            let call = Call::new(Principal::unauthenticated(), request_id, rule.action);
            if let Some(id) = path_id {
                call.set_resource_id(id);
            }
            return refuse(&guard, &call, transport, error, None).await;
        }
    };
    let call = Call::new(principal, request_id, rule.action);
    if let Some(id) = &path_id {
        call.set_resource_id(id.clone());
    }
    if call.principal.kind != crate::auth::ActorKind::Anonymous
        && let Err(retry_after) = guard.throttle.check(&call.principal.actor, rule.write)
    {
        let error = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many requests; retry in {} s",
                retry_after.as_secs_f64().ceil()
            ),
        );
        return refuse(&guard, &call, transport, error, Some(retry_after)).await;
    }
    let access = call.principal.access(rule.permission);
    if access == Access::Denied {
        return refuse(&guard, &call, transport, forbidden(rule.permission), None).await;
    }
    // What the body says matters for agents (run and sender) and for audit rows of RPCs (the
    // run id is in the message, not the path).
    let needs_body = match transport {
        Transport::Http => access == Access::AsAgent && rule.permission == Permission::Send,
        _ => access == Access::AsAgent || rule.action.is_some(),
    };
    let (request, fields) = if needs_body {
        match read_fields(&guard, transport, rule, request).await {
            Ok(read) => read,
            Err(error) => return refuse(&guard, &call, transport, error, None).await,
        }
    } else {
        let fields = Fields {
            run_id: path_id,
            from: None,
        };
        (request, fields)
    };
    if let Some(id) = &fields.run_id {
        call.set_resource_id(id.clone());
    }
    if access == Access::AsAgent
        && let Err(error) = agent_may(&guard, &call.principal, rule, &fields).await
    {
        return refuse(&guard, &call, transport, error, None).await;
    }
    if rule.action.is_none() {
        return next.run(request).await;
    }
    let response = audit::scope(call.clone(), next.run(request)).await;
    let (refused, error_code) = outcome(&response);
    if let Some(entry) = call.unrecorded(refused, error_code.as_deref()) {
        record(&guard, entry).await;
    }
    response
}

/// The run an agent acts on must be one it takes part in, and it sends only as itself.
async fn agent_may(
    guard: &Guard,
    principal: &Principal,
    rule: Rule,
    fields: &Fields,
) -> Result<(), ApiError> {
    let Some(run_id) = &fields.run_id else {
        return Err(forbidden(rule.permission));
    };
    let members = guard.service.members(run_id).await?;
    if !members
        .iter()
        .any(|member| principal.is_participant(member))
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this credential takes no part in run {run_id}"),
        ));
    }
    if rule.permission == Permission::Send {
        match &fields.from {
            Some(from) if principal.is_participant(from) => {}
            Some(from) => return Err(not_your_participant(from)),
            // The domain reports the missing field; an agent cannot send as nobody either.
            None => return Err(not_your_participant("")),
        }
    }
    Ok(())
}

/// What the guard reads out of a request.
struct Fields {
    run_id: Option<String>,
    from: Option<String>,
}

/// The `{id}` of a `/runs/{id}/…` route, the `{keyId}` of `/keys/{keyId}`, or the
/// `{policyId}` of `/runtime/policies/{policyId}`, or the `{webhookId}` of `/webhooks/{webhookId}`.
fn path_id(request: &Request) -> Option<String> {
    let template = request.extensions().get::<MatchedPath>()?.as_str();
    let position = template
        .split('/')
        .position(|segment| matches!(segment, "{id}" | "{keyId}" | "{policyId}" | "{webhookId}"))?;
    request
        .uri()
        .path()
        .split('/')
        .nth(position)
        .map(str::to_owned)
}

/// Reads the body (up to the transport's limit), takes the run id and sender from it, and puts
/// it back for the handler.
async fn read_fields(
    guard: &Guard,
    transport: Transport,
    rule: Rule,
    request: Request,
) -> Result<(Request, Fields), ApiError> {
    let limit = match transport {
        Transport::Http => guard.max_body_bytes,
        // A frame's five header bytes, and base64's third for grpc-web-text.
        _ => guard
            .max_grpc_message_bytes
            .saturating_add(5)
            .saturating_mul(2),
    };
    let run_id = path_id(&request);
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body exceeds {limit} bytes"),
        )
    })?;
    let fields = match transport {
        Transport::Http => {
            let from = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|body| body.get("from")?.as_str().map(str::to_owned));
            Fields { run_id, from }
        }
        _ => grpc_fields(transport, rule, &bytes),
    };
    Ok((Request::from_parts(parts, Body::from(bytes)), fields))
}

/// `run_id` (or a key's `id`) and `from` of a unary gRPC request message.
fn grpc_fields(transport: Transport, rule: Rule, body: &Bytes) -> Fields {
    let none = Fields {
        run_id: None,
        from: None,
    };
    let Some(descriptor) = rule.rpc.and_then(input_descriptor) else {
        return none;
    };
    let decoded;
    let framed: &[u8] = if transport == Transport::GrpcWebText {
        let text: Vec<u8> = body
            .iter()
            .copied()
            .filter(|byte| !byte.is_ascii_whitespace())
            .collect();
        match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(bytes) => {
                decoded = bytes;
                &decoded
            }
            Err(_) => return none,
        }
    } else {
        body
    };
    // One uncompressed frame: flag byte, big-endian length, message.
    let Some((&0, rest)) = framed.split_first() else {
        return none;
    };
    let Some((length, message)) = rest.split_first_chunk::<4>() else {
        return none;
    };
    let Some(message) = message.get(..u32::from_be_bytes(*length) as usize) else {
        return none;
    };
    let Ok(message) = DynamicMessage::decode(descriptor, message) else {
        return none;
    };
    let text = |name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|value| value.as_str().map(str::to_owned))
            .filter(|text| !text.is_empty())
    };
    Fields {
        run_id: text("run_id").or_else(|| text("key_id")),
        from: text("from"),
    }
}

fn input_descriptor(rpc: &str) -> Option<MessageDescriptor> {
    let pool = rules().pool.as_ref()?;
    pool.services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .find(|method| method.name() == rpc)
        .map(|method| method.input())
}

/// Whether an answer refused the call, and its error code.
fn outcome(response: &Response) -> (bool, Option<String>) {
    let headers = response.headers();
    let code = headers
        .get("x-error-code")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let grpc_failed = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() != b"0");
    (
        code.is_some() || grpc_failed || !response.status().is_success(),
        code,
    )
}

async fn record(guard: &Guard, entry: crate::domain::audit::AuditEntry) {
    if let Err(error) = guard.admin.record(entry).await {
        tracing::error!(%error, "an audit row could not be written");
    }
}

/// Answers a refusal in the request's transport, and audits it when the call is audited.
async fn refuse(
    guard: &Guard,
    call: &Call,
    transport: Transport,
    error: ApiError,
    retry_after: Option<Duration>,
) -> Response {
    if let Some(entry) = call.unrecorded(true, Some(error.code.as_str())) {
        // Not a name any actor can have.
        let key = match call.principal.kind {
            crate::auth::ActorKind::Unauthenticated => "\0unauthenticated",
            _ => call.principal.actor.as_str(),
        };
        if guard.refusal_rows.check(key, true).is_ok() {
            record(guard, entry).await;
        }
    }
    let mut response = match transport {
        Transport::Http => super::http::HttpError(error).into_response(),
        _ => {
            let mut response = super::grpc::status(error)
                .into_http::<Body>()
                .map(Body::new)
                .into_response();
            let content_type = match transport {
                Transport::GrpcWeb => Some("application/grpc-web+proto"),
                Transport::GrpcWebText => Some("application/grpc-web-text+proto"),
                _ => None,
            };
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            }
            response
        }
    };
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up: a client that waits this long is let in.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}
