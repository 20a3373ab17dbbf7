//! API keys: static ones from `AUTH_API_KEYS` / `AUTH_KEYS_FILE`, and keys managed through the
//! admin API and `keys` CLI, stored as SHA-256 digests. Keys are high-entropy, so one unsalted
//! SHA-256 is enough to make a stolen table useless, and comparing digests in constant time
//! leaves no timing oracle on the key itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{ActorKind, Principal, Role, parse_roles, unauthenticated};
use crate::domain::audit::StoredKey;
use crate::error::ApiError;
use crate::store::Store;

/// How long a stored key's lookup is reused; a key revoked through another replica stops
/// working within it (this replica's own revocations take effect at once).
const STORED_KEY_TTL: Duration = Duration::from_secs(5);

/// What new keys start with, so they are recognisable in a leak scan.
pub const KEY_PREFIX: &str = "macp_";

/// A key's SHA-256, as stored.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn digest_hex(key: &str) -> String {
    digest(key)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A new random key (256 bits from the OS) and the prefix shown in listings.
pub fn generate() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| ApiError::internal(format!("no randomness for a key: {error}")))?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let prefix = key.chars().take(KEY_PREFIX.len() + 6).collect();
    Ok((key, prefix))
}

/// An entry of `AUTH_KEYS_FILE`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    actor: String,
    key: String,
    roles: Vec<String>,
    #[serde(default)]
    participants: Vec<String>,
}

/// A configured key: its digest and whom it stands for.
struct StaticKey {
    digest: [u8; 32],
    principal: Principal,
}

/// Every key the service accepts.
pub struct Keyring {
    statics: Vec<StaticKey>,
    store: Option<Store>,
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Keyring {
    /// `AUTH_API_KEYS` (each an admin, named `key-` and the start of its digest) and the
    /// entries of `AUTH_KEYS_FILE`'s JSON; `store` serves managed keys.
    pub fn new(
        api_keys: &[String],
        keys_file: Option<&str>,
        store: Option<Store>,
    ) -> Result<Keyring, String> {
        let mut statics = Vec::new();
        for key in api_keys
            .iter()
            .map(|key| key.trim())
            .filter(|key| !key.is_empty())
        {
            statics.push(StaticKey {
                digest: digest(key),
                principal: Principal {
                    // Named by its digest, never by its own characters: actors end up in audit
                    // rows and on runs others read.
                    actor: format!("key-{}", &digest_hex(key)[..12]),
                    kind: ActorKind::ApiKey,
                    roles: vec![Role::Admin],
                    participants: Vec::new(),
                },
            });
        }
        if let Some(text) = keys_file {
            let entries: Vec<FileEntry> = serde_json::from_str(text).map_err(|error| {
                format!("expected a JSON array of {{actor, key, roles, participants?}}: {error}")
            })?;
            for (index, entry) in entries.into_iter().enumerate() {
                let roles =
                    parse_roles(&entry.roles).map_err(|error| format!("[{index}]: {error}"))?;
                if entry.key.trim().len() < 16 {
                    return Err(format!("[{index}]: a key must have at least 16 characters"));
                }
                if entry.actor.trim().is_empty() {
                    return Err(format!("[{index}]: actor must not be empty"));
                }
                statics.push(StaticKey {
                    digest: digest(entry.key.trim()),
                    principal: Principal {
                        actor: entry.actor,
                        kind: ActorKind::ApiKey,
                        roles,
                        participants: entry.participants,
                    },
                });
            }
        }
        Ok(Keyring {
            statics,
            store,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any key is configured or can be stored (auth is on).
    pub fn has_static_keys(&self) -> bool {
        !self.statics.is_empty()
    }

    pub(super) async fn principal(&self, key: &str) -> Result<Principal, ApiError> {
        let presented = digest(key);
        // Every static key is compared, so the time taken says nothing about which matched.
        let mut found = None;
        for entry in &self.statics {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(&entry.principal);
            }
        }
        if let Some(principal) = found {
            return Ok(principal.clone());
        }
        if let Some(principal) = self.cached(&presented) {
            return Ok(principal);
        }
        let Some(store) = &self.store else {
            return Err(unauthenticated());
        };
        let hex: String = presented.iter().map(|byte| format!("{byte:02x}")).collect();
        let stored = store.api_key_by_digest(&hex).await?;
        match stored {
            Some(stored) if bool::from(stored.digest.as_bytes().ct_eq(hex.as_bytes())) => {
                let principal = stored_principal(stored)?;
                self.lock_cache()
                    .insert(presented, (principal.clone(), Instant::now()));
                Ok(principal)
            }
            _ => Err(unauthenticated()),
        }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut cache = self.lock_cache();
        match cache.get(digest) {
            Some((principal, at)) if at.elapsed() < STORED_KEY_TTL => Some(principal.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    /// Forgets every cached stored key (after a revocation here).
    pub fn forget_stored(&self) {
        self.lock_cache().clear();
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, Instant)>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn stored_principal(stored: StoredKey) -> Result<Principal, ApiError> {
    let roles = parse_roles(&stored.roles)
        .map_err(|error| ApiError::internal(format!("stored key {}: {error}", stored.id)))?;
    Ok(Principal {
        actor: stored.actor,
        kind: ActorKind::ApiKey,
        roles,
        participants: stored.participants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_keys_are_admins_and_file_keys_carry_their_roles() {
        let file = r#"[{"actor": "risk", "key": "risk-key-0123456789", "roles": ["agent"], "participants": ["risk-agent"]}]"#;
        let ring = Keyring::new(&["admin-key-1".to_owned()], Some(file), None).unwrap();
        let admin = ring.principal("admin-key-1").await.unwrap();
        assert_eq!(admin.roles, vec![Role::Admin]);
        assert_eq!(
            admin.actor,
            format!("key-{}", &digest_hex("admin-key-1")[..12])
        );
        assert!(!admin.actor.contains("admin-key"));
        let agent = ring.principal("risk-key-0123456789").await.unwrap();
        assert_eq!(agent.actor, "risk");
        assert_eq!(agent.participants, vec!["risk-agent".to_owned()]);
        let refused = ring.principal("nope").await.unwrap_err();
        assert_eq!(refused.message, super::super::UNAUTHENTICATED_MESSAGE);
    }

    #[test]
    fn a_bad_keys_file_names_the_entry() {
        let error = Keyring::new(
            &[],
            Some(r#"[{"actor": "a", "key": "k", "roles": ["root"]}]"#),
            None,
        )
        .err()
        .unwrap();
        assert!(error.contains("[0]") && error.contains("root"), "{error}");
        assert!(Keyring::new(&[], Some("{}"), None).is_err());
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let (first, prefix) = generate().unwrap();
        let (second, _) = generate().unwrap();
        assert_ne!(first, second);
        assert!(first.starts_with(KEY_PREFIX) && first.len() > 40);
        assert!(first.starts_with(&prefix));
    }
}
