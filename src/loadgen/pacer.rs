//! Turns at a steady total rate, shared by every session: each send waits for the next turn on
//! one schedule `1/rate` apart, so load arrives evenly rather than in bursts. A session that
//! was busy (waiting for its run to appear, or for a slow Ack) takes the next free turn; turns
//! nobody took are not made up later beyond a few milliseconds (timer jitter), so falling
//! behind shows as a lower accepted rate, never as a burst.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far behind the schedule may be caught up: the timer's granularity is a millisecond.
const SLACK: Duration = Duration::from_millis(5);

pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Claims the next turn and waits for it.
    pub async fn turn(&self) {
        let deadline = self.claim(Instant::now());
        if deadline > Instant::now() {
            tokio::time::sleep_until(deadline).await;
        }
    }

    fn claim(&self, now: Instant) -> Instant {
        // A poisoned lock only means another session panicked; the schedule is still valid.
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let floor = now.checked_sub(SLACK).unwrap_or(now);
        if *next < floor {
            *next = floor;
        }
        let turn = *next;
        *next += self.interval;
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_evenly_spaced_and_missed_ones_are_not_made_up() {
        let pacer = Pacer::new(1000.0);
        let start = Instant::now() + Duration::from_secs(1);
        *pacer.next.lock().expect("lock") = start;
        let turns: Vec<_> = (0..3).map(|_| pacer.claim(start)).collect();
        assert_eq!(
            turns,
            [0, 1, 2]
                .map(|ms| start + Duration::from_millis(ms))
                .to_vec()
        );
        // A second later nobody took a turn: the schedule restarts a little behind now.
        let later = start + Duration::from_secs(1);
        assert_eq!(pacer.claim(later), later - SLACK);
        assert_eq!(pacer.claim(later), later - SLACK + Duration::from_millis(1));
    }
}
