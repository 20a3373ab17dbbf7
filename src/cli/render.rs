//! What the operator CLI prints, kept free of I/O and transport so it can be tested on its own:
//! event lines, the live status line, runs as tables and records, and errors.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::api::proto;
use crate::domain::status::RunStatus;

/// Summaries are cut here so one event stays on one line of a normal terminal.
const SUMMARY_WIDTH: usize = 100;

/// Payload fields that say what a contribution was (the option proposed, the vote cast, …), in
/// the order they are looked for.
const PAYLOAD_HIGHLIGHTS: &[&str] = &[
    "option",
    "recommendation",
    "vote",
    "action",
    "signalType",
    "message",
];

/// A call that failed, as the operator sees it: the stable `errorCode` the service put in the
/// `x-error-code` metadata (or the gRPC code's name when there is none, e.g. a transport
/// failure), the message, and the JSON details from `x-error-details-bin`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
}

impl Failure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    pub fn from_status(status: &tonic::Status) -> Self {
        let metadata = status.metadata();
        let code = metadata
            .get("x-error-code")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| grpc_code_name(status.code()));
        let details = metadata
            .get_bin("x-error-details-bin")
            .and_then(|value| value.to_bytes().ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Failure {
            code,
            message: status.message().to_owned(),
            details,
        }
    }

    /// `error: CODE: message`, then one line per field problem and, for details that are not
    /// field problems, one line of JSON. A refusal of the caller's key is one line with the
    /// HTTP status and a hint: `error: 401 UNAUTHENTICATED: message (hint: …)`.
    pub fn lines(&self) -> Vec<String> {
        if let Some((status, hint)) = self.refused_key() {
            return vec![format!(
                "error: {status} {}: {} (hint: {hint})",
                self.code, self.message
            )];
        }
        let mut lines = vec![format!("error: {}: {}", self.code, self.message)];
        let Some(Value::Object(details)) = &self.details else {
            return lines;
        };
        let mut rest = details.clone();
        if let Some(errors) = rest.remove("errors") {
            match serde_json::from_value::<Vec<proto::FieldViolation>>(errors.clone()) {
                Ok(violations) => lines.extend(
                    violations
                        .iter()
                        .map(|violation| format!("  {}: {}", violation.field, violation.message)),
                ),
                // Not the field-problem shape: show it rather than lose it.
                Err(_) => {
                    rest.insert("errors".to_owned(), errors);
                }
            }
        }
        if !rest.is_empty() {
            lines.push(format!("  details: {}", Value::Object(rest)));
        }
        lines
    }

    /// The HTTP status and a hint when the service refused the caller's key (gRPC carries
    /// the code in `x-error-code`; without it, the gRPC code's name). The runtime refusing the
    /// control plane's own credentials (details with `runtimeCode`) is not about the key.
    fn refused_key(&self) -> Option<(u16, &'static str)> {
        let from_runtime = self
            .details
            .as_ref()
            .is_some_and(|details| details.get("runtimeCode").is_some());
        if from_runtime {
            return None;
        }
        match self.code.as_str() {
            "UNAUTHENTICATED" => Some((401, "pass a valid key with --api-key or MACP_API_KEY")),
            "FORBIDDEN" | "PERMISSION_DENIED" => {
                Some((403, "this key's role lacks the permission; ask an admin"))
            }
            "NOT_YOUR_PARTICIPANT" => Some((
                403,
                "this key may send only as its own participant ids; use a key of that participant",
            )),
            _ => None,
        }
    }

    /// The REST error body's fields (without the HTTP status), for `--json`.
    pub fn json(&self) -> Value {
        let mut body = json!({"errorCode": self.code, "message": self.message});
        if let (Some(details), Some(map)) = (&self.details, body.as_object_mut()) {
            map.insert("details".to_owned(), details.clone());
        }
        body
    }
}

/// `Code::DeadlineExceeded` → `DEADLINE_EXCEEDED`, the name gRPC documents for the code.
fn grpc_code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (index, character) in format!("{code:?}").chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

/// One event: `seq  time  type  subject  summary`.
pub fn event_line(event: &proto::CanonicalEvent) -> String {
    let subject = event
        .subject
        .as_ref()
        .map(|subject| match short_id(&subject.id, &event.run_id) {
            "" => subject.kind.clone(),
            id => format!("{}:{id}", subject.kind),
        })
        .unwrap_or_default();
    let data = event
        .data
        .as_ref()
        .and_then(|data| serde_json::to_value(data).ok())
        .unwrap_or(Value::Null);
    let line = format!(
        "{:>5}  {}  {:<27} {:<28} {}",
        event.seq,
        clock(&event.ts),
        event.r#type,
        subject,
        summary(&data)
    );
    line.trim_end().to_owned()
}

/// Inside one run's listing the run id is noise: the run's own subject needs no id, and message
/// ids (`<run id>:kickoff:<n>`) read better without the prefix.
fn short_id<'a>(id: &'a str, run_id: &str) -> &'a str {
    match id.strip_prefix(run_id) {
        Some("") => "",
        Some(rest) => rest.strip_prefix(':').unwrap_or(id),
        None => id,
    }
}

/// The time of day with milliseconds; the date rarely matters while following a run, and the
/// full timestamp is in `--json`.
fn clock(ts: &str) -> String {
    crate::time::parse(ts)
        .map(|time| time.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ts.to_owned())
}

/// A few words on what an event says, from the fields canonical events share: who sent which
/// message to whom, a state or status, and any error or reason.
fn summary(data: &Value) -> String {
    let text = |key: &str| data.get(key).and_then(Value::as_str);
    let mut parts = Vec::new();
    if let Some(message_type) = text("messageType") {
        let mut part = match text("sender") {
            Some(sender) => format!("{sender} {message_type}"),
            None => message_type.to_owned(),
        };
        let recipients: Vec<&str> = data
            .get("to")
            .and_then(Value::as_array)
            .map(|to| to.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !recipients.is_empty() {
            part.push_str(" -> ");
            part.push_str(&recipients.join(", "));
        }
        parts.push(part);
        let payload = data.get("decodedPayload").or_else(|| data.get("payload"));
        if let Some(highlight) = payload.and_then(|payload| {
            PAYLOAD_HIGHLIGHTS
                .iter()
                .find_map(|key| payload.get(*key).and_then(scalar))
        }) {
            parts.push(format!("({highlight})"));
        }
        if data.pointer("/ack/ok") == Some(&Value::Bool(false)) {
            parts.push("rejected".to_owned());
        }
    } else if let Some(state) = text("state") {
        parts.push(state.to_owned());
    } else if let Some(status) = text("status") {
        parts.push(status.to_owned());
    }
    if let Some(role) = text("role") {
        parts.push(format!("role {role}"));
    }
    match (text("errorCode"), data.get("error")) {
        (code, Some(Value::Object(error))) => {
            let code = code.or_else(|| error.get("code").and_then(Value::as_str));
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            parts.push(join_error(code, message));
        }
        (code, Some(Value::String(message))) => parts.push(join_error(code, message)),
        (Some(code), _) => parts.push(code.to_owned()),
        _ => {}
    }
    if let Some(reason) = text("reason") {
        parts.push(format!("reason: {reason}"));
    }
    truncate(&parts.join("  "), SUMMARY_WIDTH)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn join_error(code: Option<&str>, message: &str) -> String {
    match code {
        Some(code) if !message.is_empty() => format!("{code}: {message}"),
        Some(code) => code.to_owned(),
        None => message.to_owned(),
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(3)).collect();
    cut.push_str("...");
    cut
}

/// What the live status line shows: run status, latest seq and the current decision.
#[derive(Debug, Clone, PartialEq)]
struct RunLine {
    status: String,
    seq: u32,
    decision: String,
}

impl RunLine {
    /// From a snapshot (the projection's JSON).
    fn from_snapshot(snapshot: &Value) -> Self {
        let status = snapshot
            .pointer("/run/status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        // Struct numbers arrive as floats; seqs are whole numbers within u32.
        let seq = snapshot
            .pointer("/timeline/latestSeq")
            .and_then(Value::as_f64)
            .map_or(0, |seq| seq as u32);
        let decision = match snapshot.pointer("/decision/current") {
            Some(current) => {
                let action = current
                    .get("action")
                    .and_then(Value::as_str)
                    .filter(|action| !action.is_empty())
                    .unwrap_or("?");
                let stage = if current.get("finalized") == Some(&Value::Bool(true)) {
                    "finalized"
                } else {
                    "pending"
                };
                format!("{action} ({stage})")
            }
            None => "none".to_owned(),
        };
        RunLine {
            status,
            seq,
            decision,
        }
    }

    fn text(&self) -> String {
        format!(
            "run {} | seq {} | decision {}",
            self.status, self.seq, self.decision
        )
    }
}

/// Follows a watch or replay stream: the line to print for each event, the status line when it
/// changes, and how the run ended.
#[derive(Debug, Default)]
pub struct StreamView {
    /// Known once a snapshot arrived (a replay without snapshots has no decision to show).
    line: Option<RunLine>,
    shown: Option<String>,
    outcome: Option<RunStatus>,
    /// Event lines were printed after the status line last shown.
    lines_since_shown: bool,
}

impl StreamView {
    pub fn event(&mut self, event: &proto::CanonicalEvent) -> String {
        // `run.completed` / `run.failed` / `run.cancelled` name the terminal status they record.
        let terminal = event
            .r#type
            .strip_prefix("run.")
            .and_then(RunStatus::parse)
            .filter(|status| status.is_terminal());
        if let Some(status) = terminal {
            self.outcome = Some(status);
        }
        self.lines_since_shown = true;
        // Events after the last snapshot keep the line current for `finish`; the stream may
        // end right after the terminal event, before another snapshot.
        if let Some(line) = &mut self.line {
            line.seq = line.seq.max(event.seq);
            if let Some(status) = terminal {
                line.status = status.as_str().to_owned();
            }
        }
        event_line(event)
    }

    /// The new status line, or `None` when the snapshot did not change it.
    pub fn snapshot(&mut self, snapshot: &Value) -> Option<String> {
        let line = RunLine::from_snapshot(snapshot);
        if let Some(status) = RunStatus::parse(&line.status).filter(|status| status.is_terminal()) {
            self.outcome = Some(status);
        }
        let text = line.text();
        self.line = Some(line);
        self.show(text)
    }

    /// The final status line: the output ends with it whenever event lines came after the
    /// status line last shown (a run that ended before the watch began shows its terminal
    /// snapshot first, then its events).
    pub fn finish(&mut self) -> Option<String> {
        let text = self.line.as_ref()?.text();
        if self.lines_since_shown {
            self.shown = None;
        }
        self.show(text)
    }

    fn show(&mut self, text: String) -> Option<String> {
        if self.shown.as_ref() == Some(&text) {
            return None;
        }
        self.lines_since_shown = false;
        self.shown = Some(text.clone());
        Some(text)
    }

    /// The run's terminal status, once an event or snapshot has shown it.
    pub fn outcome(&self) -> Option<RunStatus> {
        self.outcome
    }
}

/// What `runs start` prints.
pub fn started_lines(started: &proto::RunStartResponse) -> Vec<String> {
    let mut first = format!("run {} {}", started.run_id, started.status);
    if started.existing {
        first.push_str(" (existing run for this idempotency key)");
    }
    let mut lines = vec![first];
    if let Some(trace_id) = &started.trace_id {
        lines.push(format!("trace {trace_id}"));
    }
    lines.push(format!(
        "follow it with: macp-control-plane runs watch {}",
        started.run_id
    ));
    lines
}

/// One run as `field: value` lines (absent fields left out).
pub fn run_lines(run: &proto::Run) -> Vec<String> {
    let runtime = match &run.runtime_version {
        Some(version) => format!("{} {version}", run.runtime_kind),
        None => run.runtime_kind.clone(),
    };
    let error = run
        .error_code
        .as_deref()
        .map(|code| join_error(Some(code), run.error_message.as_deref().unwrap_or_default()));
    let source = run
        .source_kind
        .as_deref()
        .map(|kind| match &run.source_ref {
            Some(reference) => format!("{kind} {reference}"),
            None => kind.to_owned(),
        });
    // Metadata holds the whole ExecutionRequest: too much for a terminal, so only its keys.
    let metadata = run
        .metadata
        .as_ref()
        .filter(|metadata| !metadata.fields.is_empty())
        .map(|metadata| {
            let mut keys: Vec<&str> = metadata.fields.keys().map(String::as_str).collect();
            // A map on the wire: sorted, so the output is stable.
            keys.sort_unstable();
            format!("{} (values with --json)", keys.join(", "))
        });
    let fields: [(&str, Option<String>); 16] = [
        ("id", Some(run.id.clone())),
        ("status", Some(run.status.clone())),
        ("mode", Some(run.mode.clone())),
        ("runtime", Some(runtime)),
        ("session", run.runtime_session_id.clone()),
        ("trace", run.trace_id.clone()),
        ("idempotency key", run.idempotency_key.clone()),
        ("last seq", Some(run.last_event_seq.to_string())),
        ("tags", (!run.tags.is_empty()).then(|| run.tags.join(", "))),
        ("source", source),
        ("error", error),
        ("created", Some(run.created_at.clone())),
        ("started", run.started_at.clone()),
        ("ended", run.ended_at.clone()),
        ("updated", Some(run.updated_at.clone())),
        ("metadata", metadata),
    ];
    fields
        .into_iter()
        .filter_map(|(name, value)| {
            value.map(|value| format!("{:<16} {value}", format!("{name}:")))
        })
        .collect()
}

/// A decision receipt as `field: value` lines; the document itself with `--json`.
pub fn receipt_lines(receipt: &proto::RunReceipt) -> Vec<String> {
    let fields = [
        ("run", receipt.run_id.clone()),
        ("session", receipt.session_id.clone()),
        ("format", receipt.receipt_format.clone()),
        ("issuer", receipt.issuer.clone()),
        ("issued", receipt.issued_at.clone()),
        ("key id", receipt.key_id.clone()),
        ("algorithm", receipt.algorithm.clone()),
        ("signature", receipt.signature.clone()),
        ("commitment hash", receipt.commitment_hash.clone()),
        ("event seq", receipt.seq.to_string()),
    ];
    fields
        .into_iter()
        .map(|(name, value)| format!("{:<16} {}", format!("{name}:"), printable(&value)))
        .collect()
}

/// What a receipt check found, in one line: `verification` is macp-core's `Verification` as
/// JSON (`integrity`, `attestations`, `verdict`, in its snake_case words).
pub fn verification_line(receipt: &proto::RunReceipt, verification: &Value) -> String {
    let word = |key: &str| verification[key].as_str().unwrap_or("none").to_owned();
    let attestations: Vec<&str> = verification["attestations"]
        .as_array()
        .map(|outcomes| outcomes.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (verdict, integrity) = (word("verdict"), word("integrity"));
    if verdict == "attested" {
        return format!(
            "verified: signed by key {} of {} (integrity {integrity}, signature valid)",
            printable(&receipt.key_id),
            printable(&receipt.issuer)
        );
    }
    let why = match (integrity.as_str(), attestations.as_slice()) {
        ("match", []) => "the receipt carries no signature".to_owned(),
        ("match", outcomes) if outcomes.contains(&"unknown_key") => format!(
            "the runtime publishes no key {}",
            printable(&receipt.key_id)
        ),
        ("match", _) => "the signature does not match the receipt".to_owned(),
        ("mismatch", _) => "the commitment does not have the receipt's commitment hash".to_owned(),
        _ => format!("the receipt cannot be checked (verdict {verdict}, integrity {integrity})"),
    };
    format!("NOT VERIFIED: {why}")
}

/// Runs as a table with a header, then a count line (marked like status lines, so it never
/// reads as data).
pub fn run_table(page: &proto::ListRunsResponse) -> Vec<String> {
    let header = ["ID", "STATUS", "SEQ", "CREATED", "TAGS"].map(str::to_owned);
    let rows: Vec<[String; 5]> = page
        .data
        .iter()
        .map(|run| {
            [
                run.id.clone(),
                run.status.clone(),
                run.last_event_seq.to_string(),
                run.created_at.clone(),
                run.tags.join(","),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|title| title.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_row = |row: &[String; 5]| {
        row.iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![format_row(&header)];
    lines.extend(rows.iter().map(format_row));
    lines.push(format!(
        "-- {} of {} run(s) (offset {})",
        page.data.len(),
        page.total,
        page.offset
    ));
    lines
}

/// A page of events: one line each, then a count and where the next page starts.
pub fn events_page(page: &proto::ListRunEventsResponse) -> Vec<String> {
    let mut lines: Vec<String> = page.data.iter().map(event_line).collect();
    let mut footer = format!("-- {} of {} event(s)", page.data.len(), page.total);
    if let Some(cursor) = page.next_cursor {
        footer.push_str(&format!("; more with --after-seq {cursor}"));
    }
    lines.push(footer);
    lines
}

/// `text` safe to put on a terminal: control characters (escape sequences that could move the
/// cursor, rewrite the title or hide text, line breaks inside one line) and bidirectional
/// overrides in agent-written strings are shown escaped (`\u{1b}`, `\n`) instead of acted on.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape_unsafe(text, |c, escaped| escaped.extend(c.escape_default()))
}

/// JSON text with the same characters escaped the JSON way (`\u001b`): serde_json leaves DEL,
/// the C1 controls and bidirectional overrides as they are, and these only occur inside
/// strings, so the result is the same JSON.
pub fn printable_json(json: &str) -> Cow<'_, str> {
    escape_unsafe(json, |c, escaped| {
        escaped.push_str(&format!("\\u{:04x}", u32::from(c)))
    })
}

fn escape_unsafe(text: &str, escape: impl Fn(char, &mut String)) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            escape(c, &mut escaped);
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structure(value: Value) -> Option<pbjson_types::Struct> {
        Some(serde_json::from_value(value).expect("a JSON object"))
    }

    fn event(
        seq: u32,
        event_type: &str,
        subject: (&str, &str),
        data: Value,
    ) -> proto::CanonicalEvent {
        proto::CanonicalEvent {
            id: format!("e{seq}"),
            run_id: "run-1".to_owned(),
            seq,
            ts: "2026-11-21T10:11:12.345Z".to_owned(),
            r#type: event_type.to_owned(),
            schema_version: 3,
            subject: Some(proto::EventSubject {
                kind: subject.0.to_owned(),
                id: subject.1.to_owned(),
            }),
            source: None,
            trace: None,
            data: structure(data),
        }
    }

    #[test]
    fn agent_written_control_characters_are_shown_escaped() {
        assert_eq!(printable("plain: ok ✓"), "plain: ok ✓");
        assert_eq!(
            printable("reason: \u{1b}]0;pwned\u{7}\u{1b}[2Jgone\nnext\u{202e}txt"),
            "reason: \\u{1b}]0;pwned\\u{7}\\u{1b}[2Jgone\\nnext\\u{202e}txt"
        );
        let value = json!({"reason": "a\u{7f}b\u{9b}c\u{202e}d\u{1b}e"});
        let json = serde_json::to_string(&value).expect("json");
        let printed = printable_json(&json);
        assert_eq!(printable(&printed), printed, "nothing left to escape");
        let parsed: Value = serde_json::from_str(&printed).expect("still JSON");
        assert_eq!(parsed, value, "the same JSON");
    }

    #[test]
    fn an_event_line_has_seq_time_type_subject_and_summary() {
        let line = event_line(&event(
            7,
            "message.received",
            ("message", "run-1:kickoff:0"),
            json!({"sender": "fraud-agent", "messageType": "Proposal", "to": ["risk-agent", "growth-agent"],
                   "payload": {"proposalId": "p1", "option": "step_up_verification"}}),
        ));
        assert_eq!(
            line,
            "    7  10:11:12.345  message.received            message:kickoff:0            \
             fraud-agent Proposal -> risk-agent, growth-agent  (step_up_verification)"
        );
    }

    #[test]
    fn summaries_show_states_roles_errors_and_rejections() {
        let summary_of = |data: Value| summary(&data);
        assert_eq!(
            summary_of(json!({"sessionId": "s", "state": "SESSION_STATE_OPEN"})),
            "SESSION_STATE_OPEN"
        );
        assert_eq!(
            summary_of(json!({"participantId": "risk-agent", "role": "risk", "status": "idle"})),
            "idle  role risk"
        );
        assert_eq!(
            summary_of(
                json!({"status": "failed", "errorCode": "RUNTIME_UNAVAILABLE", "error": "unreachable"})
            ),
            "failed  RUNTIME_UNAVAILABLE: unreachable"
        );
        assert_eq!(
            summary_of(json!({"sender": "a", "messageType": "Vote", "to": [],
                              "error": {"code": "FORBIDDEN", "message": "not allowed"}})),
            "a Vote  FORBIDDEN: not allowed"
        );
        assert_eq!(
            summary_of(json!({"sender": "a", "messageType": "Vote", "ack": {"ok": false}})),
            "a Vote  rejected"
        );
        assert_eq!(
            summary_of(json!({"status": "cancelled", "reason": "operator"})),
            "cancelled  reason: operator"
        );
        assert_eq!(summary_of(Value::Null), "");
        let long = summary_of(json!({"status": "x".repeat(300)}));
        assert_eq!(long.chars().count(), SUMMARY_WIDTH);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn subjects_outside_the_run_keep_their_full_id() {
        assert_eq!(short_id("run-1:session-start", "run-1"), "session-start");
        assert_eq!(short_id("fraud-agent", "run-1"), "fraud-agent");
        assert_eq!(short_id("run-1", "run-1"), "");
        assert_eq!(short_id("run-10", "run-1"), "run-10");
        let line = event_line(&event(1, "run.created", ("run", "run-1"), json!({})));
        assert_eq!(line, "    1  10:11:12.345  run.created                 run");
        assert_eq!(clock("not a time"), "not a time");
    }

    #[test]
    fn the_status_line_shows_status_seq_and_decision() {
        let status_line = |snapshot: &Value| RunLine::from_snapshot(snapshot).text();
        let snapshot =
            json!({"run": {"status": "running"}, "timeline": {"latestSeq": 12.0}, "decision": {}});
        assert_eq!(
            status_line(&snapshot),
            "run running | seq 12 | decision none"
        );
        let decided = json!({"run": {"status": "completed"}, "timeline": {"latestSeq": 40.0},
                             "decision": {"current": {"action": "decision.selected", "finalized": true}}});
        assert_eq!(
            status_line(&decided),
            "run completed | seq 40 | decision decision.selected (finalized)"
        );
        let pending = json!({"decision": {"current": {"action": "", "finalized": false}}});
        assert_eq!(
            status_line(&pending),
            "run unknown | seq 0 | decision ? (pending)"
        );
    }

    #[test]
    fn the_stream_view_reports_changed_status_lines_and_the_outcome() {
        let mut view = StreamView::default();
        let running =
            json!({"run": {"status": "running"}, "timeline": {"latestSeq": 3.0}, "decision": {}});
        assert_eq!(
            view.snapshot(&running).as_deref(),
            Some("run running | seq 3 | decision none")
        );
        assert_eq!(
            view.snapshot(&running),
            None,
            "an unchanged line is not repeated"
        );
        assert_eq!(view.outcome(), None);
        view.event(&event(4, "run.started", ("run", "run-1"), json!({})));
        assert_eq!(view.outcome(), None, "run.started is not terminal");
        view.event(&event(5, "run.cancelled", ("run", "run-1"), json!({})));
        assert_eq!(view.outcome(), Some(RunStatus::Cancelled));
        assert_eq!(
            view.finish().as_deref(),
            Some("run cancelled | seq 5 | decision none"),
            "events after the last snapshot update the final line"
        );
        assert_eq!(view.finish(), None);

        let mut view = StreamView::default();
        view.snapshot(&json!({"run": {"status": "completed"}}));
        assert_eq!(view.outcome(), Some(RunStatus::Completed));
        assert_eq!(view.finish(), None, "already shown");

        // A run that ended before the watch began: its terminal snapshot comes first, then
        // its events; the output still ends with the status line.
        let mut view = StreamView::default();
        let done = json!({"run": {"status": "completed"}, "timeline": {"latestSeq": 2.0}});
        assert!(view.snapshot(&done).is_some());
        view.event(&event(1, "run.created", ("run", "run-1"), json!({})));
        view.event(&event(2, "run.completed", ("run", "run-1"), json!({})));
        assert_eq!(
            view.finish().as_deref(),
            Some("run completed | seq 2 | decision none")
        );

        let mut replay = StreamView::default();
        replay.event(&event(1, "run.completed", ("run", "run-1"), json!({})));
        assert_eq!(replay.outcome(), Some(RunStatus::Completed));
        assert_eq!(replay.finish(), None, "no snapshot, no status line");
    }

    #[test]
    fn failures_read_the_error_code_and_field_problems_from_metadata() {
        let mut status = tonic::Status::invalid_argument("invalid request");
        status
            .metadata_mut()
            .insert("x-error-code", "VALIDATION_ERROR".parse().expect("ascii"));
        let details = json!({"errors": [{"field": "session.ttlMs", "message": "must be positive"},
                                        {"field": "kickoff[0].from", "message": "unknown sender"}]});
        status.metadata_mut().insert_bin(
            "x-error-details-bin",
            tonic::metadata::BinaryMetadataValue::from_bytes(details.to_string().as_bytes()),
        );
        let failure = Failure::from_status(&status);
        assert_eq!(
            failure.lines(),
            [
                "error: VALIDATION_ERROR: invalid request",
                "  session.ttlMs: must be positive",
                "  kickoff[0].from: unknown sender",
            ]
        );
        assert_eq!(
            failure.json(),
            json!({"errorCode": "VALIDATION_ERROR", "message": "invalid request", "details": details})
        );
    }

    #[test]
    fn failures_without_our_metadata_use_the_grpc_code_name() {
        let failure = Failure::from_status(&tonic::Status::deadline_exceeded("too slow"));
        assert_eq!(failure.lines(), ["error: DEADLINE_EXCEEDED: too slow"]);
        assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
        let other = Failure {
            details: Some(json!({"reasons": ["session expired"]})),
            ..Failure::new("SESSION_NOT_OPEN", "refused")
        };
        assert_eq!(
            other.lines(),
            [
                "error: SESSION_NOT_OPEN: refused",
                r#"  details: {"reasons":["session expired"]}"#
            ]
        );
        assert_eq!(
            other.json(),
            json!({"errorCode": "SESSION_NOT_OPEN", "message": "refused", "details": {"reasons": ["session expired"]}})
        );
    }

    #[test]
    fn a_refused_key_is_one_line_with_the_http_status_and_a_hint() {
        let refused = |code: tonic::Code, error_code: Option<&str>, message: &str| {
            let mut status = tonic::Status::new(code, message);
            if let Some(error_code) = error_code {
                status
                    .metadata_mut()
                    .insert("x-error-code", error_code.parse().expect("ascii"));
            }
            Failure::from_status(&status).lines()
        };
        assert_eq!(
            refused(
                tonic::Code::Unauthenticated,
                Some("UNAUTHENTICATED"),
                "missing or invalid credentials"
            ),
            [
                "error: 401 UNAUTHENTICATED: missing or invalid credentials (hint: pass a valid key with --api-key or MACP_API_KEY)"
            ]
        );
        assert_eq!(
            refused(
                tonic::Code::PermissionDenied,
                Some("FORBIDDEN"),
                "missing permission runs:cancel"
            ),
            [
                "error: 403 FORBIDDEN: missing permission runs:cancel (hint: this key's role lacks the permission; ask an admin)"
            ]
        );
        assert_eq!(
            refused(
                tonic::Code::PermissionDenied,
                Some("NOT_YOUR_PARTICIPANT"),
                "not fraud-agent"
            ),
            [
                "error: 403 NOT_YOUR_PARTICIPANT: not fraud-agent (hint: this key may send only as its own participant ids; use a key of that participant)"
            ]
        );
        // A proxy in front of the service answers without our metadata.
        assert_eq!(
            refused(tonic::Code::Unauthenticated, None, "no"),
            [
                "error: 401 UNAUTHENTICATED: no (hint: pass a valid key with --api-key or MACP_API_KEY)"
            ]
        );
        assert_eq!(
            refused(tonic::Code::PermissionDenied, None, "no"),
            [
                "error: 403 PERMISSION_DENIED: no (hint: this key's role lacks the permission; ask an admin)"
            ]
        );
        // Other 403s are not about the key: the runtime's policy, a non-participant sender.
        assert_eq!(
            refused(
                tonic::Code::PermissionDenied,
                Some("POLICY_DENIED"),
                "denied"
            ),
            ["error: POLICY_DENIED: denied"]
        );
        // Details do not add lines to the one line.
        let with_details = Failure {
            details: Some(json!({"permission": "runs:cancel"})),
            ..Failure::new("FORBIDDEN", "missing permission runs:cancel")
        };
        assert_eq!(with_details.lines().len(), 1);
        // The runtime refusing the control plane's own token is not the caller's key.
        let runtime = Failure {
            details: Some(json!({"runtimeCode": "UNAUTHENTICATED", "runtimeMessage": "bad token"})),
            ..Failure::new(
                "UNAUTHENTICATED",
                "runtime refused (UNAUTHENTICATED): bad token",
            )
        };
        assert_eq!(
            runtime.lines()[0],
            "error: UNAUTHENTICATED: runtime refused (UNAUTHENTICATED): bad token"
        );
    }

    fn run(id: &str, status: &str) -> proto::Run {
        proto::Run {
            id: id.to_owned(),
            status: status.to_owned(),
            mode: "live".to_owned(),
            runtime_kind: "rust".to_owned(),
            last_event_seq: 9,
            tags: vec!["test".to_owned(), "demo".to_owned()],
            created_at: "2026-11-21T10:00:00.000Z".to_owned(),
            updated_at: "2026-11-21T10:00:01.000Z".to_owned(),
            ..proto::Run::default()
        }
    }

    #[test]
    fn a_run_is_shown_field_by_field() {
        let mut failed = run("r1", "failed");
        failed.error_code = Some("RUNTIME_UNAVAILABLE".to_owned());
        failed.error_message = Some("unreachable".to_owned());
        failed.metadata = structure(json!({"intent": "demo", "sessionId": "s1"}));
        assert_eq!(
            run_lines(&failed),
            [
                "id:              r1",
                "status:          failed",
                "mode:            live",
                "runtime:         rust",
                "last seq:        9",
                "tags:            test, demo",
                "error:           RUNTIME_UNAVAILABLE: unreachable",
                "created:         2026-11-21T10:00:00.000Z",
                "updated:         2026-11-21T10:00:01.000Z",
                "metadata:        intent, sessionId (values with --json)",
            ]
        );
    }

    #[test]
    fn runs_are_listed_as_an_aligned_table() {
        let page = proto::ListRunsResponse {
            data: vec![run("run-a", "running"), run("run-bb", "completed")],
            total: 5,
            limit: 2,
            offset: 0,
        };
        assert_eq!(
            run_table(&page),
            [
                "ID      STATUS     SEQ  CREATED                   TAGS",
                "run-a   running    9    2026-11-21T10:00:00.000Z  test,demo",
                "run-bb  completed  9    2026-11-21T10:00:00.000Z  test,demo",
                "-- 2 of 5 run(s) (offset 0)",
            ]
        );
    }

    #[test]
    fn start_and_event_pages_say_what_to_do_next() {
        let started = proto::RunStartResponse {
            run_id: "r1".to_owned(),
            status: "queued".to_owned(),
            trace_id: Some("t1".to_owned()),
            existing: true,
            result: None,
        };
        assert_eq!(
            started_lines(&started),
            [
                "run r1 queued (existing run for this idempotency key)",
                "trace t1",
                "follow it with: macp-control-plane runs watch r1",
            ]
        );
        let page = proto::ListRunEventsResponse {
            data: vec![event(
                1,
                "run.created",
                ("run", "run-1"),
                json!({"status": "queued"}),
            )],
            total: 3,
            limit: 1,
            next_cursor: Some(1),
        };
        let lines = events_page(&page);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("    1  10:11:12.345  run.created"));
        assert_eq!(lines[1], "-- 1 of 3 event(s); more with --after-seq 1");
    }
}
