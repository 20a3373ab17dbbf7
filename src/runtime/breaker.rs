//! The circuit breaker in front of unary runtime calls. After `threshold` consecutive calls
//! that show the runtime down (unreachable, timing out, failing internally), calls fail at once
//! instead of each waiting for its deadline; after `reset` one trial call goes through
//! (half-open) and its outcome closes the breaker or opens it again. Answers that show a
//! working runtime (NOT_FOUND while agents have yet to open a session, a refusal) are not
//! failures. State changes are kept, the last [`HISTORY_LEN`], for the admin API.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{ApiError, FieldError};
use crate::time::{self, Timestamp};

/// State changes kept for `GET /admin/circuit-breaker/history`.
pub const HISTORY_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
        }
    }
}

/// `RUNTIME_CIRCUIT_BREAKER_THRESHOLD` and `_RESET_MS`.
#[derive(Debug, Clone)]
pub struct BreakerOptions {
    /// Consecutive failures that open the breaker; 0 never opens it.
    pub threshold: u32,
    /// How long it stays open before a trial call.
    pub reset: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            threshold: 5,
            reset: Duration::from_secs(30),
        }
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub state: State,
    #[serde(with = "time::rfc3339")]
    pub entered_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A call refused because the breaker is open.
#[derive(Debug, Clone)]
pub struct Open {
    /// Why it opened.
    pub reason: String,
    /// Until the next trial call.
    pub retry_in: Duration,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    options: BreakerOptions,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    failures: u32,
    opened_at: Instant,
    /// When the half-open trial call went out; a trial that never reports back (its caller went
    /// away) stops blocking others after `reset`.
    trial_since: Option<Instant>,
    history: VecDeque<Transition>,
}

impl Inner {
    fn enter(&mut self, state: State, reason: Option<String>) {
        if self.state == state {
            return;
        }
        self.state = state;
        crate::telemetry::metrics::record_breaker_transition(state.as_str());
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            state,
            entered_at: time::now(),
            reason,
        });
    }

    fn last_reason(&self) -> String {
        self.history
            .back()
            .and_then(|transition| transition.reason.clone())
            .unwrap_or_default()
    }

    /// Open → half-open once `reset` has passed (lazily, when someone looks).
    fn check_timer(&mut self, reset: Duration) {
        if self.state == State::Open && self.opened_at.elapsed() >= reset {
            self.trial_since = None;
            self.enter(
                State::HalfOpen,
                Some("reset interval elapsed; the next call is a trial".to_owned()),
            );
        }
    }
}

impl CircuitBreaker {
    pub fn new(options: BreakerOptions) -> CircuitBreaker {
        CircuitBreaker {
            options,
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                opened_at: Instant::now(),
                trial_since: None,
                history: VecDeque::from([Transition {
                    state: State::Closed,
                    entered_at: time::now(),
                    reason: Some("started".to_owned()),
                }]),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a call may go to the runtime now; in half-open, only the one trial call.
    pub fn admit(&self) -> Result<(), Open> {
        let reset = self.options.reset;
        let mut inner = self.lock();
        inner.check_timer(reset);
        match inner.state {
            State::Closed => Ok(()),
            State::HalfOpen
                if inner
                    .trial_since
                    .is_none_or(|since| since.elapsed() >= reset) =>
            {
                inner.trial_since = Some(Instant::now());
                Ok(())
            }
            State::HalfOpen => Err(Open {
                reason: inner.last_reason(),
                retry_in: Duration::ZERO,
            }),
            State::Open => Err(Open {
                reason: inner.last_reason(),
                retry_in: reset.saturating_sub(inner.opened_at.elapsed()),
            }),
        }
    }

    /// The runtime answered (whatever it said).
    pub fn succeeded(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        inner.trial_since = None;
        inner.enter(State::Closed, Some("the runtime answered".to_owned()));
    }

    /// A call showed the runtime down (`reason` says how).
    pub fn failed(&self, reason: &str) {
        let threshold = self.options.threshold;
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        let opens = match inner.state {
            State::HalfOpen => Some(format!("the trial call failed: {reason}")),
            State::Closed if threshold > 0 && inner.failures >= threshold => Some(format!(
                "{} consecutive failures; the last: {reason}",
                inner.failures
            )),
            // Still closed, or a call let in before the breaker opened.
            _ => None,
        };
        if let Some(why) = opens {
            inner.opened_at = Instant::now();
            inner.trial_since = None;
            inner.enter(State::Open, Some(why));
        }
    }

    /// Closes the breaker at once (an operator's reset).
    pub fn reset(&self) -> State {
        let mut inner = self.lock();
        inner.failures = 0;
        inner.trial_since = None;
        inner.enter(State::Closed, Some("reset by an operator".to_owned()));
        inner.state
    }

    pub fn state(&self) -> State {
        let mut inner = self.lock();
        inner.check_timer(self.options.reset);
        inner.state
    }

    /// The current state and the changes entered at or after `since` (all when `None`),
    /// oldest first.
    pub fn history(&self, since: Option<Timestamp>) -> (State, Vec<Transition>) {
        let mut inner = self.lock();
        inner.check_timer(self.options.reset);
        let history = inner
            .history
            .iter()
            .filter(|transition| since.is_none_or(|since| transition.entered_at >= since))
            .cloned()
            .collect();
        (inner.state, history)
    }
}

/// The history query's windows, in minutes: those the UI console's time filter offers.
pub const WINDOWS: &[(&str, i64)] = &[
    ("15m", 15),
    ("1h", 60),
    ("6h", 6 * 60),
    ("24h", 24 * 60),
    ("7d", 7 * 24 * 60),
    ("30d", 30 * 24 * 60),
];

/// Where the history starts for `window` (one of [`WINDOWS`] before `now`) and `since` (an RFC
/// 3339 time): the later of the two given; every problem is a field error.
pub fn history_start(
    window: Option<&str>,
    since: Option<&str>,
    now: Timestamp,
) -> Result<Option<Timestamp>, ApiError> {
    let mut errors = Vec::new();
    let window = window.filter(|text| !text.is_empty()).and_then(|text| {
        let minutes = WINDOWS
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, minutes)| *minutes);
        if minutes.is_none() {
            let names: Vec<&str> = WINDOWS.iter().map(|(name, _)| *name).collect();
            errors.push(FieldError::new(
                "window",
                format!("must be one of {}", names.join(", ")),
            ));
        }
        minutes.map(|minutes| now - chrono::Duration::minutes(minutes))
    });
    let since = since.filter(|text| !text.is_empty()).and_then(|text| {
        let parsed = time::parse(text);
        if parsed.is_none() {
            errors.push(FieldError::new("since", "must be an RFC 3339 time"));
        }
        parsed
    });
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(window.max(since))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, reset_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(BreakerOptions {
            threshold,
            reset: Duration::from_millis(reset_ms),
        })
    }

    fn states(breaker: &CircuitBreaker) -> Vec<State> {
        breaker
            .history(None)
            .1
            .into_iter()
            .map(|transition| transition.state)
            .collect()
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_only() {
        let breaker = breaker(3, 60_000);
        breaker.failed("down");
        breaker.failed("down");
        // An answer in between starts the count again.
        breaker.succeeded();
        breaker.failed("down");
        breaker.failed("down");
        assert_eq!(breaker.state(), State::Closed);
        assert!(breaker.admit().is_ok());
        breaker.failed("still down");
        assert_eq!(breaker.state(), State::Open);
        let open = breaker.admit().expect_err("open refuses calls");
        assert!(
            open.reason.contains("3 consecutive failures"),
            "{}",
            open.reason
        );
        assert!(open.reason.contains("still down"), "{}", open.reason);
        assert!(open.retry_in > Duration::from_secs(50));
        assert_eq!(states(&breaker), [State::Closed, State::Open]);
    }

    #[test]
    fn half_open_lets_one_trial_through_and_its_outcome_decides() {
        let breaker = breaker(1, 0);
        breaker.failed("down");
        // The reset interval (zero) has passed: half-open, one trial at a time.
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.admit().is_ok());
        breaker.failed("down again");
        assert_eq!(
            breaker.history(None).0,
            State::HalfOpen,
            "reopened, then timed out"
        );
        assert!(breaker.admit().is_ok());
        breaker.succeeded();
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(
            states(&breaker),
            [
                State::Closed,
                State::Open,
                State::HalfOpen,
                State::Open,
                State::HalfOpen,
                State::Closed
            ]
        );
    }

    #[test]
    fn a_trial_in_flight_keeps_other_calls_out() {
        let breaker = breaker(1, 60_000);
        breaker.failed("down");
        // Force the timer: open long enough ago.
        breaker.lock().opened_at = Instant::now() - Duration::from_secs(61);
        assert!(breaker.admit().is_ok(), "the trial");
        assert!(
            breaker.admit().is_err(),
            "a second call while the trial runs"
        );
        // A trial whose caller went away stops blocking after the reset interval.
        breaker.lock().trial_since = Some(Instant::now() - Duration::from_secs(61));
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn reset_closes_at_once_and_is_recorded_once() {
        let breaker = breaker(1, 60_000);
        breaker.failed("down");
        assert_eq!(breaker.reset(), State::Closed);
        assert_eq!(breaker.reset(), State::Closed);
        assert!(breaker.admit().is_ok());
        let (_, history) = breaker.history(None);
        assert_eq!(history.len(), 3, "{history:?}");
        assert_eq!(history[2].reason.as_deref(), Some("reset by an operator"));
    }

    #[test]
    fn history_start_takes_the_later_bound_and_names_bad_fields() {
        let now = time::now();
        assert_eq!(history_start(None, None, now).expect("none"), None);
        assert_eq!(
            history_start(Some("1h"), None, now).expect("window"),
            Some(now - chrono::Duration::hours(1))
        );
        let recent = time::format(&(now - chrono::Duration::minutes(5)));
        assert_eq!(
            history_start(Some("7d"), Some(&recent), now).expect("both"),
            time::parse(&recent)
        );
        assert_eq!(
            history_start(Some("15m"), None, now).expect("the console's shortest"),
            Some(now - chrono::Duration::minutes(15))
        );
        let error = history_start(Some("2h"), Some("yesterday"), now).expect_err("bad");
        let details = error.details.expect("field errors").to_string();
        assert!(
            details.contains("window") && details.contains("since"),
            "{details}"
        );
    }

    #[test]
    fn threshold_zero_never_opens() {
        let breaker = breaker(0, 60_000);
        for _ in 0..100 {
            breaker.failed("down");
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn history_is_bounded_and_filtered_by_time() {
        let breaker = breaker(1, 0);
        for _ in 0..HISTORY_LEN {
            breaker.failed("down");
            breaker.succeeded();
        }
        let (_, history) = breaker.history(None);
        assert_eq!(history.len(), HISTORY_LEN);
        let future = time::now() + chrono::Duration::hours(1);
        assert!(breaker.history(Some(future)).1.is_empty());
    }
}
