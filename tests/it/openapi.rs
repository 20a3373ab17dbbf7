//! The OpenAPI document: valid OpenAPI 3.1, covering every route (every routed (method, path) is
//! documented and every documented one answers, as documented), and readable at `/docs`.

use std::collections::{BTreeSet, HashSet};

use macp_control_plane::api::openapi;
use macp_control_plane::api::routes::{ALIAS_ROUTES, OPS_ROUTES, RPC_ROUTES};
use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend};

/// The official OpenAPI 3.1 schema, iteration 2022-10-07 (see `tests/data/openapi/README.md`).
const OAS_3_1_SCHEMA: &str = include_str!("../data/openapi/schema-3.1-2022-10-07.json");

/// RFC 9110 `media-range`: `type/subtype` (either may be `*`) and `; name=value` parameters. The
/// OAS schema uses this format for content keys; jsonschema does not know it.
fn is_media_range(text: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
    };
    let mut parts = text.split(';');
    let range_ok = parts
        .next()
        .and_then(|range| range.trim().split_once('/'))
        .is_some_and(|(kind, subtype)| token(kind) && token(subtype));
    range_ok
        && parts.all(|parameter| {
            parameter
                .trim()
                .split_once('=')
                .is_some_and(|(name, value)| token(name) && !value.is_empty())
        })
}

fn oas_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(OAS_3_1_SCHEMA).expect("the OAS schema is JSON");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .with_format("media-range", is_media_range)
        .build(&schema)
        .expect("the OAS 3.1 schema compiles")
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("{error} (at {})", error.instance_path()))
        .collect()
}

/// Every JSON Schema in the document, with where it is.
fn schemas(document: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for (name, schema) in document["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        found.push((format!("components/schemas/{name}"), schema.clone()));
    }
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let at = format!("{method} {path}");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                found.push((format!("{at} parameter"), parameter["schema"].clone()));
            }
            let bodies = operation["requestBody"]["content"].as_object().into_iter();
            let responses = operation["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, response)| response["content"].as_object());
            for content in bodies.chain(responses) {
                for (media, media_type) in content {
                    found.push((format!("{at} {media}"), media_type["schema"].clone()));
                    for frame in media_type["x-sse-events"].as_array().into_iter().flatten() {
                        found.push((
                            format!("{at} SSE {}", frame["event"]),
                            frame["data"].clone(),
                        ));
                    }
                }
            }
        }
    }
    found
}

/// Every `$ref` in `value`.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                out.push(reference.clone());
            }
            map.values().for_each(|inner| references(inner, out));
        }
        Value::Array(items) => items.iter().for_each(|inner| references(inner, out)),
        _ => {}
    }
}

/// A body each POST route accepts where one is at hand (so its success answer is checked too),
/// else the seed's ExecutionRequest, which only `POST /runs` and `/runs/validate` take.
fn body(path: &str) -> Value {
    let launch = json!({"scenarioRef": "fraud/high-value-new-device@1.0.0", "inputs": {}});
    match path {
        "/launch/compile" | "/examples/run" => launch,
        // Compiled but not submitted: the answer without its run fields.
        "/launch" => json!({
            "scenarioRef": "fraud/high-value-new-device@1.0.0",
            "inputs": {},
            "submitToControlPlane": false,
        }),
        "/runs/{id}/artifacts" => json!({"kind": "json", "label": "notes", "inline": {"a": 1}}),
        "/keys" => json!({"actor": "ops", "roles": ["viewer"]}),
        "/webhooks" => json!({"url": "http://127.0.0.1:9/hook", "secret": "s"}),
        "/webhooks/{webhookId}" => json!({"active": false}),
        _ => requests::seed_example(),
    }
}

/// A validator for `schema` as it sits in `document` (its `$ref`s point into the components).
fn schema_validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document["components"],
        "allOf": [schema],
    });
    jsonschema::draft202012::new(&root).expect("a documented schema compiles")
}

#[test]
fn document_validates_as_openapi_3_1() {
    let document = openapi::document().expect("the document is generated");
    let validator = oas_validator();
    let problems = errors(&validator, &document);
    assert!(
        problems.is_empty(),
        "not OpenAPI 3.1:\n{}",
        problems.join("\n")
    );
    assert_eq!(document["openapi"], "3.1.0");

    // The validator is not vacuous: documents breaking 3.1 rules are refused.
    let mut without_info = document.clone();
    without_info.as_object_mut().expect("object").remove("info");
    assert!(!validator.is_valid(&without_info));
    let mut optional_path_parameter = document.clone();
    optional_path_parameter["paths"]["/runs/{id}"]["get"]["parameters"][0]["required"] =
        json!(false);
    assert!(!validator.is_valid(&optional_path_parameter));
    let mut bad_media_type = document.clone();
    bad_media_type["paths"]["/runs/{id}"]["get"]["responses"]["200"]["content"] =
        json!({"not a media type": {}});
    assert!(!validator.is_valid(&bad_media_type));

    // That schema checks Schema Objects only for being objects: check each against the
    // JSON Schema 2020-12 meta-schema (the OAS 3.1 default dialect's base).
    for (at, schema) in schemas(&document) {
        if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
            panic!("{at}: not a 2020-12 schema: {error}");
        }
    }

    // Rules the JSON Schema cannot state: operationIds are unique, every `$ref` resolves, and
    // a path's template parameters are exactly its `in: path` parameters.
    let mut ids = HashSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        let template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, operation) in item.as_object().expect("path item") {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} used twice");
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|parameter| parameter["in"] == "path")
                .filter_map(|parameter| parameter["name"].as_str())
                .collect();
            assert_eq!(template, declared, "{method} {path}: path parameters");
        }
    }
    let mut refs = Vec::new();
    references(&document, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference.strip_prefix('#').expect("local reference");
        assert!(
            document.pointer(pointer).is_some(),
            "{reference} resolves to nothing"
        );
    }
}

/// Both ways: every routed (method, path) is in the document and nothing else is; and every
/// documented operation answers on a served instance, with a documented status and content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_route_answers() {
    let document = openapi::document().expect("the document is generated");
    let routed: BTreeSet<(String, String)> = RPC_ROUTES
        .iter()
        .chain(ALIAS_ROUTES)
        .map(|(_, method, path)| (*method, *path))
        .chain(OPS_ROUTES.iter().copied())
        .map(|(method, path)| (method.to_ascii_lowercase(), path.to_owned()))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        routed, documented,
        "routes and documented operations differ"
    );
    for (rpc, method, path) in RPC_ROUTES {
        let operation = &document["paths"][path][method.to_ascii_lowercase()];
        assert_eq!(operation["operationId"], *rpc, "{method} {path}");
        assert!(
            operation["summary"].is_string(),
            "{method} {path}: no summary"
        );
    }

    // With a key (the client sends it), so storing another key does not change who may call.
    let options = support::Options {
        auth: support::admin_key_auth(),
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let (status, served) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, document, "the served document is the generated one");

    // The answers' check is not vacuous: references into the components resolve and bind.
    let run = schema_validator(&document, &json!({"$ref": "#/components/schemas/Run"}));
    assert!(!run.is_valid(&json!({"id": 1})));

    let run_id = app.start_run(&requests::seed_example()).await;
    let key_id = app.create_viewer_key().await;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            // A webhook of its own for each route that names one (one of them deletes it).
            let webhook_id = if path.contains("{webhookId}") {
                let (status, webhook) = app.post("/webhooks", &body("/webhooks")).await;
                assert_eq!(status, 201, "{webhook}");
                webhook["id"].as_str().expect("a webhook id").to_owned()
            } else {
                String::new()
            };
            // Path parameters that name things that exist, so a 404 NOT_FOUND can only mean "not routed".
            let url = format!(
                "{}{}",
                app.base,
                path.replace("{id}", &run_id)
                    .replace("{pack}", "fraud")
                    .replace("{scenario}", "high-value-new-device")
                    .replace("{version}", "1.0.0")
                    .replace("{ref}", "fraud-agent")
                    .replace("{keyId}", &key_id)
                    .replace("{policyId}", "policy.default")
                    .replace("{webhookId}", &webhook_id)
            );
            let request = match (method.as_str(), body(path.as_str())) {
                ("get", _) => app.http.get(&url),
                ("delete", _) => app.http.delete(&url),
                ("patch", body) => app.http.patch(&url).json(&body),
                // Optional bodies are left out, so those routes answer their success.
                _ if operation["requestBody"]["required"] == false => app.http.post(&url),
                (_, body) => app.http.post(&url).json(&body),
            };
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            assert!(
                crate::parity::routed(status, response.headers()),
                "{method} {path} is not routed ({status})"
            );
            let responses = &operation["responses"];
            let mut documented = &responses[status.to_string()];
            if documented.is_null() {
                documented = &responses[format!("{}XX", status / 100)];
            }
            if let Some(reference) = documented["$ref"].as_str() {
                documented = document
                    .pointer(reference.trim_start_matches('#'))
                    .expect("reference resolves");
            }
            assert!(
                !documented.is_null(),
                "{method} {path} answered {status}, which is not documented"
            );
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let media = content_type.split(';').next().unwrap_or_default().trim();
            let Some(media_type) = documented["content"].get(media) else {
                panic!("{method} {path} {status}: {content_type} is not a documented content");
            };
            if media == "text/event-stream" {
                // A live stream does not end; the status and content type are what is checked.
                continue;
            }
            let body = response.text().await.expect("body");
            if media == "application/json" {
                let instance: Value = serde_json::from_str(&body).expect("JSON body");
                let validator = schema_validator(&document, &media_type["schema"]);
                let problems = errors(&validator, &instance);
                assert!(
                    problems.is_empty(),
                    "{method} {path} {status} does not match its documented schema:\n{}\n{body}",
                    problems.join("\n")
                );
            }
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_shows_every_operation() {
    let document = openapi::document().expect("the document is generated");
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let response = app
        .http
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .expect("GET /docs");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.expect("page");
    for item in document["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("path item").values() {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(
                page.contains(&format!("id=\"op-{id}\"")),
                "/docs lacks {id}"
            );
        }
    }
    for name in document["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        assert!(
            page.contains(&format!("id=\"schema-{name}\"")),
            "/docs lacks schema {name}"
        );
    }
    // Self-contained: nothing is loaded from anywhere else.
    for needle in ["<script", "<link", "src=", "@import"] {
        assert!(!page.contains(needle), "/docs contains {needle}");
    }
    app.stop().await;
}

/// The document states what the server enforces, and the server enforces what it states: run
/// ids are UUIDs, the uint32 parameters stop at `u32::MAX` (one past it is a field error, not a
/// value answered out of range), and every operation lists the refusals of its kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_what_the_server_enforces() {
    let document = openapi::document().expect("the document is generated");
    let parameter = |path: &str, method: &str, name: &str| -> Value {
        document["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|parameter| parameter["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
    };
    let mut id_routes = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let responses = &operation["responses"];
            assert!(
                responses["421"].is_object(),
                "{method} {path}: no 421 for a foreign Host"
            );
            if operation["requestBody"].is_object() {
                for status in ["400", "413", "415"] {
                    assert!(
                        responses[status].is_object(),
                        "{method} {path} takes a body but documents no {status}"
                    );
                }
            }
            if path.contains("{id}") {
                id_routes += 1;
                assert_eq!(
                    parameter(path, method, "id")["schema"]["format"],
                    "uuid",
                    "{method} {path}"
                );
                assert!(responses["404"].is_object(), "{method} {path}: no 404");
            }
        }
    }
    assert!(id_routes > 10, "{id_routes} routes with a run id");
    let limits = [
        ("/runs", "offset", 0),
        ("/runs", "limit", 1),
        ("/events", "afterSeq", 0),
        ("/runs/{id}/events", "afterSeq", 0),
        ("/runs/{id}/replay/state", "seq", 0),
    ];
    for (path, name, minimum) in limits {
        let schema = &parameter(path, "get", name)["schema"];
        assert_eq!(schema["minimum"], minimum, "{path} {name}");
        assert!(
            schema["maximum"].as_u64() <= Some(u64::from(u32::MAX)),
            "{path} {name}"
        );
    }
    let body = &document["components"]["schemas"]["SessionSpec"];
    assert!(
        body["required"]
            .as_array()
            .is_some_and(|names| names.contains(&json!("modeName"))),
        "{body}"
    );
    assert_eq!(body["properties"]["modeName"]["minLength"], 1);

    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let run_id = app.start_run(&requests::seed_example()).await;
    let too_far = u64::from(u32::MAX) + 1;
    for (url, field) in [
        (format!("/runs?offset={too_far}"), "offset"),
        (format!("/events?afterSeq={too_far}"), "afterSeq"),
        (
            format!("/runs/{run_id}/events?afterSeq={too_far}"),
            "afterSeq",
        ),
        (format!("/runs/{run_id}/replay/state?seq={too_far}"), "seq"),
        (
            format!("/runs/{run_id}/replay/stream?fromSeq={too_far}"),
            "fromSeq",
        ),
        (
            format!("/runs/{run_id}/stream?heartbeatMs={too_far}"),
            "heartbeatMs",
        ),
        (
            format!("/runs/{run_id}/stream?includeSnapshot=1"),
            "includeSnapshot",
        ),
    ] {
        let (status, body) = app.get(&url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["errorCode"], "VALIDATION_ERROR", "{url}");
        assert_eq!(
            body["details"]["errors"][0]["field"], field,
            "{url}: {body}"
        );
    }
    // The largest documented offset is taken and answered as it was asked.
    let (status, page) = app.get(&format!("/runs?offset={}", u32::MAX)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["offset"], u32::MAX);
    app.stop().await;
}
