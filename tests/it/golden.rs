//! Golden files: the canonical events and projection of the scripted decision run, pinned after
//! removing what differs between runs (ids, times, trace ids) and what depends only on how the
//! executor's and the observer's writes interleave (seq numbers, the order of graph entries).

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::support::TestApp;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(name)
}

/// Compares `actual` with the golden file, or rewrites the file when UPDATE_GOLDEN=1.
pub fn assert_golden(name: &str, actual: &Value) {
    let path = golden_path(name);
    let rendered = format!("{}\n", serde_json::to_string_pretty(actual).expect("json"));
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|value| value == "1") {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, rendered).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden {}; run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if rendered != expected {
        let line = rendered
            .lines()
            .zip(expected.lines())
            .position(|(actual, expected)| actual != expected)
            .unwrap_or_else(|| rendered.lines().count().min(expected.lines().count()));
        panic!(
            "golden {} differs from line {} on:\n  actual:   {}\n  expected: {}\n(UPDATE_GOLDEN=1 rewrites it)",
            path.display(),
            line + 1,
            rendered.lines().nth(line).unwrap_or("<end>"),
            expected.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// Replaces volatile values with stable placeholders: UUIDs (numbered by first appearance),
/// RFC 3339 times, 32-hex trace ids and `*UnixMs` numbers.
pub struct Scrubber {
    ids: HashMap<String, String>,
}

impl Scrubber {
    pub fn new() -> Self {
        Scrubber {
            ids: HashMap::new(),
        }
    }

    pub fn scrub(&mut self, value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, inner) in map {
                    let scrubbed = if key.ends_with("UnixMs") && inner.is_number() {
                        Value::String("<unix-ms>".into())
                    } else {
                        self.scrub(inner)
                    };
                    out.insert(key.clone(), scrubbed);
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.scrub(item)).collect())
            }
            Value::String(text) => Value::String(self.scrub_text(text)),
            other => other.clone(),
        }
    }

    fn scrub_text(&mut self, text: &str) -> String {
        if macp_control_plane::time::parse(text).is_some() {
            return "<time>".into();
        }
        if text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            return "<trace-id>".into();
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(position) = find_uuid(rest) {
            out.push_str(&rest[..position]);
            let uuid = &rest[position..position + 36];
            let next = self.ids.len() + 1;
            let label = self
                .ids
                .entry(uuid.to_owned())
                .or_insert_with(|| format!("<id-{next}>"))
                .clone();
            out.push_str(&label);
            rest = &rest[position + 36..];
        }
        out.push_str(rest);
        out
    }
}

fn find_uuid(text: &str) -> Option<usize> {
    (0..text.len().saturating_sub(35)).find(|&start| {
        text.is_char_boundary(start)
            && text.is_char_boundary(start + 36)
            && uuid::Uuid::parse_str(&text[start..start + 36]).is_ok()
    })
}

fn sort_array(value: &mut Value, pointer: &str) {
    if let Some(Value::Array(items)) = value.pointer_mut(pointer) {
        items.sort_by_key(|item| item.to_string());
    }
}

/// The events of each writer (`source.kind/source.name`), in their order, without id and seq:
/// each writer's order is deterministic, how writers interleave is not.
fn events_by_source(events: &[Value], scrubber: &mut Scrubber) -> Value {
    let mut groups: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for event in events {
        let source = format!(
            "{}/{}",
            event["source"]["kind"].as_str().unwrap_or_default(),
            event["source"]["name"].as_str().unwrap_or_default()
        );
        groups.entry(source).or_default().push(event.clone());
    }
    let mut out = Map::new();
    for (source, group) in groups {
        out.insert(source, without_ids(&group, scrubber));
    }
    Value::Object(out)
}

fn without_ids(events: &[Value], scrubber: &mut Scrubber) -> Value {
    Value::Array(
        events
            .iter()
            .map(|event| {
                let kept: Map<String, Value> = event
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(key, _)| *key != "id" && *key != "seq")
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                scrubber.scrub(&Value::Object(kept))
            })
            .collect(),
    )
}

pub async fn check_decision_golden(app: &TestApp, run_id: &str) {
    let events = app.events(run_id).await;
    let mut scrubber = Scrubber::new();
    scrubber.scrub(&Value::String(run_id.to_owned()));
    assert_golden(
        "decision_events.json",
        &events_by_source(&events, &mut scrubber),
    );
    let (_, state) = app.get(&format!("/runs/{run_id}/state")).await;
    let mut projection = scrubber.scrub(&state);
    // Order and seq of these entries reflect write interleaving, not meaning.
    let types: Vec<Value> = projection["timeline"]["recent"]
        .as_array()
        .map(|recent| recent.iter().map(|entry| entry["type"].clone()).collect())
        .unwrap_or_default();
    projection["timeline"]["recent"] = Value::Array(types);
    sort_array(&mut projection, "/timeline/recent");
    projection["timeline"]["latestSeq"] = Value::String("<seq>".into());
    sort_array(&mut projection, "/graph/nodes");
    sort_array(&mut projection, "/graph/edges");
    assert_golden("decision_projection.json", &projection);
}

/// The normalizer and reducer on a fixed transcript (every input fixed, so nothing is scrubbed):
/// a decision session with a signal, progress, an LLM usage report, an inline policy denial and
/// the runtime's RESOLVED state.
#[test]
fn normalizer_and_projection_of_a_fixed_transcript() {
    use macp_control_plane::events::canonical::CanonicalEvent;
    use macp_control_plane::events::normalizer::{NormalizerContext, RuntimeItem, normalize};
    use macp_control_plane::projection::reducer;
    use macp_control_plane::runtime::codec::encode_proto;
    use macp_runtime::pb::{Envelope, MacpError, SessionMetadata, SessionState};
    use serde_json::json;

    let mode = "macp.mode.decision.v1";
    let envelope =
        |ordinal: i64, message_type: &str, sender: &str, type_name: &str, value: Value| Envelope {
            macp_version: "1.0".into(),
            mode: if message_type == "Signal" {
                String::new()
            } else {
                mode.into()
            },
            message_type: message_type.into(),
            message_id: format!("m{ordinal}"),
            session_id: "s-1".into(),
            sender: sender.into(),
            timestamp_unix_ms: 1_790_000_000_000 + ordinal,
            payload: encode_proto(type_name, &value).expect("encodes"),
        };
    let d = |name: &str| format!("macp.modes.decision.v1.{name}");
    let signal_data = macp_control_plane::runtime::codec::encode_base64(
        br#"{"severity":"high","tokenUsage":{"model":"gpt-4o","promptTokens":120,"completionTokens":30}}"#,
    );
    let llm_data = macp_control_plane::runtime::codec::encode_base64(
        br#"{"model":"gpt-4o-mini","promptTokens":200,"completionTokens":50,"latencyMs":420}"#,
    );
    let envelopes = vec![
        envelope(
            1,
            "SessionStart",
            "coordinator",
            "macp.v1.SessionStartPayload",
            json!({"intent": "review", "participants": ["fraud", "risk"], "mode_version": "1.0.0", "configuration_version": "config.default", "ttl_ms": 60000}),
        ),
        envelope(
            2,
            "Proposal",
            "fraud",
            &d("ProposalPayload"),
            json!({"proposal_id": "p1", "option": "step_up", "rationale": "new device"}),
        ),
        envelope(
            3,
            "Evaluation",
            "risk",
            &d("EvaluationPayload"),
            json!({"proposal_id": "p1", "recommendation": "REVIEW", "confidence": 0.5, "reason": "friction"}),
        ),
        envelope(
            4,
            "Signal",
            "risk",
            "macp.v1.SignalPayload",
            json!({"signal_type": "suspicious_device", "data": signal_data, "confidence": 0.8}),
        ),
        envelope(
            5,
            "Progress",
            "fraud",
            "macp.v1.ProgressPayload",
            json!({"progress_token": "t", "progress": 1, "total": 4, "message": "checking"}),
        ),
        envelope(
            6,
            "Vote",
            "fraud",
            &d("VotePayload"),
            json!({"proposal_id": "p1", "vote": "APPROVE", "reason": "ok"}),
        ),
        envelope(
            7,
            "Vote",
            "risk",
            &d("VotePayload"),
            json!({"proposal_id": "p1", "vote": "REJECT", "reason": "too risky"}),
        ),
        envelope(
            8,
            "Commitment",
            "coordinator",
            "macp.v1.CommitmentPayload",
            json!({"commitment_id": "c1", "action": "decision.rejected", "authority_scope": "fraud", "reason": "split vote", "mode_version": "1.0.0", "configuration_version": "config.default"}),
        ),
        // Late (e.g. replayed after a reconnect): must not reopen the finalized decision.
        envelope(
            9,
            "Vote",
            "risk",
            &d("VotePayload"),
            json!({"proposal_id": "p1", "vote": "APPROVE", "reason": "changed my mind"}),
        ),
        envelope(
            10,
            "Signal",
            "fraud",
            "macp.v1.SignalPayload",
            json!({"signal_type": "llm.call.completed", "data": llm_data}),
        ),
    ];
    let mut items: Vec<RuntimeItem> = envelopes
        .into_iter()
        .enumerate()
        .map(|(index, envelope)| RuntimeItem::Envelope {
            envelope,
            ordinal: index as u64 + 1,
        })
        .collect();
    items.insert(
        6,
        RuntimeItem::InlineError(MacpError {
            code: "POLICY_DENIED".into(),
            message: "vote denied".into(),
            session_id: "s-1".into(),
            message_id: "m-denied".into(),
            details: br#"{"reasons":["voter not eligible"]}"#.to_vec(),
        }),
    );
    items.push(RuntimeItem::SessionState(SessionMetadata {
        session_id: "s-1".into(),
        mode: mode.into(),
        state: SessionState::Resolved as i32,
        started_at_unix_ms: 1_790_000_000_000,
        expires_at_unix_ms: 1_790_000_060_000,
        mode_version: "1.0.0".into(),
        configuration_version: "config.default".into(),
        policy_version: "policy.default".into(),
        initiator: "coordinator".into(),
        ..Default::default()
    }));
    let mut context = NormalizerContext {
        mode: mode.into(),
        participants: vec!["fraud".into(), "risk".into()],
        ..Default::default()
    };
    let at = macp_control_plane::time::from_unix_ms(1_790_000_001_000).expect("time");
    let mut events: Vec<CanonicalEvent> = Vec::new();
    for item in &items {
        for draft in normalize(&mut context, item, at) {
            let seq = events.len() as i64 + 1;
            let mut event = CanonicalEvent::from_draft(draft, "run-1", seq, None);
            event.id = format!("event-{seq}");
            events.push(event);
        }
    }
    let json_events = serde_json::to_value(&events).expect("events serialize");
    assert_golden("normalizer_decision_transcript.json", &json_events);
    let state = reducer::fold("run-1", events.iter());
    let json_state = serde_json::to_value(&state).expect("state serializes");
    assert_golden("projection_decision_transcript.json", &json_state);
    // Replaying the same events changes nothing.
    let mut replayed = state.clone();
    for event in &events {
        reducer::apply(&mut replayed, event);
    }
    assert_eq!(replayed, state);
    let decision = state.decision.current.expect("decision");
    assert!(decision.finalized);
    assert_eq!(decision.action, "decision.rejected");
    assert_eq!(decision.outcome_positive, Some(json!(false)));
    assert_eq!(state.llm.totals.total_tokens, 250);
    // Events read back from JSON fold to the same projection (one JSON shape).
    let parsed: Vec<CanonicalEvent> = serde_json::from_value(json_events).expect("events parse");
    assert_eq!(
        reducer::fold("run-1", parsed.iter()).timeline,
        replayed.timeline
    );
}
