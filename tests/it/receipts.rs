//! Decision receipts: an embedded runtime signing with a key generated here (in a temp dir)
//! gives each resolved run one `decision.receipt`, served by `GET /runs/{id}/receipt` and
//! `GetRunReceipt` alike, that verifies against the runtime's published keys; a tampered one
//! does not (library check and `runs receipt --verify`). A runtime without a key: no event,
//! 404 RECEIPT_NOT_FOUND.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use macp_control_plane::api::proto;
use macp_control_plane::app::RuntimeTarget;
use macp_control_plane::runs::receipt::{check, verified};
use macp_control_plane::runtime::embedded::{EmbeddedOptions, ReceiptSigning};
use macp_runtime::macp_core::receipt::ReceiptSigner;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::cli::cli;
use crate::on_both_backends;
use crate::parity::{assert_same, json};
use crate::requests;
use crate::support::{self, Backend, Options, TestApp};

const KID: &str = "receipt-test-key";
const RUNTIME_ID: &str = "cp-receipt-test";

/// A fresh Ed25519 key, written as a private OKP JWK (a format the runtime loads) into `dir`;
/// returns its path and seed.
fn signing_key(dir: &tempfile::TempDir) -> (std::path::PathBuf, [u8; 32]) {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "d": URL_SAFE_NO_PAD.encode(seed), "kid": KID});
    let path = dir.path().join("receipt-key.jwk");
    std::fs::write(&path, jwk.to_string()).expect("writes the key");
    (path, seed)
}

pub(crate) async fn signing_app(
    backend: Backend,
    dir: &tempfile::TempDir,
) -> Option<(TestApp, [u8; 32])> {
    let (key_path, seed) = signing_key(dir);
    let options = Options {
        runtime: RuntimeTarget::Embedded(EmbeddedOptions {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            receipts: ReceiptSigning {
                key_path: Some(key_path),
                kid: None,
                runtime_id: Some(RUNTIME_ID.to_owned()),
            },
            ..EmbeddedOptions::default()
        }),
        ..Options::default()
    };
    Some((support::start_with(backend, options).await?, seed))
}

async fn completed_run(app: &TestApp) -> String {
    let run_id = app.start_run(&requests::scripted_decision()).await;
    assert_eq!(app.wait_terminal(&run_id).await.run.status, "completed");
    run_id
}

async fn a_signed_receipt_is_recorded_and_verifies(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((app, seed)) = signing_app(backend, &dir).await else {
        return;
    };
    let run_id = completed_run(&app).await;

    // One receipt, recorded before the terminal event.
    let events = app.events(&run_id).await;
    let receipts: Vec<&Value> = events
        .iter()
        .filter(|event| event["type"] == "decision.receipt")
        .collect();
    assert_eq!(receipts.len(), 1, "{events:?}");
    assert_eq!(events.last().expect("events")["type"], "run.completed");

    let (status, receipt) = app.get(&format!("/runs/{run_id}/receipt")).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["runId"], run_id.as_str());
    assert_eq!(receipt["seq"], receipts[0]["seq"]);
    assert_eq!(receipt["keyId"], KID);
    assert_eq!(receipt["issuer"], format!("runtime:{RUNTIME_ID}"));
    assert_eq!(receipt["algorithm"], "EdDSA");
    assert_eq!(receipt["receiptFormat"], "macp-receipt/1");
    let session = app.get(&format!("/runs/{run_id}")).await.1;
    assert_eq!(receipt["sessionId"], session["runtimeSessionId"]);
    let document = receipt["receiptJson"].as_str().expect("the document");
    let parsed: Value = serde_json::from_str(document).expect("JSON");
    assert_eq!(parsed["commitment_hash"], receipt["commitmentHash"]);
    assert!(
        document.contains(receipt["signature"].as_str().expect("signature")),
        "{receipt}"
    );

    // The runtime publishes the public half of the key it was given, under its id.
    let (status, keys) = app.get("/runtime/receipt-keys").await;
    assert_eq!(status, 200, "{keys}");
    let ours = ReceiptSigner::from_seed(&seed, KID)
        .expect("a signer")
        .public_jwk();
    assert_eq!(keys["jwks"]["keys"], json!([ours]), "{keys}");

    let jwks = &keys["jwks"];
    assert!(verified(&check(document, jwks).expect("checked")));
    let tampered = document.replace(RUNTIME_ID, "someone-else");
    assert_ne!(tampered, document);
    assert!(!verified(&check(&tampered, jwks).expect("checked")));

    // gRPC answers the same.
    let mut grpc = app.grpc().await;
    let by_grpc = grpc
        .get_run_receipt(proto::GetRunReceiptRequest {
            run_id: run_id.clone(),
        })
        .await
        .expect("GetRunReceipt")
        .into_inner();
    assert_same("GetRunReceipt", &json(&by_grpc), &receipt);
    let keys_by_grpc = grpc
        .get_runtime_receipt_keys(proto::GetRuntimeReceiptKeysRequest {})
        .await
        .expect("GetRuntimeReceiptKeys")
        .into_inner();
    assert_same("GetRuntimeReceiptKeys", &json(&keys_by_grpc), &keys);
}
on_both_backends!(a_signed_receipt_is_recorded_and_verifies);

/// Rewrites the stored receipt document, as someone with write access to the database could.
async fn tamper(app: &TestApp, run_id: &str, change: impl Fn(&str) -> String) {
    let db = Database::connect(app.app.database_url())
        .await
        .expect("connects");
    let receipt = app.get(&format!("/runs/{run_id}/receipt")).await.1;
    let mut data = receipt.clone();
    let map = data.as_object_mut().expect("an object");
    map.remove("runId");
    map.remove("seq");
    let document = receipt["receiptJson"].as_str().expect("the document");
    map.insert("receiptJson".to_owned(), json!(change(document)));
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE run_events_canonical SET data = $1 WHERE run_id = $2 AND seq = $3",
            [
                data.into(),
                run_id.into(),
                receipt["seq"].as_i64().expect("seq").into(),
            ],
        ))
        .await
        .expect("updates");
    assert_eq!(done.rows_affected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_verifies_a_receipt_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((app, _)) = signing_app(Backend::Sqlite, &dir).await else {
        return;
    };
    let run_id = completed_run(&app).await;

    let shown = cli(&app, &["receipt", &run_id]).await;
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    assert!(shown.stdout.contains(KID), "{}", shown.stdout);

    let checked = cli(&app, &["receipt", &run_id, "--verify"]).await;
    assert_eq!(
        checked.code,
        Some(0),
        "{}{}",
        checked.stdout,
        checked.stderr
    );
    assert!(
        checked.stdout.contains(&format!(
            "verified: signed by key {KID} of runtime:{RUNTIME_ID}"
        )),
        "{}",
        checked.stdout
    );
    let as_json = cli(&app, &["receipt", &run_id, "--verify", "--json"]).await;
    assert_eq!(as_json.code, Some(0), "{}", as_json.stderr);
    let as_json = as_json.json();
    assert_eq!(as_json["verified"], true);
    assert_eq!(as_json["verification"]["verdict"], "attested");
    assert_eq!(as_json["receipt"]["keyId"], KID);

    // Another issuer under the same signature: the body no longer matches it.
    tamper(&app, &run_id, |document| {
        document.replace(RUNTIME_ID, "someone-else")
    })
    .await;
    let refused = cli(&app, &["receipt", &run_id, "--verify"]).await;
    assert_eq!(
        refused.code,
        Some(1),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert!(
        refused
            .stdout
            .contains("NOT VERIFIED: the signature does not match the receipt"),
        "{}",
        refused.stdout
    );

    // Another outcome: the commitment no longer has the recorded hash.
    tamper(&app, &run_id, |document| {
        let mut receipt: Value = serde_json::from_str(document).expect("JSON");
        receipt["commitment"]["action"] = json!("something-else");
        receipt.to_string()
    })
    .await;
    let refused = cli(&app, &["receipt", &run_id, "--verify", "--json"]).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    let refused = refused.json();
    assert_eq!(refused["verified"], false);
    assert_eq!(refused["verification"]["integrity"], "mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_without_a_key_records_no_receipt() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let run_id = completed_run(&app).await;
    assert!(
        !app.event_types(&run_id)
            .await
            .iter()
            .any(|kind| kind == "decision.receipt")
    );
    let (status, refusal) = app.get(&format!("/runs/{run_id}/receipt")).await;
    assert_eq!(status, 404, "{refusal}");
    assert_eq!(refusal["errorCode"], "RECEIPT_NOT_FOUND");
    let refused = app
        .grpc()
        .await
        .get_run_receipt(proto::GetRunReceiptRequest {
            run_id: run_id.clone(),
        })
        .await
        .expect_err("no receipt");
    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert_eq!(
        refused
            .metadata()
            .get("x-error-code")
            .and_then(|code| code.to_str().ok()),
        Some("RECEIPT_NOT_FOUND")
    );

    let unknown = uuid::Uuid::new_v4();
    let (status, refusal) = app.get(&format!("/runs/{unknown}/receipt")).await;
    assert_eq!(status, 404, "{refusal}");
    assert_eq!(refusal["errorCode"], "RUN_NOT_FOUND");

    let (status, keys) = app.get("/runtime/receipt-keys").await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["jwks"]["keys"], json!([]));

    let refused = cli(&app, &["receipt", &run_id, "--verify"]).await;
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stderr.contains("RECEIPT_NOT_FOUND"),
        "{}",
        refused.stderr
    );
}
