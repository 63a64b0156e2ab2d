//! The wire types a body is parsed into: the envelopes' fields and a
//! reading's, as serde reads them, before any validation.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The top of a body: the SNS envelope's fields (which tell it apart) and the
/// edge envelope's. Unknown fields are ignored.
#[derive(Deserialize)]
pub(super) struct WireOuter<'a> {
    #[serde(rename = "Type", default)]
    pub(super) kind: StringOrIgnored,
    #[serde(rename = "TopicArn", default)]
    pub(super) topic_arn: StringOrIgnored,
    #[serde(rename = "MessageId", default)]
    pub(super) message_id: StringOrIgnored,
    #[serde(rename = "Message", default)]
    pub(super) message: StringOrIgnored,
    pub(super) thing_name: Option<String>,
    pub(super) received_at: Option<i64>,
    #[serde(borrow)]
    pub(super) payload: Option<Cow<'a, str>>,
}

/// One reading as a tag sends it; also the top level of a batch message.
/// Unknown fields are ignored so that tags can add fields before we use them.
#[derive(Deserialize)]
pub(super) struct WireReading<'a> {
    pub(super) device_id: Option<String>,
    #[serde(borrow)]
    pub(super) readings: Option<Vec<&'a RawValue>>,
    pub(super) ts: Option<WireTs>,
    pub(super) lat: Option<f64>,
    pub(super) lon: Option<f64>,
    pub(super) alt: Option<f64>,
    pub(super) speed: Option<f64>,
    pub(super) heading: Option<f64>,
    pub(super) battery: Option<f64>,
    pub(super) accuracy: Option<f64>,
    pub(super) seq: Option<u64>,
}

impl WireReading<'_> {
    pub(super) fn reading_field_present(&self) -> Option<&'static str> {
        [
            ("ts", self.ts.is_some()),
            ("lat", self.lat.is_some()),
            ("lon", self.lon.is_some()),
            ("alt", self.alt.is_some()),
            ("speed", self.speed.is_some()),
            ("heading", self.heading.is_some()),
            ("battery", self.battery.is_some()),
            ("accuracy", self.accuracy.is_some()),
            ("seq", self.seq.is_some()),
        ]
        .into_iter()
        .find_map(|(name, present)| present.then_some(name))
    }
}

/// A string, or nothing if the value is of another type: an envelope field
/// that is not a string makes the body not an envelope, and in a reading it
/// is an unknown field like any other.
#[derive(Default)]
pub(super) struct StringOrIgnored(pub(super) Option<String>);

impl<'de> Deserialize<'de> for StringOrIgnored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;
        impl<'de> Visitor<'de> for StringVisitor {
            type Value = StringOrIgnored;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrIgnored(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(StringOrIgnored(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StringOrIgnored(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StringOrIgnored(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StringOrIgnored(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StringOrIgnored(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StringOrIgnored(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(StringOrIgnored(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(StringOrIgnored(None))
            }
        }
        deserializer.deserialize_any(StringVisitor)
    }
}

/// `ts` as sent: epoch milliseconds or an RFC 3339 string (checked in `validate`,
/// so that a bad string gets its own reason code).
pub(super) enum WireTs {
    Millis(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for WireTs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = WireTs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("epoch milliseconds (an integer) or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireTs, E> {
                Ok(WireTs::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireTs, E> {
                i64::try_from(v)
                    .map(WireTs::Millis)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireTs, E> {
                Ok(WireTs::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(TsVisitor)
    }
}
