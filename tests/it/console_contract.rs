//! The UI console's contract: every call its client makes (`tests/data/console/calls.json`,
//! written from its `lib/api` client, live-run hook and types) replayed against the service, in
//! order, each answer checked for its status and every field the console reads, with its JSON
//! type. A failure names the call and the field.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend, TestApp};

const CALLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/console/calls.json");
const FRAUD: &str = "fraud/high-value-new-device@1.0.0";

/// Replaces `{name}` by the captured value: a string that is exactly `{name}` takes the value
/// itself, any other string has it spliced in as text.
fn substitute(value: &Value, vars: &HashMap<String, Value>) -> Value {
    match value {
        Value::String(text) => {
            if let Some(name) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
                && let Some(found) = vars.get(name)
            {
                return found.clone();
            }
            Value::String(splice(text, vars))
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| substitute(i, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), substitute(item, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn splice(text: &str, vars: &HashMap<String, Value>) -> String {
    vars.iter().fold(text.to_owned(), |text, (name, value)| {
        let value = value
            .as_str()
            .map(str::to_owned)
            .unwrap_or(value.to_string());
        text.replace(&format!("{{{name}}}"), &value)
    })
}

fn has_type(value: &Value, types: &str) -> bool {
    types.split('|').any(|kind| match kind {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        other => panic!("calls.json: unknown type {other}"),
    })
}

/// The values at a dotted path (`x[]`: each element of a non-empty array `x`), or what is
/// missing on the way.
fn resolve<'a>(
    value: &'a Value,
    segments: &[&str],
    at: String,
    found: &mut Vec<(String, &'a Value)>,
) -> Result<(), String> {
    let Some((segment, rest)) = segments.split_first() else {
        found.push((at, value));
        return Ok(());
    };
    let (name, each) = match segment.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*segment, false),
    };
    let (inner, at) = if name.is_empty() {
        (value, at)
    } else {
        let at = if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        };
        match value.get(name) {
            Some(inner) => (inner, at),
            None => return Err(format!("{at} is missing")),
        }
    };
    if !each {
        return resolve(inner, rest, at, found);
    }
    let items = inner
        .as_array()
        .ok_or_else(|| format!("{at} is not an array: {}", excerpt(&inner.to_string())))?;
    if items.is_empty() {
        return Err(format!(
            "{at} is empty: nothing to check its elements' fields on"
        ));
    }
    for (index, item) in items.iter().enumerate() {
        resolve(item, rest, format!("{at}[{index}]"), found)?;
    }
    Ok(())
}

/// Every listed field of `body` that is missing or of another type.
fn check_fields(body: &Value, fields: &Value) -> Vec<String> {
    let Some(fields) = fields.as_object() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (path, types) in fields {
        let types = types
            .as_str()
            .expect("calls.json: a field's type is a string");
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('.').collect()
        };
        let mut found = Vec::new();
        match resolve(body, &segments, String::new(), &mut found) {
            Err(problem) => problems.push(format!("field `{path}`: {problem}")),
            Ok(()) => problems.extend(
                found
                    .into_iter()
                    .filter(|(_, value)| !has_type(value, types))
                    .map(|(at, value)| {
                        format!(
                            "field `{path}` ({at}): not {types}: {}",
                            excerpt(&value.to_string())
                        )
                    }),
            ),
        }
    }
    problems
}

/// Reads a server-sent event stream until each event named in `wanted` has come once (or
/// 15 s passed), and checks its data; the problems found.
async fn check_stream(mut response: reqwest::Response, wanted: &Value) -> Vec<String> {
    let wanted = wanted.as_object().expect("calls.json: sse is an object");
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < wanted.len() {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(error)) => return vec![format!("the stream broke: {error}")],
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if wanted.contains_key(name) && !seen.contains_key(name) {
                let parsed = serde_json::from_str(&data).unwrap_or(Value::String(data));
                seen.insert(name.to_owned(), parsed);
            }
        }
    }
    let mut problems = Vec::new();
    for (name, fields) in wanted {
        match seen.get(name) {
            None => problems.push(format!("no `{name}` event within 15 s")),
            Some(data) => problems.extend(
                check_fields(data, fields)
                    .into_iter()
                    .map(|problem| format!("`{name}` event: {problem}")),
            ),
        }
    }
    problems
}

/// An answer as a failure message quotes it: its start.
fn excerpt(text: &str) -> String {
    const LIMIT: usize = 400;
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Replays one call; the problems found (the caller names the call).
async fn replay(app: &TestApp, call: &Value, vars: &mut HashMap<String, Value>) -> Vec<String> {
    let text = |key: &str| call[key].as_str().map(|text| splice(text, vars));
    let method = text("method").expect("calls.json: method");
    let mut url = format!("{}{}", app.base, text("path").expect("calls.json: path"));
    if let Some(query) = text("query") {
        url = format!("{url}?{query}");
    }
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("calls.json: a method");
    // The console's fetch wrapper sends this header on every call, bodies or not.
    let mut request = app
        .http
        .request(method, url)
        .header("content-type", "application/json");
    if let Some(body) = call.get("body") {
        request = request.body(substitute(body, vars).to_string());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return vec![format!("no answer: {error}")],
    };
    let status = response.status().as_u16();
    let expected = call["status"].as_u64().expect("calls.json: status");
    if u64::from(status) != expected {
        let body = response.text().await.unwrap_or_default();
        return vec![format!(
            "status {status}, expected {expected}: {}",
            excerpt(&body)
        )];
    }
    if let Some(wanted) = call.get("sse") {
        return check_stream(response, wanted).await;
    }
    let raw = response.text().await.unwrap_or_default();
    if call["text"] == true {
        return if raw.is_empty() {
            vec!["an empty answer".to_owned()]
        } else {
            Vec::new()
        };
    }
    let Some(fields) = call.get("fields") else {
        return Vec::new();
    };
    let body: Value = match serde_json::from_str(&raw) {
        Ok(body) => body,
        Err(error) => return vec![format!("not JSON ({error}): {}", excerpt(&raw))],
    };
    let problems = check_fields(&body, fields);
    if problems.is_empty()
        && let Some(captures) = call.get("capture").and_then(Value::as_object)
    {
        for (name, path) in captures {
            let path = path.as_str().expect("calls.json: a capture path");
            let value = body.pointer(&format!("/{}", path.replace('.', "/")));
            vars.insert(name.clone(), value.cloned().unwrap_or(Value::Null));
        }
    }
    problems
}

/// The runs the calls are about: a sample pack's scenario launched (its kickoff carries it to a
/// decision), a scripted decision, and a run left running.
async fn make_runs(app: &TestApp) -> HashMap<String, Value> {
    let (status, launched) = app
        .post(
            "/launch",
            &json!({"scenarioRef": FRAUD, "templateId": "majority-vote", "inputs": {}}),
        )
        .await;
    assert_eq!(status, 201, "{launched}");
    let finished = launched["runId"].as_str().expect("runId").to_owned();
    let state = app.wait_terminal(&finished).await;
    assert_eq!(state.run.status, "completed", "the pack's run completes");
    let other = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&other).await;
    let live = app.start_run(&requests::seed_example()).await;
    app.wait_for(&live, |state| state.run.status == "running")
        .await;
    HashMap::from([
        ("finishedRunId".to_owned(), json!(finished)),
        ("otherRunId".to_owned(), json!(other)),
        ("liveRunId".to_owned(), json!(live)),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_gets_every_field_it_reads() {
    let calls: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(CALLS).expect("tests/data/console/calls.json"),
    )
    .expect("calls.json is a JSON array");
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut vars = make_runs(&app).await;
    let mut failures = Vec::new();
    let mut replayed = 0;
    for call in &calls {
        let name = format!(
            "{} {} {} ({})",
            call["method"].as_str().unwrap_or_default(),
            call["path"].as_str().unwrap_or_default(),
            call["query"].as_str().unwrap_or_default(),
            call["name"].as_str().unwrap_or_default(),
        );
        if call["pendingRoute"] == true {
            println!("SKIPPED (route pending): {name}");
            continue;
        }
        replayed += 1;
        failures.extend(
            replay(&app, call, &mut vars)
                .await
                .into_iter()
                .map(|problem| format!("{name}: {problem}")),
        );
    }
    app.stop().await;
    println!(
        "console contract: {replayed} of {} calls replayed",
        calls.len()
    );
    assert!(
        failures.is_empty(),
        "{} problem(s) in the console's calls:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
