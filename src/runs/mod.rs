//! Runs: the ExecutionRequest, the run service (domain API), and the background work that takes
//! a run from `queued` to a terminal status.

mod executor;
pub mod json_fields;
pub mod messages;
pub mod model;
pub mod observability;
mod observer;
pub mod request;
pub mod service;
pub mod status;
pub mod watch;
mod watcher;
pub mod writer;

pub use service::RunService;
