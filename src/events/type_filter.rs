//! The event types a filtered live stream carries: exact types (`run.completed`) and prefix
//! wildcards (`decision.*`), each naming at least one type this service emits, so a typo is a
//! field error rather than a stream that stays silent.

use super::canonical::types;
use crate::error::FieldError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFilter {
    exact: Vec<String>,
    /// Each with its trailing dot (`decision.`).
    prefixes: Vec<String>,
}

impl TypeFilter {
    /// The filter of `patterns` (comma lists are split); `None` when there are none (every type
    /// passes). Problems are reported under `field`.
    pub fn parse(patterns: &[String], field: &str) -> Result<Option<TypeFilter>, FieldError> {
        let mut filter = TypeFilter {
            exact: Vec::new(),
            prefixes: Vec::new(),
        };
        for pattern in patterns
            .iter()
            .flat_map(|patterns| patterns.split(','))
            .map(str::trim)
            .filter(|pattern| !pattern.is_empty())
        {
            let known = match pattern.strip_suffix('*') {
                Some(prefix)
                    if prefix.ends_with('.') && !prefix[..prefix.len() - 1].contains('*') =>
                {
                    let known = types::ALL.iter().any(|kind| kind.starts_with(prefix));
                    filter.prefixes.push(prefix.to_owned());
                    known
                }
                Some(_) => false,
                None => {
                    filter.exact.push(pattern.to_owned());
                    types::ALL.contains(&pattern)
                }
            };
            if !known {
                return Err(FieldError::new(
                    field,
                    format!(
                        "'{pattern}' matches no event type: give a type (run.completed) or a \
                         prefix wildcard (decision.*)"
                    ),
                ));
            }
        }
        Ok((!filter.exact.is_empty() || !filter.prefixes.is_empty()).then_some(filter))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.exact.iter().any(|kind| kind == event_type)
            || self
                .prefixes
                .iter()
                .any(|prefix| event_type.starts_with(prefix.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(patterns: &[&str]) -> Result<Option<TypeFilter>, FieldError> {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        TypeFilter::parse(&patterns, "types")
    }

    #[test]
    fn exact_types_and_prefixes_match() {
        let filter = parse(&["run.completed, decision.*", "policy.*"])
            .expect("valid")
            .expect("a filter");
        assert!(filter.matches("run.completed"));
        assert!(filter.matches("decision.finalized"));
        assert!(filter.matches("policy.commitment.evaluated"));
        assert!(!filter.matches("run.cancelled"));
        assert!(!filter.matches("decisions.x"));
        assert_eq!(parse(&[]).expect("valid"), None);
        assert_eq!(parse(&[" , "]).expect("valid"), None);
    }

    #[test]
    fn patterns_naming_no_type_are_field_errors() {
        for bad in [
            "*",
            "decision*",
            "nope.*",
            "run.complete",
            "a.*.b.*",
            "decision.**",
        ] {
            let error = parse(&[bad]).expect_err(bad);
            assert_eq!(error.field, "types", "{bad}");
        }
    }
}
