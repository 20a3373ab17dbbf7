//! The run pipeline against the real reference runtime, on SQLite and PostgreSQL.

use macp_control_plane::events::canonical::EventDraft;
use macp_control_plane::projection::reducer;
use macp_runtime::pb::macp_runtime_service_client::MacpRuntimeServiceClient;
use macp_runtime::pb::{GetSessionRequest, ListSessionsRequest, SessionMetadata, SessionState};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::requests;
use crate::support::{self, Backend, TestApp};

/// Asks the runtime directly (as `reader`) for a session's state.
async fn runtime_session_state(app: &TestApp, session_id: &str, reader: &str) -> SessionState {
    let metadata = runtime_session(app, session_id, reader).await;
    SessionState::try_from(metadata.state).expect("state")
}

async fn runtime_session(app: &TestApp, session_id: &str, reader: &str) -> SessionMetadata {
    let address = app.app.embedded_runtime().expect("embedded runtime");
    let mut client = MacpRuntimeServiceClient::connect(format!("http://{address}"))
        .await
        .expect("runtime connects");
    let mut request = tonic::Request::new(GetSessionRequest {
        session_id: session_id.to_owned(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {reader}").parse().expect("header"),
    );
    client
        .get_session(request)
        .await
        .expect("get session")
        .into_inner()
        .metadata
        .expect("metadata")
}

/// Invariant 4: folding the stored events gives exactly the stored projection.
async fn assert_rebuild_matches(app: &TestApp, run_id: &str) {
    let events = app
        .store()
        .await
        .events_between(run_id, 0, None, 100_000)
        .await
        .expect("events");
    let stored = app.app.service.state(run_id).await.expect("state");
    let rebuilt = reducer::fold(run_id, events.iter());
    assert_eq!(
        rebuilt, stored,
        "rebuilt projection differs from the stored one"
    );
}

fn assert_dense_seqs(events: &[Value]) {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event["seq"],
            json!(index as i64 + 1),
            "seq gap at {index}: {event}"
        );
    }
}

async fn seed_example_starts_and_cancels(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::seed_example()).await;
    let state = app
        .wait_for(&run_id, |state| {
            state.run.status == "running"
                && state
                    .timeline
                    .recent
                    .iter()
                    .any(|entry| entry.event_type == "proposal.created")
        })
        .await;
    let session_id = state.run.runtime_session_id.clone().expect("session bound");
    assert_eq!(
        runtime_session_state(&app, &session_id, "coordinator").await,
        SessionState::Open
    );

    let (status, run) = app
        .post(
            &format!("/runs/{run_id}/cancel"),
            &json!({"reason": "test over"}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "cancelled");
    assert!(run["endedAt"].is_string());
    assert_eq!(
        runtime_session_state(&app, &session_id, "coordinator").await,
        SessionState::Cancelled
    );
    let types = app.event_types(&run_id).await;
    assert_eq!(types.last().map(String::as_str), Some("run.cancelled"));
    // Cancelling again returns the run unchanged.
    let (status, again) = app
        .post(&format!("/runs/{run_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "cancelled");
    assert_eq!(again["lastEventSeq"], run["lastEventSeq"]);
    assert_rebuild_matches(&app, &run_id).await;
    app.stop().await;
}
on_both_backends!(seed_example_starts_and_cancels);

/// A cancel racing the kickoff: every envelope the runtime accepted is stored before
/// `run.cancelled`, which is the run's last event and carries the reason.
async fn cancel_during_kickoff_keeps_the_terminal_event_last(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    // Proposal, evaluations and votes, but no Commitment: the session stays open.
    let mut request = requests::scripted_decision();
    let kickoff = request["kickoff"].as_array_mut().expect("kickoff");
    kickoff.retain(|message| message["messageType"] != "Commitment");
    let kickoff_len = kickoff.len();
    let run_id = app.start_run(&request).await;
    let state = app
        .wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let session_id = state.run.runtime_session_id.clone().expect("session bound");

    let (status, run) = app
        .post(
            &format!("/runs/{run_id}/cancel"),
            &json!({"reason": "mid-kickoff"}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "cancelled");

    let events = app.events(&run_id).await;
    let last = events.last().expect("events");
    let types: Vec<String> = events
        .iter()
        .map(|event| {
            format!(
                "{} {} {}",
                event["seq"], event["type"], event["data"]["messageId"]
            )
        })
        .collect();
    assert_eq!(last["type"], "run.cancelled", "{types:#?}");
    assert_eq!(last["data"]["reason"], "mid-kickoff");
    assert_eq!(run["lastEventSeq"], last["seq"]);

    // What the runtime accepted from each sender is exactly what was stored.
    let metadata = runtime_session(&app, &session_id, "coordinator").await;
    let mut accepted: Vec<(String, u32)> = metadata
        .participant_activity
        .iter()
        .filter(|activity| activity.message_count > 0)
        .map(|activity| (activity.participant_id.clone(), activity.message_count))
        .collect();
    accepted.sort();
    let mut stored: std::collections::BTreeMap<String, u32> = Default::default();
    for event in events
        .iter()
        .filter(|event| event["type"] == "message.received")
    {
        let sender = event["data"]["sender"].as_str().expect("sender").to_owned();
        *stored.entry(sender).or_default() += 1;
    }
    stored.remove("coordinator"); // the SessionStart, which is not a participant message
    let stored: Vec<(String, u32)> = stored.into_iter().collect();
    assert_eq!(stored, accepted);
    assert!(
        accepted
            .iter()
            .map(|(_, count)| *count as usize)
            .sum::<usize>()
            <= kickoff_len
    );
    assert_rebuild_matches(&app, &run_id).await;
    app.stop().await;
}
on_both_backends!(cancel_during_kickoff_keeps_the_terminal_event_last);

async fn scripted_decision_completes(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed", "{state:#?}");
    let decision = state.decision.current.as_ref().expect("decision");
    assert!(decision.finalized);
    assert_eq!(decision.action, "decision.selected");
    assert_eq!(decision.outcome_positive, Some(json!(true)));
    let mut contributors: Vec<&str> = decision
        .proposals
        .iter()
        .map(|contribution| contribution.participant_id.as_str())
        .collect();
    contributors.sort();
    assert_eq!(contributors, ["fraud-agent", "growth-agent", "risk-agent"]);
    assert!(
        decision
            .proposals
            .iter()
            .all(|c| c.vote.as_deref() == Some("allow"))
    );

    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    let events = app.events(&run_id).await;
    assert_dense_seqs(&events);
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.last(), Some(&"run.completed"));
    assert_eq!(
        types.iter().filter(|t| **t == "decision.finalized").count(),
        1
    );
    assert_eq!(
        types.iter().filter(|t| **t == "message.received").count(),
        8
    );
    let session_id = state.run.runtime_session_id.clone().expect("session");
    assert_eq!(
        runtime_session_state(&app, &session_id, "coordinator").await,
        SessionState::Resolved
    );
    assert_rebuild_matches(&app, &run_id).await;
    if backend == Backend::Sqlite {
        crate::golden::check_decision_golden(&app, &run_id).await;
    }
    app.stop().await;
}
on_both_backends!(scripted_decision_completes);

async fn every_mode_reaches_its_terminal_state(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let cases = [
        (
            "proposal",
            requests::scripted_proposal(),
            &["proposal.created", "proposal.updated", "decision.finalized"][..],
        ),
        (
            "task",
            requests::scripted_task(),
            &[
                "proposal.created",
                "proposal.updated",
                "progress.reported",
                "decision.finalized",
            ][..],
        ),
        (
            "handoff",
            requests::scripted_handoff(),
            &["proposal.created", "proposal.updated", "decision.finalized"][..],
        ),
        (
            "quorum",
            requests::scripted_quorum(),
            &["proposal.created", "proposal.updated", "decision.finalized"][..],
        ),
        (
            "multi_round",
            requests::scripted_multi_round(),
            &["proposal.updated", "decision.finalized"][..],
        ),
    ];
    for (name, request, expected) in cases {
        let run_id = app.start_run(&request).await;
        let state = app.wait_terminal(&run_id).await;
        assert_eq!(state.run.status, "completed", "{name}: {state:#?}");
        let types = app.event_types(&run_id).await;
        for expected_type in expected {
            assert!(
                types.iter().any(|t| t == expected_type),
                "{name}: no {expected_type} in {types:?}"
            );
        }
        for lifecycle in [
            "run.created",
            "run.started",
            "session.bound",
            "session.state.changed",
            "run.completed",
        ] {
            assert!(
                types.iter().any(|t| t == lifecycle),
                "{name}: no {lifecycle}"
            );
        }
        assert_eq!(
            types.last().map(String::as_str),
            Some("run.completed"),
            "{name}"
        );
        assert!(
            state.decision.current.as_ref().is_some_and(|d| d.finalized),
            "{name}"
        );
        assert_rebuild_matches(&app, &run_id).await;
    }
    app.stop().await;
}
on_both_backends!(every_mode_reaches_its_terminal_state);

/// Each invalid request: status, errorCode, the field paths named, and no row written.
async fn invalid_requests_are_refused_and_write_nothing(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let store = app.store().await;
    let before = store.count_rows().await.expect("count");
    let base = requests::scripted_decision();
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    let mut with = |name: &'static str, edit: &dyn Fn(&mut Value), fields: Vec<&'static str>| {
        let mut request = base.clone();
        edit(&mut request);
        cases.push((name, request, fields));
    };
    with(
        "empty participants",
        &|r| r["session"]["participants"] = json!([]),
        vec!["session.participants"],
    );
    with(
        "duplicate participant",
        &|r| r["session"]["participants"][1]["id"] = json!("fraud-agent"),
        vec!["session.participants[1].id"],
    );
    with(
        "kickoff sender not a member",
        &|r| r["kickoff"][0]["from"] = json!("mallory"),
        vec!["kickoff[0].from"],
    );
    with(
        "kickoff recipient not a member",
        &|r| r["kickoff"][0]["to"] = json!(["risk-agent", "nobody"]),
        vec!["kickoff[0].to[1]"],
    );
    with(
        "missing messageType",
        &|r| {
            r["kickoff"][2]
                .as_object_mut()
                .expect("object")
                .remove("messageType");
        },
        vec!["kickoff[2].messageType"],
    );
    with(
        "unknown proto type",
        &|r| {
            r["kickoff"][0]["payloadEnvelope"]["proto"]["typeName"] =
                json!("macp.modes.decision.v1.Nope")
        },
        vec!["kickoff[0].payloadEnvelope.proto.typeName"],
    );
    with(
        "unknown proto field",
        &|r| r["kickoff"][0]["payloadEnvelope"]["proto"]["value"]["colour"] = json!("red"),
        vec!["kickoff[0].payloadEnvelope.proto.value"],
    );
    with(
        "bad base64",
        &|r| {
            r["kickoff"][0]["payloadEnvelope"] =
                json!({"encoding": "base64", "base64": "***not base64***"})
        },
        vec!["kickoff[0].payloadEnvelope.base64"],
    );
    with(
        "ttl out of range",
        &|r| r["session"]["ttlMs"] = json!(86_400_001),
        vec!["session.ttlMs"],
    );
    with(
        "ttl zero",
        &|r| r["session"]["ttlMs"] = json!(0),
        vec!["session.ttlMs"],
    );
    with(
        "unknown mode",
        &|r| r["session"]["modeName"] = json!("macp.mode.nope.v1"),
        vec!["session.modeName"],
    );
    with(
        "several problems at once",
        &|r| {
            r["session"]["ttlMs"] = json!(-5);
            r["kickoff"][0]["from"] = json!("mallory");
        },
        vec!["session.ttlMs", "kickoff[0].from"],
    );
    let mut grpc = app.grpc().await;
    for (name, request, fields) in cases {
        let (status, body) = app.post("/runs", &request).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["errorCode"], "VALIDATION_ERROR", "{name}: {body}");
        assert_eq!(body["statusCode"], 400);
        let named: Vec<&str> = body["details"]["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|error| error["field"].as_str())
            .collect();
        for field in &fields {
            assert!(named.contains(field), "{name}: {field} not in {named:?}");
        }
        // The same request over gRPC: INVALID_ARGUMENT with the same code.
        let proto_request: macp_control_plane::api::proto::ExecutionRequest =
            serde_json::from_value(request.clone()).expect("request fits the proto");
        let error = grpc
            .run_start(macp_control_plane::api::proto::RunStartRequest {
                request: Some(proto_request),
                ..Default::default()
            })
            .await
            .expect_err(name);
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{name}");
        assert_eq!(
            error
                .metadata()
                .get("x-error-code")
                .and_then(|v| v.to_str().ok()),
            Some("VALIDATION_ERROR")
        );
        // Validation reports the same problems without creating anything.
        let (status, report) = app.post("/runs/validate", &request).await;
        assert_eq!(status, 200);
        assert_eq!(report["valid"], false, "{name}");
    }
    let (status, body) = app.post("/runs", &json!("not an object")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        store.count_rows().await.expect("count"),
        before,
        "a refused request wrote rows"
    );
    app.stop().await;
}
on_both_backends!(invalid_requests_are_refused_and_write_nothing);

async fn concurrent_duplicates_start_one_run(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let mut request = requests::seed_example();
    let key = uuid::Uuid::new_v4().to_string();
    request["execution"]["idempotencyKey"] = json!(key);
    let submissions = (0..20).map(|_| {
        let http = app.http.clone();
        let url = format!("{}/runs", app.base);
        let request = request.clone();
        tokio::spawn(async move {
            let response = http.post(url).json(&request).send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        })
    });
    let responses = futures::future::join_all(submissions).await;
    let mut run_ids = std::collections::HashSet::new();
    let mut created = 0;
    for response in responses {
        let (status, body) = response.expect("task");
        assert!(status == 201 || status == 200, "{status}: {body}");
        if status == 201 {
            created += 1;
        }
        run_ids.insert(body["runId"].as_str().expect("runId").to_owned());
    }
    assert_eq!(run_ids.len(), 1, "one run for one key");
    assert_eq!(created, 1, "exactly one submission created the run");
    let run_id = run_ids.into_iter().next().expect("run");
    let state = app
        .wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let (_, page) = app.get("/runs?limit=200").await;
    assert_eq!(page["total"], 1);
    let types = app.event_types(&run_id).await;
    assert_eq!(types.iter().filter(|t| *t == "session.bound").count(), 1);
    // The runtime holds exactly one session.
    let address = app.app.embedded_runtime().expect("embedded");
    let mut client = MacpRuntimeServiceClient::connect(format!("http://{address}"))
        .await
        .expect("runtime");
    let mut list = tonic::Request::new(ListSessionsRequest {
        page_size: 100,
        page_token: String::new(),
    });
    list.metadata_mut().insert(
        "authorization",
        "Bearer coordinator".parse().expect("header"),
    );
    let sessions = client
        .list_sessions(list)
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(
        Some(&sessions[0].session_id),
        state.run.runtime_session_id.as_ref()
    );
    app.stop().await;
}
on_both_backends!(concurrent_duplicates_start_one_run);

async fn unreachable_runtime_fails_the_run_clearly(backend: Backend) {
    // A port nothing listens on: bind one, then let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port");
    let Some(app) = support::start_with(
        backend,
        support::Options {
            runtime: macp_control_plane::app::RuntimeTarget::External {
                address: closed.to_string(),
                tls: false,
            },
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["runtime"]["ok"], false);
    assert!(
        ready["runtime"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{ready}"
    );
    let run_id = app.start_run(&requests::seed_example()).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "failed");
    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run["errorCode"], "RUNTIME_UNAVAILABLE", "{run}");
    assert!(
        run["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable")
    );
    // The service keeps serving.
    let (status, _) = app.get("/runs").await;
    assert_eq!(status, 200);
    let (status, health) = app.get("/runtime/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["ok"], false);
    app.stop().await;
}
on_both_backends!(unreachable_runtime_fails_the_run_clearly);

async fn kickoff_refused_by_the_runtime_fails_the_run(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    // The initiator is not a participant: the runtime refuses its Proposal (FORBIDDEN).
    let mut request = requests::scripted_decision();
    request["kickoff"][0]["from"] = json!("coordinator");
    let run_id = app.start_run(&request).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "failed");
    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run["errorCode"], "KICKOFF_FAILED", "{run}");
    assert!(
        run["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("FORBIDDEN"),
        "{run}"
    );
    let events = app.events(&run_id).await;
    let failed = events
        .iter()
        .find(|event| event["type"] == "message.send_failed")
        .expect("message.send_failed recorded");
    assert_eq!(failed["data"]["error"]["code"], "FORBIDDEN", "{failed}");
    let session_id = state.run.runtime_session_id.clone().expect("session");
    assert_eq!(
        runtime_session_state(&app, &session_id, "coordinator").await,
        SessionState::Cancelled,
        "the failed run's session is not left open"
    );
    app.stop().await;
}
on_both_backends!(kickoff_refused_by_the_runtime_fails_the_run);

/// A runtime that authenticates by token table (no dev mode): every kickoff message goes out
/// with its own sender's token, and the observer reads as the initiator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_table_credentials_carry_a_run_to_completion() {
    let senders = ["coordinator", "fraud-agent", "risk-agent", "growth-agent"];
    let by_sender: std::collections::HashMap<String, String> = senders
        .iter()
        .map(|sender| {
            (
                sender.to_string(),
                format!("token-{sender}-{}", uuid::Uuid::new_v4()),
            )
        })
        .collect();
    let observer_token = format!("token-observer-{}", uuid::Uuid::new_v4());
    let mut table: Vec<Value> = by_sender
        .iter()
        .map(
            |(sender, token)| json!({"token": token, "sender": sender, "can_start_sessions": true}),
        )
        .collect();
    table.push(json!({"token": observer_token, "sender": "macp-control-plane", "can_start_sessions": false, "is_observer": true}));
    let Some(app) = support::start_with(
        Backend::Sqlite,
        support::Options {
            runtime: macp_control_plane::app::RuntimeTarget::Embedded(
                macp_control_plane::runtime::embedded::EmbeddedOptions {
                    static_tokens: Some(json!({"tokens": table}).to_string().into()),
                    ..Default::default()
                },
            ),
            credentials: Some(
                macp_control_plane::runtime::credentials::Credentials::tokens(
                    by_sender.clone(),
                    observer_token,
                ),
            ),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed", "{state:#?}");
    assert!(
        state
            .decision
            .current
            .is_some_and(|decision| decision.finalized)
    );

    // A sender without a token is refused before anything is created.
    let mut request = requests::scripted_decision();
    request["session"]["participants"][0]["id"] = json!("tokenless-agent");
    request["kickoff"][0]["from"] = json!("tokenless-agent");
    request["kickoff"][3]["from"] = json!("tokenless-agent");
    let (status, body) = app.post("/runs", &request).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["details"]["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|error| error["field"] == "kickoff[0].from"
                && error["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no runtime credential"))
    );
    app.stop().await;
}

/// Every string in `value` that contains `marker`.
fn strings_with<'a>(value: &'a Value, marker: &str, found: &mut Vec<&'a str>) {
    match value {
        Value::String(text) if text.contains(marker) => found.push(text),
        Value::Array(items) => items
            .iter()
            .for_each(|item| strings_with(item, marker, found)),
        Value::Object(fields) => fields
            .values()
            .for_each(|field| strings_with(field, marker, found)),
        _ => {}
    }
}

/// Text from agents reaches the store as literals in PostgreSQL's scripts: quotes, backslashes,
/// placeholders and SQL in it come back exactly as sent, in the canonical events, the raw
/// envelope and the projection.
async fn hostile_text_is_stored_as_sent(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let hostile = "HOSTILE it's '' \\' \\\\ E'\\x41' $1 $$ $g0$ END $g0$; ? ; COMMIT; ROLLBACK; DROP TABLE runs; -- /* ünï 🚀 \"q\" \n\t";
    let mut request = requests::scripted_decision();
    // The Proposal's rationale (kept in the events) and a Vote's reason (kept in the projection).
    request["kickoff"][0]["payloadEnvelope"]["proto"]["value"]["rationale"] = json!(hostile);
    request["kickoff"][3]["payloadEnvelope"]["proto"]["value"]["reason"] = json!(hostile);
    let run_id = app.start_run(&request).await;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed", "{state:#?}");

    let events = Value::Array(app.events(&run_id).await);
    let mut found = Vec::new();
    strings_with(&events, "HOSTILE", &mut found);
    assert!(
        found.len() >= 2,
        "the rationale is in the events: {found:?}"
    );
    assert!(found.iter().all(|text| *text == hostile), "{found:?}");

    let raw = app
        .store()
        .await
        .raw_events(&run_id)
        .await
        .expect("raw events");
    use base64::Engine as _;
    let holds_hostile = |record: &macp_control_plane::store::RawRecord| {
        let encoded = record.payload["envelope"]["payloadBase64"].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        Some(
            bytes
                .windows(hostile.len())
                .any(|window| window == hostile.as_bytes()),
        )
    };
    assert_eq!(
        raw.iter()
            .filter(|record| holds_hostile(record) == Some(true))
            .count(),
        2,
        "the two raw envelopes hold the text's bytes"
    );

    let (_, state) = app.get(&format!("/runs/{run_id}/state")).await;
    let mut found = Vec::new();
    strings_with(&state, "HOSTILE", &mut found);
    assert!(!found.is_empty(), "the projection keeps the rationale");
    assert!(found.iter().all(|text| *text == hostile), "{found:?}");
    assert_rebuild_matches(&app, &run_id).await;
    app.stop().await;
}
on_both_backends!(hostile_text_is_stored_as_sent);

/// A control-plane event that changes nothing but the log.
fn stream_opened() -> EventDraft {
    use macp_control_plane::events::canonical::{Source, types};
    EventDraft::new(
        types::SESSION_STREAM_OPENED,
        macp_control_plane::time::now(),
        None,
        Source::control_plane("test"),
        json!({"status": "opened"}),
    )
}

/// Appends one control-plane event to a run through its writer; returns its seq.
async fn append_one(app: &TestApp, run_id: &str) -> i64 {
    let appended = app
        .app
        .service
        .ingest(run_id, &[], vec![stream_opened()])
        .await
        .expect("the append commits");
    appended.first().map(|event| event.seq).expect("one event")
}

/// PostgreSQL connections that die between appends (a server restart) cost no append: the
/// committing lane notices on its next group, opens a new connection and commits there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_lost_postgres_connections() {
    let Some(app) = support::start(Backend::Postgres).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&run_id).await;
    let before = app.events(&run_id).await.len() as i64;

    app.cut_database_connections().await;
    assert_eq!(append_one(&app, &run_id).await, before + 1);
    let events = app.events(&run_id).await;
    assert_dense_seqs(&events);
    assert_eq!(events.len() as i64, before + 1);
    app.stop().await;
}

/// A stale append (its compare-and-set fails) is refused, and its lane's transaction is ended:
/// the next append of the run, through the same store, commits. The appends come from a store
/// of the test's own, as another process's would.
async fn a_stale_append_is_refused_and_the_next_commits(backend: Backend) {
    use macp_control_plane::events::canonical::CanonicalEvent;
    use macp_control_plane::store::{Append, Error, RunChange};
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&run_id).await;
    let before = app.events(&run_id).await.len() as i64;
    let store = app.store().await;
    let append = |expected_last_seq, events| Append {
        run_id: &run_id,
        expected_last_seq,
        events,
        raw: &[],
        projection: None,
        run: RunChange::default(),
        session: None,
        artifact: None,
        audit: None,
    };
    let stale = store.append(append(before - 1, &[])).await;
    assert!(
        matches!(&stale, Err(Error::Concurrent(run)) if *run == run_id),
        "{stale:?}"
    );
    assert_eq!(app.events(&run_id).await.len() as i64, before);
    let next = CanonicalEvent::from_draft(stream_opened(), &run_id, before + 1, None);
    store
        .append(append(before, std::slice::from_ref(&next)))
        .await
        .expect("the next append commits");
    let events = app.events(&run_id).await;
    assert_dense_seqs(&events);
    assert_eq!(events.len() as i64, before + 1);
    app.stop().await;
}
on_both_backends!(a_stale_append_is_refused_and_the_next_commits);
