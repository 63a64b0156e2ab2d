//! What ingest receives: an SQS record's body as it stands (an edge envelope,
//! raw or inside an SNS envelope), and the same bytes as a tag's payload inside
//! the edge envelope the topic rule wraps it in. Decoding must refuse with a
//! reason, never panic; every reading it accepts must be within the schema's
//! limits and belong to the authenticated tag.
#![no_main]

use geotag::{Limits, decode_message, edge_envelope};
use libfuzzer_sys::fuzz_target;

/// 2026-11-20T08:00:00Z: a fixed clock, so that a crash replays.
const NOW_MS: i64 = 1_795_161_600_000;
/// When the broker received the fuzzed payload.
const RECEIVED_MS: i64 = NOW_MS - 60_000;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    // SQS bodies are strings; anything else never reaches the decoder as a body.
    if let Ok(body) = std::str::from_utf8(data) {
        check(decode_message(body, &limits, NOW_MS), &limits);
    }
    // A tag's payload can be any bytes: the topic rule base64s them.
    let wrapped = edge_envelope("tag-0001", RECEIVED_MS, data);
    let decoded = decode_message(&wrapped, &limits, NOW_MS);
    if let Ok(decoded) = &decoded {
        for reading in &decoded.readings {
            assert_eq!(reading.device_id, "tag-0001", "{reading:?}");
            assert!(reading.ts_ms <= RECEIVED_MS + limits.max_future_skew_ms, "{reading:?}");
            assert!(reading.latest_time_ms() <= RECEIVED_MS, "{reading:?}");
        }
    }
    check(decoded, &limits);
});

fn check(decoded: Result<geotag::DecodedMessage, geotag::Rejection>, limits: &Limits) {
    match decoded {
        Err(rejection) => assert!(!rejection.reason.code().is_empty()),
        Ok(decoded) => {
            for reading in &decoded.readings {
                assert!(geotag::reading::is_valid_device_id(&reading.device_id));
                assert_eq!(reading.device_id, decoded.identity.thing_name, "{reading:?}");
                assert!((-90.0..=90.0).contains(&reading.lat), "{reading:?}");
                assert!((-180.0..=180.0).contains(&reading.lon), "{reading:?}");
                assert!(reading.ts_ms <= NOW_MS + 2 * limits.max_future_skew_ms, "{reading:?}");
                // The storage key is derived from the reading; it must not panic.
                let _ = reading.sort_key();
            }
        }
    }
}
