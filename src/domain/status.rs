//! Run statuses and the transitions between them.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Queued,
    Starting,
    BindingSession,
    Running,
    Suspended,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Queued,
        RunStatus::Starting,
        RunStatus::BindingSession,
        RunStatus::Running,
        RunStatus::Suspended,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Starting => "starting",
            RunStatus::BindingSession => "binding_session",
            RunStatus::Running => "running",
            RunStatus::Suspended => "suspended",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// Position on the way to running; terminal statuses are last.
    fn rank(self) -> u8 {
        match self {
            RunStatus::Queued => 0,
            RunStatus::Starting => 1,
            RunStatus::BindingSession => 2,
            RunStatus::Running | RunStatus::Suspended => 3,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled => 4,
        }
    }

    /// Whether a run in `self` may move to `next`: forward only, never out of a terminal
    /// status, and between running and suspended both ways.
    pub fn may_become(self, next: RunStatus) -> bool {
        if self.is_terminal() || self == next {
            return false;
        }
        next.rank() > self.rank()
            || matches!(
                (self, next),
                (RunStatus::Running, RunStatus::Suspended)
                    | (RunStatus::Suspended, RunStatus::Running)
            )
    }
}

impl serde::Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_never_change() {
        for terminal in [
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            for next in RunStatus::ALL {
                assert!(!terminal.may_become(next), "{terminal} → {next}");
            }
        }
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(RunStatus::Queued.may_become(RunStatus::Starting));
        assert!(RunStatus::Starting.may_become(RunStatus::Failed));
        assert!(!RunStatus::Running.may_become(RunStatus::Starting));
        assert!(RunStatus::Running.may_become(RunStatus::Suspended));
        assert!(RunStatus::Suspended.may_become(RunStatus::Running));
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
    }
}
