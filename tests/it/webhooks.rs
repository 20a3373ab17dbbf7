//! Webhooks: the admin CRUD with its field errors (the SSRF guard among them) on both backends,
//! gRPC = REST, and deliveries to a receiver on loopback: signed, retried until the receiver
//! takes one, and not lost across a restart of the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use macp_control_plane::api::proto;
use macp_control_plane::store::Store;
use macp_control_plane::webhooks::WebhookOptions;
use macp_control_plane::webhooks::signature::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::on_both_backends;
use crate::parity::{assert_same, json};
use crate::requests;
use crate::support::{self, Backend, TestApp};

/// The field names of a validation error's `details.errors`.
fn error_fields(body: &Value) -> Vec<String> {
    body["details"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| error["field"].as_str().map(str::to_owned))
        .collect()
}

async fn patch(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let response = app
        .http
        .patch(format!("{}{path}", app.base))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
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

async fn webhooks_crud_and_bad_input(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let (status, created) = app
        .post(
            "/webhooks",
            &json!({
                "url": "http://127.0.0.1:9/hooks/macp",
                "events": ["run.completed", "run.failed", "run.completed"],
                "secret": "s3cret-value",
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["secret"], "s3cret-value", "shown once, on create");
    assert_eq!(created["active"], true);
    assert_eq!(created["events"], json!(["run.completed", "run.failed"]));
    assert_eq!(created["deliveryStats"]["total"], 0);

    // Bad input: every problem by field, and nothing written.
    for (body, fields) in [
        (
            json!({"url": "http://169.254.169.254/latest/meta-data", "secret": "x"}),
            vec!["url"],
        ),
        (
            json!({"url": "http://[fe80::1]/", "secret": "x"}),
            vec!["url"],
        ),
        (
            json!({"url": "ftp://example.com/", "secret": " ", "events": ["signal.acknowledged", 3]}),
            vec!["events[1]"],
        ),
        (
            json!({"url": "ftp://example.com/", "secret": " ", "events": ["signal.acknowledged"]}),
            vec!["url", "secret", "events[0]"],
        ),
        (json!({"events": []}), vec!["url", "secret"]),
        (
            json!({"url": "http://127.0.0.1/", "secret": "x", "active": false}),
            vec!["active"],
        ),
        (json!(["not", "an object"]), vec!["$"]),
    ] {
        let (status, error) = app.post("/webhooks", &body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["errorCode"], "VALIDATION_ERROR", "{error}");
        assert_eq!(error_fields(&error), fields, "{body}: {error}");
    }
    let (status, error) = patch(
        &app,
        &format!("/webhooks/{id}"),
        &json!({"url": "http://169.254.169.254/"}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error_fields(&error), ["url"]);

    let (status, listed) = app.get("/webhooks").await;
    assert_eq!(status, 200, "{listed}");
    let data = listed
        .as_array()
        .expect("a bare array, as the console reads it");
    assert_eq!(data.len(), 1, "refused requests wrote nothing: {listed}");
    assert!(data[0].get("secret").is_none(), "never listed: {listed}");
    assert_eq!(data[0]["url"], "http://127.0.0.1:9/hooks/macp");

    let (status, paused) = patch(
        &app,
        &format!("/webhooks/{id}"),
        &json!({"active": false, "events": [], "secret": "rotated-secret"}),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["active"], false);
    assert_eq!(paused["events"], json!([]), "empty: every event");
    assert!(paused.get("secret").is_none(), "{paused}");

    let missing = uuid::Uuid::new_v4();
    for (status, error) in [
        patch(
            &app,
            &format!("/webhooks/{missing}"),
            &json!({"active": true}),
        )
        .await,
        delete(&app, &format!("/webhooks/{missing}")).await,
        app.get(&format!("/webhooks/{missing}/deliveries")).await,
    ] {
        assert_eq!(status, 404, "{error}");
        assert_eq!(error["errorCode"], "NOT_FOUND");
    }
    let (status, deliveries) = app.get(&format!("/webhooks/{id}/deliveries")).await;
    assert_eq!(status, 200, "{deliveries}");
    assert_eq!(deliveries, json!({"data": [], "total": 0}));
    let (status, error) = app
        .get(&format!("/webhooks/{id}/deliveries?status=lost&limit=0"))
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error_fields(&error), ["status", "limit"]);

    // gRPC = REST.
    let mut grpc = app.grpc().await;
    let listed_grpc = grpc
        .list_webhooks(proto::ListWebhooksRequest {})
        .await
        .expect("ListWebhooks")
        .into_inner();
    let (_, listed) = app.get("/webhooks").await;
    assert_same("ListWebhooks", &json(&listed_grpc.data), &listed);
    let refused = grpc
        .create_webhook(proto::CreateWebhookRequest {
            url: "http://169.254.169.254/".to_owned(),
            events: vec![],
            secret: "x".to_owned(),
        })
        .await
        .expect_err("metadata address");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused
            .metadata()
            .get("x-error-code")
            .map(|v| v.to_str().ok()),
        Some(Some("VALIDATION_ERROR"))
    );
    let updated = grpc
        .update_webhook(proto::UpdateWebhookRequest {
            webhook_id: id.clone(),
            active: Some(true),
            events: Some(pbjson_types::ListValue {
                values: vec![pbjson_types::Value {
                    kind: Some(pbjson_types::value::Kind::StringValue("run.started".into())),
                }],
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateWebhook")
        .into_inner();
    let (_, listed) = app.get("/webhooks").await;
    assert_same("UpdateWebhook", &json(&updated), &listed[0]);
    assert_eq!(updated.events, ["run.started"]);

    let (status, deleted) = delete(&app, &format!("/webhooks/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["id"], id.as_str());
    let (_, listed) = app.get("/webhooks").await;
    assert_eq!(listed, json!([]));

    // Each change is audited, with the webhook as its resource.
    let (_, audit) = app.get("/audit?resource=webhook").await;
    let mut actions: Vec<&str> = audit["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["outcome"] == "ok")
        .filter_map(|row| row["action"].as_str())
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "webhook.create",
            "webhook.delete",
            "webhook.update",
            "webhook.update"
        ],
        "{audit}"
    );
    app.stop().await;
}
on_both_backends!(webhooks_crud_and_bad_input);

/// One request the receiver got.
struct Received {
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// A webhook receiver on loopback that answers 500 to its first `failures` requests and 204
/// after, and hands each request to the test.
async fn receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<Received>) {
    receiver_answering(move |seen| {
        Some(if seen < failures {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        })
    })
    .await
}

/// A receiver that answers request `n` (from 0) with `answer(n)`, or never when `None`.
async fn receiver_answering(
    answer: impl Fn(usize) -> Option<StatusCode> + Clone + Send + Sync + 'static,
) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (sent, received) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let route = axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
        let (sent, seen, answer) = (sent.clone(), seen.clone(), answer.clone());
        async move {
            let _ = sent.send(Received { headers, body });
            match answer(seen.fetch_add(1, Ordering::SeqCst)) {
                Some(status) => status,
                None => std::future::pending().await,
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().route("/hook", route)).await;
    });
    (format!("http://{address}/hook"), received)
}

async fn next_request(requests: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(30), requests.recv())
        .await
        .expect("the receiver got a request within 30 s")
        .expect("receiver open")
}

/// Checks the signature the way a receiver does: HMAC-SHA256 over `<timestamp>.<body>`.
fn assert_signed(request: &Received, secret: &str) {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_owned()
    };
    let timestamp: i64 = header(TIMESTAMP_HEADER).parse().expect("unix seconds");
    assert!(
        (chrono::Utc::now().timestamp() - timestamp).abs() < 60,
        "a fresh timestamp"
    );
    let signature = header(SIGNATURE_HEADER);
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
        .collect();
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(&request.body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    assert!(
        ring::hmac::verify(&key, &message, &tag).is_ok(),
        "the signature verifies"
    );
    let wrong = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"another secret");
    assert!(ring::hmac::verify(&wrong, &message, &tag).is_err());
}

/// Polls the delivery log until `done` holds for the webhook's one delivery (the worker records
/// an attempt's outcome just after the receiver answers).
async fn wait_for_delivery(
    app: &TestApp,
    webhook_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, page) = app.get(&format!("/webhooks/{webhook_id}/deliveries")).await;
        assert_eq!(status, 200, "{page}");
        if let Some(delivery) = page["data"].get(0).filter(|delivery| done(delivery)) {
            return delivery.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery did not get there in 30 s: {page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deliveries_are_signed_retried_and_survive_a_restart(backend: Backend) {
    // A second apart (at least half of it, with jitter): the restart right after the first
    // attempt is recorded comes before the second.
    let options = support::Options {
        webhooks: WebhookOptions {
            retry_base: Duration::from_secs(1),
            ..WebhookOptions::default()
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(backend, options).await else {
        return;
    };
    let (url, mut requests) = receiver(2).await;
    let secret = "receiver-secret";
    let (status, webhook) = app
        .post(
            "/webhooks",
            &json!({"url": url, "events": ["run.cancelled"], "secret": secret}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();

    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let (status, run) = app
        .post(
            &format!("/runs/{run_id}/cancel"),
            &json!({"reason": "done"}),
        )
        .await;
    assert_eq!(status, 200, "{run}");

    // The first attempt fails; once it is recorded, the service restarts.
    let first = next_request(&mut requests).await;
    assert_signed(&first, secret);
    wait_for_delivery(&app, &webhook_id, |delivery| {
        delivery["attempts"] == 1 && delivery["responseStatus"] == 500
    })
    .await;
    let app = app.restart().await;

    // The restarted service retries: the second attempt fails, the third is taken.
    let second = next_request(&mut requests).await;
    let third = next_request(&mut requests).await;
    for request in [&second, &third] {
        assert_signed(request, secret);
        assert_eq!(request.body, first.body, "the same body on every attempt");
        for name in [DELIVERY_HEADER, EVENT_HEADER] {
            assert_eq!(request.headers.get(name), first.headers.get(name), "{name}");
        }
    }
    assert_eq!(
        first
            .headers
            .get(EVENT_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("run.cancelled")
    );
    let body: Value = serde_json::from_slice(&first.body).expect("a JSON body");
    assert_eq!(body["event"], "run.cancelled");
    assert_eq!(body["runId"], run_id.as_str());
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["data"]["reason"], "done", "{body}");

    let delivery = wait_for_delivery(&app, &webhook_id, |delivery| {
        delivery["status"] == "delivered"
    })
    .await;
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(delivery["responseStatus"], 204);
    assert_eq!(delivery["runId"], run_id.as_str());
    assert_eq!(delivery["payload"], body);
    assert!(delivery.get("nextAttemptAt").is_none(), "{delivery}");
    let (_, listed) = app.get("/webhooks").await;
    let stats = &listed[0]["deliveryStats"];
    assert_eq!(stats["total"], 1, "{listed}");
    assert_eq!(stats["succeeded"], 1, "{listed}");
    assert!(stats["lastDeliveredAt"].is_string(), "{listed}");
    // Delivered once: no other event of the run was subscribed to, nothing is sent again.
    assert!(requests.try_recv().is_err(), "no fourth request");
    app.stop().await;
}
on_both_backends!(deliveries_are_signed_retried_and_survive_a_restart);

/// A receiver that never takes a delivery gets `max_attempts`, then the delivery is failed;
/// a paused webhook gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_give_up_after_max_attempts_and_paused_webhooks_get_none() {
    let options = support::Options {
        webhooks: WebhookOptions {
            retry_base: Duration::from_millis(10),
            max_attempts: 2,
            ..WebhookOptions::default()
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(Backend::Sqlite, options).await else {
        return;
    };
    let (failing_url, mut failing) = receiver(usize::MAX).await;
    let (paused_url, mut paused) = receiver(0).await;
    let (_, failing_hook) = app
        .post(
            "/webhooks",
            &json!({"url": failing_url, "events": ["run.started"], "secret": "one"}),
        )
        .await;
    let (_, paused_hook) = app
        .post("/webhooks", &json!({"url": paused_url, "secret": "two"}))
        .await;
    let paused_id = paused_hook["id"].as_str().expect("id");
    let (status, _) = patch(
        &app,
        &format!("/webhooks/{paused_id}"),
        &json!({"active": false}),
    )
    .await;
    assert_eq!(status, 200);

    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    next_request(&mut failing).await;
    next_request(&mut failing).await;
    let failing_id = failing_hook["id"].as_str().expect("id");
    let delivery =
        wait_for_delivery(&app, failing_id, |delivery| delivery["status"] == "failed").await;
    assert_eq!(delivery["attempts"], 2, "{delivery}");
    assert_eq!(delivery["event"], "run.started");
    assert!(
        delivery["error"]
            .as_str()
            .unwrap_or_default()
            .contains("500"),
        "{delivery}"
    );
    let (_, page) = app.get(&format!("/webhooks/{paused_id}/deliveries")).await;
    assert_eq!(
        page["total"], 0,
        "a paused webhook gets no deliveries: {page}"
    );
    assert!(paused.try_recv().is_err());
    assert!(failing.try_recv().is_err(), "no attempt past the last");
    app.stop().await;
}

/// A webhook of every event hears a run's whole life, suspend and resume included, each
/// delivery with the status the event left the run in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_event_is_delivered() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let (url, mut requests) = receiver(0).await;
    let (status, _) = app
        .post(
            "/webhooks",
            &json!({"url": url, "events": [], "secret": "all"}),
        )
        .await;
    assert_eq!(status, 201);
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    for action in ["suspend", "resume", "cancel"] {
        let (status, run) = app
            .post(&format!("/runs/{run_id}/{action}"), &json!({}))
            .await;
        assert_eq!(status, 200, "{action}: {run}");
    }
    let mut heard = Vec::new();
    for _ in 0..4 {
        let request = next_request(&mut requests).await;
        assert_signed(&request, "all");
        let body: Value = serde_json::from_slice(&request.body).expect("JSON");
        assert_eq!(body["runId"], run_id.as_str());
        heard.push((
            body["event"].as_str().unwrap_or_default().to_owned(),
            body["status"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            ("run.cancelled".to_owned(), "cancelled".to_owned()),
            ("run.resumed".to_owned(), "running".to_owned()),
            ("run.started".to_owned(), "running".to_owned()),
            ("run.suspended".to_owned(), "suspended".to_owned()),
        ]
    );
    app.stop().await;
}

/// An attempt in flight when the service stops is given back, not counted: the restarted
/// service sends it again at once (not after the attempt's lease), as its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_cut_short_by_a_stop_is_given_back() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    // The first request is never answered; the next ones are taken.
    let (url, mut requests) =
        receiver_answering(|seen| (seen > 0).then_some(StatusCode::NO_CONTENT)).await;
    let (status, webhook) = app
        .post(
            "/webhooks",
            &json!({"url": url, "events": ["run.started"], "secret": "s"}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();
    app.start_run(&requests::seed_example()).await;
    let hanging = next_request(&mut requests).await;
    let app = app.restart().await;
    let again = next_request(&mut requests).await;
    assert_eq!(again.body, hanging.body);
    let delivery = wait_for_delivery(&app, &webhook_id, |delivery| {
        delivery["status"] == "delivered"
    })
    .await;
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    app.stop().await;
}

/// The UI console's default subscription (`run.completed,run.failed,signal.emitted`) is taken,
/// and a signal emitted in a run is delivered with the signal's event data, on both databases;
/// a webhook of `events: []` (the lifecycle events) does not get it.
async fn signals_are_delivered(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let (lifecycle_url, mut lifecycle_requests) = receiver(0).await;
    let (status, lifecycle) = app
        .post(
            "/webhooks",
            &json!({"url": lifecycle_url, "secret": "all", "events": []}),
        )
        .await;
    assert_eq!(status, 201, "{lifecycle}");
    let lifecycle_id = lifecycle["id"].as_str().expect("id").to_owned();
    let (url, mut requests) = receiver(0).await;
    let (status, webhook) = app
        .post(
            "/webhooks",
            &json!({"url": url, "secret": "sig", "events": ["run.completed", "run.failed", "signal.emitted"]}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();
    let run_id = app.start_run(&requests::seed_example()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let (status, body) = app
        .post(
            &format!("/runs/{run_id}/signal"),
            &json!({"from": "risk-agent", "signalType": "suspicious_device", "confidence": 0.7}),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    // `run.started` is not subscribed: the first request is the signal.
    let request = next_request(&mut requests).await;
    assert_signed(&request, "sig");
    let delivered: Value = serde_json::from_slice(&request.body).expect("JSON");
    assert_eq!(delivered["event"], "signal.emitted", "{delivered}");
    assert_eq!(delivered["runId"], run_id.as_str(), "{delivered}");
    assert!(delivered.get("status").is_none(), "{delivered}");
    let recorded = app
        .events(&run_id)
        .await
        .into_iter()
        .find(|event| event["type"] == "signal.emitted")
        .expect("the run recorded the signal");
    assert_eq!(delivered["data"], recorded["data"], "{delivered}");
    assert!(
        delivered["data"].to_string().contains("suspicious_device"),
        "{delivered}"
    );
    let delivery = wait_for_delivery(&app, &webhook_id, |delivery| {
        delivery["status"] == "delivered"
    })
    .await;
    assert_eq!(delivery["event"], "signal.emitted", "{delivery}");
    // The cancel that ends the run is not subscribed either: nothing else arrives.
    let (status, body) = app
        .post(&format!("/runs/{run_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_terminal(&run_id).await;
    let (status, page) = app.get(&format!("/webhooks/{webhook_id}/deliveries")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
    // The outbox is fanned out oldest first, so once the cancel reaches the lifecycle webhook the
    // signal's turn has passed too.
    loop {
        let request = next_request(&mut lifecycle_requests).await;
        let body: Value = serde_json::from_slice(&request.body).expect("JSON");
        if body["event"] == "run.cancelled" {
            break;
        }
    }
    let (status, page) = app
        .get(&format!("/webhooks/{lifecycle_id}/deliveries"))
        .await;
    assert_eq!(status, 200, "{page}");
    let mut events: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|delivery| delivery["event"].as_str())
        .collect();
    events.sort_unstable();
    assert_eq!(events, ["run.cancelled", "run.started"], "{page}");
    app.stop().await;
}

on_both_backends!(signals_are_delivered);

/// A webhook deleted while the outbox is fanned out gets no delivery, and the fan-out still
/// takes the outbox rows: it waits for the delete to commit and skips the webhook. (It had read
/// the webhooks before its transaction, so the delivery's insert failed the foreign key and the
/// whole batch rolled back, every round.) PostgreSQL, where the two run at once; SQLite's writes
/// take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_deleted_during_the_fan_out_gets_no_delivery() {
    let Some(app) = support::start(Backend::Postgres).await else {
        return;
    };
    let (url, _requests) = receiver(0).await;
    let (status, webhook) = app
        .post(
            "/webhooks",
            &json!({"url": url, "events": ["run.started"], "secret": "s"}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();
    let database_url = app.app.database_url().to_owned();
    let sql = Database::connect(&database_url).await.expect("connects");
    let deleting = sql.begin().await.expect("begins");
    deleting
        .execute_unprepared(&format!("DELETE FROM webhooks WHERE id = '{webhook_id}'"))
        .await
        .expect("deletes, uncommitted");
    let fan_out_name = "webhook-fan-out-test";
    let fan_out_store = Store::connect(&format!("{database_url}?application_name={fan_out_name}"))
        .await
        .expect("connects");
    Database::connect(&database_url)
        .await
        .expect("connects")
        .execute_unprepared(
            "INSERT INTO webhook_outbox (id, event, run_id, payload, created_at) \
             VALUES ('outbox-1', 'run.started', 'run-1', '{}', now())",
        )
        .await
        .expect("an outbox row");
    let fan_out = tokio::spawn(async move { fan_out_store.dispatch_webhook_outbox(100).await });
    // Until the fan-out waits on the uncommitted delete's lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = sql
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!(
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE application_name = '{fan_out_name}' AND wait_event_type = 'Lock'"
                ),
            ))
            .await
            .expect("pg_stat_activity")
            .and_then(|row| row.try_get::<i64>("", "n").ok())
            .unwrap_or(0);
        if waiting > 0 {
            break;
        }
        assert!(
            !fan_out.is_finished() && tokio::time::Instant::now() < deadline,
            "the fan-out did not wait for the delete"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    deleting.commit().await.expect("the delete commits");
    let taken = fan_out.await.expect("joins").expect("the fan-out succeeds");
    assert_eq!(taken, 1);
    let store = app.store().await;
    let left = store.dispatch_webhook_outbox(100).await.expect("fans out");
    assert_eq!(left, 0, "the outbox row was taken");
    let deliveries = sql
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM webhook_deliveries".to_owned(),
        ))
        .await
        .expect("counts")
        .and_then(|row| row.try_get::<i64>("", "n").ok());
    assert_eq!(deliveries, Some(0));
    app.stop().await;
}

/// Writes an outbox row as a run's change would, from the test's own connection (the service
/// finds it on its next round).
async fn write_outbox_row(sql: &sea_orm::DatabaseConnection, event: &str) {
    use sea_orm::sea_query::{Alias, Query};
    let insert = Query::insert()
        .into_table(Alias::new("webhook_outbox"))
        .columns(["id", "event", "run_id", "payload", "created_at"].map(Alias::new))
        .values_panic([
            uuid::Uuid::new_v4().to_string().into(),
            event.into(),
            "run-1".into(),
            format!("{{\"event\":\"{event}\"}}").into(),
            chrono::Utc::now().into(),
        ])
        .to_owned();
    sql.execute_raw(sql.get_database_backend().build(&insert))
        .await
        .expect("an outbox row");
}

/// A receiver that never answers, with more deliveries due than the worker has slots, holds two
/// of them: another webhook's delivery still goes out at once, not after the first one's
/// attempts time out (it waited behind them before).
async fn a_slow_receiver_does_not_hold_up_other_webhooks(backend: Backend) {
    let options = support::Options {
        webhooks: WebhookOptions {
            timeout: Duration::from_secs(120),
            ..WebhookOptions::default()
        },
        ..Default::default()
    };
    let Some(app) = support::start_with(backend, options).await else {
        return;
    };
    let (slow_url, mut slow_requests) = receiver_answering(|_| None).await;
    let (status, slow) = app
        .post(
            "/webhooks",
            &json!({"url": slow_url, "events": ["run.started"], "secret": "slow"}),
        )
        .await;
    assert_eq!(status, 201, "{slow}");
    let (url, mut requests) = receiver(0).await;
    let (status, webhook) = app
        .post(
            "/webhooks",
            &json!({"url": url, "events": ["run.completed"], "secret": "fast"}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let sql = Database::connect(app.app.database_url())
        .await
        .expect("connects");
    for _ in 0..20 {
        write_outbox_row(&sql, "run.started").await;
    }
    next_request(&mut slow_requests).await;
    write_outbox_row(&sql, "run.completed").await;
    let request = next_request(&mut requests).await;
    let body: Value = serde_json::from_slice(&request.body).expect("JSON");
    assert_eq!(body["event"], "run.completed", "{body}");
    let mut slow_seen = 1;
    while slow_requests.try_recv().is_ok() {
        slow_seen += 1;
    }
    assert!(
        slow_seen <= 2,
        "{slow_seen} attempts of one webhook at once"
    );
    app.stop().await;
}

on_both_backends!(a_slow_receiver_does_not_hold_up_other_webhooks);
