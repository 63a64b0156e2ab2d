//! From an SQS message body to validated readings.
//!
//! A body reaches the ingest queue in one of three shapes, and we detect which
//! rather than configure it, so that a subscription switched to or from raw
//! delivery keeps working:
//!
//! - **raw SNS delivery** or a **direct SQS send**: the body is the device's
//!   message itself;
//! - the **SNS JSON envelope**: an object with `Type`, `MessageId`, `TopicArn`
//!   and the device's message as a string in `Message`.
//!
//! An object carrying both `Type` and `TopicArn` is an envelope (every SNS
//! envelope has both; no reading has either). The device's message is then one
//! reading, or a batch `{"device_id": ..., "readings": [...]}` that a tag sends
//! after buffering offline.
//!
//! Decoding never panics and never gives up on a whole batch because of one of
//! its readings: each reading is decoded and validated on its own, so a batch
//! yields the valid readings *and* a rejection for each invalid one.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::reading::{Limits, Reading, is_valid_device_id, range};
use crate::reject::{Reason, Rejection};

/// How the body reached the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyForm {
    /// Raw SNS delivery or a direct SQS send: the body is the device's message.
    Raw,
    /// The SNS JSON envelope around the device's message.
    SnsEnvelope,
}

/// What one message body held.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage {
    pub form: BodyForm,
    /// The SNS `MessageId`, when the body was an envelope.
    pub sns_message_id: Option<String>,
    pub readings: Vec<Reading>,
    /// One entry per refused reading, in message order.
    pub rejected: Vec<Rejection>,
}

/// Decodes and validates one message body at time `now_ms`.
///
/// `Err` means nothing in the body is usable; `Ok` may still carry rejected
/// readings beside the valid ones.
pub fn decode_message(
    body: &str,
    limits: &Limits,
    now_ms: i64,
) -> Result<DecodedMessage, Rejection> {
    if body.len() > limits.max_message_bytes {
        return Err(Rejection::new(
            Reason::BodyTooLarge,
            "$",
            format!(
                "{} bytes, over the {}-byte limit",
                body.len(),
                limits.max_message_bytes
            ),
        ));
    }
    // One pass reads a reading's fields and the envelope's alike.
    let top: WireReading = parse(body, Prefix::top(""))?;
    if top.kind.0.is_some() && top.topic_arn.0.is_some() {
        if top.kind.0.as_deref() != Some("Notification") {
            return Err(Rejection::new(
                Reason::InvalidEnvelope,
                "Type",
                format!(
                    "SNS message of type {:?}, expected \"Notification\"",
                    top.kind.0.unwrap_or_default()
                ),
            ));
        }
        let Some(message) = top.message.0 else {
            return Err(Rejection::new(
                Reason::InvalidEnvelope,
                "Message",
                "SNS envelope without a Message",
            ));
        };
        let mut decoded = decode_payload(&message, Prefix::top("Message."), limits, now_ms)?;
        decoded.form = BodyForm::SnsEnvelope;
        decoded.sns_message_id = top.message_id.0;
        Ok(decoded)
    } else {
        decode_wire(top, Prefix::top(""), limits, now_ms)
    }
}

fn decode_payload(
    payload: &str,
    prefix: Prefix<'_>,
    limits: &Limits,
    now_ms: i64,
) -> Result<DecodedMessage, Rejection> {
    decode_wire(parse(payload, prefix)?, prefix, limits, now_ms)
}

/// A device's message, parsed: one reading, or a batch of them.
fn decode_wire(
    mut top: WireReading,
    prefix: Prefix<'_>,
    limits: &Limits,
    now_ms: i64,
) -> Result<DecodedMessage, Rejection> {
    let mut decoded = DecodedMessage {
        form: BodyForm::Raw,
        sns_message_id: None,
        readings: Vec::new(),
        rejected: Vec::new(),
    };
    let Some(items) = top.readings.take() else {
        decoded
            .readings
            .push(validate(top, None, prefix, limits, now_ms)?);
        return Ok(decoded);
    };

    if let Some(field) = top.reading_field_present() {
        return Err(Rejection::new(
            Reason::AmbiguousMessage,
            format!("{prefix}{field}"),
            "a batch message carries `readings` and no reading fields of its own",
        ));
    }
    let device_id = require_device_id(top.device_id, prefix)?;
    if items.is_empty() {
        return Err(Rejection::new(
            Reason::EmptyBatch,
            format!("{prefix}readings"),
            "a batch message needs at least one reading",
        ));
    }
    if items.len() > limits.max_readings_per_message {
        return Err(Rejection::new(
            Reason::TooManyReadings,
            format!("{prefix}readings"),
            format!(
                "{} readings, over the limit of {}",
                items.len(),
                limits.max_readings_per_message
            ),
        ));
    }
    decoded.readings.reserve_exact(items.len());
    for (index, raw) in items.into_iter().enumerate() {
        let item_prefix = prefix.item(index);
        let outcome = parse::<WireReading>(raw.get(), item_prefix).and_then(|item| {
            if item.readings.is_some() {
                return Err(Rejection::new(
                    Reason::AmbiguousMessage,
                    format!("{item_prefix}readings"),
                    "readings cannot nest",
                ));
            }
            validate(item, Some(&device_id), item_prefix, limits, now_ms)
        });
        match outcome {
            Ok(reading) => decoded.readings.push(reading),
            Err(rejection) => decoded.rejected.push(rejection),
        }
    }
    Ok(decoded)
}

/// Parses JSON, naming the failing field with serde_path_to_error.
fn parse<'a, T: Deserialize<'a>>(json: &'a str, prefix: Prefix<'_>) -> Result<T, Rejection> {
    let root = || prefix.root();
    // serde would read an array as a struct's fields in order and blame `[0]`;
    // a message or reading that is not an object is wrong as a whole.
    if !json.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<de::IgnoredAny>(json) {
            Ok(_) => Rejection::new(Reason::InvalidType, root(), "expected a JSON object"),
            Err(err) => Rejection::new(Reason::MalformedJson, root(), err.to_string()),
        });
    }
    // Most bodies are valid: parse without tracking the path (which costs an
    // allocation per field), and parse again to find it only on failure.
    if let Ok(value) = serde_json::from_str(json) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => Rejection::new(
                Reason::InvalidType,
                format!("{prefix}{path}"),
                inner.to_string(),
            ),
            serde_json::error::Category::Data => {
                Rejection::new(Reason::InvalidType, root(), inner.to_string())
            }
            // The path of a syntax error is wherever the parser stopped, not a field.
            _ => Rejection::new(Reason::MalformedJson, root(), inner.to_string()),
        }
    })?;
    deserializer
        .end()
        .map_err(|err| Rejection::new(Reason::MalformedJson, root(), err.to_string()))?;
    Ok(value)
}

fn require_device_id(id: Option<String>, prefix: Prefix<'_>) -> Result<String, Rejection> {
    let field = || format!("{prefix}device_id");
    let id = id.ok_or_else(|| Rejection::new(Reason::MissingField, field(), "required"))?;
    if is_valid_device_id(&id) {
        Ok(id)
    } else {
        Err(Rejection::new(
            Reason::InvalidDeviceId,
            field(),
            format!(
                "{:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ : -",
                truncate(&id, 80)
            ),
        ))
    }
}

fn validate(
    wire: WireReading,
    batch_device_id: Option<&str>,
    prefix: Prefix<'_>,
    limits: &Limits,
    now_ms: i64,
) -> Result<Reading, Rejection> {
    let field = |name: &str| format!("{prefix}{name}");
    let device_id = match (batch_device_id, wire.device_id) {
        (Some(batch), None) => batch.to_owned(),
        (Some(batch), Some(own)) if own == batch => own,
        (Some(batch), Some(own)) => {
            return Err(Rejection::new(
                Reason::DeviceIdMismatch,
                field("device_id"),
                format!("{:?} inside the batch of {batch:?}", truncate(&own, 80)),
            ));
        }
        (None, own) => require_device_id(own, prefix)?,
    };

    let ts_ms = match wire.ts {
        None => {
            return Err(Rejection::new(
                Reason::MissingField,
                field("ts"),
                "required",
            ));
        }
        Some(WireTs::Millis(ms)) => ms,
        Some(WireTs::Text(text)) => parse_rfc3339_ms(&text).ok_or_else(|| {
            Rejection::new(
                Reason::InvalidTimestamp,
                field("ts"),
                format!(
                    "{:?} is neither RFC 3339 nor epoch milliseconds",
                    truncate(&text, 80)
                ),
            )
        })?,
    };
    if ts_ms > now_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(Rejection::new(
            Reason::TimestampInFuture,
            field("ts"),
            format!(
                "{ts_ms} ms is more than {} s ahead of now ({now_ms} ms)",
                limits.max_future_skew_ms / 1000
            ),
        ));
    }
    if ts_ms < now_ms.saturating_sub(limits.retention_ms()) {
        let hint = if (0..100_000_000_000).contains(&ts_ms) {
            "; epoch milliseconds are expected, this looks like seconds"
        } else {
            ""
        };
        return Err(Rejection::new(
            Reason::TimestampTooOld,
            field("ts"),
            format!(
                "{ts_ms} ms is older than the {}-day retention{hint}",
                limits.retention_days
            ),
        ));
    }

    let lat = required_in(wire.lat, (-90.0, 90.0), prefix, "lat")?;
    let lon = required_in(wire.lon, (-180.0, 180.0), prefix, "lon")?;
    Ok(Reading {
        device_id,
        ts_ms,
        lat,
        lon,
        alt: optional_in(wire.alt, range::ALT, prefix, "alt")?,
        speed: optional_in(wire.speed, range::SPEED, prefix, "speed")?,
        heading: optional_in(wire.heading, range::HEADING, prefix, "heading")?
            .map(|heading| if heading == 360.0 { 0.0 } else { heading }),
        battery: optional_in(wire.battery, range::BATTERY, prefix, "battery")?,
        accuracy: optional_in(wire.accuracy, range::ACCURACY, prefix, "accuracy")?,
        seq: wire.seq,
    })
}

fn required_in(
    value: Option<f64>,
    bounds: (f64, f64),
    prefix: Prefix<'_>,
    name: &str,
) -> Result<f64, Rejection> {
    let value = value.ok_or_else(|| {
        Rejection::new(Reason::MissingField, format!("{prefix}{name}"), "required")
    })?;
    check_in(value, bounds, prefix, name)
}

fn optional_in(
    value: Option<f64>,
    bounds: (f64, f64),
    prefix: Prefix<'_>,
    name: &str,
) -> Result<Option<f64>, Rejection> {
    value
        .map(|value| check_in(value, bounds, prefix, name))
        .transpose()
}

fn check_in(
    value: f64,
    (low, high): (f64, f64),
    prefix: Prefix<'_>,
    name: &str,
) -> Result<f64, Rejection> {
    // `contains` is false for NaN, so a non-finite value never passes.
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(Rejection::new(
            Reason::OutOfRange,
            format!("{prefix}{name}"),
            format!("{value} is not in [{low}, {high}]"),
        ))
    }
}

fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

fn truncate(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
        None => Cow::Borrowed(text),
    }
}

/// Where a field sits, for naming it in a rejection: written out only when
/// something is rejected, so that a valid reading costs no string.
#[derive(Debug, Clone, Copy)]
struct Prefix<'a> {
    /// "" for a raw body, "Message." inside an SNS envelope.
    outer: &'a str,
    /// The reading's index in a batch message.
    item: Option<usize>,
}

impl<'a> Prefix<'a> {
    fn top(outer: &'a str) -> Self {
        Prefix { outer, item: None }
    }

    fn item(self, index: usize) -> Self {
        Prefix {
            item: Some(index),
            ..self
        }
    }

    /// The path of the object itself: `$` at the top of a raw body.
    fn root(self) -> String {
        let text = self.to_string();
        match text.trim_end_matches('.') {
            "" => "$".to_owned(),
            trimmed => trimmed.to_owned(),
        }
    }
}

impl std::fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.outer)?;
        match self.item {
            Some(index) => write!(f, "readings[{index}]."),
            None => Ok(()),
        }
    }
}

/// One reading as a device sends it; also the top level of a batch message,
/// and of an SNS envelope. Unknown fields are ignored so that devices can add
/// fields before we use them.
#[derive(Deserialize)]
struct WireReading<'a> {
    /// The fields that tell an SNS envelope apart (no reading has them).
    #[serde(rename = "Type", default)]
    kind: StringOrIgnored,
    #[serde(rename = "TopicArn", default)]
    topic_arn: StringOrIgnored,
    #[serde(rename = "MessageId", default)]
    message_id: StringOrIgnored,
    #[serde(rename = "Message", default)]
    message: StringOrIgnored,
    device_id: Option<String>,
    #[serde(borrow)]
    readings: Option<Vec<&'a RawValue>>,
    ts: Option<WireTs>,
    lat: Option<f64>,
    lon: Option<f64>,
    alt: Option<f64>,
    speed: Option<f64>,
    heading: Option<f64>,
    battery: Option<f64>,
    accuracy: Option<f64>,
    seq: Option<u64>,
}

impl WireReading<'_> {
    fn reading_field_present(&self) -> Option<&'static str> {
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
struct StringOrIgnored(Option<String>);

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
enum WireTs {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-26T08:00:00Z
    const NOW: i64 = 1_795_680_000_000;

    fn decode(body: &str) -> Result<DecodedMessage, Rejection> {
        decode_message(body, &Limits::default(), NOW)
    }

    fn rejection(body: &str) -> (Reason, String) {
        let err = decode(body).expect_err("should be rejected");
        (err.reason, err.field)
    }

    fn reading_rejection(body: &str) -> (Reason, String) {
        let decoded = decode(body).expect("message is usable");
        assert!(decoded.readings.is_empty(), "{decoded:?}");
        let err = decoded.rejected.into_iter().next().expect("a rejection");
        (err.reason, err.field)
    }

    #[test]
    fn envelope_fields_that_are_not_strings_make_no_envelope() {
        // A device's own `Type` or `Message` field of another type is an unknown
        // field, at the top and in a batch.
        let decoded = decode(
            r#"{"device_id":"tag-1","Type":7,"TopicArn":{"x":[1]},"ts":1795248000000,"lat":1,"lon":2,"Message":null}"#,
        )
        .unwrap();
        assert_eq!(decoded.form, BodyForm::Raw);
        assert_eq!(decoded.readings.len(), 1);
        let decoded = decode(
            r#"{"device_id":"tag-1","readings":[{"ts":1795248000000,"lat":1,"lon":2,"Message":[true],"Type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!((decoded.readings.len(), decoded.rejected.len()), (1, 0));
        // A real envelope whose Message is not a string says so.
        assert_eq!(
            rejection(r#"{"Type":"Notification","TopicArn":"arn","Message":5}"#),
            (Reason::InvalidEnvelope, "Message".into())
        );
    }

    #[test]
    fn single_reading_with_every_field() {
        let decoded = decode(
            r#"{"device_id":"tag-1","ts":"2026-11-26T07:59:00.5+01:00","lat":48.8566,"lon":2.3522,
                "alt":35,"speed":12.5,"heading":270,"battery":87,"accuracy":4.5,"seq":17,"firmware":"1.2"}"#,
        )
        .unwrap();
        assert_eq!(decoded.form, BodyForm::Raw);
        assert!(decoded.rejected.is_empty());
        assert_eq!(
            decoded.readings,
            vec![Reading {
                device_id: "tag-1".into(),
                ts_ms: NOW - 3_600_000 - 60_000 + 500,
                lat: 48.8566,
                lon: 2.3522,
                alt: Some(35.0),
                speed: Some(12.5),
                heading: Some(270.0),
                battery: Some(87.0),
                accuracy: Some(4.5),
                seq: Some(17),
            }]
        );
    }

    #[test]
    fn epoch_millis_and_rfc3339_give_the_same_key() {
        let a = decode(r#"{"device_id":"t","ts":1795679999000,"lat":1,"lon":2,"seq":3}"#).unwrap();
        let b = decode(r#"{"device_id":"t","ts":"2026-11-26T07:59:59Z","lat":1,"lon":2,"seq":3}"#)
            .unwrap();
        assert_eq!(a.readings[0].sort_key(), b.readings[0].sort_key());
    }

    #[test]
    fn sns_envelope_is_detected() {
        let inner = r#"{"device_id":"tag-1","ts":1795679999000,"lat":1,"lon":2}"#;
        let body = serde_json::json!({
            "Type": "Notification",
            "MessageId": "5f1a",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:telemetry",
            "Message": inner,
            "Timestamp": "2026-11-25T07:59:59.000Z",
        })
        .to_string();
        let decoded = decode(&body).unwrap();
        assert_eq!(decoded.form, BodyForm::SnsEnvelope);
        assert_eq!(decoded.sns_message_id.as_deref(), Some("5f1a"));
        assert_eq!(decoded.readings.len(), 1);
    }

    #[test]
    fn envelope_problems_name_the_envelope_field() {
        let envelope = |message: serde_json::Value| {
            serde_json::json!({"Type": "Notification", "TopicArn": "arn", "Message": message})
                .to_string()
        };
        assert_eq!(
            rejection(&envelope("{not json".into())),
            (Reason::MalformedJson, "Message".into())
        );
        assert_eq!(
            rejection(&envelope(
                r#"{"device_id":"t","ts":1795679999000,"lat":"1","lon":2}"#.into()
            )),
            (Reason::InvalidType, "Message.lat".into())
        );
        assert_eq!(
            rejection(r#"{"Type":"SubscriptionConfirmation","TopicArn":"arn","Message":"x"}"#),
            (Reason::InvalidEnvelope, "Type".into())
        );
        assert_eq!(
            rejection(r#"{"Type":"Notification","TopicArn":"arn"}"#),
            (Reason::InvalidEnvelope, "Message".into())
        );
    }

    #[test]
    fn batch_keeps_valid_readings_and_names_each_bad_one() {
        let decoded = decode(
            r#"{"device_id":"tag-9","readings":[
                {"ts":1795679000000,"lat":1,"lon":2,"seq":1},
                {"ts":1795679001000,"lat":91,"lon":2,"seq":2},
                {"ts":1795679002000,"lat":1,"lon":"east","seq":3},
                {"ts":1795679003000,"lat":1,"lon":2,"seq":4,"device_id":"tag-9"},
                {"ts":1795679004000,"lat":1,"lon":2,"device_id":"tag-8"},
                7
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            decoded.readings.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![Some(1), Some(4)]
        );
        assert!(decoded.readings.iter().all(|r| r.device_id == "tag-9"));
        let reasons: Vec<_> = decoded
            .rejected
            .iter()
            .map(|r| (r.reason, r.field.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (Reason::OutOfRange, "readings[1].lat"),
                (Reason::InvalidType, "readings[2].lon"),
                (Reason::DeviceIdMismatch, "readings[4].device_id"),
                (Reason::InvalidType, "readings[5]"),
            ]
        );
    }

    #[test]
    fn message_level_rejections() {
        assert_eq!(rejection(""), (Reason::MalformedJson, "$".into()));
        assert_eq!(
            rejection("{\"device_id\":"),
            (Reason::MalformedJson, "$".into())
        );
        assert_eq!(rejection("[1,2]"), (Reason::InvalidType, "$".into()));
        assert_eq!(
            rejection("{} trailing"),
            (Reason::MalformedJson, "$".into())
        );
        assert_eq!(
            rejection(r#"{"device_id":"t","readings":[]}"#),
            (Reason::EmptyBatch, "readings".into())
        );
        assert_eq!(
            rejection(r#"{"readings":[{}]}"#),
            (Reason::MissingField, "device_id".into())
        );
        assert_eq!(
            rejection(r#"{"device_id":"t","lat":1,"readings":[{}]}"#),
            (Reason::AmbiguousMessage, "lat".into())
        );
        let many = format!(
            r#"{{"device_id":"t","readings":[{}]}}"#,
            vec!["{}"; 501].join(",")
        );
        assert_eq!(
            rejection(&many),
            (Reason::TooManyReadings, "readings".into())
        );
        let huge = format!(r#"{{"device_id":"t","pad":"{}"}}"#, "x".repeat(256 * 1024));
        assert_eq!(rejection(&huge), (Reason::BodyTooLarge, "$".into()));
    }

    #[test]
    fn reading_level_rejections() {
        let r = |fields: &str| format!(r#"{{"device_id":"t","readings":[{{{fields}}}]}}"#);
        let ok = r#""ts":1795679000000,"lat":1,"lon":2"#;
        for (fields, expected) in [
            (
                r#""lat":1,"lon":2"#.to_owned(),
                (Reason::MissingField, "ts"),
            ),
            (
                r#""ts":1795679000000,"lon":2"#.to_owned(),
                (Reason::MissingField, "lat"),
            ),
            (
                r#""ts":1795679000000,"lat":1,"lon":null"#.to_owned(),
                (Reason::MissingField, "lon"),
            ),
            (
                r#""ts":1795679000000,"lat":1,"lon":180.5"#.to_owned(),
                (Reason::OutOfRange, "lon"),
            ),
            (
                r#""ts":"yesterday","lat":1,"lon":2"#.to_owned(),
                (Reason::InvalidTimestamp, "ts"),
            ),
            (
                r#""ts":1.5e12,"lat":1,"lon":2"#.to_owned(),
                (Reason::InvalidType, "ts"),
            ),
            (
                r#""ts":true,"lat":1,"lon":2"#.to_owned(),
                (Reason::InvalidType, "ts"),
            ),
            (
                r#""ts":1795680600000,"lat":1,"lon":2"#.to_owned(),
                (Reason::TimestampInFuture, "ts"),
            ),
            (
                r#""ts":1795679000,"lat":1,"lon":2"#.to_owned(),
                (Reason::TimestampTooOld, "ts"),
            ),
            (format!(r#"{ok},"speed":-1"#), (Reason::OutOfRange, "speed")),
            (
                format!(r#"{ok},"speed":301"#),
                (Reason::OutOfRange, "speed"),
            ),
            (
                format!(r#"{ok},"battery":100.5"#),
                (Reason::OutOfRange, "battery"),
            ),
            (
                format!(r#"{ok},"heading":361"#),
                (Reason::OutOfRange, "heading"),
            ),
            (
                format!(r#"{ok},"accuracy":-3"#),
                (Reason::OutOfRange, "accuracy"),
            ),
            (format!(r#"{ok},"alt":1e6"#), (Reason::OutOfRange, "alt")),
            (format!(r#"{ok},"seq":-1"#), (Reason::InvalidType, "seq")),
            (format!(r#"{ok},"seq":"7""#), (Reason::InvalidType, "seq")),
        ] {
            let (reason, field) = reading_rejection(&r(&fields));
            assert_eq!(
                (reason, field.as_str()),
                (expected.0, format!("readings[0].{}", expected.1).as_str()),
                "{fields}"
            );
        }
    }

    #[test]
    fn device_id_is_checked_for_single_readings() {
        assert_eq!(
            rejection(r#"{"device_id":"no spaces","ts":1795679000000,"lat":1,"lon":2}"#),
            (Reason::InvalidDeviceId, "device_id".into())
        );
        assert_eq!(
            rejection(r#"{"ts":1795679000000,"lat":1,"lon":2}"#),
            (Reason::MissingField, "device_id".into())
        );
    }

    #[test]
    fn too_old_epoch_seconds_get_a_hint() {
        let err = rejection_detail(r#"{"device_id":"t","ts":1795679000,"lat":1,"lon":2}"#);
        assert!(err.contains("looks like seconds"), "{err}");
    }

    fn rejection_detail(body: &str) -> String {
        decode(body).expect_err("rejected").detail
    }

    #[test]
    fn heading_of_360_is_north() {
        let decoded =
            decode(r#"{"device_id":"t","ts":1795679000000,"lat":1,"lon":2,"heading":360}"#)
                .unwrap();
        assert_eq!(decoded.readings[0].heading, Some(0.0));
    }

    proptest! {
        #[test]
        fn any_string_decodes_without_panic(body in ".{0,300}") {
            let _ = decode(&body);
        }

        #[test]
        fn any_json_value_decodes_without_panic(value in arb_json()) {
            let body = value.to_string();
            let _ = decode(&body);
            let wrapped = serde_json::json!({"Type":"Notification","TopicArn":"a","Message": body});
            let _ = decode(&wrapped.to_string());
        }

        #[test]
        fn valid_readings_survive_the_round_trip(
            lat in -90.0f64..=90.0, lon in -180.0f64..=180.0,
            age_ms in 0i64..(30 * 86_400_000), seq in proptest::option::of(any::<u64>()),
            battery in proptest::option::of(0.0f64..=100.0),
        ) {
            let ts = NOW - age_ms;
            let mut value = serde_json::json!({"device_id": "tag-7", "ts": ts, "lat": lat, "lon": lon});
            if let Some(seq) = seq { value["seq"] = seq.into(); }
            if let Some(battery) = battery { value["battery"] = battery.into(); }
            let decoded = decode(&value.to_string()).unwrap();
            prop_assert_eq!(decoded.readings.len(), 1);
            let reading = &decoded.readings[0];
            prop_assert_eq!((reading.lat, reading.lon, reading.ts_ms, reading.seq, reading.battery), (lat, lon, ts, seq, battery));
        }
    }

    /// Arbitrary JSON biased towards our field names, so that the generated
    /// values reach validation rather than stopping at the first type check.
    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let key = prop_oneof![
            Just("device_id".to_owned()),
            Just("ts".to_owned()),
            Just("lat".to_owned()),
            Just("lon".to_owned()),
            Just("readings".to_owned()),
            Just("seq".to_owned()),
            Just("battery".to_owned()),
            Just("Type".to_owned()),
            Just("TopicArn".to_owned()),
            Just("Message".to_owned()),
            "[a-z]{1,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            Just(Value::from("Notification")),
            Just(Value::from("2026-11-25T07:00:00Z")),
            ".{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }
}
