//! Scenario registry: YAML scenario packs (`PACKS_DIR`) compiled into the control plane's
//! `ExecutionRequest`.
//!
//! It sits beside the control plane, not inside it: the registry never talks to the runtime,
//! and the control plane never reads a scenario. [`Registry`] is the domain service the API
//! adapters call; [`cli`] holds the `scenario …` commands. Pack authoring is described in
//! `docs/registry.md`.

mod catalog;
mod checks;
pub mod cli;
mod compiler;
mod error;
mod inputs;
mod loader;
mod model;
mod policies;
mod scaffold;
mod scenario_ref;
mod service;
mod substitute;
pub(crate) mod values;
mod yaml;

#[cfg(test)]
mod test_support;

pub use catalog::{
    AgentProfile, AgentSummary, LaunchSchema, LaunchSummary, ParticipantSummary, ScenarioSummary,
};
pub use compiler::{CompileRequest, Compiled, Display, ParticipantBinding, RunMode, SOURCE};
pub use error::{Error, LoadError};
pub use inputs::InputError;
pub use model::PackSummary;
pub use policies::{BUILT_IN_POLICIES, POLICIES_DIR, PackPolicy};
pub use scenario_ref::ScenarioRef;
pub use service::{Registry, RegistryOptions};
