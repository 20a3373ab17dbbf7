//! The shared vocabulary of the control plane: run statuses and their transitions, the run,
//! session and artifact records, the run and event queries with their validation, commitment
//! specs and signal type names. A leaf: it imports only `error` and `time`, so `store`,
//! `projection`, `events`, `runs` and `api` all build on it and no import runs back up.

pub mod artifact;
pub mod audit;
pub mod commitment;
pub mod dashboard;
pub mod query;
pub mod run;
pub mod signals;
pub mod status;
pub mod webhook;
