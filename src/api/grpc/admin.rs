//! Proto ⇄ domain conversion for the admin RPCs (audit log, API keys).

use tonic::Status;

use super::{status, to_struct};
use crate::api::proto;
use crate::auth::admin::{Admin, CreatedKey, NewKey};
use crate::domain::audit::{ApiKeyInfo, AuditEntry, AuditQuery};

pub async fn list_audit(
    admin: &Admin,
    request: proto::ListAuditRequest,
) -> Result<proto::ListAuditResponse, Status> {
    let page = admin
        .audit(AuditQuery {
            actor: request.actor,
            action: request.action,
            resource: request.resource,
            resource_id: request.resource_id,
            created_after: request.created_after,
            created_before: request.created_before,
            limit: request.limit.map(i64::from),
            offset: request.offset.map(i64::from),
        })
        .await
        .map_err(status)?;
    Ok(proto::ListAuditResponse {
        data: page
            .data
            .into_iter()
            .map(audit_message)
            .collect::<Result<_, _>>()?,
        total: u32::try_from(page.total).unwrap_or(u32::MAX),
    })
}

fn audit_message(entry: AuditEntry) -> Result<proto::AuditEntry, Status> {
    Ok(proto::AuditEntry {
        id: entry.id,
        actor: entry.actor,
        actor_type: entry.actor_type,
        action: entry.action,
        resource: entry.resource,
        resource_id: entry.resource_id,
        outcome: entry.outcome.as_str().to_owned(),
        error_code: entry.error_code,
        request_id: entry.request_id,
        details: to_struct(&entry.details)?,
        created_at: crate::time::format(&entry.created_at),
    })
}

pub fn key_message(info: ApiKeyInfo) -> proto::ApiKey {
    proto::ApiKey {
        id: info.id,
        actor: info.actor,
        roles: info.roles,
        participants: info.participants,
        prefix: info.prefix,
        created_by: info.created_by,
        created_at: crate::time::format(&info.created_at),
        revoked_at: info.revoked_at.as_ref().map(crate::time::format),
    }
}

pub async fn create_key(
    admin: &Admin,
    request: proto::CreateApiKeyRequest,
) -> Result<proto::CreatedApiKey, Status> {
    let CreatedKey { info, key } = admin
        .create_key(NewKey {
            actor: request.actor,
            roles: request.roles,
            participants: request.participants,
        })
        .await
        .map_err(status)?;
    Ok(proto::CreatedApiKey {
        info: Some(key_message(info)),
        key,
    })
}

pub async fn list_keys(admin: &Admin) -> Result<proto::ListApiKeysResponse, Status> {
    Ok(proto::ListApiKeysResponse {
        data: admin
            .keys()
            .await
            .map_err(status)?
            .into_iter()
            .map(key_message)
            .collect(),
    })
}

pub async fn revoke_key(admin: &Admin, id: &str) -> Result<proto::ApiKey, Status> {
    admin.revoke_key(id).await.map(key_message).map_err(status)
}
