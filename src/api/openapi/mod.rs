//! The OpenAPI 3.1 description of every REST route, generated — never written by hand — from the
//! protos (messages, fields and their comments, from `api::proto::FILE_DESCRIPTOR_SET`, which
//! keeps source info) and the route table (`api::routes`), plus the one table of differences
//! between a REST route and its RPC in [`shapes`]. `api::http` builds it once at startup, serves
//! it at `GET /openapi.json` and renders it at `GET /docs` ([`html`]).

mod html;
mod shapes;

use std::collections::{BTreeMap, HashMap, HashSet};

use prost_reflect::{
    DescriptorPool, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value, json};

use self::shapes::{Body, Reply, Rule, Shape};
use super::proto::FILE_DESCRIPTOR_SET;
use super::routes::{ALIAS_ROUTES, OPS_ROUTES, RPC_ROUTES};
use crate::error::ErrorCode;

/// The document could not be generated: the route table, the shapes table and the protos
/// disagree (a test builds the document, so this shows up there first).
#[derive(Debug, thiserror::Error)]
#[error("OpenAPI document: {0}")]
pub struct Error(String);

fn fail<T>(message: impl Into<String>) -> Result<T, Error> {
    Err(Error(message.into()))
}

/// Component name of the error body (not a proto message: `error::ApiError::body`).
const ERROR_SCHEMA: &str = "ErrorBody";
const ERROR_RESPONSE: &str = "#/components/responses/Error";
const OPS_TAG: &str = "Operations";

/// The document as served: pretty JSON, and the HTML page.
pub fn render() -> Result<(String, String), Error> {
    let document = document()?;
    let json = serde_json::to_string_pretty(&document).map_err(|error| Error(error.to_string()))?;
    Ok((json, html::render(&document)))
}

/// Builds the document.
pub fn document() -> Result<Value, Error> {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET)
        .map_err(|error| Error(format!("descriptor set: {error}")))?;
    if let Some(stale) = shapes::SHAPES
        .iter()
        .find(|shape| !RPC_ROUTES.iter().any(|(rpc, _, _)| *rpc == shape.rpc))
    {
        return fail(format!(
            "the shapes table names {}, which has no route",
            stale.rpc
        ));
    }
    if let Some(stale) = shapes::SOMETIMES_ABSENT.iter().find(|name| {
        pool.all_messages()
            .all(|message| message.fields().all(|field| field.full_name() != **name))
    }) {
        return fail(format!("SOMETIMES_ABSENT names {stale}, which is no field"));
    }
    if let Some((stale, _)) = shapes::RULES.iter().find(|(name, _)| {
        pool.all_messages()
            .all(|message| message.fields().all(|field| !rule_applies(name, &field)))
    }) {
        return fail(format!("RULES names {stale}, which is no field"));
    }
    let mut generator = Generator::new(&pool);
    let mut paths = Map::new();
    for (rpc, method, path) in RPC_ROUTES {
        let operation = generator.rpc_operation(rpc, method, path, rpc)?;
        add(&mut paths, path, method, operation)?;
    }
    for (rpc, method, path) in ALIAS_ROUTES {
        // operationIds are unique per document, so an alias's id names its RPC and its path.
        let id = format!("{rpc}Via{}", camel(path));
        let mut operation = generator.rpc_operation(rpc, method, path, &id)?;
        if let Some(description) = operation.get_mut("description") {
            *description = Value::String(format!(
                "The same call as `{rpc}`, under the name the MACP UI console uses.\n\n{}",
                description.as_str().unwrap_or_default()
            ));
        }
        add(&mut paths, path, method, operation)?;
    }
    for (method, path) in OPS_ROUTES {
        add(&mut paths, path, method, ops_operation(method, path)?)?;
    }
    let mut schemas = generator.components()?;
    if schemas.contains_key(ERROR_SCHEMA) {
        return fail(format!(
            "a message is named {ERROR_SCHEMA}, the error body's name"
        ));
    }
    schemas.insert(ERROR_SCHEMA.to_owned(), error_schema());
    let services: Vec<String> = pool
        .services()
        .map(|service| format!("`{}`", service.full_name()))
        .collect();
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "macp-control-plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The REST and Server-Sent Events form of the gRPC services {}: every RPC has \
                 one route, whose operationId is the RPC's name, and the JSON is the proto3 JSON \
                 of its messages (camelCase names, numbers as JSON numbers, free-form data as \
                 plain JSON, absent fields omitted). Errors are `{ERROR_SCHEMA}`. Generated \
                 from the protos and the route table.",
                services.join(" and ")
            ),
        },
        "tags": generator.tags(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": error_response()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key or a JWT. With no keys or JWT configured on a \
                                    loopback bind, none is needed.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        // Either scheme; the operational routes override this (`/healthz`, `/readyz`, and
        // by default `/metrics` and the docs need none).
        "security": [{"bearer": []}, {"apiKey": []}],
    }))
}

fn add(
    paths: &mut Map<String, Value>,
    path: &str,
    method: &str,
    operation: Value,
) -> Result<(), Error> {
    let item = paths
        .entry(path.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(item) = item.as_object_mut() else {
        return fail(format!("path item {path} is not an object"));
    };
    let key = method.to_ascii_lowercase();
    if item.contains_key(&key) {
        return fail(format!("{method} {path} is routed twice"));
    }
    item.insert(key, operation);
    Ok(())
}

struct Generator<'a> {
    pool: &'a DescriptorPool,
    /// Component name of each message: its name inside its package, or its full name when two
    /// packages share that name.
    names: HashMap<String, String>,
    /// Messages only ever returned, never sent: their always-written fields are `required`.
    response_only: HashSet<String>,
    /// Messages referenced so far (full names), each to become a component.
    referenced: HashSet<String>,
}

impl<'a> Generator<'a> {
    fn new(pool: &'a DescriptorPool) -> Self {
        let local = |message: &MessageDescriptor| {
            let package = message.package_name();
            match message.full_name().strip_prefix(package) {
                Some(rest) if !package.is_empty() => rest.trim_start_matches('.').to_owned(),
                _ => message.full_name().to_owned(),
            }
        };
        let mut counts: HashMap<String, usize> = HashMap::new();
        for message in pool.all_messages() {
            *counts.entry(local(&message)).or_default() += 1;
        }
        let names = pool
            .all_messages()
            .map(|message| {
                let name = local(&message);
                let name = if counts.get(&name).copied().unwrap_or(0) > 1 {
                    message.full_name().to_owned()
                } else {
                    name
                };
                (message.full_name().to_owned(), name)
            })
            .collect();
        let methods: Vec<MethodDescriptor> = pool
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .collect();
        let sent = reachable(methods.iter().map(MethodDescriptor::input));
        let response_only = reachable(methods.iter().map(MethodDescriptor::output))
            .difference(&sent)
            .cloned()
            .collect();
        Generator {
            pool,
            names,
            response_only,
            referenced: HashSet::new(),
        }
    }

    fn method(&self, rpc: &str) -> Result<MethodDescriptor, Error> {
        let mut found = self
            .pool
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .filter(|method| method.name() == rpc);
        match (found.next(), found.next()) {
            (Some(method), None) => Ok(method),
            (None, _) => fail(format!("the route table names {rpc}, which no service has")),
            (Some(_), Some(_)) => fail(format!("{rpc} is an RPC of two services")),
        }
    }

    /// One tag per service (described by its comment, or its file's), plus the operational one.
    fn tags(&self) -> Vec<Value> {
        let mut tags: Vec<Value> = self
            .pool
            .services()
            .map(|service| {
                let file = service.parent_file();
                // Field 2 of FileDescriptorProto is `package`: the comment above the package line.
                let description = comments(&file, service.path()).or_else(|| comments(&file, &[2]));
                with_description(json!({"name": service.name()}), description)
            })
            .collect();
        tags.push(json!({
            "name": OPS_TAG,
            "description": "Health, readiness, metrics and this document; no RPC behind them.",
        }));
        tags
    }

    fn rpc_operation(
        &mut self,
        rpc: &str,
        http_method: &str,
        path: &str,
        operation_id: &str,
    ) -> Result<Value, Error> {
        let method = self.method(rpc)?;
        if method.is_client_streaming() {
            return fail(format!("{rpc}: a client-streaming RPC has no REST form"));
        }
        let shape = shapes::shape(rpc);
        let input = method.input();
        let mut parameters = Vec::new();
        let mut bound = Vec::new();
        for name in template_parameters(path) {
            let field_name = shapes::PATH_FIELDS
                .iter()
                .find(|(parameter, _)| *parameter == name)
                .map_or(name, |(_, field)| field);
            let Some(field) = input.get_field_by_name(field_name) else {
                return fail(format!(
                    "{http_method} {path}: {{{name}}} binds no field of {}",
                    input.full_name()
                ));
            };
            let mut parameter = self.parameter(&field, name, "path", true);
            if parameter.get("description").is_none() {
                parameter["description"] = json!(format!(
                    "The request's `{}` ({}).",
                    field.json_name(),
                    input.name()
                ));
            }
            parameters.push(parameter);
            bound.push(field.name().to_owned());
        }
        let mut operation = Map::new();
        match http_method {
            "GET" | "DELETE" => {
                for field in input
                    .fields()
                    .filter(|field| !bound.iter().any(|name| name == field.name()))
                {
                    if field.is_map() || matches!(field.kind(), Kind::Message(_)) {
                        return fail(format!(
                            "GET {path}: {}.{} is a message; a query string cannot carry it",
                            input.full_name(),
                            field.name()
                        ));
                    }
                    parameters.push(self.parameter(&field, field.json_name(), "query", false));
                }
            }
            // PATCH sets the fields its body carries (`UpdateWebhook`).
            "POST" | "PATCH" => {
                if let Some(body) = self.request_body(&input, &bound, shape)? {
                    operation.insert("requestBody".to_owned(), body);
                }
            }
            other => {
                return fail(format!(
                    "{other} {path}: only GET, DELETE, POST and PATCH are mapped"
                ));
            }
        }
        for alias in shape.aliases {
            let Some(field) = input.get_field_by_name(alias.field) else {
                return fail(format!(
                    "{rpc}: alias {} names no field {}",
                    alias.name, alias.field
                ));
            };
            let mut parameter = self.parameter(&field, alias.name, alias.location, false);
            parameter["description"] = Value::String(alias.description.to_owned());
            parameters.push(parameter);
        }
        let comment = comments(&method.parent_file(), method.path());
        let summary = comment
            .as_deref()
            .map(first_sentence)
            .unwrap_or_else(|| words(rpc));
        let grpc = format!("gRPC: `{}/{rpc}`", method.parent_service().full_name());
        let description = match comment {
            Some(comment) => format!("{comment}\n\n{grpc}"),
            None => grpc,
        };
        operation.insert("operationId".to_owned(), json!(operation_id));
        operation.insert("summary".to_owned(), json!(summary));
        operation.insert("description".to_owned(), json!(description));
        operation.insert("tags".to_owned(), json!([method.parent_service().name()]));
        let refusals = refusals(
            path,
            &parameters,
            operation.contains_key("requestBody"),
            shape,
        );
        if !parameters.is_empty() {
            operation.insert("parameters".to_owned(), Value::Array(parameters));
        }
        operation.insert(
            "responses".to_owned(),
            self.responses(&method, shape, &refusals)?,
        );
        Ok(Value::Object(operation))
    }

    fn parameter(
        &mut self,
        field: &FieldDescriptor,
        name: &str,
        location: &str,
        required: bool,
    ) -> Value {
        let parameter = json!({
            "name": name,
            "in": location,
            "required": required,
            "schema": self.field_schema(field),
        });
        with_description(parameter, field_doc(field))
    }

    fn request_body(
        &mut self,
        input: &MessageDescriptor,
        bound: &[String],
        shape: &Shape,
    ) -> Result<Option<Value>, Error> {
        let body = &shape.body;
        let (schema, required) = match body {
            Body::Field(name) | Body::Checked(name) => {
                let Some(field) = input.get_field_by_name(name) else {
                    return fail(format!("{}: no body field {name}", input.full_name()));
                };
                let schema = self.field_schema(&field);
                let schema = match body {
                    Body::Checked(_) => json!({
                        "anyOf": [schema, {}],
                        "description": format!(
                            "{}: any JSON is taken; what does not fit it is reported in the \
                             answer (`valid: false`, `errors`), not refused.",
                            label(&schema)
                        ),
                    }),
                    _ => with_description(schema, field_doc(&field)),
                };
                (schema, true)
            }
            Body::Message { optional } => {
                if input
                    .fields()
                    .all(|field| bound.iter().any(|name| name == field.name()))
                {
                    return Ok(None);
                }
                let schema = if bound.is_empty() {
                    self.message_ref(input)
                } else {
                    self.message_object(input, bound)
                };
                (schema, !optional)
            }
        };
        let mut media_type = json!({"schema": schema});
        if let Some(example) = shape.example {
            media_type["example"] = serde_json::from_str(example)
                .map_err(|error| Error(format!("{}: example: {error}", shape.rpc)))?;
        }
        Ok(Some(json!({
            "required": required,
            "content": {"application/json": media_type},
        })))
    }

    fn responses(
        &mut self,
        method: &MethodDescriptor,
        shape: &Shape,
        refusals: &[ErrorCode],
    ) -> Result<Value, Error> {
        let mut responses = Map::new();
        if method.is_server_streaming() && matches!(shape.reply, Reply::Lines) {
            responses.insert("200".to_owned(), self.lines_response(&method.output()));
        } else if method.is_server_streaming() {
            responses.insert("200".to_owned(), self.sse_response(&method.output())?);
        } else if matches!(shape.reply, Reply::NoContent) {
            for (status, meaning) in shape.success {
                responses.insert(status.to_string(), json!({"description": meaning}));
            }
        } else {
            let (schema, note) = self.reply_schema(method, shape)?;
            for (status, meaning) in shape.success {
                let description = match &note {
                    Some(note) => format!("{meaning} {note}"),
                    None => (*meaning).to_owned(),
                };
                responses.insert(
                    status.to_string(),
                    json!({
                        "description": description,
                        "content": {"application/json": {"schema": schema}},
                    }),
                );
            }
        }
        responses.extend(error_responses(refusals));
        Ok(Value::Object(responses))
    }

    /// The success schema, and a sentence on when it takes which form.
    fn reply_schema(
        &mut self,
        method: &MethodDescriptor,
        shape: &Shape,
    ) -> Result<(Value, Option<String>), Error> {
        let output = method.output();
        match shape.reply {
            Reply::Message | Reply::NoContent | Reply::Lines => {
                Ok((self.message_ref(&output), None))
            }
            Reply::BareList => Ok((self.bare_list(&output)?, None)),
            Reply::BareListUnless(filters) => {
                let input = method.input();
                let mut names = Vec::new();
                for filter in filters {
                    let Some(field) = input.get_field_by_name(filter) else {
                        return fail(format!("{}: no filter field {filter}", input.full_name()));
                    };
                    names.push(format!("`{}`", field.json_name()));
                }
                let schema =
                    json!({"oneOf": [self.bare_list(&output)?, self.message_ref(&output)]});
                let note = format!(
                    "A bare array when none of {} is given; `{}` otherwise.",
                    names.join(", "),
                    self.component_name(&output)
                );
                Ok((schema, Some(note)))
            }
        }
    }

    /// A response message's one repeated field, as a bare array.
    fn bare_list(&mut self, output: &MessageDescriptor) -> Result<Value, Error> {
        let mut lists = output.fields().filter(FieldDescriptor::is_list);
        match (lists.next(), lists.next()) {
            (Some(field), None) => Ok(with_description(
                self.field_schema(&field),
                field_doc(&field),
            )),
            _ => fail(format!(
                "{} is answered as a bare array but has not exactly one repeated field",
                output.full_name()
            )),
        }
    }

    /// A streaming RPC as NDJSON: each item's JSON on a line of its own.
    fn lines_response(&mut self, output: &MessageDescriptor) -> Value {
        json!({
            "description": "NDJSON: one JSON object a line, each an item of the stream. Bad \
                            parameters are answered before the stream opens, as plain error \
                            responses; a failure after it opened ends it early.",
            "content": {"application/x-ndjson": {
                // As for SSE, the schema is one item's (OpenAPI 3.1 has none for a stream).
                "schema": self.message_ref(output),
            }},
        })
    }

    /// A streaming RPC as Server-Sent Events: each field of the response message's oneof is one
    /// kind of frame, its JSON the frame's `data`.
    fn sse_response(&mut self, output: &MessageDescriptor) -> Result<Value, Error> {
        let fields: Vec<FieldDescriptor> = output
            .oneofs()
            .filter(|oneof| !oneof.is_synthetic())
            .flat_map(|oneof| oneof.fields().collect::<Vec<_>>())
            .collect();
        if fields.is_empty() {
            return fail(format!(
                "{}: a stream item needs a oneof to map onto SSE frames",
                output.full_name()
            ));
        }
        let mut frames = Vec::new();
        let mut lines = Vec::new();
        for field in fields {
            let (event, id_field) = shapes::SSE_FRAMES
                .iter()
                .find(|(name, _, _)| *name == field.name())
                .map_or((field.json_name(), None), |(_, event, id)| (*event, *id));
            let data = self.field_schema(&field);
            let mut line = format!("`{event}`");
            let mut frame = json!({"event": event, "data": data});
            if let Some(id_field) = id_field {
                let id = match field.kind() {
                    Kind::Message(message) => message.get_field_by_name(id_field),
                    _ => None,
                };
                let Some(id) = id else {
                    return fail(format!(
                        "SSE frame {event}: its data has no field {id_field}"
                    ));
                };
                frame["id"] = json!(format!("the data's `{}`", id.json_name()));
                line.push_str(&format!(" (`id:` = the data's `{}`)", id.json_name()));
            }
            line.push_str(&format!(": {}", label(&frame["data"])));
            frames.push(with_description(frame, field_doc(&field)));
            lines.push(line);
        }
        frames.push(json!({
            "event": "error",
            "data": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")},
            "description": "A failure after the stream opened; the stream ends after it.",
        }));
        lines.push(format!(
            "`error`: {ERROR_SCHEMA}, for a failure after the stream opened (the stream ends after it)"
        ));
        let events: Vec<Value> = frames.iter().map(event_schema).collect();
        Ok(json!({
            "description": format!(
                "Server-Sent Events; each frame's `data` is one JSON object. Frames: {}. Bad \
                 parameters are answered before the stream opens, as plain error responses.",
                lines.join("; ")
            ),
            "content": {"text/event-stream": {
                // OpenAPI 3.1 has no schema for a stream: as tools read it (and as 3.2's
                // `itemSchema` says), this schema is one event's.
                "schema": {
                    "description": "One event of the stream: its `event:`, `id:` and `data:` \
                                    lines.",
                    "oneOf": events,
                },
                "x-sse-events": frames,
            }},
        }))
    }

    fn component_name(&self, message: &MessageDescriptor) -> String {
        self.names
            .get(message.full_name())
            .cloned()
            .unwrap_or_else(|| message.full_name().to_owned())
    }

    /// A message as a schema: the JSON mapping of the well-known free-form types, else a
    /// reference to its component.
    fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        match message.full_name() {
            "google.protobuf.Struct" => json!({"type": "object"}),
            "google.protobuf.Value" => json!({}),
            "google.protobuf.ListValue" => json!({"type": "array"}),
            full_name => {
                self.referenced.insert(full_name.to_owned());
                json!({"$ref": format!("#/components/schemas/{}", self.component_name(message))})
            }
        }
    }

    /// A message as an object schema, without the `excluded` fields (proto names).
    fn message_object(&mut self, message: &MessageDescriptor, excluded: &[String]) -> Value {
        let response_only = self.response_only.contains(message.full_name());
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            if excluded.iter().any(|name| name == field.name()) {
                continue;
            }
            // Scalars without presence are always written in answers; `optional`, message and
            // oneof fields may be absent, and requests get proto3 defaults for anything missing
            // (or `null`, proto3 JSON's absent), except the fields the server requires.
            let schema = self.field_schema(&field);
            let schema = if response_only {
                if !field.is_list()
                    && !field.is_map()
                    && !field.supports_presence()
                    && !shapes::SOMETIMES_ABSENT.contains(&field.full_name())
                {
                    required.push(json!(field.json_name()));
                }
                schema
            } else if rules(&field).any(|rule| matches!(rule, Rule::Required)) {
                required.push(json!(field.json_name()));
                schema
            } else {
                nullable(schema)
            };
            let schema = with_description(schema, field_doc(&field));
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut description = comments(&message.parent_file(), message.path());
        for oneof in message.oneofs().filter(|oneof| !oneof.is_synthetic()) {
            let names: Vec<String> = oneof
                .fields()
                .map(|field| format!("`{}`", field.json_name()))
                .collect();
            let note = format!("At most one of {} is set.", names.join(", "));
            description = Some(match description {
                Some(text) => format!("{text}\n\n{note}"),
                None => note,
            });
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        with_description(schema, description)
    }

    /// A field's schema (without its description): proto3 JSON, with 64-bit integers as numbers
    /// as the REST routes write them.
    fn field_schema(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = self.type_schema(field);
        for rule in rules(field) {
            apply(&mut schema, rule, field.is_list());
        }
        schema
    }

    /// A field's schema from its proto type alone.
    fn type_schema(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => self.kind_schema(&entry.map_entry_value_field().kind()),
                _ => json!({}),
            };
            json!({"type": "object", "additionalProperties": value})
        } else if field.is_list() {
            json!({"type": "array", "items": self.kind_schema(&field.kind())})
        } else {
            self.kind_schema(&field.kind())
        }
    }

    fn kind_schema(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "integer", "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "integer", "minimum": 0}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(descriptor) if descriptor.full_name() == "google.protobuf.NullValue" => {
                json!({"type": "null"})
            }
            Kind::Enum(descriptor) => {
                let names: Vec<String> = descriptor
                    .values()
                    .map(|value| value.name().to_owned())
                    .collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(message) => self.message_ref(message),
        }
    }

    /// A schema for every message referenced, and for those their schemas reference.
    fn components(&mut self) -> Result<Map<String, Value>, Error> {
        let mut done: BTreeMap<String, Value> = BTreeMap::new();
        let mut generated = HashSet::new();
        loop {
            let mut pending: Vec<String> =
                self.referenced.difference(&generated).cloned().collect();
            if pending.is_empty() {
                break;
            }
            pending.sort();
            for full_name in pending {
                let Some(message) = self.pool.get_message_by_name(&full_name) else {
                    return fail(format!(
                        "{full_name} is referenced but not in the descriptor set"
                    ));
                };
                let schema = self.message_object(&message, &[]);
                done.insert(self.component_name(&message), schema);
                generated.insert(full_name);
            }
        }
        Ok(done.into_iter().collect())
    }
}

/// Messages reachable from `roots` through their fields (full names).
fn reachable(roots: impl Iterator<Item = MessageDescriptor>) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut stack: Vec<MessageDescriptor> = roots.collect();
    while let Some(message) = stack.pop() {
        if !seen.insert(message.full_name().to_owned()) {
            continue;
        }
        for field in message.fields() {
            if let Kind::Message(inner) = field.kind() {
                stack.push(inner);
            }
        }
    }
    seen
}

/// One kind of SSE frame (from its `x-sse-events` entry) as the schema of a parsed event: its
/// name, its `id:` (a decimal seq) when it has one, and its `data:` line holding the JSON.
fn event_schema(frame: &Value) -> Value {
    let mut properties = Map::new();
    let mut required = vec![json!("event"), json!("data")];
    properties.insert("event".to_owned(), json!({"const": frame["event"]}));
    if let Some(id) = frame["id"].as_str() {
        properties.insert(
            "id".to_owned(),
            json!({"type": "string", "pattern": "^[0-9]+$", "description": id}),
        );
        required.push(json!("id"));
    }
    properties.insert(
        "data".to_owned(),
        json!({
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": frame["data"],
        }),
    );
    json!({"type": "object", "properties": properties, "required": required})
}

/// An operational route, from the ops table (or a bare entry for one not described there yet).
fn ops_operation(method: &str, path: &str) -> Result<Value, Error> {
    let Some(ops) = shapes::OPS.iter().find(|ops| ops.path == path) else {
        return Ok(json!({
            "operationId": camel(path),
            "summary": format!("{method} {path}"),
            "tags": [OPS_TAG],
            "security": [{}],
            "responses": {"200": {"description": "Success."}},
        }));
    };
    let schema: Value = serde_json::from_str(ops.schema)
        .map_err(|error| Error(format!("ops table, {path}: {error}")))?;
    let mut responses: Map<String, Value> = ops
        .statuses
        .iter()
        .map(|(status, meaning)| {
            (
                status.to_string(),
                json!({
                    "description": meaning,
                    "content": {ops.media_type: {"schema": schema}},
                }),
            )
        })
        .collect();
    for (status, response) in error_responses(&[]) {
        responses.entry(status).or_insert(response);
    }
    Ok(json!({
        "operationId": ops.operation_id,
        "summary": ops.summary,
        "tags": [OPS_TAG],
        "security": [{}],
        "responses": responses,
    }))
}

/// The refusals an RPC's route can answer: bad input where something is checked, an unknown run
/// for `{id}` routes, a body too large or not JSON where there is a body, the shape's own, and
/// the foreign `Host` every route refuses.
fn refusals(path: &str, parameters: &[Value], body: bool, shape: &Shape) -> Vec<ErrorCode> {
    // A plain string parameter (a name looked up, a free text) is never refused as malformed.
    let checked = |parameter: &Value| {
        let schema = &parameter["schema"];
        schema["type"] != "string"
            || schema
                .as_object()
                .is_some_and(|map| map.keys().any(|key| key != "type" && key != "description"))
    };
    let mut codes = Vec::new();
    if body || parameters.iter().any(checked) {
        codes.push(ErrorCode::ValidationError);
    }
    if path.starts_with("/runs/") && template_parameters(path).contains(&"id") {
        codes.push(ErrorCode::RunNotFound);
    }
    if body {
        codes.extend([ErrorCode::PayloadTooLarge, ErrorCode::UnsupportedMediaType]);
    }
    codes.extend(shape.refusals.iter().copied());
    // Every RPC needs a credential (when auth is on), a role that grants it, and budget left.
    codes.extend([
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
    ]);
    codes.push(ErrorCode::MisdirectedRequest);
    codes
}

/// One response per 4xx status among `refusals` (plus the foreign `Host`), naming its codes, and
/// `5XX` for failures of the service or the runtime.
fn error_responses(refusals: &[ErrorCode]) -> Map<String, Value> {
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for code in refusals
        .iter()
        .chain([&ErrorCode::MisdirectedRequest])
        .filter(|code| code.http_status() < 500)
    {
        let codes = by_status.entry(code.http_status()).or_default();
        if !codes.contains(&code.as_str()) {
            codes.push(code.as_str());
        }
    }
    let mut responses: Map<String, Value> = by_status
        .into_iter()
        .map(|(status, codes)| {
            let codes: Vec<String> = codes.iter().map(|code| format!("`{code}`")).collect();
            (
                status.to_string(),
                json!({
                    "description": format!("{ERROR_SCHEMA} with `errorCode` {}.", codes.join(", ")),
                    "content": {"application/json": {"schema": {
                        "$ref": format!("#/components/schemas/{ERROR_SCHEMA}"),
                    }}},
                }),
            )
        })
        .collect();
    responses.insert("5XX".to_owned(), json!({"$ref": ERROR_RESPONSE}));
    responses
}

/// Whether a [`shapes::RULES`] entry names `field`.
fn rule_applies(name: &str, field: &FieldDescriptor) -> bool {
    match name.strip_prefix("*.") {
        Some(short) => field.name() == short,
        None => field.full_name() == name,
    }
}

/// The rules of a field, [`Rule::OrEmpty`] last (it wraps what the others set).
fn rules(field: &FieldDescriptor) -> impl Iterator<Item = &'static Rule> + '_ {
    let all = move || {
        shapes::RULES
            .iter()
            .filter(move |(name, _)| rule_applies(name, field))
            .flat_map(|(_, rules)| rules.iter())
    };
    all()
        .filter(|rule| !matches!(rule, Rule::OrEmpty))
        .chain(all().filter(|rule| matches!(rule, Rule::OrEmpty)))
}

/// A character the server's non-blank check keeps: anything but what Rust's
/// `char::is_whitespace` (Unicode `White_Space`) trims. Spelled out, as `\s` differs between
/// regex dialects.
const NON_BLANK: &str =
    r"[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// Adds one rule's keywords to a field's schema (to its items for a repeated field).
fn apply(schema: &mut Value, rule: &Rule, list: bool) {
    if let (Rule::Count(min, max), Some(map)) = (rule, schema.as_object_mut()) {
        map.insert("minItems".to_owned(), json!(min));
        map.insert("maxItems".to_owned(), json!(max));
        return;
    }
    let target = if list {
        schema.get_mut("items")
    } else {
        Some(schema)
    };
    let Some(map) = target.and_then(Value::as_object_mut) else {
        return;
    };
    let mut set = |key: &str, value: Value| {
        map.insert(key.to_owned(), value);
    };
    match rule {
        Rule::Required | Rule::Count(..) => {}
        Rule::Uuid => set("format", json!("uuid")),
        Rule::DateTime => set("format", json!("date-time")),
        Rule::DayOrDateTime => set(
            "anyOf",
            json!([{"format": "date-time"}, {"format": "date"}]),
        ),
        Rule::NonBlank => {
            set("minLength", json!(1));
            set("pattern", json!(NON_BLANK));
        }
        Rule::MaxLength(max) => set("maxLength", json!(max)),
        Rule::Pattern(pattern) => set("pattern", json!(pattern)),
        Rule::OneOf(values) => set("enum", json!(values)),
        Rule::OneOfFn(values) => set("enum", json!(values())),
        Rule::Range(min, max) => {
            set("minimum", json!(min));
            set("maximum", json!(max));
        }
        Rule::Between(min, max) => {
            set("minimum", json!(min));
            set("maximum", json!(max));
        }
        Rule::OrEmpty => {
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.push(json!(""));
            } else {
                let checks: Map<String, Value> = map
                    .iter()
                    .filter(|(key, _)| *key != "type" && *key != "description")
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                map.retain(|key, _| key == "type" || key == "description");
                map.insert(
                    "anyOf".to_owned(),
                    json!([Value::Object(checks), {"const": ""}]),
                );
            }
        }
    }
}

/// A request field's schema that also takes `null` (proto3 JSON: the field is absent).
fn nullable(schema: Value) -> Value {
    if schema.get("$ref").is_some() {
        return json!({"anyOf": [schema, {"type": "null"}]});
    }
    let mut schema = schema;
    if let Some(map) = schema.as_object_mut() {
        if let Some(kind) = map.get("type").and_then(Value::as_str).map(str::to_owned) {
            map.insert("type".to_owned(), json!([kind, "null"]));
        }
        if let Some(Value::Array(values)) = map.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    schema
}

/// `{statusCode, errorCode, message, details?}`, with every code and its status.
fn error_schema() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    let statuses: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|code| format!("`{}` {}", code.as_str(), code.http_status()))
        .collect();
    json!({
        "type": "object",
        "description": format!(
            "Every error answer. The HTTP status follows from `errorCode`: {}.",
            statuses.join(", ")
        ),
        "properties": {
            "statusCode": {"type": "integer", "description": "The HTTP status, repeated."},
            "errorCode": {
                "type": "string",
                "enum": codes,
                "description": "The stable code; gRPC answers carry it too (`x-error-code`).",
            },
            "message": {"type": "string"},
            "details": {
                "description": "More about the error; for `VALIDATION_ERROR`, `errors` lists \
                                every field problem.",
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {
                                    "type": "string",
                                    "description": "Path of the offending field, e.g. \
                                                    `session.participants[1].id`.",
                                },
                                "message": {"type": "string"},
                            },
                            "required": ["field", "message"],
                        },
                    },
                },
            },
        },
        "required": ["statusCode", "errorCode", "message"],
    })
}

/// The `5XX` answer: the service or the runtime failed.
fn error_response() -> Value {
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .filter(|code| code.http_status() >= 500)
        .map(|code| format!("`{}`", code.as_str()))
        .collect();
    json!({
        "description": format!(
            "{ERROR_SCHEMA}: the service or the runtime failed ({}).",
            codes.join(", ")
        ),
        "content": {"application/json": {"schema": {
            "$ref": format!("#/components/schemas/{ERROR_SCHEMA}"),
        }}},
    })
}

/// The comment above a declaration (`path` as in `SourceCodeInfo.Location`), one line per line.
fn comments(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info
        .location
        .iter()
        .find(|location| location.path == path)?;
    let text = location
        .leading_comments
        .as_deref()
        .or(location.trailing_comments.as_deref())?;
    let text = text
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned();
    (!text.is_empty()).then_some(text)
}

fn field_doc(field: &FieldDescriptor) -> Option<String> {
    comments(&field.parent_file(), field.path())
}

fn with_description(mut schema: Value, description: Option<String>) -> Value {
    if let (Some(description), Some(map)) = (description, schema.as_object_mut()) {
        map.insert("description".to_owned(), Value::String(description));
    }
    schema
}

/// A comment's first sentence, on one line: the operation's summary.
fn first_sentence(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(end) => flat[..=end].to_owned(),
        None => flat,
    }
}

/// `GetRunState` → `Get run state`: the summary of an RPC without a comment.
fn words(name: &str) -> String {
    let mut out = String::new();
    for (index, character) in name.chars().enumerate() {
        if character.is_uppercase() && index > 0 {
            out.push(' ');
            out.extend(character.to_lowercase());
        } else {
            out.push(character);
        }
    }
    out
}

/// `/examples/run` → `ExamplesRun`.
fn camel(path: &str) -> String {
    path.split(|character: char| !character.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut characters = part.chars();
            characters
                .next()
                .map(|first| first.to_uppercase().chain(characters).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The `{name}` parameters of a path template, in order.
fn template_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// A short name for a schema in prose: its component, or its type.
fn label(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_owned();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => "a JSON object".to_owned(),
        Some(other) => other.to_owned(),
        None => "any JSON value".to_owned(),
    }
}
