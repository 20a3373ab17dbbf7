//! Run and event queries: the parameters either transport receives, their validation (every
//! problem reported by field), the filters the store runs, and the limits the API takes.

use serde::Serialize;

use super::run::Run;
use super::status::RunStatus;
use crate::error::{ApiError, FieldError};
use crate::time::{self, Timestamp};

/// Filters of `GET /runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub tags: Vec<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    pub limit: u64,
    pub offset: u64,
    pub sort_by_updated: bool,
    pub ascending: bool,
    /// `metadata.environment` equals it.
    pub environment: Option<String>,
    /// Matches, case-insensitively and in part, the id, the scenario ref, the environment or a
    /// tag.
    pub search: Option<String>,
    /// Matches, case-insensitively and in part, the source ref or `metadata.scenarioRef`.
    pub scenario_ref: Option<String>,
    pub include_archived: bool,
    pub include_sandbox: bool,
}

/// A page of runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunPage {
    pub data: Vec<Run>,
    pub total: u64,
    pub limit: u64,
    pub offset: u64,
}

/// An optional RFC 3339 query parameter; anything else is a field error.
pub(super) fn optional_time(
    field: &str,
    value: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<Timestamp> {
    let text = value.filter(|text| !text.is_empty())?;
    let parsed = time::parse(&text);
    if parsed.is_none() {
        errors.push(FieldError::new(field, "must be an RFC 3339 time"));
    }
    parsed
}

/// An optional time that may also be a plain date (`2026-12-06`, the start of that day, UTC):
/// what a date picker sends.
pub(super) fn optional_day_or_time(
    field: &str,
    value: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<Timestamp> {
    let text = value.filter(|text| !text.is_empty())?;
    let parsed = time::parse(&text).or_else(|| {
        // Exactly YYYY-MM-DD: chrono's `%Y` also takes a sign and any number of digits, and
        // a date such as -262143-01-01 then overflows the arithmetic done with it.
        let plain = text.len() == 10 && text.bytes().take(4).all(|byte| byte.is_ascii_digit());
        plain
            .then(|| chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok())
            .flatten()
            .map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
    });
    if parsed.is_none() {
        errors.push(FieldError::new(
            field,
            "must be an RFC 3339 time or a date (YYYY-MM-DD)",
        ));
    }
    parsed
}

/// A list's `limit` (1..=`max`, `default` when absent) and `offset` (0..=u32::MAX, 0 when
/// absent); a value out of range is a field error.
pub(super) fn page(
    limit: Option<i64>,
    offset: Option<i64>,
    default: u64,
    max: u64,
    errors: &mut Vec<FieldError>,
) -> (u64, u64) {
    let limit = match limit {
        None => default,
        Some(limit) if (1..=max as i64).contains(&limit) => limit as u64,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                format!("must be between 1 and {max}"),
            ));
            default
        }
    };
    let offset = match offset {
        None => 0,
        Some(offset) if (0..=MAX_UINT32).contains(&offset) => offset as u64,
        Some(_) => {
            errors.push(FieldError::new(
                "offset",
                format!("must be between 0 and {MAX_UINT32}"),
            ));
            0
        }
    };
    (limit, offset)
}

/// Unvalidated `ListRuns` parameters, as either transport received them.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub status: Option<String>,
    pub tags: Vec<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub environment: Option<String>,
    pub search: Option<String>,
    pub scenario_ref: Option<String>,
    pub include_archived: Option<bool>,
    pub include_sandbox: Option<bool>,
}

/// The largest seq, offset or interval the API takes: the protos carry them as `uint32`, so REST
/// takes no more than gRPC can (and never answers a value outside what it documents).
pub const MAX_UINT32: i64 = u32::MAX as i64;
/// Shortest heartbeat interval a live stream's client may ask for.
pub const MIN_HEARTBEAT_MS: i64 = 100;
pub const DEFAULT_RUN_LIMIT: u64 = 50;
pub const MAX_RUN_LIMIT: u64 = 200;
pub const DEFAULT_EVENT_LIMIT: u64 = 200;
pub const MAX_EVENT_LIMIT: u64 = 10_000;

impl RunQuery {
    /// Validates every parameter, reporting all problems at once.
    pub fn into_filter(self) -> Result<RunFilter, ApiError> {
        let mut errors = Vec::new();
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(text) => match RunStatus::parse(text) {
                Some(status) => Some(status),
                None => {
                    errors.push(FieldError::new(
                        "status",
                        format!(
                            "must be one of {}",
                            RunStatus::ALL.map(RunStatus::as_str).join(", ")
                        ),
                    ));
                    None
                }
            },
        };
        let created_after = optional_day_or_time("createdAfter", self.created_after, &mut errors);
        let created_before =
            optional_day_or_time("createdBefore", self.created_before, &mut errors);
        let (limit, offset) = page(
            self.limit,
            self.offset,
            DEFAULT_RUN_LIMIT,
            MAX_RUN_LIMIT,
            &mut errors,
        );
        let sort_by_updated = match self.sort_by.as_deref() {
            None | Some("") | Some("createdAt") => false,
            Some("updatedAt") => true,
            Some(_) => {
                errors.push(FieldError::new("sortBy", "must be createdAt or updatedAt"));
                false
            }
        };
        let ascending = match self.sort_order.as_deref() {
            None | Some("") | Some("desc") => false,
            Some("asc") => true,
            Some(_) => {
                errors.push(FieldError::new("sortOrder", "must be asc or desc"));
                false
            }
        };
        let tags = self
            .tags
            .iter()
            .flat_map(|tags| tags.split(','))
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(RunFilter {
            status,
            tags,
            created_after,
            created_before,
            limit,
            offset,
            sort_by_updated,
            ascending,
            environment: non_empty(self.environment),
            search: non_empty(self.search),
            scenario_ref: non_empty(self.scenario_ref),
            include_archived: self.include_archived.unwrap_or(false),
            include_sandbox: self.include_sandbox.unwrap_or(false),
        })
    }
}

/// A text filter: blank is no filter (an HTML form sends empty fields).
fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// Validates `ListRunEvents` paging: `(after_seq, limit)`.
pub fn event_paging(after_seq: Option<i64>, limit: Option<i64>) -> Result<(i64, u64), ApiError> {
    let mut errors = Vec::new();
    let after = match after_seq {
        None => 0,
        Some(seq) if (0..=MAX_UINT32).contains(&seq) => seq,
        Some(_) => {
            errors.push(FieldError::new(
                "afterSeq",
                format!("must be between 0 and {MAX_UINT32}"),
            ));
            0
        }
    };
    let limit = match limit {
        None => DEFAULT_EVENT_LIMIT,
        Some(limit) if (1..=MAX_EVENT_LIMIT as i64).contains(&limit) => limit as u64,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_EVENT_LIMIT}"),
            ));
            DEFAULT_EVENT_LIMIT
        }
    };
    if errors.is_empty() {
        Ok((after, limit))
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Unvalidated event-query parameters (`GET /events`, filters of `GET /runs/{id}/events`).
#[derive(Debug, Clone, Default)]
pub struct EventsQuery {
    pub run_id: Option<String>,
    /// Types to keep; comma lists are split.
    pub types: Vec<String>,
    pub after_seq: Option<i64>,
    pub after_ts: Option<String>,
    pub before_ts: Option<String>,
    pub limit: Option<i64>,
}

/// Filters of the event queries (`GET /events`, `GET /runs/{id}/events`), validated.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub run_id: Option<String>,
    pub types: Vec<String>,
    pub after_seq: i64,
    /// Inclusive.
    pub after_ts: Option<Timestamp>,
    /// Exclusive.
    pub before_ts: Option<Timestamp>,
    pub limit: u64,
}

/// Default page of `GET /events`.
pub const DEFAULT_CROSS_RUN_LIMIT: u64 = 500;

impl EventsQuery {
    /// Whether any filter beyond paging is set (the per-run route then answers a page object).
    pub fn has_filters(&self) -> bool {
        !self.types.is_empty() || self.after_ts.is_some() || self.before_ts.is_some()
    }

    pub fn validate(self, default_limit: u64) -> Result<EventQuery, ApiError> {
        let mut errors = Vec::new();
        let (after_seq, limit) = match event_paging(self.after_seq, self.limit) {
            Ok((after, limit)) => (
                after,
                if self.limit.is_none() {
                    default_limit
                } else {
                    limit
                },
            ),
            Err(error) => return Err(error),
        };
        let after_ts = optional_time("afterTs", self.after_ts, &mut errors);
        let before_ts = optional_time("beforeTs", self.before_ts, &mut errors);
        let types = self
            .types
            .iter()
            .flat_map(|types| types.split(','))
            .map(str::trim)
            .filter(|kind| !kind.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(run_id) = &self.run_id
            && uuid::Uuid::parse_str(run_id).is_err()
        {
            errors.push(FieldError::new("runId", "must be a UUID"));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(EventQuery {
            run_id: self.run_id,
            types,
            after_seq,
            after_ts,
            before_ts,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain date has a four-digit year; others are field errors, never a date at the edge
    /// of chrono's range (whose arithmetic panics on overflow).
    #[test]
    fn plain_dates_have_four_digit_years() {
        let mut errors = Vec::new();
        let day = optional_day_or_time("to", Some("2026-12-06".to_owned()), &mut errors);
        assert_eq!(
            day.map(|day| time::format(&day)).as_deref(),
            Some("2026-12-06T00:00:00.000Z")
        );
        assert!(errors.is_empty());
        for text in ["-262143-01-01", "+262142-12-31", "12026-01-01", "26-12-06"] {
            let mut errors = Vec::new();
            assert_eq!(
                optional_day_or_time("to", Some(text.to_owned()), &mut errors),
                None,
                "{text}"
            );
            assert_eq!(errors.len(), 1, "{text}");
        }
    }
}
