//! Suspend and resume, against the real reference runtime on SQLite and PostgreSQL: through the
//! API (as the session's initiator), and when someone else suspends the session on the runtime
//! (reported by WatchSessions). gRPC = REST, and bad input refused with nothing changed.

use macp_control_plane::api::proto;
use macp_control_plane::projection::reducer;
use macp_runtime::pb::macp_runtime_service_client::MacpRuntimeServiceClient;
use macp_runtime::pb::{
    GetSessionRequest, ResumeSessionRequest, SessionState, SuspendSessionRequest,
};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::parity::{assert_same, json};
use crate::requests;
use crate::support::{self, Backend, TestApp};

/// The seed's initiator: the identity the runtime lets suspend and resume.
const INITIATOR: &str = "coordinator";

async fn runtime(app: &TestApp) -> MacpRuntimeServiceClient<tonic::transport::Channel> {
    let address = app.app.embedded_runtime().expect("embedded runtime");
    MacpRuntimeServiceClient::connect(format!("http://{address}"))
        .await
        .expect("runtime connects")
}

fn as_sender<T>(message: T, sender: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {sender}").parse().expect("header"),
    );
    request
}

async fn session_state(app: &TestApp, session_id: &str) -> SessionState {
    let metadata = runtime(app)
        .await
        .get_session(as_sender(
            GetSessionRequest {
                session_id: session_id.to_owned(),
            },
            INITIATOR,
        ))
        .await
        .expect("get session")
        .into_inner()
        .metadata
        .expect("metadata");
    SessionState::try_from(metadata.state).expect("state")
}

/// Starts the seed (a session that stays open) and waits until it is running with its kickoff
/// (a Proposal) recorded: a session suspended before then would refuse the kickoff.
async fn running_run(app: &TestApp) -> (String, String) {
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
    let session_id = state.run.runtime_session_id.expect("session bound");
    (run_id, session_id)
}

/// The run's events of `event_type`.
async fn events_of(app: &TestApp, run_id: &str, event_type: &str) -> Vec<Value> {
    app.events(run_id)
        .await
        .into_iter()
        .filter(|event| event["type"] == event_type)
        .collect()
}

/// Invariant 4 holds across the new events: the fold of the stored events is the state.
async fn assert_fold_matches(app: &TestApp, run_id: &str) {
    let events = app
        .store()
        .await
        .events_between(run_id, 0, None, 100_000)
        .await
        .expect("events");
    let stored = app.app.service.state(run_id).await.expect("state");
    assert_eq!(reducer::fold(run_id, events.iter()), stored);
}

async fn suspend_and_resume_through_the_api(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let (run_id, session_id) = running_run(&app).await;

    let (status, run) = app
        .post(
            &format!("/runs/{run_id}/suspend"),
            &json!({"reason": "waiting for a human"}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "suspended");
    assert_eq!(
        session_state(&app, &session_id).await,
        SessionState::Suspended
    );
    let suspended = events_of(&app, &run_id, "run.suspended").await;
    assert_eq!(suspended.len(), 1, "{suspended:?}");
    assert_eq!(suspended[0]["data"]["reason"], "waiting for a human");
    assert_eq!(suspended[0]["data"]["status"], "suspended");
    assert_eq!(
        app.get(&format!("/runs/{run_id}/state")).await.1["run"]["status"],
        "suspended"
    );

    // Again: the run as it is, nothing recorded.
    let (status, again) = app
        .post(&format!("/runs/{run_id}/suspend"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "suspended");
    assert_eq!(events_of(&app, &run_id, "run.suspended").await.len(), 1);

    // Resumed over gRPC; REST reads the same run.
    let mut grpc = app.grpc().await;
    let resumed = grpc
        .resume_session(proto::ResumeSessionRequest {
            run_id: run_id.clone(),
            reason: Some("human answered".to_owned()),
        })
        .await
        .expect("ResumeSession")
        .into_inner();
    assert_eq!(resumed.status, "running");
    assert_eq!(session_state(&app, &session_id).await, SessionState::Open);
    let (status, rest_run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200);
    // The same run (events keep arriving, so only what they do not change is compared).
    let stable = |run: &Value| {
        json!(
            [
                "id",
                "status",
                "mode",
                "runtimeSessionId",
                "traceId",
                "tags",
                "createdAt"
            ]
            .map(|key| run[key].clone())
        )
    };
    assert_same(
        "ResumeSession",
        &stable(&json(&resumed)),
        &stable(&rest_run),
    );
    let resumed_events = events_of(&app, &run_id, "run.resumed").await;
    assert_eq!(resumed_events.len(), 1);
    assert_eq!(resumed_events[0]["data"]["reason"], "human answered");

    // A suspended run can be cancelled; a cancelled one can be neither suspended nor resumed.
    let (status, _) = app
        .post(&format!("/runs/{run_id}/suspend"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, cancelled) = app
        .post(&format!("/runs/{run_id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    for action in ["suspend", "resume"] {
        let (status, body) = app
            .post(&format!("/runs/{run_id}/{action}"), &json!({}))
            .await;
        assert_eq!(status, 409, "{action}: {body}");
        assert_eq!(body["errorCode"], "INVALID_STATE_TRANSITION");
        let refused = match action {
            "suspend" => grpc
                .suspend_session(proto::SuspendSessionRequest {
                    run_id: run_id.clone(),
                    reason: None,
                })
                .await
                .expect_err("refused"),
            _ => grpc
                .resume_session(proto::ResumeSessionRequest {
                    run_id: run_id.clone(),
                    reason: None,
                })
                .await
                .expect_err("refused"),
        };
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    }
    assert_eq!(events_of(&app, &run_id, "run.suspended").await.len(), 2);
    assert_fold_matches(&app, &run_id).await;
    app.stop().await;
}
on_both_backends!(suspend_and_resume_through_the_api);

/// The session's initiator suspends it on the runtime itself: WatchSessions reports it, and the
/// run follows, once.
async fn a_suspension_the_runtime_reports_is_recorded(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let (run_id, session_id) = running_run(&app).await;
    runtime(&app)
        .await
        .suspend_session(as_sender(
            SuspendSessionRequest {
                session_id: session_id.clone(),
                reason: "paused by the agent".to_owned(),
            },
            INITIATOR,
        ))
        .await
        .expect("suspended on the runtime");
    let state = app
        .wait_for(&run_id, |state| state.run.status == "suspended")
        .await;
    assert_eq!(state.run.status, "suspended");
    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run["status"], "suspended");
    assert_eq!(events_of(&app, &run_id, "run.suspended").await.len(), 1);

    let (status, run) = app
        .post(&format!("/runs/{run_id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "running");
    assert_eq!(events_of(&app, &run_id, "run.resumed").await.len(), 1);

    // And the other way: suspended through the API, resumed on the runtime.
    let (status, _) = app
        .post(&format!("/runs/{run_id}/suspend"), &json!({}))
        .await;
    assert_eq!(status, 200);
    runtime(&app)
        .await
        .resume_session(as_sender(
            ResumeSessionRequest {
                session_id: session_id.clone(),
                reason: "back from the agent".to_owned(),
            },
            INITIATOR,
        ))
        .await
        .expect("resumed on the runtime");
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    assert_eq!(events_of(&app, &run_id, "run.suspended").await.len(), 2);
    assert_eq!(events_of(&app, &run_id, "run.resumed").await.len(), 2);
    assert_fold_matches(&app, &run_id).await;
    app.stop().await;
}
on_both_backends!(a_suspension_the_runtime_reports_is_recorded);

/// Suspended as soon as it is running, the run first sends the rest of its kickoff (a session
/// suspended mid-kickoff would refuse it, and the run would fail).
async fn a_run_suspended_at_once_keeps_its_kickoff(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let (status, run) = app
        .post(&format!("/runs/{run_id}/suspend"), &json!({}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "suspended");
    let types = app.event_types(&run_id).await;
    assert!(types.iter().any(|t| t == "message.sent"), "{types:?}");
    assert!(
        !types
            .iter()
            .any(|t| t == "message.send_failed" || t == "run.failed"),
        "{types:?}"
    );
    app.stop().await;
}
on_both_backends!(a_run_suspended_at_once_keeps_its_kickoff);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let (run_id, _) = running_run(&app).await;
    for (path, body, status, field) in [
        ("/runs/not-a-uuid/suspend", json!({}), 400, Some("id")),
        (
            &format!("/runs/{run_id}/suspend") as &str,
            json!({"reason": 5}),
            400,
            Some("reason"),
        ),
        (&format!("/runs/{run_id}/resume"), json!([]), 400, Some("$")),
        // Running, not suspended: nothing to resume.
        (&format!("/runs/{run_id}/resume"), json!({}), 200, None),
        (
            "/runs/00000000-0000-4000-8000-000000000000/suspend",
            json!({}),
            404,
            None,
        ),
    ] {
        let (answer, body) = app.post(path, &body).await;
        assert_eq!(answer, status, "{path}: {body}");
        if let Some(field) = field {
            assert_eq!(body["errorCode"], "VALIDATION_ERROR");
            assert_eq!(body["details"]["errors"][0]["field"], field, "{body}");
        }
    }
    let (_, after) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(after["status"], "running");
    for event_type in ["run.suspended", "run.resumed"] {
        assert!(events_of(&app, &run_id, event_type).await.is_empty());
    }
    app.stop().await;
}
