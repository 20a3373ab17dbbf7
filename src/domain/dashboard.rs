//! The dashboard's query (a window, or a `from`/`to` range, and two filters) with its
//! validation, the time buckets it is charted in, and the shapes of the overview and the agent
//! figures as the MACP UI console reads them.

use serde::Serialize;

use super::query::optional_day_or_time;
use crate::error::{ApiError, FieldError};
use crate::time::Timestamp;

/// The windows a dashboard may ask for, with their length in seconds.
pub const WINDOWS: &[(&str, i64)] = &[
    ("15m", 15 * 60),
    ("1h", 3600),
    ("6h", 6 * 3600),
    ("24h", 24 * 3600),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
];

pub const DEFAULT_WINDOW: &str = "24h";

/// The names of [`WINDOWS`].
pub fn window_names() -> Vec<&'static str> {
    WINDOWS.iter().map(|(name, _)| *name).collect()
}

/// The longest `from`/`to` range, in days: a year of daily buckets.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Unvalidated `GetDashboardOverview` parameters, as either transport received them.
#[derive(Debug, Clone, Default)]
pub struct OverviewQuery {
    pub window: Option<String>,
    /// The older name of `window`; `window` wins when both are given.
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub scenario_ref: Option<String>,
    pub environment: Option<String>,
}

/// How wide a chart's buckets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    pub fn names() -> Vec<&'static str> {
        Granularity::ALL
            .iter()
            .map(|granularity| granularity.as_str())
            .collect()
    }

    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// Minutes up to 6 hours, hours up to 48, days beyond.
    fn for_span(seconds: i64) -> Self {
        if seconds <= 6 * 3600 {
            Granularity::Minute
        } else if seconds <= 48 * 3600 {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }
}

/// A validated dashboard query: runs in `[from, to)`, charted in buckets aligned to whole
/// minutes, hours or days (UTC), the first one holding `from`.
#[derive(Debug, Clone, PartialEq)]
pub struct OverviewScope {
    pub from: Timestamp,
    pub to: Timestamp,
    pub granularity: Granularity,
    pub scenario_ref: Option<String>,
    pub environment: Option<String>,
}

impl OverviewScope {
    /// Unix seconds where the first bucket starts.
    pub fn origin(&self) -> i64 {
        let width = self.granularity.seconds();
        self.from.timestamp().div_euclid(width) * width
    }

    /// How many buckets cover `[from, to)`.
    pub fn buckets(&self) -> usize {
        let width = self.granularity.seconds();
        let span = self.to.timestamp_millis() - self.origin() * 1000;
        usize::try_from((span + width * 1000 - 1) / (width * 1000)).unwrap_or(0)
    }

    /// Each bucket's start, RFC 3339.
    pub fn labels(&self) -> Vec<String> {
        let width = self.granularity.seconds();
        (0..self.buckets() as i64)
            .filter_map(|index| {
                chrono::DateTime::from_timestamp(self.origin() + index * width, 0)
                    .map(|start| crate::time::format(&start))
            })
            .collect()
    }
}

impl OverviewQuery {
    /// Checks the query against `now`: a known window, times that parse, `from` before `to`
    /// and at most [`MAX_RANGE_DAYS`] apart. `from` overrides the window; `to` defaults to now.
    pub fn into_scope(self, now: Timestamp) -> Result<OverviewScope, ApiError> {
        let mut errors = Vec::new();
        let (field, window) = match (non_empty(self.window), non_empty(self.range)) {
            (Some(window), _) => ("window", window),
            (None, Some(range)) => ("range", range),
            (None, None) => ("window", DEFAULT_WINDOW.to_owned()),
        };
        let window_seconds = match WINDOWS.iter().find(|(name, _)| *name == window) {
            Some((_, seconds)) => *seconds,
            None => {
                errors.push(FieldError::new(
                    field,
                    format!("must be one of {}", window_names().join(", ")),
                ));
                0
            }
        };
        let from = optional_day_or_time("from", self.from, &mut errors);
        let to = optional_day_or_time("to", self.to, &mut errors).unwrap_or(now);
        let from = from.unwrap_or_else(|| to - chrono::Duration::seconds(window_seconds));
        if errors.is_empty() {
            if from >= to {
                errors.push(FieldError::new("from", "must be before to"));
            } else if to - from > chrono::Duration::days(MAX_RANGE_DAYS) {
                errors.push(FieldError::new(
                    "from",
                    format!("must be at most {MAX_RANGE_DAYS} days before to"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let granularity = Granularity::for_span((to - from).num_seconds());
        Ok(OverviewScope {
            from,
            to,
            granularity,
            scenario_ref: non_empty(self.scenario_ref),
            environment: non_empty(self.environment),
        })
    }
}

/// A blank parameter is no parameter (an HTML form sends empty fields).
fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// One chart: a value per label.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Chart {
    pub labels: Vec<String>,
    pub data: Vec<f64>,
}

/// The overview's figures over the runs created in its range.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kpis {
    pub total_runs: u32,
    /// Queued, starting, binding a session, running or suspended.
    pub active_runs: u32,
    pub completed_runs: u32,
    /// Completed runs whose finalized decision had a negative outcome.
    pub declined_runs: u32,
    pub failed_runs: u32,
    pub cancelled_runs: u32,
    pub suspended_runs: u32,
    /// (completed − declined) / (completed + failed + cancelled); 0 with no ended run.
    pub success_rate: f64,
    /// Mean duration of the completed runs, whole milliseconds; 0 with none.
    pub avg_duration_ms: f64,
    /// Signals emitted in the range.
    pub total_signals: u32,
    pub total_tokens: f64,
    /// Rounded to cents.
    pub total_cost_usd: f64,
}

/// The overview's charts. Time series share the overview's labels; `errorClasses` and
/// `perScenario` are labelled by error code and scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Charts {
    pub run_volume: Chart,
    pub latency: Chart,
    pub signal_volume: Chart,
    pub error_classes: Chart,
    pub throughput: Chart,
    pub queue_depth: Chart,
    pub latency_p50: Chart,
    pub latency_p95: Chart,
    pub latency_p99: Chart,
    pub cost: Chart,
    pub success_rate: Chart,
    pub decision_outcome: Chart,
    pub per_scenario: Chart,
}

/// A participant's figures across every stored run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentMetrics {
    pub participant_id: String,
    pub runs: u32,
    pub messages: u32,
    pub signals: u32,
    /// Mean confidence its messages carried; 0 when none carried one.
    pub average_confidence: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        crate::time::parse(text).expect("a test time")
    }

    fn scope(query: OverviewQuery) -> Result<OverviewScope, ApiError> {
        query.into_scope(at("2026-12-07T10:30:15Z"))
    }

    fn fields(error: ApiError) -> Vec<String> {
        let details = error.details.unwrap_or_default();
        details["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|error| error["field"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn windows_choose_their_buckets() {
        for (window, granularity, buckets) in [
            ("15m", Granularity::Minute, 16),
            ("1h", Granularity::Minute, 61),
            ("6h", Granularity::Minute, 361),
            ("24h", Granularity::Hour, 25),
            ("7d", Granularity::Day, 8),
            ("30d", Granularity::Day, 31),
        ] {
            let scope = scope(OverviewQuery {
                window: Some(window.to_owned()),
                ..Default::default()
            })
            .expect("a known window");
            assert_eq!(scope.granularity, granularity, "{window}");
            assert_eq!(scope.buckets(), buckets, "{window}");
            assert_eq!(scope.labels().len(), buckets, "{window}");
            assert_eq!(scope.to, at("2026-12-07T10:30:15Z"));
        }
    }

    #[test]
    fn the_default_is_a_day_in_hours_and_range_is_an_alias() {
        let default = scope(OverviewQuery::default()).expect("the default window");
        assert_eq!(default.granularity, Granularity::Hour);
        assert_eq!(default.labels()[0], "2026-12-06T10:00:00.000Z");
        let range = scope(OverviewQuery {
            range: Some("7d".to_owned()),
            ..Default::default()
        })
        .expect("range");
        assert_eq!(range.granularity, Granularity::Day);
    }

    #[test]
    fn from_and_to_set_the_range_and_its_buckets() {
        let scope = scope(OverviewQuery {
            window: Some("1h".to_owned()),
            from: Some("2026-12-01".to_owned()),
            to: Some("2026-12-02T12:00:00Z".to_owned()),
            ..Default::default()
        })
        .expect("a range");
        assert_eq!(scope.from, at("2026-12-01T00:00:00Z"));
        assert_eq!(scope.granularity, Granularity::Hour);
        assert_eq!(scope.buckets(), 36);
    }

    #[test]
    fn bad_input_names_its_field() {
        let cases = [
            (
                OverviewQuery {
                    window: Some("2h".to_owned()),
                    ..Default::default()
                },
                vec!["window"],
            ),
            (
                OverviewQuery {
                    range: Some("1y".to_owned()),
                    ..Default::default()
                },
                vec!["range"],
            ),
            (
                OverviewQuery {
                    from: Some("yesterday".to_owned()),
                    to: Some("2026-13-01".to_owned()),
                    ..Default::default()
                },
                vec!["from", "to"],
            ),
            (
                OverviewQuery {
                    from: Some("2026-12-07T11:00:00Z".to_owned()),
                    to: Some("2026-12-07T10:00:00Z".to_owned()),
                    ..Default::default()
                },
                vec!["from"],
            ),
            (
                OverviewQuery {
                    from: Some("2020-01-01".to_owned()),
                    ..Default::default()
                },
                vec!["from"],
            ),
        ];
        for (query, expected) in cases {
            let error = scope(query.clone()).expect_err("bad input");
            assert_eq!(fields(error), expected, "{query:?}");
        }
    }
}
