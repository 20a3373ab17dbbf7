//! How a delivery is signed. `X-MACP-Signature: sha256=<hex>` is HMAC-SHA256 with the webhook's
//! secret over `<X-MACP-Timestamp>.<body>`: the exact bytes of the body, bound to the time of
//! the attempt, so a receiver that refuses old timestamps cannot be sent a recorded delivery
//! again. `X-MACP-Delivery` is the same on every attempt of one delivery (for deduplication).

use ring::hmac;

pub const SIGNATURE_HEADER: &str = "x-macp-signature";
pub const TIMESTAMP_HEADER: &str = "x-macp-timestamp";
pub const EVENT_HEADER: &str = "x-macp-event";
pub const DELIVERY_HEADER: &str = "x-macp-delivery";

/// The signature header's value for a body sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_timestamp_and_the_exact_body() {
        let body = br#"{"event":"run.completed"}"#;
        let signature = sign("s3cret", 1_700_000_000, body);
        // HMAC-SHA256("s3cret", "1700000000.{...}"), as any HMAC library computes it.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"s3cret");
        let mut message = b"1700000000.".to_vec();
        message.extend_from_slice(body);
        let hex = signature.strip_prefix("sha256=").expect("prefixed");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
            .collect();
        assert!(hmac::verify(&key, &message, &tag).is_ok());
        assert_ne!(
            signature,
            sign("s3cret", 1_700_000_001, body),
            "time is signed"
        );
        assert_ne!(
            signature,
            sign("other", 1_700_000_000, body),
            "secret matters"
        );
        assert_ne!(
            signature,
            sign("s3cret", 1_700_000_000, br#"{"event": "run.completed"}"#),
            "the exact bytes are signed"
        );
    }
}
