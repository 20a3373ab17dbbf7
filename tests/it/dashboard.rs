//! The dashboard on both databases: real runs through the pipeline (completed, declined,
//! cancelled, running, sandbox; a signal; LLM usage), and the overview's KPIs and charts checked
//! against what the runs' own records, states and events say; the filters; the agent figures;
//! gRPC = REST; bad input refused by field.

use std::collections::BTreeMap;

use macp_control_plane::api::proto;
use macp_control_plane::events::canonical::{EventDraft, Source, types};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::parity::{assert_same, json as proto_json};
use crate::requests;
use crate::support::{self, Backend, TestApp};

fn field_errors(body: &Value) -> Vec<String> {
    body["details"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| error["field"].as_str().map(str::to_owned))
        .collect()
}

fn time(value: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    value
        .as_str()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&chrono::Utc))
}

fn numbers(chart: &Value) -> Vec<f64> {
    chart["data"]
        .as_array()
        .expect("chart data")
        .iter()
        .map(|value| value.as_f64().expect("a number"))
        .collect()
}

/// proto3 JSON writes 64-bit integers as strings, and the live `durationMs` of a running run
/// moves between two calls: neither is a difference between the transports.
fn comparable(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| key.as_str() != "durationMs")
                .map(|(key, inner)| (key.clone(), comparable(inner)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(comparable).collect()),
        Value::String(text) => text
            .parse::<i64>()
            .map_or_else(|_| value.clone(), |n| json!(n as f64)),
        other => other.clone(),
    }
}

/// Appends one LLM call to a run (what an agent's usage report becomes).
async fn add_llm_call(app: &TestApp, run_id: &str, prompt: i64, completion: i64) {
    let draft = EventDraft::new(
        types::LLM_CALL_COMPLETED,
        macp_control_plane::time::now(),
        None,
        Source::control_plane("test"),
        json!({"participantId": "risk-agent", "model": "gpt-4o", "promptTokens": prompt,
               "completionTokens": completion, "totalTokens": prompt + completion}),
    );
    app.app
        .service
        .ingest(run_id, &[], vec![draft])
        .await
        .expect("event appended");
}

/// The runs the test makes, by what they are.
struct Runs {
    completed: Vec<String>,
    declined: String,
    cancelled: String,
    running: String,
    sandbox: String,
}

impl Runs {
    fn all(&self) -> Vec<String> {
        let mut all = self.completed.clone();
        all.extend([
            self.declined.clone(),
            self.cancelled.clone(),
            self.running.clone(),
            self.sandbox.clone(),
        ]);
        all
    }
}

async fn make_runs(app: &TestApp) -> Runs {
    let mut completed = Vec::new();
    for _ in 0..2 {
        let run_id = app.start_run(&requests::scripted_decision()).await;
        app.wait_terminal(&run_id).await;
        completed.push(run_id);
    }

    let mut declined = requests::scripted_decision();
    let kickoff = declined["kickoff"].as_array_mut().expect("kickoff");
    if let Some(last) = kickoff.last_mut() {
        *last = requests::commitment("coordinator", "c1", "decision.rejected", false);
    }
    declined["session"]["metadata"]["scenarioRef"] = json!("fraud/Card-Check@1.0.0");
    declined["session"]["metadata"]["environment"] = json!("staging");
    let declined = app.start_run(&declined).await;
    app.wait_terminal(&declined).await;

    let cancelled = app.start_run(&requests::seed_example()).await;
    app.wait_for(&cancelled, |state| state.run.status == "running")
        .await;
    add_llm_call(app, &cancelled, 1200, 300).await;
    let (status, body) = app
        .post(
            &format!("/runs/{cancelled}/cancel"),
            &json!({"reason": "test"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_terminal(&cancelled).await;

    let running = app.start_run(&requests::seed_example()).await;
    app.wait_for(&running, |state| state.run.status == "running")
        .await;
    add_llm_call(app, &running, 500, 50).await;
    let (status, body) = app
        .post(
            &format!("/runs/{running}/signal"),
            &json!({"from": "risk-agent", "signalType": "suspicious_device", "confidence": 0.7}),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    app.wait_for(&running, |state| !state.signals.signals.is_empty())
        .await;

    let mut sandbox = requests::scripted_decision();
    sandbox["mode"] = json!("sandbox");
    let sandbox = app.start_run(&sandbox).await;
    app.wait_terminal(&sandbox).await;

    Runs {
        completed,
        declined,
        cancelled,
        running,
        sandbox,
    }
}

/// What the overview should say, worked out from the runs' records, states and events.
struct Expected {
    labels: Vec<String>,
    run_volume: Vec<f64>,
    throughput: Vec<f64>,
    latency: Vec<f64>,
    success_rate: Vec<f64>,
    decision_outcome: Vec<f64>,
    signal_volume: Vec<f64>,
    status_counts: BTreeMap<String, u64>,
    avg_duration_ms: f64,
    tokens: f64,
    cost: f64,
    signals: f64,
    scenarios: BTreeMap<String, f64>,
}

async fn expected(app: &TestApp, runs: &[String], from: i64, to_secs: i64) -> Expected {
    let origin = from - from.rem_euclid(60);
    let buckets = ((to_secs - origin) + 59) / 60;
    let n = buckets as usize;
    let slot = |at: chrono::DateTime<chrono::Utc>| -> Option<usize> {
        let index = (at.timestamp() - origin).div_euclid(60);
        (0..buckets).contains(&index).then_some(index as usize)
    };
    let mut e = Expected {
        labels: (0..buckets)
            .map(|index| {
                macp_control_plane::time::format(
                    &chrono::DateTime::from_timestamp(origin + index * 60, 0).expect("a time"),
                )
            })
            .collect(),
        run_volume: vec![0.0; n],
        throughput: vec![0.0; n],
        latency: vec![0.0; n],
        success_rate: vec![0.0; n],
        decision_outcome: vec![0.0; n],
        signal_volume: vec![0.0; n],
        status_counts: BTreeMap::new(),
        avg_duration_ms: 0.0,
        tokens: 0.0,
        cost: 0.0,
        signals: 0.0,
        scenarios: BTreeMap::new(),
    };
    let (mut completed_ms, mut completed_runs) = (0.0, 0.0);
    let mut latency_sums = vec![(0.0, 0.0); n];
    let mut ended = vec![(0.0, 0.0); n];
    for run_id in runs {
        let (_, run) = app.get(&format!("/runs/{run_id}")).await;
        let (_, state) = app.get(&format!("/runs/{run_id}/state")).await;
        let status = run["status"].as_str().expect("a status").to_owned();
        *e.status_counts.entry(status.clone()).or_default() += 1;
        let created = time(&run["createdAt"]).expect("createdAt");
        e.run_volume[slot(created).expect("created in range")] += 1.0;
        e.tokens += run["metadata"]["totalTokens"].as_f64().unwrap_or(0.0);
        e.cost += run["metadata"]["estimatedCostUsd"].as_f64().unwrap_or(0.0);
        let scenario = run["sourceRef"]
            .as_str()
            .or_else(|| run["metadata"]["scenarioRef"].as_str());
        if let Some(scenario) = scenario {
            *e.scenarios.entry(scenario.to_owned()).or_default() += 1.0;
        }
        let decision = &state["decision"]["current"];
        let outcome = if decision["finalized"] == json!(true) {
            decision["outcomePositive"].as_bool()
        } else {
            None
        };
        if let (Some(ended_at), started) = (time(&run["endedAt"]), time(&run["startedAt"])) {
            let index = slot(ended_at).expect("ended in range");
            e.throughput[index] += 1.0;
            e.decision_outcome[index] += match outcome {
                Some(true) => 1.0,
                Some(false) => -1.0,
                None => 0.0,
            };
            ended[index].1 += 1.0;
            if status == "completed" {
                let ms = (ended_at - started.expect("started")).num_milliseconds() as f64;
                completed_ms += ms;
                completed_runs += 1.0;
                latency_sums[index].0 += ms;
                latency_sums[index].1 += 1.0;
                if outcome != Some(false) {
                    ended[index].0 += 1.0;
                }
            }
        }
        for event in app.events(run_id).await {
            if event["type"] == types::SIGNAL_EMITTED {
                let at = time(&event["ts"]).expect("an event time");
                e.signal_volume[slot(at).expect("signal in range")] += 1.0;
                e.signals += 1.0;
            }
        }
    }
    e.avg_duration_ms = if completed_runs > 0.0 {
        (completed_ms / completed_runs).round()
    } else {
        0.0
    };
    e.latency = latency_sums
        .iter()
        .map(|(sum, count)| {
            if *count > 0.0 {
                (sum / count).round()
            } else {
                0.0
            }
        })
        .collect();
    e.success_rate = ended
        .iter()
        .map(|(good, all)| if *all > 0.0 { good / all } else { 0.0 })
        .collect();
    e
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-6
}

fn assert_series(name: &str, overview: &Value, expected: &[f64]) {
    let actual = numbers(&overview["charts"][name]);
    assert_eq!(actual.len(), expected.len(), "{name}");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(close(*a, *e), "{name}[{index}]: {a} != {e}: {actual:?}");
    }
}

async fn overview_matches_the_runs(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let runs = make_runs(&app).await;
    // A fixed range, so every call (and the expectation) charts the same buckets.
    let to =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 60, 0).expect("a time");
    let to_text = macp_control_plane::time::format(&to);
    let query = format!("window=1h&to={to_text}");
    let (status, overview) = app.get(&format!("/dashboard/overview?{query}")).await;
    assert_eq!(status, 200, "{overview}");
    let from = to - chrono::Duration::hours(1);
    let e = expected(&app, &runs.all(), from.timestamp(), to.timestamp()).await;

    // The range and its minute buckets.
    assert_eq!(overview["granularity"], "minute");
    assert_eq!(overview["to"], json!(to_text));
    let labels: Vec<String> = overview["charts"]["runVolume"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|label| label.as_str().expect("a label").to_owned())
        .collect();
    assert_eq!(labels, e.labels);

    // KPIs.
    let kpis = &overview["kpis"];
    let count = |status: &str| e.status_counts.get(status).copied().unwrap_or(0);
    assert_eq!(kpis["totalRuns"], json!(runs.all().len()));
    assert_eq!(kpis["completedRuns"], json!(count("completed")));
    assert_eq!(
        count("completed"),
        4,
        "two, the declined one and the sandbox"
    );
    assert_eq!(kpis["declinedRuns"], json!(1));
    assert_eq!(kpis["cancelledRuns"], json!(1));
    assert_eq!(kpis["failedRuns"], json!(0));
    assert_eq!(kpis["activeRuns"], json!(1));
    assert_eq!(kpis["suspendedRuns"], json!(0));
    assert!(
        close(kpis["successRate"].as_f64().expect("rate"), 3.0 / 5.0),
        "{kpis}"
    );
    assert!(
        close(
            kpis["avgDurationMs"].as_f64().expect("ms"),
            e.avg_duration_ms
        ),
        "{kpis}"
    );
    assert!(
        e.tokens >= 1500.0,
        "the cancelled run's LLM call counts: {}",
        e.tokens
    );
    assert!(
        close(kpis["totalTokens"].as_f64().expect("tokens"), e.tokens),
        "{kpis}"
    );
    assert!(e.cost > 0.0);
    assert!(
        close(
            kpis["totalCostUsd"].as_f64().expect("cost"),
            (e.cost * 100.0).round() / 100.0
        ),
        "{kpis}"
    );
    assert_eq!(e.signals, 1.0, "the one signal sent");
    assert!(close(
        kpis["totalSignals"].as_f64().expect("signals"),
        e.signals
    ));

    // Charts.
    assert_series("runVolume", &overview, &e.run_volume);
    assert_series("throughput", &overview, &e.throughput);
    assert_series("latency", &overview, &e.latency);
    assert_series("successRate", &overview, &e.success_rate);
    assert_series("decisionOutcome", &overview, &e.decision_outcome);
    assert_series("signalVolume", &overview, &e.signal_volume);
    // Every run started at once: none waited at a bucket's end.
    assert_series("queueDepth", &overview, &vec![0.0; e.labels.len()]);
    let cost: f64 = numbers(&overview["charts"]["cost"]).iter().sum();
    assert!(close(cost, e.cost), "{cost} != {}", e.cost);
    // Percentiles: each is one of the bucket's durations, in order, and the p50 of a bucket
    // with one completed run is its duration.
    let p50 = numbers(&overview["charts"]["latencyP50"]);
    let p95 = numbers(&overview["charts"]["latencyP95"]);
    let p99 = numbers(&overview["charts"]["latencyP99"]);
    for index in 0..e.labels.len() {
        assert!(p50[index] <= p95[index] && p95[index] <= p99[index]);
        if e.latency[index] == 0.0 {
            assert_eq!(p99[index], 0.0);
        }
    }
    assert!(p99.iter().any(|ms| *ms > 0.0));
    assert!(numbers(&overview["charts"]["errorClasses"]).is_empty());
    let scenario_chart = &overview["charts"]["perScenario"];
    let per_scenario: BTreeMap<String, f64> = scenario_chart["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|label| label.as_str().expect("a label").to_owned())
        .zip(numbers(scenario_chart))
        .collect();
    assert_eq!(per_scenario, e.scenarios);
    assert!(per_scenario.contains_key("fraud/Card-Check@1.0.0"));

    // The latest runs: neither sandbox nor archived, newest first.
    let recent: Vec<&str> = overview["recentRuns"]
        .as_array()
        .expect("recentRuns")
        .iter()
        .map(|run| run["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(
        recent,
        [
            runs.running.as_str(),
            &runs.cancelled,
            &runs.declined,
            &runs.completed[1],
            &runs.completed[0]
        ]
    );
    for run in overview["recentRuns"].as_array().into_iter().flatten() {
        assert!(
            run["status"].is_string()
                && run["runtimeKind"].is_string()
                && run["createdAt"].is_string()
        );
    }
    assert_eq!(overview["runtimeHealth"]["ok"], json!(true), "{overview}");

    // Filters.
    for (filter, total) in [
        ("scenarioRef=card-CHECK", 1),
        ("environment=staging", 1),
        ("environment=prod", 0),
    ] {
        let (status, filtered) = app
            .get(&format!("/dashboard/overview?{query}&{filter}"))
            .await;
        assert_eq!(status, 200, "{filtered}");
        assert_eq!(filtered["kpis"]["totalRuns"], json!(total), "{filter}");
        assert_eq!(filtered["kpis"]["totalSignals"], json!(0), "{filter}");
        let recent = filtered["recentRuns"].as_array().expect("recentRuns");
        assert_eq!(recent.len(), total, "{filter}");
    }
    // A range before the runs has none of them.
    let (_, earlier) = app
        .get("/dashboard/overview?from=2026-01-01&to=2026-01-08")
        .await;
    assert_eq!(earlier["granularity"], "day");
    assert_eq!(earlier["kpis"]["totalRuns"], json!(0));
    assert_eq!(numbers(&earlier["charts"]["runVolume"]), vec![0.0; 7]);

    // gRPC answers what REST does.
    let mut grpc = app.grpc().await;
    let answer = grpc
        .get_dashboard_overview(proto::GetDashboardOverviewRequest {
            window: Some("1h".to_owned()),
            to: Some(to_text.clone()),
            ..Default::default()
        })
        .await
        .expect("GetDashboardOverview")
        .into_inner();
    let (_, rest) = app.get(&format!("/dashboard/overview?{query}")).await;
    assert_same(
        "GetDashboardOverview",
        &comparable(&proto_json(&answer)),
        &comparable(&rest),
    );
    app.stop().await;
}
on_both_backends!(overview_matches_the_runs);

async fn agent_metrics_count_what_each_participant_sent(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let runs = make_runs(&app).await;
    // From the events: per sender, its runs, messages (runtime envelopes), signals and the
    // confidences its payloads carried.
    let mut expected: BTreeMap<String, (std::collections::BTreeSet<String>, u64, u64, Vec<f64>)> =
        BTreeMap::new();
    for run_id in runs.all() {
        for event in app.events(&run_id).await {
            let sender = event["data"]["sender"].as_str().unwrap_or_default();
            if sender.is_empty() {
                continue;
            }
            let entry = expected.entry(sender.to_owned()).or_default();
            if event["type"] == types::MESSAGE_RECEIVED {
                entry.0.insert(run_id.clone());
                entry.1 += 1;
                if let Some(confidence) = event["data"]["payload"]["confidence"].as_f64() {
                    entry.3.push(confidence);
                }
            } else if event["type"] == types::SIGNAL_EMITTED {
                entry.0.insert(run_id.clone());
                entry.2 += 1;
            }
        }
    }
    let (status, metrics) = app.get("/dashboard/agents/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let rows = metrics.as_array().expect("a bare array");
    assert_eq!(rows.len(), expected.len(), "{metrics}");
    for row in rows {
        let id = row["participantId"].as_str().expect("participantId");
        let (runs, messages, signals, confidences) = &expected[id];
        assert_eq!(row["runs"], json!(runs.len()), "{row}");
        assert_eq!(row["messages"], json!(messages), "{row}");
        assert_eq!(row["signals"], json!(signals), "{row}");
        let mean = if confidences.is_empty() {
            0.0
        } else {
            confidences.iter().sum::<f64>() / confidences.len() as f64
        };
        assert!(
            close(row["averageConfidence"].as_f64().expect("confidence"), mean),
            "{row}"
        );
    }
    let risk = rows
        .iter()
        .find(|row| row["participantId"] == "risk-agent")
        .expect("risk-agent");
    assert_eq!(risk["signals"], json!(1), "{risk}");
    assert!(risk["averageConfidence"].as_f64().expect("a mean") > 0.0);

    let mut grpc = app.grpc().await;
    let answer = grpc
        .list_agent_metrics(proto::ListAgentMetricsRequest {})
        .await
        .expect("ListAgentMetrics")
        .into_inner();
    assert_same(
        "ListAgentMetrics",
        &comparable(&proto_json(&answer)["data"]),
        &comparable(&metrics),
    );
    app.stop().await;
}
on_both_backends!(agent_metrics_count_what_each_participant_sent);

async fn bad_input_is_refused_by_field(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    for (query, fields) in [
        ("window=2h", vec!["window"]),
        ("range=1y", vec!["range"]),
        ("window=", vec![]),
        ("from=yesterday", vec!["from"]),
        ("to=2026-13-01", vec!["to"]),
        ("from=2026-12-02&to=2026-12-01", vec!["from"]),
        ("from=2026-12-01&to=2026-12-01", vec!["from"]),
        ("from=2020-01-01&to=2026-01-01", vec!["from"]),
        ("window=5m&from=nope", vec!["window", "from"]),
    ] {
        let (status, body) = app.get(&format!("/dashboard/overview?{query}")).await;
        if fields.is_empty() {
            assert_eq!(status, 200, "{query}: {body}");
            continue;
        }
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["errorCode"], "VALIDATION_ERROR", "{query}");
        assert_eq!(field_errors(&body), fields, "{query}");
    }
    let mut grpc = app.grpc().await;
    let refused = grpc
        .get_dashboard_overview(proto::GetDashboardOverviewRequest {
            window: Some("2h".to_owned()),
            ..Default::default()
        })
        .await
        .expect_err("a bad window");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    app.stop().await;
}
on_both_backends!(bad_input_is_refused_by_field);

/// One synthetic run of the brute-force comparison, as its rows say it.
#[derive(Clone)]
struct Synthetic {
    id: String,
    created: i64,
    started: Option<i64>,
    ended: Option<i64>,
    status: &'static str,
    error_code: Option<&'static str>,
    source_ref: Option<String>,
    scenario: Option<String>,
    environment: Option<&'static str>,
    tokens: f64,
    cost: f64,
    /// The finalized decision's outcome, if any.
    outcome: Option<bool>,
    signals: Vec<i64>,
}

const DAY_MS: i64 = 86_400_000;

/// A deterministic spread of runs over the 12 days before `now`: every status, runs that
/// waited across days, runs without a start, failures with and without an error code, runs
/// with and without a source ref, scenario or environment.
fn synthetic_runs(now: i64) -> Vec<Synthetic> {
    let statuses: [&'static str; 7] = [
        "completed",
        "completed",
        "failed",
        "cancelled",
        "running",
        "queued",
        "suspended",
    ];
    (0..320_i64)
        .map(|index| {
            let created =
                now - 12 * DAY_MS + (index * 3_237_011 + index * index * 977) % (12 * DAY_MS);
            let status = statuses[(index % 7) as usize];
            // Every fifth run waits hours (sometimes past midnight) before it starts.
            let wait = if index % 5 == 0 {
                (index % 13) * 3_600_000
            } else {
                150 + index % 40
            };
            let started = (status != "queued" && !(status == "cancelled" && index % 2 == 1))
                .then_some(created + wait);
            let ended = matches!(status, "completed" | "failed" | "cancelled")
                .then(|| started.unwrap_or(created) + 500 + (index * 7919) % 90_000);
            let scenario = (index % 4 != 3).then(|| format!("fraud/Card-{}@1.0.0", index % 6));
            Synthetic {
                id: uuid::Uuid::new_v4().to_string(),
                created,
                started,
                ended,
                status,
                error_code: (status == "failed" && index % 3 != 0)
                    .then_some(["RUNTIME_UNAVAILABLE", "POLICY_DENIED"][(index % 2) as usize]),
                source_ref: (index % 3 == 0).then(|| format!("loans/Review-{}@2.0.0", index % 4)),
                scenario,
                environment: [Some("dev"), Some("prod"), None][(index % 3) as usize],
                tokens: (100 + index * 37 % 900) as f64,
                cost: (100 + index * 37 % 900) as f64 * 0.000_003,
                outcome: (status == "completed").then_some(index % 4 != 1),
                signals: if index % 4 == 0 {
                    vec![created + 20, created + 2 * 3_600_000]
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).expect("a time")
}

/// Writes the runs' rows (runs, projections, signal events) as the store would have them.
async fn insert_synthetic(db: &sea_orm::DatabaseConnection, runs: &[Synthetic]) {
    use sea_orm::ConnectionTrait;
    use sea_orm::sea_query::{Alias, Expr, Query, SimpleExpr};
    let backend = db.get_database_backend();
    let json_value = |value: Value| -> SimpleExpr {
        match backend {
            sea_orm::DbBackend::Postgres => {
                Expr::cust_with_values("CAST($1 AS jsonb)", [value.to_string()])
            }
            _ => Expr::value(value.to_string()),
        }
    };
    for run in runs {
        let mut metadata = json!({});
        if let Some(scenario) = &run.scenario {
            metadata["scenarioRef"] = json!(scenario);
        }
        if let Some(environment) = run.environment {
            metadata["environment"] = json!(environment);
        }
        let updated = run.ended.or(run.started).unwrap_or(run.created);
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("runs"))
            .columns(
                [
                    "id",
                    "status",
                    "mode",
                    "runtime_kind",
                    "last_event_seq",
                    "source_kind",
                    "source_ref",
                    "tags",
                    "metadata",
                    "error_code",
                    "created_at",
                    "started_at",
                    "ended_at",
                    "updated_at",
                ]
                .map(Alias::new),
            )
            .values([
                Expr::value(run.id.clone()),
                Expr::value(run.status),
                Expr::value("live"),
                Expr::value("rust"),
                Expr::value(3i64),
                Expr::value(Some("scenario")),
                Expr::value(run.source_ref.clone()),
                json_value(json!([])),
                json_value(metadata),
                Expr::value(run.error_code),
                Expr::value(at(run.created)),
                Expr::value(run.started.map(at)),
                Expr::value(run.ended.map(at)),
                Expr::value(at(updated)),
            ])
            .expect("a run row");
        db.execute_raw(backend.build(&insert))
            .await
            .expect("run inserted");
        let state = json!({
            "run": {"runId": run.id, "status": run.status},
            "decision": {"current": match run.outcome {
                Some(positive) => json!({"finalized": true, "outcomePositive": positive}),
                None => json!({"finalized": false}),
            }},
            "llm": {"totals": {"totalTokens": run.tokens, "estimatedCostUsd": run.cost}},
        });
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("run_projections"))
            .columns(["run_id", "version", "schema_version", "state", "updated_at"].map(Alias::new))
            .values([
                Expr::value(run.id.clone()),
                Expr::value(3i64),
                Expr::value(3i32),
                json_value(state),
                Expr::value(at(updated)),
            ])
            .expect("a projection row");
        db.execute_raw(backend.build(&insert))
            .await
            .expect("projection inserted");
        for (seq, ts) in run.signals.iter().enumerate() {
            let mut insert = Query::insert();
            insert
                .into_table(Alias::new("run_events_canonical"))
                .columns(
                    [
                        "run_id",
                        "seq",
                        "id",
                        "ts",
                        "event_type",
                        "source_kind",
                        "source_name",
                        "schema_version",
                        "data",
                    ]
                    .map(Alias::new),
                )
                .values([
                    Expr::value(run.id.clone()),
                    Expr::value(seq as i64 + 1),
                    Expr::value(uuid::Uuid::new_v4().to_string()),
                    Expr::value(at(*ts)),
                    Expr::value(types::SIGNAL_EMITTED),
                    Expr::value("runtime"),
                    Expr::value("macp-runtime"),
                    Expr::value(3i32),
                    json_value(json!({"sender": "risk-agent"})),
                ])
                .expect("an event row");
            db.execute_raw(backend.build(&insert))
                .await
                .expect("signal inserted");
        }
    }
}

/// Later changes to some runs, through the same tables: queued runs start and complete,
/// running ones fail, a run moves environment, a projection's figures change, runs are
/// deleted. The rollups follow each, in the writer's statement.
async fn change_synthetic(db: &sea_orm::DatabaseConnection, runs: &mut Vec<Synthetic>) {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = db.get_database_backend();
    let run = |sql: &str, values: Vec<sea_orm::Value>| {
        Statement::from_sql_and_values(backend, sql, values)
    };
    let placeholders = |n: usize| -> Vec<String> {
        (1..=n)
            .map(|i| match backend {
                sea_orm::DbBackend::Postgres => format!("${i}"),
                _ => format!("?{i}"),
            })
            .collect()
    };
    let p = placeholders(4);
    for index in (0..runs.len()).step_by(9) {
        let synthetic = &mut runs[index];
        match synthetic.status {
            "queued" => {
                let started = synthetic.created + 26 * 3_600_000;
                let ended = started + 4_321;
                synthetic.status = "completed";
                synthetic.started = Some(started);
                synthetic.ended = Some(ended);
                db.execute_raw(run(
                    &format!(
                        "UPDATE runs SET status = 'completed', started_at = {}, ended_at = {} \
                         WHERE id = {}",
                        p[0], p[1], p[2]
                    ),
                    vec![
                        at(started).into(),
                        at(ended).into(),
                        synthetic.id.clone().into(),
                    ],
                ))
                .await
                .expect("run completed");
            }
            "running" => {
                let ended = synthetic.started.unwrap_or(synthetic.created) + 60_000;
                synthetic.status = "failed";
                synthetic.error_code = Some("SESSION_EXPIRED");
                synthetic.ended = Some(ended);
                db.execute_raw(run(
                    &format!(
                        "UPDATE runs SET status = 'failed', error_code = 'SESSION_EXPIRED', \
                         ended_at = {} WHERE id = {}",
                        p[0], p[1]
                    ),
                    vec![at(ended).into(), synthetic.id.clone().into()],
                ))
                .await
                .expect("run failed");
            }
            "completed" => {
                synthetic.tokens += 1000.0;
                synthetic.cost += 0.5;
                let state = json!({
                    "decision": {"current": {"finalized": true, "outcomePositive": false}},
                    "llm": {"totals": {"totalTokens": synthetic.tokens,
                                       "estimatedCostUsd": synthetic.cost}},
                });
                synthetic.outcome = Some(false);
                let cast = match backend {
                    sea_orm::DbBackend::Postgres => format!("CAST({} AS jsonb)", p[0]),
                    _ => p[0].clone(),
                };
                db.execute_raw(run(
                    &format!(
                        "UPDATE run_projections SET state = {cast} WHERE run_id = {}",
                        p[1]
                    ),
                    vec![state.to_string().into(), synthetic.id.clone().into()],
                ))
                .await
                .expect("projection rewritten");
            }
            _ => {
                if synthetic.scenario.is_none() {
                    continue;
                }
                synthetic.environment = Some("staging");
                let metadata = json!({"scenarioRef": synthetic.scenario, "environment": "staging"});
                let cast = match backend {
                    sea_orm::DbBackend::Postgres => format!("CAST({} AS jsonb)", p[0]),
                    _ => p[0].clone(),
                };
                db.execute_raw(run(
                    &format!("UPDATE runs SET metadata = {cast} WHERE id = {}", p[1]),
                    vec![metadata.to_string().into(), synthetic.id.clone().into()],
                ))
                .await
                .expect("metadata changed");
            }
        }
    }
    for index in (4..runs.len())
        .step_by(31)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let removed = runs.remove(index);
        for table in ["run_events_canonical", "run_projections"] {
            db.execute_raw(run(
                &format!("DELETE FROM {table} WHERE run_id = {}", p[0]),
                vec![removed.id.clone().into()],
            ))
            .await
            .expect("rows deleted");
        }
        db.execute_raw(run(
            &format!("DELETE FROM runs WHERE id = {}", p[0]),
            vec![removed.id.into()],
        ))
        .await
        .expect("run deleted");
    }
}

/// The overview's figures, worked out run by run.
struct BruteForce {
    kpis: macp_control_plane::domain::dashboard::Kpis,
    /// The time series, by chart name.
    series: BTreeMap<&'static str, Vec<f64>>,
    errors: Vec<(String, f64)>,
    scenarios: Vec<(String, f64)>,
}

/// The overview's figures worked out run by run (the definitions `runs/dashboard.rs` charts).
fn brute_force(
    runs: &[Synthetic],
    scope: &macp_control_plane::domain::dashboard::OverviewScope,
) -> BruteForce {
    let (from, to) = (scope.from.timestamp_millis(), scope.to.timestamp_millis());
    let width = scope.granularity.seconds() * 1000;
    let origin = scope.origin() * 1000;
    let n = scope.buckets();
    let slot = |ms: i64| -> Option<usize> {
        let index = (ms - origin).div_euclid(width);
        (0..n as i64).contains(&index).then_some(index as usize)
    };
    let matches = |run: &Synthetic| {
        let environment = scope
            .environment
            .as_deref()
            .is_none_or(|wanted| run.environment == Some(wanted));
        let scenario = scope.scenario_ref.as_deref().is_none_or(|text| {
            let text = text.to_lowercase();
            [&run.source_ref, &run.scenario].iter().any(|value| {
                value
                    .as_deref()
                    .is_some_and(|v| v.to_lowercase().contains(&text))
            })
        });
        environment && scenario
    };
    let runs: Vec<&Synthetic> = runs.iter().filter(|run| matches(run)).collect();
    let mut kpis = macp_control_plane::domain::dashboard::Kpis::default();
    let mut series: BTreeMap<&'static str, Vec<f64>> = [
        "runVolume",
        "cost",
        "throughput",
        "latency",
        "successRate",
        "decisionOutcome",
        "signalVolume",
        "queueDepth",
        "latencyP50",
        "latencyP95",
        "latencyP99",
    ]
    .into_iter()
    .map(|name| (name, vec![0.0; n]))
    .collect();
    let mut errors: BTreeMap<String, f64> = BTreeMap::new();
    let mut scenarios: BTreeMap<String, f64> = BTreeMap::new();
    let (mut completed_ms, mut completed_timed, mut tokens, mut cost) = (0.0, 0.0, 0.0, 0.0);
    for run in runs.iter().filter(|run| (from..to).contains(&run.created)) {
        kpis.total_runs += 1;
        tokens += run.tokens;
        cost += run.cost;
        let index = slot(run.created).expect("created in a bucket");
        series.get_mut("runVolume").expect("series")[index] += 1.0;
        series.get_mut("cost").expect("series")[index] += run.cost;
        if let Some(scenario) = run.source_ref.as_ref().or(run.scenario.as_ref()) {
            *scenarios.entry(scenario.clone()).or_default() += 1.0;
        }
        match run.status {
            "completed" => {
                kpis.completed_runs += 1;
                kpis.declined_runs += u32::from(run.outcome == Some(false));
                if let (Some(started), Some(ended)) = (run.started, run.ended) {
                    completed_ms += (ended - started) as f64;
                    completed_timed += 1.0;
                }
            }
            "failed" => {
                kpis.failed_runs += 1;
                *errors
                    .entry(run.error_code.unwrap_or("UNKNOWN").to_owned())
                    .or_default() += 1.0;
            }
            "cancelled" => kpis.cancelled_runs += 1,
            "suspended" => {
                kpis.suspended_runs += 1;
                kpis.active_runs += 1;
            }
            _ => kpis.active_runs += 1,
        }
    }
    let ended_runs = f64::from(kpis.completed_runs + kpis.failed_runs + kpis.cancelled_runs);
    kpis.success_rate = if ended_runs > 0.0 {
        f64::from(kpis.completed_runs - kpis.declined_runs) / ended_runs
    } else {
        0.0
    };
    kpis.avg_duration_ms = if completed_timed > 0.0 {
        (completed_ms / completed_timed).round()
    } else {
        0.0
    };
    kpis.total_tokens = tokens.round();
    kpis.total_cost_usd = (cost * 100.0).round() / 100.0;

    let mut durations: Vec<Vec<i64>> = vec![Vec::new(); n];
    let (mut succeeded, mut latency) = (vec![0.0; n], vec![(0.0, 0.0); n]);
    for run in &runs {
        let Some(ended) = run.ended.filter(|ended| (from..to).contains(ended)) else {
            continue;
        };
        let index = slot(ended).expect("ended in a bucket");
        series.get_mut("throughput").expect("series")[index] += 1.0;
        series.get_mut("decisionOutcome").expect("series")[index] += match run.outcome {
            Some(true) => 1.0,
            Some(false) => -1.0,
            None => 0.0,
        };
        if run.status == "completed" {
            if run.outcome != Some(false) {
                succeeded[index] += 1.0;
            }
            if let Some(started) = run.started {
                latency[index].0 += (ended - started) as f64;
                latency[index].1 += 1.0;
                durations[index].push(ended - started);
            }
        }
    }
    for index in 0..n {
        let throughput = series["throughput"][index];
        series.get_mut("successRate").expect("series")[index] = if throughput > 0.0 {
            succeeded[index] / throughput
        } else {
            0.0
        };
        let (sum, count) = latency[index];
        series.get_mut("latency").expect("series")[index] = if count > 0.0 {
            (sum / count).round()
        } else {
            0.0
        };
        let bucket = &mut durations[index];
        bucket.sort_unstable();
        for (name, p) in [("latencyP50", 50), ("latencyP95", 95), ("latencyP99", 99)] {
            if !bucket.is_empty() {
                let rank = (p * bucket.len()).div_ceil(100);
                series.get_mut(name).expect("series")[index] = bucket[rank - 1] as f64;
            }
        }
    }
    for run in &runs {
        for ts in run.signals.iter().filter(|ts| (from..to).contains(*ts)) {
            kpis.total_signals += 1;
            series.get_mut("signalVolume").expect("series")[slot(*ts).expect("a bucket")] += 1.0;
        }
    }
    // Waiting at each bucket's end: of the runs created before `to` and not gone (started, or
    // ended unstarted) before `from`, those created by then less those gone by then.
    let waiting: Vec<(i64, Option<i64>)> = runs
        .iter()
        .map(|run| (run.created, run.started.or(run.ended)))
        .filter(|(created, left)| *created < to && left.is_none_or(|left| left >= from))
        .collect();
    for (index, value) in series
        .get_mut("queueDepth")
        .expect("series")
        .iter_mut()
        .enumerate()
    {
        let end = origin + (index as i64 + 1) * width;
        let arrived = waiting.iter().filter(|(created, _)| *created < end).count();
        let gone = waiting
            .iter()
            .filter(|(_, left)| left.is_some_and(|left| left < end))
            .count();
        *value = arrived as f64 - gone as f64;
    }
    let ranked = |map: BTreeMap<String, f64>| -> Vec<(String, f64)> {
        let mut pairs: Vec<(String, f64)> = map.into_iter().collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        pairs.truncate(10);
        pairs
    };
    BruteForce {
        kpis,
        series,
        errors: ranked(errors),
        scenarios: ranked(scenarios),
    }
}

fn labelled(chart: &macp_control_plane::domain::dashboard::Chart) -> Vec<(String, f64)> {
    chart
        .labels
        .iter()
        .cloned()
        .zip(chart.data.iter().copied())
        .collect()
}

/// Ranges charted in days read whole days from the rollups and scan only their partial first
/// and last day; ranges in hours and minutes scan. Every one equals the brute force, before
/// and after the runs change, with and without filters.
async fn rollups_equal_a_brute_force(backend: Backend) {
    use macp_control_plane::domain::dashboard::{Granularity, OverviewQuery};
    let Some(app) = support::start(backend).await else {
        return;
    };
    let db = sea_orm::Database::connect(app.app.database_url())
        .await
        .expect("the test's connection");
    let now = chrono::Utc::now().timestamp_millis();
    let midnight = now - now.rem_euclid(DAY_MS);
    let mut runs = synthetic_runs(now);
    insert_synthetic(&db, &runs).await;
    let text = |ms: i64| macp_control_plane::time::format(&at(ms));
    // (from, to, window): partial days at both ends, none, one at either end, a `to` in the
    // past (runs created, ended and started after it), hours and minutes.
    let ranges: [(Option<i64>, Option<i64>, &str, Granularity); 8] = [
        (None, None, "7d", Granularity::Day),
        (None, None, "30d", Granularity::Day),
        (
            Some(midnight - 9 * DAY_MS),
            Some(midnight - DAY_MS),
            "24h",
            Granularity::Day,
        ),
        (
            Some(midnight - 8 * DAY_MS),
            Some(now - 2 * DAY_MS - 5_000),
            "24h",
            Granularity::Day,
        ),
        (
            Some(now - 6 * DAY_MS - 777),
            Some(midnight - 2 * DAY_MS),
            "24h",
            Granularity::Day,
        ),
        (
            Some(now - 11 * DAY_MS + 3_600_000),
            Some(now - 4 * DAY_MS),
            "24h",
            Granularity::Day,
        ),
        (None, None, "24h", Granularity::Hour),
        (None, None, "6h", Granularity::Minute),
    ];
    let filters: [(Option<&str>, Option<&str>); 4] = [
        (None, None),
        (Some("CARD-1"), None),
        (None, Some("prod")),
        (Some("review"), Some("dev")),
    ];
    // On PostgreSQL the writers' changes wait in `dashboard_rollup_deltas` until the leader's
    // fold (every second): the first passes read whatever mix of folded rows and deltas there
    // is; the last reads them all folded.
    for pass in ["as inserted", "after changes", "folded"] {
        if pass == "after changes" {
            change_synthetic(&db, &mut runs).await;
        }
        if pass == "folded" {
            let store = macp_control_plane::store::Store::connect(app.app.database_url())
                .await
                .expect("store");
            store.fold_rollup_deltas().await.expect("fold");
            if backend == Backend::Postgres {
                let left: i64 =
                    sea_orm::sqlx::query_scalar("SELECT count(*) FROM dashboard_rollup_deltas")
                        .fetch_one(db.get_postgres_connection_pool())
                        .await
                        .expect("count deltas");
                assert_eq!(left, 0, "a fold moves every delta");
            }
        }
        for (from, to, window, granularity) in ranges {
            for (scenario_ref, environment) in filters {
                let query = OverviewQuery {
                    window: Some(window.to_owned()),
                    from: from.map(text),
                    to: Some(text(to.unwrap_or(now))),
                    scenario_ref: scenario_ref.map(str::to_owned),
                    environment: environment.map(str::to_owned),
                    ..Default::default()
                };
                let case = format!("{pass}: {query:?}");
                let scope = query.into_scope(at(now)).expect("a valid query");
                assert_eq!(scope.granularity, granularity, "{case}");
                let overview = app
                    .app
                    .service
                    .dashboard_overview(&scope)
                    .await
                    .expect("the overview");
                let BruteForce {
                    kpis,
                    series,
                    errors,
                    scenarios,
                } = brute_force(&runs, &scope);
                let (k, e) = (&overview.kpis, &kpis);
                assert_eq!(
                    (
                        k.total_runs,
                        k.active_runs,
                        k.completed_runs,
                        k.declined_runs
                    ),
                    (
                        e.total_runs,
                        e.active_runs,
                        e.completed_runs,
                        e.declined_runs
                    ),
                    "{case}"
                );
                assert_eq!(
                    (
                        k.failed_runs,
                        k.cancelled_runs,
                        k.suspended_runs,
                        k.total_signals
                    ),
                    (
                        e.failed_runs,
                        e.cancelled_runs,
                        e.suspended_runs,
                        e.total_signals
                    ),
                    "{case}"
                );
                for (name, actual, wanted) in [
                    ("successRate", k.success_rate, e.success_rate),
                    ("avgDurationMs", k.avg_duration_ms, e.avg_duration_ms),
                    ("totalTokens", k.total_tokens, e.total_tokens),
                    ("totalCostUsd", k.total_cost_usd, e.total_cost_usd),
                ] {
                    assert!(close(actual, wanted), "{case} {name}: {actual} != {wanted}");
                }
                let charts = &overview.charts;
                for (name, chart) in [
                    ("runVolume", &charts.run_volume),
                    ("cost", &charts.cost),
                    ("throughput", &charts.throughput),
                    ("latency", &charts.latency),
                    ("successRate", &charts.success_rate),
                    ("decisionOutcome", &charts.decision_outcome),
                    ("signalVolume", &charts.signal_volume),
                    ("queueDepth", &charts.queue_depth),
                    ("latencyP50", &charts.latency_p50),
                    ("latencyP95", &charts.latency_p95),
                    ("latencyP99", &charts.latency_p99),
                ] {
                    let wanted = &series[name];
                    assert_eq!(chart.data.len(), wanted.len(), "{case} {name}");
                    for (index, (a, w)) in chart.data.iter().zip(wanted).enumerate() {
                        assert!(close(*a, *w), "{case} {name}[{index}]: {a} != {w}");
                    }
                }
                assert_eq!(labelled(&charts.error_classes), errors, "{case}");
                assert_eq!(labelled(&charts.per_scenario), scenarios, "{case}");
            }
        }
    }
    // Something of each was in range, so the comparison compared something.
    assert!(
        runs.iter()
            .any(|run| run.status == "failed" && run.error_code.is_none())
    );
    app.stop().await;
}
on_both_backends!(rollups_equal_a_brute_force);
