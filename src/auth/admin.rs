//! The admin API's domain half: the audit log and stored API keys. Shared by the REST routes,
//! the gRPC service and the `keys` CLI (which runs it against the database directly).

use serde_json::Value;

use super::{Authenticator, parse_roles};
use crate::domain::audit::{ApiKeyInfo, AuditEntry, AuditPage, AuditQuery, MAX_KEY_NAME_LEN};
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::store::Store;

#[derive(Clone)]
pub struct Admin {
    store: Store,
    auth: Option<Authenticator>,
}

/// A key request, as either transport or the CLI received it.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub actor: String,
    pub roles: Vec<String>,
    pub participants: Vec<String>,
}

/// A key just stored: the key itself is here and nowhere else.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedKey {
    pub info: ApiKeyInfo,
    pub key: String,
}

impl Admin {
    /// `auth` is the serving authenticator (so a revocation takes effect at once); the CLI has
    /// none.
    pub fn new(store: Store, auth: Option<Authenticator>) -> Admin {
        Admin { store, auth }
    }

    pub async fn audit(&self, query: AuditQuery) -> Result<AuditPage, ApiError> {
        let filter = query.into_filter()?;
        Ok(self.store.list_audit(&filter).await?)
    }

    /// Records a call the domain did not record with a change of its own.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), ApiError> {
        Ok(self.store.insert_audit(entry).await?)
    }

    /// `{actor, roles: [...], participants?: [...]}` from a JSON body.
    pub fn parse_new_key(body: &Value) -> Result<NewKey, ApiError> {
        let mut errors = Vec::new();
        let Some(object) = body.as_object() else {
            return Err(ApiError::validation(vec![FieldError::new(
                "$",
                "must be an object",
            )]));
        };
        for key in object.keys() {
            if !["actor", "roles", "participants"].contains(&key.as_str()) {
                errors.push(FieldError::new(key.clone(), "is not a known field"));
            }
        }
        let strings = |field: &str, errors: &mut Vec<FieldError>| match object.get(field) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| match item.as_str() {
                    Some(text) => Some(text.to_owned()),
                    None => {
                        errors.push(FieldError::new(
                            format!("{field}[{index}]"),
                            "must be a string",
                        ));
                        None
                    }
                })
                .collect(),
            Some(_) => {
                errors.push(FieldError::new(field, "must be an array of strings"));
                Vec::new()
            }
        };
        let roles = strings("roles", &mut errors);
        let participants = strings("participants", &mut errors);
        let actor = match object.get("actor") {
            Some(Value::String(actor)) => actor.clone(),
            Some(_) => {
                errors.push(FieldError::new("actor", "must be a string"));
                String::new()
            }
            None => {
                errors.push(FieldError::new("actor", "is required"));
                String::new()
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(NewKey {
            actor,
            roles,
            participants,
        })
    }

    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey, ApiError> {
        let mut errors = Vec::new();
        let actor = new.actor.trim().to_owned();
        if actor.is_empty()
            || actor.chars().count() > MAX_KEY_NAME_LEN
            || actor.chars().any(char::is_control)
        {
            errors.push(FieldError::new(
                "actor",
                format!("must be 1 to {MAX_KEY_NAME_LEN} printable characters"),
            ));
        }
        let roles = match parse_roles(&new.roles) {
            Ok(_) if new.roles.len() > super::Role::ALL.len() => {
                errors.push(FieldError::new(
                    "roles",
                    format!("at most {} roles", super::Role::ALL.len()),
                ));
                Vec::new()
            }
            Ok(mut roles) => {
                roles.sort_by_key(|role| role.as_str());
                roles.dedup();
                roles
            }
            Err(error) => {
                errors.push(FieldError::new("roles", error));
                Vec::new()
            }
        };
        for (index, participant) in new.participants.iter().enumerate() {
            if participant.trim().is_empty()
                || participant.chars().count() > MAX_KEY_NAME_LEN
                || participant.chars().any(char::is_control)
            {
                errors.push(FieldError::new(
                    format!("participants[{index}]"),
                    format!("must be 1 to {MAX_KEY_NAME_LEN} printable characters"),
                ));
            }
        }
        let agent = roles.contains(&super::Role::Agent);
        if agent && new.participants.is_empty() {
            errors.push(FieldError::new(
                "participants",
                "an agent key needs the participant ids it sends as",
            ));
        }
        if !agent && !new.participants.is_empty() {
            errors.push(FieldError::new(
                "participants",
                "only agent keys carry participant ids",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let (key, prefix) = super::keys::generate()?;
        let id = uuid::Uuid::new_v4().to_string();
        let info = ApiKeyInfo {
            id: id.clone(),
            actor,
            roles: roles.iter().map(|role| role.as_str().to_owned()).collect(),
            participants: new.participants,
            prefix,
            created_by: super::audit::actor(),
            created_at: crate::time::now(),
            revoked_at: None,
        };
        self.store
            .create_api_key(
                &info,
                super::keys::digest_hex(&key),
                super::audit::take(&id),
            )
            .await
            .inspect_err(|_| super::audit::put_back())?;
        if let Some(auth) = &self.auth
            && auth.enable_on_first_key()
        {
            tracing::warn!("an API key was stored: authentication is on from now on");
        }
        Ok(CreatedKey { info, key })
    }

    pub async fn keys(&self) -> Result<Vec<ApiKeyInfo>, ApiError> {
        Ok(self.store.list_api_keys().await?)
    }

    pub async fn revoke_key(&self, id: &str) -> Result<ApiKeyInfo, ApiError> {
        let revoked = match self.store.revoke_api_key(id, super::audit::take(id)).await {
            Ok(Some(revoked)) => revoked,
            // Nothing was revoked, so no change recorded the call: the edge does.
            Ok(None) => {
                super::audit::put_back();
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no API key {id}"),
                ));
            }
            Err(error) => {
                super::audit::put_back();
                return Err(error.into());
            }
        };
        if let Some(auth) = &self.auth {
            auth.keys().forget_stored();
        }
        Ok(revoked)
    }
}
