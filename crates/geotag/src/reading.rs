//! A validated position reading, its limits, and its storage key.
//!
//! # The reading key
//!
//! SNS and SQS deliver at least once, so the same reading can arrive twice, or
//! ten times. Its Telemetry key is therefore derived from the reading itself,
//! never from the delivery: the device id is the partition key and the sort key
//! is the reading's time (RFC 3339, millisecond precision, always UTC, fixed
//! width so that string order is time order) followed by the device's own
//! sequence number when it sends one:
//!
//! ```text
//! device_id = "tag-0042"
//! sk        = "2026-11-25T08:30:00.250Z#00000000000000000017"
//! ```
//!
//! A duplicate delivery writes the same item again; DynamoDB's stream shows it
//! as a MODIFY (or nothing), never a second INSERT, and that is what makes the
//! stats downstream exact. The TTL attribute is derived from the reading time
//! too; only the edge's receive time can differ between two deliveries.

use std::fmt::Write as _;

use crate::clock::{DAY_MS, HOUR_MS};

/// The most a device id may hold, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Physical ranges a reading's optional fields must fall within.
pub mod range {
    /// Metres above sea level: the Dead Sea shore to above airliner altitude.
    pub const ALT: (f64, f64) = (-1_000.0, 20_000.0);
    /// Metres per second: 300 m/s (1,080 km/h) covers an airliner at cruise.
    pub const SPEED: (f64, f64) = (0.0, 300.0);
    /// Degrees clockwise from true north.
    pub const HEADING: (f64, f64) = (0.0, 360.0);
    /// Percent of charge.
    pub const BATTERY: (f64, f64) = (0.0, 100.0);
    /// Metres of horizontal uncertainty; beyond 100 km a fix is not a position.
    pub const ACCURACY: (f64, f64) = (0.0, 100_000.0);
}

/// Limits applied while decoding and validating; read once from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest accepted message, in bytes: SNS's own limit, 256 KiB, so that
    /// whatever SNS delivered is read. It bounds a message's work; no count
    /// of readings does, so a backlog of any length that fits is accepted.
    pub max_message_bytes: usize,
    /// How long readings are kept; older ones would expire on arrival.
    pub retention_days: u32,
    /// How far ahead of the time the edge received it a reading's timestamp
    /// may be (and how far ahead of ours the edge's clock may run).
    pub max_future_skew_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 256 * 1024,
            retention_days: 30,
            max_future_skew_ms: 5 * 60 * 1000,
        }
    }
}

impl Limits {
    pub fn retention_ms(&self) -> i64 {
        i64::from(self.retention_days) * DAY_MS
    }
}

/// A reading that passed validation. Build one with [`crate::decode_message`],
/// or directly in tests and simulators.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub alt: Option<f64>,
    /// Metres per second.
    pub speed: Option<f64>,
    /// Degrees clockwise from true north.
    pub heading: Option<f64>,
    /// Percent of charge.
    pub battery: Option<f64>,
    /// Metres.
    pub accuracy: Option<f64>,
    /// The device's own message counter.
    pub seq: Option<u64>,
    /// When the edge (IoT Core's rule engine, or a gateway) received the
    /// message, milliseconds since the epoch; `None` for readings stored
    /// before the edge said so.
    pub received_at_ms: Option<i64>,
    /// The customer that owned the tag when ingest stored the reading, as
    /// the registry said then; `None` for a tag nobody owned (a development
    /// stack admits those). Set by ingest, never read from the message: a
    /// reading belongs to its owner of that moment for good, so a tag passed
    /// to another customer takes none of its history along (see
    /// `crate::tenancy`).
    pub owner: Option<String>,
}

impl Reading {
    /// The Telemetry sort key: see the module documentation.
    pub fn sort_key(&self) -> String {
        let mut key = String::with_capacity(46);
        write_rfc3339_millis(&mut key, self.ts_ms);
        if let Some(seq) = self.seq {
            // `#` and the number in 20 digits (u64's widest), zero-padded so
            // that keys sort as numbers.
            let mut digits = [b'0'; 20];
            zero_padded(&mut digits, seq);
            key.push('#');
            key.push_str(std::str::from_utf8(&digits).unwrap_or_default());
        }
        key
    }

    /// The time the reading counts at for the latest state: its own, but
    /// never later than its arrival. A tag whose clock runs ahead (or lies)
    /// cannot hold the latest position in the future, where it would make the
    /// genuine readings that follow look like history and put off its silence.
    pub fn latest_time_ms(&self) -> i64 {
        self.received_at_ms
            .map_or(self.ts_ms, |received| self.ts_ms.min(received))
    }

    /// The TTL attribute (epoch seconds) for a retention of `retention_days`.
    pub fn expires_at(&self, retention_days: u32) -> i64 {
        self.ts_ms
            .div_euclid(1000)
            .saturating_add(i64::from(retention_days) * 86_400)
    }
}

/// Whether `id` is an acceptable device id: 1 to 64 bytes of `A-Z a-z 0-9 . _ : -`.
/// `#` is excluded so that no id can be confused with a sort-key separator.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Writes `ts_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Uses the proleptic Gregorian
/// calendar by arithmetic (Hinnant's civil-from-days) so that it cannot fail
/// for any `i64`; years outside 0..=9999 only occur for readings that were
/// never validated, and are written with a sign to stay unambiguous.
pub fn write_rfc3339_millis(out: &mut String, ts_ms: i64) {
    let days = ts_ms.div_euclid(DAY_MS);
    let ms_of_day = ts_ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, ms) = (
        ms_of_day / HOUR_MS,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    if (0..=9999).contains(&year) {
        // Every reading's time: written digit by digit, which is several
        // times faster than `write!` (a reading's sort key is made for every
        // Telemetry item ingest writes and every point stats folds in).
        // Each field is within its width here, and not negative.
        let mut text = *b"0000-00-00T00:00:00.000Z";
        for (field, value) in [
            (0..4, year),
            (5..7, i64::from(month)),
            (8..10, i64::from(day)),
            (11..13, h),
            (14..16, m),
            (17..19, s),
            (20..23, ms),
        ] {
            zero_padded(&mut text[field], value as u64);
        }
        // Infallible: every byte written is an ASCII digit or separator.
        out.push_str(std::str::from_utf8(&text).unwrap_or_default());
        return;
    }
    let _ = write!(
        out,
        "{year:+}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z"
    );
}

/// Writes `value` into all of `digits`, zero-padded on the left (its
/// highest digits dropped if it does not fit).
fn zero_padded(digits: &mut [u8], mut value: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    fn reading(ts_ms: i64, seq: Option<u64>) -> Reading {
        Reading {
            device_id: "tag-1".into(),
            ts_ms,
            lat: 0.0,
            lon: 0.0,
            alt: None,
            speed: None,
            heading: None,
            battery: None,
            accuracy: None,
            seq,
            received_at_ms: None,
            owner: None,
        }
    }

    #[test]
    fn sort_key_is_time_then_sequence() {
        let r = reading(1_795_000_000_250, Some(17));
        assert_eq!(
            r.sort_key(),
            "2026-11-18T11:06:40.250Z#00000000000000000017"
        );
        assert_eq!(reading(0, None).sort_key(), "1970-01-01T00:00:00.000Z");
        assert_eq!(reading(-1, None).sort_key(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn device_id_rules() {
        assert!(is_valid_device_id("tag-0042"));
        assert!(is_valid_device_id("acme:fleet_7.tag-1"));
        assert!(is_valid_device_id(&"a".repeat(64)));
        assert!(!is_valid_device_id(&"a".repeat(65)));
        assert!(!is_valid_device_id(""));
        assert!(!is_valid_device_id("tag#1"));
        assert!(!is_valid_device_id("tag 1"));
        assert!(!is_valid_device_id("tagé"));
    }

    #[test]
    fn expires_at_is_reading_time_plus_retention() {
        assert_eq!(reading(1_000_999, None).expires_at(1), 1_000 + 86_400);
    }

    proptest! {
        #[test]
        fn rfc3339_matches_the_time_crate(ts_ms in -62_135_596_800_000i64..253_402_300_799_999) {
            let mut ours = String::new();
            write_rfc3339_millis(&mut ours, ts_ms);
            let parsed = OffsetDateTime::parse(&ours, &Rfc3339).expect("our output is RFC 3339");
            prop_assert_eq!((parsed.unix_timestamp_nanos() / 1_000_000) as i64, ts_ms);
        }

        #[test]
        /// Keys sort as (time, sequence number) do, a missing number first:
        /// what lets stats order readings without formatting their keys.
        fn sort_key_order_is_time_then_sequence_order(
            a in 0i64..253_402_300_799_999,
            near in -2i64..=2,
            far in proptest::option::of(0i64..253_402_300_799_999),
            sa in proptest::option::of(0u64..3),
            sb in proptest::option::of(prop_oneof![0u64..3, any::<u64>()]),
        ) {
            let b = far.unwrap_or((a + near).max(0));
            let (ka, kb) = (reading(a, sa).sort_key(), reading(b, sb).sort_key());
            prop_assert_eq!(ka.cmp(&kb), (a, sa).cmp(&(b, sb)), "{} {}", ka, kb);
        }

        #[test]
        fn formatting_never_panics(ts_ms in any::<i64>()) {
            let mut out = String::new();
            write_rfc3339_millis(&mut out, ts_ms);
            prop_assert!(out.ends_with('Z'));
        }
    }
}
