//! The registry's error type and its mapping onto the service-wide [`ApiError`].

use serde::Serialize;
use serde_json::json;

use crate::error::{ApiError, ErrorCode, FieldError};

use super::inputs::InputError;

/// A problem with a file of the packs tree: what is wrong, in which file and, when the parser
/// knows it, where. Paths are relative to `PACKS_DIR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    pub message: String,
}

impl LoadError {
    pub(crate) fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        LoadError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, line: u64, column: u64) -> Self {
        // Line 0 is the parser's "unknown location".
        if line > 0 {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{line}:{column}: {}", self.file, self.message)
            }
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("pack not found: {pack}")]
    PackNotFound { pack: String },
    #[error("scenario not found: {pack}/{scenario}")]
    ScenarioNotFound { pack: String, scenario: String },
    #[error("version not found: {pack}/{scenario}@{version}")]
    VersionNotFound {
        pack: String,
        scenario: String,
        version: String,
    },
    #[error("template not found: {template} for {pack}/{scenario}@{version}")]
    TemplateNotFound {
        pack: String,
        scenario: String,
        version: String,
        template: String,
    },
    #[error("agent not found: {agent_ref}")]
    AgentNotFound { agent_ref: String },
    #[error("invalid scenarioRef: {problem} in \"{reference}\"")]
    InvalidScenarioRef {
        problem: &'static str,
        reference: String,
    },
    /// The compile request itself is malformed (wrong field types).
    #[error("invalid compile request")]
    InvalidRequest(Vec<FieldError>),
    /// The merged inputs do not satisfy the scenario's input schema.
    #[error("Input validation failed")]
    InvalidInputs(Vec<InputError>),
    #[error("undefined placeholder: {{{{ {path} }}}}")]
    UndefinedPlaceholder { path: String },
    /// Any other reason the scenario cannot be turned into an ExecutionRequest.
    #[error("{0}")]
    Compilation(String),
    #[error("{0}")]
    InvalidPackData(LoadError),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::PackNotFound { .. } => ErrorCode::PackNotFound,
            Error::ScenarioNotFound { .. } => ErrorCode::ScenarioNotFound,
            Error::VersionNotFound { .. } => ErrorCode::VersionNotFound,
            Error::TemplateNotFound { .. } => ErrorCode::TemplateNotFound,
            Error::AgentNotFound { .. } => ErrorCode::AgentNotFound,
            Error::InvalidScenarioRef { .. } => ErrorCode::InvalidScenarioRef,
            Error::InvalidRequest(_) | Error::InvalidInputs(_) => ErrorCode::ValidationError,
            Error::UndefinedPlaceholder { .. } | Error::Compilation(_) => {
                ErrorCode::CompilationError
            }
            Error::InvalidPackData(_) => ErrorCode::InvalidPackData,
        }
    }

    pub fn to_api_error(&self) -> ApiError {
        match self {
            Error::InvalidRequest(errors) => ApiError::validation(errors.clone()),
            Error::InvalidInputs(errors) => ApiError::new(self.code(), self.to_string())
                .with_details(json!({ "errors": errors })),
            Error::UndefinedPlaceholder { path } => ApiError::new(self.code(), self.to_string())
                .with_details(json!({ "placeholder": path })),
            Error::InvalidPackData(problem) => ApiError::new(self.code(), self.to_string())
                // A struct of strings and integers always converts.
                .with_details(serde_json::to_value(problem).unwrap_or_default()),
            _ => ApiError::new(self.code(), self.to_string()),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        error.to_api_error()
    }
}

impl From<LoadError> for Error {
    fn from(problem: LoadError) -> Self {
        Error::InvalidPackData(problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_name_the_file_and_position() {
        assert_eq!(
            LoadError::new("a/b.yaml", "bad").at(3, 7).to_string(),
            "a/b.yaml:3:7: bad"
        );
        assert_eq!(
            LoadError::new("a/b.yaml", "bad").at(0, 0).to_string(),
            "a/b.yaml: bad"
        );
    }

    #[test]
    fn errors_map_onto_api_errors() {
        let input = InputError {
            field: "inputs.amount".into(),
            message: "\"x\" is not of type \"number\"".into(),
            instance_path: "/amount".into(),
            schema_path: "/properties/amount/type".into(),
            keyword: "type".into(),
        };
        let cases = [
            (
                Error::PackNotFound { pack: "p".into() },
                ErrorCode::PackNotFound,
                "pack not found: p",
            ),
            (
                Error::AgentNotFound {
                    agent_ref: "a".into(),
                },
                ErrorCode::AgentNotFound,
                "agent not found: a",
            ),
            (
                Error::InvalidInputs(vec![input]),
                ErrorCode::ValidationError,
                "Input validation failed",
            ),
            (
                Error::UndefinedPlaceholder {
                    path: "inputs.x".into(),
                },
                ErrorCode::CompilationError,
                "undefined placeholder: {{ inputs.x }}",
            ),
            (
                Error::InvalidPackData(LoadError::new("f.yaml", "m")),
                ErrorCode::InvalidPackData,
                "f.yaml: m",
            ),
            (
                Error::InvalidRequest(vec![FieldError::new("inputs", "must be an object")]),
                ErrorCode::ValidationError,
                "inputs: must be an object",
            ),
        ];
        for (error, code, message) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.code, api.message.as_str()), (code, message));
        }
        let api = Error::InvalidInputs(vec![]).to_api_error();
        assert_eq!(api.body()["details"], json!({"errors": []}));
        let api = Error::InvalidPackData(LoadError::new("f.yaml", "m")).to_api_error();
        assert_eq!(api.details, Some(json!({"file": "f.yaml", "message": "m"})));
    }
}
