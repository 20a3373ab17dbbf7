//! `GET /docs`: the OpenAPI document rendered on the server as one self-contained HTML page (no
//! scripts, nothing loaded from elsewhere), so it reads the same offline and can never disagree
//! with `/openapi.json`.

use std::fmt::Write;

use serde_json::{Map, Value};

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1 small{color:#777;font-weight:normal}h2{border-bottom:2px solid #ddd;\
margin-top:2.5rem}section{border:1px solid #ddd;border-radius:6px;padding:.25rem 1rem 1rem;\
margin:1rem 0}h3 code{font-size:1rem}.method{display:inline-block;min-width:3.5rem;padding:0 .4rem;\
border-radius:4px;color:#fff;font:bold 13px monospace;text-align:center}.get{background:#2f7d32}\
.post{background:#1565c0}table{border-collapse:collapse;width:100%;margin:.5rem 0}\
th,td{border:1px solid #e3e3e3;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f6f6f6}code{background:#f3f3f3;padding:0 .2rem;border-radius:3px}\
.muted{color:#777}nav ul{columns:2}";

/// The whole page.
pub fn render(document: &Value) -> String {
    let info = &document["info"];
    let title = info["title"].as_str().unwrap_or("API");
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} API</title><style>{STYLE}</style></head><body>\
         <h1>{title} <small>{version} · OpenAPI {openapi}</small></h1>{description}\
         <p>Machine-readable: <a href=\"/openapi.json\"><code>/openapi.json</code></a>.</p>",
        title = escape(title),
        version = escape(info["version"].as_str().unwrap_or_default()),
        openapi = escape(document["openapi"].as_str().unwrap_or_default()),
        description = prose(info["description"].as_str()),
    );
    let operations = operations(document);
    let tags = document["tags"].as_array().cloned().unwrap_or_default();
    page.push_str("<nav><h2>Operations</h2><ul>");
    for (_, _, operation) in &operations {
        let id = operation["operationId"].as_str().unwrap_or_default();
        let _ = write!(
            page,
            "<li><a href=\"#op-{id}\">{id}</a> <span class=\"muted\">{summary}</span></li>",
            id = escape(id),
            summary = escape(operation["summary"].as_str().unwrap_or_default()),
        );
    }
    page.push_str("</ul></nav>");
    for tag in &tags {
        let name = tag["name"].as_str().unwrap_or_default();
        let _ = write!(
            page,
            "<h2>{}</h2>{}",
            escape(name),
            prose(tag["description"].as_str())
        );
        for (method, path, operation) in &operations {
            let tagged = operation["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|tag| tag == name));
            if tagged {
                render_operation(&mut page, document, method, path, operation);
            }
        }
    }
    page.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = document["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let _ = write!(
                page,
                "<section id=\"schema-{id}\"><h3>{id}</h3>{description}",
                id = escape(name),
                description = prose(schema["description"].as_str()),
            );
            render_object(&mut page, schema);
            page.push_str("</section>");
        }
    }
    page.push_str("</body></html>");
    page
}

/// (method, path, operation) in document order.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut operations = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                operations.push((method.clone(), path.clone(), operation.clone()));
            }
        }
    }
    operations
}

fn render_operation(
    page: &mut String,
    document: &Value,
    method: &str,
    path: &str,
    operation: &Value,
) {
    let id = escape(operation["operationId"].as_str().unwrap_or_default());
    let _ = write!(
        page,
        "<section id=\"op-{id}\"><h3><span class=\"method {method}\">{upper}</span> \
         <code>{path}</code></h3><p class=\"muted\">operationId <code>{id}</code></p>{description}",
        method = escape(method),
        upper = escape(&method.to_ascii_uppercase()),
        path = escape(path),
        description = prose(
            operation["description"]
                .as_str()
                .or(operation["summary"].as_str())
        ),
    );
    if let Some(parameters) = operation["parameters"].as_array() {
        page.push_str(
            "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th>\
             <th>required</th><th>description</th></tr>",
        );
        for parameter in parameters {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(parameter["name"].as_str().unwrap_or_default()),
                escape(parameter["in"].as_str().unwrap_or_default()),
                type_label(&parameter["schema"]),
                yes(parameter["required"].as_bool().unwrap_or(false)),
                inline(parameter["description"].as_str().unwrap_or_default()),
            );
        }
        page.push_str("</table>");
    }
    if let Some(body) = operation["requestBody"].as_object() {
        let schema = &body["content"]["application/json"]["schema"];
        let _ = write!(
            page,
            "<h4>Request body</h4><p>JSON, {}: {}</p>",
            if body["required"].as_bool().unwrap_or(false) {
                "required"
            } else {
                "optional"
            },
            type_label(schema),
        );
        render_object(page, schema);
    }
    page.push_str(
        "<h4>Responses</h4><table><tr><th>status</th><th>content</th><th>description</th></tr>",
    );
    for (status, response) in operation["responses"].as_object().into_iter().flatten() {
        // Shared responses (the error) are references into the components.
        let response = response["$ref"]
            .as_str()
            .and_then(|reference| document.pointer(reference.strip_prefix('#')?))
            .unwrap_or(response);
        let (content, description) = response_cells(response);
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{content}</td><td>{description}</td></tr>",
            escape(status)
        );
    }
    page.push_str("</table></section>");
}

/// The content and description cells of a response.
fn response_cells(response: &Value) -> (String, String) {
    let mut content = String::new();
    for (media_type, media) in response["content"].as_object().into_iter().flatten() {
        let _ = write!(
            content,
            "<code>{}</code> {}",
            escape(media_type),
            type_label(&media["schema"])
        );
        if let Some(frames) = media["x-sse-events"].as_array() {
            content.push_str("<ul>");
            for frame in frames {
                let _ = write!(
                    content,
                    "<li>event <code>{}</code>{}: {}</li>",
                    escape(frame["event"].as_str().unwrap_or_default()),
                    frame["id"]
                        .as_str()
                        .map(|id| format!(", id = {}", inline(id)))
                        .unwrap_or_default(),
                    type_label(&frame["data"]),
                );
            }
            content.push_str("</ul>");
        }
    }
    (
        content,
        inline(response["description"].as_str().unwrap_or_default()),
    )
}

/// The properties of an inline or component object schema as a table.
fn render_object(page: &mut String, schema: &Value) {
    let Some(properties) = schema["properties"]
        .as_object()
        .filter(|map| !map.is_empty())
    else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    page.push_str(
        "<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>",
    );
    for (name, property) in properties {
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            type_label(property),
            yes(required.contains(&name.as_str())),
            inline(property["description"].as_str().unwrap_or_default()),
        );
        // Nested inline objects (the error body's details) get their own rows.
        if property.get("$ref").is_none() && property["properties"].is_object() {
            let _ = write!(page, "<tr><td></td><td colspan=\"3\">");
            render_object(page, property);
            page.push_str("</td></tr>");
        }
    }
    page.push_str("</table>");
}

/// A schema's type in a few words, with links to components and the checks the server makes.
fn type_label(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = escape(reference.rsplit('/').next().unwrap_or(reference));
        return format!("<a href=\"#schema-{name}\">{name}</a>");
    }
    let map = schema.as_object().cloned().unwrap_or_else(Map::new);
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        // A branch without a type of its own (`anyOf` beside `type`) has the schema's type.
        return options
            .iter()
            .map(|option| match (option.get("const"), option.get("type")) {
                (Some(Value::String(text)), _) if text.is_empty() => "empty".to_owned(),
                (_, None)
                    if map.contains_key("type")
                        && option.as_object().is_some_and(|o| !o.is_empty()) =>
                {
                    let mut merged = option.clone();
                    merged["type"] = map["type"].clone();
                    type_label(&merged)
                }
                _ => type_label(option),
            })
            .collect::<Vec<_>>()
            .join(" or ");
    }
    let types: Vec<&str> = match map.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let nullable = types.contains(&"null");
    let base = match types.iter().find(|kind| **kind != "null").copied() {
        Some("array") => format!("array of {}", type_label(&schema["items"])),
        Some("object") if map.contains_key("additionalProperties") => {
            format!("map of {}", type_label(&schema["additionalProperties"]))
        }
        Some("string") if map.contains_key("enum") => {
            let values: Vec<String> = schema["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|value| match value {
                    "" => "<code>\"\"</code>".to_owned(),
                    value => format!("<code>{}</code>", escape(value)),
                })
                .collect();
            format!("string, one of {}", values.join(" "))
        }
        Some(kind) => match map.get("format").and_then(Value::as_str) {
            Some(format) => format!("{} ({})", escape(kind), escape(format)),
            None => escape(kind),
        },
        None if nullable => "null".to_owned(),
        None => "any JSON".to_owned(),
    };
    let mut label = base;
    for check in checks(&map) {
        label.push_str(", ");
        label.push_str(&check);
    }
    if nullable && !types.iter().all(|kind| *kind == "null") {
        label.push_str(" or null");
    }
    label
}

/// What the keywords beside a schema's type require, in words.
fn checks(map: &Map<String, Value>) -> Vec<String> {
    let number = |key: &str| map.get(key).filter(|value| value.is_number());
    let mut checks = Vec::new();
    match (number("minimum"), number("maximum")) {
        (Some(min), Some(max)) => checks.push(format!("{min} to {max}")),
        (Some(min), None) => checks.push(format!("at least {min}")),
        (None, Some(max)) => checks.push(format!("at most {max}")),
        (None, None) => {}
    }
    match (number("minItems"), number("maxItems")) {
        (Some(min), Some(max)) => checks.push(format!("{min} to {max} items")),
        (Some(min), None) => checks.push(format!("at least {min} items")),
        _ => {}
    }
    // The generator sets `minLength` only with its non-blank pattern.
    if map.contains_key("minLength") {
        checks.push("not blank".to_owned());
    } else if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
        checks.push(format!("matching <code>{}</code>", escape(pattern)));
    }
    if let Some(max) = number("maxLength") {
        checks.push(format!("at most {max} characters"));
    }
    checks
}

fn yes(flag: bool) -> &'static str {
    if flag { "yes" } else { "" }
}

/// Paragraphs of a description.
fn prose(text: Option<&str>) -> String {
    text.map(|text| {
        text.split("\n\n")
            .map(|paragraph| format!("<p>{}</p>", inline(paragraph)))
            .collect()
    })
    .unwrap_or_default()
}

/// Escaped text with `code` spans (the only markup the proto comments use).
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (index, part) in text.split('`').enumerate() {
        if index % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}
