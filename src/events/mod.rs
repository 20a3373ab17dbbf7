//! Canonical events: their shape, the normalizer from runtime items, and the live hub.

pub mod canonical;
pub mod hub;
pub mod normalizer;
pub mod type_filter;
