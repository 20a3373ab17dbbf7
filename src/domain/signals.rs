//! Signal type names the control plane gives meaning to.

/// The `signal_type` a context update travels as (the UI console reads it back as inputs).
pub const CONTEXT_SIGNAL_TYPE: &str = "session.context";
/// The `signal_type` of a Signal that reports an LLM call's usage.
pub const LLM_CALL_SIGNAL_TYPE: &str = "llm.call.completed";
