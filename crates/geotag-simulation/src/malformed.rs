//! The malformed messages a fleet sends when asked: one of each way a payload
//! can be wrong (not JSON, not an object, a missing or mistyped field, a
//! time out of bounds, a reading naming another tag, ...), each with the reason code
//! ingest must refuse it with, so the audit can check the dead-letter queue
//! message by message.

use geotag::Reason;
use serde_json::json;

/// A malformed payload of a random kind that tag `device` sends over its own
/// connection, and the reason it must be refused with.
pub fn malformed(rng: &mut fastrand::Rng, device: &str, ts: i64, now_ms: i64) -> (String, Reason) {
    let good = json!({"device_id": device, "ts": ts, "lat": 48.85, "lon": 2.35});
    let reading = |ts: i64| json!({"ts": ts, "lat": 48.85, "lon": 2.35});
    match rng.usize(0..15) {
        0 => {
            let text = good.to_string();
            let cut = rng.usize(1..text.len() - 1);
            (text[..cut].to_owned(), Reason::MalformedJson)
        }
        1 => (
            json!({"device_id": device, "ts": ts, "lat": 91.0 + rng.f64() * 100.0, "lon": 2.35})
                .to_string(),
            Reason::OutOfRange,
        ),
        2 => (
            json!({"device_id": device, "ts": ts, "lon": 2.35}).to_string(),
            Reason::MissingField,
        ),
        3 => (
            json!({"device_id": device, "ts": ts, "lat": "48.85", "lon": 2.35}).to_string(),
            Reason::InvalidType,
        ),
        4 => (
            json!({"device_id": device, "ts": "yesterday at noon", "lat": 48.85, "lon": 2.35})
                .to_string(),
            Reason::InvalidTimestamp,
        ),
        5 => (
            json!({"device_id": "tag with spaces!", "ts": ts, "lat": 48.85, "lon": 2.35})
                .to_string(),
            Reason::InvalidDeviceId,
        ),
        6 => (
            json!({"device_id": device, "ts": now_ms + 86_400_000, "lat": 48.85, "lon": 2.35})
                .to_string(),
            Reason::TimestampInFuture,
        ),
        // Not a JSON object at all.
        7 => ("[48.85, 2.35]".to_owned(), Reason::InvalidType),
        // A buffered batch that names another tag than the one that sent it.
        8 => (
            json!({"device_id": format!("{device}-x"), "readings": [reading(ts)]}).to_string(),
            Reason::DeviceIdMismatch,
        ),
        // The wrong encoding: a byte-order mark before the JSON.
        9 => (format!("\u{feff}{good}"), Reason::MalformedJson),
        // The wrong encoding: Latin-1 text read as UTF-8 in the id.
        10 => (
            json!({"device_id": "tag-\u{e9}t\u{e9}", "ts": ts, "lat": 48.85, "lon": 2.35}).to_string(),
            Reason::InvalidDeviceId,
        ),
        11 => (
            json!({"device_id": device, "readings": []}).to_string(),
            Reason::EmptyBatch,
        ),
        12 => (
            json!({"device_id": device, "ts": ts, "lat": 48.85, "lon": 2.35, "readings": [reading(ts)]})
                .to_string(),
            Reason::AmbiguousMessage,
        ),
        13 => (
            json!({"device_id": device, "ts": now_ms - 40 * 86_400_000, "lat": 48.85, "lon": 2.35})
                .to_string(),
            Reason::TimestampTooOld,
        ),
        // A batch whose readings are not a list.
        _ => (
            json!({"device_id": device, "readings": {"ts": ts, "lat": 48.85, "lon": 2.35}})
                .to_string(),
            Reason::InvalidType,
        ),
    }
}
