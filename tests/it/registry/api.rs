//! The scenario registry over REST and over gRPC (`ScenarioRegistry`): every route and RPC with
//! its happy path and its error codes, answers equal to the registry's own, and the two
//! transports equal to each other.

use macp_control_plane::api::proto;
use macp_control_plane::registry::{CompileRequest, Registry, RegistryOptions};
use serde_json::{Value, json};
use tonic::Code;

use super::support::{registry_client, sample_packs};
use crate::parity::{assert_same, json};
use crate::support::{self, Backend};

const FRAUD: &str = "fraud/high-value-new-device@1.0.0";
const SCHEMA: &str = "/packs/fraud/scenarios/high-value-new-device/versions/1.0.0/launch-schema";

fn registry() -> Registry {
    Registry::new(RegistryOptions::new(sample_packs()))
}

fn value<T: serde::Serialize>(domain: &T) -> Value {
    serde_json::to_value(domain).unwrap()
}

/// A `CompileLaunch` answer without the launch preview: the registry's compile output.
fn without_preview(compiled: &Value) -> Value {
    let mut compiled = compiled.clone();
    if let Some(map) = compiled.as_object_mut() {
        for key in [
            "runDescriptor",
            "sessionId",
            "mode",
            "scenarioMeta",
            "initiator",
        ] {
            map.remove(key);
        }
    }
    compiled
}

/// The `errorCode` a gRPC status carries.
fn error_code(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("x-error-code")
        .and_then(|code| code.to_str().ok())
        .unwrap_or_default()
}

/// The JSON details a gRPC status carries.
fn error_details(status: &tonic::Status) -> Value {
    let bytes = status
        .metadata()
        .get_bin("x-error-details-bin")
        .expect("details")
        .to_bytes()
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn failing_fields(details: &Value) -> Vec<&str> {
    details["errors"]
        .as_array()
        .expect("details.errors")
        .iter()
        .map(|error| error["field"].as_str().unwrap())
        .collect()
}

fn assert_error(what: &str, (status, body): &(u16, Value), expected: (u16, &str)) {
    assert_eq!(
        (*status, body["errorCode"].as_str().unwrap_or_default()),
        expected,
        "{what}: {body}"
    );
    assert_eq!(body["statusCode"], expected.0, "{what}");
    assert!(body["message"].is_string(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_routes_serve_the_catalog_and_compile() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let registry = registry();

    let (status, packs) = app.get("/packs").await;
    assert_eq!(status, 200);
    assert_eq!(packs, value(&registry.list_packs()));
    let slugs: Vec<&str> = packs
        .as_array()
        .unwrap()
        .iter()
        .map(|pack| pack["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["claims", "fraud", "lending"]);

    let (status, scenarios) = app.get("/packs/fraud/scenarios").await;
    assert_eq!(status, 200);
    assert_eq!(scenarios, value(&registry.list_scenarios("fraud").unwrap()));
    assert_eq!(scenarios[0]["scenario"], "high-value-new-device");
    assert_eq!(scenarios[0]["versions"], json!(["1.0.0"]));
    assert!(scenarios[0].get("packSlug").is_none());
    assert_error(
        "unknown pack",
        &app.get("/packs/nope/scenarios").await,
        (404, "PACK_NOT_FOUND"),
    );

    let (status, all) = app.get("/scenarios").await;
    assert_eq!(status, 200);
    assert_eq!(all, value(&registry.list_all_scenarios()));
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|row| row["packSlug"].is_string())
    );

    let (status, schema) = app.get(SCHEMA).await;
    assert_eq!(status, 200);
    assert_eq!(
        schema,
        value(
            &registry
                .launch_schema("fraud", "high-value-new-device", "1.0.0", None)
                .unwrap()
        )
    );
    assert_eq!(schema["scenarioRef"], FRAUD);
    assert!(schema.get("templateId").is_none());
    assert_eq!(schema["defaults"]["transactionAmount"], 2400);
    let (status, strict) = app.get(&format!("{SCHEMA}?template=strict-risk")).await;
    assert_eq!(status, 200);
    assert_eq!(strict["templateId"], "strict-risk");
    assert_eq!(strict["defaults"]["deviceTrustScore"], 0.08);
    assert_eq!(
        strict["launchSummary"]["policyVersion"],
        "policy.std.majority"
    );
    assert_error(
        "unknown template",
        &app.get(&format!("{SCHEMA}?template=nope")).await,
        (404, "TEMPLATE_NOT_FOUND"),
    );
    for (path, code) in [
        (
            "/packs/nope/scenarios/high-value-new-device/versions/1.0.0/launch-schema",
            "PACK_NOT_FOUND",
        ),
        (
            "/packs/fraud/scenarios/nope/versions/1.0.0/launch-schema",
            "SCENARIO_NOT_FOUND",
        ),
        (
            "/packs/fraud/scenarios/high-value-new-device/versions/9.9.9/launch-schema",
            "VERSION_NOT_FOUND",
        ),
    ] {
        assert_error(path, &app.get(path).await, (404, code));
    }

    let request = json!({"scenarioRef": FRAUD, "templateId": "strict-risk", "mode": "live", "inputs": {"transactionAmount": 990}});
    let (status, compiled) = app.post("/launch/compile", &request).await;
    assert_eq!(status, 201, "{compiled}");
    // The registry's output, and the launch preview beside it (tests/it/launch_preview.rs).
    assert_eq!(
        without_preview(&compiled),
        value(
            &registry
                .compile(&CompileRequest::from_json(&request).unwrap())
                .unwrap()
        )
    );
    assert_eq!(compiled["executionRequest"]["mode"], "live");
    assert_eq!(
        compiled["executionRequest"]["session"]["context"]["transaction"]["amount"],
        990
    );
    assert_eq!(compiled["display"]["templateId"], "strict-risk");

    let invalid = app
        .post(
            "/launch/compile",
            &json!({"scenarioRef": FRAUD, "inputs": {"transactionAmount": 0, "merchantCategory": "pets"}}),
        )
        .await;
    assert_error("invalid inputs", &invalid, (400, "VALIDATION_ERROR"));
    assert_eq!(
        failing_fields(&invalid.1["details"]),
        ["inputs.transactionAmount", "inputs.merchantCategory"]
    );
    let malformed = app
        .post(
            "/launch/compile",
            &json!({"scenarioRef": FRAUD, "mode": "fast"}),
        )
        .await;
    assert_error("malformed request", &malformed, (400, "VALIDATION_ERROR"));
    assert_eq!(failing_fields(&malformed.1["details"]), ["mode", "inputs"]);
    assert_error(
        "bad reference",
        &app.post(
            "/launch/compile",
            &json!({"scenarioRef": "fraud", "inputs": {}}),
        )
        .await,
        (400, "INVALID_SCENARIO_REF"),
    );
    for (reference, template, code) in [
        ("nope/high-value-new-device@1.0.0", None, "PACK_NOT_FOUND"),
        ("fraud/nope@1.0.0", None, "SCENARIO_NOT_FOUND"),
        (
            "fraud/high-value-new-device@2.0.0",
            None,
            "VERSION_NOT_FOUND",
        ),
        (FRAUD, Some("nope"), "TEMPLATE_NOT_FOUND"),
    ] {
        let body = json!({"scenarioRef": reference, "templateId": template, "inputs": {}});
        assert_error(
            reference,
            &app.post("/launch/compile", &body).await,
            (404, code),
        );
    }

    let (status, agents) = app.get("/agents").await;
    assert_eq!(status, 200);
    assert_eq!(agents, value(&registry.agents()));
    let (status, agent) = app.get("/agents/fraud-agent").await;
    assert_eq!(status, 200);
    assert_eq!(agent, value(&registry.agent("fraud-agent").unwrap()));
    assert!(
        agent["scenarios"]
            .as_array()
            .unwrap()
            .contains(&json!(FRAUD))
    );
    assert_error(
        "unknown agent",
        &app.get("/agents/nope").await,
        (404, "AGENT_NOT_FOUND"),
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rpcs_serve_the_catalog_and_compile_like_rest() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut grpc = registry_client(&app).await;

    let packs = grpc
        .list_packs(proto::ListPacksRequest {})
        .await
        .expect("ListPacks")
        .into_inner();
    assert_eq!(packs.packs.len(), 3);
    assert_same("ListPacks", &json(&packs.packs), &app.get("/packs").await.1);

    let scenarios = grpc
        .list_scenarios(proto::ListScenariosRequest {
            pack: "lending".into(),
        })
        .await
        .expect("ListScenarios")
        .into_inner();
    assert_eq!(scenarios.scenarios.len(), 1);
    assert_same(
        "ListScenarios",
        &json(&scenarios.scenarios),
        &app.get("/packs/lending/scenarios").await.1,
    );

    let all = grpc
        .list_all_scenarios(proto::ListAllScenariosRequest {})
        .await
        .expect("ListAllScenarios")
        .into_inner();
    assert_eq!(all.scenarios.len(), 3);
    assert_same(
        "ListAllScenarios",
        &json(&all.scenarios),
        &app.get("/scenarios").await.1,
    );

    for template in [None, Some("strict-risk")] {
        let schema = grpc
            .get_launch_schema(proto::GetLaunchSchemaRequest {
                pack: "fraud".into(),
                scenario: "high-value-new-device".into(),
                version: "1.0.0".into(),
                template: template.map(str::to_owned),
            })
            .await
            .expect("GetLaunchSchema")
            .into_inner();
        let query = template.map_or(String::new(), |t| format!("?template={t}"));
        assert_same(
            "GetLaunchSchema",
            &json(&schema),
            &app.get(&format!("{SCHEMA}{query}")).await.1,
        );
    }

    let request = json!({"scenarioRef": FRAUD, "templateId": "unanimous", "inputs": {"transactionAmount": 5000, "isVipCustomer": false}});
    let compiled = grpc
        .compile_launch(
            serde_json::from_value::<proto::CompileLaunchRequest>(request.clone()).unwrap(),
        )
        .await
        .expect("CompileLaunch")
        .into_inner();
    let (status, rest_compiled) = app.post("/launch/compile", &request).await;
    assert_eq!(status, 201);
    // Each compile names a new session: the same answer but for that id.
    let session_id = rest_compiled["sessionId"].as_str().unwrap();
    let mut grpc_compiled = json(&compiled);
    for pointer in ["/sessionId", "/runDescriptor/session/sessionId"] {
        *grpc_compiled.pointer_mut(pointer).unwrap() = json!(session_id);
    }
    assert_same("CompileLaunch", &grpc_compiled, &rest_compiled);
    assert_eq!(
        json(&compiled)["executionRequest"]["session"]["context"]["customer"]["isVip"],
        false
    );

    let agents = grpc
        .list_agents(proto::ListAgentsRequest {})
        .await
        .expect("ListAgents")
        .into_inner();
    assert!(!agents.agents.is_empty());
    assert_same(
        "ListAgents",
        &json(&agents.agents),
        &app.get("/agents").await.1,
    );
    let agent = grpc
        .get_agent(proto::GetAgentRequest {
            agent_ref: "risk-agent".into(),
        })
        .await
        .expect("GetAgent")
        .into_inner();
    assert_same(
        "GetAgent",
        &json(&agent),
        &app.get("/agents/risk-agent").await.1,
    );

    // Errors: the gRPC code plus the same errorCode (and details) as REST.
    let error = grpc
        .list_scenarios(proto::ListScenariosRequest {
            pack: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error_code(&error)),
        (Code::NotFound, "PACK_NOT_FOUND")
    );
    for (pack, scenario, version, template, code) in [
        ("fraud", "nope", "1.0.0", None, "SCENARIO_NOT_FOUND"),
        (
            "fraud",
            "high-value-new-device",
            "0.1.0",
            None,
            "VERSION_NOT_FOUND",
        ),
        (
            "fraud",
            "high-value-new-device",
            "1.0.0",
            Some("nope"),
            "TEMPLATE_NOT_FOUND",
        ),
    ] {
        let error = grpc
            .get_launch_schema(proto::GetLaunchSchemaRequest {
                pack: pack.into(),
                scenario: scenario.into(),
                version: version.into(),
                template: template.map(str::to_owned),
            })
            .await
            .unwrap_err();
        assert_eq!((error.code(), error_code(&error)), (Code::NotFound, code));
    }
    let error = grpc
        .get_agent(proto::GetAgentRequest {
            agent_ref: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error_code(&error)),
        (Code::NotFound, "AGENT_NOT_FOUND")
    );

    let compile =
        |value: Value| serde_json::from_value::<proto::CompileLaunchRequest>(value).unwrap();
    let error = grpc
        .compile_launch(compile(
            json!({"scenarioRef": FRAUD, "inputs": {"accountAgeDays": -1}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error_code(&error)),
        (Code::InvalidArgument, "VALIDATION_ERROR")
    );
    assert_eq!(
        failing_fields(&error_details(&error)),
        ["inputs.accountAgeDays"]
    );
    // Inputs are required over gRPC too (an empty Struct is fine).
    let error = grpc
        .compile_launch(compile(json!({"scenarioRef": FRAUD})))
        .await
        .unwrap_err();
    assert_eq!(error_code(&error), "VALIDATION_ERROR");
    assert_eq!(failing_fields(&error_details(&error)), ["inputs"]);
    let error = grpc
        .compile_launch(compile(json!({"scenarioRef": "fraud/x", "inputs": {}})))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error_code(&error)),
        (Code::InvalidArgument, "INVALID_SCENARIO_REF")
    );
    let error = grpc
        .compile_launch(compile(
            json!({"scenarioRef": "fraud/nope@1.0.0", "inputs": {}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error_code(&error)),
        (Code::NotFound, "SCENARIO_NOT_FOUND")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_applies_the_launch_options_and_refuses_bad_requests_without_a_run() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let mut grpc = registry_client(&app).await;

    // The UI console's call, with its extra fields.
    let (status, launched) = app
        .post(
            "/examples/run",
            &json!({
                "scenarioRef": FRAUD, "templateId": "default", "mode": "live", "inputs": {},
                "bootstrapAgents": true, "tags": ["ui", "fraud"], "runLabel": "Friday demo",
                "requester": {"actorId": "ana", "actorType": "user"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{launched}");
    let run_id = launched["runId"].as_str().unwrap().to_owned();
    assert_eq!(launched["sessionId"], run_id);
    assert_eq!(launched["status"], "queued");
    assert!(launched["traceId"].is_string());
    assert_eq!(launched["existing"], false);
    let request = &launched["compiled"]["executionRequest"];
    let tags = request["execution"]["tags"].as_array().unwrap();
    assert_eq!(tags.last().unwrap(), "ui");
    assert_eq!(tags.iter().filter(|tag| *tag == "fraud").count(), 1);
    assert_eq!(
        request["execution"]["requester"],
        json!({"actorId": "ana", "actorType": "user"})
    );
    assert_eq!(request["session"]["metadata"]["runLabel"], "Friday demo");
    app.wait_terminal(&run_id).await;
    let (status, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200);
    assert!(run["tags"].as_array().unwrap().contains(&json!("ui")));

    // Compile and apply, start nothing.
    let (status, dry) = app
        .post(
            "/launch",
            &json!({"scenarioRef": FRAUD, "inputs": {}, "submitToControlPlane": false, "runLabel": "x"}),
        )
        .await;
    assert_eq!(status, 201, "{dry}");
    assert_eq!(
        dry["compiled"]["executionRequest"]["session"]["metadata"]["runLabel"],
        "x"
    );
    assert!(dry.get("runId").is_none() && dry.get("sessionId").is_none());
    let dry_grpc = grpc
        .launch(
            serde_json::from_value::<proto::LaunchRequest>(
                json!({"scenarioRef": FRAUD, "inputs": {}, "submitToControlPlane": false, "runLabel": "x"}),
            )
            .unwrap(),
        )
        .await
        .expect("Launch")
        .into_inner();
    assert!(dry_grpc.run_id.is_none());
    assert_same("Launch (not submitted)", &json(&dry_grpc), &dry);

    // Bad requests: the registry's codes, or the run service's, and no run is created.
    let (_, before) = app.get("/runs").await;
    for path in ["/launch", "/examples/run"] {
        let invalid = app
            .post(
                path,
                &json!({"scenarioRef": FRAUD, "inputs": {"priorChargebacks": "two"}}),
            )
            .await;
        assert_error(path, &invalid, (400, "VALIDATION_ERROR"));
        assert_eq!(
            failing_fields(&invalid.1["details"]),
            ["inputs.priorChargebacks"]
        );
    }
    let malformed = app
        .post(
            "/launch",
            &json!({"scenarioRef": FRAUD, "inputs": {}, "tags": "x", "bootstrapAgents": "yes"}),
        )
        .await;
    assert_error("malformed launch", &malformed, (400, "VALIDATION_ERROR"));
    assert_eq!(
        failing_fields(&malformed.1["details"]),
        ["tags", "bootstrapAgents"]
    );
    // The compiled request is checked like any `POST /runs` body.
    let refused = app
        .post(
            "/launch",
            &json!({"scenarioRef": FRAUD, "inputs": {}, "requester": {"actorType": "robot"}}),
        )
        .await;
    assert_error("bad requester", &refused, (400, "VALIDATION_ERROR"));
    assert_eq!(
        failing_fields(&refused.1["details"]),
        ["execution.requester.actorType"]
    );
    assert_error(
        "bad reference",
        &app.post("/launch", &json!({"scenarioRef": "x", "inputs": {}}))
            .await,
        (400, "INVALID_SCENARIO_REF"),
    );
    assert_error(
        "unknown template",
        &app.post(
            "/examples/run",
            &json!({"scenarioRef": FRAUD, "templateId": "nope", "inputs": {}}),
        )
        .await,
        (404, "TEMPLATE_NOT_FOUND"),
    );
    let launch = |value: Value| serde_json::from_value::<proto::LaunchRequest>(value).unwrap();
    let error = grpc
        .launch(launch(
            json!({"scenarioRef": "lending/nope@1.0.0", "inputs": {}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error_code(&error)),
        (Code::NotFound, "SCENARIO_NOT_FOUND")
    );
    let error = grpc
        .launch(launch(
            json!({"scenarioRef": FRAUD, "inputs": {"customerId": 7}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error_code(&error)),
        (Code::InvalidArgument, "VALIDATION_ERROR")
    );
    assert_eq!(
        failing_fields(&error_details(&error)),
        ["inputs.customerId"]
    );
    let (_, after) = app.get("/runs").await;
    assert_eq!(
        after["total"], before["total"],
        "a refused launch created a run"
    );
    app.stop().await;
}
