//! `pack/scenario@version` references.

use super::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioRef {
    pub pack: String,
    pub scenario: String,
    pub version: String,
}

impl ScenarioRef {
    /// Splits at the last `@`, then at the first `/` of what precedes it, so a scenario slug
    /// may itself contain `/` (and is then simply not found).
    pub fn parse(reference: &str) -> Result<Self, Error> {
        let invalid = |problem| Error::InvalidScenarioRef {
            problem,
            reference: reference.to_owned(),
        };
        let (path, version) = reference
            .rsplit_once('@')
            .ok_or_else(|| invalid("missing '@'"))?;
        let (pack, scenario) = path.split_once('/').ok_or_else(|| invalid("missing '/'"))?;
        if pack.is_empty() || scenario.is_empty() || version.is_empty() {
            return Err(invalid("empty component"));
        }
        Ok(ScenarioRef {
            pack: pack.to_owned(),
            scenario: scenario.to_owned(),
            version: version.to_owned(),
        })
    }
}

impl std::fmt::Display for ScenarioRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.pack, self.scenario, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_components() {
        let parsed = ScenarioRef::parse("fraud/high-value@1.0.0").unwrap();
        assert_eq!(
            (
                parsed.pack.as_str(),
                parsed.scenario.as_str(),
                parsed.version.as_str()
            ),
            ("fraud", "high-value", "1.0.0")
        );
        assert_eq!(parsed.to_string(), "fraud/high-value@1.0.0");
    }

    #[test]
    fn splits_at_the_last_at_and_the_first_slash() {
        let parsed = ScenarioRef::parse("a/b/c@1@2").unwrap();
        assert_eq!(
            (
                parsed.pack.as_str(),
                parsed.scenario.as_str(),
                parsed.version.as_str()
            ),
            ("a", "b/c@1", "2")
        );
    }

    #[test]
    fn rejects_malformed_references() {
        let message = |reference: &str| ScenarioRef::parse(reference).unwrap_err().to_string();
        assert_eq!(
            message("fraud/x"),
            "invalid scenarioRef: missing '@' in \"fraud/x\""
        );
        assert_eq!(message(""), "invalid scenarioRef: missing '@' in \"\"");
        assert_eq!(
            message("fraud@1"),
            "invalid scenarioRef: missing '/' in \"fraud@1\""
        );
        assert_eq!(
            message("fraud/@1"),
            "invalid scenarioRef: empty component in \"fraud/@1\""
        );
        assert_eq!(
            message("/x@1"),
            "invalid scenarioRef: empty component in \"/x@1\""
        );
        assert_eq!(
            message("fraud/x@"),
            "invalid scenarioRef: empty component in \"fraud/x@\""
        );
    }
}
