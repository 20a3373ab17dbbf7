//! Small operations on JSON values shared by the loader and the compiler.

use serde_json::{Map, Number, Value};

/// Largest integer a JavaScript client reads back exactly (2^53).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Rewrites integral floats (`1.0`, YAML `2400.0`) as integers, recursively.
///
/// JSON clients do not distinguish `1` from `1.0`, but serde does: without this, a YAML
/// `ttlMs: 300000.0` could not be read as an integer by the run service, and `0.0` would be
/// written where JavaScript writes `0`.
pub(crate) fn normalize_numbers(value: Value) -> Value {
    match value {
        Value::Number(number) => Value::Number(normalize_number(number)),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, normalize_numbers(value)))
                .collect(),
        ),
        other => other,
    }
}

fn normalize_number(number: Number) -> Number {
    match number.as_f64() {
        Some(float)
            if !number.is_i64()
                && !number.is_u64()
                && float.fract() == 0.0
                && float.abs() <= MAX_SAFE_INTEGER =>
        {
            // In range and integral, so the cast is exact.
            Number::from(float as i64)
        }
        _ => number,
    }
}

/// Deep merge: objects merge key by key (base keys keep their position, new keys are appended);
/// anything else in `overrides` (arrays, scalars, `null`) replaces the base value.
pub(crate) fn deep_merge(
    base: &Map<String, Value>,
    overrides: &Map<String, Value>,
) -> Map<String, Value> {
    let mut merged = base.clone();
    for (key, value) in overrides {
        let combined = match (merged.get(key), value) {
            (Some(Value::Object(base_child)), Value::Object(override_child)) => {
                Value::Object(deep_merge(base_child, override_child))
            }
            _ => value.clone(),
        };
        merged.insert(key.clone(), combined);
    }
    merged
}

/// Shallow overlay: `top`'s keys replace `base`'s (used for inputs and runtime selection).
pub(crate) fn overlay(base: &Map<String, Value>, top: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = base.clone();
    for (key, value) in top {
        merged.insert(key.clone(), value.clone());
    }
    merged
}

/// The items in first-seen order, without repeats.
pub(crate) fn unique<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        if !seen.iter().any(|known| known == item) {
            seen.push(item.to_owned());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn integral_floats_become_integers() {
        let value =
            normalize_numbers(json!({"a": 1.0, "b": [0.0, -3.0], "c": 0.5, "d": 7, "e": 1e21}));
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"a":1,"b":[0,-3],"c":0.5,"d":7,"e":1e+21}"#
        );
    }

    #[test]
    fn deep_merge_recurses_into_objects_and_appends_new_keys() {
        let base =
            object(json!({"ttlMs": 1, "hints": {"type": "none", "veto": false}, "keep": true}));
        let top = object(json!({"hints": {"veto": true, "threshold": 0.5}, "ttlMs": 2}));
        let merged = Value::Object(deep_merge(&base, &top));
        assert_eq!(
            serde_json::to_string(&merged).unwrap(),
            r#"{"ttlMs":2,"hints":{"type":"none","veto":true,"threshold":0.5},"keep":true}"#
        );
    }

    #[test]
    fn deep_merge_replaces_arrays_and_honours_null() {
        let base = object(json!({"tags": ["a", "b"], "policyVersion": "p", "nested": {"x": 1}}));
        let top = object(json!({"tags": ["c"], "policyVersion": null, "nested": [1]}));
        let merged = deep_merge(&base, &top);
        assert_eq!(
            Value::Object(merged),
            json!({"tags": ["c"], "policyVersion": null, "nested": [1]})
        );
    }

    #[test]
    fn deep_merge_leaves_its_inputs_alone() {
        let base = object(json!({"a": {"b": 1}}));
        let top = object(json!({"a": {"c": 2}}));
        let _ = deep_merge(&base, &top);
        assert_eq!(Value::Object(base), json!({"a": {"b": 1}}));
        assert_eq!(Value::Object(top), json!({"a": {"c": 2}}));
    }

    #[test]
    fn unique_keeps_first_occurrences_in_order() {
        assert_eq!(unique(["b", "a", "b", "c", "a"]), ["b", "a", "c"]);
    }

    #[test]
    fn overlay_is_shallow() {
        let base = object(json!({"a": {"x": 1, "y": 2}, "b": 1}));
        let top = object(json!({"a": {"x": 3}}));
        assert_eq!(
            Value::Object(overlay(&base, &top)),
            json!({"a": {"x": 3}, "b": 1})
        );
    }
}
