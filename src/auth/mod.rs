//! Who is calling, and what they may do: principals from API keys (static, from a file, or
//! stored hashed) and JWTs, the four roles and the permissions they grant, per-actor rate
//! limits, and the ambient call that audit rows and `createdBy` are stamped from. Transport-free:
//! `api::guard` reads credentials off requests and applies all of this at the edge.

pub mod admin;
pub mod audit;
pub mod cli;
mod jwt;
pub mod keys;
mod limits;
mod settings;

use std::sync::Arc;

pub use jwt::JwtVerifier;
pub use limits::{Throttle, ThrottleSettings};
pub use settings::AuthArgs;

use crate::error::{ApiError, ErrorCode};

/// The one message of every refused credential, so a caller cannot tell a missing key from an
/// unknown, expired or forged one.
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid credentials";

/// A role, as keys and tokens name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Agent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Whether the role grants `permission` outright (an agent's grants are scoped: see
    /// [`Access::AsAgent`]).
    fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Viewer => matches!(permission, Public | Metrics | Docs | Read | ReadRun),
            Role::Operator => !matches!(permission, Admin),
            Role::Admin => true,
            Role::Agent => matches!(permission, Public),
        }
    }
}

/// What a route or RPC requires. Each has exactly one (`api::routes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// No credential needed (`/healthz`, `/readyz`).
    Public,
    /// `/metrics`: public unless `AUTH_PUBLIC_METRICS=false`, then a reader's.
    Metrics,
    /// `/openapi.json` and `/docs`: public unless `AUTH_PUBLIC_DOCS=false`, then a reader's.
    Docs,
    /// Reads that are not about one run (lists, registry, runtime, reflection).
    Read,
    /// Reads of one run: viewers, and agents of that run.
    ReadRun,
    /// Messages, signals and context into a run: operators as anyone, agents as themselves.
    Send,
    /// Starting, cancelling and shaping runs.
    Operate,
    /// Keys, audit and the service's own settings.
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Public => "public",
            Permission::Metrics => "metrics",
            Permission::Docs => "docs",
            Permission::Read => "read",
            Permission::ReadRun => "read_run",
            Permission::Send => "send",
            Permission::Operate => "operate",
            Permission::Admin => "admin",
        }
    }
}

/// How a principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    ApiKey,
    Jwt,
    /// Auth is off: every caller is this one principal, with every role.
    Anonymous,
    /// A refused credential (audit rows of refused calls only).
    Unauthenticated,
    /// The `keys` CLI, run by someone with access to the database.
    Local,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::ApiKey => "api_key",
            ActorKind::Jwt => "jwt",
            ActorKind::Anonymous => "anonymous",
            ActorKind::Unauthenticated => "unauthenticated",
            ActorKind::Local => "local",
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub actor: String,
    pub kind: ActorKind,
    pub roles: Vec<Role>,
    /// The participant ids an agent sends and reads as.
    pub participants: Vec<String>,
}

/// What a principal may do with a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Full,
    /// Only within runs the agent takes part in, and only as its own participant ids.
    AsAgent,
    Denied,
}

impl Principal {
    /// Everyone, with every role: auth is off.
    pub fn anonymous() -> Principal {
        Principal {
            actor: "anonymous".to_owned(),
            kind: ActorKind::Anonymous,
            roles: vec![Role::Admin],
            participants: Vec::new(),
        }
    }

    /// Whoever presented no valid credential, for the audit row of the refusal.
    pub fn unauthenticated() -> Principal {
        Principal {
            actor: "unauthenticated".to_owned(),
            kind: ActorKind::Unauthenticated,
            roles: Vec::new(),
            participants: Vec::new(),
        }
    }

    pub fn access(&self, permission: Permission) -> Access {
        if self.roles.iter().any(|role| role.grants(permission)) {
            Access::Full
        } else if self.roles.contains(&Role::Agent)
            && matches!(permission, Permission::ReadRun | Permission::Send)
        {
            Access::AsAgent
        } else {
            Access::Denied
        }
    }

    /// Whether an agent principal speaks as `participant`.
    pub fn is_participant(&self, participant: &str) -> bool {
        self.participants.iter().any(|own| own == participant)
    }

    pub fn role_names(&self) -> Vec<&'static str> {
        self.roles.iter().map(|role| role.as_str()).collect()
    }
}

/// Roles from their names; an unknown one is an error naming it.
pub fn parse_roles(names: &[String]) -> Result<Vec<Role>, String> {
    if names.is_empty() {
        return Err(format!("at least one role is required ({})", role_list()));
    }
    names
        .iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| format!("unknown role '{name}' ({})", role_list()))
        })
        .collect()
}

fn role_list() -> String {
    Role::ALL.map(Role::as_str).join(", ")
}

pub fn unauthenticated() -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, UNAUTHENTICATED_MESSAGE)
}

pub fn forbidden(permission: Permission) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "this credential lacks the '{}' permission",
            permission.as_str()
        ),
    )
    .with_details(serde_json::json!({"permission": permission.as_str()}))
}

pub fn not_your_participant(participant: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotYourParticipant,
        format!("this credential may not send as '{participant}'"),
    )
    .with_details(serde_json::json!({"participant": participant}))
}

/// Everything that decides who a caller is: static and stored keys, JWT verification, and
/// whether auth is on at all.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    keys: keys::Keyring,
    jwt: Option<JwtVerifier>,
    /// Turns on for good when the first key is stored while it was off.
    enabled: std::sync::atomic::AtomicBool,
    explicitly_disabled: bool,
    public_metrics: bool,
    public_docs: bool,
}

/// What the authenticator is built from.
pub struct AuthSetup {
    pub keys: keys::Keyring,
    pub jwt: Option<JwtVerifier>,
    /// False only when nothing is configured (and the posture allows it).
    pub enabled: bool,
    /// `AUTH_DISABLED=true`: storing a key does not turn auth on.
    pub explicitly_disabled: bool,
    pub public_metrics: bool,
    pub public_docs: bool,
}

impl Authenticator {
    pub fn new(setup: AuthSetup) -> Authenticator {
        Authenticator {
            inner: Arc::new(Inner {
                keys: setup.keys,
                jwt: setup.jwt,
                enabled: setup.enabled.into(),
                explicitly_disabled: setup.explicitly_disabled,
                public_metrics: setup.public_metrics,
                public_docs: setup.public_docs,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner
            .enabled
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Turns auth on when a key is stored while it is off (whoever holds the key expects it to
    /// matter), unless it was turned off explicitly (`AUTH_DISABLED=true`: then anyone could
    /// lock everyone else out). Whether this call turned it on.
    pub fn enable_on_first_key(&self) -> bool {
        !self.inner.explicitly_disabled
            && !self
                .inner
                .enabled
                .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Whether `permission` needs no credential.
    pub fn is_public(&self, permission: Permission) -> bool {
        match permission {
            Permission::Public => true,
            Permission::Metrics => self.inner.public_metrics,
            Permission::Docs => self.inner.public_docs,
            _ => false,
        }
    }

    /// The principal a credential stands for. A JWT is anything with two dots; everything
    /// else is tried as an API key.
    pub async fn authenticate(&self, credential: Option<&str>) -> Result<Principal, ApiError> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let credential = credential
            .filter(|text| !text.is_empty())
            .ok_or_else(unauthenticated)?;
        if credential.bytes().filter(|byte| *byte == b'.').count() == 2 {
            return match &self.inner.jwt {
                Some(jwt) => jwt.verify(credential).await,
                None => Err(unauthenticated()),
            };
        }
        self.inner.keys.principal(credential).await
    }

    pub fn keys(&self) -> &keys::Keyring {
        &self.inner.keys
    }
}
