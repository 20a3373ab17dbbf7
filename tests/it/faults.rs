//! The fault suite: the service binary (and the reference runtime as a process of its own)
//! killed, stopped and cut off at chosen points, and what the store, the runtime and the
//! streams hold afterwards compared.

pub(crate) mod crash;
mod database;
mod herd;
mod history;
mod kickoff;
mod outage;
pub(crate) mod process;
mod shutdown;
mod sqlite;
pub(crate) mod summary;
