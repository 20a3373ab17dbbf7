//! sea-orm entities: database rows, deliberately separate from the domain and wire types.

pub mod api_key;
pub mod artifact;
pub mod audit;
pub mod canonical_event;
pub mod checkpoint;
pub mod projection;
pub mod raw_event;
pub mod run;
pub mod runtime_session;
pub mod webhook;
pub mod webhook_delivery;
pub mod webhook_outbox;
