//! Data retention (`DATA_RETENTION_*`): runs that ended more than the TTL ago are deleted with
//! everything stored for them, a batch at a time, each with an audit row; a background task of
//! the run service sweeps at start and then every interval.

use std::time::Duration;

use serde_json::json;

use super::service::RunService;
use crate::domain::audit::{AuditEntry, Outcome};

/// The settings, as `serve` reads them.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Delete runs that ended more than `DATA_RETENTION_TTL_DAYS` ago, with their events,
    /// projections, checkpoints, artifacts and session rows (an audit row each).
    #[arg(long, env = "DATA_RETENTION_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub data_retention_enabled: bool,

    /// How long an ended run is kept, in days.
    #[arg(long, env = "DATA_RETENTION_TTL_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub data_retention_ttl_days: u64,

    /// Hours between sweeps (the first runs at start).
    #[arg(long, env = "DATA_RETENTION_INTERVAL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8_760))]
    pub data_retention_interval_hours: u64,

    /// Runs deleted per batch: a sweep reads this many, deletes them, and reads again.
    #[arg(long, env = "DATA_RETENTION_BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub data_retention_batch_size: u64,
}

impl RetentionArgs {
    pub fn options(&self) -> RetentionOptions {
        RetentionOptions {
            enabled: self.data_retention_enabled,
            ttl: Duration::from_secs(self.data_retention_ttl_days * 24 * 3600),
            interval: Duration::from_secs(self.data_retention_interval_hours * 3600),
            batch_size: self.data_retention_batch_size,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetentionOptions {
    pub enabled: bool,
    pub ttl: Duration,
    pub interval: Duration,
    pub batch_size: u64,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionArgs {
            data_retention_enabled: false,
            data_retention_ttl_days: 30,
            data_retention_interval_hours: 24,
            data_retention_batch_size: 100,
        }
        .options()
    }
}

impl RunService {
    /// Sweeps at start and every interval until `shutdown` (when retention is enabled; in a
    /// cluster, while this replica leads).
    pub(super) async fn keep_retention(self, shutdown: tokio_util::sync::CancellationToken) {
        let options = self.options().retention.clone();
        let mut ticks = tokio::time::interval(options.interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.sweep_retention(&options).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "data retention deleted ended runs"),
                Err(error) => tracing::warn!(%error, "data retention sweep failed"),
            }
        }
    }

    /// Deletes every run that ended before now minus the TTL, in batches; how many.
    async fn sweep_retention(
        &self,
        options: &RetentionOptions,
    ) -> Result<usize, crate::error::ApiError> {
        let ttl = chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::MAX);
        let cutoff = crate::time::now()
            .checked_sub_signed(ttl)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut deleted = 0;
        loop {
            let batch = self
                .store()
                .runs_ended_before(cutoff, options.batch_size)
                .await?;
            if batch.is_empty() || self.inner.shutdown.is_cancelled() {
                return Ok(deleted);
            }
            for run_id in batch {
                let audit = audit_entry(&run_id, options);
                match self.delete_recorded(&run_id, Some(audit)).await {
                    Ok(()) => deleted += 1,
                    // Deleted meanwhile by a call (or another process).
                    Err(error) if error.code == crate::error::ErrorCode::RunNotFound => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

fn audit_entry(run_id: &str, options: &RetentionOptions) -> AuditEntry {
    AuditEntry {
        id: uuid::Uuid::now_v7().to_string(),
        actor: "data-retention".to_owned(),
        actor_type: "system".to_owned(),
        action: "run.delete".to_owned(),
        resource: "run".to_owned(),
        resource_id: Some(run_id.to_owned()),
        outcome: Outcome::Ok,
        error_code: None,
        request_id: None,
        details: json!({"reason": "retention", "ttlDays": options.ttl.as_secs() / 86_400}),
        created_at: crate::time::now(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        retention: RetentionArgs,
    }

    #[test]
    fn settings_default_to_off_and_refuse_a_zero() {
        let options = Serve::try_parse_from(["serve"])
            .expect("parses")
            .retention
            .options();
        assert!(!options.enabled);
        assert_eq!(options.ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(options.interval, Duration::from_secs(24 * 3600));
        assert_eq!(options.batch_size, 100);
        for flag in [
            "--data-retention-ttl-days",
            "--data-retention-interval-hours",
            "--data-retention-batch-size",
        ] {
            assert!(
                Serve::try_parse_from(["serve", flag, "0"]).is_err(),
                "{flag}"
            );
        }
    }
}
