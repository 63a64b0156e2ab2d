//! An SQS record's body, as ingest receives it: raw readings, batches, or an
//! SNS envelope around either. Decoding must refuse with a reason, never panic,
//! and every reading it accepts must be within the schema's limits.
#![no_main]

use geotag::{Limits, decode_message};
use libfuzzer_sys::fuzz_target;

/// 2026-11-20T08:00:00Z: a fixed clock, so that a crash replays.
const NOW_MS: i64 = 1_795_161_600_000;

fuzz_target!(|data: &[u8]| {
    // SQS bodies are strings; anything else never reaches the decoder.
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    match decode_message(body, &limits, NOW_MS) {
        Err(rejection) => assert!(!rejection.reason.code().is_empty()),
        Ok(decoded) => {
            for reading in &decoded.readings {
                assert!(geotag::reading::is_valid_device_id(&reading.device_id));
                assert!((-90.0..=90.0).contains(&reading.lat), "{reading:?}");
                assert!((-180.0..=180.0).contains(&reading.lon), "{reading:?}");
                assert!(reading.ts_ms <= NOW_MS + limits.max_future_skew_ms, "{reading:?}");
                // The storage key is derived from the reading; it must not panic.
                let _ = reading.sort_key();
            }
        }
    }
});
