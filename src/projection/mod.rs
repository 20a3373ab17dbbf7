//! The run-state projection and its pure reducer.

pub mod pricing;
pub mod reducer;
pub mod state;
