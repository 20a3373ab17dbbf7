//! The launch preview the UI console reads from `POST /launch/compile` (runDescriptor,
//! sessionId, mode, scenarioMeta, initiator) beside the unchanged ExecutionRequest, and the
//! console's next steps: the descriptor, with its launch options (tags, actor, run label),
//! validated and started, on SQLite and PostgreSQL.

use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{self, Backend};

const FRAUD: &str = "fraud/high-value-new-device@1.0.0";

async fn compile(app: &support::TestApp, request: &Value) -> Value {
    let (status, compiled) = app.post("/launch/compile", request).await;
    assert_eq!(status, 201, "{compiled}");
    compiled
}

async fn the_console_previews_validates_and_starts(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let request =
        json!({"scenarioRef": FRAUD, "templateId": "majority-vote", "mode": "live", "inputs": {}});
    let compiled = compile(&app, &request).await;
    let execution_request = &compiled["executionRequest"];
    let descriptor = &compiled["runDescriptor"];
    let session_id = compiled["sessionId"].as_str().expect("sessionId");
    assert!(uuid::Uuid::parse_str(session_id).is_ok(), "{session_id}");

    // The descriptor is the request without kickoff, naming the session.
    assert!(execution_request["kickoff"].is_array());
    assert!(descriptor.get("kickoff").is_none(), "{descriptor}");
    assert_eq!(descriptor["session"]["sessionId"], session_id);
    assert_eq!(descriptor["mode"], "live");
    assert_eq!(compiled["mode"], "live");
    assert_eq!(descriptor["runtime"], execution_request["runtime"]);
    assert_eq!(descriptor["execution"], execution_request["execution"]);
    let session = &execution_request["session"];
    for key in [
        "modeName",
        "modeVersion",
        "configurationVersion",
        "policyVersion",
        "ttlMs",
        "metadata",
    ] {
        assert_eq!(descriptor["session"][key], session[key], "{key}");
    }
    let ids: Vec<&Value> = session["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|participant| &participant["id"])
        .collect();
    let descriptor_ids: Vec<&Value> = descriptor["session"]["participants"]
        .as_array()
        .expect("descriptor participants")
        .iter()
        .map(|participant| {
            assert_eq!(
                participant.as_object().map(|p| p.len()),
                Some(1),
                "{participant}"
            );
            &participant["id"]
        })
        .collect();
    assert_eq!(descriptor_ids, ids);

    // What the console's hosting flow reads.
    assert_eq!(
        compiled["scenarioMeta"]["policyHints"],
        session["policyHints"]
    );
    assert_eq!(
        compiled["scenarioMeta"]["sessionContext"],
        session["context"]
    );
    assert_eq!(
        compiled["scenarioMeta"]["initiatorParticipantId"],
        "risk-agent"
    );
    let initiator = &compiled["initiator"];
    assert_eq!(initiator["participantId"], "risk-agent");
    assert_eq!(initiator["sessionStart"]["participants"], json!(ids));
    assert_eq!(
        initiator["sessionStart"]["policyVersion"],
        "policy.fraud.majority"
    );
    assert_eq!(initiator["sessionStart"]["context"], session["context"]);
    let first = &execution_request["kickoff"][0];
    assert_eq!(initiator["kickoff"]["messageType"], first["messageType"]);
    assert_eq!(
        initiator["kickoff"]["payloadType"],
        first["payloadEnvelope"]["proto"]["typeName"]
    );
    assert_eq!(
        initiator["kickoff"]["payload"],
        first["payloadEnvelope"]["proto"]["value"]
    );
    // The rest of the answer is what it was.
    assert!(compiled["display"].is_object() && compiled["participantBindings"].is_array());

    // A new session per compile.
    let again = compile(&app, &request).await;
    assert_ne!(again["sessionId"], compiled["sessionId"]);

    // The console's launch options, as its launch page sets them.
    let mut descriptor = descriptor.clone();
    descriptor["execution"]["tags"] = json!(["ui", "demo"]);
    descriptor["execution"]["requester"] = json!({"actorId": "ana", "actorType": "user"});
    descriptor["session"]["metadata"]["runLabel"] = json!("Ana's check");
    let (status, validation) = app.post("/runs/validate", &descriptor).await;
    assert_eq!(status, 200, "{validation}");
    assert_eq!(validation["valid"], true, "{validation}");
    assert_eq!(validation["errors"], json!([]));

    // Started, the run takes the session's id and carries the options.
    let (status, started) = app.post("/runs", &descriptor).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["runId"], session_id);
    let (status, run) = app.get(&format!("/runs/{session_id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["runtimeSessionId"], session_id);
    let tags = run["tags"].as_array().expect("tags");
    assert!(
        tags.contains(&json!("ui")) && tags.contains(&json!("demo")),
        "{run}"
    );
    assert_eq!(
        run["metadata"]["requester"],
        json!({"actorId": "ana", "actorType": "user"})
    );
    assert_eq!(
        run["metadata"]["executionRequest"]["session"]["metadata"]["runLabel"],
        "Ana's check"
    );
    assert_eq!(run["metadata"]["scenarioRef"], FRAUD);

    // The session is the run's: a second start of the same descriptor is refused.
    let (status, refused) = app.post("/runs", &descriptor).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["errorCode"], "SESSION_ALREADY_EXISTS");
    let (status, cancelled) = app
        .post(&format!("/runs/{session_id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    app.stop().await;
}
on_both_backends!(the_console_previews_validates_and_starts);

/// Compile errors are what they were: the preview adds nothing to a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_compiles_have_no_preview() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let (status, body) = app
        .post(
            "/launch/compile",
            &json!({"scenarioRef": FRAUD, "mode": "fast"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorCode"], "VALIDATION_ERROR");
    assert!(body.get("runDescriptor").is_none() && body.get("sessionId").is_none());
    app.stop().await;
}
