//! The ExecutionRequest: parsed from JSON (REST body, or the proto3 JSON of the gRPC message) into
//! a validated plan whose payloads are already encoded for the runtime.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::json_fields::{Obj, Problems, index};
use crate::domain::commitment::CommitmentSpec;
use crate::runtime::codec;

/// The runtime's TTL bound (24 h).
pub const MAX_TTL_MS: i64 = 86_400_000;
/// The runtime refuses more participants than this.
pub const MAX_PARTICIPANTS: usize = 1000;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// What `execution.requester.actorType` may be.
pub const ACTOR_TYPES: &[&str] = &["user", "service", "system"];
/// The payload envelope's encodings.
pub const ENCODINGS: &[&str] = &["json", "text", "base64", "proto"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Live,
    Sandbox,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Live => "live",
            RunMode::Sandbox => "sandbox",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Participant {
    pub id: String,
    pub role: Option<String>,
    pub transport_identity: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Root {
    pub uri: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// A session id chosen ahead (a RunDescriptor): the agents start this session themselves,
    /// and the control plane binds the run when its initiator does.
    pub session_id: Option<String>,
    pub mode_name: String,
    pub mode_version: String,
    pub configuration_version: String,
    pub policy_version: Option<String>,
    pub ttl_ms: i64,
    /// After the fallback rule: explicit → first kickoff sender → requester → first participant.
    pub initiator: String,
    pub participants: Vec<Participant>,
    pub roots: Vec<Root>,
    /// The session context as JSON (from `context`, or a JSON/text `contextEnvelope`).
    pub context: Option<Value>,
    /// The encoded context bytes carried to the runtime in `SessionStartPayload.extensions`.
    pub context_bytes: Option<Vec<u8>>,
    pub context_id: Option<String>,
    pub metadata: Map<String, Value>,
    pub commitments: Vec<CommitmentSpec>,
}

impl SessionSpec {
    pub fn intent(&self) -> String {
        self.metadata
            .get("intent")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Debug, Clone)]
pub struct KickoffMessage {
    pub from: String,
    pub to: Vec<String>,
    pub kind: String,
    pub message_type: String,
    /// The bytes sent as `Envelope.payload`.
    pub payload: Vec<u8>,
    /// What the payload was, for events: `{encoding, typeName?}`.
    pub payload_descriptor: Value,
}

#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub actor_id: Option<String>,
    pub actor_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExecutionRequest {
    pub mode: RunMode,
    pub runtime_kind: String,
    pub runtime_version: Option<String>,
    pub session: SessionSpec,
    pub kickoff: Vec<KickoffMessage>,
    pub idempotency_key: Option<String>,
    pub tags: Vec<String>,
    pub requester: Requester,
    /// The request as received, kept on the run (`metadata.executionRequest`).
    pub raw: Value,
}

/// Parses and validates a request. All problems are reported, each with its field path.
pub fn parse(raw: &Value) -> Result<(ExecutionRequest, Vec<String>), Problems> {
    let mut problems = Problems::default();
    let parsed = parse_inner(raw, &mut problems);
    match parsed {
        Some(request) if problems.is_empty() => Ok((request, problems.warnings)),
        _ => Err(problems),
    }
}

fn parse_inner(raw: &Value, problems: &mut Problems) -> Option<ExecutionRequest> {
    let root = Obj::expect(raw, "", problems)?;
    root.warn_unknown(
        &["mode", "runtime", "session", "kickoff", "execution"],
        problems,
    );

    let mode = match root.optional_str("mode", problems).as_deref() {
        None | Some("live") => Some(RunMode::Live),
        Some("sandbox") => Some(RunMode::Sandbox),
        Some("replay") => {
            problems.push(
                "mode",
                "replay is not a run mode: use POST /runs/{id}/replay to replay a stored run",
            );
            None
        }
        Some(other) => {
            problems.push(
                "mode",
                format!("must be 'live' or 'sandbox', got '{other}'"),
            );
            None
        }
    };

    let runtime = match root.get("runtime") {
        Some(value) => Obj::expect(value, "runtime", problems),
        None => {
            problems.push("runtime", "is required");
            None
        }
    };
    let (runtime_kind, runtime_version) = match &runtime {
        Some(runtime) => {
            runtime.warn_unknown(&["kind", "version"], problems);
            (
                runtime.required_str("kind", problems),
                runtime.optional_str("version", problems),
            )
        }
        None => (None, None),
    };

    let execution = root.optional_object("execution", problems);
    let (idempotency_key, tags, requester) = match &execution {
        Some(execution) => parse_execution(execution, problems),
        None => (None, Vec::new(), Requester::default()),
    };

    let session = match root.get("session") {
        Some(value) => Obj::expect(value, "session", problems),
        None => {
            problems.push("session", "is required");
            None
        }
    };
    let kickoff_items = root.optional_array("kickoff", problems);
    let first_sender = kickoff_items
        .and_then(|items| items.first())
        .and_then(|item| item.get("from"))
        .and_then(Value::as_str)
        .filter(|from| !from.trim().is_empty());
    let (session, roster) = match session {
        Some(session) => parse_session(&session, first_sender, &requester, problems),
        None => (None, Roster::default()),
    };
    // A RunDescriptor's session is started by its agents: nothing of ours may be sent in it.
    if session
        .as_ref()
        .is_some_and(|session| session.session_id.is_some())
        && kickoff_items.is_some_and(|items| !items.is_empty())
    {
        problems.push(
            "kickoff",
            "must be empty when session.sessionId is set: the agents start that session",
        );
    }
    // Kickoff problems are reported even when the session has problems of its own.
    let kickoff = match kickoff_items {
        Some(items) if session.is_some() || !roster.members.is_empty() => {
            parse_kickoff(items, &roster, problems)
        }
        _ => Vec::new(),
    };

    let mut tags = tags;
    if mode == Some(RunMode::Sandbox) && !tags.iter().any(|tag| tag == "sandbox") {
        tags.push("sandbox".to_owned());
    }
    Some(ExecutionRequest {
        mode: mode?,
        runtime_kind: runtime_kind?,
        runtime_version,
        session: session?,
        kickoff,
        idempotency_key,
        tags,
        requester,
        raw: raw.clone(),
    })
}

fn parse_execution(
    execution: &Obj<'_>,
    problems: &mut Problems,
) -> (Option<String>, Vec<String>, Requester) {
    execution.warn_unknown(&["idempotencyKey", "tags", "requester"], problems);
    let key = execution.optional_str("idempotencyKey", problems);
    if key
        .as_ref()
        .is_some_and(|key| key.chars().count() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        problems.push(
            execution.field("idempotencyKey"),
            format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        );
    }
    let mut tags = Vec::new();
    for tag in execution.optional_strings("tags", problems) {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let requester = match execution.optional_object("requester", problems) {
        Some(requester) => {
            requester.warn_unknown(&["actorId", "actorType"], problems);
            let actor_type = requester.optional_str("actorType", problems);
            if let Some(kind) = &actor_type
                && !ACTOR_TYPES.contains(&kind.as_str())
            {
                problems.push(
                    requester.field("actorType"),
                    format!("must be one of {}; got '{kind}'", ACTOR_TYPES.join(", ")),
                );
            }
            Requester {
                actor_id: requester.optional_str("actorId", problems),
                actor_type,
            }
        }
        None => Requester::default(),
    };
    (key, tags, requester)
}

/// Who may send and receive kickoff messages, known even when other session fields are bad.
#[derive(Debug, Default)]
struct Roster {
    mode: String,
    members: HashSet<String>,
}

impl Roster {
    fn is_member(&self, id: &str) -> bool {
        self.members.contains(id)
    }
}

fn parse_session(
    session: &Obj<'_>,
    first_kickoff_sender: Option<&str>,
    requester: &Requester,
    problems: &mut Problems,
) -> (Option<SessionSpec>, Roster) {
    session.warn_unknown(
        &[
            "sessionId",
            "modeName",
            "modeVersion",
            "configurationVersion",
            "policyVersion",
            "policyHints",
            "ttlMs",
            "initiatorParticipantId",
            "participants",
            "roots",
            "context",
            "contextEnvelope",
            "contextId",
            "metadata",
            "commitments",
        ],
        problems,
    );
    let session_id = session.optional_str("sessionId", problems);
    if let Some(id) = &session_id
        && !is_session_id(id)
    {
        problems.push(
            session.field("sessionId"),
            "must be at least 22 characters of A-Z, a-z, 0-9, '_' and '-' (a UUID is)",
        );
    }
    let mode_name = session.required_str("modeName", problems);
    let mode_version = session.required_str("modeVersion", problems);
    let configuration_version = session.required_str("configurationVersion", problems);
    let policy_version = session
        .optional_any_str("policyVersion", problems)
        .filter(|version| !version.is_empty());
    let ttl_ms = match session.optional_i64("ttlMs", problems) {
        Some(ttl) if (1..=MAX_TTL_MS).contains(&ttl) => Some(ttl),
        Some(ttl) => {
            problems.push(
                session.field("ttlMs"),
                format!("must be between 1 and {MAX_TTL_MS} (24 h), got {ttl}"),
            );
            None
        }
        None if session.get("ttlMs").is_none() => {
            problems.push(session.field("ttlMs"), "is required");
            None
        }
        None => None,
    };
    let participants = parse_participants(session, problems);
    let explicit_initiator = session.optional_str("initiatorParticipantId", problems);
    let roots = parse_roots(session, problems);
    let metadata = session
        .optional_map("metadata", problems)
        .unwrap_or_default();
    let commitments = parse_commitments(session, problems);
    let context_id = session.optional_str("contextId", problems);

    let context_value = session.optional_map("context", problems).map(Value::Object);
    let (context, context_bytes) = match session.optional_object("contextEnvelope", problems) {
        Some(envelope) => match encode_envelope(&envelope, problems) {
            Some(encoded) => (encoded.json.or(context_value), Some(encoded.bytes)),
            None => (context_value, None),
        },
        None => {
            let bytes = context_value
                .as_ref()
                .map(|value| value.to_string().into_bytes());
            (context_value, bytes)
        }
    };

    // The seed's fallback rule for the session initiator.
    let initiator = explicit_initiator
        .or_else(|| first_kickoff_sender.map(str::to_owned))
        .or_else(|| requester.actor_id.clone())
        .or_else(|| participants.first().map(|p| p.id.clone()));
    if initiator.is_none() && !participants.is_empty() {
        problems.push(
            session.field("initiatorParticipantId"),
            "could not be derived: set it, or a kickoff sender, or execution.requester.actorId",
        );
    }

    let mut members: HashSet<String> = participants.iter().map(|p| p.id.clone()).collect();
    members.extend(initiator.clone());
    let roster = Roster {
        mode: mode_name.clone().unwrap_or_default(),
        members,
    };
    let spec = match (
        mode_name,
        mode_version,
        configuration_version,
        ttl_ms,
        initiator,
    ) {
        (
            Some(mode_name),
            Some(mode_version),
            Some(configuration_version),
            Some(ttl_ms),
            Some(initiator),
        ) => Some(SessionSpec {
            session_id,
            mode_name,
            mode_version,
            configuration_version,
            policy_version,
            ttl_ms,
            initiator,
            participants,
            roots,
            context,
            context_bytes,
            context_id,
            metadata,
            commitments,
        }),
        _ => None,
    };
    (spec, roster)
}

fn parse_participants(session: &Obj<'_>, problems: &mut Problems) -> Vec<Participant> {
    let path = session.field("participants");
    let Some(items) = session.optional_array("participants", problems) else {
        if session.get("participants").is_none() {
            problems.push(path, "is required");
        }
        return Vec::new();
    };
    if items.is_empty() {
        problems.push(&path, "must list at least one participant");
    }
    if items.len() > MAX_PARTICIPANTS {
        problems.push(
            &path,
            format!("must list at most {MAX_PARTICIPANTS} participants"),
        );
    }
    let mut seen = HashSet::new();
    let mut participants = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let item_path = index(&path, position);
        let Some(participant) = Obj::expect(item, &item_path, problems) else {
            continue;
        };
        participant.warn_unknown(&["id", "role", "transportIdentity", "metadata"], problems);
        let id = participant.required_str("id", problems);
        let role = participant.optional_str("role", problems);
        let transport_identity = participant.optional_str("transportIdentity", problems);
        participant.optional_map("metadata", problems);
        if let Some(id) = id {
            if !seen.insert(id.clone()) {
                problems.push(
                    participant.field("id"),
                    format!("duplicate participant '{id}'"),
                );
            }
            participants.push(Participant {
                id,
                role,
                transport_identity,
            });
        }
    }
    participants
}

fn parse_roots(session: &Obj<'_>, problems: &mut Problems) -> Vec<Root> {
    let Some(items) = session.optional_array("roots", problems) else {
        return Vec::new();
    };
    let path = session.field("roots");
    items
        .iter()
        .enumerate()
        .filter_map(|(position, item)| {
            let root = Obj::expect(item, &index(&path, position), problems)?;
            root.warn_unknown(&["uri", "name"], problems);
            let uri = root.required_str("uri", problems);
            let name = root.optional_str("name", problems);
            Some(Root { uri: uri?, name })
        })
        .collect()
}

fn parse_commitments(session: &Obj<'_>, problems: &mut Problems) -> Vec<CommitmentSpec> {
    let Some(items) = session.optional_array("commitments", problems) else {
        return Vec::new();
    };
    let path = session.field("commitments");
    let mut seen = HashSet::new();
    let mut commitments = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let Some(commitment) = Obj::expect(item, &index(&path, position), problems) else {
            continue;
        };
        commitment.warn_unknown(
            &["id", "title", "description", "requiredRoles", "policyRef"],
            problems,
        );
        let id = commitment.required_str("id", problems);
        let title = commitment.required_str("title", problems);
        let description = commitment.optional_str("description", problems);
        let required_roles = commitment.optional_strings("requiredRoles", problems);
        let policy_ref = commitment.optional_str("policyRef", problems);
        let Some(id) = id else { continue };
        if !seen.insert(id.clone()) {
            problems.push(
                commitment.field("id"),
                format!("duplicate commitment '{id}'"),
            );
        }
        commitments.push(CommitmentSpec {
            id,
            title,
            description,
            required_roles,
            policy_ref,
        });
    }
    commitments
}

pub const KICKOFF_KINDS: &[&str] = &["request", "broadcast", "proposal", "context"];

fn parse_kickoff(items: &[Value], roster: &Roster, problems: &mut Problems) -> Vec<KickoffMessage> {
    let mut messages = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let path = index("kickoff", position);
        let Some(message) = Obj::expect(item, &path, problems) else {
            continue;
        };
        message.warn_unknown(
            &[
                "from",
                "to",
                "kind",
                "messageType",
                "payload",
                "payloadEnvelope",
                "metadata",
            ],
            problems,
        );
        let from = message.required_str("from", problems);
        if let Some(from) = &from
            && !roster.is_member(from)
        {
            problems.push(
                message.field("from"),
                format!("'{from}' is neither a participant nor the initiator"),
            );
        }
        let to = message.optional_strings("to", problems);
        for (recipient_position, recipient) in to.iter().enumerate() {
            if !roster.is_member(recipient) {
                problems.push(
                    index(&message.field("to"), recipient_position),
                    format!("'{recipient}' is neither a participant nor the initiator"),
                );
            }
        }
        let kind = message
            .optional_str("kind", problems)
            .unwrap_or_else(|| "request".to_owned());
        if !KICKOFF_KINDS.contains(&kind.as_str()) {
            problems.push(
                message.field("kind"),
                format!("must be one of {}; got '{kind}'", KICKOFF_KINDS.join(", ")),
            );
        }
        let message_type = message.required_str("messageType", problems);
        message.optional_map("metadata", problems);
        let encoded = message_payload(&message, &roster.mode, message_type.as_deref(), problems);
        if let (Some(from), Some(message_type), Some(encoded)) = (from, message_type, encoded) {
            messages.push(KickoffMessage {
                from,
                to,
                kind,
                message_type,
                payload: encoded.bytes,
                payload_descriptor: encoded.descriptor,
            });
        }
    }
    messages
}

/// A payload encoded for the runtime.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    /// The payload as JSON, when it is JSON (for the run's context).
    pub json: Option<Value>,
    /// What the payload was, for events: `{encoding, typeName?}`.
    pub descriptor: Value,
}

/// The payload of a message object: its `payloadEnvelope` when given, else its plain `payload`
/// (an empty object when neither is).
pub(crate) fn message_payload(
    message: &Obj<'_>,
    mode: &str,
    message_type: Option<&str>,
    problems: &mut Problems,
) -> Option<Encoded> {
    match message.optional_object("payloadEnvelope", problems) {
        Some(envelope) => {
            // The envelope wins; a `payload` beside it is unused but must still be an object.
            message.optional_map("payload", problems);
            encode_envelope(&envelope, problems)
        }
        None => {
            let payload = message
                .optional_map("payload", problems)
                .unwrap_or_default();
            encode_plain_payload(
                mode,
                message_type,
                Value::Object(payload),
                &message.field("payload"),
                problems,
            )
        }
    }
}

/// A plain JSON `payload`: encoded as the message type's proto when the runtime has one for it
/// (the runtime refuses JSON for typed messages), otherwise sent as UTF-8 JSON.
fn encode_plain_payload(
    mode: &str,
    message_type: Option<&str>,
    payload: Value,
    path: &str,
    problems: &mut Problems,
) -> Option<Encoded> {
    match message_type.and_then(|message_type| codec::payload_type(mode, message_type)) {
        Some(type_name) => match codec::encode_proto(type_name, &payload) {
            Ok(bytes) => Some(Encoded {
                bytes,
                json: Some(payload),
                descriptor: serde_json::json!({"encoding": "proto", "typeName": type_name}),
            }),
            Err(error) => {
                problems.push(path, format!("does not fit {type_name}: {error}"));
                None
            }
        },
        None => Some(Encoded {
            bytes: payload.to_string().into_bytes(),
            json: Some(payload),
            descriptor: serde_json::json!({"encoding": "json"}),
        }),
    }
}

fn encode_envelope(envelope: &Obj<'_>, problems: &mut Problems) -> Option<Encoded> {
    envelope.warn_unknown(
        &["encoding", "mediaType", "json", "text", "base64", "proto"],
        problems,
    );
    let encoding = envelope.required_str("encoding", problems)?;
    // Fields the encoding does not read are unused, but must still have their types.
    envelope.optional_any_str("mediaType", problems);
    for key in ["text", "base64"] {
        if encoding != key {
            envelope.optional_any_str(key, problems);
        }
    }
    if encoding != "proto"
        && let Some(proto) = envelope.optional_object("proto", problems)
    {
        proto.optional_any_str("typeName", problems);
        proto.optional_map("value", problems);
    }
    match encoding.as_str() {
        "json" => {
            let json = envelope
                .get("json")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new()));
            Some(Encoded {
                bytes: json.to_string().into_bytes(),
                json: Some(json),
                descriptor: serde_json::json!({"encoding": "json"}),
            })
        }
        "text" => {
            let text = envelope.required_str("text", problems)?;
            Some(Encoded {
                bytes: text.clone().into_bytes(),
                json: Some(Value::String(text)),
                descriptor: serde_json::json!({"encoding": "text"}),
            })
        }
        "base64" => {
            let text = envelope.required_str("base64", problems)?;
            match codec::decode_base64(&text) {
                Ok(bytes) => Some(Encoded {
                    bytes,
                    json: None,
                    descriptor: serde_json::json!({"encoding": "base64"}),
                }),
                Err(error) => {
                    problems.push(envelope.field("base64"), error);
                    None
                }
            }
        }
        "proto" => {
            let Some(proto) = envelope.optional_object("proto", problems) else {
                problems.push(envelope.field("proto"), "is required for encoding 'proto'");
                return None;
            };
            proto.warn_unknown(&["typeName", "value"], problems);
            let type_name = proto.required_str("typeName", problems)?;
            let value = proto
                .optional_map("value", problems)
                .map(Value::Object)
                .unwrap_or_else(|| Value::Object(Map::new()));
            if codec::runtime_pool()
                .get_message_by_name(&type_name)
                .is_none()
            {
                problems.push(
                    proto.field("typeName"),
                    format!("unknown proto type '{type_name}'"),
                );
                return None;
            }
            match codec::encode_proto(&type_name, &value) {
                Ok(bytes) => Some(Encoded {
                    bytes,
                    json: Some(value),
                    descriptor: serde_json::json!({"encoding": "proto", "typeName": type_name}),
                }),
                Err(error) => {
                    problems.push(proto.field("value"), error);
                    None
                }
            }
        }
        other => {
            problems.push(
                envelope.field("encoding"),
                format!("must be one of {}; got '{other}'", ENCODINGS.join(", ")),
            );
            None
        }
    }
}

/// A session id the runtime takes (its `session.rs` rule): 22+ URL-safe characters, which a
/// hyphenated UUID is too.
pub fn is_session_id(id: &str) -> bool {
    id.len() >= 22
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// [`is_session_id`] as a pattern, for the API document.
pub const SESSION_ID_PATTERN: &str = "^[A-Za-z0-9_-]{22,}$";
