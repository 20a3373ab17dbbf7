//! The one error vocabulary of the service. Every module has its own `Error` type; each of them
//! maps onto an [`ApiError`] (a stable [`ErrorCode`] plus a message and optional details), and the
//! transport adapters in `api/` turn an `ApiError` into a gRPC status or an HTTP status with the
//! JSON body `{statusCode, errorCode, message, details?}`.

use serde::Serialize;
use serde_json::Value;

/// Declares [`ErrorCode`] from one list of `Variant => "STRING"` pairs, so the enum, its string
/// form and [`ErrorCode::ALL`] (which the OpenAPI document enumerates) cannot drift apart.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)+) => {
        /// Stable error codes. The string form (`as_str`) is part of the API contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)+
                }
            }
        }
    };
}

error_codes! {
    /// The request is malformed; `details.errors` lists every field problem.
    ValidationError => "VALIDATION_ERROR",
    RunNotFound => "RUN_NOT_FOUND",
    NotFound => "NOT_FOUND",
    /// The run recorded no decision receipt (its session did not resolve, or the runtime does
    /// not sign receipts).
    ReceiptNotFound => "RECEIPT_NOT_FOUND",
    /// A run transition that is not allowed from the run's current status.
    InvalidStateTransition => "INVALID_STATE_TRANSITION",
    /// The run is not in a state that takes messages (not started yet, or finished).
    RunNotActive => "RUN_NOT_ACTIVE",
    /// The action needs a run that has ended (completed, failed or cancelled), e.g. deleting it.
    RunNotTerminal => "RUN_NOT_TERMINAL",
    /// The sender is neither a participant nor the initiator of the run's session.
    NotAParticipant => "NOT_A_PARTICIPANT",
    Conflict => "CONFLICT",
    ModeNotSupported => "MODE_NOT_SUPPORTED",
    InvalidSessionId => "INVALID_SESSION_ID",
    UnknownPolicyVersion => "UNKNOWN_POLICY_VERSION",
    /// The runtime refused a policy definition (its rules, schema version or id).
    InvalidPolicyDefinition => "INVALID_POLICY_DEFINITION",
    PolicyDenied => "POLICY_DENIED",
    SessionAlreadyExists => "SESSION_ALREADY_EXISTS",
    SessionNotOpen => "SESSION_NOT_OPEN",
    /// A RunDescriptor's agents did not start its session within the session's ttl.
    SessionNotStarted => "SESSION_NOT_STARTED",
    Forbidden => "FORBIDDEN",
    /// An agent credential tried to act as a participant id that is not its own.
    NotYourParticipant => "NOT_YOUR_PARTICIPANT",
    Unauthenticated => "UNAUTHENTICATED",
    RateLimited => "RATE_LIMITED",
    /// The run has as many live-stream subscribers as the service allows (`MAX_SUBSCRIBERS_PER_RUN`).
    TooManySubscribers => "TOO_MANY_SUBSCRIBERS",
    /// AwaitRun (or a start with `await`) reached its timeout before the run ended.
    AwaitTimeout => "AWAIT_TIMEOUT",
    /// The runtime kept no history of the run's session to replay (compacted, or never bound).
    HistoryUnavailable => "HISTORY_UNAVAILABLE",
    /// The runtime refused a kickoff message.
    KickoffFailed => "KICKOFF_FAILED",
    /// The runtime refused a message sent through the control plane.
    MessageSendFailed => "MESSAGE_SEND_FAILED",
    /// The runtime refused a request for a reason without a more specific code.
    RuntimeRejected => "RUNTIME_REJECTED",
    RuntimeUnavailable => "RUNTIME_UNAVAILABLE",
    RuntimeTimeout => "RUNTIME_TIMEOUT",
    /// The replica that owns the run did not answer a call handed to it, and no other replica
    /// has taken the run over yet (a cluster; retry shortly).
    ReplicaUnavailable => "REPLICA_UNAVAILABLE",
    SessionExpired => "SESSION_EXPIRED",
    // Scenario registry.
    PackNotFound => "PACK_NOT_FOUND",
    ScenarioNotFound => "SCENARIO_NOT_FOUND",
    VersionNotFound => "VERSION_NOT_FOUND",
    TemplateNotFound => "TEMPLATE_NOT_FOUND",
    AgentNotFound => "AGENT_NOT_FOUND",
    InvalidScenarioRef => "INVALID_SCENARIO_REF",
    CompilationError => "COMPILATION_ERROR",
    InvalidPackData => "INVALID_PACK_DATA",
    PayloadTooLarge => "PAYLOAD_TOO_LARGE",
    /// A JSON route was sent a body that is not `application/json` (or `application/*+json`).
    UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
    /// A request addressed to a host name this service does not answer to (DNS rebinding).
    MisdirectedRequest => "MISDIRECTED_REQUEST",
    /// Another process holds the SQLite database's write lock past `SQLITE_BUSY_TIMEOUT_MS`;
    /// the write was rolled back and may be retried (`Retry-After`).
    StoreBusy => "STORE_BUSY",
    /// The database has no room for the write (disk full, or `SQLITE_MAX_PAGE_COUNT` reached);
    /// the write was rolled back.
    StoreFull => "STORE_FULL",
    Internal => "INTERNAL_ERROR",
}

impl ErrorCode {
    /// HTTP status for REST responses.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError
            | ErrorCode::ModeNotSupported
            | ErrorCode::InvalidSessionId
            | ErrorCode::UnknownPolicyVersion
            | ErrorCode::InvalidPolicyDefinition
            | ErrorCode::InvalidScenarioRef
            | ErrorCode::CompilationError => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PolicyDenied
            | ErrorCode::Forbidden
            | ErrorCode::NotAParticipant
            | ErrorCode::NotYourParticipant => 403,
            ErrorCode::RunNotFound
            | ErrorCode::NotFound
            | ErrorCode::ReceiptNotFound
            | ErrorCode::PackNotFound
            | ErrorCode::ScenarioNotFound
            | ErrorCode::VersionNotFound
            | ErrorCode::TemplateNotFound
            | ErrorCode::AgentNotFound => 404,
            ErrorCode::InvalidStateTransition
            | ErrorCode::Conflict
            | ErrorCode::SessionAlreadyExists
            | ErrorCode::SessionNotOpen
            | ErrorCode::SessionNotStarted
            | ErrorCode::RunNotActive
            | ErrorCode::RunNotTerminal
            | ErrorCode::HistoryUnavailable => 409,
            ErrorCode::AwaitTimeout => 408,
            ErrorCode::SessionExpired => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::MisdirectedRequest => 421,
            ErrorCode::RateLimited | ErrorCode::TooManySubscribers => 429,
            ErrorCode::KickoffFailed
            | ErrorCode::MessageSendFailed
            | ErrorCode::RuntimeRejected => 502,
            ErrorCode::RuntimeUnavailable
            | ErrorCode::StoreBusy
            | ErrorCode::ReplicaUnavailable => 503,
            ErrorCode::RuntimeTimeout => 504,
            // 507 Insufficient Storage (RFC 4918): the server cannot store what the request needs.
            ErrorCode::StoreFull => 507,
            ErrorCode::InvalidPackData | ErrorCode::Internal => 500,
        }
    }

    /// How long, in seconds, a client should wait before sending the same request again
    /// (REST `Retry-After`), for refusals that pass by themselves.
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            // Whoever holds the lock usually lets go within a second or so.
            ErrorCode::StoreBusy | ErrorCode::ReplicaUnavailable => Some(1),
            _ => None,
        }
    }

    /// gRPC status code (as `tonic::Code` numbers, so this module stays transport-free).
    pub fn grpc_code(self) -> i32 {
        // Numbers from google.rpc.Code.
        const INVALID_ARGUMENT: i32 = 3;
        const DEADLINE_EXCEEDED: i32 = 4;
        const NOT_FOUND: i32 = 5;
        const ALREADY_EXISTS: i32 = 6;
        const PERMISSION_DENIED: i32 = 7;
        const RESOURCE_EXHAUSTED: i32 = 8;
        const FAILED_PRECONDITION: i32 = 9;
        const INTERNAL: i32 = 13;
        const UNAVAILABLE: i32 = 14;
        const UNAUTHENTICATED: i32 = 16;
        match self {
            ErrorCode::ValidationError
            | ErrorCode::ModeNotSupported
            | ErrorCode::InvalidSessionId
            | ErrorCode::UnknownPolicyVersion
            | ErrorCode::InvalidPolicyDefinition
            | ErrorCode::InvalidScenarioRef
            | ErrorCode::CompilationError
            | ErrorCode::UnsupportedMediaType => INVALID_ARGUMENT,
            ErrorCode::Unauthenticated => UNAUTHENTICATED,
            ErrorCode::PolicyDenied
            | ErrorCode::Forbidden
            | ErrorCode::NotAParticipant
            | ErrorCode::NotYourParticipant
            | ErrorCode::MisdirectedRequest => PERMISSION_DENIED,
            ErrorCode::RunNotFound
            | ErrorCode::NotFound
            | ErrorCode::ReceiptNotFound
            | ErrorCode::PackNotFound
            | ErrorCode::ScenarioNotFound
            | ErrorCode::VersionNotFound
            | ErrorCode::TemplateNotFound
            | ErrorCode::AgentNotFound => NOT_FOUND,
            ErrorCode::SessionAlreadyExists => ALREADY_EXISTS,
            ErrorCode::InvalidStateTransition
            | ErrorCode::Conflict
            | ErrorCode::SessionNotOpen
            | ErrorCode::SessionNotStarted
            | ErrorCode::SessionExpired
            | ErrorCode::RunNotActive
            | ErrorCode::RunNotTerminal
            | ErrorCode::HistoryUnavailable => FAILED_PRECONDITION,
            ErrorCode::PayloadTooLarge
            | ErrorCode::RateLimited
            | ErrorCode::TooManySubscribers
            | ErrorCode::StoreFull => RESOURCE_EXHAUSTED,
            ErrorCode::KickoffFailed
            | ErrorCode::MessageSendFailed
            | ErrorCode::RuntimeRejected
            | ErrorCode::RuntimeUnavailable
            | ErrorCode::StoreBusy
            | ErrorCode::ReplicaUnavailable => UNAVAILABLE,
            ErrorCode::RuntimeTimeout | ErrorCode::AwaitTimeout => DEADLINE_EXCEEDED,
            ErrorCode::InvalidPackData | ErrorCode::Internal => INTERNAL,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field-level validation problem: `field` is a path such as `session.participants[1].id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a transport adapter needs to answer an error.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A `VALIDATION_ERROR` listing every field problem under `details.errors`.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let message = match errors.as_slice() {
            [only] => format!("{}: {}", only.field, only.message),
            many => format!("{} validation errors", many.len()),
        };
        ApiError::new(ErrorCode::ValidationError, message)
            .with_details(serde_json::json!({ "errors": errors }))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// The REST body: `{statusCode, errorCode, message, details?}`.
    pub fn body(&self) -> Value {
        let mut body = serde_json::json!({
            "statusCode": self.code.http_status(),
            "errorCode": self.code.as_str(),
            "message": self.message,
        });
        if let (Some(details), Some(map)) = (&self.details, body.as_object_mut()) {
            map.insert("details".to_owned(), details.clone());
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
