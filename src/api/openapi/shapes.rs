//! Where a REST route's shape differs from its RPC's messages, in one table. This file is the only
//! hand-written part of the OpenAPI document: operations, parameters, bodies, schemas and their
//! descriptions come from the protos (`api::proto`) and the route table (`api::routes`). An RPC
//! that is not listed here gets the defaults — the request message (minus the fields bound to path
//! parameters) as query parameters or JSON body, and `200` with the response message — so a new
//! RPC shows up in the document as soon as it has a route. What the server enforces beyond the
//! protos' types (formats, ranges, enums, required and non-blank fields) is [`RULES`]; the
//! refusals an operation can answer are derived from its route plus its [`Shape::refusals`].

use crate::domain::artifact::{ARTIFACT_KINDS, MAX_LABEL_LEN};
use crate::domain::audit::{MAX_AUDIT_LIMIT, MAX_KEY_NAME_LEN};
use crate::domain::dashboard;
use crate::domain::query::{MAX_EVENT_LIMIT, MAX_RUN_LIMIT, MAX_UINT32, MIN_HEARTBEAT_MS};
use crate::domain::status::RunStatus;
use crate::domain::webhook::{
    DeliveryStatus, EVENTS as WEBHOOK_EVENTS, MAX_DELIVERY_LIMIT, MAX_SECRET_LEN, MAX_URL_LEN,
};
use crate::error::ErrorCode;
use crate::runs::manage::{BATCH_ACTIONS, EXPORT_FORMATS, MAX_BATCH_RUNS, MAX_EXPORT_EVENTS};
use crate::runs::outcome::MAX_AWAIT_TIMEOUT_MS;
use crate::runs::replay::{MAX_SPEED, MIN_SPEED};
use crate::runs::request::{
    ACTOR_TYPES, ENCODINGS, KICKOFF_KINDS, MAX_IDEMPOTENCY_KEY_LEN, MAX_PARTICIPANTS, MAX_TTL_MS,
};
use crate::runs::watch::MAX_WAIT_FOR_RUN_MS;

/// How one RPC's REST route departs from the defaults.
pub struct Shape {
    pub rpc: &'static str,
    pub body: Body,
    /// Success statuses with what each means; the default is `200`.
    pub success: &'static [(u16, &'static str)],
    pub reply: Reply,
    /// Parameters that set a request field under another name or in a header.
    pub aliases: &'static [Alias],
    /// Error codes of refusals beyond those every route of its kind can answer (bad input, an
    /// unknown run, a body too large or not JSON, a foreign `Host`).
    pub refusals: &'static [ErrorCode],
    /// A request body the route takes (JSON text), shown as the body's example.
    pub example: Option<&'static str>,
}

/// What a POST route's JSON body is.
pub enum Body {
    /// The request message minus the path-bound fields; `optional` when the body may be omitted.
    Message { optional: bool },
    /// One field of the request message is the whole body (google.api.http's `body: "field"`).
    Field(&'static str),
    /// As `Field`, for a route that checks the body and answers what it found: any JSON is
    /// taken, and what does not fit the field's schema is reported in the answer, not refused.
    Checked(&'static str),
}

/// What a route answers on success.
pub enum Reply {
    /// The response message.
    Message,
    /// The response message's one repeated field as a bare JSON array, what the MACP UI console
    /// reads (its other fields, if any, are not sent).
    BareList,
    /// A bare array unless one of these request fields (proto names) is given; then the message.
    BareListUnless(&'static [&'static str]),
    /// No body (`204`).
    NoContent,
    /// A streaming RPC's items as NDJSON, one JSON object a line, instead of Server-Sent Events.
    Lines,
}

/// A second name for a request field.
pub struct Alias {
    /// `query` or `header`.
    pub location: &'static str,
    pub name: &'static str,
    /// The request field (proto name) it sets.
    pub field: &'static str,
    pub description: &'static str,
}

const DEFAULT: Shape = Shape {
    rpc: "",
    body: Body::Message { optional: false },
    success: OK,
    reply: Reply::Message,
    aliases: &[],
    refusals: &[],
    example: None,
};

const OK: &[(u16, &str)] = &[(200, "Success.")];
const CREATED: &[(u16, &str)] = &[(201, "Created.")];
const SENT: &[(u16, &str)] = &[(201, "Sent; the runtime's acknowledgement.")];
/// Starting a run: new, or the stored one when the idempotency key matched.
const STARTED: &[(u16, &str)] = &[
    (201, "The run was created and starts in the background."),
    (
        200,
        "The idempotency key matched an existing run: that run, and nothing was started.",
    ),
];
/// What a call the runtime answers synchronously can be refused with (`runtime::client`).
const RUNTIME_REFUSALS: &[ErrorCode] = &[
    ErrorCode::InvalidSessionId,
    ErrorCode::ModeNotSupported,
    ErrorCode::UnknownPolicyVersion,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::PolicyDenied,
    ErrorCode::NotFound,
    ErrorCode::SessionAlreadyExists,
    ErrorCode::SessionNotOpen,
    ErrorCode::SessionExpired,
    ErrorCode::PayloadTooLarge,
    ErrorCode::RateLimited,
];
/// Sending for an agent: the run must take messages and the sender be one of its own, then the
/// runtime decides.
const SEND_REFUSALS: &[ErrorCode] = &[
    ErrorCode::RunNotActive,
    ErrorCode::NotAParticipant,
    ErrorCode::InvalidSessionId,
    ErrorCode::ModeNotSupported,
    ErrorCode::UnknownPolicyVersion,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::PolicyDenied,
    ErrorCode::NotFound,
    ErrorCode::SessionAlreadyExists,
    ErrorCode::SessionNotOpen,
    ErrorCode::SessionExpired,
    ErrorCode::PayloadTooLarge,
    ErrorCode::RateLimited,
];
/// Suspending or resuming: the run must be running (or suspended), then the runtime decides.
const TOGGLE_REFUSALS: &[ErrorCode] = &[
    ErrorCode::InvalidStateTransition,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::SessionNotOpen,
    ErrorCode::RateLimited,
];
/// Asking the runtime about its policies.
const POLICY_REFUSALS: &[ErrorCode] = &[
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::RateLimited,
];
/// Changing the runtime's policies: a definition it refuses, an id taken or protected.
const POLICY_CHANGE_REFUSALS: &[ErrorCode] = &[
    ErrorCode::InvalidPolicyDefinition,
    ErrorCode::Conflict,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::RateLimited,
];
/// Looking a scenario up in the packs tree.
const SCENARIO_REFUSALS: &[ErrorCode] = &[
    ErrorCode::InvalidScenarioRef,
    ErrorCode::PackNotFound,
    ErrorCode::ScenarioNotFound,
    ErrorCode::VersionNotFound,
    ErrorCode::TemplateNotFound,
    ErrorCode::AgentNotFound,
    ErrorCode::CompilationError,
];

/// The event filters accept `type` as well as `types`.
const TYPE_ALIAS: &[Alias] = &[Alias {
    location: "query",
    name: "type",
    field: "types",
    description: "Same as `types`.",
}];

pub const SHAPES: &[Shape] = &[
    Shape {
        rpc: "CreateWebhook",
        success: CREATED,
        example: Some(
            r#"{"url": "http://127.0.0.1:8080/hooks/macp", "events": ["run.completed", "run.failed"], "secret": "change-me"}"#,
        ),
        ..DEFAULT
    },
    Shape {
        rpc: "ListWebhooks",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "ListAgentMetrics",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "UpdateWebhook",
        refusals: &[ErrorCode::NotFound],
        example: Some(r#"{"active": false}"#),
        ..DEFAULT
    },
    Shape {
        rpc: "DeleteWebhook",
        refusals: &[ErrorCode::NotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "ListWebhookDeliveries",
        refusals: &[ErrorCode::NotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "ResetCircuitBreaker",
        body: Body::Message { optional: true },
        ..DEFAULT
    },
    Shape {
        rpc: "DeleteRun",
        success: &[(204, "Deleted, with everything stored for the run; no body.")],
        reply: Reply::NoContent,
        refusals: &[ErrorCode::RunNotTerminal],
        ..DEFAULT
    },
    Shape {
        rpc: "CloneRun",
        body: Body::Message { optional: true },
        success: CREATED,
        // A run agents started has no stored request to clone.
        refusals: &[ErrorCode::Conflict],
        ..DEFAULT
    },
    Shape {
        rpc: "CompareRuns",
        refusals: &[ErrorCode::RunNotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "StreamRunExport",
        reply: Reply::Lines,
        ..DEFAULT
    },
    Shape {
        rpc: "RunStart",
        body: Body::Field("request"),
        example: Some(include_str!("../../../examples/seed-decision.json")),
        success: STARTED,
        aliases: &[
            Alias {
                location: "query",
                name: "await",
                field: "await_result",
                description: "`true`: answer once the run has ended, with its `result` (as \
                              AwaitRun).",
            },
            Alias {
                location: "query",
                name: "timeoutMs",
                field: "await_timeout_ms",
                description: "How long `await` waits, in milliseconds (default 30000, 1 to \
                              3600000); past it, 408 AWAIT_TIMEOUT with the run in \
                              `details.run` (the run goes on).",
            },
        ],
        // A RunDescriptor naming a session that already has a run; an awaited run that did not
        // end in time.
        refusals: &[ErrorCode::SessionAlreadyExists, ErrorCode::AwaitTimeout],
        ..DEFAULT
    },
    Shape {
        rpc: "WhatIfRun",
        // A run still going; a session whose history the runtime did not keep; a candidate
        // the runtime refuses.
        refusals: &[
            ErrorCode::RunNotTerminal,
            ErrorCode::HistoryUnavailable,
            ErrorCode::InvalidPolicyDefinition,
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
            ErrorCode::RateLimited,
        ],
        example: Some(r#"{"policyVersion": "policy.std.unanimous"}"#),
        ..DEFAULT
    },
    Shape {
        rpc: "GetRunReceipt",
        // The run recorded no receipt.
        refusals: &[ErrorCode::ReceiptNotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "GetRuntimeReceiptKeys",
        refusals: RUNTIME_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "AwaitRun",
        refusals: &[ErrorCode::AwaitTimeout, ErrorCode::TooManySubscribers],
        ..DEFAULT
    },
    Shape {
        rpc: "ValidateRun",
        body: Body::Checked("request"),
        ..DEFAULT
    },
    Shape {
        rpc: "ListRunEvents",
        reply: Reply::BareListUnless(&["types", "after_ts", "before_ts"]),
        aliases: TYPE_ALIAS,
        ..DEFAULT
    },
    Shape {
        rpc: "ListEvents",
        aliases: TYPE_ALIAS,
        // `runId` names a run that must exist.
        refusals: &[ErrorCode::RunNotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "CancelRun",
        body: Body::Message { optional: true },
        refusals: RUNTIME_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "SuspendSession",
        body: Body::Message { optional: true },
        refusals: TOGGLE_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "ResumeSession",
        body: Body::Message { optional: true },
        refusals: TOGGLE_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "ListPolicies",
        reply: Reply::BareList,
        refusals: POLICY_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "GetPolicy",
        refusals: POLICY_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "RegisterPolicy",
        success: CREATED,
        refusals: POLICY_CHANGE_REFUSALS,
        example: Some(include_str!("../../../examples/policy-majority-veto.json")),
        ..DEFAULT
    },
    Shape {
        rpc: "UnregisterPolicy",
        refusals: POLICY_CHANGE_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "WatchRun",
        aliases: &[Alias {
            location: "header",
            name: "Last-Event-ID",
            field: "after_seq",
            description: "Same as `afterSeq` (an EventSource sends it when it reconnects); \
                          the query parameter wins.",
        }],
        refusals: &[ErrorCode::TooManySubscribers],
        ..DEFAULT
    },
    Shape {
        rpc: "CreateReplay",
        body: Body::Message { optional: true },
        success: CREATED,
        ..DEFAULT
    },
    Shape {
        rpc: "SendRunMessage",
        success: SENT,
        refusals: SEND_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "SendRunSignal",
        success: SENT,
        refusals: SEND_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "UpdateRunContext",
        success: SENT,
        refusals: SEND_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "ListRunMessages",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "ListRunArtifacts",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "CreateRunArtifact",
        success: CREATED,
        ..DEFAULT
    },
    Shape {
        rpc: "CreateApiKey",
        success: CREATED,
        ..DEFAULT
    },
    Shape {
        rpc: "RevokeApiKey",
        refusals: &[ErrorCode::NotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "ListRuntimeModes",
        reply: Reply::BareList,
        refusals: RUNTIME_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "ListRuntimeRoots",
        reply: Reply::BareList,
        refusals: RUNTIME_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "ListPacks",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "ListScenarios",
        reply: Reply::BareList,
        refusals: &[ErrorCode::PackNotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "ListAllScenarios",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "CompileLaunch",
        success: CREATED,
        refusals: SCENARIO_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "Launch",
        success: STARTED,
        refusals: SCENARIO_REFUSALS,
        ..DEFAULT
    },
    Shape {
        rpc: "ListAgents",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "GetAgent",
        refusals: &[ErrorCode::AgentNotFound],
        ..DEFAULT
    },
    Shape {
        rpc: "GetLaunchSchema",
        refusals: &[
            ErrorCode::PackNotFound,
            ErrorCode::ScenarioNotFound,
            ErrorCode::VersionNotFound,
            ErrorCode::TemplateNotFound,
            ErrorCode::AgentNotFound,
        ],
        ..DEFAULT
    },
    Shape {
        rpc: "GetRuntimeManifest",
        refusals: RUNTIME_REFUSALS,
        ..DEFAULT
    },
];

/// The shape of an RPC's route: its entry in [`SHAPES`], or the defaults.
pub fn shape(rpc: &str) -> &'static Shape {
    SHAPES
        .iter()
        .find(|shape| shape.rpc == rpc)
        .unwrap_or(&DEFAULT)
}

/// Path parameters whose name is not the request field's (proto name); others bind to the field
/// of their own name.
pub const PATH_FIELDS: &[(&str, &str)] = &[
    ("id", "run_id"),
    ("ref", "agent_ref"),
    ("keyId", "key_id"),
    ("policyId", "policy_id"),
    ("webhookId", "webhook_id"),
];

/// What the server enforces on a field beyond its proto type. Each rule holds for the field's
/// value, or for each item of a repeated field, except [`Rule::Count`].
pub enum Rule {
    /// Requests must carry it (not absent, not `null`). Other fields of a request body may be
    /// `null`, which proto3 JSON reads as absent.
    Required,
    /// A UUID, as run ids are (`format: uuid`).
    Uuid,
    /// An RFC 3339 time (`format: date-time`).
    DateTime,
    /// An RFC 3339 time, or a date (`YYYY-MM-DD`: the start of that day, UTC).
    DayOrDateTime,
    /// Holds a character that is not white space (the server trims before it checks).
    NonBlank,
    /// At most this many characters.
    MaxLength(u64),
    /// Matches this ECMA-262 pattern.
    Pattern(&'static str),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// One of the strings this function lists (for lists the server keeps as an enum).
    OneOfFn(fn() -> Vec<&'static str>),
    /// An integer in this range, bounds included.
    Range(i64, i64),
    /// A number in this range, bounds included.
    Between(f64, f64),
    /// A repeated field's number of items, bounds included.
    Count(u64, u64),
    /// The empty string is taken too, as if the parameter were absent (HTML forms send it).
    OrEmpty,
}

/// The run statuses, as the API writes them.
fn statuses() -> Vec<&'static str> {
    RunStatus::ALL
        .iter()
        .map(|status| status.as_str())
        .collect()
}

const MODES: &[&str] = &["live", "sandbox"];
const ROLES: &[&str] = &["viewer", "operator", "admin", "agent"];
/// No control characters (C0, DEL, C1): names end up in logs and terminals.
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
const REPLAY_MODES: &[&str] = &["instant", "timed", "step"];
/// `pack/scenario@version`: the pack up to the first `/`, the version after the last `@`.
const SCENARIO_REF: &str = "^[^/]+/[\\s\\S]+@[^@]+$";

const BREAKER_STATES: &[&str] = &["CLOSED", "OPEN", "HALF_OPEN"];
const BREAKER_WINDOWS: &[&str] = &["15m", "1h", "6h", "24h", "7d", "30d"];

/// Rules by field: a full field name, or `*.name` for the fields of that name in every message.
pub const RULES: &[(&str, &[Rule])] = &[
    // Webhooks (`webhooks`) and the circuit breaker (`runtime::breaker`).
    (
        "macp.control_plane.v1.CreateWebhookRequest.url",
        &[
            Rule::Required,
            Rule::NonBlank,
            Rule::MaxLength(MAX_URL_LEN as u64),
        ],
    ),
    (
        "macp.control_plane.v1.CreateWebhookRequest.events",
        &[Rule::OneOf(WEBHOOK_EVENTS)],
    ),
    (
        "macp.control_plane.v1.CreateWebhookRequest.secret",
        &[
            Rule::Required,
            Rule::NonBlank,
            Rule::MaxLength(MAX_SECRET_LEN as u64),
        ],
    ),
    (
        "macp.control_plane.v1.UpdateWebhookRequest.url",
        &[Rule::NonBlank, Rule::MaxLength(MAX_URL_LEN as u64)],
    ),
    (
        "macp.control_plane.v1.UpdateWebhookRequest.secret",
        &[Rule::NonBlank, Rule::MaxLength(MAX_SECRET_LEN as u64)],
    ),
    (
        "macp.control_plane.v1.ListWebhookDeliveriesRequest.status",
        &[Rule::OneOfFn(DeliveryStatus::names), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListWebhookDeliveriesRequest.limit",
        &[Rule::Range(1, MAX_DELIVERY_LIMIT as i64)],
    ),
    (
        "macp.control_plane.v1.ListWebhookDeliveriesRequest.offset",
        &[Rule::Range(0, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.Webhook.events",
        &[Rule::OneOf(WEBHOOK_EVENTS)],
    ),
    (
        "macp.control_plane.v1.Webhook.created_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.Webhook.updated_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.WebhookDeliveryStats.last_delivered_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.WebhookDelivery.status",
        &[Rule::OneOfFn(DeliveryStatus::names)],
    ),
    (
        "macp.control_plane.v1.WebhookDelivery.event",
        &[Rule::OneOf(WEBHOOK_EVENTS)],
    ),
    (
        "macp.control_plane.v1.WebhookDelivery.created_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.WebhookDelivery.last_attempt_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.WebhookDelivery.next_attempt_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.WebhookDelivery.delivered_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.GetCircuitBreakerHistoryRequest.window",
        &[Rule::OneOf(BREAKER_WINDOWS), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.GetCircuitBreakerHistoryRequest.since",
        &[Rule::DateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.CircuitBreakerReset.state",
        &[Rule::OneOf(BREAKER_STATES)],
    ),
    (
        "macp.control_plane.v1.CircuitBreakerHistory.state",
        &[Rule::OneOf(BREAKER_STATES)],
    ),
    (
        "macp.control_plane.v1.CircuitBreakerTransition.state",
        &[Rule::OneOf(BREAKER_STATES)],
    ),
    (
        "macp.control_plane.v1.CircuitBreakerTransition.entered_at",
        &[Rule::DateTime],
    ),
    // The dashboard (`domain::dashboard`).
    (
        "macp.control_plane.v1.GetDashboardOverviewRequest.window",
        &[Rule::OneOfFn(dashboard::window_names), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.GetDashboardOverviewRequest.range",
        &[Rule::OneOfFn(dashboard::window_names), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.GetDashboardOverviewRequest.from",
        &[Rule::DayOrDateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.GetDashboardOverviewRequest.to",
        &[Rule::DayOrDateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.DashboardOverview.from",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.DashboardOverview.to",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.DashboardOverview.granularity",
        &[Rule::OneOfFn(dashboard::Granularity::names)],
    ),
    (
        "macp.control_plane.v1.DashboardKpis.success_rate",
        &[Rule::Between(0.0, 1.0)],
    ),
    // Ids and times.
    ("*.run_id", &[Rule::Uuid]),
    ("macp.control_plane.v1.Run.id", &[Rule::Uuid]),
    (
        "macp.control_plane.v1.LaunchResponse.session_id",
        &[Rule::Uuid],
    ),
    ("macp.control_plane.v1.Run.created_at", &[Rule::DateTime]),
    ("macp.control_plane.v1.Run.updated_at", &[Rule::DateTime]),
    ("macp.control_plane.v1.Run.started_at", &[Rule::DateTime]),
    ("macp.control_plane.v1.Run.ended_at", &[Rule::DateTime]),
    ("macp.control_plane.v1.Run.archived_at", &[Rule::DateTime]),
    ("macp.control_plane.v1.CanonicalEvent.ts", &[Rule::DateTime]),
    ("macp.control_plane.v1.Heartbeat.ts", &[Rule::DateTime]),
    (
        "macp.control_plane.v1.Artifact.created_at",
        &[Rule::DateTime],
    ),
    // Enums the answers keep to.
    (
        "macp.control_plane.v1.Run.status",
        &[Rule::OneOfFn(statuses)],
    ),
    ("macp.control_plane.v1.Run.mode", &[Rule::OneOf(MODES)]),
    (
        "macp.control_plane.v1.RunStartResponse.status",
        &[Rule::OneOfFn(statuses)],
    ),
    (
        "macp.control_plane.v1.TraceSummary.run_status",
        &[Rule::OneOfFn(statuses)],
    ),
    (
        "macp.control_plane.v1.Artifact.kind",
        &[Rule::OneOf(ARTIFACT_KINDS)],
    ),
    (
        "macp.control_plane.v1.ReplayDescriptor.mode",
        &[Rule::OneOf(REPLAY_MODES)],
    ),
    // ExecutionRequest (`runs::request`).
    (
        "macp.control_plane.v1.ExecutionRequest.mode",
        &[Rule::OneOf(MODES)],
    ),
    (
        "macp.control_plane.v1.ExecutionRequest.runtime",
        &[Rule::Required],
    ),
    (
        "macp.control_plane.v1.ExecutionRequest.session",
        &[Rule::Required],
    ),
    (
        "macp.control_plane.v1.RuntimeSelector.kind",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.RuntimeSelector.version",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SessionSpec.session_id",
        &[Rule::Pattern(crate::runs::request::SESSION_ID_PATTERN)],
    ),
    (
        "macp.control_plane.v1.SessionSpec.mode_name",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SessionSpec.mode_version",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SessionSpec.configuration_version",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SessionSpec.ttl_ms",
        &[Rule::Required, Rule::Range(1, MAX_TTL_MS)],
    ),
    (
        "macp.control_plane.v1.SessionSpec.initiator_participant_id",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SessionSpec.participants",
        &[Rule::Required, Rule::Count(1, MAX_PARTICIPANTS as u64)],
    ),
    (
        "macp.control_plane.v1.SessionSpec.context_id",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.ParticipantRef.id",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.ParticipantRef.role",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.ParticipantRef.transport_identity",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.Root.uri",
        &[Rule::Required, Rule::NonBlank],
    ),
    ("macp.control_plane.v1.Root.name", &[Rule::NonBlank]),
    (
        "macp.control_plane.v1.CommitmentSpec.id",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.CommitmentSpec.title",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.CommitmentSpec.description",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.CommitmentSpec.required_roles",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.CommitmentSpec.policy_ref",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.KickoffMessage.from",
        &[Rule::Required, Rule::NonBlank],
    ),
    ("macp.control_plane.v1.KickoffMessage.to", &[Rule::NonBlank]),
    (
        "macp.control_plane.v1.KickoffMessage.kind",
        &[Rule::OneOf(KICKOFF_KINDS)],
    ),
    (
        "macp.control_plane.v1.KickoffMessage.message_type",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.PayloadEnvelope.encoding",
        &[Rule::Required, Rule::OneOf(ENCODINGS)],
    ),
    (
        "macp.control_plane.v1.ExecutionOptions.idempotency_key",
        &[
            Rule::NonBlank,
            Rule::MaxLength(MAX_IDEMPOTENCY_KEY_LEN as u64),
        ],
    ),
    (
        "macp.control_plane.v1.ExecutionOptions.tags",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.Requester.actor_id",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.Requester.actor_type",
        &[Rule::OneOf(ACTOR_TYPES)],
    ),
    // Run queries (`domain::query`).
    // The audit log and API keys (`auth::admin`).
    (
        "macp.control_plane.v1.ListAuditRequest.created_after",
        &[Rule::DateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListAuditRequest.created_before",
        &[Rule::DateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListAuditRequest.limit",
        &[Rule::Range(1, MAX_AUDIT_LIMIT as i64)],
    ),
    (
        "macp.control_plane.v1.ListAuditRequest.offset",
        &[Rule::Range(0, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.AuditEntry.created_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.AuditEntry.outcome",
        &[Rule::OneOf(&["ok", "refused"])],
    ),
    (
        "macp.control_plane.v1.CreateApiKeyRequest.actor",
        &[
            Rule::Required,
            Rule::NonBlank,
            Rule::MaxLength(MAX_KEY_NAME_LEN as u64),
            Rule::Pattern(PRINTABLE),
        ],
    ),
    (
        "macp.control_plane.v1.CreateApiKeyRequest.roles",
        &[
            Rule::Required,
            Rule::Count(1, ROLES.len() as u64),
            Rule::OneOf(ROLES),
        ],
    ),
    (
        "macp.control_plane.v1.CreateApiKeyRequest.participants",
        &[
            Rule::NonBlank,
            Rule::MaxLength(MAX_KEY_NAME_LEN as u64),
            Rule::Pattern(PRINTABLE),
        ],
    ),
    ("macp.control_plane.v1.ApiKey.created_at", &[Rule::DateTime]),
    ("macp.control_plane.v1.ApiKey.revoked_at", &[Rule::DateTime]),
    (
        "macp.control_plane.v1.ListRunsRequest.status",
        &[Rule::OneOfFn(statuses), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListRunsRequest.created_after",
        &[Rule::DayOrDateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListRunsRequest.created_before",
        &[Rule::DayOrDateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListRunsRequest.limit",
        &[Rule::Range(1, MAX_RUN_LIMIT as i64)],
    ),
    (
        "macp.control_plane.v1.ListRunsRequest.offset",
        &[Rule::Range(0, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.ListRunsRequest.sort_by",
        &[Rule::OneOf(&["createdAt", "updatedAt"]), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListRunsRequest.sort_order",
        &[Rule::OneOf(&["asc", "desc"]), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListRunEventsRequest.after_seq",
        &[Rule::Range(0, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.ListRunEventsRequest.limit",
        &[Rule::Range(1, MAX_EVENT_LIMIT as i64)],
    ),
    (
        "macp.control_plane.v1.ListRunEventsRequest.after_ts",
        &[Rule::DateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListRunEventsRequest.before_ts",
        &[Rule::DateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListEventsRequest.after_seq",
        &[Rule::Range(0, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.ListEventsRequest.limit",
        &[Rule::Range(1, MAX_EVENT_LIMIT as i64)],
    ),
    (
        "macp.control_plane.v1.ListEventsRequest.after_ts",
        &[Rule::DateTime, Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ListEventsRequest.before_ts",
        &[Rule::DateTime, Rule::OrEmpty],
    ),
    // Awaiting a run's end (`runs::outcome`).
    (
        "macp.control_plane.v1.AwaitRunRequest.timeout_ms",
        &[Rule::Range(1, MAX_AWAIT_TIMEOUT_MS as i64)],
    ),
    (
        "macp.control_plane.v1.RunStartRequest.await_timeout_ms",
        &[Rule::Range(1, MAX_AWAIT_TIMEOUT_MS as i64)],
    ),
    // Streams and replay (`api::http::streams`, `replay`).
    (
        "macp.control_plane.v1.WatchRunRequest.after_seq",
        &[Rule::Range(0, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.WatchRunRequest.heartbeat_ms",
        &[Rule::Range(MIN_HEARTBEAT_MS, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.WatchRunRequest.wait_for_run_ms",
        &[Rule::Range(0, MAX_WAIT_FOR_RUN_MS)],
    ),
    (
        "macp.control_plane.v1.CreateReplayRequest.mode",
        &[Rule::OneOf(REPLAY_MODES), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.CreateReplayRequest.speed",
        &[Rule::Between(MIN_SPEED, MAX_SPEED)],
    ),
    (
        "macp.control_plane.v1.CreateReplayRequest.from_seq",
        &[Rule::Range(1, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.CreateReplayRequest.to_seq",
        &[Rule::Range(1, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.ReplayRunRequest.mode",
        &[Rule::OneOf(REPLAY_MODES), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.ReplayRunRequest.speed",
        &[Rule::Between(MIN_SPEED, MAX_SPEED)],
    ),
    (
        "macp.control_plane.v1.ReplayRunRequest.from_seq",
        &[Rule::Range(1, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.ReplayRunRequest.to_seq",
        &[Rule::Range(1, MAX_UINT32)],
    ),
    (
        "macp.control_plane.v1.GetReplayStateRequest.seq",
        &[Rule::Range(0, MAX_UINT32)],
    ),
    // Messages (`runs::messages`).
    (
        "macp.control_plane.v1.SendRunMessageRequest.from",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunMessageRequest.to",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunMessageRequest.message_type",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunMessageRequest.message_id",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunSignalRequest.from",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunSignalRequest.to",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunSignalRequest.signal_type",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunSignalRequest.confidence",
        &[Rule::Between(0.0, 1.0)],
    ),
    (
        "macp.control_plane.v1.SendRunSignalRequest.severity",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.SendRunSignalRequest.message_id",
        &[Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.UpdateRunContextRequest.from",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.UpdateRunContextRequest.context",
        &[Rule::Required],
    ),
    (
        "macp.control_plane.v1.UpdateRunContextRequest.message_id",
        &[Rule::NonBlank],
    ),
    // Artifacts (`runs::observability`).
    (
        "macp.control_plane.v1.CreateRunArtifactRequest.kind",
        &[Rule::Required, Rule::OneOf(ARTIFACT_KINDS)],
    ),
    (
        "macp.control_plane.v1.CreateRunArtifactRequest.label",
        &[
            Rule::Required,
            Rule::NonBlank,
            Rule::MaxLength(MAX_LABEL_LEN as u64),
        ],
    ),
    (
        "macp.control_plane.v1.CreateRunArtifactRequest.uri",
        &[Rule::NonBlank],
    ),
    // Policies (`runtime::policies`).
    (
        "macp.control_plane.v1.RegisterPolicyRequest.policy_id",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.RegisterPolicyRequest.mode",
        &[Rule::Required, Rule::NonBlank],
    ),
    (
        "macp.control_plane.v1.RegisterPolicyRequest.rules",
        &[Rule::Required],
    ),
    (
        "macp.control_plane.v1.RegisterPolicyRequest.schema_version",
        &[Rule::Range(1, MAX_UINT32)],
    ),
    // Run management (`runs::manage`).
    (
        "macp.control_plane.v1.CompareRunsRequest.left_run_id",
        &[Rule::Required, Rule::Uuid],
    ),
    (
        "macp.control_plane.v1.CompareRunsRequest.right_run_id",
        &[Rule::Required, Rule::Uuid],
    ),
    (
        "macp.control_plane.v1.RunSide.status",
        &[Rule::OneOfFn(statuses)],
    ),
    (
        "macp.control_plane.v1.ExportRunRequest.event_limit",
        &[Rule::Range(1, MAX_EXPORT_EVENTS)],
    ),
    (
        "macp.control_plane.v1.ExportRunRequest.format",
        &[Rule::OneOf(EXPORT_FORMATS), Rule::OrEmpty],
    ),
    (
        "macp.control_plane.v1.RunExport.exported_at",
        &[Rule::DateTime],
    ),
    (
        "macp.control_plane.v1.BatchRunsRequest.action",
        &[Rule::OneOf(BATCH_ACTIONS)],
    ),
    (
        "macp.control_plane.v1.BatchRunsRequest.run_ids",
        &[
            Rule::Required,
            Rule::Count(1, MAX_BATCH_RUNS as u64),
            Rule::Uuid,
        ],
    ),
    // Compile and launch (`registry::compiler`, `launch`).
    (
        "macp.control_plane.v1.CompileLaunchRequest.scenario_ref",
        &[Rule::Required, Rule::Pattern(SCENARIO_REF)],
    ),
    (
        "macp.control_plane.v1.CompileLaunchRequest.mode",
        &[Rule::OneOf(MODES)],
    ),
    (
        "macp.control_plane.v1.CompileLaunchRequest.inputs",
        &[Rule::Required],
    ),
    (
        "macp.control_plane.v1.LaunchRequest.scenario_ref",
        &[Rule::Required, Rule::Pattern(SCENARIO_REF)],
    ),
    (
        "macp.control_plane.v1.LaunchRequest.mode",
        &[Rule::OneOf(MODES)],
    ),
    (
        "macp.control_plane.v1.LaunchRequest.inputs",
        &[Rule::Required],
    ),
];

/// Answer fields without proto3 presence that an answer still leaves out (full field names; the
/// proto's comments say when). Other such fields of messages only ever returned are `required`.
pub const SOMETIMES_ABSENT: &[&str] = &[
    // With `submitToControlPlane: false` no run fields are sent.
    "macp.control_plane.v1.LaunchResponse.existing",
];

/// SSE frames of the streaming routes: the response message's oneof fields become frames named
/// after the field, except these (oneof field, SSE event name, field of the data that is the
/// frame's `id:`).
pub const SSE_FRAMES: &[(&str, &str, Option<&str>)] = &[("event", "canonical_event", Some("seq"))];

/// An operational route (no RPC behind it).
pub struct Ops {
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub media_type: &'static str,
    /// JSON Schema of the answer.
    pub schema: &'static str,
    pub statuses: &'static [(u16, &'static str)],
}

pub const OPS: &[Ops] = &[
    Ops {
        path: "/healthz",
        operation_id: "Healthz",
        summary: "Liveness: whether the database answers.",
        media_type: "application/json",
        schema: r#"{"type": "object", "properties": {"ok": {"type": "boolean"},
                    "service": {"type": "string"}}, "required": ["ok", "service"]}"#,
        statuses: &[
            (200, "The database answers."),
            (503, "The database does not answer."),
        ],
    },
    Ops {
        path: "/readyz",
        operation_id: "Readyz",
        summary: "Readiness: whether the database and the runtime answer, with the reason when not.",
        media_type: "application/json",
        schema: r#"{"type": "object", "properties": {"ok": {"type": "boolean"},
                    "database": {"type": "string"},
                    "runtime": {"type": "object", "description": "As GET /runtime/health."},
                    "streamConsumer": {"enum": ["ok", "unhealthy"],
                      "description": "Whether the runtime's session feed is followed."},
                    "circuitBreaker": {"enum": ["CLOSED", "OPEN", "HALF_OPEN"],
                      "description": "The runtime circuit breaker's state."},
                    "cluster": {"type": "object",
                      "description": "With CLUSTER_ENABLED: this replica, whether it holds the leader lock, the active runs it owns, and the replicas whose lease is current.",
                      "properties": {"replicaId": {"type": "string"}, "leader": {"type": "boolean"},
                        "ownedRuns": {"type": "array", "items": {"type": "string"}},
                        "replicas": {"type": "array", "items": {"type": "object",
                          "properties": {"id": {"type": "string"}, "runs": {"type": "integer"}},
                          "required": ["id", "runs"]}}},
                      "required": ["replicaId", "leader", "ownedRuns", "replicas"]}},
                    "required": ["ok", "database", "runtime", "streamConsumer", "circuitBreaker"]}"#,
        statuses: &[(200, "Ready."), (503, "Not ready yet.")],
    },
    Ops {
        path: "/metrics",
        operation_id: "Metrics",
        summary: "Prometheus metrics (text exposition format 0.0.4).",
        media_type: "text/plain",
        schema: r#"{"type": "string"}"#,
        statuses: OK,
    },
    Ops {
        path: "/openapi.json",
        operation_id: "OpenApi",
        summary: "This document: OpenAPI 3.1, generated from the protos and the route table.",
        media_type: "application/json",
        schema: r#"{"type": "object"}"#,
        statuses: OK,
    },
    Ops {
        path: "/docs",
        operation_id: "Docs",
        summary: "This document as a readable HTML page.",
        media_type: "text/html",
        schema: r#"{"type": "string"}"#,
        statuses: OK,
    },
];
