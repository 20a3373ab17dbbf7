//! Filtered live streams (`types` on SSE `/runs/{id}/stream` and `WatchRun`): only the asked
//! types (exact or `prefix.*`) are sent, stored and live alike; a filtered stream resumes after
//! its last event exactly (Last-Event-ID / afterSeq); gRPC = REST; a pattern naming no type is a
//! 400 field error.

use futures::StreamExt;
use macp_control_plane::api::proto;
use serde_json::Value;

use crate::on_both_backends;
use crate::requests;
use crate::streams::SseReader;
use crate::support::{self, Backend, TestApp};

/// The (seq, type) of the stored events `keep` takes.
async fn stored(app: &TestApp, run_id: &str, keep: impl Fn(&str) -> bool) -> Vec<(i64, String)> {
    app.events(run_id)
        .await
        .iter()
        .map(|event| {
            (
                event["seq"].as_i64().expect("seq"),
                event["type"].as_str().expect("type").to_owned(),
            )
        })
        .filter(|(_, kind)| keep(kind))
        .collect()
}

/// Every canonical event of an SSE stream until it ends; snapshots and heartbeats are skipped.
async fn sse_events(app: &TestApp, path: &str, last_event_id: Option<i64>) -> Vec<(i64, String)> {
    let mut reader = SseReader::open(app, path, last_event_id).await;
    let mut events = Vec::new();
    while let Some(frame) = reader.next().await {
        assert_ne!(frame.event, "error", "{}", frame.data);
        if frame.event == "canonical_event" {
            let event: Value = serde_json::from_str(&frame.data).expect("JSON");
            let seq = event["seq"].as_i64().expect("seq");
            assert_eq!(frame.id.as_deref(), Some(seq.to_string().as_str()));
            events.push((seq, event["type"].as_str().expect("type").to_owned()));
        }
    }
    events
}

fn wanted(kind: &str) -> bool {
    kind.starts_with("run.") || kind.starts_with("proposal.")
}

async fn a_filtered_live_stream_carries_only_its_types_and_resumes_exactly(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    // The seed's session stays open: the stream backfills what is stored, then follows live.
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| {
        state.run.status == "running"
            && state
                .timeline
                .recent
                .iter()
                .any(|entry| entry.event_type == "proposal.created")
    })
    .await;
    let path = format!(
        "/runs/{run_id}/stream?types=run.*,proposal.*&includeSnapshot=false&endAtTerminal=true"
    );
    let mut reader = SseReader::open(&app, &path, None).await;
    // The first stored event it passes, then the run ends while it is open.
    let first = loop {
        let frame = reader.next().await.expect("a frame");
        if frame.event == "canonical_event" {
            break frame;
        }
    };
    let cancel = app
        .post(&format!("/runs/{run_id}/cancel"), &serde_json::json!({}))
        .await;
    assert_eq!(cancel.0, 200, "{}", cancel.1);
    let mut received = vec![first];
    while let Some(frame) = reader.next().await {
        if frame.event == "canonical_event" {
            received.push(frame);
        }
    }
    let received: Vec<(i64, String)> = received
        .iter()
        .map(|frame| {
            let event: Value = serde_json::from_str(&frame.data).expect("JSON");
            (
                event["seq"].as_i64().expect("seq"),
                event["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    let expected = stored(&app, &run_id, wanted).await;
    assert_eq!(received, expected);
    assert!(expected.iter().any(|(_, kind)| kind == "run.cancelled"));
    // Other types were recorded in between, and skipped.
    let all = stored(&app, &run_id, |_| true).await;
    assert!(all.len() > expected.len(), "{all:?}");

    // Resuming after each event it sent gives exactly the rest, by header or by query.
    for (index, (seq, _)) in expected.iter().enumerate() {
        let rest = sse_events(&app, &path, Some(*seq)).await;
        assert_eq!(rest, expected[index + 1..], "resumed after {seq}");
    }
    let (seq, _) = expected[1];
    let rest = sse_events(&app, &format!("{path}&afterSeq={seq}"), None).await;
    assert_eq!(rest, expected[2..]);

    // gRPC WatchRun carries the same events.
    let stream = app
        .grpc()
        .await
        .watch_run(proto::WatchRunRequest {
            run_id: run_id.clone(),
            include_snapshot: Some(false),
            end_at_terminal: true,
            types: vec!["run.*".to_owned(), "proposal.*".to_owned()],
            ..Default::default()
        })
        .await
        .expect("WatchRun")
        .into_inner();
    let grpc: Vec<(i64, String)> = stream
        .filter_map(|item| async move {
            match item.expect("item").item {
                Some(proto::watch_run_response::Item::Event(event)) => {
                    Some((i64::from(event.seq), event.r#type))
                }
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(grpc, expected);
}
on_both_backends!(a_filtered_live_stream_carries_only_its_types_and_resumes_exactly);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_types_and_bad_patterns() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let run_id = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&run_id).await;
    let path = format!(
        "/runs/{run_id}/stream?types=decision.finalized&types=run.completed&includeSnapshot=false&endAtTerminal=true"
    );
    let received = sse_events(&app, &path, None).await;
    let expected = stored(&app, &run_id, |kind| {
        kind == "decision.finalized" || kind == "run.completed"
    })
    .await;
    assert_eq!(received, expected);
    assert_eq!(expected.len(), 2, "{expected:?}");

    for bad in ["nope.*", "decision*", "*", "run.complete"] {
        let (status, body) = app.get(&format!("/runs/{run_id}/stream?types={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errorCode"], "VALIDATION_ERROR");
        assert_eq!(body["details"]["errors"][0]["field"], "types", "{bad}");
    }
    let refused = app
        .grpc()
        .await
        .watch_run(proto::WatchRunRequest {
            run_id,
            types: vec!["nope.*".to_owned()],
            ..Default::default()
        })
        .await
        .expect_err("a bad pattern is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}
