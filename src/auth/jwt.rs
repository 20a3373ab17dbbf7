//! JWT verification: HS256 with a shared secret, or RS256/ES256 against a JWKS document (a file,
//! or a URL fetched at start and again when a token names a key id it does not hold). Issuer and
//! audience are checked when configured; `exp`/`nbf` with a small leeway. Verified tokens are
//! cached by digest until they expire, so a client reusing one pays for the signature once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::{ActorKind, Principal, parse_roles, unauthenticated};
use crate::error::ApiError;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Verified tokens kept at most; past it the cache starts over.
const CACHE_ENTRIES: usize = 10_000;

/// Where verification keys come from.
pub enum KeySource {
    Secret(SecretString),
    Jwks(JwkSet),
    Url {
        url: String,
        /// Shortest time between two fetches (unknown key ids cannot make us hammer the issuer).
        min_refresh: Duration,
    },
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    roles: Roles,
    #[serde(default)]
    participants: Vec<String>,
}

/// A `roles` claim: an array of names, or one name.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Roles {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: KeySource,
    issuer: Option<String>,
    audience: Option<String>,
    /// The last fetched set: read without waiting, so a fetch in flight (one at a time, under
    /// `fetching`) holds up only tokens that name a key id it does not have.
    jwks: std::sync::RwLock<Option<Arc<JwkSet>>>,
    /// When the set was last fetched.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    verified: Mutex<HashMap<[u8; 32], (Principal, u64)>>,
    http: Option<reqwest::Client>,
}

impl JwtVerifier {
    pub fn new(
        source: KeySource,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<JwtVerifier, String> {
        let http = match &source {
            KeySource::Url { url, .. } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "AUTH_JWT_JWKS_URL must be an http(s) URL, got '{url}'"
                    ));
                }
                Some(
                    reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .map_err(|error| format!("JWKS client: {error}"))?,
                )
            }
            _ => None,
        };
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                source,
                issuer,
                audience,
                jwks: std::sync::RwLock::new(None),
                fetching: tokio::sync::Mutex::new(None),
                verified: Mutex::new(HashMap::new()),
                http,
            }),
        })
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let digest = super::keys::digest(token);
        let now = unix_now();
        if let Some(principal) = self.cached(&digest, now) {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated())?;
        let key = self.key_for(&header).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.inner.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.inner.issuer {
            validation.set_issuer(&[issuer]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| {
            tracing::debug!(%error, "JWT refused");
            unauthenticated()
        })?;
        let claims = data.claims;
        let names = match claims.roles {
            Roles::None => Vec::new(),
            Roles::One(name) => vec![name],
            Roles::Many(names) => names,
        };
        // A token naming no role or an unknown one is not a credential we can act on.
        let roles = parse_roles(&names).map_err(|_| unauthenticated())?;
        if claims.sub.is_empty() {
            return Err(unauthenticated());
        }
        let principal = Principal {
            actor: claims.sub,
            kind: ActorKind::Jwt,
            roles,
            participants: claims.participants,
        };
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            digest,
            (principal.clone(), claims.exp.saturating_add(LEEWAY_SECS)),
        );
        Ok(principal)
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let mut cache = self.lock_cache();
        match cache.get(digest) {
            Some((principal, until)) if now < *until => Some(principal.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, u64)>> {
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The key that must have signed a token with this header.
    async fn key_for(&self, header: &jsonwebtoken::Header) -> Result<DecodingKey, ApiError> {
        match &self.inner.source {
            KeySource::Secret(secret) => {
                if header.alg != Algorithm::HS256 {
                    return Err(unauthenticated());
                }
                Ok(DecodingKey::from_secret(secret.expose_secret().as_bytes()))
            }
            KeySource::Jwks(set) => jwk_key(set, header),
            KeySource::Url { min_refresh, .. } => {
                if let Some(set) = self.snapshot()
                    && let Ok(key) = jwk_key(&set, header)
                {
                    return Ok(key);
                }
                let mut fetched_at = self.inner.fetching.lock().await;
                // Another request may have fetched while this one waited.
                if let Some(set) = self.snapshot()
                    && let Ok(key) = jwk_key(&set, header)
                {
                    return Ok(key);
                }
                // Unknown key id: the issuer may have rotated; fetch again, but not too often.
                if fetched_at.is_some_and(|at| at.elapsed() < *min_refresh) {
                    return Err(unauthenticated());
                }
                *fetched_at = Some(Instant::now());
                self.refresh().await;
                drop(fetched_at);
                self.snapshot()
                    .map_or_else(|| Err(unauthenticated()), |set| jwk_key(&set, header))
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let (KeySource::Url { url, .. }, Some(http)) = (&self.inner.source, &self.inner.http)
        else {
            return Err("no JWKS URL".to_owned());
        };
        let response = http
            .get(url)
            .send()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        response
            .json::<JwkSet>()
            .await
            .map_err(|error| format!("GET {url}: not a JWKS document: {error}"))
    }

    fn snapshot(&self) -> Option<Arc<JwkSet>> {
        self.inner
            .jwks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Fetches the set and keeps it; a failed fetch keeps the set there was.
    async fn refresh(&self) {
        match self.fetch().await {
            Ok(set) => {
                *self
                    .inner
                    .jwks
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(set));
            }
            Err(error) => tracing::warn!(%error, "JWKS fetch failed"),
        }
    }

    /// Fetches the JWKS now (at start, so a wrong URL shows up in the log at once).
    pub async fn prefetch(&self) {
        if matches!(self.inner.source, KeySource::Url { .. }) {
            let mut fetched_at = self.inner.fetching.lock().await;
            *fetched_at = Some(Instant::now());
            self.refresh().await;
        }
    }
}

/// The JWKS key named by the header's `kid` (or the only key, when the token names none), for
/// the asymmetric algorithms we accept.
fn jwk_key(set: &JwkSet, header: &jsonwebtoken::Header) -> Result<DecodingKey, ApiError> {
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(unauthenticated());
    }
    let jwk = match &header.kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
    .ok_or_else(unauthenticated)?;
    DecodingKey::from_jwk(jwk).map_err(|_| unauthenticated())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
