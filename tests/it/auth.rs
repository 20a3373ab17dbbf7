//! Auth on every route and RPC: a matrix derived from the route table (REST, SSE, gRPC,
//! grpc-web) × credentials, agents scoped to their runs and participant ids, JWTs (HS256, and
//! ES256 from a JWKS served here, rotated by `kid`), rate limits, the audit log, and the posture
//! rule at start.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use macp_control_plane::api::proto;
use macp_control_plane::api::routes::{OPS_ROUTES, RPC_PERMISSIONS, RPC_ROUTES};
use macp_control_plane::auth::{AuthArgs, Permission};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value as ReflectValue};
use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend, TestApp};

const JWT_SECRET: &str = "a-test-secret-of-at-least-32-characters!";
const VIEWER: &str = "viewer-key-0123456789";
const OPERATOR: &str = "operator-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";
const AGENT: &str = "risk-agent-key-0123456789";

/// The keys file of these tests: one key per role, the agent speaking as `risk-agent`.
fn keys_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("keys.json");
    let keys = json!([
        {"actor": "vera-viewer", "key": VIEWER, "roles": ["viewer"]},
        {"actor": "otto-operator", "key": OPERATOR, "roles": ["operator"]},
        {"actor": "ada-admin", "key": ADMIN, "roles": ["admin"]},
        {"actor": "risk-bot", "key": AGENT, "roles": ["agent"], "participants": ["risk-agent"]},
    ]);
    std::fs::write(&path, keys.to_string()).expect("keys file");
    path
}

fn auth_args(dir: &tempfile::TempDir) -> AuthArgs {
    AuthArgs {
        auth_keys_file: Some(keys_file(dir)),
        auth_jwt_secret: Some(JWT_SECRET.to_owned().into()),
        throttle_limit: 0,
        throttle_read_limit: 0,
        ..AuthArgs::default()
    }
}

/// A served app with `keys_file`'s keys and HS256 JWTs, no rate limits; the keys file lives as
/// long as the returned directory.
async fn start_with_keys() -> Option<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("dir");
    let options = support::Options {
        auth: auth_args(&dir),
        ..Default::default()
    };
    let app = support::start_with(Backend::Sqlite, options).await?;
    Some((app, dir))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}

/// A request with only an RPC's declared permission at stake: the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    Nobody,
    UnknownKey,
    ExpiredJwt,
    ForgedJwt,
    Viewer,
    Operator,
    Admin,
    Agent,
}

const CALLERS: [Caller; 8] = [
    Caller::Nobody,
    Caller::UnknownKey,
    Caller::ExpiredJwt,
    Caller::ForgedJwt,
    Caller::Viewer,
    Caller::Operator,
    Caller::Admin,
    Caller::Agent,
];

impl Caller {
    fn credential(self) -> Option<String> {
        let now = unix_now();
        match self {
            Caller::Nobody => None,
            Caller::UnknownKey => Some("not-a-key-anyone-issued".to_owned()),
            Caller::ExpiredJwt => Some(hs256(
                JWT_SECRET,
                &json!({"sub": "late", "roles": ["admin"], "exp": now - 3600}),
            )),
            Caller::ForgedJwt => Some(hs256(
                "another-secret-of-at-least-32-characters",
                &json!({"sub": "forger", "roles": ["admin"], "exp": now + 3600}),
            )),
            Caller::Viewer => Some(VIEWER.to_owned()),
            Caller::Operator => Some(OPERATOR.to_owned()),
            Caller::Admin => Some(ADMIN.to_owned()),
            Caller::Agent => Some(AGENT.to_owned()),
        }
    }

    /// What the role table says, written out here rather than read from the service.
    fn expected(self, permission: Permission) -> Expected {
        use Permission::*;
        let allowed = match self {
            Caller::Nobody | Caller::UnknownKey | Caller::ExpiredJwt | Caller::ForgedJwt => {
                return if matches!(permission, Public | Metrics | Docs) {
                    Expected::Allowed
                } else {
                    Expected::Unauthenticated
                };
            }
            Caller::Viewer => matches!(permission, Public | Metrics | Docs | Read | ReadRun),
            Caller::Operator => !matches!(permission, Admin),
            Caller::Admin => true,
            // In a run it takes part in, as its own participant id.
            Caller::Agent => matches!(permission, Public | Metrics | Docs | ReadRun | Send),
        };
        if allowed {
            Expected::Allowed
        } else {
            Expected::Forbidden
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expected {
    Allowed,
    Unauthenticated,
    Forbidden,
}

/// An idle run with `risk-agent` among its participants, settled (bound and observed).
async fn idle_run(app: &TestApp) -> String {
    let mut request = requests::scripted_decision();
    request["kickoff"] = json!([]);
    let run_id = start_as(app, ADMIN, &request).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    run_id
}

async fn start_as(app: &TestApp, key: &str, request: &Value) -> String {
    let response = app
        .http
        .post(format!("{}/runs", app.base))
        .bearer_auth(key)
        .json(request)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201, "run starts");
    let body: Value = response.json().await.expect("json");
    body["runId"].as_str().expect("run id").to_owned()
}

fn fill_path(path: &str, run_id: &str, missing_id: &str) -> String {
    path.replace("{id}", run_id)
        .replace("{pack}", "fraud")
        .replace("{scenario}", "high-value-new-device")
        .replace("{version}", "1.0.0")
        .replace("{ref}", "fraud-agent")
        .replace("{keyId}", missing_id)
        .replace("{webhookId}", missing_id)
}

/// What a REST answer says about auth: `None` when it was let through.
fn rest_refusal(status: u16, error_code: Option<&str>) -> Option<Expected> {
    match (status, error_code) {
        (401, Some("UNAUTHENTICATED")) => Some(Expected::Unauthenticated),
        (403, Some("FORBIDDEN" | "NOT_YOUR_PARTICIPANT")) => Some(Expected::Forbidden),
        (401 | 403, code) => panic!("a 401/403 with errorCode {code:?}"),
        _ => None,
    }
}

fn grpc_refusal(grpc_status: Option<&str>, error_code: Option<&str>) -> Option<Expected> {
    match (grpc_status, error_code) {
        (Some("16"), Some("UNAUTHENTICATED")) => Some(Expected::Unauthenticated),
        (Some("7"), Some("FORBIDDEN" | "NOT_YOUR_PARTICIPANT")) => Some(Expected::Forbidden),
        (Some("16" | "7"), code) => panic!("grpc-status 16/7 with x-error-code {code:?}"),
        _ => None,
    }
}

/// A unary gRPC frame of `rpc`'s request with the fields the guard reads filled in.
fn grpc_frame(
    pool: &DescriptorPool,
    rpc: &str,
    run_id: &str,
    missing_id: &str,
) -> (String, Vec<u8>) {
    let method = pool
        .services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .find(|method| method.name() == rpc)
        .expect("the RPC is in the descriptor set");
    let input = method.input();
    let mut message = DynamicMessage::new(input.clone());
    for (field, value) in [
        ("run_id", run_id),
        ("from", "risk-agent"),
        ("key_id", missing_id),
        ("agent_ref", "fraud-agent"),
    ] {
        if input.get_field_by_name(field).is_some() {
            message.set_field_by_name(field, ReflectValue::String(value.to_owned()));
        }
    }
    if input.get_field_by_name("timeout_ms").is_some() {
        message.set_field_by_name("timeout_ms", ReflectValue::U32(1));
    }
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    (
        format!("/{}/{}", method.parent_service().full_name(), method.name()),
        frame,
    )
}

/// Every REST route and every RPC (gRPC and grpc-web) × every kind of caller gets what the
/// route table declares: 401 for no or a bad credential, 403 for a role without the
/// permission, through otherwise. Rows come from `RPC_PERMISSIONS`, not a list kept here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_rpc_answers_each_caller_as_declared() {
    let Some((app, _keys)) = start_with_keys().await else {
        return;
    };
    let run_id = idle_run(&app).await;
    // Calls that would end the run or act on things name ones that do not exist.
    let missing_id = uuid::Uuid::new_v4().to_string();
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("pool");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut outcomes: BTreeMap<Expected, usize> = BTreeMap::new();
    let mut checked = 0;
    for (rpc, permission, _) in RPC_PERMISSIONS {
        let (_, method, path) = RPC_ROUTES
            .iter()
            .find(|(name, _, _)| name == rpc)
            .expect("every declared RPC has a route");
        // CancelRun and RevokeApiKey name nothing that exists: let through, they answer 404.
        let target = if *rpc == "CancelRun" {
            &missing_id
        } else {
            &run_id
        };
        // AwaitRun on the idle run would wait out its default 30 s for each caller.
        let query = if *rpc == "AwaitRun" {
            "?timeoutMs=1"
        } else {
            ""
        };
        let url = format!(
            "{}{}{query}",
            app.base,
            fill_path(path, target, &missing_id)
        );
        let (grpc_path, frame) = grpc_frame(&pool, rpc, target, &missing_id);
        for caller in CALLERS {
            let expected = caller.expected(*permission);
            // REST (SSE for the stream routes).
            let mut request = match *method {
                "GET" => app.http.get(&url),
                "DELETE" => app.http.delete(&url),
                "PATCH" => app.http.patch(&url).json(&json!({"from": "risk-agent"})),
                _ => app.http.post(&url).json(&json!({"from": "risk-agent"})),
            };
            if let Some(credential) = caller.credential() {
                request = request.bearer_auth(credential);
            }
            let response = request.send().await.expect("request");
            let code = response
                .headers()
                .get("x-error-code")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let got = rest_refusal(response.status().as_u16(), code.as_deref())
                .unwrap_or(Expected::Allowed);
            assert!(
                response.status().as_u16() < 500,
                "{method} {path} as {caller:?}: {} {code:?}",
                response.status()
            );
            assert_eq!(
                got,
                expected,
                "{method} {path} as {caller:?}: {} {code:?}",
                response.status()
            );
            drop(response);
            // gRPC over HTTP/2 and grpc-web over HTTP/1.1.
            let text = base64::engine::general_purpose::STANDARD.encode(&frame);
            for (client, content_type, body) in [
                (&h2, "application/grpc", frame.clone()),
                (&app.http, "application/grpc-web+proto", frame.clone()),
                (&app.http, "application/grpc-web-text", text.into_bytes()),
            ] {
                let mut request = client
                    .post(format!("{}{grpc_path}", app.base))
                    .header("content-type", content_type)
                    .header("te", "trailers")
                    .body(body);
                if let Some(credential) = caller.credential() {
                    request = request.bearer_auth(credential);
                }
                let response = request.send().await.expect("request");
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned)
                };
                let (status, code) = (header("grpc-status"), header("x-error-code"));
                let got =
                    grpc_refusal(status.as_deref(), code.as_deref()).unwrap_or(Expected::Allowed);
                assert_eq!(
                    got, expected,
                    "{grpc_path} ({content_type}) as {caller:?}: grpc-status {status:?}, {code:?}"
                );
            }
            *outcomes.entry(expected).or_default() += 1;
            checked += 1;
        }
    }
    assert_eq!(checked, RPC_PERMISSIONS.len() * CALLERS.len());
    // Each outcome occurs: the matrix is not all one answer.
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");

    // Operational routes: health always public; metrics and docs public by default.
    for (method, path) in OPS_ROUTES {
        assert_eq!(*method, "GET");
        let status = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("request")
            .status();
        assert!(status.is_success(), "{path} without a credential: {status}");
    }
    // Anything unrouted needs a credential first, then is not found.
    let (status, _) = (
        app.http
            .get(format!("{}/no/such/route", app.base))
            .send()
            .await
            .expect("request")
            .status(),
        (),
    );
    assert_eq!(status, 401);
    let status = app
        .http
        .get(format!("{}/no/such/route", app.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 404);

    // The rule is the route's, whatever the content type claims: a gRPC path without gRPC's
    // content type is still that RPC, and a REST path with it is still that route.
    let (create_key, frame) = grpc_frame(&pool, "CreateApiKey", &run_id, &missing_id);
    for content_type in [
        None,
        Some("application/octet-stream"),
        Some("Application/GRPC"),
    ] {
        let mut request = h2
            .post(format!("{}{create_key}", app.base))
            .bearer_auth(VIEWER)
            .header("te", "trailers")
            .body(frame.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"7"[..]),
            "a viewer's CreateApiKey with content type {content_type:?}"
        );
    }
    let as_grpc = |method: reqwest::Method, path: &str| {
        app.http
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(VIEWER)
            .header("content-type", "application/grpc")
            .send()
    };
    for (method, path) in [
        (reqwest::Method::GET, "/audit".to_owned()),
        (reqwest::Method::GET, "/keys".to_owned()),
        (reqwest::Method::DELETE, format!("/keys/{missing_id}")),
    ] {
        let response = as_grpc(method.clone(), &path).await.expect("request");
        assert_eq!(
            response.status(),
            403,
            "{method} {path} with a gRPC content type"
        );
    }
    // HEAD is GET's rule; the alias is its RPC's; a method a route lacks is an admin's.
    let head = |key: &str, path: String| {
        app.http
            .head(format!("{}{path}", app.base))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(
        head(VIEWER, "/audit".to_owned())
            .await
            .expect("request")
            .status(),
        403
    );
    assert_eq!(
        head(AGENT, format!("/runs/{run_id}"))
            .await
            .expect("request")
            .status(),
        200
    );
    let alias = |key: Option<&str>| {
        let mut request = app
            .http
            .post(format!("{}/examples/run", app.base))
            .json(&json!({}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(alias(None).await.expect("request").status(), 401);
    assert_eq!(alias(Some(VIEWER)).await.expect("request").status(), 403);
    let put = |key: &str| {
        app.http
            .put(format!("{}/runs", app.base))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(put(OPERATOR).await.expect("request").status(), 403);
    assert_eq!(put(ADMIN).await.expect("request").status(), 405);

    // Reflection: a reader's, refused without a credential.
    let reflection = |credential: Option<&str>| {
        let mut request = h2
            .post(format!(
                "{}/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                app.base
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(reflection_list_services());
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        request
    };
    let refused = reflection(None).send().await.expect("request");
    assert_eq!(
        refused.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"16"[..])
    );
    let allowed = reflection(Some(VIEWER)).send().await.expect("request");
    assert_eq!(allowed.status(), 200);
    assert!(allowed.headers().get("grpc-status").is_none());
    let body = allowed.bytes().await.expect("body");
    assert!(
        String::from_utf8_lossy(&body).contains("macp.control_plane.v1.ControlPlane"),
        "reflection lists our services"
    );
    app.stop().await;
}

/// A reflection `list_services` request frame.
fn reflection_list_services() -> Vec<u8> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let encoded = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

/// Every RPC of the descriptor set declares exactly one permission.
#[test]
fn every_rpc_declares_exactly_one_permission() {
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("pool");
    for service in pool.services() {
        for method in service.methods() {
            let declared = RPC_PERMISSIONS
                .iter()
                .filter(|(rpc, _, _)| *rpc == method.name())
                .count();
            assert_eq!(
                declared,
                1,
                "{} declares {declared} permissions",
                method.name()
            );
        }
    }
    let methods = pool
        .services()
        .map(|service| service.methods().len())
        .sum::<usize>();
    assert_eq!(
        methods,
        RPC_PERMISSIONS.len(),
        "permissions for RPCs that do not exist"
    );
}

/// An agent key sends as its own participant and no other, and reads only its runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_send_only_as_themselves_and_read_only_their_runs() {
    let Some((app, _keys)) = start_with_keys().await else {
        return;
    };
    let run_id = idle_run(&app).await;
    let signal =
        |from: &str| json!({"from": from, "signalType": "suspicious_device", "confidence": 0.7});
    let post = |path: String, body: Value| {
        app.http
            .post(format!("{}{path}", app.base))
            .bearer_auth(AGENT)
            .json(&body)
            .send()
    };
    let own = post(format!("/runs/{run_id}/signal"), signal("risk-agent"))
        .await
        .expect("request");
    assert!(own.status().is_success(), "as itself: {}", own.status());
    let other = post(format!("/runs/{run_id}/signal"), signal("fraud-agent"))
        .await
        .expect("request");
    assert_eq!(other.status(), 403);
    let body: Value = other.json().await.expect("json");
    assert_eq!(body["errorCode"], "NOT_YOUR_PARTICIPANT", "{body}");

    // The same over gRPC.
    let mut client = app.grpc().await;
    let mut request = tonic::Request::new(proto::SendRunSignalRequest {
        run_id: run_id.clone(),
        from: "fraud-agent".to_owned(),
        signal_type: "suspicious_device".to_owned(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {AGENT}").parse().expect("metadata"),
    );
    let status = client.send_run_signal(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status
            .metadata()
            .get("x-error-code")
            .map(|v| v.to_str().ok()),
        Some(Some("NOT_YOUR_PARTICIPANT"))
    );

    // The agent reads its run (and its live stream) but not a run it takes no part in.
    let get = |path: String| {
        app.http
            .get(format!("{}{path}", app.base))
            .bearer_auth(AGENT)
            .send()
    };
    assert_eq!(
        get(format!("/runs/{run_id}"))
            .await
            .expect("request")
            .status(),
        200
    );
    let mut foreign = requests::scripted_decision();
    foreign["kickoff"] = json!([]);
    foreign["session"]["participants"] = json!([
        {"id": "fraud-agent", "role": "fraud"},
        {"id": "growth-agent", "role": "growth"},
    ]);
    let foreign_id = start_as(&app, OPERATOR, &foreign).await;
    for path in [
        format!("/runs/{foreign_id}"),
        format!("/runs/{foreign_id}/events"),
        format!("/runs/{foreign_id}/stream"),
    ] {
        let response = get(path.clone()).await.expect("request");
        assert_eq!(response.status(), 403, "{path}");
    }
    let refused = post(format!("/runs/{foreign_id}/signal"), signal("risk-agent"))
        .await
        .expect("request");
    assert_eq!(refused.status(), 403);
    // Nor list runs at all.
    assert_eq!(
        get("/runs".to_owned()).await.expect("request").status(),
        403
    );
    app.stop().await;
}

/// HS256 tokens: `sub` is the actor (and the run's `createdBy`), roles from the claim; expired,
/// not yet valid, wrong issuer or audience are all the same 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_name_the_actor_and_are_checked() {
    let options = support::Options {
        auth: AuthArgs {
            auth_jwt_secret: Some(JWT_SECRET.to_owned().into()),
            auth_jwt_issuer: Some("https://issuer.test".to_owned()),
            auth_jwt_audience: Some("macp".to_owned()),
            throttle_limit: 0,
            throttle_read_limit: 0,
            ..AuthArgs::default()
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let now = unix_now();
    let claims = |extra: Value| {
        let mut claims = json!({
            "sub": "svc-billing", "roles": ["operator"], "iss": "https://issuer.test",
            "aud": "macp", "exp": now + 600,
        });
        for (key, value) in extra.as_object().expect("object") {
            claims[key] = value.clone();
        }
        claims
    };
    let good = hs256(JWT_SECRET, &claims(json!({})));
    let run_id = start_as(&app, &good, &requests::seed_example()).await;
    let (_, run) = get_as(&app, &good, &format!("/runs/{run_id}")).await;
    assert_eq!(run["createdBy"], "svc-billing");
    assert_eq!(
        run["metadata"]["requester"]["actorId"],
        requests::seed_example()["execution"]["requester"]["actorId"],
        "requester stays what the request said"
    );

    let mut messages = Vec::new();
    for bad in [
        claims(json!({"exp": now - 3600})),
        claims(json!({"nbf": now + 3600})),
        claims(json!({"iss": "https://elsewhere.test"})),
        claims(json!({"aud": "someone-else"})),
        claims(json!({"roles": ["root"]})),
    ] {
        let (status, body) = get_as(&app, &hs256(JWT_SECRET, &bad), "/runs").await;
        assert_eq!(status, 401, "{bad}");
        messages.push(body["message"].clone());
    }
    messages.dedup();
    assert_eq!(
        messages.len(),
        1,
        "one message for every refusal: {messages:?}"
    );
    app.stop().await;
}

async fn get_as(app: &TestApp, credential: &str, path: &str) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}{path}", app.base))
        .bearer_auth(credential)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An ES256 key pair: the signing key and its public JWK under `kid`.
fn es256_key(kid: &str) -> (EncodingKey, Value) {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key pair");
    // Uncompressed point: 0x04, x, y.
    let point = pair.public_key().as_ref();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    });
    (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

fn es256(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("a token")
}

/// ES256 tokens verified against a JWKS this test serves on loopback; when the issuer rotates
/// to a new `kid`, the service fetches the set again and the retired key stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_jwks_keys_rotate_by_kid() {
    let (first_key, first_jwk) = es256_key("k1");
    let (second_key, second_jwk) = es256_key("k2");
    let served = Arc::new(Mutex::new(json!({"keys": [first_jwk]})));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let jwks = {
        let (served, fetches) = (served.clone(), fetches.clone());
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (served, fetches) = (served.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(served.lock().expect("lock").clone())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let jwks_url = format!(
        "http://{}/jwks.json",
        listener.local_addr().expect("address")
    );
    let jwks_server = tokio::spawn(async move { axum::serve(listener, jwks).await });

    let options = support::Options {
        auth: AuthArgs {
            auth_jwt_jwks_url: Some(jwks_url),
            auth_jwt_jwks_min_refresh_ms: 0,
            throttle_limit: 0,
            throttle_read_limit: 0,
            ..AuthArgs::default()
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let claims = |sub: &str| json!({"sub": sub, "roles": ["viewer"], "exp": unix_now() + 600});
    let (status, _) = get_as(&app, &es256(&first_key, "k1", &claims("a")), "/runs").await;
    assert_eq!(status, 200, "a token signed by the served key");
    let (status, _) = get_as(&app, &es256(&second_key, "k1", &claims("a")), "/runs").await;
    assert_eq!(
        status, 401,
        "a token signed by another key under the same kid"
    );

    // Rotation: the issuer now serves k2 only.
    *served.lock().expect("lock") = json!({"keys": [second_jwk]});
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    let (status, _) = get_as(&app, &es256(&second_key, "k2", &claims("b")), "/runs").await;
    assert_eq!(status, 200, "the new kid is fetched");
    assert!(fetches.load(std::sync::atomic::Ordering::SeqCst) > before);
    let (status, _) = get_as(&app, &es256(&first_key, "k1", &claims("c")), "/runs").await;
    assert_eq!(status, 401, "the retired key no longer verifies new tokens");
    app.stop().await;
    jwks_server.abort();
}

/// Past the write budget an actor gets 429 with Retry-After (gRPC: RESOURCE_EXHAUSTED), reads
/// and other actors are unaffected, and the budget is back after the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_limit_get_429_until_the_window_passes() {
    let dir = tempfile::tempdir().expect("dir");
    let options = support::Options {
        auth: AuthArgs {
            // One write back every 3 s: the refusals below come well within that.
            throttle_limit: 3,
            throttle_read_limit: 0,
            throttle_ttl_ms: 9_000,
            ..auth_args(&dir)
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let validate = |key: &'static str| {
        app.http
            .post(format!("{}/runs/validate", app.base))
            .bearer_auth(key)
            .json(&requests::seed_example())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(validate(OPERATOR).await.expect("request").status(), 200);
    }
    let limited = validate(OPERATOR).await.expect("request");
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["errorCode"], "RATE_LIMITED");
    // Over gRPC too.
    let mut client = app.grpc().await;
    let mut request = tonic::Request::new(proto::ValidateRunRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {OPERATOR}").parse().expect("metadata"),
    );
    let status = client.validate_run(request).await.expect_err("limited");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    // Reads have their own budget; other actors their own.
    assert_eq!(get_as(&app, OPERATOR, "/runs").await.0, 200);
    assert_eq!(validate(ADMIN).await.expect("request").status(), 200);
    // The window is time itself: wait it out, as a client told Retry-After would.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(validate(OPERATOR).await.expect("request").status(), 200);
    app.stop().await;
}

/// A scripted session leaves one audit row per mutating call, with the right actor, in the
/// order made; refused calls are rows too; `GET /audit` filters work and only admins read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_every_mutating_call_and_every_refusal() {
    let Some((app, _keys)) = start_with_keys().await else {
        return;
    };
    let send =
        |method: reqwest::Method, key: Option<&'static str>, path: String, body: Option<Value>| {
            let mut request = app.http.request(method, format!("{}{path}", app.base));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            request.send()
        };
    use reqwest::Method;
    let run_id = idle_run(&app).await; // run.start by ada-admin
    // (method, key, path, body, expected status)
    type Step = (Method, Option<&'static str>, String, Option<Value>, u16);
    let script: Vec<Step> = vec![
        (
            Method::POST,
            Some(AGENT),
            format!("/runs/{run_id}/signal"),
            Some(json!({"from": "risk-agent", "signalType": "suspicious_device"})),
            201,
        ),
        (
            Method::POST,
            Some(OPERATOR),
            format!("/runs/{run_id}/context"),
            Some(json!({"from": "coordinator", "context": {"amount": 2400}})),
            201,
        ),
        (
            Method::POST,
            Some(OPERATOR),
            format!("/runs/{run_id}/artifacts"),
            Some(json!({"kind": "json", "label": "notes", "inline": {"a": 1}})),
            201,
        ),
        // Refused: a viewer may not cancel, nobody unauthenticated may either.
        (
            Method::POST,
            Some(VIEWER),
            format!("/runs/{run_id}/cancel"),
            None,
            403,
        ),
        (
            Method::POST,
            None,
            format!("/runs/{run_id}/cancel"),
            None,
            401,
        ),
        (
            Method::POST,
            Some(OPERATOR),
            format!("/runs/{run_id}/cancel"),
            None,
            200,
        ),
        (
            Method::POST,
            Some(ADMIN),
            "/keys".to_owned(),
            Some(json!({"actor": "ci", "roles": ["viewer"]})),
            201,
        ),
    ];
    for (method, key, path, body, status) in script {
        let response = send(method.clone(), key, path.clone(), body)
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
    }
    let (_, keys) = get_as(&app, ADMIN, "/keys").await;
    let key_id = keys["data"][0]["id"]
        .as_str()
        .expect("a stored key")
        .to_owned();
    assert_eq!(
        send(Method::DELETE, Some(ADMIN), format!("/keys/{key_id}"), None)
            .await
            .expect("request")
            .status(),
        200
    );
    // Revoking a key that does not exist changes nothing and is recorded as refused.
    let unknown_key = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        send(
            Method::DELETE,
            Some(ADMIN),
            format!("/keys/{unknown_key}"),
            None
        )
        .await
        .expect("request")
        .status(),
        404
    );
    // Reads are not audited.
    assert_eq!(
        get_as(&app, VIEWER, &format!("/runs/{run_id}")).await.0,
        200
    );

    let (status, page) = get_as(&app, ADMIN, "/audit?limit=200").await;
    assert_eq!(status, 200);
    let rows: Vec<(String, String, String, Option<String>)> = page["data"]
        .as_array()
        .expect("rows")
        .iter()
        .rev() // oldest first
        .map(|row| {
            (
                row["action"].as_str().unwrap_or_default().to_owned(),
                row["actor"].as_str().unwrap_or_default().to_owned(),
                row["outcome"].as_str().unwrap_or_default().to_owned(),
                row["errorCode"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let row = |action: &str, actor: &str, outcome: &str, code: Option<&str>| {
        (
            action.to_owned(),
            actor.to_owned(),
            outcome.to_owned(),
            code.map(str::to_owned),
        )
    };
    assert_eq!(
        rows,
        vec![
            row("run.start", "ada-admin", "ok", None),
            row("run.signal", "risk-bot", "ok", None),
            row("run.context", "otto-operator", "ok", None),
            row("run.artifact", "otto-operator", "ok", None),
            row("run.cancel", "vera-viewer", "refused", Some("FORBIDDEN")),
            row(
                "run.cancel",
                "unauthenticated",
                "refused",
                Some("UNAUTHENTICATED")
            ),
            row("run.cancel", "otto-operator", "ok", None),
            row("key.create", "ada-admin", "ok", None),
            row("key.revoke", "ada-admin", "ok", None),
            row("key.revoke", "ada-admin", "refused", Some("NOT_FOUND")),
        ]
    );
    assert_eq!(page["total"], 10);
    for entry in page["data"].as_array().expect("rows") {
        assert!(
            entry["requestId"].as_str().is_some_and(|id| !id.is_empty()),
            "{entry}"
        );
        if entry["resource"] == "run" {
            assert_eq!(entry["resourceId"], run_id.as_str(), "{entry}");
        }
    }
    let (_, run) = get_as(&app, ADMIN, &format!("/runs/{run_id}")).await;
    assert_eq!(run["createdBy"], "ada-admin");

    // Filters.
    let count = |query: String| {
        let app = &app;
        async move {
            let (status, page) = get_as(app, ADMIN, &format!("/audit?{query}")).await;
            assert_eq!(status, 200, "{query}: {page}");
            (
                page["data"].as_array().map_or(0, Vec::len),
                page["total"].as_u64().unwrap_or(0),
            )
        }
    };
    assert_eq!(count("action=run.cancel".to_owned()).await, (3, 3));
    assert_eq!(count("actor=otto-operator".to_owned()).await, (3, 3));
    assert_eq!(
        count(format!("resourceId={run_id}&resource=run")).await,
        (7, 7)
    );
    assert_eq!(count("limit=2&offset=1".to_owned()).await, (2, 10));
    assert_eq!(count(format!("resourceId={unknown_key}")).await, (1, 1));
    let future = "2999-01-01T00:00:00Z";
    assert_eq!(count(format!("createdAfter={future}")).await, (0, 0));
    assert_eq!(count(format!("createdBefore={future}")).await, (10, 10));
    let (status, body) = get_as(&app, ADMIN, "/audit?limit=0").await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    // The same rows over gRPC, and only for admins.
    let mut client = app.grpc().await;
    let mut request = tonic::Request::new(proto::ListAuditRequest {
        action: Some("run.cancel".to_owned()),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("metadata"),
    );
    let listed = client
        .list_audit(request)
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(listed.total, 3);
    assert_eq!(get_as(&app, OPERATOR, "/audit").await.0, 403);
    app.stop().await;
}

/// With no credentials configured the service serves loopback only: it says so at start, and
/// refuses to start on any other address unless AUTH_DISABLED=true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_only_loopback_is_served() {
    let dir = tempfile::tempdir().expect("dir");
    let serve = |host: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"));
        command
            .args(["serve", "--host", host, "--port", "0"])
            .env("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()),
            )
            .env("PACKS_DIR", dir.path())
            .env("LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars() {
            if name.starts_with("AUTH_") || name == "MACP_CONFIG" {
                command.env_remove(name);
            }
        }
        command
    };
    let output = tokio::time::timeout(Duration::from_secs(60), serve("0.0.0.0").output())
        .await
        .expect("exits by itself")
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0") && stderr.contains("AUTH_DISABLED=true"),
        "{stderr}"
    );

    // On loopback it starts, with one warning line saying auth is off.
    use tokio::io::AsyncBufReadExt as _;
    let mut child = serve("127.0.0.1").spawn().expect("spawns");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let warning = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            if line.contains("authentication is off") {
                return line;
            }
        }
        panic!("stderr ended without the warning");
    })
    .await
    .expect("the warning within 60 s");
    assert!(warning.contains("WARN"), "{warning}");
    child.start_kill().expect("stops the child it started");
    child.wait().await.expect("waits");
}

/// `keys create` prints a key once; a service on that database then requires credentials and
/// takes it; `keys list` never shows it; `keys revoke` ends it. Each change is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_with_the_cli_turn_auth_on_and_can_be_revoked() {
    let dir = tempfile::tempdir().expect("dir");
    let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
    let keys = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"));
        command
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &database_url)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command.output()
    };
    let created = keys(&["create", "--actor", "ops-team", "--role", "operator"])
        .await
        .expect("runs");
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(key.starts_with("macp_") && key.len() > 40, "{key}");
    let bad = keys(&["create", "--actor", "x", "--role", "root"])
        .await
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role 'root'"));

    let listed = keys(&["list", "--json"]).await.expect("runs");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    let id = listed["data"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(listed["data"][0]["actor"], "ops-team");
    assert!(
        !listed.to_string().contains(&key),
        "the key is never listed"
    );

    // A service on this database: the stored key turns auth on, and it is an operator's.
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_macp-control-plane"));
    serve
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .env("EMBEDDED_RUNTIME_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", &database_url)
        .env("PACKS_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("AUTH_") || name == "MACP_CONFIG" {
            serve.env_remove(name);
        }
    }
    let mut child = serve.spawn().expect("spawns");
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            assert!(!line.contains("authentication is off"), "{line}");
            if !line.contains("macp-control-plane listening") {
                continue;
            }
            if let Some(rest) = line.split("address=").nth(1) {
                return rest
                    .split_whitespace()
                    .next()
                    .expect("an address")
                    .to_owned();
            }
        }
        panic!("the service ended before listening");
    })
    .await
    .expect("listening within 60 s");
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    let get = |credential: Option<&str>| {
        let mut request = http.get(format!("{base}/runs"));
        if let Some(credential) = credential {
            request = request.header("x-api-key", credential);
        }
        request.send()
    };
    assert_eq!(get(None).await.expect("request").status(), 401);
    assert_eq!(get(Some(&key)).await.expect("request").status(), 200);
    let audit = http
        .get(format!("{base}/audit"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request");
    assert_eq!(
        audit.status(),
        403,
        "an operator does not read the audit log"
    );

    let revoked = keys(&["revoke", &id]).await.expect("runs");
    assert!(revoked.status.success(), "{revoked:?}");
    let listed = keys(&["list", "--json"]).await.expect("runs");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert!(listed["data"][0]["revokedAt"].is_string(), "{listed}");
    child.start_kill().expect("stops the child it started");
    child.wait().await.expect("waits");

    let store = macp_control_plane::store::Store::connect(&database_url)
        .await
        .expect("store");
    let page = store
        .list_audit(&macp_control_plane::domain::audit::AuditFilter {
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("audit");
    let actions: Vec<(&str, &str)> = page
        .data
        .iter()
        .rev()
        .map(|entry| (entry.action.as_str(), entry.actor_type.as_str()))
        .collect();
    // The refused create changed nothing and is not a call the service answered.
    assert_eq!(
        actions,
        vec![("key.create", "local"), ("key.revoke", "local")]
    );
}

/// A repeated idempotency key answers the existing run; both calls are audited about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_start_is_audited_about_the_existing_run() {
    let Some((app, _keys)) = start_with_keys().await else {
        return;
    };
    let mut request = requests::seed_example();
    request["execution"]["idempotencyKey"] = json!("audit-repeat");
    let first = start_as(&app, OPERATOR, &request).await;
    let response = app
        .http
        .post(format!("{}/runs", app.base))
        .bearer_auth(OPERATOR)
        .json(&request)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["runId"], first.as_str());
    let (_, page) = get_as(&app, ADMIN, "/audit?action=run.start").await;
    let ids: Vec<&str> = page["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["resourceId"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, vec![first.as_str(), first.as_str()]);
    app.stop().await;
}
