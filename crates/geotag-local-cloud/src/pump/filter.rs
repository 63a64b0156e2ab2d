//! Lambda event filtering: the patterns of an event source's `FilterCriteria`,
//! matched against each record as the function would receive it.
//!
//! The rules are EventBridge's (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html>):
//! every key of a pattern must match; a list lists the accepted values (any
//! one will do; against a list in the record, any element); a nested object
//! descends into the record. Accepted values are literals or the operators
//! `prefix`, `suffix`, `equals-ignore-case`, `anything-but`, `numeric` and
//! `exists`. A record is kept when any of the source's patterns matches.

use serde_json::{Map, Value};

/// Whether `record` passes `filters` (no filters: every record passes).
pub fn admits(filters: &[Value], record: &Value) -> bool {
    filters.is_empty() || filters.iter().any(|pattern| matches(pattern, record))
}

/// Whether one pattern matches `record`.
pub fn matches(pattern: &Value, record: &Value) -> bool {
    match pattern {
        Value::Object(pattern) => object_matches(pattern, record),
        _ => false,
    }
}

fn object_matches(pattern: &Map<String, Value>, record: &Value) -> bool {
    pattern.iter().all(|(key, expected)| {
        let field = record.get(key);
        match expected {
            Value::Object(nested) => field.is_some_and(|value| object_matches(nested, value)),
            Value::Array(options) => options.iter().any(|option| option_matches(option, field)),
            _ => false,
        }
    })
}

fn option_matches(option: &Value, field: Option<&Value>) -> bool {
    if let Some(exists) = option.get("exists").and_then(Value::as_bool) {
        return field.is_some() == exists;
    }
    match field {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|item| value_matches(option, item)),
        Some(value) => value_matches(option, value),
    }
}

fn value_matches(option: &Value, value: &Value) -> bool {
    let Value::Object(operator) = option else {
        return literal_eq(option, value);
    };
    let text = value.as_str();
    if let Some(prefix) = operator.get("prefix").and_then(Value::as_str) {
        return text.is_some_and(|t| t.starts_with(prefix));
    }
    if let Some(suffix) = operator.get("suffix").and_then(Value::as_str) {
        return text.is_some_and(|t| t.ends_with(suffix));
    }
    if let Some(other) = operator.get("equals-ignore-case").and_then(Value::as_str) {
        return text.is_some_and(|t| t.eq_ignore_ascii_case(other));
    }
    if let Some(excluded) = operator.get("anything-but") {
        return match excluded {
            Value::Array(values) => !values.iter().any(|v| literal_eq(v, value)),
            Value::Object(_) => !value_matches(excluded, value),
            literal => !literal_eq(literal, value),
        };
    }
    if let Some(Value::Array(conditions)) = operator.get("numeric") {
        let Some(number) = as_number(value) else {
            return false;
        };
        return conditions.chunks(2).all(|pair| match pair {
            [Value::String(op), bound] => as_number(bound).is_some_and(|bound| match op.as_str() {
                "=" => number == bound,
                "<" => number < bound,
                "<=" => number <= bound,
                ">" => number > bound,
                ">=" => number >= bound,
                _ => false,
            }),
            _ => false,
        });
    }
    false
}

fn literal_eq(expected: &Value, value: &Value) -> bool {
    match (as_number(expected), as_number(value)) {
        (Some(a), Some(b)) if expected.is_number() && value.is_number() => a == b,
        _ => expected == value,
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Value {
        json!({"eventName": "INSERT", "dynamodb": {"NewImage": {"device_id": {"S": "tag-7"},
               "battery": {"N": "14.5"}}, "Keys": {"sk": {"S": "2026-11-20T08:00:00.000Z"}}},
               "tags": ["a", "b"]})
    }

    #[test]
    fn literal_lists_and_nesting() {
        assert!(matches(&json!({"eventName": ["INSERT"]}), &record()));
        assert!(matches(
            &json!({"eventName": ["MODIFY", "INSERT"]}),
            &record()
        ));
        assert!(!matches(&json!({"eventName": ["REMOVE"]}), &record()));
        assert!(matches(
            &json!({"dynamodb": {"NewImage": {"device_id": {"S": ["tag-7"]}}}}),
            &record()
        ));
        assert!(!matches(
            &json!({"dynamodb": {"OldImage": {"device_id": {"S": ["tag-7"]}}}}),
            &record()
        ));
        assert!(matches(&json!({"tags": ["b"]}), &record()));
    }

    #[test]
    fn operators() {
        assert!(matches(
            &json!({"dynamodb": {"NewImage": {"device_id": {"S": [{"prefix": "tag-"}]}}}}),
            &record()
        ));
        assert!(matches(
            &json!({"eventName": [{"anything-but": ["REMOVE"]}]}),
            &record()
        ));
        assert!(!matches(
            &json!({"eventName": [{"anything-but": "INSERT"}]}),
            &record()
        ));
        assert!(matches(
            &json!({"eventName": [{"equals-ignore-case": "insert"}]}),
            &record()
        ));
        assert!(matches(
            &json!({"eventName": [{"suffix": "ERT"}]}),
            &record()
        ));
        assert!(matches(
            &json!({"dynamodb": {"NewImage": {"battery": {"N": [{"numeric": ["<", 20]}]}}}}),
            &record()
        ));
        assert!(!matches(
            &json!({"dynamodb": {"NewImage": {"battery": {"N": [{"numeric": [">", 0, "<=", 10]}]}}}}),
            &record()
        ));
        assert!(matches(
            &json!({"dynamodb": {"OldImage": [{"exists": false}]}}),
            &record()
        ));
        assert!(!matches(
            &json!({"dynamodb": {"NewImage": [{"exists": false}]}}),
            &record()
        ));
    }

    #[test]
    fn any_pattern_admits() {
        let filters = [
            json!({"eventName": ["REMOVE"]}),
            json!({"eventName": ["INSERT"]}),
        ];
        assert!(admits(&filters, &record()));
        assert!(!admits(&filters[..1], &record()));
        assert!(admits(&[], &record()));
    }
}
