//! ExecutionRequests used by the tests: the seed's example and fully scripted sessions of each
//! mode whose kickoff carries the session to its terminal state on the real runtime.

use serde_json::{Value, json};

pub fn seed_example() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/seed-decision.json"
    ))
    .expect("examples/seed-decision.json");
    let mut request: Value = serde_json::from_str(&text).expect("seed example is JSON");
    // A fresh key per test, so tests never share a run.
    request["execution"]["idempotencyKey"] = json!(uuid::Uuid::new_v4().to_string());
    request
}

fn proto(type_name: &str, value: Value) -> Value {
    json!({"encoding": "proto", "proto": {"typeName": type_name, "value": value}})
}

fn message(from: &str, to: &[&str], message_type: &str, payload: Value) -> Value {
    json!({"from": from, "to": to, "kind": "request", "messageType": message_type, "payloadEnvelope": payload})
}

pub fn commitment(from: &str, id: &str, action: &str, positive: bool) -> Value {
    message(
        from,
        &[],
        "Commitment",
        proto(
            "macp.v1.CommitmentPayload",
            json!({
                "commitment_id": id,
                "action": action,
                "authority_scope": "tests",
                "reason": format!("scripted {action}"),
                "mode_version": "1.0.0",
                "configuration_version": "config.default",
                "policy_version": "",
                "outcome_positive": positive,
            }),
        ),
    )
}

pub fn request(
    mode: &str,
    initiator: &str,
    participants: &[(&str, &str)],
    kickoff: Vec<Value>,
) -> Value {
    json!({
        "mode": "live",
        "runtime": {"kind": "rust", "version": "v1"},
        "session": {
            "modeName": mode,
            "modeVersion": "1.0.0",
            "configurationVersion": "config.default",
            "ttlMs": 120000,
            "initiatorParticipantId": initiator,
            "participants": participants.iter().map(|(id, role)| json!({"id": id, "role": role})).collect::<Vec<_>>(),
            "context": {"case": "scripted"},
            "metadata": {"intent": format!("scripted {mode}")},
            "commitments": [{"id": "c1", "title": "Outcome recorded", "requiredRoles": ["coordinator"]}],
        },
        "kickoff": kickoff,
        "execution": {"tags": ["test"], "requester": {"actorId": initiator, "actorType": "service"}},
    })
}

/// Decision mode, carried to a finalized decision: a participant proposes, two evaluate, all
/// three vote, the initiator commits.
pub fn scripted_decision() -> Value {
    let decision = |name: &str| format!("macp.modes.decision.v1.{name}");
    let all = ["fraud-agent", "risk-agent", "growth-agent"];
    let vote = |from: &str| {
        message(
            from,
            &["coordinator"],
            "Vote",
            proto(
                &decision("VotePayload"),
                json!({"proposal_id": "p1", "vote": "APPROVE", "reason": format!("{from} approves")}),
            ),
        )
    };
    request(
        "macp.mode.decision.v1",
        "coordinator",
        &[
            ("fraud-agent", "fraud"),
            ("risk-agent", "risk"),
            ("growth-agent", "growth"),
        ],
        vec![
            message(
                "fraud-agent",
                &all[1..],
                "Proposal",
                proto(
                    &decision("ProposalPayload"),
                    json!({"proposal_id": "p1", "option": "step_up_verification", "rationale": "new device + high value"}),
                ),
            ),
            message(
                "risk-agent",
                &["coordinator"],
                "Evaluation",
                proto(
                    &decision("EvaluationPayload"),
                    json!({"proposal_id": "p1", "recommendation": "APPROVE", "confidence": 0.9, "reason": "risk acceptable"}),
                ),
            ),
            message(
                "growth-agent",
                &["coordinator"],
                "Evaluation",
                proto(
                    &decision("EvaluationPayload"),
                    json!({"proposal_id": "p1", "recommendation": "REVIEW", "confidence": 0.6, "reason": "friction"}),
                ),
            ),
            vote("fraud-agent"),
            vote("risk-agent"),
            vote("growth-agent"),
            commitment("coordinator", "c1", "decision.selected", true),
        ],
    )
}

pub fn scripted_proposal() -> Value {
    let proposal = |name: &str| format!("macp.modes.proposal.v1.{name}");
    request(
        "macp.mode.proposal.v1",
        "buyer",
        &[("seller", "seller"), ("broker", "broker")],
        vec![
            message(
                "seller",
                &["broker"],
                "Proposal",
                proto(
                    &proposal("ProposalPayload"),
                    json!({"proposal_id": "offer-1", "title": "Offer", "summary": "100 units at 9.50"}),
                ),
            ),
            message(
                "seller",
                &[],
                "Accept",
                proto(
                    &proposal("AcceptPayload"),
                    json!({"proposal_id": "offer-1", "reason": "my offer"}),
                ),
            ),
            message(
                "broker",
                &[],
                "Accept",
                proto(
                    &proposal("AcceptPayload"),
                    json!({"proposal_id": "offer-1", "reason": "fair"}),
                ),
            ),
            commitment("buyer", "c1", "proposal.accepted", true),
        ],
    )
}

pub fn scripted_task() -> Value {
    let task = |name: &str| format!("macp.modes.task.v1.{name}");
    request(
        "macp.mode.task.v1",
        "planner",
        &[("worker", "worker")],
        vec![
            message(
                "planner",
                &["worker"],
                "TaskRequest",
                proto(
                    &task("TaskRequestPayload"),
                    json!({"task_id": "t1", "title": "Summarize", "instructions": "summarize the case", "requested_assignee": "worker"}),
                ),
            ),
            message(
                "worker",
                &["planner"],
                "TaskAccept",
                proto(
                    &task("TaskAcceptPayload"),
                    json!({"task_id": "t1", "assignee": "worker"}),
                ),
            ),
            message(
                "worker",
                &["planner"],
                "TaskUpdate",
                proto(
                    &task("TaskUpdatePayload"),
                    json!({"task_id": "t1", "status": "working", "progress": 0.5, "message": "half way"}),
                ),
            ),
            message(
                "worker",
                &["planner"],
                "TaskComplete",
                proto(
                    &task("TaskCompletePayload"),
                    json!({"task_id": "t1", "assignee": "worker", "summary": "done"}),
                ),
            ),
            commitment("planner", "c1", "task.completed", true),
        ],
    )
}

pub fn scripted_handoff() -> Value {
    let handoff = |name: &str| format!("macp.modes.handoff.v1.{name}");
    request(
        "macp.mode.handoff.v1",
        "owner",
        &[("owner", "owner"), ("target", "target")],
        vec![
            message(
                "owner",
                &["target"],
                "HandoffOffer",
                proto(
                    &handoff("HandoffOfferPayload"),
                    json!({"handoff_id": "h1", "target_participant": "target", "scope": "case-42", "reason": "shift change"}),
                ),
            ),
            message(
                "target",
                &["owner"],
                "HandoffAccept",
                proto(
                    &handoff("HandoffAcceptPayload"),
                    json!({"handoff_id": "h1", "accepted_by": "target", "reason": "on it"}),
                ),
            ),
            commitment("owner", "c1", "handoff.accepted", true),
        ],
    )
}

pub fn scripted_quorum() -> Value {
    let quorum = |name: &str| format!("macp.modes.quorum.v1.{name}");
    request(
        "macp.mode.quorum.v1",
        "chair",
        &[("a", "voter"), ("b", "voter"), ("c", "voter")],
        vec![
            message(
                "chair",
                &["a", "b", "c"],
                "ApprovalRequest",
                proto(
                    &quorum("ApprovalRequestPayload"),
                    json!({"request_id": "r1", "action": "deploy", "summary": "ship it", "required_approvals": 2}),
                ),
            ),
            message(
                "a",
                &["chair"],
                "Approve",
                proto(
                    &quorum("ApprovePayload"),
                    json!({"request_id": "r1", "reason": "tests pass"}),
                ),
            ),
            message(
                "b",
                &["chair"],
                "Approve",
                proto(
                    &quorum("ApprovePayload"),
                    json!({"request_id": "r1", "reason": "reviewed"}),
                ),
            ),
            commitment("chair", "c1", "quorum.approved", true),
        ],
    )
}

pub fn scripted_multi_round() -> Value {
    let contribute = |from: &str| {
        message(
            from,
            &[],
            "Contribute",
            proto(
                "macp.modes.multi_round.v1.ContributePayload",
                json!({"value": "blue"}),
            ),
        )
    };
    request(
        "ext.multi_round.v1",
        "host",
        &[("a", "member"), ("b", "member")],
        vec![
            contribute("a"),
            contribute("b"),
            commitment("host", "c1", "round.completed", true),
        ],
    )
}
