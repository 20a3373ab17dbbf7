//! AwaitRun (`GET /runs/{id}/await`) and `RunStart` with `await`, against the embedded reference
//! runtime on SQLite and PostgreSQL: it returns on completion (with the decision and the terminal
//! event's seq), on cancel, and at its deadline (408 / DEADLINE_EXCEEDED with the current run);
//! gRPC = REST; bad input refused with nothing changed.

use macp_control_plane::api::proto;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::parity::{assert_same, json};
use crate::requests;
use crate::support::{self, Backend, TestApp};

/// The seq of the run's only event of `event_type`.
async fn seq_of(app: &TestApp, run_id: &str, event_type: &str) -> i64 {
    let events: Vec<Value> = app
        .events(run_id)
        .await
        .into_iter()
        .filter(|event| event["type"] == event_type)
        .collect();
    assert_eq!(events.len(), 1, "{event_type}: {events:?}");
    events[0]["seq"].as_i64().expect("seq")
}

fn rest_error_field(body: &Value) -> Value {
    body["details"]["errors"][0]["field"].clone()
}

async fn returns_on_completion(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    let (status, result) = app
        .get(&format!("/runs/{run_id}/await?timeoutMs=30000"))
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["run"]["status"], "completed", "{result}");
    assert_eq!(result["run"]["id"], run_id.as_str());
    assert_eq!(
        result["terminalSeq"],
        seq_of(&app, &run_id, "run.completed").await
    );
    // The decision is the projection's.
    let state = app.app.service.state(&run_id).await.expect("state");
    let decision = state.decision.current.expect("the scripted run decides");
    assert!(!decision.action.is_empty());
    assert_eq!(result["decision"]["action"], decision.action.as_str());
    assert_eq!(
        result["decision"]["outcomePositive"],
        decision.outcome_positive.unwrap_or(Value::Null)
    );
    assert_eq!(
        result["decision"]["proposalId"],
        json!(decision.proposal_id)
    );

    // gRPC answers the same; awaiting an ended run answers at once, again.
    let grpc = app
        .grpc()
        .await
        .await_run(proto::AwaitRunRequest {
            run_id: run_id.clone(),
            timeout_ms: Some(30_000),
        })
        .await
        .expect("AwaitRun")
        .into_inner();
    assert_same("AwaitRun", &json(&grpc), &result);
}
on_both_backends!(returns_on_completion);

async fn start_with_await(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let (status, started) = app
        .post(
            "/runs?await=true&timeoutMs=30000",
            &requests::scripted_decision(),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let run_id = started["runId"].as_str().expect("runId").to_owned();
    assert_eq!(started["result"]["run"]["id"], run_id.as_str());
    assert_eq!(started["result"]["run"]["status"], "completed");
    assert_eq!(
        started["result"]["terminalSeq"],
        seq_of(&app, &run_id, "run.completed").await
    );
    assert!(started["result"]["decision"]["action"].is_string());

    let request: proto::ExecutionRequest =
        serde_json::from_value(requests::scripted_decision()).expect("request fits the proto");
    let started = app
        .grpc()
        .await
        .run_start(proto::RunStartRequest {
            request: Some(request),
            await_result: true,
            await_timeout_ms: Some(30_000),
        })
        .await
        .expect("RunStart")
        .into_inner();
    let result = started.result.expect("a result");
    let run = result.run.expect("the run");
    assert_eq!(run.id, started.run_id);
    assert_eq!(run.status, "completed");
    assert_eq!(
        i64::from(result.terminal_seq),
        seq_of(&app, &started.run_id, "run.completed").await
    );
    assert!(result.decision.is_some());
}
on_both_backends!(start_with_await);

async fn returns_on_cancel(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    // The seed's session stays open until someone ends it.
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let waiter = {
        let (http, base, run_id) = (app.http.clone(), app.base.clone(), run_id.clone());
        tokio::spawn(async move {
            let response = http
                .get(format!("{base}/runs/{run_id}/await?timeoutMs=30000"))
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        })
    };
    let mut grpc = app.grpc().await;
    let grpc_waiter = tokio::spawn({
        let mut grpc = grpc.clone();
        let run_id = run_id.clone();
        async move {
            grpc.await_run(proto::AwaitRunRequest {
                run_id,
                timeout_ms: None,
            })
            .await
        }
    });
    grpc.cancel_run(proto::CancelRunRequest {
        run_id: run_id.clone(),
        reason: Some("enough".to_owned()),
    })
    .await
    .expect("CancelRun");
    let (status, result) = waiter.await.expect("waiter");
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["run"]["status"], "cancelled");
    let cancelled_at = seq_of(&app, &run_id, "run.cancelled").await;
    assert_eq!(result["terminalSeq"], cancelled_at);
    let grpc_result = grpc_waiter
        .await
        .expect("waiter")
        .expect("AwaitRun")
        .into_inner();
    assert_eq!(i64::from(grpc_result.terminal_seq), cancelled_at);
    assert_eq!(grpc_result.run.expect("run").status, "cancelled");
}
on_both_backends!(returns_on_cancel);

async fn answers_the_current_run_at_the_deadline(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let (status, body) = app
        .get(&format!("/runs/{run_id}/await?timeoutMs=150"))
        .await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["errorCode"], "AWAIT_TIMEOUT");
    assert_eq!(body["details"]["run"]["id"], run_id.as_str());
    assert_eq!(body["details"]["run"]["status"], "running");

    let refused = app
        .grpc()
        .await
        .await_run(proto::AwaitRunRequest {
            run_id: run_id.clone(),
            timeout_ms: Some(150),
        })
        .await
        .expect_err("the run is still running");
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(
        refused
            .metadata()
            .get("x-error-code")
            .and_then(|code| code.to_str().ok()),
        Some("AWAIT_TIMEOUT")
    );
    let details = refused
        .metadata()
        .get_bin("x-error-details-bin")
        .and_then(|details| details.to_bytes().ok())
        .expect("details");
    let details: Value = serde_json::from_slice(&details).expect("JSON details");
    assert_eq!(details["run"]["status"], "running");
    // Waiting changed nothing.
    assert_eq!(
        app.get(&format!("/runs/{run_id}")).await.1["status"],
        "running"
    );
}
on_both_backends!(answers_the_current_run_at_the_deadline);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    for query in [
        "timeoutMs=0",
        "timeoutMs=-5",
        "timeoutMs=abc",
        "timeoutMs=3600001",
    ] {
        let (status, body) = app.get(&format!("/runs/{run_id}/await?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["errorCode"], "VALIDATION_ERROR");
        assert_eq!(rest_error_field(&body), "timeoutMs", "{query}");
    }
    let (status, body) = app.get("/runs/not-a-uuid/await").await;
    assert_eq!(status, 400, "{body}");
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = app.get(&format!("/runs/{unknown}/await")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errorCode"], "RUN_NOT_FOUND");

    // A start with a bad await starts nothing.
    let before = app.get("/runs").await.1["total"].clone();
    for (query, field) in [
        ("await=maybe", "await"),
        ("await=true&timeoutMs=0", "timeoutMs"),
    ] {
        let (status, body) = app
            .post(&format!("/runs?{query}"), &requests::scripted_decision())
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(rest_error_field(&body), field, "{query}");
    }
    assert_eq!(app.get("/runs").await.1["total"], before);

    let mut grpc = app.grpc().await;
    let refused = grpc
        .await_run(proto::AwaitRunRequest {
            run_id: run_id.clone(),
            timeout_ms: Some(0),
        })
        .await
        .expect_err("zero timeout");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let request: proto::ExecutionRequest =
        serde_json::from_value(requests::scripted_decision()).expect("request fits the proto");
    let refused = grpc
        .run_start(proto::RunStartRequest {
            request: Some(request),
            await_result: true,
            await_timeout_ms: Some(3_600_001),
        })
        .await
        .expect_err("timeout out of range");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(app.get("/runs").await.1["total"], before);
}
