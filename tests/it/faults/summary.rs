//! The suite's one summary line, `faults: N injected, runs M, events lost L, duplicated D`,
//! summed over every fault test. Tests run on threads of their own, in any order: each holds
//! a [`Tally`], whose drop (also when the test fails) adds its counts; the drop that completes
//! [`FAULT_TESTS`] writes the line. It goes to the process's stderr directly: libtest captures
//! `print!`/`eprint!` of passing tests, not the stream itself, so `cargo test` shows the line.
//! It needs every fault test to run: `cargo test --test it faults::`.

use std::io::Write as _;
use std::sync::{Mutex, PoisonError};

/// Every fault test's tally name.
const FAULT_TESTS: &[&str] = &[
    "crash Sqlite",
    "crash Postgres",
    "outage Sqlite",
    "outage Postgres",
    "database Postgres",
    "shutdown subscribers",
    "shutdown stuck work",
    "kickoff Sqlite",
    "kickoff Postgres",
    "history",
    "sqlite busy",
    "sqlite full",
    "herd",
];

struct Totals {
    finished: Vec<&'static str>,
    injected: usize,
    runs: usize,
    lost: usize,
    duplicated: usize,
}

static TOTALS: Mutex<Totals> = Mutex::new(Totals {
    finished: Vec::new(),
    injected: 0,
    runs: 0,
    lost: 0,
    duplicated: 0,
});

/// One fault test's counts: faults it injected, runs it checked, and events lost or
/// duplicated where it compared what is stored with what should be.
pub struct Tally {
    name: &'static str,
    pub injected: usize,
    pub runs: usize,
    pub lost: usize,
    pub duplicated: usize,
}

impl Tally {
    /// `name` must be listed in [`FAULT_TESTS`], so the count of finished tests can complete.
    pub fn begin(name: &str) -> Tally {
        let name = FAULT_TESTS
            .iter()
            .copied()
            .find(|listed| *listed == name)
            .unwrap_or_else(|| panic!("{name:?} is not listed in faults::summary::FAULT_TESTS"));
        Tally {
            name,
            injected: 0,
            runs: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    /// Adds one comparison of what is stored (or was received) with what should be: the
    /// runtime's transcript of a run's message ids, or the seqs a store holds for a live
    /// subscriber. Lost: expected but absent; duplicated: present twice, or not expected.
    pub fn compare<T: Eq + std::hash::Hash>(&mut self, stored: &[T], expected: &[T]) {
        let (lost, duplicated) = differences(stored, expected);
        self.lost += lost;
        self.duplicated += duplicated;
    }
}

/// (lost, duplicated): see [`Tally::compare`].
pub(crate) fn differences<T: Eq + std::hash::Hash>(stored: &[T], expected: &[T]) -> (usize, usize) {
    let unique: std::collections::HashSet<&T> = stored.iter().collect();
    let expected_set: std::collections::HashSet<&T> = expected.iter().collect();
    let lost = expected.iter().filter(|id| !unique.contains(id)).count();
    let duplicated = stored.len() - unique.len()
        + unique
            .iter()
            .filter(|id| !expected_set.contains(*id))
            .count();
    (lost, duplicated)
}

impl Drop for Tally {
    fn drop(&mut self) {
        let mut totals = TOTALS.lock().unwrap_or_else(PoisonError::into_inner);
        totals.injected += self.injected;
        totals.runs += self.runs;
        totals.lost += self.lost;
        totals.duplicated += self.duplicated;
        if !totals.finished.contains(&self.name) {
            totals.finished.push(self.name);
        }
        if totals.finished.len() == FAULT_TESTS.len() {
            let line = format!(
                "faults: {} injected, runs {}, events lost {}, duplicated {}\n",
                totals.injected, totals.runs, totals.lost, totals.duplicated
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

#[test]
fn differences_count_lost_and_duplicated() {
    let ids = |list: &[&str]| list.iter().map(|id| id.to_string()).collect::<Vec<_>>();
    assert_eq!(
        differences(&ids(&["a", "b", "c"]), &ids(&["a", "b", "c"])),
        (0, 0)
    );
    assert_eq!(
        differences(&ids(&["a", "c"]), &ids(&["a", "b", "c"])),
        (1, 0)
    );
    assert_eq!(
        differences(&ids(&["a", "b", "b", "c", "x"]), &ids(&["a", "b", "c"])),
        (0, 2)
    );
}
