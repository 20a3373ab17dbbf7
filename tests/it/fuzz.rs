//! Property tests of agent input: arbitrary bytes and arbitrary JSON, biased toward the real
//! shapes (a valid request with a few of its fields replaced, removed or added), sent to the
//! routes that read a body an agent or a UI wrote: `POST /runs`, `POST /runs/validate`,
//! `POST /runs/{id}/messages` (and `signal`, `context`; to a running run and to an unknown
//! one), `POST /launch/compile`, and the registry's compile in-process. Every answer is below 500, every 4xx is our error shape
//! with a known code, and nothing panics, neither in the handler nor in work it started.
//!
//! Each property serves one app and runs its cases against it. The seed is fixed, so a failure
//! repeats; `PROPTEST_RNG_SEED` and `PROPTEST_CASES` explore further. Nothing is persisted.

use std::path::Path;
use std::sync::{Mutex, Once};
use std::time::Duration;

use macp_control_plane::error::{ApiError, ErrorCode};
use macp_control_plane::registry::{CompileRequest, Registry, RegistryOptions};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend, TestApp};

/// The seed unless `PROPTEST_RNG_SEED` says otherwise: CI sees the same cases every time.
const SEED: u64 = 0x6d61_6370_1212;

// ---------------------------------------------------------------------------------------------
// Running properties

/// Names of the threads that panicked; the properties run their servers on threads named
/// `fuzz-<property>`, so each looks for its own.
static PANICKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records panics on `fuzz-` threads, then reports them as before (other tests share the hook).
fn watch_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(name) = std::thread::current().name()
                && name.starts_with("fuzz-")
                && let Ok(mut panicked) = PANICKED.lock()
            {
                panicked.push(name.to_owned());
            }
            previous(info);
        }));
    });
}

fn panics_on(thread: &str) -> usize {
    PANICKED
        .lock()
        .map(|names| names.iter().filter(|name| *name == thread).count())
        .unwrap_or(usize::MAX)
}

/// A runtime whose threads (workers and blocking) are all named `fuzz-<property>`.
fn runtime(property: &str) -> tokio::runtime::Runtime {
    watch_panics();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("fuzz-{property}"))
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(cases: u32) -> Config {
    let defaults = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            cases
        },
        rng_seed: match defaults.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            fixed => fixed,
        },
        // No regression files in the repository: the fixed seed is what makes a failure repeat.
        failure_persistence: None,
        max_shrink_iters: 256,
        ..defaults
    }
}

/// Runs `test` on `cases` inputs; a failure panics with the smallest failing input found.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(config(cases));
    if let Err(error) = runner.run(&strategy, test) {
        panic!("{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// What is sent, always as `content-type: application/json`.
#[derive(Clone)]
enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(value) => write!(f, "Json({value})"),
            Body::Bytes(bytes) => write!(f, "Bytes(b\"{}\")", bytes.escape_ascii()),
        }
    }
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Json(value) => serde_json::to_vec(value).expect("a Value serializes"),
            Body::Bytes(bytes) => bytes.clone(),
        }
    }
}

/// Strings the service gives meaning to: keys, modes, participants, message types, encodings.
const WORDS: &[&str] = &[
    "",
    " ",
    "live",
    "sandbox",
    "replay",
    "rust",
    "v1",
    "macp.mode.decision.v1",
    "macp.mode.proposal.v1",
    "macp.mode.task.v1",
    "1.0.0",
    "config.default",
    "policy.default",
    "coordinator",
    "fraud-agent",
    "risk-agent",
    "growth-agent",
    "mallory",
    "Proposal",
    "Evaluation",
    "Vote",
    "Objection",
    "Commitment",
    "Signal",
    "request",
    "broadcast",
    "proposal",
    "context",
    "json",
    "text",
    "base64",
    "proto",
    "macp.v1.CommitmentPayload",
    "macp.modes.decision.v1.ProposalPayload",
    "macp.modes.decision.v1.VotePayload",
    "proposal_id",
    "p1",
    "APPROVE",
    "service",
    "user",
    "fraud/high-value-new-device@1.0.0",
    "lending/small-business-loan@1.0.0",
    "claims/water-damage-claim@1.0.0",
    "default",
    "00000000-0000-0000-0000-000000000000",
    "null",
    "{{ inputs.customerId }}",
    "{{",
    "}}",
    "../..",
    "AAAA",
    "=",
    "%00",
];

/// Keys of the request shapes, so added fields are often real ones in the wrong place.
const KEYS: &[&str] = &[
    "mode",
    "runtime",
    "kind",
    "version",
    "session",
    "modeName",
    "modeVersion",
    "configurationVersion",
    "policyVersion",
    "policyHints",
    "ttlMs",
    "initiatorParticipantId",
    "participants",
    "id",
    "role",
    "transportIdentity",
    "roots",
    "uri",
    "context",
    "contextEnvelope",
    "contextId",
    "metadata",
    "commitments",
    "title",
    "requiredRoles",
    "kickoff",
    "from",
    "to",
    "messageType",
    "payload",
    "payloadEnvelope",
    "encoding",
    "mediaType",
    "typeName",
    "value",
    "messageId",
    "execution",
    "idempotencyKey",
    "tags",
    "requester",
    "actorId",
    "actorType",
    "scenarioRef",
    "templateId",
    "inputs",
    "runLabel",
    "submitToControlPlane",
    "transactionAmount",
    "accountAgeDays",
    "deviceTrustScore",
    "loanAmount",
    "termMonths",
    "creditScore",
    "claimAmount",
    "priorClaims",
    "confidence",
    "signalType",
    "severity",
    "data",
    "llmCall",
    "tokenUsage",
    "promptTokens",
    "completionTokens",
    "latencyMs",
    "progress",
    "total",
];

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(i64::MAX as u64 + 1),
            json!(u32::MAX as u64 + 1),
            json!(i32::MIN as i64 - 1),
            json!(9_007_199_254_740_993_u64),
            json!(1e308),
            json!(-1e308),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
            json!(5e-324),
            json!(-0.0),
            json!(0.5),
            json!(1.5),
            json!(1e20),
            json!(-1e20),
        ]),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|float| {
            serde_json::Number::from_f64(float).map_or(Value::Null, Value::Number)
        }),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        // Control characters, bidi overrides, a BOM, a NUL.
        2 => "[\\x00-\\x1f\\x7f\u{202e}\u{2066}\u{feff}\u{fffd}a-z.@/{} -]{0,16}",
        1 => any::<String>(),
        1 => (1_000usize..100_000).prop_map(|length| "x".repeat(length)),
        1 => (1usize..20).prop_map(|count| "\u{1F600}".repeat(count)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => text(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Null),
        2 => any::<bool>().prop_map(Value::Bool),
        8 => number(),
        10 => text().prop_map(Value::String),
        // Nested arrays, mostly within serde_json's recursion limit (128).
        1 => (1usize..160).prop_map(|depth| {
            (0..depth).fold(json!(1), |inner, _| Value::Array(vec![inner]))
        }),
    ]
}

/// Arbitrary JSON whose strings and keys lean toward the ones the service reads.
fn any_json() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
        .boxed()
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Item(usize),
}

/// The path of every node of `value`, the root (`[]`) first.
fn paths(value: &Value) -> Vec<Vec<Step>> {
    fn walk(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(path.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(Step::Key(key.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (position, child) in items.iter().enumerate() {
                    path.push(Step::Item(position));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn node<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |node, step| match step {
        Step::Key(key) => node.get_mut(key.as_str()),
        Step::Item(position) => node.get_mut(*position),
    })
}

/// One change to a valid request, at one of its nodes.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, Value),
    Remove(Index),
    /// Into an object (or an array, appended); any other node becomes `{key: value}`.
    Add(Index, String, Value),
}

impl Edit {
    fn apply(&self, target: &mut Value, paths: &[Vec<Step>]) {
        let path = |index: &Index| &paths[index.index(paths.len())];
        match self {
            Edit::Replace(at, value) => {
                if let Some(node) = node(target, path(at)) {
                    *node = value.clone();
                }
            }
            Edit::Remove(at) => {
                let Some((last, parent)) = path(at).split_last() else {
                    return;
                };
                match (node(target, parent), last) {
                    (Some(Value::Object(map)), Step::Key(key)) => {
                        map.shift_remove(key);
                    }
                    (Some(Value::Array(items)), Step::Item(position))
                        if *position < items.len() =>
                    {
                        items.remove(*position);
                    }
                    _ => {}
                }
            }
            Edit::Add(at, key, value) => match node(target, path(at)) {
                Some(Value::Object(map)) => {
                    map.insert(key.clone(), value.clone());
                }
                Some(Value::Array(items)) => items.push(value.clone()),
                Some(other) => *other = json!({ key: value }),
                None => {}
            },
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), any_json()).prop_map(|(at, value)| Edit::Replace(at, value)),
        2 => any::<Index>().prop_map(Edit::Remove),
        2 => (any::<Index>(), key(), any_json()).prop_map(|(at, key, value)| Edit::Add(at, key, value)),
    ]
}

/// One of `bases` with up to four edits: mostly almost valid, sometimes valid as it is (an
/// edit that keeps it valid, or none), so the code past validation gets its share.
fn shaped(bases: Vec<Value>) -> BoxedStrategy<Value> {
    let edits = prop_oneof![
        2 => prop::collection::vec(edit(), 0..=1),
        1 => prop::collection::vec(edit(), 2..=4),
    ];
    (prop::sample::select(bases), edits)
        .prop_map(|(mut value, edits)| {
            let paths = paths(&value);
            for edit in &edits {
                edit.apply(&mut value, &paths);
            }
            value
        })
        .boxed()
}

/// Bytes that are not JSON, or not quite: random bytes, truncated and corrupted documents,
/// invalid UTF-8, numbers out of range, nesting past the limit.
fn bad_bytes(documents: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Vec<u8>> {
    let text_of = |value: &Value| serde_json::to_vec(value).expect("a Value serializes");
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..256),
        3 => (documents.clone(), any::<Index>()).prop_map(move |(value, cut)| {
            let mut bytes = text_of(&value);
            bytes.truncate(cut.index(bytes.len().max(1)));
            bytes
        }),
        3 => (
            documents,
            any::<Index>(),
            prop::sample::select(vec![
                b"\xff".to_vec(),
                b"\xc3".to_vec(),
                b"\xed\xa0\x80".to_vec(),
                b"\xf4\x90\x80\x80".to_vec(),
                b"\x00".to_vec(),
                b"\\ud800".to_vec(),
                b"\"\x01\"".to_vec(),
                b"1e400".to_vec(),
                b"-1e400".to_vec(),
                b"18446744073709551616".to_vec(),
                b"123456789012345678901234567890".to_vec(),
                b"NaN".to_vec(),
                b"Infinity".to_vec(),
                b",".to_vec(),
                b"}".to_vec(),
            ]),
        )
            .prop_map(move |(value, at, insert)| {
                let mut bytes = text_of(&value);
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, insert);
                bytes
            }),
        1 => prop::sample::select(vec![
            b"".to_vec(),
            b"   \n\t".to_vec(),
            b"\xef\xbb\xbf{}".to_vec(),
            b"{\"a\":1}{\"b\":2}".to_vec(),
            b"{\"mode\":\"live\",\"mode\":\"sandbox\"}".to_vec(),
            b"\"\\ud800\"".to_vec(),
            b"{\"session\":1e400}".to_vec(),
            b"{\"from\":\"\\u0000\"}".to_vec(),
            [&b"["[..]; 100_000].concat(),
            [&b"{\"a\":"[..]; 10_000].concat(),
        ]),
    ]
}

fn body(bases: Vec<Value>) -> impl Strategy<Value = Body> {
    let documents = shaped(bases);
    prop_oneof![
        6 => documents.clone().prop_map(Body::Json),
        2 => any_json().prop_map(Body::Json),
        3 => bad_bytes(documents).prop_map(Body::Bytes),
    ]
}

// ---------------------------------------------------------------------------------------------
// Real shapes

/// A decision-mode ExecutionRequest with two kickoff messages, one with a proto envelope and
/// one with a plain payload; the same without kickoff; one of another mode.
fn run_bases() -> Vec<Value> {
    let mut two = requests::scripted_decision();
    let kickoff: Vec<Value> = two["kickoff"]
        .as_array()
        .map(|items| items.iter().take(2).cloned().collect())
        .unwrap_or_default();
    two["kickoff"] = Value::Array(kickoff);
    two["kickoff"][1]
        .as_object_mut()
        .expect("kickoff message")
        .remove("payloadEnvelope");
    two["kickoff"][1]["payload"] = json!({"proposal_id": "p1", "recommendation": "APPROVE", "confidence": 0.9, "reason": "ok"});
    two["execution"]["idempotencyKey"] = json!("fuzz");
    let mut none = requests::scripted_decision();
    none["kickoff"] = json!([]);
    none["mode"] = json!("sandbox");
    vec![two, none, requests::scripted_proposal()]
}

/// Message bodies for a decision-mode run: plain payloads and each envelope encoding.
fn message_bases() -> Vec<Value> {
    vec![
        json!({"from": "fraud-agent", "to": ["risk-agent"], "messageType": "Proposal",
               "payload": {"proposal_id": "p2", "option": "step_up", "rationale": "new device"}}),
        json!({"from": "risk-agent", "to": ["coordinator"], "messageType": "Evaluation",
               "payload": {"proposal_id": "p1", "recommendation": "APPROVE", "confidence": 0.9,
                           "reason": "risk acceptable"}}),
        json!({"from": "risk-agent", "messageType": "Objection",
               "payload": {"proposal_id": "p1", "reason": "no", "severity": "high"}}),
        json!({"from": "growth-agent", "messageType": "Vote", "messageId": "m-1",
               "payload": {"proposal_id": "p1", "vote": "APPROVE"}, "metadata": {"k": "v"}}),
        json!({"from": "risk-agent", "messageType": "Note",
               "payloadEnvelope": {"encoding": "json", "json": {"note": 1}}}),
        json!({"from": "risk-agent", "messageType": "Note",
               "payloadEnvelope": {"encoding": "text", "text": "hello", "mediaType": "text/plain"}}),
        json!({"from": "risk-agent", "messageType": "Note",
               "payloadEnvelope": {"encoding": "base64", "base64": "aGVsbG8="}}),
        json!({"from": "fraud-agent", "messageType": "Commitment",
               "payloadEnvelope": {"encoding": "proto", "proto": {"typeName": "macp.v1.CommitmentPayload",
                   "value": {"commitment_id": "c0", "action": "decision.selected", "authority_scope": "x",
                             "reason": "y", "mode_version": "1.0.0", "configuration_version": "config.default",
                             "outcome_positive": true}}}}),
    ]
}

/// Signals, one of them carrying LLM usage with token counts past any integer type.
fn signal_bases() -> Vec<Value> {
    vec![
        json!({"from": "risk-agent", "signalType": "suspicious_device", "confidence": 0.7,
               "severity": "high", "data": {"device": "new"}, "to": ["coordinator"]}),
        json!({"from": "fraud-agent", "signalType": "llm.call.completed", "messageId": "s-1",
               "data": {"promptTokens": u64::MAX, "completionTokens": 1e308, "model": "m",
                        "latencyMs": -1}}),
    ]
}

fn context_bases() -> Vec<Value> {
    vec![json!({"from": "coordinator", "context": {"transactionAmount": 2400, "tags": ["a"]}})]
}

/// Compile requests of each sample scenario, with a template and its inputs.
fn compile_bases() -> Vec<Value> {
    vec![
        json!({"scenarioRef": "fraud/high-value-new-device@1.0.0", "templateId": "strict-risk",
               "mode": "live", "inputs": {"customerId": "C-1", "transactionAmount": 2400,
               "merchantCategory": "electronics", "deviceTrustScore": 0.18, "accountAgeDays": 14,
               "isVipCustomer": true, "priorChargebacks": 1}}),
        json!({"scenarioRef": "lending/small-business-loan@1.0.0", "templateId": "default",
               "mode": "sandbox", "inputs": {"applicantId": "A-1", "businessName": "Acme",
               "loanAmount": 50000, "termMonths": 36, "creditScore": 700,
               "debtServiceCoverage": 1.4, "yearsInBusiness": 5, "collateralValue": 10000}}),
        json!({"scenarioRef": "claims/water-damage-claim@1.0.0", "inputs": {"claimId": "CL-1",
               "claimAmount": 5000, "incidentSeverity": "moderate", "policyTenureMonths": 24,
               "priorClaims": 0, "hasPhotoEvidence": true}}),
        json!({"scenarioRef": "fraud/high-value-new-device@1.0.0", "templateId": "", "inputs": {}}),
    ]
}

// ---------------------------------------------------------------------------------------------
// Sending and judging answers

async fn post(app: &TestApp, path: &str, body: &Body) -> Result<(u16, Vec<u8>), TestCaseError> {
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.bytes())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|error| TestCaseError::fail(format!("POST {path}: no answer: {error}")))?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|error| TestCaseError::fail(format!("POST {path}: body not read: {error}")))?;
    Ok((status, bytes.to_vec()))
}

/// Below 500; a 4xx is `{statusCode, errorCode, message, details?}` with a known code whose
/// status is the answer's. Returns the answer's JSON.
fn judge(path: &str, status: u16, body: &[u8]) -> Result<Value, TestCaseError> {
    let text = String::from_utf8_lossy(body);
    prop_assert!(status < 500, "POST {path}: {status} {text}");
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        TestCaseError::fail(format!("POST {path}: {status}, not JSON ({error}): {text}"))
    })?;
    if status < 400 {
        return Ok(value);
    }
    let object = value.as_object().ok_or_else(|| {
        TestCaseError::fail(format!("POST {path}: {status} not an object: {text}"))
    })?;
    for key in object.keys() {
        prop_assert!(
            ["statusCode", "errorCode", "message", "details"].contains(&key.as_str()),
            "POST {path}: unexpected key {key}: {text}"
        );
    }
    prop_assert_eq!(
        &value["statusCode"],
        &json!(status),
        "POST {}: {}",
        path,
        text
    );
    prop_assert!(value["message"].is_string(), "POST {path}: {text}");
    let code = value["errorCode"].as_str().unwrap_or_default();
    let known = ErrorCode::ALL.iter().find(|known| known.as_str() == code);
    prop_assert!(
        known.is_some_and(|known| known.http_status() == status),
        "POST {path}: errorCode {code:?} unknown or not {status}: {text}"
    );
    if let Some(errors) = value.pointer("/details/errors") {
        let well_formed = errors.as_array().is_some_and(|errors| {
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|error| error["field"].is_string() && error["message"].is_string())
        });
        prop_assert!(well_formed, "POST {path}: details.errors: {text}");
    }
    Ok(value)
}

/// Answers by route and status, so a property that stopped reaching the code behind the
/// parser (every case refused) or stopped refusing fails instead of passing vacuously.
#[derive(Default)]
struct Tally(Mutex<std::collections::BTreeMap<(String, u16), u32>>);

impl Tally {
    fn record(&self, route: &str, status: u16) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry((route.to_owned(), status)).or_default() += 1;
        }
    }

    /// Each route answered both 2xx and 4xx.
    fn assert_both(&self, routes: &[&str]) {
        let counts = self.0.lock().expect("tally");
        eprintln!("answers: {counts:?}");
        for route in routes {
            let answered = |range: std::ops::Range<u16>| {
                counts
                    .iter()
                    .any(|((at, status), _)| at == route && range.contains(status))
            };
            assert!(
                answered(200..300) && answered(400..500),
                "{route} answered only one kind: {counts:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

/// A served app on a runtime of its own, whose threads are named `fuzz-<property>`.
struct Served {
    rt: tokio::runtime::Runtime,
    app: TestApp,
    thread: String,
}

impl Served {
    fn start(property: &str) -> Self {
        let rt = runtime(property);
        let app = rt
            .block_on(support::start(Backend::Sqlite))
            .expect("SQLite app");
        Served {
            rt,
            app,
            thread: format!("fuzz-{property}"),
        }
    }

    /// Runs one case; a panic on the server's threads while it ran fails it.
    fn case(
        &self,
        test: impl std::future::Future<Output = Result<(), TestCaseError>>,
    ) -> Result<(), TestCaseError> {
        let before = panics_on(&self.thread);
        self.rt.block_on(test)?;
        prop_assert_eq!(
            panics_on(&self.thread),
            before,
            "a thread of the server panicked (see stderr)"
        );
        Ok(())
    }

    /// Stops the app (its background work with it), then checks that nothing panicked late:
    /// work that accepted cases started (executors, observers) outlives the case.
    fn stop(self) {
        self.rt.block_on(self.app.stop());
        assert_eq!(
            panics_on(&self.thread),
            0,
            "a thread of the server panicked (see stderr)"
        );
    }
}

/// `POST /runs/validate` and `POST /runs` with the same body: both answer well, and they agree
/// (valid ⇔ started; the same refusal otherwise).
#[test]
fn runs_start_and_validate() {
    let served = Served::start("runs");
    let app = &served.app;
    let tally = Tally::default();
    check(128, body(run_bases()), |body| {
        served.case(async {
            let (status, answer) = post(app, "/runs/validate", &body).await?;
            let report = judge("/runs/validate", status, &answer)?;
            tally.record("/runs/validate", status);
            let (start_status, answer) = post(app, "/runs", &body).await?;
            let started = judge("/runs", start_status, &answer)?;
            tally.record("/runs", start_status);
            if status == 200 {
                let valid = report["valid"].as_bool();
                prop_assert!(valid.is_some(), "validate answered {report}");
                prop_assert_eq!(
                    valid == Some(true),
                    matches!(start_status, 200 | 201),
                    "validate said {}, start answered {} {}",
                    report,
                    start_status,
                    started
                );
            } else {
                prop_assert_eq!((status, &report), (start_status, &started));
            }
            Ok(())
        })
    });
    tally.assert_both(&["/runs/validate", "/runs"]);
    served.stop();
}

/// A running decision run whose kickoff proposed `p1`: evaluations and votes of it are
/// accepted, so the cases reach the runtime, not only the parser.
async fn running_run(app: &TestApp) -> String {
    let mut request = requests::scripted_decision();
    let proposal = request["kickoff"][0].clone();
    request["kickoff"] = json!([proposal]);
    let run_id = app.start_run(&request).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    run_id
}

/// What an agent posts to a run: a message, a signal or a context update.
fn agent_input() -> impl Strategy<Value = (&'static str, Body)> {
    prop_oneof![
        3 => body(message_bases()).prop_map(|body| ("messages", body)),
        1 => body(signal_bases()).prop_map(|body| ("signal", body)),
        1 => body(context_bases()).prop_map(|body| ("context", body)),
    ]
}

/// `POST /runs/{id}/messages` (and the other agent routes, `signal` and `context`) to a
/// running decision run and to an unknown run.
#[test]
fn run_messages() {
    let served = Served::start("messages");
    let app = &served.app;
    let run = Mutex::new(served.rt.block_on(running_run(app)));
    let tally = Tally::default();
    check(128, agent_input(), |(route, body)| {
        served.case(async {
            let unknown = format!("/runs/{}/{route}", uuid::Uuid::new_v4());
            let (status, answer) = post(app, &unknown, &body).await?;
            let refused = judge(&unknown, status, &answer)?;
            tally.record("unknown run", status);
            prop_assert!(
                matches!(status, 400 | 404 | 413),
                "unknown run: {status} {refused}"
            );

            let run_id = run.lock().expect("run").clone();
            let path = format!("/runs/{run_id}/{route}");
            let (status, answer) = post(app, &path, &body).await?;
            let answer = judge(&path, status, &answer)?;
            tally.record(route, status);
            prop_assert!(status != 409, "the run stopped taking messages: {answer}");
            if status < 400 {
                // An accepted message moves the session on (the runtime then refuses it again,
                // or ends the session): the next case gets a fresh run. Refused ones change
                // nothing (ARCHITECTURE invariant 10), so every case meets the same session.
                *run.lock().expect("run") = running_run(app).await;
            }
            Ok(())
        })
    });
    tally.assert_both(&["messages"]);
    served.stop();
}

/// `POST /launch/compile`.
#[test]
fn launch_compile() {
    let served = Served::start("compile");
    let tally = Tally::default();
    check(128, body(compile_bases()), |body| {
        served.case(async {
            let (status, answer) = post(&served.app, "/launch/compile", &body).await?;
            let compiled = judge("/launch/compile", status, &answer)?;
            tally.record("/launch/compile", status);
            if status < 400 {
                prop_assert_eq!(status, 201);
                prop_assert!(
                    compiled["executionRequest"].is_object(),
                    "compiled: {compiled}"
                );
            }
            Ok(())
        })
    });
    tally.assert_both(&["/launch/compile"]);
    served.stop();
}

/// The registry's compile, in-process: no panic, and every refusal is a 4xx.
#[test]
fn registry_compile() {
    let registry = Registry::new(RegistryOptions::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packs"),
    ));
    let values = prop_oneof![4 => shaped(compile_bases()), 1 => any_json()];
    check(256, values, |value| {
        match CompileRequest::from_json(&value).and_then(|request| registry.compile(&request)) {
            Ok(compiled) => prop_assert!(compiled.execution_request.is_object()),
            Err(error) => {
                let error = ApiError::from(error);
                let status = error.code.http_status();
                prop_assert!(
                    (400..500).contains(&status),
                    "{status} for {value}: {error}"
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Regressions the properties found, kept as examples

/// A repeated idempotency key on SQLite audited the call in a second write turn while holding
/// the first: the request never answered and every later write waited behind it.
#[test]
fn repeated_idempotency_key_answers_the_existing_run() {
    let served = Served::start("idempotency");
    let app = &served.app;
    served.rt.block_on(async {
        let mut request = requests::scripted_decision();
        request["execution"]["idempotencyKey"] = json!(uuid::Uuid::new_v4().to_string());
        let body = Body::Json(request);
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (status, answer) = post(app, "/runs", &body).await.expect("an answer");
            answers.push((
                status,
                judge("/runs", status, &answer).expect("well formed"),
            ));
        }
        assert_eq!(answers[0].0, 201, "{}", answers[0].1);
        assert_eq!(answers[1].0, 200, "{}", answers[1].1);
        assert_eq!(answers[1].1["existing"], true);
        assert_eq!(answers[1].1["runId"], answers[0].1["runId"]);
        // Writes go on after it.
        app.start_run(&requests::scripted_decision()).await;
    });
    served.stop();
}
