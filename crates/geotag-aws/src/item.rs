//! An item's attributes as the table modules read them, whether the item
//! came from the SDK (a `HashMap` of `AttributeValue`s) or from a stream
//! record ([`crate::stream::Image`]): each layout has one reader, generic
//! over [`ItemView`], so that a renamed attribute breaks one function.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;

/// The attributes of an item (or of a map attribute), by name.
pub trait ItemView {
    type Value: ValueView<Map = Self>;

    fn attribute(&self, name: &str) -> Option<&Self::Value>;

    /// A string attribute; `None` if absent or of another type.
    fn text(&self, name: &str) -> Option<&str> {
        self.attribute(name)?.as_s()
    }

    /// A number attribute; `None` if absent, of another type, or not a `T`.
    fn number<T: FromStr>(&self, name: &str) -> Option<T> {
        self.attribute(name)?.as_number()
    }

    /// An attribute that may be absent, but must read if present: `None`
    /// if it is there and is not a number `T`, `Some(None)` if absent.
    fn optional_number<T: FromStr>(&self, name: &str) -> Option<Option<T>> {
        match self.attribute(name) {
            None => Some(None),
            Some(value) => Some(Some(value.as_number()?)),
        }
    }

    /// The same for a string attribute.
    fn optional_text(&self, name: &str) -> Option<Option<&str>> {
        match self.attribute(name) {
            None => Some(None),
            Some(value) => Some(Some(value.as_s()?)),
        }
    }
}

/// One attribute's value, read by type: `None` when it is of another.
pub trait ValueView: Sized {
    type Map: ItemView<Value = Self>;

    fn as_s(&self) -> Option<&str>;
    fn as_n(&self) -> Option<&str>;
    fn as_l(&self) -> Option<&[Self]>;
    fn as_m(&self) -> Option<&Self::Map>;

    fn as_number<T: FromStr>(&self) -> Option<T> {
        self.as_n()?.parse().ok()
    }
}

impl ItemView for HashMap<String, AttributeValue> {
    type Value = AttributeValue;

    fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.get(name)
    }
}

impl ValueView for AttributeValue {
    type Map = HashMap<String, AttributeValue>;

    fn as_s(&self) -> Option<&str> {
        AttributeValue::as_s(self).ok().map(String::as_str)
    }

    fn as_n(&self) -> Option<&str> {
        AttributeValue::as_n(self).ok().map(String::as_str)
    }

    fn as_l(&self) -> Option<&[AttributeValue]> {
        AttributeValue::as_l(self).ok().map(Vec::as_slice)
    }

    fn as_m(&self) -> Option<&HashMap<String, AttributeValue>> {
        AttributeValue::as_m(self).ok()
    }
}
