//! Time as geotag counts it: milliseconds since the Unix epoch, UTC, in an
//! `i64` (DynamoDB numbers, JSON, and arithmetic on differences alike).
//!
//! The one reading of the system clock lives here, so that a handler that
//! must be tested at a given time takes a clock argument and production
//! passes [`now_ms`].

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The system clock, epoch milliseconds (0 before 1970, which no machine
/// running this reports; saturating rather than wrapping past year 292 million).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
