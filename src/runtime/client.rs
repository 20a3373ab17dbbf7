//! The gRPC client of the MACP runtime: unary calls with deadlines, per-sender credentials, and
//! runtime refusals (in-band Ack errors and `macp-error-code` statuses) turned into our errors
//! with the runtime's reasons kept.

use std::time::Duration;

use macp_runtime::pb::{
    self, Envelope, InitializeRequest, SessionMetadata,
    macp_runtime_service_client::MacpRuntimeServiceClient,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::breaker::{BreakerOptions, CircuitBreaker};
use super::credentials::{Bearer, Credentials};
use crate::error::{ApiError, ErrorCode};

/// The protocol version this control plane speaks.
pub const MACP_VERSION: &str = "1.0";

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("runtime unreachable: {0}")]
    Unavailable(String),
    #[error("runtime call {0} timed out")]
    Timeout(&'static str),
    /// The runtime answered and refused; `code` is the runtime's registry code.
    #[error("runtime refused ({code}): {message}")]
    Refused {
        code: String,
        message: String,
        details: Option<Value>,
    },
    #[error("no runtime credential configured for sender '{0}'")]
    NoCredential(String),
    /// Refused without calling: recent calls found the runtime down (`breaker`).
    #[error("runtime unreachable: circuit breaker open ({reason}); next try in {retry_in_ms} ms")]
    CircuitOpen { reason: String, retry_in_ms: u64 },
}

impl Error {
    /// The runtime's registry code, when the runtime answered.
    pub fn runtime_code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the error shows the runtime down (what the circuit breaker counts): an answer,
    /// even a refusal or NOT_FOUND, shows it working.
    fn shows_runtime_down(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Timeout(_) => true,
            Error::Refused { code, .. } => {
                matches!(code.as_str(), "INTERNAL" | "INTERNAL_ERROR" | "DATALOSS")
            }
            Error::NoCredential(_) | Error::CircuitOpen { .. } => false,
        }
    }

    pub fn to_api_error(&self) -> ApiError {
        match self {
            Error::Unavailable(_) => ApiError::new(ErrorCode::RuntimeUnavailable, self.to_string()),
            Error::Timeout(_) => ApiError::new(ErrorCode::RuntimeTimeout, self.to_string()),
            Error::NoCredential(_) => ApiError::new(ErrorCode::Unauthenticated, self.to_string()),
            Error::CircuitOpen { .. } => {
                ApiError::new(ErrorCode::RuntimeUnavailable, self.to_string())
                    .with_details(json!({ "circuitBreaker": super::breaker::State::Open.as_str() }))
            }
            Error::Refused {
                code,
                message,
                details,
            } => {
                let mut body = json!({ "runtimeCode": code, "runtimeMessage": message });
                if let (Some(details), Some(map)) = (details, body.as_object_mut()) {
                    map.insert("runtimeDetails".to_owned(), details.clone());
                }
                ApiError::new(map_runtime_code(code), self.to_string()).with_details(body)
            }
        }
    }
}

/// Runtime registry codes → our codes (runtime.md §2.1).
pub fn map_runtime_code(code: &str) -> ErrorCode {
    match code {
        "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
        "FORBIDDEN" => ErrorCode::Forbidden,
        "POLICY_DENIED" => ErrorCode::PolicyDenied,
        "SESSION_NOT_FOUND" | "AGENT_NOT_FOUND" => ErrorCode::NotFound,
        "UNKNOWN_POLICY_VERSION" => ErrorCode::UnknownPolicyVersion,
        "INVALID_POLICY_DEFINITION" => ErrorCode::InvalidPolicyDefinition,
        "SESSION_NOT_OPEN" => ErrorCode::SessionNotOpen,
        "SESSION_ALREADY_EXISTS" => ErrorCode::SessionAlreadyExists,
        "INVALID_SESSION_ID" => ErrorCode::InvalidSessionId,
        "MODE_NOT_SUPPORTED" => ErrorCode::ModeNotSupported,
        "INVALID_ENVELOPE" | "INVALID_REQUEST" | "UNSUPPORTED_PROTOCOL_VERSION" => {
            ErrorCode::ValidationError
        }
        "RATE_LIMITED" => ErrorCode::RateLimited,
        "PAYLOAD_TOO_LARGE" => ErrorCode::PayloadTooLarge,
        _ => ErrorCode::RuntimeRejected,
    }
}

pub(crate) fn error_from_status(status: &tonic::Status) -> Error {
    let code = status
        .metadata()
        .get("macp-error-code")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match (code, status.code()) {
        (Some(code), _) => {
            let details = status
                .metadata()
                .get_bin("macp-error-details-bin")
                .and_then(|value| value.to_bytes().ok())
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
            Error::Refused {
                code,
                message: status.message().to_owned(),
                details,
            }
        }
        (None, tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled) => {
            Error::Unavailable(status.message().to_owned())
        }
        (None, tonic::Code::DeadlineExceeded) => Error::Timeout("request"),
        (None, other) => Error::Refused {
            code: format!("{other:?}").to_uppercase(),
            message: status.message().to_owned(),
            details: None,
        },
    }
}

/// A refused Ack as an error, keeping the POLICY_DENIED reasons when present.
pub fn error_from_ack(error: &pb::MacpError) -> Error {
    let details = if error.details.is_empty() {
        None
    } else {
        serde_json::from_slice::<Value>(&error.details).ok()
    };
    Error::Refused {
        code: error.code.clone(),
        message: error.message.clone(),
        details,
    }
}

/// The Ack of a session lifecycle call (cancel, suspend, resume); a refused one as an error.
fn lifecycle_ack(call: &str, ack: Option<pb::Ack>) -> Result<pb::Ack, Error> {
    let ack =
        ack.ok_or_else(|| Error::Unavailable(format!("runtime answered {call} without an ack")))?;
    match (&ack.error, ack.ok) {
        (Some(error), false) => Err(error_from_ack(error)),
        _ => Ok(ack),
    }
}

/// Handle to one runtime (cheap to clone).
#[derive(Clone, Debug)]
pub struct RuntimeClient {
    inner: MacpRuntimeServiceClient<Channel>,
    credentials: Credentials,
    timeout: Duration,
    address: String,
    breaker: std::sync::Arc<CircuitBreaker>,
}

/// A passive session subscription; dropping it ends the stream. The request side is kept open
/// for the subscription's life, because a half-close tells the runtime to stop live delivery.
pub struct Subscription {
    pub responses: tonic::Streaming<pb::StreamSessionResponse>,
    _requests: mpsc::Sender<pb::StreamSessionRequest>,
}

impl RuntimeClient {
    /// A lazily connecting client: an unreachable runtime surfaces on the first call, so the
    /// service starts (and reports itself not ready) instead of refusing to boot.
    pub fn connect_lazy(
        address: &str,
        credentials: Credentials,
        timeout: Duration,
        tls: bool,
    ) -> Result<Self, Error> {
        let url = if address.contains("://") {
            address.to_owned()
        } else if tls {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|error| {
                Error::Unavailable(format!("invalid runtime address '{url}': {error}"))
            })?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if tls {
            endpoint = endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                .map_err(|error| Error::Unavailable(format!("tls configuration: {error}")))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(RuntimeClient {
            // Payloads up to the runtime's own limit (1 MiB + envelope overhead).
            inner: MacpRuntimeServiceClient::new(channel)
                .max_decoding_message_size(1_048_576 + 65_536),
            credentials,
            timeout,
            address: address.to_owned(),
            breaker: std::sync::Arc::new(CircuitBreaker::new(BreakerOptions::default())),
        })
    }

    /// The same client behind a breaker with these settings.
    pub fn with_circuit_breaker(mut self, options: BreakerOptions) -> Self {
        self.breaker = std::sync::Arc::new(CircuitBreaker::new(options));
        self
    }

    pub fn circuit_breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    fn request<T>(
        &self,
        message: T,
        bearer: Option<Bearer<'_>>,
    ) -> Result<tonic::Request<T>, Error> {
        let mut request = tonic::Request::new(message);
        if let Some(bearer) = bearer {
            // The one place a token is exposed: onto the wire. A sensitive value is redacted by
            // the header's Debug and never entered in HTTP/2's header compression table.
            let header = format!("Bearer {}", bearer.expose_secret());
            let mut value = MetadataValue::try_from(header)
                .map_err(|_| Error::NoCredential("<credential is not a valid header>".into()))?;
            value.set_sensitive(true);
            request.metadata_mut().insert("authorization", value);
        }
        // Callers run runtime calls inside their span's context (`with_context`).
        crate::telemetry::trace::inject(request.metadata_mut());
        Ok(request)
    }

    fn bearer<'a>(&'a self, sender: &'a str) -> Result<Bearer<'a>, Error> {
        self.credentials
            .bearer_for(sender)
            .ok_or_else(|| Error::NoCredential(sender.to_owned()))
    }

    /// A reading call's credential: the reader's own, else the control plane's observer
    /// identity (a session it did not start, whose participants' tokens it does not hold).
    fn reader_bearer<'a>(&'a self, reader: &'a str) -> Bearer<'a> {
        self.credentials
            .bearer_for(reader)
            .unwrap_or_else(|| self.credentials.observer_bearer())
    }

    /// A unary call, through the circuit breaker.
    async fn with_deadline<F, T>(&self, name: &'static str, call: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.breaker.admit().map_err(|open| Error::CircuitOpen {
            reason: open.reason,
            retry_in_ms: u64::try_from(open.retry_in.as_millis()).unwrap_or(u64::MAX),
        })?;
        let outcome = self.timed(name, call).await;
        match &outcome {
            Err(error) if error.shows_runtime_down() => self.breaker.failed(&error.to_string()),
            _ => self.breaker.succeeded(),
        }
        outcome
    }

    /// A call with its deadline, timed for `/metrics`. Stream opens come here directly: the
    /// breaker is for unary calls, and the watch and observer loops back off on their own.
    async fn timed<F, T>(&self, name: &'static str, call: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(Error::Timeout(name)),
            Ok(Err(status)) => Err(error_from_status(&status)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        };
        crate::telemetry::metrics::record_runtime_call(name, started.elapsed(), outcome.is_ok());
        outcome
    }

    pub async fn initialize(&self) -> Result<pb::InitializeResponse, Error> {
        let request = self.request(
            InitializeRequest {
                supported_protocol_versions: vec![MACP_VERSION.to_owned()],
                client_info: Some(pb::ClientInfo {
                    name: "macp-control-plane".to_owned(),
                    title: "MACP Control Plane".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    description: "Scenario-agnostic control plane for the MACP runtime".to_owned(),
                    website_url: String::new(),
                }),
                capabilities: None,
            },
            None,
        )?;
        let mut client = self.inner.clone();
        self.with_deadline("Initialize", client.initialize(request))
            .await
    }

    /// Sends one envelope with `sender`'s credentials and returns the runtime's Ack; a refused
    /// Ack is an error carrying the runtime's code and reasons.
    pub async fn send(&self, envelope: Envelope, sender: &str) -> Result<pb::Ack, Error> {
        let bearer = self.bearer(sender)?;
        let request = self.request(
            pb::SendRequest {
                envelope: Some(envelope),
            },
            Some(bearer),
        )?;
        let mut client = self.inner.clone();
        let response = self.with_deadline("Send", client.send(request)).await?;
        let ack = response
            .ack
            .ok_or_else(|| Error::Unavailable("runtime answered Send without an ack".into()))?;
        match (&ack.error, ack.ok) {
            (_, true) => Ok(ack),
            (Some(error), false) => Err(error_from_ack(error)),
            (None, false) => Err(Error::Refused {
                code: "INTERNAL_ERROR".to_owned(),
                message: "runtime refused the message without a reason".to_owned(),
                details: None,
            }),
        }
    }

    /// Opens a passive subscription to a session's accepted envelopes after `after_sequence`
    /// (exclusive, 1-based runtime ordinals), authenticated as `reader`.
    pub async fn subscribe(
        &self,
        session_id: &str,
        after_sequence: u64,
        reader: &str,
    ) -> Result<Subscription, Error> {
        let bearer = self.reader_bearer(reader);
        let (requests, receiver) = mpsc::channel(1);
        let frame = pb::StreamSessionRequest {
            envelope: None,
            subscribe_session_id: session_id.to_owned(),
            after_sequence,
        };
        requests
            .send(frame)
            .await
            .map_err(|_| Error::Unavailable("subscription channel closed".into()))?;
        let request = self.request(ReceiverStream::new(receiver), Some(bearer))?;
        let mut client = self.inner.clone();
        let responses = self
            .timed("StreamSession", client.stream_session(request))
            .await?;
        Ok(Subscription {
            responses,
            _requests: requests,
        })
    }

    pub async fn watch_sessions(
        &self,
    ) -> Result<tonic::Streaming<pb::WatchSessionsResponse>, Error> {
        let bearer = self.credentials.observer_bearer();
        let request = self.request(pb::WatchSessionsRequest {}, Some(bearer))?;
        let mut client = self.inner.clone();
        self.timed("WatchSessions", client.watch_sessions(request))
            .await
    }

    /// Ambient envelopes (Signals outside any session's history), as the observer identity.
    pub async fn watch_signals(&self) -> Result<tonic::Streaming<pb::WatchSignalsResponse>, Error> {
        let bearer = self.credentials.observer_bearer();
        let request = self.request(pb::WatchSignalsRequest {}, Some(bearer))?;
        let mut client = self.inner.clone();
        self.timed("WatchSignals", client.watch_signals(request))
            .await
    }

    pub async fn get_session(
        &self,
        session_id: &str,
        reader: &str,
    ) -> Result<SessionMetadata, Error> {
        let bearer = self.reader_bearer(reader);
        let request = self.request(
            pb::GetSessionRequest {
                session_id: session_id.to_owned(),
            },
            Some(bearer),
        )?;
        let mut client = self.inner.clone();
        let response = self
            .with_deadline("GetSession", client.get_session(request))
            .await?;
        response.metadata.ok_or_else(|| {
            Error::Unavailable("runtime answered GetSession without metadata".into())
        })
    }

    /// Cancels a session as `canceller` (its initiator). Cancelling a terminal session answers
    /// ok with its current state.
    pub async fn cancel_session(
        &self,
        session_id: &str,
        reason: &str,
        canceller: &str,
    ) -> Result<pb::Ack, Error> {
        let bearer = self.bearer(canceller)?;
        let request = self.request(
            pb::CancelSessionRequest {
                session_id: session_id.to_owned(),
                reason: reason.to_owned(),
            },
            Some(bearer),
        )?;
        let mut client = self.inner.clone();
        let response = self
            .with_deadline("CancelSession", client.cancel_session(request))
            .await?;
        lifecycle_ack("CancelSession", response.ack)
    }

    /// Suspends an open session as `actor` (its initiator): it takes no messages until resumed.
    pub async fn suspend_session(
        &self,
        session_id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<pb::Ack, Error> {
        let request = self.request(
            pb::SuspendSessionRequest {
                session_id: session_id.to_owned(),
                reason: reason.to_owned(),
            },
            Some(self.bearer(actor)?),
        )?;
        let mut client = self.inner.clone();
        let response = self
            .with_deadline("SuspendSession", client.suspend_session(request))
            .await?;
        lifecycle_ack("SuspendSession", response.ack)
    }

    /// Resumes a suspended session as `actor` (its initiator).
    pub async fn resume_session(
        &self,
        session_id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<pb::Ack, Error> {
        let request = self.request(
            pb::ResumeSessionRequest {
                session_id: session_id.to_owned(),
                reason: reason.to_owned(),
            },
            Some(self.bearer(actor)?),
        )?;
        let mut client = self.inner.clone();
        let response = self
            .with_deadline("ResumeSession", client.resume_session(request))
            .await?;
        lifecycle_ack("ResumeSession", response.ack)
    }

    /// The runtime's policies, those for `mode` (and mode-agnostic ones) when given.
    pub async fn list_policies(&self, mode: &str) -> Result<Vec<pb::PolicyDescriptor>, Error> {
        let request = self.request(
            pb::ListPoliciesRequest {
                mode: mode.to_owned(),
            },
            Some(self.credentials.observer_bearer()),
        )?;
        let mut client = self.inner.clone();
        let response = self
            .with_deadline("ListPolicies", client.list_policies(request))
            .await?;
        Ok(response.descriptors)
    }

    pub async fn get_policy(&self, policy_id: &str) -> Result<pb::PolicyDescriptor, Error> {
        let request = self.request(
            pb::GetPolicyRequest {
                policy_id: policy_id.to_owned(),
            },
            Some(self.credentials.observer_bearer()),
        )?;
        let mut client = self.inner.clone();
        let response = self
            .with_deadline("GetPolicy", client.get_policy(request))
            .await?;
        response.policy_descriptor.ok_or_else(|| {
            Error::Unavailable("runtime answered GetPolicy without a descriptor".into())
        })
    }

    /// Replays a finished session's history under `candidate` (never registered), reading as
    /// `reader` (one of the session's own, or the observer).
    pub async fn what_if_replay(
        &self,
        session_id: &str,
        candidate: pb::PolicyDescriptor,
        reader: &str,
    ) -> Result<pb::WhatIfReplayResponse, Error> {
        let request = self.request(
            pb::WhatIfReplayRequest {
                session_id: session_id.to_owned(),
                candidate: Some(candidate),
            },
            Some(self.reader_bearer(reader)),
        )?;
        let mut client = self.inner.clone();
        self.with_deadline("WhatIfReplay", client.what_if_replay(request))
            .await
    }

    /// The session's decision receipt (a `macp-receipt/1` document, served byte-identical once
    /// issued), reading as `reader` (one of the session's own, or the observer).
    pub async fn decision_receipt(&self, session_id: &str, reader: &str) -> Result<String, Error> {
        let request = self.request(
            pb::GetDecisionReceiptRequest {
                session_id: session_id.to_owned(),
            },
            Some(self.reader_bearer(reader)),
        )?;
        let mut client = self.inner.clone();
        self.with_deadline("GetDecisionReceipt", client.get_decision_receipt(request))
            .await
            .map(|response| response.receipt_json)
    }

    /// The public keys (a JWK Set, as JSON text) the runtime's receipts verify against.
    pub async fn receipt_keys(&self) -> Result<String, Error> {
        let request = self.request(pb::GetReceiptKeysRequest {}, None)?;
        let mut client = self.inner.clone();
        self.with_deadline("GetReceiptKeys", client.get_receipt_keys(request))
            .await
            .map(|response| response.jwks_json)
    }

    /// Registers a policy as the control plane's own identity (which the runtime must allow to
    /// manage its registries). The runtime answers `ok: false` with its reason for a policy it
    /// does not take.
    pub async fn register_policy(
        &self,
        descriptor: pb::PolicyDescriptor,
    ) -> Result<pb::RegisterPolicyResponse, Error> {
        let request = self.request(
            pb::RegisterPolicyRequest {
                policy_descriptor: Some(descriptor),
            },
            Some(self.credentials.observer_bearer()),
        )?;
        let mut client = self.inner.clone();
        self.with_deadline("RegisterPolicy", client.register_policy(request))
            .await
    }

    pub async fn unregister_policy(
        &self,
        policy_id: &str,
    ) -> Result<pb::UnregisterPolicyResponse, Error> {
        let request = self.request(
            pb::UnregisterPolicyRequest {
                policy_id: policy_id.to_owned(),
            },
            Some(self.credentials.observer_bearer()),
        )?;
        let mut client = self.inner.clone();
        self.with_deadline("UnregisterPolicy", client.unregister_policy(request))
            .await
    }

    pub async fn get_manifest(&self) -> Result<pb::AgentManifest, Error> {
        let request = self.request(
            pb::GetManifestRequest {
                agent_id: String::new(),
            },
            None,
        )?;
        let mut client = self.inner.clone();
        let response = self
            .with_deadline("GetManifest", client.get_manifest(request))
            .await?;
        response.manifest.ok_or_else(|| {
            Error::Unavailable("runtime answered GetManifest without a manifest".into())
        })
    }

    /// Standards-track modes and registered extensions.
    pub async fn list_modes(&self) -> Result<Vec<pb::ModeDescriptor>, Error> {
        let mut client = self.inner.clone();
        let standard = self
            .with_deadline(
                "ListModes",
                client.list_modes(self.request(pb::ListModesRequest {}, None)?),
            )
            .await?;
        let extensions = self
            .with_deadline(
                "ListExtModes",
                client.list_ext_modes(self.request(pb::ListExtModesRequest {}, None)?),
            )
            .await?;
        let mut modes = standard.modes;
        modes.extend(extensions.modes);
        Ok(modes)
    }

    pub async fn list_roots(&self) -> Result<Vec<pb::Root>, Error> {
        let mut client = self.inner.clone();
        let response = self
            .with_deadline(
                "ListRoots",
                client.list_roots(self.request(pb::ListRootsRequest {}, None)?),
            )
            .await?;
        Ok(response.roots)
    }
}

/// A new envelope for this session (empty sender: the runtime fills in the authenticated one).
pub fn envelope(
    mode: &str,
    message_type: &str,
    session_id: &str,
    message_id: String,
    payload: Vec<u8>,
) -> Envelope {
    Envelope {
        macp_version: MACP_VERSION.to_owned(),
        mode: mode.to_owned(),
        message_type: message_type.to_owned(),
        message_id,
        session_id: session_id.to_owned(),
        sender: String::new(),
        timestamp_unix_ms: chrono::Utc::now().timestamp_millis(),
        payload,
    }
}
