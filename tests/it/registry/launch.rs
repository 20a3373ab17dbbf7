//! Every sample scenario launched through the API on the embedded runtime: over REST (`POST
//! /launch` and the UI console's `POST /examples/run`, alternately) with and without each
//! template, and over gRPC `ScenarioRegistry.Launch` with its `default` template. The scripted
//! kickoff must carry each session to the finalized decision it commits.

use macp_control_plane::api::proto;
use serde_json::{Value, json};

use super::support::registry_client;
use crate::parity::json;
use crate::support::{self, Backend};

/// A started launch and the decision its kickoff script commits.
struct Launched {
    label: String,
    run_id: String,
    commitment: Value,
}

impl Launched {
    /// From a launch response (REST body, or the gRPC response as JSON).
    fn new(label: String, response: &Value) -> Launched {
        let run_id = response["runId"].as_str().expect("runId").to_owned();
        assert_eq!(response["sessionId"], run_id, "{label}");
        let commitment = response["compiled"]["executionRequest"]["kickoff"]
            .as_array()
            .and_then(|kickoff| kickoff.last())
            .map(|message| message["payloadEnvelope"]["proto"]["value"].clone())
            .unwrap_or(Value::Null);
        Launched {
            label,
            run_id,
            commitment,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_scenarios_launched_over_rest_and_grpc_reach_a_finalized_decision() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut grpc = registry_client(&app).await;
    let (status, scenarios) = app.get("/scenarios").await;
    assert_eq!(status, 200);
    let scenarios = scenarios.as_array().expect("scenario rows").clone();
    assert_eq!(scenarios.len(), 3);

    let mut launched = Vec::new();
    for scenario in &scenarios {
        let versions = scenario["versions"].as_array().unwrap();
        let scenario_ref = format!(
            "{}/{}@{}",
            scenario["packSlug"].as_str().unwrap(),
            scenario["scenario"].as_str().unwrap(),
            versions.last().unwrap().as_str().unwrap()
        );
        let templates: Vec<&str> = scenario["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|template| template.as_str().unwrap())
            .collect();
        assert!(
            templates.contains(&"default"),
            "{scenario_ref}: {templates:?}"
        );

        for template in std::iter::once(None).chain(templates.iter().copied().map(Some)) {
            let path = if launched.len() % 2 == 0 {
                "/launch"
            } else {
                "/examples/run"
            };
            let label = format!("REST {path} {scenario_ref} template {template:?}");
            let (status, body) = app
                .post(
                    path,
                    &json!({"scenarioRef": scenario_ref, "templateId": template, "mode": "live", "inputs": {}}),
                )
                .await;
            assert_eq!(status, 201, "{label}: {body}");
            launched.push(Launched::new(label, &body));
        }

        let response = grpc
            .launch(proto::LaunchRequest {
                scenario_ref: scenario_ref.clone(),
                template_id: Some("default".to_owned()),
                mode: Some("live".to_owned()),
                inputs: Some(Default::default()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|error| panic!("gRPC Launch {scenario_ref}: {error}"))
            .into_inner();
        assert_eq!(response.status.as_deref(), Some("queued"));
        launched.push(Launched::new(
            format!("gRPC Launch {scenario_ref} template default"),
            &json(&response),
        ));
    }
    // 13 REST launches (each scenario bare and with each template), 3 over gRPC.
    assert_eq!(launched.len(), 16);

    for Launched {
        label,
        run_id,
        commitment,
    } in &launched
    {
        let state = app.wait_terminal(run_id).await;
        assert_eq!(state.run.status, "completed", "{label}: {state:#?}");
        let decision = state
            .decision
            .current
            .as_ref()
            .unwrap_or_else(|| panic!("{label}: no decision"));
        assert!(decision.finalized, "{label}: {decision:#?}");
        assert_eq!(decision.action, commitment["action"], "{label}");
        assert_eq!(
            decision.outcome_positive,
            Some(commitment["outcome_positive"].clone()),
            "{label}"
        );
    }
    app.stop().await;
}
