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
