//! Everything that talks to the MACP runtime: the gRPC client with per-sender credentials, the
//! payload codec, discovery records, and the reference runtime (embedded, or standalone).

pub mod breaker;
pub mod client;
pub mod codec;
pub mod credentials;
pub mod embedded;
pub mod info;
pub mod policies;
pub mod standalone;

pub use client::{Error, RuntimeClient};

/// `SessionStartPayload.extensions` key under which the run's context travels to the runtime
/// (the current SessionStartPayload has no context field).
pub const CONTEXT_EXTENSION_KEY: &str = "macp.control_plane.context.v1";
