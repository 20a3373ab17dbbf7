//! The call being served, as audit sees it. The edge (`api::guard`) opens a [`Call`] around
//! every request; the domain stamps it into the transaction of the change it makes
//! ([`take`]: at most once per call, and never from background work, which runs outside any
//! call), and the edge records the calls the domain did not (refusals, and calls that changed
//! nothing). Ambient like the trace context, so no domain signature carries transport state.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::Principal;
use crate::domain::audit::{AuditEntry, Outcome};
use crate::error::ErrorCode;

/// An audited action: its name and the kind of resource it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub name: &'static str,
    pub resource: &'static str,
}

pub const fn action(name: &'static str, resource: &'static str) -> Option<Action> {
    Some(Action { name, resource })
}

/// RegisterPolicy's, and a launch's registration of its pack's policy.
pub const POLICY_REGISTER: Action = Action {
    name: "policy.register",
    resource: "policy",
};

/// One request's caller and, when its route is audited, what is still to be recorded.
pub struct Call {
    pub principal: Principal,
    pub request_id: String,
    pub action: Option<Action>,
    state: Mutex<CallState>,
}

#[derive(Default)]
struct CallState {
    /// Rows the domain took (and did not put back).
    taken: u32,
    /// Every change of the call takes a row of its own (`per_change`).
    per_change: bool,
    resource_id: Option<String>,
    failure: Option<ErrorCode>,
}

tokio::task_local! {
    static CALL: Arc<Call>;
}

impl Call {
    pub fn new(principal: Principal, request_id: String, action: Option<Action>) -> Arc<Call> {
        Arc::new(Call {
            principal,
            request_id,
            action,
            state: Mutex::new(CallState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CallState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The resource the call is about, when the edge knows it (a path or message field).
    pub fn set_resource_id(&self, id: String) {
        self.state().resource_id = Some(id);
    }

    /// The row the edge records once the response is known, unless the domain recorded one:
    /// `refused` with the answer's error code, if it had one.
    pub fn unrecorded(&self, refused: bool, error_code: Option<&str>) -> Option<AuditEntry> {
        let action = self.action?;
        let state = self.state();
        if state.taken > 0 {
            return None;
        }
        Some(self.entry(
            action,
            state.resource_id.clone(),
            refused,
            error_code.map(str::to_owned),
            json!({}),
        ))
    }

    fn entry(
        &self,
        action: Action,
        resource_id: Option<String>,
        refused: bool,
        error_code: Option<String>,
        details: Value,
    ) -> AuditEntry {
        AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            actor: self.principal.actor.clone(),
            actor_type: self.principal.kind.as_str().to_owned(),
            action: action.name.to_owned(),
            resource: action.resource.to_owned(),
            resource_id,
            outcome: if refused || error_code.is_some() {
                Outcome::Refused
            } else {
                Outcome::Ok
            },
            error_code,
            request_id: Some(self.request_id.clone()),
            details,
            created_at: crate::time::now(),
        }
    }
}

/// Runs `future` as `call`.
pub async fn scope<F: Future>(call: Arc<Call>, future: F) -> F::Output {
    CALL.scope(call, future).await
}

/// The current call's audit row, for the transaction of the change it makes; `None` outside
/// a call, for a route that is not audited, or once taken.
pub fn take(resource_id: &str) -> Option<AuditEntry> {
    CALL.try_with(|call| {
        let action = call.action?;
        let mut state = call.state();
        if state.taken > 0 && !state.per_change {
            return None;
        }
        state.taken += 1;
        let error_code = state.failure.map(|code| code.as_str().to_owned());
        let resource_id = Some(resource_id.to_owned());
        drop(state);
        Some(call.entry(action, resource_id, false, error_code, json!({})))
    })
    .ok()
    .flatten()
}

/// A row of the current call for `action`, a change it makes besides the one it is audited as
/// (a launch registering its pack's policy); the call's own row is recorded as ever. `None`
/// outside a call.
pub fn beside(action: Action, resource_id: &str) -> Option<AuditEntry> {
    CALL.try_with(|call| call.entry(action, Some(resource_id.to_owned()), false, None, json!({})))
        .ok()
}

/// Undoes [`take`] when the change it was taken for was not written: the edge then records the
/// call with how it was answered.
pub fn put_back() {
    let _ = CALL.try_with(|call| {
        let mut state = call.state();
        state.taken = state.taken.saturating_sub(1);
    });
}

/// How many rows the current call's changes have taken (0 outside a call).
pub fn taken() -> u32 {
    CALL.try_with(|call| call.state().taken).unwrap_or(0)
}

/// Lets every change of the current call take a row of its own rather than the first change
/// only: a batch, one row per run it changed.
pub fn per_change() {
    let _ = CALL.try_with(|call| call.state().per_change = true);
}

/// Marks the current call as failed with `code`: the row the domain writes with its change
/// (say, a runtime that refused a message) records the refusal.
pub fn fail(code: ErrorCode) {
    let _ = CALL.try_with(|call| call.state().failure = Some(code));
}

/// The authenticated actor of the current call (`createdBy`); `None` outside a call or when
/// auth is off.
pub fn actor() -> Option<String> {
    CALL.try_with(|call| {
        (call.principal.kind != super::ActorKind::Anonymous).then(|| call.principal.actor.clone())
    })
    .ok()
    .flatten()
}
