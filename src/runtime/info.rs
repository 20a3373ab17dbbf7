//! Runtime discovery records (manifest, modes, roots, health) in their API shape.

use std::collections::BTreeMap;

use macp_runtime::pb;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub supported_modes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Where agents reach the embedded runtime (`host:port`); absent with an external runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mode {
    pub mode: String,
    pub mode_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub determinism_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_model: Option<String>,
    pub message_types: Vec<String>,
    pub terminal_message_types: Vec<String>,
    pub schema_uris: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Root {
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub ok: bool,
    pub runtime_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// Where agents reach the embedded runtime (`host:port`); absent with an external runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_address: Option<String>,
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl From<pb::AgentManifest> for Manifest {
    fn from(manifest: pb::AgentManifest) -> Self {
        Manifest {
            agent_id: manifest.agent_id,
            title: non_empty(manifest.title),
            description: non_empty(manifest.description),
            supported_modes: manifest.supported_modes,
            metadata: manifest.metadata.into_iter().collect(),
            embedded_address: None,
        }
    }
}

impl From<pb::ModeDescriptor> for Mode {
    fn from(mode: pb::ModeDescriptor) -> Self {
        Mode {
            mode: mode.mode,
            mode_version: mode.mode_version,
            title: non_empty(mode.title),
            description: non_empty(mode.description),
            determinism_class: non_empty(mode.determinism_class),
            participant_model: non_empty(mode.participant_model),
            message_types: mode.message_types,
            terminal_message_types: mode.terminal_message_types,
            schema_uris: mode.schema_uris.into_iter().collect(),
        }
    }
}

impl From<pb::Root> for Root {
    fn from(root: pb::Root) -> Self {
        Root {
            uri: root.uri,
            name: non_empty(root.name),
        }
    }
}
