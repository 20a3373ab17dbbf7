//! Integration tests: one binary (linking dominates build time), one module per area.

mod auth;
mod cli;
mod cli_auth;
mod connections;
mod discovery;
mod edge;
mod fuzz;
mod golden;
mod launch_preview;
mod loadgen;
mod messages;
mod metrics;
mod observability;
mod openapi;
mod parity;
mod policies;
mod reflection;
mod registry;
mod requests;
mod runs;
mod runtime_process;
mod secrets;
mod streams;
mod support;
mod suspend;
mod telemetry;
