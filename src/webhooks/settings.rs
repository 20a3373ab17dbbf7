//! The `WEBHOOK_*` settings of `serve`.

use std::time::Duration;

use clap::Args;

use super::WebhookOptions;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhookArgs {
    /// Let webhooks reach link-local addresses (169.254.0.0/16, fe80::/10) and cloud metadata
    /// services, which are refused by default (SSRF). Loopback and private addresses are always
    /// allowed.
    #[arg(long, env = "WEBHOOK_ALLOW_LINK_LOCAL", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_link_local: bool,

    /// Attempts per delivery before it is given up as failed.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = WebhookOptions::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,

    /// The wait before a delivery's second attempt, in ms; it doubles for each later one (a
    /// random part of up to half is taken off; at most an hour).
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = WebhookOptions::default().retry_base.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_base_ms: u64,

    /// How long one delivery attempt may take, connecting included, in ms (at most an hour).
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = WebhookOptions::default().timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhook_timeout_ms: u64,
}

impl WebhookArgs {
    pub fn options(&self) -> WebhookOptions {
        WebhookOptions {
            allow_link_local: self.webhook_allow_link_local,
            max_attempts: self.webhook_max_attempts,
            retry_base: Duration::from_millis(self.webhook_retry_base_ms),
            timeout: Duration::from_millis(self.webhook_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        webhooks: WebhookArgs,
    }

    #[test]
    fn the_attempt_timeout_is_at_most_an_hour() {
        let hour = Serve::try_parse_from(["serve", "--webhook-timeout-ms", "3600000"])
            .expect("an hour is allowed");
        assert_eq!(hour.webhooks.options().timeout, Duration::from_secs(3600));
        for refused in ["0", "3600001", "18446744073709551615"] {
            assert!(
                Serve::try_parse_from(["serve", "--webhook-timeout-ms", refused]).is_err(),
                "{refused}"
            );
        }
    }
}
