//! What a load run measured, from every session's sends and what its watcher saw: the JSON
//! shape of `--json` and the human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::watch::Observed;

/// The sends of one session and what its watcher saw.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub session_id: String,
    /// Whether the runtime accepted its SessionStart (else nothing else was sent).
    pub started: bool,
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Send → Ack of each accepted envelope.
    pub ack_times: Vec<Duration>,
    pub observed: Observed,
    /// The first refusal or failure of a send.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub sessions: usize,
    pub messages_per_session: usize,
    pub rate: f64,
    pub duration_secs: Option<f64>,
    pub ramp_secs: f64,
    /// Control planes given: with several, latency counts the streams that crossed replicas.
    pub replicas: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sessions {
    pub started: u64,
    /// SessionStarts the runtime refused or that failed.
    pub not_started: u64,
    /// Runs the control plane showed, by final status (`unknown` when it could not be read,
    /// `not found` when the run never appeared).
    pub runs_by_status: BTreeMap<String, u64>,
    pub completed: u64,
    pub stream_reconnects: u64,
    /// Sessions whose stream was followed on another replica than the run's owner.
    pub crossed_replicas: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Messages {
    /// Envelopes sent, SessionStarts and Commitments included.
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Accepted envelopes whose `message.received` arrived.
    pub seen: u64,
    /// Accepted but never seen within the grace period.
    pub missing: u64,
    /// `message.received` events of a message id already seen on the same stream.
    pub duplicated: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    pub target: f64,
    /// Accepted envelopes per second, between the first and the last Ack.
    pub accepted: f64,
    /// Their `message.received` events per second, between the first and the last seen.
    pub observed: f64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Distribution {
    fn of(mut samples: Vec<Duration>) -> Distribution {
        if samples.is_empty() {
            return Distribution::default();
        }
        samples.sort_unstable();
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let at = |quantile: f64| {
            let rank = ((samples.len() as f64 * quantile).ceil() as usize).clamp(1, samples.len());
            ms(samples[rank - 1])
        };
        let total: Duration = samples.iter().sum();
        Distribution {
            count: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: ms(samples[samples.len() - 1]),
            mean: ms(total) / samples.len() as f64,
        }
    }
}

/// Whether the control plane fell behind as the run went on: the median latency of the
/// messages accepted last against those accepted first.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    pub first_tenth_p50_ms: f64,
    pub last_tenth_p50_ms: f64,
    /// The last tenth's median is above twice the first's plus 5 ms.
    pub growing: bool,
}

/// One second of the run (counted from its start): what was accepted in it, what was seen in
/// it, and the latency of the messages accepted in it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Second {
    pub second: u64,
    pub accepted: u64,
    pub seen: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub runtime: String,
    pub control_plane: String,
    pub target: Target,
    pub elapsed_secs: f64,
    pub sessions: Sessions,
    pub messages: Messages,
    pub rates: Rates,
    /// Runtime Ack → `message.received` on the run's stream, for every accepted envelope but
    /// the SessionStart, whose delay is the run's discovery (`run_found_ms`). Messages sent
    /// before the run was found count from their Ack too. With several replicas, only the
    /// streams followed on a replica that did not own the run count (`crossed_replicas`), and
    /// so in the latencies of `timeline` and `backlog`.
    pub accept_to_sse_ms: Distribution,
    pub backlog: Backlog,
    /// Send → Ack at the runtime.
    pub runtime_ack_ms: Distribution,
    /// SessionStart's Ack → the run's stream answering (the run exists).
    pub run_found_ms: Distribution,
    /// Second by second, to tell a warm-up, a stall or a growing backlog apart.
    pub timeline: Vec<Second>,
    /// A few of the problems met (refusals, failed calls), for a start at finding out why.
    pub problems: Vec<String>,
    /// Nothing missing and nothing duplicated.
    pub ok: bool,
}

/// How many distinct problems the report keeps.
const PROBLEMS: usize = 5;

impl Report {
    pub fn build(
        runtime: String,
        control_plane: String,
        target: Target,
        started: Instant,
        outcomes: &[SessionOutcome],
    ) -> Report {
        let elapsed = started.elapsed();
        let mut sessions = Sessions::default();
        let mut messages = Messages::default();
        let mut problems: Vec<String> = Vec::new();
        let mut ack_times = Vec::new();
        let mut found = Vec::new();
        // (accepted, latency) of the measured messages seen, and every Ack and sighting.
        let mut measured = Vec::new();
        let mut acks: Vec<Instant> = Vec::new();
        let mut sightings: Vec<Instant> = Vec::new();
        for outcome in outcomes {
            messages.sent += outcome.sent;
            messages.accepted += outcome.accepted;
            messages.rejected += outcome.rejected;
            messages.failed += outcome.failed;
            ack_times.extend_from_slice(&outcome.ack_times);
            for problem in [&outcome.problem, &outcome.observed.problem]
                .into_iter()
                .flatten()
            {
                if problems.len() < PROBLEMS && !problems.contains(problem) {
                    problems.push(problem.clone());
                }
            }
            if !outcome.started {
                sessions.not_started += 1;
                continue;
            }
            sessions.started += 1;
            sessions.stream_reconnects += u64::from(outcome.observed.reconnects);
            sessions.crossed_replicas += u64::from(outcome.observed.crossed_replicas);
            let status = match (&outcome.observed.found_after, &outcome.observed.status) {
                (None, _) => "not found".to_owned(),
                (Some(_), None) => "unknown".to_owned(),
                (Some(_), Some(status)) => status.clone(),
            };
            if status == "completed" {
                sessions.completed += 1;
            }
            *sessions.runs_by_status.entry(status).or_default() += 1;
            found.extend(outcome.observed.found_after);
            let timed = target.replicas <= 1 || outcome.observed.crossed_replicas;
            let mut seen_here = 0;
            for message in outcome.observed.messages.values() {
                messages.duplicated += u64::from(message.times_seen.saturating_sub(1));
                let Some(accepted) = message.accepted else {
                    continue;
                };
                acks.push(accepted);
                if let Some(seen) = message.seen {
                    seen_here += 1;
                    sightings.push(seen);
                    if message.measured && timed {
                        // Seen before the Ack arrived counts as no delay.
                        measured.push((accepted, seen.saturating_duration_since(accepted)));
                    }
                }
            }
            // Counted from the session's own Acks, so a watcher that failed loses nothing.
            messages.seen += seen_here;
            messages.missing += outcome.accepted.saturating_sub(seen_here);
        }
        measured.sort_unstable_by_key(|(accepted, _)| *accepted);
        let tenth = measured.len() / 10;
        let median = |slice: &[(Instant, Duration)]| {
            Distribution::of(slice.iter().map(|(_, latency)| *latency).collect()).p50
        };
        let backlog = if tenth == 0 {
            Backlog::default()
        } else {
            let first = median(&measured[..tenth]);
            let last = median(&measured[measured.len() - tenth..]);
            Backlog {
                first_tenth_p50_ms: first,
                last_tenth_p50_ms: last,
                growing: last > 2.0 * first + 5.0,
            }
        };
        let timeline = timeline(started, &acks, &sightings, &measured);
        let ok = messages.missing == 0 && messages.duplicated == 0;
        Report {
            runtime,
            control_plane,
            rates: Rates {
                target: target.rate,
                accepted: per_second(&acks),
                observed: per_second(&sightings),
            },
            target,
            elapsed_secs: elapsed.as_secs_f64(),
            sessions,
            messages,
            accept_to_sse_ms: Distribution::of(
                measured.into_iter().map(|(_, latency)| latency).collect(),
            ),
            backlog,
            runtime_ack_ms: Distribution::of(ack_times),
            run_found_ms: Distribution::of(found),
            timeline,
            problems,
            ok,
        }
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let target = &self.target;
        let duration = target
            .duration_secs
            .map(|secs| format!(" for {secs} s"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "loadgen: {} concurrent sessions x {} messages, target {} msg/s{duration}, ramp {} s",
            target.sessions, target.messages_per_session, target.rate, target.ramp_secs
        );
        let _ = writeln!(
            out,
            "  runtime {}, control plane {}, {:.1} s",
            self.runtime, self.control_plane, self.elapsed_secs
        );
        let sessions = &self.sessions;
        let statuses: Vec<String> = sessions
            .runs_by_status
            .iter()
            .map(|(status, count)| format!("{count} {status}"))
            .collect();
        let _ = writeln!(
            out,
            "sessions     {} started ({} refused); runs: {}; {} stream reconnects; \
             {} streams on another replica than the run's owner",
            sessions.started,
            sessions.not_started,
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            },
            sessions.stream_reconnects,
            sessions.crossed_replicas
        );
        let messages = &self.messages;
        let _ = writeln!(
            out,
            "messages     {} sent, {} accepted, {} rejected, {} failed; {} seen on SSE",
            messages.sent, messages.accepted, messages.rejected, messages.failed, messages.seen
        );
        let _ = writeln!(
            out,
            "rate         target {:.0}/s, accepted {:.0}/s, observed {:.0}/s",
            self.rates.target, self.rates.accepted, self.rates.observed
        );
        let _ = writeln!(
            out,
            "accept->SSE  {} (ms, {} messages{})",
            percentiles(&self.accept_to_sse_ms),
            self.accept_to_sse_ms.count,
            if self.target.replicas > 1 {
                " on streams crossing replicas"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "backlog      first tenth p50 {:.2} ms, last tenth p50 {:.2} ms: {}",
            self.backlog.first_tenth_p50_ms,
            self.backlog.last_tenth_p50_ms,
            if self.backlog.growing {
                "GROWING"
            } else {
                "none"
            }
        );
        if let Some(worst) = self
            .timeline
            .iter()
            .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
        {
            let _ = writeln!(
                out,
                "worst second {} s in: p99 {:.2} ms, max {:.2} ms ({} accepted)",
                worst.second, worst.p99_ms, worst.max_ms, worst.accepted
            );
        }
        let _ = writeln!(
            out,
            "runtime ack  {} (ms)",
            percentiles(&self.runtime_ack_ms)
        );
        let _ = writeln!(
            out,
            "run found    {} (ms after SessionStart)",
            percentiles(&self.run_found_ms)
        );
        for problem in &self.problems {
            let _ = writeln!(
                out,
                "problem      {}",
                crate::cli::render::printable(problem)
            );
        }
        let _ = writeln!(
            out,
            "missing {}, duplicated {}: {}",
            messages.missing,
            messages.duplicated,
            if self.ok { "OK" } else { "FAILED" }
        );
        out
    }
}

fn percentiles(distribution: &Distribution) -> String {
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        distribution.p50, distribution.p90, distribution.p99, distribution.max
    )
}

/// Per second since `started`: Acks, sightings, and the latency of what was accepted in it.
fn timeline(
    started: Instant,
    acks: &[Instant],
    sightings: &[Instant],
    measured: &[(Instant, Duration)],
) -> Vec<Second> {
    let second = |at: &Instant| at.saturating_duration_since(started).as_secs();
    let mut seconds: BTreeMap<u64, (Second, Vec<Duration>)> = BTreeMap::new();
    fn at(
        seconds: &mut BTreeMap<u64, (Second, Vec<Duration>)>,
        index: u64,
    ) -> &mut (Second, Vec<Duration>) {
        seconds.entry(index).or_insert_with(|| {
            let second = Second {
                second: index,
                ..Second::default()
            };
            (second, Vec::new())
        })
    }
    for ack in acks {
        at(&mut seconds, second(ack)).0.accepted += 1;
    }
    for seen in sightings {
        at(&mut seconds, second(seen)).0.seen += 1;
    }
    for (accepted, latency) in measured {
        at(&mut seconds, second(accepted)).1.push(*latency);
    }
    seconds
        .into_values()
        .map(|(mut second, latencies)| {
            let distribution = Distribution::of(latencies);
            second.p50_ms = distribution.p50;
            second.p99_ms = distribution.p99;
            second.max_ms = distribution.max;
            second
        })
        .collect()
}

/// Events per second between the first and the last instant.
fn per_second(instants: &[Instant]) -> f64 {
    let (Some(first), Some(last)) = (instants.iter().min(), instants.iter().max()) else {
        return 0.0;
    };
    let span = last.duration_since(*first).as_secs_f64();
    if span <= 0.0 {
        return 0.0;
    }
    // n events span n - 1 intervals.
    (instants.len() - 1) as f64 / span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::watch::Message;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let distribution = Distribution::of(samples);
        assert_eq!(distribution.count, 100);
        assert_eq!(distribution.p50, 50.0);
        assert_eq!(distribution.p90, 90.0);
        assert_eq!(distribution.p99, 99.0);
        assert_eq!(distribution.max, 100.0);
        assert_eq!(Distribution::of(vec![Duration::from_millis(3)]).p99, 3.0);
    }

    #[test]
    fn missing_duplicated_and_a_growing_backlog_are_counted() {
        let start = Instant::now();
        let mut outcome = SessionOutcome {
            started: true,
            accepted: 101,
            ..SessionOutcome::default()
        };
        outcome.observed.found_after = Some(Duration::from_millis(3));
        outcome.observed.status = Some("completed".into());
        // Latency grows by a millisecond per message: a backlog.
        for index in 0..100u64 {
            let accepted = start + Duration::from_millis(index);
            outcome.observed.messages.insert(
                format!("m{index}"),
                Message {
                    accepted: Some(accepted),
                    measured: true,
                    seen: Some(accepted + Duration::from_millis(index)),
                    times_seen: if index == 7 { 2 } else { 1 },
                },
            );
        }
        outcome.observed.messages.insert(
            "lost".into(),
            Message {
                accepted: Some(start),
                measured: true,
                ..Message::default()
            },
        );
        let target = Target {
            sessions: 1,
            messages_per_session: 101,
            rate: 1000.0,
            duration_secs: None,
            ramp_secs: 0.0,
            replicas: 1,
        };
        let report = Report::build(String::new(), String::new(), target, start, &[outcome]);
        assert_eq!(report.messages.missing, 1);
        assert_eq!(report.messages.duplicated, 1);
        assert_eq!(report.messages.seen, 100);
        assert_eq!(report.sessions.completed, 1);
        assert!(report.backlog.growing, "{:?}", report.backlog);
        assert!(!report.ok);
        assert_eq!(report.accept_to_sse_ms.max, 99.0);
        // All accepted within the first second (one of them seen in the next).
        assert_eq!(report.timeline[0].accepted, 101);
        assert_eq!(report.timeline[0].p99_ms, 98.0);
        let seen: u64 = report.timeline.iter().map(|second| second.seen).sum();
        assert_eq!(seen, 100);
    }

    #[test]
    fn with_several_replicas_latency_counts_the_streams_that_crossed() {
        let start = Instant::now();
        let session = |latency_ms: u64, crossed: bool| {
            let mut outcome = SessionOutcome {
                started: true,
                accepted: 1,
                ..SessionOutcome::default()
            };
            outcome.observed.found_after = Some(Duration::from_millis(1));
            outcome.observed.crossed_replicas = crossed;
            outcome.observed.messages.insert(
                "m".into(),
                Message {
                    accepted: Some(start),
                    measured: true,
                    seen: Some(start + Duration::from_millis(latency_ms)),
                    times_seen: 1,
                },
            );
            outcome
        };
        let outcomes = [session(40, true), session(900, false)];
        let target = |replicas| Target {
            sessions: 2,
            messages_per_session: 1,
            rate: 100.0,
            duration_secs: None,
            ramp_secs: 0.0,
            replicas,
        };
        let crossing = Report::build(String::new(), String::new(), target(3), start, &outcomes);
        assert_eq!(crossing.accept_to_sse_ms.count, 1);
        assert_eq!(crossing.accept_to_sse_ms.max, 40.0);
        assert_eq!(crossing.sessions.crossed_replicas, 1);
        // Every message is still looked for: both were seen.
        assert_eq!(crossing.messages.seen, 2);
        assert!(crossing.text().contains("on streams crossing replicas"));
        let one = Report::build(String::new(), String::new(), target(1), start, &outcomes);
        assert_eq!(one.accept_to_sse_ms.count, 2);
        assert_eq!(one.accept_to_sse_ms.max, 900.0);
    }
}
