//! Launch inputs: defaults taken from the scenario's JSON Schema, and validation against it.

use std::sync::Arc;

use jsonschema::{Draft, Validator, error::ValidationErrorKind};
use serde::Serialize;
use serde_json::{Map, Value};

/// One schema violation of the merged inputs. `field` names the input (`inputs.amount`,
/// `inputs.items[0].id`); `instancePath`, `schemaPath` and `keyword` are the JSON-Schema view
/// of the same problem, as form-rendering clients expect them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InputError {
    pub field: String,
    pub message: String,
    pub instance_path: String,
    pub schema_path: String,
    pub keyword: String,
}

/// A compiled input schema.
#[derive(Clone)]
pub(crate) struct InputSchema {
    pub(crate) schema: Value,
    validator: Arc<Validator>,
}

impl InputSchema {
    /// Compiles `schema` as draft-07 (what authors of these packs target) unless it names
    /// another draft in `$schema`; `format` is asserted, not just annotated.
    pub(crate) fn compile(schema: Value) -> Result<Self, String> {
        let validator = jsonschema::options()
            .with_draft(Draft::Draft7)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|error| format!("spec.inputs.schema is not a valid JSON Schema: {error}"))?;
        Ok(InputSchema {
            schema,
            validator: Arc::new(validator),
        })
    }

    /// The `default` of every top-level property that declares one (even `null`). Nested
    /// defaults are not collected: inputs merge shallowly, so they could not be honoured.
    pub(crate) fn defaults(&self) -> Map<String, Value> {
        self.schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .filter_map(|(name, property)| {
                        property
                            .get("default")
                            .map(|default| (name.clone(), default.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every violation, ordered by the input's position in the schema's `properties` (the
    /// validator itself follows the order of the instance).
    pub(crate) fn validate(&self, inputs: &Value) -> Result<(), Vec<InputError>> {
        let mut errors: Vec<InputError> = self
            .validator
            .iter_errors(inputs)
            .map(|error| {
                let instance_path = error.instance_path().as_str().to_owned();
                let mut field = field_name(&instance_path);
                if let ValidationErrorKind::Required { property } = error.kind() {
                    let property = property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned);
                    field = format!("{field}.{property}");
                }
                InputError {
                    field,
                    message: error.to_string(),
                    schema_path: error.schema_path().as_str().to_owned(),
                    keyword: error.kind().keyword().to_owned(),
                    instance_path,
                }
            })
            .collect();
        errors.sort_by_key(|error| self.property_rank(&error.field));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Position of the field's top-level input among the schema's properties.
    fn property_rank(&self, field: &str) -> usize {
        let input = field
            .strip_prefix("inputs.")
            .and_then(|rest| rest.split(['.', '[']).next())
            .unwrap_or_default();
        self.schema
            .get("properties")
            .and_then(Value::as_object)
            .and_then(|properties| properties.keys().position(|name| name == input))
            .unwrap_or(usize::MAX)
    }
}

/// `/items/0/id` → `inputs.items[0].id`.
fn field_name(instance_path: &str) -> String {
    let mut field = String::from("inputs");
    for segment in instance_path.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|byte| byte.is_ascii_digit()) {
            field.push_str(&format!("[{segment}]"));
        } else {
            field.push('.');
            field.push_str(&segment);
        }
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> InputSchema {
        InputSchema::compile(json!({
            "type": "object",
            "properties": {
                "customerId": {"type": "string", "default": "C-1"},
                "amount": {"type": "number", "default": 10, "minimum": 1},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}}}},
                "nothing": {"default": null},
                "nested": {"type": "object", "properties": {"inner": {"default": 5}}}
            },
            "required": ["amount", "score"]
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_top_level_only_and_include_null() {
        assert_eq!(
            Value::Object(schema().defaults()),
            json!({"customerId": "C-1", "amount": 10, "nothing": null})
        );
        assert!(
            InputSchema::compile(json!({"type": "object"}))
                .unwrap()
                .defaults()
                .is_empty()
        );
    }

    #[test]
    fn reports_every_violation_with_its_path_in_schema_order() {
        let errors = schema()
            .validate(&json!({"score": 2, "amount": "x", "customerId": 5, "items": [{"id": "a"}]}))
            .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "inputs.customerId",
                "inputs.amount",
                "inputs.score",
                "inputs.items[0].id"
            ]
        );
        assert_eq!(errors[1].instance_path, "/amount");
        assert_eq!(errors[1].keyword, "type");
        assert_eq!(errors[2].keyword, "maximum");
    }

    #[test]
    fn missing_required_inputs_name_the_property() {
        let errors = schema().validate(&json!({"amount": 3})).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "inputs.score");
        assert_eq!(errors[0].keyword, "required");
    }

    #[test]
    fn strings_are_not_coerced_to_numbers() {
        assert!(
            schema()
                .validate(&json!({"amount": "3", "score": 0.5}))
                .is_err()
        );
        assert!(
            schema()
                .validate(&json!({"amount": 3, "score": 0.5}))
                .is_ok()
        );
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(InputSchema::compile(json!({"type": "no-such-type"})).is_err());
    }
}
