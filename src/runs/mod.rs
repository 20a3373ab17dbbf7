//! Runs: the ExecutionRequest, the run service (the API both transports call), replay, and the
//! background work that takes a run from `queued` to a terminal status. Its vocabulary (statuses,
//! records, queries) is in `domain`.

mod awaiting;
pub mod cluster;
pub mod dashboard;
pub mod discovery;
mod executor;
pub mod json_fields;
pub mod manage;
pub mod messages;
pub mod observability;
mod observer;
pub mod outcome;
pub mod receipt;
mod records;
pub mod replay;
pub mod request;
mod requested_reasons;
pub mod retention;
pub mod service;
mod suspend;
pub mod watch;
mod watcher;
pub mod what_if;
pub mod writer;

pub use service::RunService;
