//! What DynamoDB bills a write for: its item's size in write units.
//!
//! The size rules are DynamoDB's ("Item sizes and formats" in the developer
//! guide): attribute names count their UTF-8 bytes, strings and binaries
//! their bytes, numbers one byte per two significant digits plus one,
//! booleans and nulls one byte, and lists and maps three bytes plus their
//! elements plus one byte per element. A standard write costs one write unit
//! per started kilobyte of the larger of the item before and after.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// The item's size in bytes, as DynamoDB counts it.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, v)| 1 + name.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 0,
    }
}

fn number_size(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1);
    significant.div_ceil(2) + 1
}

/// Write units of a standard write of an item of `size` bytes.
pub fn write_units(size: usize) -> u64 {
    size.div_ceil(1024).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        let item = HashMap::from([
            ("id".to_owned(), AttributeValue::S("abc".into())),
            ("n".to_owned(), AttributeValue::N("48.856600".into())),
            ("ok".to_owned(), AttributeValue::Bool(true)),
            (
                "l".to_owned(),
                AttributeValue::L(vec![AttributeValue::N("1".into())]),
            ),
        ]);
        // id 2+3, n 1+(6 digits: 3+1), ok 2+1, l 1+(3+1+2)
        assert_eq!(item_size(&item), 5 + 5 + 3 + 7);
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
    }
}
