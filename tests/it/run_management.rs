//! Run management (the MACP UI console's run actions) on both databases: archive and the run
//! list's filters, delete (terminal runs only, every row gone), clone, compare, export (the
//! document and the NDJSON stream, paged), batches, projection rebuilds; gRPC = REST for each,
//! and bad input refused by field.

use crate::on_both_backends;
use macp_control_plane::api::proto;
use macp_control_plane::events::canonical::{EventDraft, Source, types};
use serde_json::{Value, json};

use crate::parity::{assert_same, json as proto_json};
use crate::requests;
use crate::support::{self, Backend, TestApp};

/// proto3 JSON writes 64-bit integers as strings; REST writes numbers.
fn numbers(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, inner)| (key.clone(), numbers(inner)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(numbers).collect()),
        Value::String(text) => text
            .parse::<i64>()
            .map_or_else(|_| value.clone(), |n| json!(n)),
        other => other.clone(),
    }
}

/// A document without the keys that hold the time it was made.
fn without(value: &Value, keys: &[&str]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !keys.contains(&key.as_str()))
                .map(|(key, inner)| (key.clone(), without(inner, keys)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|item| without(item, keys)).collect()),
        other => other.clone(),
    }
}

fn same(what: &str, grpc: &Value, rest: &Value) {
    assert_same(
        what,
        &numbers(&without(grpc, &["exportedAt"])),
        &numbers(&without(rest, &["exportedAt"])),
    );
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .http
        .delete(format!("{}{path}", app.base))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn field_errors(body: &Value) -> Vec<String> {
    body["details"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| error["field"].as_str().map(str::to_owned))
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|run| run["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// A scripted decision run to completion; its id.
async fn completed_run(app: &TestApp, request: Value) -> String {
    let run_id = app.start_run(&request).await;
    app.wait_terminal(&run_id).await;
    run_id
}

/// The seed's run: it waits for votes that never come, so it stays running.
async fn running_run(app: &TestApp) -> String {
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    run_id
}

async fn archive_and_list_filters(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let plain = completed_run(&app, requests::scripted_decision()).await;
    let mut tagged = requests::scripted_decision();
    tagged["execution"]["tags"] = json!(["blue-team"]);
    tagged["session"]["metadata"]["environment"] = json!("staging");
    tagged["session"]["metadata"]["scenarioRef"] = json!("fraud/Card-Check@1.0.0");
    let tagged = completed_run(&app, tagged).await;
    let mut sandbox = requests::scripted_decision();
    sandbox["mode"] = json!("sandbox");
    let sandbox = completed_run(&app, sandbox).await;

    let listed = async |query: &str| -> Vec<String> {
        let (status, page) = app.get(&format!("/runs?limit=200{query}")).await;
        assert_eq!(status, 200, "{query}: {page}");
        ids(&page)
    };
    let all = listed("").await;
    assert!(all.contains(&plain) && all.contains(&tagged), "{all:?}");
    assert!(
        !all.contains(&sandbox),
        "sandbox runs are left out by default"
    );
    assert!(listed("&includeSandbox=true").await.contains(&sandbox));
    assert_eq!(listed("&search=BLUE").await, std::slice::from_ref(&tagged));
    assert_eq!(
        listed("&search=card-check").await,
        std::slice::from_ref(&tagged)
    );
    assert_eq!(
        listed(&format!("&search={}", &plain[..8])).await,
        std::slice::from_ref(&plain)
    );
    assert_eq!(
        listed("&environment=staging").await,
        std::slice::from_ref(&tagged)
    );
    assert!(listed("&environment=prod").await.is_empty());
    assert_eq!(
        listed("&scenarioRef=CARD-check").await,
        std::slice::from_ref(&tagged)
    );
    // A plain date is the start of that day, UTC.
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().expect("a tomorrow");
    let after_today = listed(&format!("&createdAfter={today}")).await;
    assert!(after_today.contains(&plain) && after_today.contains(&tagged));
    assert!(
        listed(&format!("&createdAfter={tomorrow}"))
            .await
            .is_empty()
    );
    assert!(listed(&format!("&createdBefore={today}")).await.is_empty());
    assert!(
        listed(&format!("&createdBefore={tomorrow}"))
            .await
            .contains(&plain)
    );
    for (query, field) in [
        ("createdAfter=2026-13-40", "createdAfter"),
        ("createdBefore=yesterday", "createdBefore"),
        ("includeArchived=yes", "includeArchived"),
        ("includeSandbox=1", "includeSandbox"),
    ] {
        let (status, body) = app.get(&format!("/runs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(field_errors(&body), [field], "{query}");
    }

    // The record carries the console's figures.
    let (_, run) = app.get(&format!("/runs/{plain}")).await;
    let started = chrono::DateTime::parse_from_rfc3339(run["startedAt"].as_str().expect("started"))
        .expect("a time");
    let ended = chrono::DateTime::parse_from_rfc3339(run["endedAt"].as_str().expect("ended"))
        .expect("a time");
    let metadata = &run["metadata"];
    assert_eq!(
        metadata["durationMs"],
        json!((ended - started).num_milliseconds())
    );
    assert_eq!(metadata["eventCount"], run["lastEventSeq"]);
    assert_eq!(metadata["finalAction"], "decision.selected");
    assert!(metadata["finalConfidence"].is_number(), "{metadata}");
    assert_eq!(metadata["signalCount"], 0);
    assert_eq!(metadata["totalTokens"], 0);
    let (_, metrics) = app.get(&format!("/runs/{plain}/metrics")).await;
    assert_eq!(metrics["durationMs"], metadata["durationMs"]);

    // Archive: out of the list unless asked for; gRPC answers what REST does.
    let (status, archived) = app
        .post(&format!("/runs/{plain}/archive"), &json!({}))
        .await;
    assert_eq!(status, 200, "{archived}");
    assert!(archived["archivedAt"].is_string(), "{archived}");
    assert!(!listed("").await.contains(&plain));
    assert!(listed("&includeArchived=true").await.contains(&plain));
    let mut grpc = app.grpc().await;
    let again = grpc
        .archive_run(proto::ArchiveRunRequest {
            run_id: plain.clone(),
        })
        .await
        .expect("ArchiveRun")
        .into_inner();
    let (_, rest) = app.get(&format!("/runs/{plain}")).await;
    same("ArchiveRun", &proto_json(&again), &rest);
    let (status, unarchived) = app
        .post(&format!("/runs/{plain}/unarchive"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(unarchived.get("archivedAt").is_none(), "{unarchived}");
    assert!(listed("").await.contains(&plain));
    let back = grpc
        .unarchive_run(proto::UnarchiveRunRequest {
            run_id: plain.clone(),
        })
        .await
        .expect("UnarchiveRun")
        .into_inner();
    assert!(back.archived_at.is_none());
    let (_, rest) = app.get(&format!("/runs/{plain}")).await;
    same("UnarchiveRun", &proto_json(&back), &rest);

    // The list's filters over gRPC answer what REST does.
    let filtered = grpc
        .list_runs(proto::ListRunsRequest {
            search: Some("blue".to_owned()),
            environment: Some("staging".to_owned()),
            created_after: Some(today.to_string()),
            include_archived: Some(true),
            include_sandbox: Some(true),
            ..Default::default()
        })
        .await
        .expect("ListRuns")
        .into_inner();
    let (_, rest) = app
        .get(&format!(
            "/runs?search=blue&environment=staging&createdAfter={today}&includeArchived=true&includeSandbox=true"
        ))
        .await;
    assert_eq!(ids(&rest), std::slice::from_ref(&tagged));
    same("ListRuns", &proto_json(&filtered), &rest);
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = app
        .post(&format!("/runs/{unknown}/archive"), &json!({}))
        .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (404, Some("RUN_NOT_FOUND"))
    );

    // A running run's duration is live.
    let running = running_run(&app).await;
    let (_, first) = app.get(&format!("/runs/{running}/metrics")).await;
    let (_, record) = app.get(&format!("/runs/{running}")).await;
    let live = first["durationMs"].as_i64().expect("a live duration");
    assert!(live >= 0, "{first}");
    assert!(
        record["metadata"]["durationMs"].as_i64() >= Some(live),
        "{record}"
    );
    app.stop().await;
}
on_both_backends!(archive_and_list_filters);

async fn delete_takes_everything(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let store = app.store().await;
    let done = completed_run(&app, requests::scripted_decision()).await;
    let (status, _) = app
        .post(
            &format!("/runs/{done}/artifacts"),
            &json!({"kind": "json", "label": "notes", "inline": {"a": 1}}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(!store.raw_events(&done).await.expect("raw").is_empty());
    assert!(store.session(&done).await.expect("session").is_some());

    // A run that has not ended stays, whole.
    let running = running_run(&app).await;
    let (status, body) = delete(&app, &format!("/runs/{running}")).await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (409, Some("RUN_NOT_TERMINAL")),
        "{body}"
    );
    assert!(store.run(&running).await.expect("run").is_some());
    let mut grpc = app.grpc().await;
    let refused = grpc
        .delete_run(proto::DeleteRunRequest {
            run_id: running.clone(),
        })
        .await
        .expect_err("not terminal");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused
            .metadata()
            .get("x-error-code")
            .and_then(|code| code.to_str().ok()),
        Some("RUN_NOT_TERMINAL")
    );

    let response = app
        .http
        .delete(format!("{}/runs/{done}", app.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 204);
    assert!(response.bytes().await.expect("body").is_empty());
    assert!(store.run(&done).await.expect("run").is_none());
    assert!(store.session(&done).await.expect("session").is_none());
    assert!(store.projection(&done).await.expect("projection").is_none());
    assert!(store.raw_events(&done).await.expect("raw").is_empty());
    assert!(
        store
            .events_between(&done, 0, None, 10)
            .await
            .expect("events")
            .is_empty()
    );
    assert!(store.artifacts(&done).await.expect("artifacts").is_empty());
    assert!(
        store
            .checkpoint_at_or_before(&done, i64::MAX)
            .await
            .expect("checkpoints")
            .is_none()
    );
    let (status, body) = app.get(&format!("/runs/{done}")).await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (404, Some("RUN_NOT_FOUND"))
    );
    let (status, _) = delete(&app, &format!("/runs/{done}")).await;
    assert_eq!(status, 404);
    let (status, audit) = app.get("/audit?action=run.delete").await;
    assert_eq!(status, 200, "{audit}");
    let rows = audit["data"].as_array().expect("audit rows");
    assert!(
        rows.iter()
            .any(|row| row["resourceId"] == json!(done) && row["outcome"] == "ok"),
        "{audit}"
    );

    // gRPC deletes the same way.
    let other = completed_run(&app, requests::scripted_decision()).await;
    grpc.delete_run(proto::DeleteRunRequest {
        run_id: other.clone(),
    })
    .await
    .expect("DeleteRun");
    assert!(store.run(&other).await.expect("run").is_none());
    let (status, body) = delete(&app, "/runs/not-a-uuid").await;
    assert_eq!((status, field_errors(&body)), (400, vec!["id".to_owned()]));
    app.stop().await;
}
on_both_backends!(delete_takes_everything);

/// Writes that wait for a run's writer while it is deleted find no run (404), never a stale head
/// that appends to a run that is gone (500).
async fn delete_races_with_writes(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    for _ in 0..4 {
        let run_id = app.start_run(&requests::seed_example()).await;
        let (status, _) = app
            .post(&format!("/runs/{run_id}/cancel"), &json!({}))
            .await;
        assert_eq!(status, 200);
        let artifact = json!({"kind": "json", "label": "race", "inline": {"a": 1}});
        let path = format!("/runs/{run_id}/artifacts");
        let writes = futures::future::join_all((0..8).map(|_| app.post(&path, &artifact)));
        let run_path = format!("/runs/{run_id}");
        let (deleted, written) = tokio::join!(delete(&app, &run_path), writes);
        assert_eq!(deleted.0, 204, "{}", deleted.1);
        for (status, body) in written {
            assert!(status == 201 || status == 404, "{status}: {body}");
        }
        assert!(
            app.store()
                .await
                .artifacts(&run_id)
                .await
                .expect("artifacts")
                .is_empty()
        );
    }
    app.stop().await;
}
on_both_backends!(delete_races_with_writes);

async fn clone_and_compare(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let original = completed_run(&app, requests::scripted_decision()).await;
    let (status, cloned) = app
        .post(
            &format!("/runs/{original}/clone"),
            &json!({"tags": ["cloned"], "context": {"extra": 7}}),
        )
        .await;
    assert_eq!(status, 201, "{cloned}");
    let clone = cloned["runId"].as_str().expect("runId").to_owned();
    assert_ne!(clone, original);
    app.wait_terminal(&clone).await;
    let (_, record) = app.get(&format!("/runs/{clone}")).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["tags"], json!(["cloned"]));
    let request = &record["metadata"]["executionRequest"];
    assert_eq!(request["session"]["context"]["extra"], 7);
    assert_eq!(request["session"]["context"]["case"], "scripted");
    assert!(request["execution"].get("idempotencyKey").is_none());

    // No body is no overrides; gRPC clones too.
    let response = app
        .http
        .post(format!("{}/runs/{original}/clone", app.base))
        .send()
        .await
        .expect("clone");
    assert_eq!(response.status().as_u16(), 201);
    let mut grpc = app.grpc().await;
    let by_grpc = grpc
        .clone_run(proto::CloneRunRequest {
            run_id: original.clone(),
            ..Default::default()
        })
        .await
        .expect("CloneRun")
        .into_inner();
    assert_ne!(by_grpc.run_id, original);
    app.wait_terminal(&by_grpc.run_id).await;
    let (status, body) = app
        .post(
            &format!("/runs/{original}/clone"),
            &json!({"tags": "x", "context": 3}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(field_errors(&body), ["tags", "context"]);
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = app
        .post(&format!("/runs/{unknown}/clone"), &json!({}))
        .await;
    assert_eq!(status, 404);

    // Compare: same participants, same status; the running one differs.
    let body = json!({"leftRunId": original, "rightRunId": clone});
    let (status, comparison) = app.post("/runs/compare", &body).await;
    assert_eq!(status, 200, "{comparison}");
    assert_eq!(comparison["statusMatch"], true);
    assert_eq!(comparison["left"]["runId"], json!(original));
    assert_eq!(comparison["left"]["modeName"], "macp.mode.decision.v1");
    assert!(comparison["durationDeltaMs"].is_i64(), "{comparison}");
    assert_eq!(comparison["confidenceDelta"], 0.0);
    assert_eq!(comparison["participantsDiff"]["added"], json!([]));
    assert_eq!(comparison["participantsDiff"]["removed"], json!([]));
    let (_, state) = app.get(&format!("/runs/{original}/state")).await;
    let participants: Vec<Value> = state["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|participant| participant["participantId"].clone())
        .collect();
    assert!(!participants.is_empty());
    assert_eq!(
        comparison["participantsDiff"]["common"],
        json!(participants)
    );
    let by_grpc = grpc
        .compare_runs(proto::CompareRunsRequest {
            left_run_id: original.clone(),
            right_run_id: clone.clone(),
        })
        .await
        .expect("CompareRuns")
        .into_inner();
    same("CompareRuns", &proto_json(&by_grpc), &comparison);
    let running = running_run(&app).await;
    let (_, mixed) = app
        .post(
            "/runs/compare",
            &json!({"leftRunId": original, "rightRunId": running}),
        )
        .await;
    assert_eq!(mixed["statusMatch"], false);
    assert_eq!(mixed["right"]["status"], "running");
    let (status, body) = app
        .post(
            "/runs/compare",
            &json!({"leftRunId": original, "rightRunId": unknown.to_string()}),
        )
        .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (404, Some("RUN_NOT_FOUND"))
    );
    let (status, body) = app.post("/runs/compare", &json!({"leftRunId": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(field_errors(&body), ["leftRunId", "rightRunId"]);
    app.stop().await;
}
on_both_backends!(clone_and_compare);

/// Appends `count` control-plane events to a run, so its export spans several pages.
async fn append_events(app: &TestApp, run_id: &str, count: usize) {
    let drafts = (0..count)
        .map(|n| {
            EventDraft::new(
                types::PROGRESS_REPORTED,
                macp_control_plane::time::now(),
                None,
                Source::control_plane("test"),
                json!({"participantId": "fraud-agent", "percentage": n % 100}),
            )
        })
        .collect();
    app.app
        .service
        .ingest(run_id, &[], drafts)
        .await
        .expect("events appended");
}

async fn export_document_and_stream(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = completed_run(&app, requests::scripted_decision()).await;
    append_events(&app, &run_id, 1_100).await;
    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    let last_seq = run["lastEventSeq"].as_i64().expect("lastEventSeq");
    assert!(last_seq > 1_100);

    let (status, export) = app.get(&format!("/runs/{run_id}/export")).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["run"]["id"], json!(run_id));
    assert_eq!(export["session"]["runId"], json!(run_id));
    assert_eq!(export["projection"]["run"]["runId"], json!(run_id));
    assert_eq!(export["metrics"]["eventCount"], json!(last_seq));
    assert_eq!(export["artifacts"], json!([]));
    assert_eq!(
        export["canonicalEvents"].as_array().map(Vec::len),
        Some(last_seq as usize)
    );
    assert_eq!(export["rawEvents"], json!([]));
    assert!(export["exportedAt"].is_string());
    let (_, limited) = app
        .get(&format!(
            "/runs/{run_id}/export?includeRaw=true&eventLimit=3&format=jsonl"
        ))
        .await;
    assert_eq!(limited["canonicalEvents"].as_array().map(Vec::len), Some(3));
    assert_eq!(limited["rawEvents"].as_array().map(Vec::len), Some(3));
    assert!(
        limited["rawEvents"][0]["seq"].is_i64(),
        "{}",
        limited["rawEvents"][0]
    );
    let (_, bare) = app
        .get(&format!("/runs/{run_id}/export?includeCanonical=false"))
        .await;
    assert_eq!(bare["canonicalEvents"], json!([]));
    let (status, body) = app
        .get(&format!(
            "/runs/{run_id}/export?eventLimit=0&format=xml&includeRaw=maybe"
        ))
        .await;
    assert_eq!(status, 400);
    assert_eq!(field_errors(&body), ["includeRaw"]);
    let (status, body) = app
        .get(&format!("/runs/{run_id}/export?eventLimit=0&format=xml"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(field_errors(&body), ["eventLimit", "format"]);
    let (status, _) = app
        .get(&format!("/runs/{}/export", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    let mut grpc = app.grpc().await;
    let by_grpc = grpc
        .export_run(proto::ExportRunRequest {
            run_id: run_id.clone(),
            include_raw: Some(true),
            event_limit: Some(3),
            format: Some("jsonl".to_owned()),
            ..Default::default()
        })
        .await
        .expect("ExportRun")
        .into_inner();
    same("ExportRun", &proto_json(&by_grpc), &limited);

    // The stream: a header, every event in order (three pages of them), then the raw events.
    let response = app
        .http
        .get(format!(
            "{}/runs/{run_id}/export/stream?includeRaw=true",
            app.base
        ))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/x-ndjson")
    );
    let text = response.text().await.expect("body");
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(records[0]["record"], "header");
    assert_eq!(records[0]["run"]["id"], json!(run_id));
    assert!(records[0].get("canonicalEvents").is_none());
    let seqs: Vec<i64> = records
        .iter()
        .filter(|record| record["record"] == "canonical_event")
        .map(|record| record["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>());
    let first_raw = records
        .iter()
        .position(|record| record["record"] == "raw_event")
        .expect("raw events");
    assert_eq!(first_raw, 1 + last_seq as usize);
    assert!(
        records[first_raw..]
            .iter()
            .all(|record| record["record"] == "raw_event")
    );
    assert_eq!(records[1]["type"], "run.created", "events keep their type");
    let mut stream = grpc
        .stream_run_export(proto::StreamRunExportRequest {
            run_id: run_id.clone(),
            include_raw: Some(true),
            ..Default::default()
        })
        .await
        .expect("StreamRunExport")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(record) = stream.message().await.expect("a record") {
        streamed.push(proto_json(&record));
    }
    same("StreamRunExport", &json!(streamed), &json!(records));
    let (status, _) = app
        .get(&format!("/runs/{}/export/stream", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_backends!(export_document_and_stream);

async fn batches(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let running = running_run(&app).await;
    let done = completed_run(&app, requests::scripted_decision()).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    // A literal path, not `/runs/{id}/cancel` with id "batch".
    let (status, outcome) = app
        .post("/runs/batch/cancel", &json!({"runIds": [running, unknown]}))
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["results"][0], json!({"runId": running, "ok": true}));
    assert_eq!(outcome["results"][1]["ok"], false);
    assert_eq!(outcome["results"][1]["errorCode"], "RUN_NOT_FOUND");
    let (_, cancelled) = app.get(&format!("/runs/{running}")).await;
    assert_eq!(cancelled["status"], "cancelled");

    let (status, outcome) = app
        .post("/runs/batch/archive", &json!({"runIds": [done]}))
        .await;
    assert_eq!((status, &outcome["results"][0]["ok"]), (200, &json!(true)));
    let (_, archived) = app.get(&format!("/runs/{done}")).await;
    assert!(archived["archivedAt"].is_string());

    let (status, exported) = app
        .post("/runs/batch/export", &json!({"runIds": [done, running]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(exported["results"][0]["export"]["run"]["id"], json!(done));
    assert_eq!(
        exported["results"][1]["export"]["run"]["id"],
        json!(running)
    );
    // Two runs share the batch's 50,000 events: 10,000 each at most, all of theirs here.
    for result in exported["results"].as_array().expect("results") {
        assert_eq!(result["eventLimit"], 10_000, "{result}");
        assert_eq!(result["truncated"], false, "{result}");
    }
    let mut grpc = app.grpc().await;
    let by_grpc = grpc
        .batch_runs(proto::BatchRunsRequest {
            action: "export".to_owned(),
            run_ids: vec![done.clone(), running.clone()],
        })
        .await
        .expect("BatchRuns")
        .into_inner();
    same("BatchRuns", &proto_json(&by_grpc), &exported);

    // Bad input changes nothing, and says which field.
    for (path, body, fields) in [
        (
            "/runs/batch/frobnicate",
            json!({"runIds": [done]}),
            vec!["action"],
        ),
        (
            "/runs/batch/delete",
            json!({"runIds": [done, "x"]}),
            vec!["runIds[1]"],
        ),
        ("/runs/batch/delete", json!({"runIds": []}), vec!["runIds"]),
        ("/runs/batch/delete", json!({}), vec!["runIds"]),
        (
            "/runs/batch/delete",
            json!({"runIds": "all"}),
            vec!["runIds"],
        ),
    ] {
        let (status, answer) = app.post(path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(field_errors(&answer), fields, "{path} {body}");
    }
    let refused = grpc
        .batch_runs(proto::BatchRunsRequest {
            action: "explode".to_owned(),
            run_ids: vec![done.clone()],
        })
        .await
        .expect_err("bad action");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(app.get(&format!("/runs/{done}")).await.0, 200);

    let (status, deleted) = app
        .post("/runs/batch/delete", &json!({"runIds": [done, running]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["results"][0]["ok"], true);
    assert_eq!(
        deleted["results"][1]["ok"], true,
        "cancelled is terminal: {deleted}"
    );
    assert_eq!(app.get(&format!("/runs/{done}")).await.0, 404);

    // Each run a batch changed has its own audit row: `done` was archived, then deleted.
    let (status, audit) = app
        .get(&format!("/audit?action=run.batch&resourceId={done}"))
        .await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["total"], 2, "{audit}");
    let (_, audit) = app
        .get(&format!("/audit?action=run.batch&resourceId={running}"))
        .await;
    assert_eq!(audit["total"], 2, "cancelled, then deleted: {audit}");
    app.stop().await;
}
on_both_backends!(batches);

async fn projection_rebuild(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = completed_run(&app, requests::scripted_decision()).await;
    // Past 250 events, so the run has a projection checkpoint too.
    append_events(&app, &run_id, 300).await;
    let store = app.store().await;
    let checkpoint = *store
        .checkpoint_seqs(&run_id)
        .await
        .expect("checkpoints")
        .first()
        .expect("a checkpoint");
    let at_checkpoint = format!("/runs/{run_id}/replay/state?seq={checkpoint}");
    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    let (_, intact) = app.get(&format!("/runs/{run_id}/state")).await;
    let (_, intact_checkpoint) = app.get(&at_checkpoint).await;
    let (status, rebuilt) = app
        .post(&format!("/runs/{run_id}/projection/rebuild"), &json!({}))
        .await;
    assert_eq!(status, 200, "{rebuilt}");
    assert_eq!(
        rebuilt,
        json!({"rebuilt": true, "latestSeq": run["lastEventSeq"], "differed": false})
    );

    // A projection row and a checkpoint that no longer are the fold of the events.
    let tamper = |mut state: macp_control_plane::projection::state::RunState| {
        if let Some(decision) = state.decision.current.as_mut() {
            decision.action = "tampered".to_owned();
        }
        state.participants.clear();
        macp_control_plane::store::state_text(&state).expect("json")
    };
    let row = store
        .projection(&run_id)
        .await
        .expect("read")
        .expect("a row");
    let seq = row.timeline.latest_seq;
    let stored_checkpoint = store
        .checkpoint_at_or_before(&run_id, checkpoint)
        .await
        .expect("read")
        .expect("the checkpoint");
    store
        .replace_projection(
            &run_id,
            seq,
            tamper(row),
            vec![(checkpoint, tamper(stored_checkpoint))],
            None,
        )
        .await
        .expect("tampered");
    let (_, broken) = app.get(&format!("/runs/{run_id}/state")).await;
    assert_ne!(broken, intact);
    assert_ne!(app.get(&at_checkpoint).await.1, intact_checkpoint);
    let (_, rebuilt) = app
        .post(&format!("/runs/{run_id}/projection/rebuild"), &json!({}))
        .await;
    assert_eq!(rebuilt["differed"], true, "{rebuilt}");
    let (_, repaired) = app.get(&format!("/runs/{run_id}/state")).await;
    assert_eq!(repaired, intact);
    assert_eq!(app.get(&at_checkpoint).await.1, intact_checkpoint);
    assert_eq!(
        store
            .projection(&run_id)
            .await
            .expect("read")
            .expect("row")
            .decision,
        serde_json::from_value(intact["decision"].clone()).expect("decision")
    );

    let mut grpc = app.grpc().await;
    let by_grpc = grpc
        .rebuild_projection(proto::RebuildProjectionRequest {
            run_id: run_id.clone(),
        })
        .await
        .expect("RebuildProjection")
        .into_inner();
    assert!(by_grpc.rebuilt && !by_grpc.differed);
    assert_eq!(i64::from(by_grpc.latest_seq), seq);
    let (status, _) = app
        .post(
            &format!("/runs/{}/projection/rebuild", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_backends!(projection_rebuild);
