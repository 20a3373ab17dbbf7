//! Integration tests: one binary (linking dominates build time), one module per area.

mod auth;
mod cli;
mod cli_auth;
mod connections;
mod discovery;
mod edge;
mod fuzz;
mod golden;
mod loadgen;
mod messages;
mod metrics;
mod observability;
mod openapi;
mod parity;
mod reflection;
mod registry;
mod requests;
mod run_management;
mod runs;
mod runtime_process;
mod secrets;
mod streams;
mod support;
mod telemetry;
