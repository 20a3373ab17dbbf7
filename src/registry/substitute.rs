//! `{{ path }}` placeholders in launch templates.
//!
//! A string that is exactly one placeholder becomes the referenced value with its JSON type; a
//! placeholder embedded in text is replaced by the value's text. Object keys are never
//! substituted, and produced text is not substituted again.

use serde_json::{Map, Value};

use super::error::Error;

/// Substitutes every placeholder in `template`, resolving paths against `variables`
/// (the compiler passes `{"inputs": …}`).
pub(crate) fn substitute(template: &Value, variables: &Value) -> Result<Value, Error> {
    match template {
        Value::String(text) => substitute_text(text, variables),
        Value::Array(items) => items
            .iter()
            .map(|item| substitute(item, variables))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| Ok((key.clone(), substitute(value, variables)?)))
            .collect::<Result<Map<_, _>, Error>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Every placeholder in `text` as `(start, end, path)` byte ranges.
pub(crate) fn placeholders(text: &str) -> Vec<(usize, usize, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("{{") {
        let start = from + offset;
        match parse_placeholder(&text[start..]) {
            Some((length, path)) => {
                found.push((start, start + length, path));
                from = start + length;
            }
            // Not a placeholder here; one may still start at the next brace.
            None => from = start + 1,
        }
    }
    found
}

/// Parses `{{ path }}` at the start of `text`: returns its length and the path.
fn parse_placeholder(text: &str) -> Option<(usize, &str)> {
    let after_open = text.strip_prefix("{{")?;
    let path_start = after_open.len() - after_open.trim_start().len();
    let rest = &after_open[path_start..];
    let path_length = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .unwrap_or(rest.len());
    if path_length == 0 {
        return None;
    }
    let path = &rest[..path_length];
    let after_path = &rest[path_length..];
    let close = after_path.trim_start();
    close.strip_prefix("}}")?;
    let length = text.len() - close.len() + 2;
    Some((length, path))
}

fn substitute_text(text: &str, variables: &Value) -> Result<Value, Error> {
    let found = placeholders(text);
    if let [(0, end, path)] = found.as_slice()
        && *end == text.len()
    {
        return resolve(path, variables).cloned();
    }
    let mut output = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end, path) in found {
        output.push_str(&text[copied..start]);
        output.push_str(&embeddable_text(path, resolve(path, variables)?)?);
        copied = end;
    }
    output.push_str(&text[copied..]);
    Ok(Value::String(output))
}

/// Looks `path` up (dot-separated; numeric segments index arrays).
pub(crate) fn lookup<'a>(path: &str, variables: &'a Value) -> Option<&'a Value> {
    path.split('.')
        .try_fold(variables, |current, segment| match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get(index)),
            _ => None,
        })
}

fn resolve<'a>(path: &str, variables: &'a Value) -> Result<&'a Value, Error> {
    lookup(path, variables).ok_or_else(|| Error::UndefinedPlaceholder {
        path: path.to_owned(),
    })
}

/// The text of a value embedded in a longer string. Objects and arrays have no useful text
/// form, so embedding one is an authoring mistake rather than something to stringify.
fn embeddable_text(path: &str, value: &Value) -> Result<String, Error> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Null => Ok("null".to_owned()),
        Value::Array(_) | Value::Object(_) => Err(Error::Compilation(format!(
            "placeholder {{{{ {path} }}}} is an object or array and cannot be embedded in text; \
             use it as the whole value"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Value {
        json!({"inputs": {
            "amount": 2400, "ratio": 0.5, "vip": true, "name": "CUST-1", "none": null,
            "nested": {"field": "deep", "list": ["a", "b"]}
        }})
    }

    fn run(template: Value) -> Result<Value, Error> {
        substitute(&template, &vars())
    }

    #[test]
    fn exact_match_keeps_the_type() {
        assert_eq!(run(json!("{{ inputs.amount }}")).unwrap(), json!(2400));
        assert_eq!(run(json!("{{inputs.ratio}}")).unwrap(), json!(0.5));
        assert_eq!(run(json!("{{ inputs.vip }}")).unwrap(), json!(true));
        assert_eq!(run(json!("{{ inputs.none }}")).unwrap(), Value::Null);
        assert_eq!(
            run(json!("{{ inputs.nested }}")).unwrap(),
            json!({"field": "deep", "list": ["a", "b"]})
        );
    }

    #[test]
    fn embedded_placeholders_become_text() {
        assert_eq!(
            run(json!("{{ inputs.name }}-review")).unwrap(),
            json!("CUST-1-review")
        );
        assert_eq!(
            run(json!("amount {{ inputs.amount }}, vip={{ inputs.vip }}, r={{inputs.ratio}}, n={{ inputs.none }}")).unwrap(),
            json!("amount 2400, vip=true, r=0.5, n=null")
        );
        // Surrounding spaces make it embedded, so the result is a string.
        assert_eq!(run(json!(" {{ inputs.amount }}")).unwrap(), json!(" 2400"));
    }

    #[test]
    fn nested_paths_and_array_indexes_resolve() {
        assert_eq!(
            run(json!("{{ inputs.nested.field }}")).unwrap(),
            json!("deep")
        );
        assert_eq!(
            run(json!("{{ inputs.nested.list.1 }}")).unwrap(),
            json!("b")
        );
    }

    #[test]
    fn undefined_placeholder_names_the_path() {
        for template in [
            json!("{{ inputs.missing }}"),
            json!("x {{ inputs.nested.nope }} y"),
            json!("{{ inputs.amount.x }}"),
        ] {
            let error = run(template).unwrap_err();
            assert!(
                matches!(error, Error::UndefinedPlaceholder { .. }),
                "{error:?}"
            );
        }
        assert_eq!(
            run(json!("{{ inputs.missing }}")).unwrap_err().to_string(),
            "undefined placeholder: {{ inputs.missing }}"
        );
    }

    #[test]
    fn embedding_an_object_is_refused() {
        let error = run(json!("see {{ inputs.nested }}")).unwrap_err();
        assert!(matches!(error, Error::Compilation(_)), "{error:?}");
    }

    #[test]
    fn keys_are_never_substituted_and_containers_are_walked() {
        let out = run(json!({"{{ inputs.name }}": ["{{ inputs.amount }}", {"k": "{{ inputs.vip }}"}], "n": 5, "b": false, "z": null}))
            .unwrap();
        assert_eq!(
            out,
            json!({"{{ inputs.name }}": [2400, {"k": true}], "n": 5, "b": false, "z": null})
        );
    }

    #[test]
    fn text_that_is_not_a_placeholder_is_left_alone() {
        for text in [
            "plain",
            "{{ }}",
            "{{ not a path }}",
            "{ inputs.amount }",
            "{{ inputs.amount",
        ] {
            assert_eq!(run(json!(text)).unwrap(), json!(text));
        }
        assert_eq!(run(json!("{{{ inputs.amount }}")).unwrap(), json!("{2400"));
    }

    #[test]
    fn produced_text_is_not_substituted_again() {
        let variables = json!({"inputs": {"a": "{{ inputs.b }}", "b": 1}});
        assert_eq!(
            substitute(&json!("{{ inputs.a }}!"), &variables).unwrap(),
            json!("{{ inputs.b }}!")
        );
    }
}
