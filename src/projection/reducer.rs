//! The pure reducer: `(state, event) → state`. Deterministic, and monotonic for terminal facts: a
//! terminal run status or a finalized decision never regresses when late or replayed events
//! arrive, so folding the stored events always rebuilds exactly the stored projection.

use serde_json::Value;

use super::state::*;
use crate::domain::commitment::CommitmentSpec;
use crate::domain::signals::CONTEXT_SIGNAL_TYPE;
use crate::domain::status::RunStatus;
use crate::events::canonical::{CanonicalEvent, types};
use crate::time;

/// Applies one event. Events are applied in `seq` order; an event at or below the projection's
/// `latestSeq` was already applied and changes nothing (replays are idempotent).
pub fn apply(state: &mut RunState, event: &CanonicalEvent) {
    if event.seq <= state.timeline.latest_seq {
        return;
    }
    let ts = time::format(&event.ts);
    record_timeline(state, event, &ts);
    let data = &event.data;
    match event.event_type.as_str() {
        types::RUN_CREATED => {
            set_status(state, RunStatus::Queued);
            merge_run_fields(state, data);
            if let Some(prompt) = str_at(data, "decisionPrompt") {
                current_decision(state).prompt = Some(prompt.to_owned());
            }
        }
        types::RUN_STARTED => {
            set_status(state, RunStatus::Starting);
            merge_run_fields(state, data);
        }
        types::RUN_COMPLETED | types::RUN_FAILED | types::RUN_CANCELLED => {
            merge_run_fields(state, data);
            if let Some(status) = str_at(data, "status").and_then(RunStatus::parse) {
                finish(state, status, &ts);
            }
        }
        types::RUN_SUSPENDED | types::RUN_RESUMED => {
            merge_run_fields(state, data);
            if let Some(status) = str_at(data, "status").and_then(RunStatus::parse) {
                set_status(state, status);
            }
        }
        types::SESSION_BOUND => apply_session_bound(state, data, &ts),
        types::SESSION_STATE_CHANGED => apply_session_state(state, data, &ts),
        types::PARTICIPANT_SEEN => {
            if let Some(id) = str_at(data, "participantId") {
                ensure_participant(state, id, str_at(data, "role"));
            }
        }
        types::MESSAGE_SENT => {
            state.outbound_messages.total += 1;
            state.outbound_messages.accepted += 1;
            apply_message(state, data, &ts, "message.sent");
        }
        types::MESSAGE_SEND_FAILED => {
            state.outbound_messages.total += 1;
            state.outbound_messages.rejected += 1;
        }
        types::MESSAGE_RECEIVED => {
            let kind = str_at(data, "messageType")
                .unwrap_or("message")
                .to_ascii_lowercase();
            apply_message(state, data, &ts, &kind);
        }
        types::SIGNAL_EMITTED => apply_signal(state, event, &ts),
        types::SIGNAL_ACKNOWLEDGED => apply_signal_ack(state, event, &ts),
        types::PROPOSAL_CREATED | types::PROPOSAL_UPDATED => apply_contribution(state, data, &ts),
        types::DECISION_FINALIZED => apply_finalized(state, data, &ts),
        types::PROGRESS_REPORTED => apply_progress(state, event, &ts),
        types::ARTIFACT_CREATED => {
            if let Some(subject) = &event.subject
                && !state.trace.linked_artifacts.contains(&subject.id)
            {
                state.trace.linked_artifacts.push(subject.id.clone());
            }
        }
        types::POLICY_RESOLVED => {
            if let Some(version) = str_at(data, "policyVersion") {
                state.policy.policy_version = version.to_owned();
            }
            if let Some(description) = str_at(data, "policyDescription") {
                state.policy.policy_description = Some(description.to_owned());
            }
            state.policy.resolved_at = Some(ts.clone());
        }
        types::POLICY_COMMITMENT_EVALUATED => apply_commitment_evaluation(state, data, &ts),
        types::LLM_CALL_COMPLETED => apply_llm_call(state, event, &ts),
        // Recorded on the timeline only.
        types::SESSION_STREAM_OPENED
        | types::TOOL_CALLED
        | types::TOOL_COMPLETED
        | types::POLICY_DENIED
        | types::DECISION_RECEIPT => {}
        _ => {}
    }
}

/// Folds events into a fresh projection.
pub fn fold<'a>(run_id: &str, events: impl IntoIterator<Item = &'a CanonicalEvent>) -> RunState {
    let mut state = RunState::empty(run_id);
    for event in events {
        apply(&mut state, event);
    }
    state
}

fn str_at<'a>(data: &'a Value, key: &str) -> Option<&'a str> {
    data.get(key)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

fn payload_str<'a>(data: &'a Value, keys: &[&str]) -> Option<&'a str> {
    let payload = data.get("decodedPayload")?;
    keys.iter()
        .find_map(|key| payload.get(*key).and_then(Value::as_str))
        .filter(|text| !text.is_empty())
}

fn payload_f64(data: &Value, key: &str) -> Option<f64> {
    data.get("decodedPayload")?.get(key)?.as_f64()
}

fn record_timeline(state: &mut RunState, event: &CanonicalEvent, ts: &str) {
    state.timeline.latest_seq = event.seq;
    state.timeline.total_events += 1;
    state.timeline.recent.push(TimelineEntry {
        id: event.id.clone(),
        seq: event.seq,
        ts: ts.to_owned(),
        event_type: event.event_type.clone(),
        subject: event.subject.clone(),
    });
    let overflow = state.timeline.recent.len().saturating_sub(RECENT_EVENTS);
    state.timeline.recent.drain(..overflow);
    if let Some(trace) = &event.trace {
        if let Some(trace_id) = &trace.trace_id {
            state.trace.trace_id = Some(trace_id.clone());
        }
        if let Some(span_id) = &trace.span_id
            && state.trace.last_span_id.as_ref() != Some(span_id)
        {
            state.trace.last_span_id = Some(span_id.clone());
            state.trace.span_count += 1;
        }
    }
}

fn current_status(state: &RunState) -> RunStatus {
    RunStatus::parse(&state.run.status).unwrap_or(RunStatus::Queued)
}

/// Moves the status forward only: never out of a terminal status, never back down the
/// queued → starting → binding_session → running order.
fn set_status(state: &mut RunState, status: RunStatus) {
    let current = current_status(state);
    if current.may_become(status) {
        state.run.status = status.as_str().to_owned();
    }
}

fn merge_run_fields(state: &mut RunState, data: &Value) {
    let run = &mut state.run;
    for (key, slot) in [
        ("runtimeSessionId", &mut run.runtime_session_id),
        ("startedAt", &mut run.started_at),
        ("endedAt", &mut run.ended_at),
        ("traceId", &mut run.trace_id),
        ("modeName", &mut run.mode_name),
    ] {
        if let Some(value) = str_at(data, key) {
            *slot = Some(value.to_owned());
        }
    }
}

fn finish(state: &mut RunState, status: RunStatus, ts: &str) {
    if current_status(state).is_terminal() || !status.is_terminal() {
        return;
    }
    state.run.status = status.as_str().to_owned();
    if state.run.ended_at.is_none() {
        state.run.ended_at = Some(ts.to_owned());
    }
    sweep_participants(state, status);
    if matches!(status, RunStatus::Failed | RunStatus::Cancelled)
        && matches!(
            state.policy.quorum_status.as_deref(),
            None | Some("pending")
        )
        && !state.policy.expected_commitments.is_empty()
    {
        let reached = state
            .policy
            .commitment_evaluations
            .iter()
            .any(|evaluation| evaluation.decision == "allow");
        state.policy.quorum_status = Some(if reached { "reached" } else { "failed" }.to_owned());
    }
}

/// Terminal run: idle participants were skipped, active ones completed; on failure the most
/// recently active one failed.
fn sweep_participants(state: &mut RunState, status: RunStatus) {
    let failed_one = (status == RunStatus::Failed)
        .then(|| {
            state
                .participants
                .iter()
                .filter(|p| p.latest_activity_at.is_some())
                .max_by(|a, b| a.latest_activity_at.cmp(&b.latest_activity_at))
                .map(|p| p.participant_id.clone())
        })
        .flatten();
    for participant in &mut state.participants {
        if matches!(
            participant.status.as_str(),
            "completed" | "failed" | "skipped"
        ) {
            continue;
        }
        participant.status = if Some(&participant.participant_id) == failed_one.as_ref() {
            "failed"
        } else if participant.latest_activity_at.is_some() {
            "completed"
        } else {
            "skipped"
        }
        .to_owned();
    }
    for node in &mut state.graph.nodes {
        if let Some(participant) = state
            .participants
            .iter()
            .find(|p| p.participant_id == node.id)
        {
            node.status = participant.status.clone();
        }
    }
}

fn apply_session_bound(state: &mut RunState, data: &Value, ts: &str) {
    set_status(state, RunStatus::BindingSession);
    let run = &mut state.run;
    if let Some(session_id) = str_at(data, "sessionId") {
        run.runtime_session_id = Some(session_id.to_owned());
    }
    if let Some(initiator) = str_at(data, "initiator") {
        run.initiator = Some(initiator.to_owned());
    }
    if let Some(mode) = str_at(data, "modeName") {
        run.mode_name = Some(mode.to_owned());
    }
    if let Some(context_id) = str_at(data, "contextId") {
        run.context_id = Some(context_id.to_owned());
    }
    if let Some(context) = data.get("context").filter(|context| !context.is_null()) {
        run.context = Some(context.clone());
    }
    if let Some(keys) = data.get("extensionKeys").and_then(Value::as_array) {
        run.extension_keys = keys
            .iter()
            .filter_map(|key| key.as_str().map(str::to_owned))
            .collect();
    }
    if let Some(policy) = str_at(data, "policyVersion") {
        state.policy.policy_version = policy.to_owned();
    }
    if let Some(commitments) = data.get("expectedCommitments")
        && let Ok(commitments) = serde_json::from_value::<Vec<CommitmentSpec>>(commitments.clone())
        && !commitments.is_empty()
    {
        state.policy.expected_commitments = commitments;
        state
            .policy
            .quorum_status
            .get_or_insert_with(|| "pending".to_owned());
    }
    upsert_node(state, "start", "start", "completed");
    let participants: Vec<String> = data
        .get("participants")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for participant in participants {
        upsert_edge(state, "start", &participant, "session.bound", ts);
    }
}

fn apply_session_state(state: &mut RunState, data: &Value, ts: &str) {
    if let Some(session_id) = str_at(data, "sessionId") {
        state.run.runtime_session_id = Some(session_id.to_owned());
    }
    let Some(session_state) = str_at(data, "state") else {
        return;
    };
    if current_status(state).is_terminal() {
        return;
    }
    state.run.session_state = Some(session_state.to_owned());
    match session_state {
        "SESSION_STATE_OPEN" => set_status(state, RunStatus::Running),
        "SESSION_STATE_SUSPENDED" => set_status(state, RunStatus::Suspended),
        "SESSION_STATE_RESOLVED" => finish(state, RunStatus::Completed, ts),
        "SESSION_STATE_EXPIRED" => finish(state, RunStatus::Failed, ts),
        "SESSION_STATE_CANCELLED" => finish(state, RunStatus::Cancelled, ts),
        _ => {}
    }
}

fn ensure_participant(state: &mut RunState, id: &str, role: Option<&str>) {
    match state
        .participants
        .iter_mut()
        .find(|p| p.participant_id == id)
    {
        Some(existing) => {
            if existing.role.is_none() {
                existing.role = role.map(str::to_owned);
            }
        }
        None => {
            state.participants.push(ParticipantState {
                participant_id: id.to_owned(),
                role: role.map(str::to_owned),
                status: "idle".to_owned(),
                latest_activity_at: None,
                latest_summary: None,
            });
            upsert_node(state, id, "participant", "idle");
        }
    }
}

/// Node status only moves up idle < waiting < active < completed < failed.
fn status_rank(status: &str) -> u8 {
    match status {
        "idle" => 0,
        "waiting" => 1,
        "active" => 2,
        "completed" | "skipped" => 3,
        "failed" => 4,
        _ => 0,
    }
}

fn upsert_node(state: &mut RunState, id: &str, kind: &str, status: &str) {
    match state.graph.nodes.iter_mut().find(|node| node.id == id) {
        Some(node) => {
            if status_rank(status) > status_rank(&node.status) {
                node.status = status.to_owned();
            }
        }
        None => state.graph.nodes.push(GraphNode {
            id: id.to_owned(),
            kind: kind.to_owned(),
            status: status.to_owned(),
        }),
    }
}

fn upsert_edge(state: &mut RunState, from: &str, to: &str, kind: &str, ts: &str) {
    let edges = &mut state.graph.edges;
    match edges
        .iter_mut()
        .find(|edge| edge.from == from && edge.to == to && edge.kind == kind)
    {
        Some(edge) => edge.ts = ts.to_owned(),
        None => {
            edges.push(GraphEdge {
                from: from.to_owned(),
                to: to.to_owned(),
                kind: kind.to_owned(),
                ts: ts.to_owned(),
            });
            let overflow = edges.len().saturating_sub(MAX_EDGES);
            edges.drain(..overflow);
        }
    }
}

/// Marks a participant's activity; a participant swept at the end of the run stays as swept.
fn touch(state: &mut RunState, id: &str, status: &str, summary: Option<&str>, ts: &str) {
    let terminal = current_status(state).is_terminal();
    if let Some(participant) = state
        .participants
        .iter_mut()
        .find(|p| p.participant_id == id)
    {
        if terminal {
            return;
        }
        if status == "active" {
            participant.latest_activity_at = Some(ts.to_owned());
            if let Some(summary) = summary {
                participant.latest_summary = Some(summary.to_owned());
            }
            participant.status = "active".to_owned();
        } else if participant.status == "idle" {
            participant.status = status.to_owned();
        }
        let node_status = participant.status.clone();
        if let Some(node) = state.graph.nodes.iter_mut().find(|node| node.id == id) {
            node.status = node_status;
        }
    }
}

fn apply_message(state: &mut RunState, data: &Value, ts: &str, edge_kind: &str) {
    let sender = str_at(data, "sender").unwrap_or_default().to_owned();
    let message_type = str_at(data, "messageType").map(str::to_owned);
    if !sender.is_empty() {
        touch(state, &sender, "active", message_type.as_deref(), ts);
    }
    let recipients: Vec<String> = data
        .get("to")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for recipient in recipients {
        touch(state, &recipient, "waiting", None, ts);
        if !sender.is_empty() {
            upsert_edge(state, &sender, &recipient, edge_kind, ts);
        }
    }
}

fn apply_signal(state: &mut RunState, event: &CanonicalEvent, ts: &str) {
    let data = &event.data;
    let id = event
        .subject
        .as_ref()
        .map(|subject| subject.id.clone())
        .unwrap_or_else(|| event.id.clone());
    if state.signals.signals.iter().any(|signal| signal.id == id) {
        return;
    }
    let name = payload_str(data, &["signalType", "signal_type"])
        .or_else(|| str_at(data, "messageType"))
        .unwrap_or("Signal")
        .to_owned();
    let signal_data = data.get("signalData");
    // A context update travels as a `session.context` signal carrying the new context.
    if name == CONTEXT_SIGNAL_TYPE
        && let Some(context) = signal_data.filter(|value| value.is_object())
    {
        state.run.context = Some(context.clone());
    }
    let severity = signal_data
        .and_then(|value| value.get("severity"))
        .or_else(|| data.get("decodedPayload").and_then(|p| p.get("severity")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    state.signals.signals.push(SignalEntry {
        id,
        name,
        severity,
        source_participant_id: str_at(data, "sender").map(str::to_owned),
        ts: ts.to_owned(),
        confidence: payload_f64(data, "confidence"),
        payload: signal_data.cloned(),
        acknowledged_at: None,
        acknowledged_by: None,
    });
    let overflow = state.signals.signals.len().saturating_sub(MAX_SIGNALS);
    state.signals.signals.drain(..overflow);
}

fn apply_signal_ack(state: &mut RunState, event: &CanonicalEvent, ts: &str) {
    let data = &event.data;
    let target = payload_str(data, &["signalId", "signal_id"])
        .map(str::to_owned)
        .or_else(|| event.subject.as_ref().map(|subject| subject.id.clone()));
    let sender = str_at(data, "sender").map(str::to_owned);
    if let Some(signal) = state
        .signals
        .signals
        .iter_mut()
        .find(|signal| Some(&signal.id) == target.as_ref())
        && signal.acknowledged_at.is_none()
    {
        signal.acknowledged_at = Some(ts.to_owned());
        signal.acknowledged_by = sender;
    }
}

fn current_decision(state: &mut RunState) -> &mut Decision {
    state.decision.current.get_or_insert_with(Decision::default)
}

fn vote_of(message_type: &str, stance: Option<&str>) -> Option<&'static str> {
    let stance = stance.map(str::to_ascii_uppercase);
    match stance.as_deref() {
        Some("APPROVE" | "ACCEPT" | "ALLOW" | "YES") => return Some("allow"),
        Some("REJECT" | "DENY" | "BLOCK" | "NO") => return Some("deny"),
        _ => {}
    }
    match message_type {
        "Accept" | "Approve" | "TaskAccept" | "HandoffAccept" => Some("allow"),
        "Reject" | "TaskReject" | "HandoffDecline" => Some("deny"),
        _ => None,
    }
}

fn apply_contribution(state: &mut RunState, data: &Value, ts: &str) {
    let Some(sender) = str_at(data, "sender").map(str::to_owned) else {
        return;
    };
    let message_type = str_at(data, "messageType").unwrap_or_default().to_owned();
    let stance = payload_str(data, &["vote", "recommendation"]);
    let action = stance
        .or_else(|| payload_str(data, &["action", "option", "revisedAction", "title"]))
        .unwrap_or(&message_type)
        .to_owned();
    let vote = vote_of(&message_type, stance).map(str::to_owned);
    // A Vote rarely states a confidence: the one the participant stated before (its Evaluation's)
    // stands; only a vote with none before it is a full-confidence statement.
    let stated_before = state
        .decision
        .current
        .as_ref()
        .and_then(|decision| {
            decision
                .proposals
                .iter()
                .find(|existing| existing.participant_id == sender)
        })
        .and_then(|existing| existing.confidence);
    let confidence = payload_f64(data, "confidence")
        .or(stated_before)
        .or_else(|| (message_type == "Vote").then_some(1.0));
    let reason = payload_str(data, &["reason", "rationale", "summary"]).map(str::to_owned);
    let proposal_id = payload_str(
        data,
        &[
            "proposalId",
            "proposal_id",
            "requestId",
            "request_id",
            "taskId",
            "handoffId",
        ],
    )
    .map(str::to_owned);
    let contribution = Contribution {
        participant_id: sender.clone(),
        action: action.clone(),
        confidence,
        reasons: reason.into_iter().collect(),
        ts: ts.to_owned(),
        vote,
        message_type: Some(message_type.clone()),
        proposal_id: proposal_id.clone(),
    };
    let is_new_proposal = matches!(
        message_type.as_str(),
        "Proposal" | "CounterProposal" | "ApprovalRequest" | "TaskRequest" | "HandoffOffer"
    );
    let decision = current_decision(state);
    // One contribution per participant: a participant's latest stance replaces the earlier one.
    decision
        .proposals
        .retain(|existing| existing.participant_id != sender);
    decision.proposals.push(contribution);
    let overflow = decision.proposals.len().saturating_sub(MAX_CONTRIBUTIONS);
    decision.proposals.drain(..overflow);
    let aggregate = vote_confidence(&decision.proposals);
    if !decision.finalized {
        if is_new_proposal || decision.action.is_empty() {
            decision.action = action;
            decision.proposal_id = proposal_id;
        }
        if aggregate.is_some() {
            decision.confidence = aggregate;
        }
    }
    recompute_vote_tally(state);
    upsert_node(state, "decision", "decision", "active");
    upsert_edge(
        state,
        &sender,
        "decision",
        &message_type.to_ascii_lowercase(),
        ts,
    );
}

/// Share of vote-bearing contributions that allow.
fn vote_confidence(contributions: &[Contribution]) -> Option<f64> {
    let votes: Vec<&str> = contributions
        .iter()
        .filter_map(|contribution| contribution.vote.as_deref())
        .collect();
    if votes.is_empty() {
        return None;
    }
    let allow = votes.iter().filter(|vote| **vote == "allow").count();
    Some(allow as f64 / votes.len() as f64)
}

fn recompute_vote_tally(state: &mut RunState) {
    let voters = state
        .participants
        .iter()
        .filter(|p| p.role.as_deref() == Some("voter"))
        .count();
    // Without declared voters every participant votes, except an initiator that only joined to
    // start and commit.
    let required = if voters > 0 {
        voters
    } else {
        state
            .participants
            .iter()
            .filter(|p| p.role.as_deref() != Some("initiator"))
            .count()
    } as i64;
    let Some(decision) = &state.decision.current else {
        return;
    };
    let mut tallies: Vec<VoteTally> = Vec::new();
    for contribution in &decision.proposals {
        let (Some(vote), Some(proposal_id)) = (&contribution.vote, &contribution.proposal_id)
        else {
            continue;
        };
        let index = match tallies.iter().position(|t| &t.commitment_id == proposal_id) {
            Some(index) => index,
            None => {
                tallies.push(VoteTally {
                    commitment_id: proposal_id.clone(),
                    allow: 0,
                    deny: 0,
                    threshold: (required + 1) / 2,
                    quorum: Quorum { required, cast: 0 },
                });
                tallies.len() - 1
            }
        };
        let tally = &mut tallies[index];
        if vote == "allow" {
            tally.allow += 1;
        } else {
            tally.deny += 1;
        }
        tally.quorum.cast += 1;
    }
    state.policy.vote_tally = tallies;
}

fn outcome_from_action(action: &str) -> Option<bool> {
    let last = action
        .rsplit(['.', '_', '-', ':', ' '])
        .next()
        .unwrap_or(action)
        .to_ascii_lowercase();
    match last.as_str() {
        "approve" | "approved" | "accept" | "accepted" | "selected" | "completed" => Some(true),
        "reject" | "rejected" | "decline" | "declined" | "failed" => Some(false),
        _ => None,
    }
}

fn apply_finalized(state: &mut RunState, data: &Value, ts: &str) {
    if state
        .decision
        .current
        .as_ref()
        .is_some_and(|decision| decision.finalized)
    {
        return;
    }
    let action = payload_str(data, &["action"])
        .unwrap_or("resolved")
        .to_owned();
    let explicit = data
        .get("decodedPayload")
        .and_then(|payload| {
            payload
                .get("outcomePositive")
                .or_else(|| payload.get("outcome_positive"))
        })
        .and_then(Value::as_bool);
    // proto3 omits `false`: a Commitment whose action names a negative outcome is negative.
    let outcome = explicit.or_else(|| outcome_from_action(&action));
    let reason = payload_str(data, &["reason"])
        .unwrap_or("Commitment observed")
        .to_owned();
    let commitment_id = payload_str(data, &["commitmentId", "commitment_id"]).map(str::to_owned);
    let sender = str_at(data, "sender").map(str::to_owned);
    let supersedes = data
        .get("decodedPayload")
        .and_then(|payload| payload.get("supersedes"))
        .cloned();
    let decision = current_decision(state);
    let aggregate = vote_confidence(&decision.proposals);
    decision.action = action;
    decision.outcome_positive = Some(outcome.map(Value::Bool).unwrap_or(Value::Null));
    decision.confidence = payload_f64(data, "confidence")
        .or(aggregate)
        .or(decision.confidence);
    decision.reasons = vec![reason.clone()];
    decision.finalized = true;
    if decision.proposal_id.is_none() {
        decision.proposal_id = commitment_id.clone();
    }
    decision.resolved_at = Some(ts.to_owned());
    decision.resolved_by = sender.clone();
    decision.supersedes = supersedes;

    let policy = &mut state.policy;
    policy.outcome_positive = outcome;
    policy.resolved_at.get_or_insert_with(|| ts.to_owned());
    if matches!(policy.quorum_status.as_deref(), None | Some("pending")) {
        policy.quorum_status = Some(
            if outcome == Some(false) {
                "failed"
            } else {
                "reached"
            }
            .to_owned(),
        );
    }
    if let Some(commitment_id) = commitment_id {
        policy.commitment_evaluations.push(CommitmentEvaluation {
            commitment_id,
            decision: if outcome == Some(false) {
                "deny"
            } else {
                "allow"
            }
            .to_owned(),
            reasons: vec![reason],
            ts: ts.to_owned(),
        });
        let overflow = policy
            .commitment_evaluations
            .len()
            .saturating_sub(MAX_EVALUATIONS);
        policy.commitment_evaluations.drain(..overflow);
    }
    upsert_node(state, "decision", "decision", "completed");
    upsert_node(state, "outcome", "output", "completed");
    if let Some(sender) = sender {
        touch(state, &sender, "active", Some("Commitment"), ts);
        upsert_edge(state, &sender, "decision", "commits", ts);
    }
    upsert_edge(state, "decision", "outcome", "outcome", ts);
}

fn apply_progress(state: &mut RunState, event: &CanonicalEvent, ts: &str) {
    let data = &event.data;
    let participant = str_at(data, "sender")
        .map(str::to_owned)
        .or_else(|| event.subject.as_ref().map(|subject| subject.id.clone()))
        .unwrap_or_default();
    let entries = &mut state.progress.entries;
    entries.push(ProgressEntry {
        participant_id: participant,
        percentage: data.get("percentage").and_then(Value::as_f64),
        message: str_at(data, "message").map(str::to_owned),
        ts: ts.to_owned(),
    });
    let overflow = entries.len().saturating_sub(MAX_PROGRESS);
    entries.drain(..overflow);
}

fn apply_commitment_evaluation(state: &mut RunState, data: &Value, ts: &str) {
    let commitment_id = payload_str(data, &["commitmentId", "commitment_id"])
        .or_else(|| str_at(data, "commitmentId"))
        .unwrap_or_default()
        .to_owned();
    let decision = payload_str(data, &["decision"])
        .or_else(|| str_at(data, "decision"))
        .unwrap_or("allow")
        .to_ascii_lowercase();
    let reasons = data
        .get("decodedPayload")
        .and_then(|payload| payload.get("reasons"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if decision == "allow" {
        state.policy.quorum_status = Some("reached".to_owned());
    }
    let evaluations = &mut state.policy.commitment_evaluations;
    evaluations.push(CommitmentEvaluation {
        commitment_id,
        decision,
        reasons,
        ts: ts.to_owned(),
    });
    let overflow = evaluations.len().saturating_sub(MAX_EVALUATIONS);
    evaluations.drain(..overflow);
}

fn apply_llm_call(state: &mut RunState, event: &CanonicalEvent, ts: &str) {
    let data = &event.data;
    // Counts are agent-written: negative ones count as none, beyond i64 as the most.
    let number = |key: &str| {
        data.get(key)
            .and_then(|value| value.as_i64().or_else(|| value.as_u64().map(|_| i64::MAX)))
            .unwrap_or(0)
            .max(0)
    };
    let call = LlmCall {
        participant_id: str_at(data, "participantId")
            .map(str::to_owned)
            .or_else(|| event.subject.as_ref().map(|subject| subject.id.clone()))
            .unwrap_or_default(),
        model: str_at(data, "model").map(str::to_owned),
        prompt_tokens: number("promptTokens"),
        completion_tokens: number("completionTokens"),
        total_tokens: number("totalTokens"),
        latency_ms: data.get("latencyMs").and_then(Value::as_f64),
        ts: ts.to_owned(),
        message_id: str_at(data, "messageId").map(str::to_owned),
        estimated_cost_usd: 0.0,
    };
    let call = LlmCall {
        estimated_cost_usd: super::pricing::estimated_cost_usd(
            call.model.as_deref(),
            call.prompt_tokens,
            call.completion_tokens,
        ),
        ..call
    };
    let totals = &mut state.llm.totals;
    totals.call_count += 1;
    totals.prompt_tokens = totals.prompt_tokens.saturating_add(call.prompt_tokens);
    totals.completion_tokens = totals
        .completion_tokens
        .saturating_add(call.completion_tokens);
    totals.total_tokens = totals.total_tokens.saturating_add(call.total_tokens);
    totals.estimated_cost_usd += call.estimated_cost_usd;
    state.llm.calls.push(call);
    let overflow = state.llm.calls.len().saturating_sub(MAX_LLM_CALLS);
    state.llm.calls.drain(..overflow);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::canonical::{EventDraft, Source};

    fn llm_call(seq: i64, data: Value) -> CanonicalEvent {
        let draft = EventDraft::new(
            types::LLM_CALL_COMPLETED,
            time::now(),
            None,
            Source::control_plane("test"),
            data,
        );
        CanonicalEvent::from_draft(draft, "run", seq, None)
    }

    /// Token counts are agent input: huge ones saturate the totals, negative ones count as none.
    #[test]
    fn token_totals_saturate_instead_of_overflowing() {
        let mut state = RunState::empty("run");
        let huge = json!({"promptTokens": u64::MAX, "completionTokens": i64::MAX, "totalTokens": i64::MAX});
        apply(&mut state, &llm_call(1, huge.clone()));
        apply(&mut state, &llm_call(2, huge));
        apply(
            &mut state,
            &llm_call(3, json!({"promptTokens": -5, "totalTokens": -5})),
        );
        let totals = &state.llm.totals;
        assert_eq!(totals.call_count, 3);
        assert_eq!(
            (
                totals.prompt_tokens,
                totals.completion_tokens,
                totals.total_tokens
            ),
            (i64::MAX, i64::MAX, i64::MAX)
        );
        assert!(totals.estimated_cost_usd.is_finite());
    }

    fn contribution(seq: i64, sender: &str, message_type: &str, payload: Value) -> CanonicalEvent {
        let draft = EventDraft::new(
            types::PROPOSAL_UPDATED,
            time::now(),
            None,
            Source::control_plane("test"),
            json!({"sender": sender, "messageType": message_type, "decodedPayload": payload}),
        );
        CanonicalEvent::from_draft(draft, "run", seq, None)
    }

    /// A contributor's confidence is the one it stated (its Evaluation's), not its Vote's
    /// implied 1.0; a vote with nothing stated before it counts as full confidence.
    #[test]
    fn a_vote_keeps_the_evaluation_confidence() {
        let mut state = RunState::empty("run");
        let events = [
            contribution(
                1,
                "fraud-agent",
                "Evaluation",
                json!({"proposalId": "p1", "recommendation": "APPROVE", "confidence": 0.82}),
            ),
            contribution(
                2,
                "fraud-agent",
                "Vote",
                json!({"proposalId": "p1", "vote": "APPROVE"}),
            ),
            contribution(
                3,
                "risk-agent",
                "Vote",
                json!({"proposalId": "p1", "vote": "REJECT"}),
            ),
            contribution(
                4,
                "growth-agent",
                "Evaluation",
                json!({"proposalId": "p1", "recommendation": "APPROVE", "confidence": 0.4}),
            ),
            contribution(
                5,
                "growth-agent",
                "Vote",
                json!({"proposalId": "p1", "vote": "APPROVE", "confidence": 0.6}),
            ),
        ];
        for event in &events {
            apply(&mut state, event);
        }
        let confidences: Vec<(String, Option<f64>)> = state
            .decision
            .current
            .expect("a decision")
            .proposals
            .into_iter()
            .map(|contribution| (contribution.participant_id, contribution.confidence))
            .collect();
        assert_eq!(
            confidences,
            [
                ("fraud-agent".to_owned(), Some(0.82)),
                ("risk-agent".to_owned(), Some(1.0)),
                ("growth-agent".to_owned(), Some(0.6)),
            ]
        );
    }
}
