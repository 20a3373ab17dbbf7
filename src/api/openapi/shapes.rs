//! Where a REST route's shape differs from its RPC's messages, in one table. This file is the only
//! hand-written part of the OpenAPI document: operations, parameters, bodies, schemas and their
//! descriptions come from the protos (`api::proto`) and the route table (`api::routes`). An RPC
//! that is not listed here gets the defaults — the request message (minus the fields bound to path
//! parameters) as query parameters or JSON body, and `200` with the response message — so a new
//! RPC shows up in the document as soon as it has a route.

/// How one RPC's REST route departs from the defaults.
pub struct Shape {
    pub rpc: &'static str,
    pub body: Body,
    /// Success statuses with what each means; the default is `200`.
    pub success: &'static [(u16, &'static str)],
    pub reply: Reply,
    /// Parameters that set a request field under another name or in a header.
    pub aliases: &'static [Alias],
}

/// What a POST route's JSON body is.
pub enum Body {
    /// The request message minus the path-bound fields; `optional` when the body may be omitted.
    Message { optional: bool },
    /// One field of the request message is the whole body (google.api.http's `body: "field"`).
    Field(&'static str),
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
/// The event filters accept `type` as well as `types`.
const TYPE_ALIAS: &[Alias] = &[Alias {
    location: "query",
    name: "type",
    field: "types",
    description: "Same as `types`.",
}];

pub const SHAPES: &[Shape] = &[
    Shape {
        rpc: "RunStart",
        body: Body::Field("request"),
        success: STARTED,
        ..DEFAULT
    },
    Shape {
        rpc: "ValidateRun",
        body: Body::Field("request"),
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
        ..DEFAULT
    },
    Shape {
        rpc: "CancelRun",
        body: Body::Message { optional: true },
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
        ..DEFAULT
    },
    Shape {
        rpc: "SendRunSignal",
        success: SENT,
        ..DEFAULT
    },
    Shape {
        rpc: "UpdateRunContext",
        success: SENT,
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
        rpc: "ListRuntimeModes",
        reply: Reply::BareList,
        ..DEFAULT
    },
    Shape {
        rpc: "ListRuntimeRoots",
        reply: Reply::BareList,
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
        ..DEFAULT
    },
    Shape {
        rpc: "Launch",
        success: STARTED,
        ..DEFAULT
    },
    Shape {
        rpc: "ListAgents",
        reply: Reply::BareList,
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
pub const PATH_FIELDS: &[(&str, &str)] = &[("id", "run_id"), ("ref", "agent_ref")];

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
                    "runtime": {"type": "object", "description": "As GET /runtime/health."}},
                    "required": ["ok", "database", "runtime"]}"#,
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
