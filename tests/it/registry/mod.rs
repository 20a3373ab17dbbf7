//! Scenario registry: conformance with the reference registry, golden files for the sample
//! packs, the REST and gRPC API, the sample packs launched on the embedded runtime, and the
//! `scenario` CLI.

mod api;
mod cli;
mod conformance;
mod golden;
mod launch;
mod support;
