//! Per-actor rate limits (governor's GCRA, keyed by actor): one budget for writes (every POST,
//! PATCH and DELETE and the RPCs behind them) and a larger one for reads. A live stream counts
//! once, when it opens. With auth off there are no actors, and no limits.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// `limit` requests per `window`; a limit of 0 turns the budget off.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    pub write_limit: u32,
    pub read_limit: u32,
    pub window: Duration,
}

/// How often (in checks) keys idle for a whole window are dropped, so the table holds only
/// recent callers.
const SWEEP_EVERY: u64 = 4096;

pub struct Throttle {
    writes: Option<DefaultKeyedRateLimiter<String>>,
    reads: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Throttle {
        let limiter = |limit: u32| {
            let limit = NonZeroU32::new(limit)?;
            // The whole budget at once, refilled evenly over the window.
            let period = settings.window.checked_div(limit.get())?;
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(limit);
            Some(RateLimiter::keyed(quota))
        };
        Throttle {
            writes: limiter(settings.write_limit),
            reads: limiter(settings.read_limit),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(retry after)` when `key` has used its budget.
    pub fn check(&self, key: &str, write: bool) -> Result<(), Duration> {
        let limiter = if write { &self.writes } else { &self.reads };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_actor_has_its_own_budget_and_reads_are_separate() {
        let throttle = Throttle::new(ThrottleSettings {
            write_limit: 2,
            read_limit: 3,
            window: Duration::from_secs(60),
        });
        assert!(throttle.check("a", true).is_ok());
        assert!(throttle.check("a", true).is_ok());
        let wait = throttle.check("a", true).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(throttle.check("b", true).is_ok());
        for _ in 0..3 {
            assert!(throttle.check("a", false).is_ok());
        }
        assert!(throttle.check("a", false).is_err());
    }

    #[test]
    fn a_zero_limit_is_no_limit() {
        let throttle = Throttle::new(ThrottleSettings {
            write_limit: 0,
            read_limit: 0,
            window: Duration::from_secs(1),
        });
        for _ in 0..1000 {
            assert!(throttle.check("a", true).is_ok());
        }
    }
}
