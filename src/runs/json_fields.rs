//! A small reader over untyped JSON that collects every problem with its field path instead of
//! stopping at the first one (what serde derive would do).

use serde_json::{Map, Value};

use crate::error::FieldError;

/// Collected field problems: errors make a request invalid, warnings do not.
#[derive(Debug, Default)]
pub struct Problems {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl Problems {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Joins a parent path and a key: `session` + `ttlMs` → `session.ttlMs`.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

pub fn index(parent: &str, position: usize) -> String {
    format!("{parent}[{position}]")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A view of one JSON object at `path`.
pub struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Obj<'a> {
    /// `value` must be an object; otherwise a problem is recorded and `None` returned.
    pub fn expect(value: &'a Value, path: &str, problems: &mut Problems) -> Option<Obj<'a>> {
        match value {
            Value::Object(map) => Some(Obj {
                map,
                path: path.to_owned(),
            }),
            other => {
                let field = if path.is_empty() { "$" } else { path };
                problems.push(
                    field,
                    format!("must be an object, got {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value at `key`, treating JSON `null` as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    pub fn required_str(&self, key: &str, problems: &mut Problems) -> Option<String> {
        match self.get(key) {
            None => {
                problems.push(self.field(key), "is required");
                None
            }
            Some(Value::String(text)) if text.trim().is_empty() => {
                problems.push(self.field(key), "must not be empty");
                None
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                problems.push(
                    self.field(key),
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional string; present values must be non-empty.
    pub fn optional_str(&self, key: &str, problems: &mut Problems) -> Option<String> {
        match self.get(key)? {
            Value::String(text) if text.trim().is_empty() => {
                problems.push(self.field(key), "must not be empty when present");
                None
            }
            Value::String(text) => Some(text.clone()),
            other => {
                problems.push(
                    self.field(key),
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional string that may be empty.
    pub fn optional_any_str(&self, key: &str, problems: &mut Problems) -> Option<String> {
        match self.get(key)? {
            Value::String(text) => Some(text.clone()),
            other => {
                problems.push(
                    self.field(key),
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional integer; a decimal string is accepted too, as proto3 JSON writes 64-bit
    /// integers as strings.
    pub fn optional_i64(&self, key: &str, problems: &mut Problems) -> Option<i64> {
        let value = self.get(key)?;
        let number = match value {
            Value::String(text) => text.trim().parse::<i64>().ok(),
            other => other.as_i64(),
        };
        match number {
            Some(number) => Some(number),
            None => {
                let message = match value {
                    Value::Number(_) => "must be an integer".to_owned(),
                    other => format!("must be an integer, got {}", type_name(other)),
                };
                problems.push(self.field(key), message);
                None
            }
        }
    }

    pub fn optional_object(&self, key: &str, problems: &mut Problems) -> Option<Obj<'a>> {
        let value = self.get(key)?;
        Obj::expect(value, &self.field(key), problems)
    }

    pub fn optional_array(&self, key: &str, problems: &mut Problems) -> Option<&'a Vec<Value>> {
        match self.get(key)? {
            Value::Array(items) => Some(items),
            other => {
                problems.push(
                    self.field(key),
                    format!("must be an array, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional array of strings; each element must be a non-empty string.
    pub fn optional_strings(&self, key: &str, problems: &mut Problems) -> Vec<String> {
        let Some(items) = self.optional_array(key, problems) else {
            return Vec::new();
        };
        let path = self.field(key);
        let mut strings = Vec::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            match item {
                Value::String(text) if !text.trim().is_empty() => strings.push(text.clone()),
                Value::String(_) => problems.push(index(&path, position), "must not be empty"),
                other => problems.push(
                    index(&path, position),
                    format!("must be a string, got {}", type_name(other)),
                ),
            }
        }
        strings
    }

    /// An optional free-form JSON object, returned as a map.
    pub fn optional_map(&self, key: &str, problems: &mut Problems) -> Option<Map<String, Value>> {
        self.optional_object(key, problems)
            .map(|object| object.map.clone())
    }

    /// Warns about every key not in `known`, so typos do not pass unnoticed; unknown fields
    /// are ignored, as clients may send more than this service reads.
    pub fn warn_unknown(&self, known: &[&str], problems: &mut Problems) {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) {
                problems
                    .warnings
                    .push(format!("{}: unknown field ignored", self.field(key)));
            }
        }
    }
}
