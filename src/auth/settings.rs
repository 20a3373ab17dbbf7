//! The auth settings (`serve --help`, "Auth" group) and the posture rule: with no credential
//! source configured, auth is off on a loopback bind (one warning line) and the service refuses
//! to start on any other bind unless `AUTH_DISABLED=true`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::jwt::{JwtVerifier, KeySource};
use super::keys::Keyring;
use super::{AuthSetup, ThrottleSettings};
use crate::store::Store;

#[derive(Clone, Args)]
#[command(next_help_heading = "Auth")]
pub struct AuthArgs {
    /// API keys, comma separated; each is an `admin` (as the TypeScript control plane's).
    /// Sent as `authorization: Bearer <key>` or `x-api-key: <key>`.
    #[arg(
        long,
        env = "AUTH_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        hide_default_value = true
    )]
    pub auth_api_keys: Vec<SecretString>,

    /// A JSON file of keys with roles: `[{"actor", "key", "roles": [...], "participants"?: [...]}]`
    /// (roles: viewer, operator, admin, agent).
    #[arg(long, env = "AUTH_KEYS_FILE")]
    pub auth_keys_file: Option<PathBuf>,

    /// HS256 secret for JWTs (`sub` is the actor, `roles` and `participants` claims).
    // A `--config` file's values become defaults, which help would print.
    #[arg(
        long,
        env = "AUTH_JWT_SECRET",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub auth_jwt_secret: Option<SecretString>,

    /// A JWKS document (RS256/ES256 keys by `kid`) to verify JWTs with.
    #[arg(long, env = "AUTH_JWT_JWKS_FILE")]
    pub auth_jwt_jwks_file: Option<PathBuf>,

    /// A JWKS URL, fetched at start and again when a token names an unknown `kid`.
    #[arg(long, env = "AUTH_JWT_JWKS_URL")]
    pub auth_jwt_jwks_url: Option<String>,

    /// Shortest time between two JWKS fetches, in ms.
    #[arg(long, env = "AUTH_JWT_JWKS_MIN_REFRESH_MS", default_value_t = 10_000)]
    pub auth_jwt_jwks_min_refresh_ms: u64,

    /// Required `iss` of JWTs (unset: not checked).
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,

    /// Required `aud` of JWTs (unset: not checked).
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,

    /// Serve without auth on a non-loopback bind when no keys or JWT are configured.
    #[arg(long, env = "AUTH_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_disabled: bool,

    /// Serve `/metrics` without credentials.
    #[arg(long, env = "AUTH_PUBLIC_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_public_metrics: bool,

    /// Serve `/openapi.json` and `/docs` without credentials.
    #[arg(long, env = "AUTH_PUBLIC_DOCS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_public_docs: bool,

    /// Writes (POST, PATCH, DELETE and their RPCs) one actor may make per THROTTLE_TTL_MS;
    /// past it, `429 RATE_LIMITED` with `Retry-After`. 0: no limit.
    #[arg(long, env = "THROTTLE_LIMIT", default_value_t = 100)]
    pub throttle_limit: u32,

    /// Reads (and stream opens) one actor may make per THROTTLE_TTL_MS. 0: no limit.
    #[arg(long, env = "THROTTLE_READ_LIMIT", default_value_t = 6_000)]
    pub throttle_read_limit: u32,

    /// The rate-limit window, in ms.
    #[arg(long, env = "THROTTLE_TTL_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub throttle_ttl_ms: u64,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field(
                "auth_api_keys",
                &format_args!("[{} redacted]", self.auth_api_keys.len()),
            )
            .field("auth_keys_file", &self.auth_keys_file)
            .field(
                "auth_jwt_secret",
                &self.auth_jwt_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("auth_jwt_jwks_file", &self.auth_jwt_jwks_file)
            .field("auth_jwt_jwks_url", &self.auth_jwt_jwks_url)
            .field("auth_disabled", &self.auth_disabled)
            .finish_non_exhaustive()
    }
}

impl Default for AuthArgs {
    fn default() -> Self {
        AuthArgs {
            auth_api_keys: Vec::new(),
            auth_keys_file: None,
            auth_jwt_secret: None,
            auth_jwt_jwks_file: None,
            auth_jwt_jwks_url: None,
            auth_jwt_jwks_min_refresh_ms: 10_000,
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
            auth_disabled: false,
            auth_public_metrics: true,
            auth_public_docs: true,
            throttle_limit: 100,
            throttle_read_limit: 6_000,
            throttle_ttl_ms: 60_000,
        }
    }
}

impl AuthArgs {
    pub fn throttle(&self) -> ThrottleSettings {
        ThrottleSettings {
            write_limit: self.throttle_limit,
            read_limit: self.throttle_read_limit,
            window: Duration::from_millis(self.throttle_ttl_ms),
        }
    }

    /// The authenticator for a service listening on `bind`, whose store holds `stored_keys`
    /// active keys; `Err` says why the service must not start.
    pub fn setup(&self, bind: IpAddr, store: Store, stored_keys: u64) -> Result<AuthSetup, String> {
        use secrecy::ExposeSecret as _;
        let api_keys: Vec<String> = self
            .auth_api_keys
            .iter()
            .map(|key| key.expose_secret().to_owned())
            .collect();
        let keys_file = match &self.auth_keys_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|error| format!("AUTH_KEYS_FILE {}: {error}", path.display()))?,
            ),
            None => None,
        };
        let keyring = Keyring::new(&api_keys, keys_file.as_deref(), Some(store))
            .map_err(|error| format!("AUTH_KEYS_FILE: {error}"))?;
        let jwt = self.jwt()?;
        let explicit = keyring.has_static_keys() || jwt.is_some();
        // AUTH_DISABLED=true is the operator's word over keys stored in the database.
        let configured = explicit || (stored_keys > 0 && !self.auth_disabled);
        if !explicit && stored_keys > 0 && self.auth_disabled {
            tracing::warn!(
                stored_keys,
                "AUTH_DISABLED=true: stored API keys are ignored"
            );
        }
        if !configured && !bind.is_loopback() && !self.auth_disabled {
            return Err(format!(
                "refusing to serve on {bind} without authentication: set AUTH_API_KEYS, \
                 AUTH_KEYS_FILE, AUTH_JWT_SECRET or AUTH_JWT_JWKS_FILE/URL (or create a key with \
                 `macp-control-plane keys create`), or AUTH_DISABLED=true to serve everyone"
            ));
        }
        Ok(AuthSetup {
            keys: keyring,
            jwt,
            enabled: configured,
            explicitly_disabled: self.auth_disabled && !explicit,
            public_metrics: self.auth_public_metrics,
            public_docs: self.auth_public_docs,
        })
    }

    fn jwt(&self) -> Result<Option<JwtVerifier>, String> {
        let sources = [
            self.auth_jwt_secret.is_some(),
            self.auth_jwt_jwks_file.is_some(),
            self.auth_jwt_jwks_url.is_some(),
        ];
        let source = match sources.iter().filter(|set| **set).count() {
            0 => return Ok(None),
            1 => {
                if let Some(secret) = &self.auth_jwt_secret {
                    use secrecy::ExposeSecret as _;
                    if secret.expose_secret().len() < 32 {
                        return Err("AUTH_JWT_SECRET must have at least 32 characters".to_owned());
                    }
                    KeySource::Secret(secret.clone())
                } else if let Some(path) = &self.auth_jwt_jwks_file {
                    let text = std::fs::read_to_string(path).map_err(|error| {
                        format!("AUTH_JWT_JWKS_FILE {}: {error}", path.display())
                    })?;
                    KeySource::Jwks(serde_json::from_str(&text).map_err(|error| {
                        format!(
                            "AUTH_JWT_JWKS_FILE {}: not a JWKS document: {error}",
                            path.display()
                        )
                    })?)
                } else {
                    KeySource::Url {
                        url: self.auth_jwt_jwks_url.clone().unwrap_or_default(),
                        min_refresh: Duration::from_millis(self.auth_jwt_jwks_min_refresh_ms),
                    }
                }
            }
            _ => {
                return Err(
                    "set one of AUTH_JWT_SECRET, AUTH_JWT_JWKS_FILE and AUTH_JWT_JWKS_URL"
                        .to_owned(),
                );
            }
        };
        JwtVerifier::new(
            source,
            self.auth_jwt_issuer.clone(),
            self.auth_jwt_audience.clone(),
        )
        .map(Some)
    }
}
