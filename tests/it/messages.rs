//! Agents that speak HTTP: a run carried to a finalized decision by messages posted to the
//! control plane, each sent with the agent's own runtime credentials.

use macp_control_plane::api::proto;
use serde_json::{Value, json};

use crate::requests;
use crate::support::{self, Backend};

fn decision_without_kickoff() -> Value {
    let mut request = requests::scripted_decision();
    request["kickoff"] = json!([]);
    request
}

async fn agents_over_http_finalize_a_decision(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let run_id = app.start_run(&decision_without_kickoff()).await;
    app.wait_for(&run_id, |state| state.run.status == "running")
        .await;
    let post = |path: &'static str, body: Value| {
        let app = &app;
        let run_id = run_id.clone();
        async move { app.post(&format!("/runs/{run_id}/{path}"), &body).await }
    };

    let (status, receipt) = post(
        "messages",
        json!({"from": "fraud-agent", "to": ["risk-agent"], "messageType": "Proposal",
               "payload": {"proposal_id": "p1", "option": "step_up", "rationale": "new device"}}),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["ack"]["ok"], true);
    assert_eq!(receipt["ack"]["sessionState"], "SESSION_STATE_OPEN");
    let proposal_id = receipt["messageId"].as_str().expect("messageId").to_owned();

    // Refusals: an outsider, a runtime refusal (only the initiator may commit), bad input.
    let (status, body) = post(
        "messages",
        json!({"from": "mallory", "messageType": "Vote", "payload": {"proposal_id": "p1", "vote": "APPROVE"}}),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (403, json!("NOT_A_PARTICIPANT")),
        "{body}"
    );
    let (status, body) = post(
        "messages",
        json!({"from": "risk-agent", "messageType": "Commitment", "payloadEnvelope": {"encoding": "proto", "proto": {"typeName": "macp.v1.CommitmentPayload", "value": {"commitment_id": "c0", "action": "decision.selected", "authority_scope": "x", "reason": "y", "mode_version": "1.0.0", "configuration_version": "config.default", "outcome_positive": true}}}}),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (403, json!("FORBIDDEN")),
        "{body}"
    );
    assert_eq!(body["details"]["runtimeCode"], "FORBIDDEN");
    let (status, body) = post("messages", json!({"from": "risk-agent"})).await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (400, json!("VALIDATION_ERROR")),
        "{body}"
    );

    let (status, _) = post(
        "signal",
        json!({"from": "risk-agent", "signalType": "suspicious_device", "confidence": 0.7, "severity": "high", "data": {"device": "new"}}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        "context",
        json!({"from": "coordinator", "context": {"transactionAmount": 2400}}),
    )
    .await;
    assert_eq!(status, 201);

    // The rest of the session over gRPC and REST alike.
    let mut grpc = app.grpc().await;
    let vote = |from: &str| {
        serde_json::from_value::<pbjson_types::Struct>(
            json!({"proposal_id": "p1", "vote": "APPROVE", "reason": format!("{from} agrees")}),
        )
        .expect("struct")
    };
    for from in ["fraud-agent", "risk-agent"] {
        let reply = grpc
            .send_run_message(proto::SendRunMessageRequest {
                run_id: run_id.clone(),
                from: from.into(),
                message_type: "Vote".into(),
                payload: Some(vote(from)),
                ..Default::default()
            })
            .await
            .expect("vote")
            .into_inner();
        assert!(reply.ack.expect("ack").ok);
    }
    let (status, _) = post(
        "messages",
        json!({"from": "growth-agent", "messageType": "Vote", "payload": {"proposal_id": "p1", "vote": "APPROVE"}}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = post(
        "messages",
        json!({"from": "coordinator", "messageType": "Commitment", "payloadEnvelope": {"encoding": "proto", "proto": {"typeName": "macp.v1.CommitmentPayload", "value": {"commitmentId": "c1", "action": "decision.selected", "authorityScope": "fraud", "reason": "all approve", "modeVersion": "1.0.0", "configurationVersion": "config.default", "outcomePositive": true}}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ack"]["sessionState"], "SESSION_STATE_RESOLVED");

    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed");
    let decision = state.decision.current.expect("decision");
    assert!(decision.finalized);
    assert_eq!(decision.action, "decision.selected");
    assert_eq!(decision.proposals.len(), 3);
    assert!(
        state
            .signals
            .signals
            .iter()
            .any(|signal| signal.name == "suspicious_device"
                && signal.severity.as_deref() == Some("high"))
    );
    assert_eq!(state.run.context, Some(json!({"transactionAmount": 2400})));

    let (status, messages) = app.get(&format!("/runs/{run_id}/messages")).await;
    assert_eq!(status, 200);
    let messages = messages.as_array().expect("list");
    assert!(
        messages
            .iter()
            .any(|m| m["messageId"] == proposal_id.as_str() && m["status"] == "accepted")
    );
    assert!(
        messages
            .iter()
            .any(|m| m["status"] == "rejected" && m["error"]["code"] == "FORBIDDEN")
    );

    // A finished run takes no messages; an unknown run is not found.
    let (status, body) = post(
        "messages",
        json!({"from": "fraud-agent", "messageType": "Vote", "payload": {"proposal_id": "p1", "vote": "APPROVE"}}),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (409, json!("RUN_NOT_ACTIVE")),
        "{body}"
    );
    let (status, body) = app
        .post(
            &format!("/runs/{}/messages", uuid::Uuid::new_v4()),
            &json!({"from": "fraud-agent", "messageType": "Vote"}),
        )
        .await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (404, json!("RUN_NOT_FOUND")),
        "{body}"
    );
    app.stop().await;
}
crate::on_both_backends!(agents_over_http_finalize_a_decision);
