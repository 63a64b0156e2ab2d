//! The API's benchmark fixtures: a customer's fleet of tags and a tag's day
//! of readings in the in-memory tables (so criterion times the handler, not
//! a network), the requests as API Gateway sends them, and what DynamoDB
//! would bill for reading the same answers (item sizes by its rules).

use aws_sdk_dynamodb::types::AttributeValue;
use geotag::read::MemoryFleet;
use geotag::reading::Reading;
use geotag::stats::LatestState;
use geotag::store::{StatsBody, StatsItem};
use geotag_api::payload::{Incoming, event, request};
use geotag_aws::capacity::item_size;
use geotag_aws::device_stats::stats_item;
use geotag_aws::telemetry::reading_item;

/// 2026-12-01T00:00:00Z: the day the track covers.
pub const DAY_START_MS: i64 = 1_796_083_200_000;
pub const CUSTOMER: &str = "acme";

fn reading(device: String, ts_ms: i64, index: usize) -> Reading {
    Reading {
        device_id: device,
        ts_ms,
        lat: 48.8 + (index % 997) as f64 * 1.37e-4,
        lon: 2.3 + (index % 991) as f64 * 1.91e-4,
        alt: None,
        speed: Some(8.25),
        heading: Some(127.5),
        battery: Some(71.5),
        accuracy: Some(6.5),
        seq: Some(index as u64),
        received_at_ms: Some(ts_ms + 850),
        owner: Some(CUSTOMER.into()),
    }
}

/// `tags` tags of one customer, each with its latest state.
pub fn fleet(tags: usize) -> (MemoryFleet, Vec<LatestState>) {
    let fleet = MemoryFleet::default();
    let mut states = Vec::with_capacity(tags);
    for index in 0..tags {
        let device = format!("tag-{index:05}");
        fleet.assign(&device, CUSTOMER);
        let latest = reading(device, DAY_START_MS + index as i64, index);
        fleet.record(std::slice::from_ref(&latest));
        states.push(LatestState::apply(None, &[latest]).expect("a state"));
    }
    (fleet, states)
}

/// One tag, a day at one reading a minute.
pub fn day_track() -> (MemoryFleet, Vec<Reading>) {
    let fleet = MemoryFleet::default();
    fleet.assign("tag-00000", CUSTOMER);
    let readings: Vec<Reading> = (0..1_440)
        .map(|minute| {
            reading(
                "tag-00000".into(),
                DAY_START_MS + minute as i64 * 60_000,
                minute,
            )
        })
        .collect();
    fleet.record(&readings);
    (fleet, readings)
}

pub fn get(path: &str, query: &str) -> lambda_http::Request {
    let claims = serde_json::json!({"sub": "bench", "cognito:groups": "[customer:acme]"});
    let incoming = Incoming {
        method: "GET",
        path,
        raw_query: query,
        ..Incoming::default()
    };
    request(event(&incoming, claims.as_object())).expect("a payload v2 request")
}

/// The attributes the FleetIndex projects (template.yaml): its keys, the
/// table's keys, and its INCLUDE list.
const FLEET_INDEX_ATTRIBUTES: [&str; 11] = [
    "customer_id",
    "device_id",
    "sk",
    "ts",
    "lat",
    "lon",
    "speed",
    "heading",
    "accuracy",
    "battery",
    "version",
];

/// Read units of one eventually consistent Query returning items of these
/// sizes: half a unit per started 4 KB of their total.
pub fn query_read_units(sizes: impl IntoIterator<Item = usize>) -> f64 {
    let total: usize = sizes.into_iter().sum();
    total.div_ceil(4096).max(1) as f64 * 0.5
}

/// What listing these tags from the FleetIndex costs, and its bytes.
pub fn fleet_listing_read_units(states: &[LatestState]) -> (f64, usize) {
    let sizes: Vec<usize> = states
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let item = stats_item(&StatsItem {
                device_id: format!("tag-{index:05}"),
                revision: 1,
                body: StatsBody::Latest(state.clone()),
            });
            let projected: std::collections::HashMap<String, AttributeValue> = item
                .into_iter()
                .filter(|(name, _)| FLEET_INDEX_ATTRIBUTES.contains(&name.as_str()))
                .collect();
            item_size(&projected)
        })
        .collect();
    (query_read_units(sizes.iter().copied()), sizes.iter().sum())
}

/// What reading a day's track from Telemetry costs (the Query reads whole
/// items; its filter on the owner is applied after the read is billed).
pub fn track_read_units(readings: &[Reading], retention_days: u32) -> (f64, usize) {
    let sizes: Vec<usize> = readings
        .iter()
        .map(|reading| item_size(&reading_item(reading, retention_days, reading.ts_ms)))
        .collect();
    (query_read_units(sizes.iter().copied()), sizes.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard on what the FleetIndex projection costs: a listing of 1,000
    /// tags must stay one Query of a few read units, whatever is added to
    /// `latest` items later (only projected attributes count).
    #[test]
    fn a_listing_of_1000_tags_stays_a_few_read_units() {
        let (_, states) = fleet(1_000);
        let (units, bytes) = fleet_listing_read_units(&states);
        eprintln!("1,000 tags: {bytes} bytes, {units} read units");
        assert!(bytes / 1_000 < 200, "{} bytes a tag", bytes / 1_000);
        assert!(units <= 25.0, "{units} read units");
        let (_, readings) = day_track();
        let (units, bytes) = track_read_units(&readings, 30);
        eprintln!("a day's track: {bytes} bytes, {units} read units");
    }
}
