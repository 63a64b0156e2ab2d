//! The API's table: handler time of its two heavy answers (criterion, the
//! tables in memory), what DynamoDB bills to read them (item sizes by its
//! rules), and the cost of a million requests.

use std::fmt::Write as _;

use super::HotPaths;
use super::cost::{assume, price};
use crate::api;

/// HTTP API requests, per request (the first 300 million a month, each up to 512 KB).
const HTTP_API_REQUEST: f64 = 1.00e-6;
/// The API function's memory (template.yaml's ApiFunction).
const API_MEMORY_GB: f64 = 0.5;
/// The owner check: one strongly consistent GetItem of a Devices item (< 4 KB).
const OWNER_READ_UNITS: f64 = 1.0;

pub(super) fn api_table(hot: &HotPaths) -> String {
    let (_, states) = api::fleet(1_000);
    let (fleet_units, fleet_bytes) = api::fleet_listing_read_units(&states);
    let (_, readings) = api::day_track();
    let (track_units, track_bytes) = api::track_read_units(&readings, 30);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## The API: its two heavy answers, per request\n\n\
         Handler time is criterion's median with the tables in memory (decoding the payload v2 \
         request, scoping, rendering the document); DynamoDB's time is not in it. Read units \
         are what DynamoDB bills for the same answer, from the items' sizes by its rules \
         (eventually consistent Queries; the owner check is a strongly consistent GetItem). \
         The cost adds HTTP API requests, Lambda requests and duration at {API_MEMORY_GB} GB \
         with {} ms of DynamoDB round trip each, and the reads.\n",
        assume::DYNAMODB_ROUND_MS
    );
    let _ = writeln!(
        table,
        "| request | handler ms | items read | bytes read | read units | goal | USD per million requests |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---|---:|");
    for (id, what, items, bytes, units, rounds, goal) in [
        (
            "api/fleet/1000",
            "a customer's 1,000 tags (`/v1/devices?limit=1000`)",
            1_000,
            fleet_bytes,
            fleet_units,
            1.0,
            "≤ 20 ms, ≤ 10 units",
        ),
        (
            "api/track-day/1440",
            "a day of one tag at a reading a minute",
            1_440,
            track_bytes,
            track_units + OWNER_READ_UNITS,
            2.0,
            "-",
        ),
    ] {
        let handler_ms = hot.rust_ns.get(id).map(|ns| ns / 1e6);
        let cost = handler_ms.map(|ms| {
            let seconds = (ms + rounds * assume::DYNAMODB_ROUND_MS) / 1000.0;
            1e6 * (HTTP_API_REQUEST
                + price::LAMBDA_REQUEST
                + seconds * API_MEMORY_GB * price::LAMBDA_GB_SECOND
                + units * price::DYNAMODB_READ_UNIT)
        });
        let _ = writeln!(
            table,
            "| {what} | {} | {items} | {bytes} | {units:.1} | {goal} | {} |",
            handler_ms.map_or("(not run)".into(), |ms| format!("{ms:.2}")),
            cost.map_or("-".into(), |usd| format!("${usd:.2}")),
        );
    }
    let _ = writeln!(table);
    table
}
