//! macp-control-plane: a gRPC-first control plane for the MACP runtime. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod launch;
pub mod loadgen;
pub mod projection;
pub mod registry;
pub mod runs;
pub mod runtime;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod webhooks;
