//! Per-run observability: metrics equal the stored events' counts for every mode; artifacts and
//! the trace summary.

use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend};

fn count(events: &[Value], predicate: impl Fn(&str) -> bool) -> i64 {
    events
        .iter()
        .filter(|event| predicate(event["type"].as_str().unwrap_or_default()))
        .count() as i64
}

async fn metrics_equal_the_stored_events(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    for (name, request) in [
        ("decision", requests::scripted_decision()),
        ("proposal", requests::scripted_proposal()),
        ("task", requests::scripted_task()),
        ("handoff", requests::scripted_handoff()),
        ("quorum", requests::scripted_quorum()),
        ("multi_round", requests::scripted_multi_round()),
    ] {
        let run_id = app.start_run(&request).await;
        app.wait_terminal(&run_id).await;
        let events = app.events(&run_id).await;
        let (status, metrics) = app.get(&format!("/runs/{run_id}/metrics")).await;
        assert_eq!(status, 200, "{name}: {metrics}");
        let expect = |field: &str, value: i64| {
            assert_eq!(metrics[field], json!(value), "{name}: {field} in {metrics}");
        };
        expect("eventCount", events.len() as i64);
        expect(
            "messageCount",
            count(&events, |kind| kind.starts_with("message.")),
        );
        expect(
            "signalCount",
            count(&events, |kind| kind == "signal.emitted"),
        );
        expect(
            "proposalCount",
            count(&events, |kind| kind.starts_with("proposal.")),
        );
        expect(
            "toolCallCount",
            count(&events, |kind| kind.starts_with("tool.")),
        );
        expect(
            "decisionCount",
            count(&events, |kind| kind == "decision.finalized"),
        );
        expect("decisionCount", 1);
        expect("streamReconnectCount", 0);
        assert_eq!(metrics["sessionState"], "SESSION_STATE_RESOLVED", "{name}");
        assert_eq!(metrics["firstEventAt"], events[0]["ts"], "{name}");
        assert_eq!(
            metrics["lastEventAt"],
            events[events.len() - 1]["ts"],
            "{name}"
        );
        assert!(
            metrics["durationMs"].as_i64().is_some_and(|ms| ms >= 0),
            "{name}"
        );
        assert_eq!(metrics["totalTokens"], 0);
    }
    app.stop().await;
}
crate::on_both_backends!(metrics_equal_the_stored_events);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_and_trace_summary() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut request = requests::scripted_decision();
    request["session"]["metadata"]["sourceRef"] = json!("fraud/high-value-new-device@1.0.0");
    let run_id = app.start_run(&request).await;
    app.wait_terminal(&run_id).await;

    let (status, artifact) = app
        .post(
            &format!("/runs/{run_id}/artifacts"),
            &json!({"kind": "report", "label": "Decision memo", "inline": {"summary": "approved"}}),
        )
        .await;
    assert_eq!(status, 201, "{artifact}");
    assert_eq!(artifact["kind"], "report");
    let (status, linked) = app
        .post(
            &format!("/runs/{run_id}/artifacts"),
            &json!({"kind": "log", "label": "Agent log", "uri": "file:///var/log/agent.log"}),
        )
        .await;
    assert_eq!(status, 201, "{linked}");

    for (body, field) in [
        (json!({"kind": "video", "label": "x", "uri": "u"}), "kind"),
        (json!({"kind": "json", "label": ""}), "label"),
        (json!({"kind": "json", "label": "nothing"}), "uri"),
        (
            json!({"kind": "json", "label": "big", "inline": {"blob": "x".repeat(300 * 1024)}}),
            "inline",
        ),
    ] {
        let (status, error) = app.post(&format!("/runs/{run_id}/artifacts"), &body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["errorCode"], "VALIDATION_ERROR");
        assert!(
            error["details"]["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {error}"
        );
    }

    let (_, artifacts) = app.get(&format!("/runs/{run_id}/artifacts")).await;
    let ids: Vec<&str> = artifacts
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            artifact["id"].as_str().expect("id"),
            linked["id"].as_str().expect("id")
        ]
    );

    let (status, traces) = app.get(&format!("/runs/{run_id}/traces")).await;
    assert_eq!(status, 200);
    assert_eq!(traces["runStatus"], "completed");
    assert_eq!(traces["scenarioRef"], "fraud/high-value-new-device@1.0.0");
    assert!(traces["traceId"].as_str().is_some_and(|id| id.len() == 32));
    assert_eq!(traces["linkedArtifacts"].as_array().map(Vec::len), Some(2));
    let types = app.event_types(&run_id).await;
    assert_eq!(types.iter().filter(|t| *t == "artifact.created").count(), 2);

    let (status, _) = app
        .get(&format!("/runs/{}/metrics", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}
