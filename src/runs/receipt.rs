//! Decision receipts (RFC-MACP-0013 §13): the runtime's signed `macp-receipt/1` document for a
//! resolved session. Fetched once, when the run ends on its resolved session, and recorded as
//! `decision.receipt` in the same transaction as `run.completed` (so a finalize repeated after a
//! restart finds the run terminal and records nothing twice); served by `GetRunReceipt`, and
//! checked against the keys the runtime publishes (`GetReceiptKeys`) by [`check`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use macp_runtime::macp_core::receipt::{self as core_receipt, TrustedKeys, Verification};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::service::RunService;
use crate::domain::query::EventQuery;
use crate::error::{ApiError, ErrorCode};
use crate::events::canonical::{EventDraft, Source, Subject, types};
use crate::time::Timestamp;

/// What a `decision.receipt` event carries: the receipt as the runtime served it, and what a
/// reader wants without parsing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptRecord {
    pub session_id: String,
    /// `runtime:<MACP_RUNTIME_ID>`.
    pub issuer: String,
    /// The runtime's public key id (`kid`) the receipt is signed with.
    pub key_id: String,
    /// The JWS algorithm (`EdDSA`).
    pub algorithm: String,
    /// The JWS signature, base64url.
    pub signature: String,
    pub issued_at: String,
    pub commitment_hash: String,
    pub receipt_format: String,
    /// The receipt document, byte for byte as the runtime issued it: what a verifier checks.
    pub receipt_json: String,
}

/// A run's receipt and the event it was recorded in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReceipt {
    pub run_id: String,
    pub seq: i64,
    #[serde(flatten)]
    pub record: ReceiptRecord,
}

/// The record of a signed receipt; `None` for one with no `jws` attestation (an unsigned
/// receipt vouches for nothing, so it is not recorded) or that is not a receipt.
pub fn record(receipt_json: &str) -> Option<ReceiptRecord> {
    let receipt: Value = serde_json::from_str(receipt_json).ok()?;
    let text = |key: &str| receipt.get(key).and_then(Value::as_str).map(str::to_owned);
    let jws = receipt
        .get("attestations")?
        .as_array()?
        .iter()
        .find(|attestation| attestation.get("type").and_then(Value::as_str) == Some("jws"))?
        .get("jws")?
        .as_str()?;
    // A detached-payload compact JWS: `<header>..<signature>`.
    let (header, signature) = jws.split_once("..")?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    let header_text = |key: &str| header.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(ReceiptRecord {
        session_id: text("session_id")?,
        issuer: text("issuer")?,
        key_id: header_text("kid")?,
        algorithm: header_text("alg")?,
        signature: signature.to_owned(),
        issued_at: text("issued_at")?,
        commitment_hash: text("commitment_hash")?,
        receipt_format: text("receipt_format")?,
        receipt_json: receipt_json.to_owned(),
    })
}

/// Checks a receipt document against a JWK Set (the runtime's `GetReceiptKeys`): integrity (the
/// commitment has the recorded hash), then each attestation against the keys. Verified when the
/// verdict is `attested`. `Err` when either text is not what it should be.
pub fn check(receipt_json: &str, jwks: &Value) -> Result<Verification, String> {
    let receipt: Value = serde_json::from_str(receipt_json)
        .map_err(|error| format!("the receipt is not JSON: {error}"))?;
    let mut trusted = TrustedKeys::new();
    core_receipt::add_jwks(jwks, &mut trusted)
        .map_err(|error| format!("the runtime's key set: {error}"))?;
    Ok(core_receipt::verify(&receipt, &trusted))
}

/// Whether a check found the receipt signed by a trusted key with its integrity intact.
pub fn verified(verification: &Verification) -> bool {
    verification.verdict == core_receipt::Verdict::Attested
}

fn not_found(run_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ReceiptNotFound,
        format!(
            "run {run_id} has no decision receipt: its session has not resolved, or the runtime \
             does not sign receipts (MACP_RECEIPT_SIGNING_KEY_PATH)"
        ),
    )
}

impl RunService {
    /// The `decision.receipt` event of a run ending now on its resolved session, when the
    /// runtime signs receipts. Nothing when it does not, when the session's mode has no receipt
    /// (the runtime answers RECEIPT_UNAVAILABLE) or when the runtime cannot be asked: the run
    /// ends all the same.
    pub(super) async fn receipt_event(
        &self,
        run_id: &str,
        session_id: &str,
        reader: &str,
        now: Timestamp,
    ) -> Option<EventDraft> {
        match self.runtime_traits().await {
            Ok(traits) if traits.signs_receipts => {}
            Ok(_) => return None,
            Err(error) => {
                tracing::warn!(run_id, %error, "decision receipt: runtime capabilities unknown");
                return None;
            }
        }
        let receipt_json = match self.runtime().decision_receipt(session_id, reader).await {
            Ok(receipt_json) => receipt_json,
            Err(error) if error.runtime_code() == Some("RECEIPT_UNAVAILABLE") => return None,
            Err(error) => {
                tracing::warn!(run_id, %error, "decision receipt: not fetched");
                return None;
            }
        };
        let Some(record) = record(&receipt_json) else {
            tracing::warn!(
                run_id,
                "decision receipt: the runtime's receipt is not signed"
            );
            return None;
        };
        let data = serde_json::to_value(record).ok()?;
        Some(EventDraft::new(
            types::DECISION_RECEIPT,
            now,
            Some(Subject::new("run", run_id.to_owned())),
            Source::control_plane("run-service"),
            data,
        ))
    }

    /// The run's decision receipt. RUN_NOT_FOUND for an unknown run, RECEIPT_NOT_FOUND when it
    /// recorded none.
    pub async fn receipt(&self, run_id: &str) -> Result<RunReceipt, ApiError> {
        self.get(run_id).await?;
        let query = EventQuery {
            run_id: Some(run_id.to_owned()),
            types: vec![types::DECISION_RECEIPT.to_owned()],
            limit: 1,
            ..EventQuery::default()
        };
        let event = self
            .store()
            .query_events(&query)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| not_found(run_id))?;
        let record = serde_json::from_value(event.data).map_err(|error| {
            ApiError::new(
                ErrorCode::Internal,
                format!("run {run_id}'s stored decision receipt is unreadable: {error}"),
            )
        })?;
        Ok(RunReceipt {
            run_id: event.run_id,
            seq: event.seq,
            record,
        })
    }

    /// The runtime's receipt verification keys (a JWK Set), asked of it now.
    pub async fn runtime_receipt_keys(&self) -> Result<Value, ApiError> {
        let text = self
            .runtime()
            .receipt_keys()
            .await
            .map_err(|error| error.to_api_error())?;
        serde_json::from_str(&text).map_err(|error| {
            ApiError::new(
                ErrorCode::RuntimeRejected,
                format!("the runtime's receipt keys are not JSON: {error}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use macp_runtime::macp_core::receipt::{ReceiptInputs, ReceiptSigner, build};
    use macp_runtime::pb::CommitmentPayload;
    use prost::Message;

    fn receipt(signer: Option<&ReceiptSigner>) -> String {
        let wire = CommitmentPayload {
            commitment_id: "c-1".to_owned(),
            action: "approve".to_owned(),
            authority_scope: "payments".to_owned(),
            reason: "all agreed".to_owned(),
            mode_version: "1.0.0".to_owned(),
            policy_version: "policy.default".to_owned(),
            configuration_version: "config.default".to_owned(),
            outcome_positive: true,
            ..CommitmentPayload::default()
        }
        .encode_to_vec();
        let inputs = ReceiptInputs::new(
            "s-1",
            "macp.mode.decision.v1",
            &wire,
            "runtime:test",
            "2026-12-07T00:00:00Z",
        );
        String::from_utf8(build(&inputs, signer).expect("builds")).expect("utf-8")
    }

    fn signer() -> ReceiptSigner {
        ReceiptSigner::from_seed(&[7; 32], "k1").expect("a signer")
    }

    fn jwks(signer: &ReceiptSigner) -> Value {
        serde_json::json!({ "keys": [signer.public_jwk()] })
    }

    #[test]
    fn a_signed_receipt_is_recorded_with_its_key_and_signature() {
        let signer = signer();
        let text = receipt(Some(&signer));
        let record = record(&text).expect("signed");
        assert_eq!(record.key_id, "k1");
        assert_eq!(record.algorithm, "EdDSA");
        assert_eq!(record.issuer, "runtime:test");
        assert_eq!(record.session_id, "s-1");
        assert_eq!(record.receipt_format, "macp-receipt/1");
        assert!(text.contains(&record.signature));
        assert!(verified(&check(&text, &jwks(&signer)).expect("checked")));
    }

    #[test]
    fn an_unsigned_receipt_is_not_recorded() {
        assert_eq!(record(&receipt(None)), None);
        assert_eq!(record("not json"), None);
    }

    #[test]
    fn a_tampered_receipt_or_another_key_does_not_verify() {
        let signer = signer();
        let text = receipt(Some(&signer));
        let tampered = text.replace("\"approve\"", "\"reject\"");
        assert_ne!(tampered, text);
        assert!(!verified(
            &check(&tampered, &jwks(&signer)).expect("checked")
        ));
        // Same body, issuer changed: integrity holds, the signature does not.
        let reissued = text.replace("runtime:test", "runtime:other");
        let verification = check(&reissued, &jwks(&signer)).expect("checked");
        assert!(!verified(&verification));
        let other = ReceiptSigner::from_seed(&[8; 32], "k1").expect("a signer");
        assert!(!verified(&check(&text, &jwks(&other)).expect("checked")));
        assert!(check("{", &jwks(&signer)).is_err());
    }
}
