//! Read models served to UIs: pack and scenario listings, launch forms and the agent catalog.

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::Error;
use super::loader::{Pack, ScenarioVersion, Snapshot, Template};
use super::model::{AgentDocument, PackSummary, Participant};
use super::values::unique;

/// One scenario of a pack, described by its latest version (versions sort as plain strings).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioSummary {
    /// Set in cross-pack listings only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_slug: Option<String>,
    pub scenario: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub versions: Vec<String>,
    pub templates: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    pub runtime_kind: String,
    pub agent_refs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hints: Option<Value>,
}

/// What a launch form needs: the input schema, effective defaults and who takes part.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSchema {
    pub scenario_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    pub form_schema: Value,
    pub defaults: Map<String, Value>,
    pub participants: Vec<ParticipantSummary>,
    pub agents: Vec<AgentSummary>,
    pub runtime: Map<String, Value>,
    pub launch_summary: LaunchSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_decision_kinds: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantSummary {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSummary {
    pub mode_name: String,
    pub mode_version: String,
    pub configuration_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hints: Option<Value>,
    pub ttl_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator_participant_id: Option<String>,
}

/// An agent of the catalog (`_agents/*.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    pub agent_ref: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub transport_identity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_mode: Option<String>,
    pub tags: Vec<String>,
}

/// An agent with the scenario versions (`pack/scenario@version`) that use it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProfile {
    #[serde(flatten)]
    pub agent: AgentSummary,
    pub scenarios: Vec<String>,
}

impl Snapshot {
    pub(crate) fn pack_summaries(&self) -> Vec<PackSummary> {
        self.packs.iter().map(|pack| pack.summary.clone()).collect()
    }

    pub(crate) fn scenario_summaries(
        &self,
        pack: &Pack,
        with_pack_slug: bool,
    ) -> Vec<ScenarioSummary> {
        pack.scenarios
            .iter()
            .filter_map(|(scenario, versions)| {
                let healthy: Vec<_> = versions
                    .iter()
                    .filter_map(|(name, version)| {
                        version.as_ref().ok().map(|version| (name, version))
                    })
                    .collect();
                let (_, latest) = healthy.last()?;
                let launch = &latest.base.launch;
                Some(ScenarioSummary {
                    pack_slug: with_pack_slug.then(|| pack.summary.slug.clone()),
                    scenario: scenario.clone(),
                    name: latest.metadata.name.clone(),
                    summary: latest.metadata.summary.clone(),
                    versions: healthy.iter().map(|(name, _)| (*name).clone()).collect(),
                    templates: latest.templates.keys().cloned().collect(),
                    tags: latest.metadata.tags.clone(),
                    runtime_kind: latest
                        .base
                        .runtime
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("rust")
                        .to_owned(),
                    agent_refs: unique(latest.base.agent_refs()),
                    policy_version: launch.policy_version.clone(),
                    policy_hints: launch.policy_hints.clone(),
                })
            })
            .collect()
    }

    pub(crate) fn all_scenario_summaries(&self) -> Vec<ScenarioSummary> {
        self.packs
            .iter()
            .flat_map(|pack| self.scenario_summaries(pack, true))
            .collect()
    }

    pub(crate) fn launch_schema(
        &self,
        version: &ScenarioVersion,
        template: Option<&Template>,
    ) -> Result<LaunchSchema, Error> {
        let variant = template.map_or(&version.base, |template| &template.variant);
        let launch = &variant.launch;
        Ok(LaunchSchema {
            scenario_ref: version.reference.to_string(),
            template_id: template.map(|template| template.metadata.slug.clone()),
            form_schema: version.inputs.schema.clone(),
            defaults: variant.defaults.clone(),
            participants: launch
                .participants
                .iter()
                .map(|participant| ParticipantSummary {
                    id: participant.id.clone(),
                    role: participant.role.clone(),
                    agent_ref: participant.agent_ref.clone(),
                })
                .collect(),
            // Participants without an agent of the catalog have none to show.
            agents: launch
                .participants
                .iter()
                .filter_map(|participant| self.agent_for(participant).transpose())
                .collect::<Result<_, _>>()?,
            runtime: variant.runtime.clone(),
            launch_summary: LaunchSummary {
                mode_name: launch.mode_name.clone(),
                mode_version: launch.mode_version.clone(),
                configuration_version: launch.configuration_version.clone(),
                policy_version: launch.policy_version.clone(),
                policy_hints: launch.policy_hints.clone(),
                ttl_ms: launch.ttl_ms,
                initiator_participant_id: launch.initiator_participant_id.clone(),
            },
            expected_decision_kinds: version.outputs.expected_decision_kinds.clone(),
        })
    }

    /// The participant's agent, in the participant's role; none when it names no agent.
    fn agent_for(&self, participant: &Participant) -> Result<Option<AgentSummary>, Error> {
        let Some(agent_ref) = &participant.agent_ref else {
            return Ok(None);
        };
        let mut agent = self.agent_summary(agent_ref)?;
        if participant.role.is_some() {
            agent.role = participant.role.clone();
        }
        Ok(Some(agent))
    }

    fn agent_summary(&self, agent_ref: &str) -> Result<AgentSummary, Error> {
        self.agents
            .get(agent_ref)
            .map(AgentDocument::summary)
            .ok_or_else(|| Error::AgentNotFound {
                agent_ref: agent_ref.to_owned(),
            })
    }

    pub(crate) fn agent_profile(&self, agent_ref: &str) -> Result<AgentProfile, Error> {
        let agent = self.agent_summary(agent_ref)?;
        let scenarios = self
            .healthy_versions()
            .filter(|version| {
                version
                    .variants()
                    .any(|(_, variant)| variant.agent_refs().any(|used| used == agent_ref))
            })
            .map(|version| version.reference.to_string())
            .collect();
        Ok(AgentProfile { agent, scenarios })
    }

    pub(crate) fn agent_profiles(&self) -> Vec<AgentProfile> {
        self.agents
            .keys()
            .filter_map(|agent_ref| self.agent_profile(agent_ref).ok())
            .collect()
    }

    pub(crate) fn healthy_versions(&self) -> impl Iterator<Item = &ScenarioVersion> {
        self.packs
            .iter()
            .flat_map(|pack| pack.scenarios.values())
            .flat_map(|versions| versions.values())
            .filter_map(|version| version.as_deref().ok())
    }
}

impl AgentDocument {
    fn summary(&self) -> AgentSummary {
        let metadata = &self.metadata;
        let spec = &self.spec;
        AgentSummary {
            agent_ref: metadata.agent_ref.clone(),
            name: metadata.name.clone(),
            role: spec.role.clone(),
            framework: spec.framework.clone(),
            description: spec.description.clone(),
            transport_identity: spec
                .transport_identity
                .clone()
                .unwrap_or_else(|| format!("agent://{}", metadata.agent_ref)),
            entrypoint: spec.entrypoint.clone(),
            bootstrap_strategy: spec.bootstrap_strategy.clone(),
            bootstrap_mode: spec.bootstrap_mode.clone(),
            tags: metadata.tags.clone().unwrap_or_default(),
        }
    }
}
