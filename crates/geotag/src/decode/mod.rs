//! From an SQS message body to validated readings.
//!
//! # Who sent it
//!
//! The body names nobody we can believe: whoever may publish could name any
//! tag. What counts is the device the edge authenticated. IoT Core's topic
//! rule (template.yaml, `TelemetryRule`) reads a tag's message on the tag's
//! own topic, which its policy lets only that tag's certificate publish to,
//! and publishes an *edge envelope* to SNS:
//!
//! ```json
//! {"thing_name": "tag-0042", "received_at": 1795161660000, "payload": "eyJ0cyI6..."}
//! ```
//!
//! `thing_name` is the authenticated tag (`topic(2)`), `received_at` the
//! broker's receive time in epoch milliseconds (`timestamp()`), and `payload`
//! the tag's message exactly as sent, base64 (`encode(*, 'base64')`), so that
//! nothing the tag writes can reach the envelope's own fields and a payload
//! that is not JSON still arrives to be refused with its reason. A gateway
//! publishing for tags it authenticated itself sends the same envelope. A body
//! without one is refused as `unauthenticated`.
//!
//! # The shapes
//!
//! The envelope reaches the ingest queue in one of two forms, detected rather
//! than configured, so that a subscription switched to or from raw delivery
//! keeps working: itself (raw SNS delivery, or a direct SQS send), or inside
//! the **SNS JSON envelope** (an object with `Type`, `TopicArn` and the edge
//! envelope as a string in `Message`; every SNS envelope has both fields, and
//! no edge envelope has either).
//!
//! The tag's payload is one reading, or a batch `{"readings": [...]}` that a
//! tag sends after buffering offline. A reading's `device_id` may be left out
//! (the authenticated tag's is meant); one naming another tag is refused as
//! `device_id_mismatch`, and one stamped later than `received_at` plus the
//! allowed skew as `timestamp_in_future`.
//!
//! Decoding never panics and never gives up on a whole batch because of one of
//! its readings: each reading is decoded and validated on its own, so a batch
//! yields the valid readings *and* a rejection for each invalid one.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::reading::{Limits, Reading, is_valid_device_id, range};
use crate::reject::{Reason, Rejection};

mod wire;
use wire::{WireOuter, WireReading, WireTs};

/// How the body reached the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyForm {
    /// Raw SNS delivery or a direct SQS send: the body is the edge envelope.
    Raw,
    /// The SNS JSON envelope around the edge envelope.
    SnsEnvelope,
}

/// The device the edge authenticated, and when it received the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeIdentity {
    pub thing_name: String,
    /// Epoch milliseconds.
    pub received_at_ms: i64,
}

/// What one message body held.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage {
    pub form: BodyForm,
    /// The SNS `MessageId`, when the body was an envelope.
    pub sns_message_id: Option<String>,
    pub identity: EdgeIdentity,
    pub readings: Vec<Reading>,
    /// One entry per refused reading, in message order.
    pub rejected: Vec<Rejection>,
}

/// The edge envelope as a gateway (or a test) writes it: see the module
/// documentation.
pub fn edge_envelope(thing_name: &str, received_at_ms: i64, payload: &[u8]) -> String {
    serde_json::json!({
        "thing_name": thing_name,
        "received_at": received_at_ms,
        "payload": base64::engine::general_purpose::STANDARD.encode(payload),
    })
    .to_string()
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
    // The limit is SNS's, on the message it carried; the SNS envelope around
    // it may add a little, and is allowed that much before anything is parsed.
    if body.len()
        > limits
            .max_message_bytes
            .saturating_add(SNS_ENVELOPE_ALLOWANCE)
    {
        return Err(too_large("$", body.len(), limits));
    }
    let top: WireOuter = parse(body, Prefix::top(""))?;
    if top.kind.0.is_none() || top.topic_arn.0.is_none() {
        if body.len() > limits.max_message_bytes {
            return Err(too_large("$", body.len(), limits));
        }
        return decode_edge(top, "", BodyForm::Raw, None, limits, now_ms);
    }
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
    if message.len() > limits.max_message_bytes {
        return Err(too_large("Message", message.len(), limits));
    }
    let edge: WireOuter = parse(&message, Prefix::top("Message."))?;
    decode_edge(
        edge,
        "Message.",
        BodyForm::SnsEnvelope,
        top.message_id.0,
        limits,
        now_ms,
    )
}

/// What the SNS JSON envelope adds to the message it carries: its own fields
/// (the signature, the certificate and unsubscribe URLs, message attributes)
/// and the escaping of the message's quotes, with room to spare.
pub const SNS_ENVELOPE_ALLOWANCE: usize = 16 * 1024;

fn too_large(field: &str, bytes: usize, limits: &Limits) -> Rejection {
    Rejection::new(
        Reason::BodyTooLarge,
        field,
        format!(
            "{bytes} bytes, over the {}-byte limit",
            limits.max_message_bytes
        ),
    )
}

/// The edge envelope: who the edge authenticated, then the tag's payload.
fn decode_edge(
    edge: WireOuter,
    outer: &str,
    form: BodyForm,
    sns_message_id: Option<String>,
    limits: &Limits,
    now_ms: i64,
) -> Result<DecodedMessage, Rejection> {
    let field = |name: &str| format!("{outer}{name}");
    let (Some(thing_name), Some(received_at_ms), Some(payload)) =
        (edge.thing_name, edge.received_at, edge.payload)
    else {
        return Err(Rejection::new(
            Reason::Unauthenticated,
            field("thing_name"),
            "no edge envelope (thing_name, received_at, payload): a message must come \
             through the IoT topic rule, or from a gateway naming the tag it authenticated",
        ));
    };
    if !is_valid_device_id(&thing_name) {
        return Err(Rejection::new(
            Reason::InvalidEnvelope,
            field("thing_name"),
            format!(
                "{:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ : -",
                truncate(&thing_name, 80)
            ),
        ));
    }
    if received_at_ms > now_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(Rejection::new(
            Reason::InvalidEnvelope,
            field("received_at"),
            format!(
                "{received_at_ms} ms is more than {} s ahead of the service's clock ({now_ms} ms)",
                limits.max_future_skew_ms / 1000
            ),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.as_bytes())
        .map_err(|err| {
            Rejection::new(
                Reason::InvalidEnvelope,
                field("payload"),
                format!("not base64: {err}"),
            )
        })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        Rejection::new(
            Reason::MalformedJson,
            field("payload"),
            format!("the payload is not UTF-8 text: {err}"),
        )
    })?;
    let payload_prefix = format!("{outer}payload.");
    let identity = EdgeIdentity {
        thing_name,
        received_at_ms,
    };
    let wire = parse(&text, Prefix::top(&payload_prefix))?;
    let (readings, rejected) = decode_wire(
        wire,
        Prefix::top(&payload_prefix),
        &identity,
        limits,
        now_ms,
    )?;
    Ok(DecodedMessage {
        form,
        sns_message_id,
        identity,
        readings,
        rejected,
    })
}

/// A tag's payload, parsed: one reading, or a batch of them.
fn decode_wire(
    mut top: WireReading,
    prefix: Prefix<'_>,
    identity: &EdgeIdentity,
    limits: &Limits,
    now_ms: i64,
) -> Result<(Vec<Reading>, Vec<Rejection>), Rejection> {
    let Some(items) = top.readings.take() else {
        let reading = validate(top, None, prefix, identity, limits, now_ms)?;
        return Ok((vec![reading], Vec::new()));
    };

    if let Some(field) = top.reading_field_present() {
        return Err(Rejection::new(
            Reason::AmbiguousMessage,
            format!("{prefix}{field}"),
            "a batch message carries `readings` and no reading fields of its own",
        ));
    }
    let device_id = resolve_device_id(top.device_id, None, prefix, identity)?;
    if items.is_empty() {
        return Err(Rejection::new(
            Reason::EmptyBatch,
            format!("{prefix}readings"),
            "a batch message needs at least one reading",
        ));
    }
    let mut readings = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
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
            validate(
                item,
                Some(&device_id),
                item_prefix,
                identity,
                limits,
                now_ms,
            )
        });
        match outcome {
            Ok(reading) => readings.push(reading),
            Err(rejection) => rejected.push(rejection),
        }
    }
    Ok((readings, rejected))
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

/// The device a reading (or a batch) is of: the one it names, its batch's,
/// or else the authenticated tag's; always the authenticated tag, or refused.
fn resolve_device_id(
    own: Option<String>,
    batch: Option<&str>,
    prefix: Prefix<'_>,
    identity: &EdgeIdentity,
) -> Result<String, Rejection> {
    let field = || format!("{prefix}device_id");
    let Some(id) = own else {
        return Ok(batch.unwrap_or(&identity.thing_name).to_owned());
    };
    if !is_valid_device_id(&id) {
        return Err(Rejection::new(
            Reason::InvalidDeviceId,
            field(),
            format!(
                "{:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ : -",
                truncate(&id, 80)
            ),
        ));
    }
    if id != identity.thing_name {
        return Err(Rejection::new(
            Reason::DeviceIdMismatch,
            field(),
            format!(
                "names {id:?}, but the connection authenticated {:?}",
                identity.thing_name
            ),
        ));
    }
    Ok(id)
}

fn validate(
    wire: WireReading,
    batch_device_id: Option<&str>,
    prefix: Prefix<'_>,
    identity: &EdgeIdentity,
    limits: &Limits,
    now_ms: i64,
) -> Result<Reading, Rejection> {
    let field = |name: &str| format!("{prefix}{name}");
    let device_id = resolve_device_id(wire.device_id, batch_device_id, prefix, identity)?;

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
    let received_at_ms = identity.received_at_ms;
    if ts_ms > received_at_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(Rejection::new(
            Reason::TimestampInFuture,
            field("ts"),
            format!(
                "{ts_ms} ms is more than {} s ahead of its arrival at the edge (received_at {received_at_ms} ms)",
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
        received_at_ms: Some(received_at_ms),
        owner: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-26T08:00:00Z
    const NOW: i64 = 1_795_680_000_000;

    /// The authenticated tag of a test payload: the one it names, as an
    /// honest tag would (the spoofing tests name their own).
    fn thing_of(payload: &str) -> String {
        serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .and_then(|value| value.get("device_id")?.as_str().map(str::to_owned))
            .filter(|id| is_valid_device_id(id))
            .unwrap_or_else(|| "t".to_owned())
    }

    fn decode_body(body: &str) -> Result<DecodedMessage, Rejection> {
        decode_message(body, &Limits::default(), NOW)
    }

    /// A tag's payload as the topic rule delivers it, received at NOW.
    fn decode(payload: &str) -> Result<DecodedMessage, Rejection> {
        decode_body(&edge_envelope(&thing_of(payload), NOW, payload.as_bytes()))
    }

    fn rejection(payload: &str) -> (Reason, String) {
        let err = decode(payload).expect_err("should be rejected");
        (err.reason, err.field)
    }

    fn body_rejection(body: &str) -> (Reason, String) {
        let err = decode_body(body).expect_err("should be rejected");
        (err.reason, err.field)
    }

    fn reading_rejection(payload: &str) -> (Reason, String) {
        let decoded = decode(payload).expect("message is usable");
        assert!(decoded.readings.is_empty(), "{decoded:?}");
        let err = decoded.rejected.into_iter().next().expect("a rejection");
        (err.reason, err.field)
    }

    fn sns(message: serde_json::Value) -> String {
        serde_json::json!({"Type": "Notification", "TopicArn": "arn", "Message": message})
            .to_string()
    }

    #[test]
    fn the_edge_envelope_names_the_tag_and_its_arrival() {
        let body = edge_envelope(
            "tag-1",
            NOW - 5_000,
            br#"{"ts":1795679990000,"lat":1,"lon":2}"#,
        );
        let decoded = decode_body(&body).unwrap();
        assert_eq!(
            decoded.identity,
            EdgeIdentity {
                thing_name: "tag-1".into(),
                received_at_ms: NOW - 5_000
            }
        );
        assert_eq!(
            decoded.readings[0].device_id, "tag-1",
            "taken from the connection"
        );
        assert_eq!(decoded.readings[0].received_at_ms, Some(NOW - 5_000));
    }

    #[test]
    fn a_body_without_an_edge_envelope_is_unauthenticated() {
        // The old shape: a reading naming its own device, published straight to SNS.
        let bare = r#"{"device_id":"tag-1","ts":1795679990000,"lat":1,"lon":2}"#;
        assert_eq!(
            body_rejection(bare),
            (Reason::Unauthenticated, "thing_name".into())
        );
        assert_eq!(
            body_rejection(&sns(bare.into())),
            (Reason::Unauthenticated, "Message.thing_name".into())
        );
        // Half an envelope is no envelope.
        assert_eq!(
            body_rejection(r#"{"thing_name":"tag-1","payload":"e30="}"#),
            (Reason::Unauthenticated, "thing_name".into())
        );
    }

    #[test]
    fn edge_envelope_problems_name_the_field() {
        let envelope = |thing: serde_json::Value, at: serde_json::Value, payload: &str| {
            serde_json::json!({"thing_name": thing, "received_at": at, "payload": payload})
                .to_string()
        };
        let payload = base64::engine::general_purpose::STANDARD
            .encode(br#"{"ts":1795679990000,"lat":1,"lon":2}"#);
        for (body, expected) in [
            (
                envelope("no spaces".into(), NOW.into(), &payload),
                (Reason::InvalidEnvelope, "thing_name"),
            ),
            (
                envelope(7.into(), NOW.into(), &payload),
                (Reason::InvalidType, "thing_name"),
            ),
            (
                envelope("t".into(), "yesterday".into(), &payload),
                (Reason::InvalidType, "received_at"),
            ),
            (
                envelope("t".into(), (NOW + 301_000).into(), &payload),
                (Reason::InvalidEnvelope, "received_at"),
            ),
            (
                envelope("t".into(), NOW.into(), "not base64!"),
                (Reason::InvalidEnvelope, "payload"),
            ),
            (
                envelope(
                    "t".into(),
                    NOW.into(),
                    &base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b'{']),
                ),
                (Reason::MalformedJson, "payload"),
            ),
            (
                envelope(
                    "t".into(),
                    NOW.into(),
                    &base64::engine::general_purpose::STANDARD.encode(b"{not json"),
                ),
                (Reason::MalformedJson, "payload"),
            ),
        ] {
            let (reason, field) = body_rejection(&body);
            assert_eq!((reason, field.as_str()), expected, "{body}");
        }
    }

    #[test]
    fn a_tag_speaks_only_for_itself() {
        let as_tag_1 =
            |payload: &str| decode_body(&edge_envelope("tag-1", NOW, payload.as_bytes()));
        let err = as_tag_1(r#"{"device_id":"tag-2","ts":1795679990000,"lat":1,"lon":2}"#)
            .expect_err("another tag's reading");
        assert_eq!(
            (err.reason, err.field.as_str()),
            (Reason::DeviceIdMismatch, "payload.device_id")
        );
        assert!(err.detail.contains("\"tag-1\""), "{}", err.detail);
        let err =
            as_tag_1(r#"{"device_id":"tag-2","readings":[{"ts":1795679990000,"lat":1,"lon":2}]}"#)
                .expect_err("another tag's batch");
        assert_eq!(err.reason, Reason::DeviceIdMismatch);
        // Every reading of a batch is checked, not only the batch's own id.
        let decoded = as_tag_1(
            r#"{"readings":[
                {"ts":1795679990000,"lat":1,"lon":2},
                {"ts":1795679991000,"lat":1,"lon":2,"device_id":"tag-2"},
                {"ts":1795679992000,"lat":1,"lon":2,"device_id":"tag-1"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(decoded.readings.len(), 2);
        assert!(decoded.readings.iter().all(|r| r.device_id == "tag-1"));
        assert_eq!(
            decoded
                .rejected
                .iter()
                .map(|r| (r.reason, r.field.as_str()))
                .collect::<Vec<_>>(),
            vec![(Reason::DeviceIdMismatch, "payload.readings[1].device_id")]
        );
    }

    #[test]
    fn the_future_is_measured_from_the_arrival_not_from_ingest() {
        let received_at = NOW - 600_000;
        let skew = Limits::default().max_future_skew_ms;
        let at = |ts: i64| {
            decode_body(&edge_envelope(
                "t",
                received_at,
                format!(r#"{{"ts":{ts},"lat":1,"lon":2}}"#).as_bytes(),
            ))
        };
        // Behind ingest's clock, but ahead of the edge's: refused.
        let err = at(received_at + skew + 1).expect_err("ahead of its arrival");
        assert_eq!(
            (err.reason, err.field.as_str()),
            (Reason::TimestampInFuture, "payload.ts")
        );
        let reading = &at(received_at + skew).unwrap().readings[0];
        assert_eq!(reading.ts_ms, received_at + skew, "stored as sent");
        assert_eq!(
            reading.latest_time_ms(),
            received_at,
            "but it counts no later than its arrival"
        );
    }

    #[test]
    fn envelope_fields_that_are_not_strings_make_no_envelope() {
        // A tag's own `Type` or `Message` field of another type is an unknown
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
            body_rejection(r#"{"Type":"Notification","TopicArn":"arn","Message":5}"#),
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
                owner: None,
                received_at_ms: Some(NOW),
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
        let inner = edge_envelope(
            "tag-1",
            NOW,
            br#"{"device_id":"tag-1","ts":1795679999000,"lat":1,"lon":2}"#,
        );
        let body = serde_json::json!({
            "Type": "Notification",
            "MessageId": "5f1a",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:telemetry",
            "Message": inner,
            "Timestamp": "2026-11-25T07:59:59.000Z",
        })
        .to_string();
        let decoded = decode_body(&body).unwrap();
        assert_eq!(decoded.form, BodyForm::SnsEnvelope);
        assert_eq!(decoded.sns_message_id.as_deref(), Some("5f1a"));
        assert_eq!(decoded.readings.len(), 1);
    }

    #[test]
    fn envelope_problems_name_the_envelope_field() {
        assert_eq!(
            body_rejection(&sns("{not json".into())),
            (Reason::MalformedJson, "Message".into())
        );
        let lat_as_text = edge_envelope(
            "t",
            NOW,
            br#"{"device_id":"t","ts":1795679999000,"lat":"1","lon":2}"#,
        );
        assert_eq!(
            body_rejection(&sns(lat_as_text.into())),
            (Reason::InvalidType, "Message.payload.lat".into())
        );
        assert_eq!(
            body_rejection(r#"{"Type":"SubscriptionConfirmation","TopicArn":"arn","Message":"x"}"#),
            (Reason::InvalidEnvelope, "Type".into())
        );
        assert_eq!(
            body_rejection(r#"{"Type":"Notification","TopicArn":"arn"}"#),
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
                (Reason::OutOfRange, "payload.readings[1].lat"),
                (Reason::InvalidType, "payload.readings[2].lon"),
                (Reason::DeviceIdMismatch, "payload.readings[4].device_id"),
                (Reason::InvalidType, "payload.readings[5]"),
            ]
        );
    }

    #[test]
    fn message_level_rejections() {
        assert_eq!(rejection(""), (Reason::MalformedJson, "payload".into()));
        assert_eq!(
            rejection("{\"device_id\":"),
            (Reason::MalformedJson, "payload".into())
        );
        assert_eq!(rejection("[1,2]"), (Reason::InvalidType, "payload".into()));
        assert_eq!(
            rejection("{} trailing"),
            (Reason::MalformedJson, "payload".into())
        );
        assert_eq!(
            rejection(r#"{"device_id":"t","readings":[]}"#),
            (Reason::EmptyBatch, "payload.readings".into())
        );
        assert_eq!(
            rejection(r#"{"device_id":"t","lat":1,"readings":[{}]}"#),
            (Reason::AmbiguousMessage, "payload.lat".into())
        );
        let huge = format!(r#"{{"device_id":"t","pad":"{}"}}"#, "x".repeat(192 * 1024));
        assert_eq!(
            body_rejection(&edge_envelope("t", NOW, huge.as_bytes())).0,
            Reason::BodyTooLarge
        );
        let bare_huge = "x".repeat(256 * 1024 + SNS_ENVELOPE_ALLOWANCE + 1);
        assert_eq!(
            body_rejection(&bare_huge),
            (Reason::BodyTooLarge, "$".into())
        );
    }

    /// A day offline at one reading every 35 seconds, as one message: SNS
    /// takes it, so ingest reads all of it.
    fn backlog(readings: usize) -> String {
        let items: Vec<String> = (0..readings)
            .map(|i| {
                format!(
                    r#"{{"ts":{},"lat":48.8606,"lon":2.3376,"speed":12.5,"battery":81.0}}"#,
                    NOW - i as i64 * 35_000
                )
            })
            .collect();
        format!(r#"{{"readings":[{}]}}"#, items.join(","))
    }

    #[test]
    fn a_backlog_is_bounded_by_bytes_not_by_a_count_of_readings() {
        let payload = backlog(2_500);
        let body = edge_envelope("tag-1", NOW, payload.as_bytes());
        assert!(body.len() <= 256 * 1024, "{} bytes", body.len());
        let decoded = decode_body(&body).unwrap();
        assert_eq!((decoded.readings.len(), decoded.rejected.len()), (2_500, 0));

        // The same message inside the SNS envelope is over 256 KiB as a body,
        // and still the message SNS accepted.
        let wrapped = sns(
            serde_json::json!({"thing_name": "tag-1", "received_at": NOW, "payload":
            base64::engine::general_purpose::STANDARD.encode(&payload)})
            .to_string()
            .into(),
        );
        let signature = "s".repeat(256 * 1024 - body.len() + 100);
        let wrapped = wrapped.replacen("{", &format!(r#"{{"Signature":"{signature}","#), 1);
        assert!(wrapped.len() > 256 * 1024);
        assert_eq!(decode_body(&wrapped).unwrap().readings.len(), 2_500);

        // One byte over SNS's limit, in either form, is refused as too large.
        let over = edge_envelope("tag-1", NOW, backlog(2_600).as_bytes());
        assert!(over.len() > 256 * 1024 && over.len() < 256 * 1024 + SNS_ENVELOPE_ALLOWANCE);
        assert_eq!(body_rejection(&over), (Reason::BodyTooLarge, "$".into()));
        assert_eq!(
            body_rejection(&sns(over.into())),
            (Reason::BodyTooLarge, "Message".into())
        );
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
            (
                format!(r#"{ok},"device_id":"a b""#),
                (Reason::InvalidDeviceId, "device_id"),
            ),
        ] {
            let (reason, field) = reading_rejection(&r(&fields));
            assert_eq!(
                (reason, field.as_str()),
                (
                    expected.0,
                    format!("payload.readings[0].{}", expected.1).as_str()
                ),
                "{fields}"
            );
        }
    }

    #[test]
    fn device_id_is_checked_for_single_readings() {
        assert_eq!(
            rejection(r#"{"device_id":"no spaces","ts":1795679000000,"lat":1,"lon":2}"#),
            (Reason::InvalidDeviceId, "payload.device_id".into())
        );
        let unnamed = decode(r#"{"ts":1795679000000,"lat":1,"lon":2}"#).unwrap();
        assert_eq!(unnamed.readings[0].device_id, "t", "the connection's tag");
    }

    #[test]
    fn too_old_epoch_seconds_get_a_hint() {
        let err = decode(r#"{"device_id":"t","ts":1795679000,"lat":1,"lon":2}"#)
            .expect_err("rejected")
            .detail;
        assert!(err.contains("looks like seconds"), "{err}");
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
            let _ = decode_body(&body);
            let _ = decode(&body);
        }

        #[test]
        fn any_json_value_decodes_without_panic(value in arb_json()) {
            let body = value.to_string();
            let _ = decode_body(&body);
            let _ = decode(&body);
            let _ = decode_body(&sns(body.clone().into()));
            let _ = decode_body(&sns(edge_envelope("t", NOW, body.as_bytes()).into()));
        }

        #[test]
        fn any_bytes_as_a_payload_decode_without_panic(payload in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_body(&edge_envelope("t", NOW, &payload));
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
            Just("thing_name".to_owned()),
            Just("received_at".to_owned()),
            Just("payload".to_owned()),
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
