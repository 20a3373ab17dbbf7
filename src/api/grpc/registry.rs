//! The `ScenarioRegistry` gRPC service: proto ⇄ domain conversion around the same registry and
//! launch calls the REST routes make.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::{internal, status, to_json};
use crate::api::proto;
use crate::launch::{self, LaunchRequest, registry_call};
use crate::registry::Registry;
use crate::runs::RunService;

pub struct ScenarioRegistryApi {
    registry: Registry,
    runs: RunService,
}

impl ScenarioRegistryApi {
    pub fn new(registry: Registry, runs: RunService) -> Self {
        ScenarioRegistryApi { registry, runs }
    }
}

/// A domain value as the proto message of the same JSON shape. The registry's messages are
/// written so that their proto3 JSON is the REST body, so converting through JSON keeps the two
/// transports equal by construction (and a field the proto lacks fails loudly in tests).
fn message<T: DeserializeOwned>(value: &impl Serialize) -> Result<T, Status> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(internal)
}

#[tonic::async_trait]
impl proto::scenario_registry_server::ScenarioRegistry for ScenarioRegistryApi {
    async fn list_packs(
        &self,
        _: Request<proto::ListPacksRequest>,
    ) -> Result<Response<proto::ListPacksResponse>, Status> {
        let packs = registry_call(&self.registry, |registry| Ok(registry.list_packs()))
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListPacksResponse {
            packs: message(&packs)?,
        }))
    }

    async fn list_scenarios(
        &self,
        request: Request<proto::ListScenariosRequest>,
    ) -> Result<Response<proto::ListScenariosResponse>, Status> {
        let pack = request.into_inner().pack;
        let scenarios = registry_call(&self.registry, move |registry| {
            registry.list_scenarios(&pack)
        })
        .await
        .map_err(status)?;
        Ok(Response::new(proto::ListScenariosResponse {
            scenarios: message(&scenarios)?,
        }))
    }

    async fn list_all_scenarios(
        &self,
        _: Request<proto::ListAllScenariosRequest>,
    ) -> Result<Response<proto::ListScenariosResponse>, Status> {
        let scenarios = registry_call(&self.registry, |registry| Ok(registry.list_all_scenarios()))
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListScenariosResponse {
            scenarios: message(&scenarios)?,
        }))
    }

    async fn get_launch_schema(
        &self,
        request: Request<proto::GetLaunchSchemaRequest>,
    ) -> Result<Response<proto::LaunchSchema>, Status> {
        let request = request.into_inner();
        let schema = registry_call(&self.registry, move |registry| {
            registry.launch_schema(
                &request.pack,
                &request.scenario,
                &request.version,
                request.template.as_deref(),
            )
        })
        .await
        .map_err(status)?;
        Ok(Response::new(message(&schema)?))
    }

    async fn compile_launch(
        &self,
        request: Request<proto::CompileLaunchRequest>,
    ) -> Result<Response<proto::CompiledLaunch>, Status> {
        let body = to_json(&request.into_inner())?;
        let preview = launch::compile(&self.registry, body)
            .await
            .map_err(status)?;
        Ok(Response::new(message(&preview)?))
    }

    async fn launch(
        &self,
        request: Request<proto::LaunchRequest>,
    ) -> Result<Response<proto::LaunchResponse>, Status> {
        let body = to_json(&request.into_inner())?;
        let request = LaunchRequest::from_json(&body).map_err(status)?;
        let launched = launch::launch(&self.registry, &self.runs, request)
            .await
            .map_err(status)?;
        Ok(Response::new(message(&launched)?))
    }

    async fn list_agents(
        &self,
        _: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        let agents = registry_call(&self.registry, |registry| Ok(registry.agents()))
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListAgentsResponse {
            agents: message(&agents)?,
        }))
    }

    async fn get_agent(
        &self,
        request: Request<proto::GetAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        let agent_ref = request.into_inner().agent_ref;
        let agent = registry_call(&self.registry, move |registry| registry.agent(&agent_ref))
            .await
            .map_err(status)?;
        Ok(Response::new(message(&agent)?))
    }
}
