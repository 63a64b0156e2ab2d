//! The DeviceStats table: per device, a `latest` item and `hour#…` / `day#…`
//! rollups, each carrying the revision that makes updates exactly-once (see
//! `geotag::stats`). Items are written whole, with PutItem conditioned on the
//! revision, so the table's stream shows each change with its old and new
//! image.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use geotag::stats::{Bucket, LatestState, Point, Rollup, Span, TrailPoint};
use geotag::store::{
    Expected, LATEST_SORT_KEY, Loaded, SaveError, StatsBody, StatsItem, StatsKey, StatsStore,
    StoreError,
};
use geotag::tenancy::Holder;

use crate::batch_get::batch_get;
use crate::item::{ItemView, ValueView};
use crate::retry::AttemptError;
use crate::telemetry::classify;

/// Attribute names other modules read too.
pub mod attr {
    /// A `latest` item's owner: the hash key of the sparse `FleetIndex`
    /// (`customer_id`, `device_id`), which only `latest` items populate, so
    /// that one Query lists a customer's tags where they are.
    pub const FLEET_CUSTOMER: &str = "customer_id";
    /// A rollup's holder (see `geotag::tenancy`): a customer id, or the
    /// mixed marker. Not `customer_id`, which would put every rollup in the
    /// FleetIndex.
    pub const HOLDER: &str = "holder";
}

/// The index listing a customer's tags with their latest state.
pub const FLEET_INDEX: &str = "FleetIndex";

/// Partitions of the sparse `SilenceIndex` (keys: `silence_shard`, `last_seen`),
/// which only `latest` items populate. The alerts schedule queries each shard
/// for `last_seen` older than its threshold: it reads the silent devices, not
/// the table. Spreading devices over shards keeps any one index partition cool.
pub const SILENCE_SHARDS: u32 = 8;

/// The index shard of a device: a stable FNV-1a hash of its id (stable across
/// processes and releases, unlike std's randomly seeded hasher).
pub fn silence_shard(device_id: &str) -> u32 {
    let hash = device_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % SILENCE_SHARDS
}

/// Conditional writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct DynamoStatsStore {
    client: Client,
    table: String,
}

impl DynamoStatsStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStatsStore {
            client,
            table: table.into(),
        }
    }

    async fn save_one(&self, item: &StatsItem, expected: &Expected) -> Result<(), SaveError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(stats_item(item)));
        request = match expected {
            Expected::Absent => request.condition_expression("attribute_not_exists(device_id)"),
            Expected::Revision(revision) => request
                .condition_expression("revision = :expected")
                .expression_attribute_values(":expected", n(revision)),
            Expected::Unreadable => request
                .condition_expression(
                    "attribute_exists(device_id) AND \
                     (attribute_not_exists(revision) OR NOT attribute_type(revision, :number))",
                )
                .expression_attribute_values(":number", AttributeValue::S("N".into())),
            Expected::FewerReadings(count) => request
                .condition_expression(
                    "attribute_not_exists(revision) OR NOT attribute_type(revision, :number) \
                     OR revision < :count",
                )
                .expression_attribute_values(":number", AttributeValue::S("N".into()))
                .expression_attribute_values(":count", n(count)),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(SaveError::Conflict)
            }
            Err(error) => Err(SaveError::Store(match classify(error) {
                AttemptError::Transient(error) | AttemptError::Permanent(error) => error,
            })),
        }
    }
}

impl StatsStore for DynamoStatsStore {
    async fn load(&self, keys: &[StatsKey]) -> Result<Loaded, StoreError> {
        let request_keys = keys
            .iter()
            .map(|(device, sort_key)| {
                HashMap::from([
                    ("device_id".to_owned(), AttributeValue::S(device.clone())),
                    ("sk".to_owned(), AttributeValue::S(sort_key.clone())),
                ])
            })
            .collect();
        let mut loaded = Loaded::default();
        for item in batch_get(&self.client, &self.table, request_keys).await? {
            if let Some(parsed) = stats_item_from(&item) {
                loaded
                    .items
                    .insert((parsed.device_id.clone(), parsed.body.sort_key()), parsed);
                continue;
            }
            let a = Attributes(&item);
            // The key is what was asked for, so it reads.
            if let (Some(device_id), Some(sort_key)) = (a.s("device_id"), a.s("sk")) {
                tracing::error!(?item, "a DeviceStats item that does not parse");
                loaded
                    .unreadable
                    .insert((device_id, sort_key), a.revision());
            }
        }
        Ok(loaded)
    }

    /// One Query on the device's partition between the day's first and last
    /// hour keys (about 400 bytes an hour: three read units for a full day).
    async fn hours_of_day(
        &self,
        device_id: &str,
        day_start_ms: i64,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        let low = Bucket::Hour(day_start_ms).sort_key();
        let high =
            Bucket::Hour(day_start_ms + geotag::clock::DAY_MS - geotag::clock::HOUR_MS).sort_key();
        let items = crate::batch_get::query_sort_key_range(
            &self.client,
            &self.table,
            device_id,
            &low,
            &high,
        )
        .await?;
        let mut hours = Vec::with_capacity(items.len());
        for item in items {
            match stats_item_from(&item).map(|item| item.body) {
                Some(StatsBody::Rollup(Bucket::Hour(start), rollup)) => hours.push((start, rollup)),
                // Replaced when its hour is next recomputed; until then the
                // day counts without it.
                _ => tracing::error!(?item, "an hour item that does not parse"),
            }
        }
        Ok(hours)
    }

    async fn save(&self, writes: &[(StatsItem, Expected)]) -> Vec<Result<(), SaveError>> {
        let mut results = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(WRITE_CONCURRENCY) {
            let mut in_flight = Vec::with_capacity(chunk.len());
            for (item, expected) in chunk {
                in_flight.push(self.save_one(item, expected));
            }
            results.extend(futures::future::join_all(in_flight).await);
        }
        results
    }
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn f(value: f64) -> AttributeValue {
    n(if value == 0.0 { 0.0 } else { value })
}

/// The DeviceStats item for a stats value: the one place it becomes attributes.
pub fn stats_item(item: &StatsItem) -> HashMap<String, AttributeValue> {
    let mut out = HashMap::from([
        (
            "device_id".to_owned(),
            AttributeValue::S(item.device_id.clone()),
        ),
        ("sk".to_owned(), AttributeValue::S(item.body.sort_key())),
        ("revision".to_owned(), n(item.revision)),
    ]);
    match &item.body {
        StatsBody::Latest(state) => put_latest(&mut out, &item.device_id, state),
        StatsBody::Rollup(bucket, rollup) => put_rollup(&mut out, bucket, rollup),
    }
    out
}

/// A `latest` item's own attributes (the silence index's keys among them).
fn put_latest(out: &mut HashMap<String, AttributeValue>, device_id: &str, state: &LatestState) {
    let mut put = |name: &str, value: AttributeValue| {
        out.insert(name.to_owned(), value);
    };
    put("kind", AttributeValue::S("latest".into()));
    put("ts", n(state.ts_ms));
    put("silence_shard", n(silence_shard(device_id)));
    put("last_seen", n(state.ts_ms));
    put("reading_key", AttributeValue::S(state.reading_key.clone()));
    put("lat", f(state.lat));
    put("lon", f(state.lon));
    put("version", n(state.version));
    for (name, value) in [
        ("speed", state.speed),
        ("heading", state.heading),
        ("accuracy", state.accuracy),
        ("battery", state.battery),
    ] {
        if let Some(value) = value {
            put(name, f(value));
        }
    }
    if let Some(ts) = state.battery_ts_ms {
        put("battery_ts", n(ts));
    }
    if let Some(seq) = state.seq {
        put("seq", n(seq));
    }
    if let Some(owner) = &state.owner {
        // The FleetIndex's key: a customer's tags, by their latest reading's owner.
        put(attr::FLEET_CUSTOMER, AttributeValue::S(owner.clone()));
    }
    if !state.trail.is_empty() {
        put("trail", trail_attribute(&state.trail));
    }
}

/// An hour or day rollup's own attributes.
fn put_rollup(out: &mut HashMap<String, AttributeValue>, bucket: &Bucket, rollup: &Rollup) {
    let mut put = |name: &str, value: AttributeValue| {
        out.insert(name.to_owned(), value);
    };
    put(
        "kind",
        AttributeValue::S(match bucket {
            Bucket::Hour(_) => "hour".into(),
            Bucket::Day(_) => "day".into(),
        }),
    );
    put("bucket_start", n(bucket.start_ms()));
    put("count", n(rollup.count));
    if let Some(holder) = rollup.holder.stored() {
        put(attr::HOLDER, AttributeValue::S(holder.to_owned()));
    }
    put("distance_m", f(rollup.distance_m()));
    put("speed_sum", f(rollup.speed_sum));
    put("speed_count", n(rollup.speed_count));
    for (name, value) in [
        ("speed_min", rollup.speed_min),
        ("speed_max", rollup.speed_max),
        ("speed_mean", rollup.speed_mean()),
        ("battery_min", rollup.battery_min),
    ] {
        if let Some(value) = value {
            put(name, f(value));
        }
    }
    if let Some((ts, battery)) = rollup.battery_last {
        put("battery_last_ts", n(ts));
        put("battery_last", f(battery));
    }
    if let Some((lat_min, lat_max, lon_min, lon_max)) = rollup.bbox {
        put("lat_min", f(lat_min));
        put("lat_max", f(lat_max));
        put("lon_min", f(lon_min));
        put("lon_max", f(lon_max));
    }
    if let Some(track) = rollup.track {
        for (prefix, point) in [("first", track.first), ("last", track.last)] {
            put(&format!("{prefix}_ts"), n(point.ts_ms));
            put(&format!("{prefix}_lat"), f(point.lat));
            put(&format!("{prefix}_lon"), f(point.lon));
        }
    }
    if !rollup.hours.is_empty() {
        // A day's hours: [start, first ts/lat/lon, last ts/lat/lon, distance] each.
        put(
            "hours",
            AttributeValue::L(
                rollup
                    .hours
                    .iter()
                    .map(|(start, span)| {
                        AttributeValue::L(vec![
                            n(start),
                            n(span.first.ts_ms),
                            f(span.first.lat),
                            f(span.first.lon),
                            n(span.last.ts_ms),
                            f(span.last.lat),
                            f(span.last.lon),
                            f(span.distance_m),
                        ])
                    })
                    .collect(),
            ),
        );
    }
}

/// The `trail` attribute: a list of maps with short names (`t` time, `k`
/// reading key, `la`/`lo` position, `s` speed, `b` battery), because DynamoDB
/// bills attribute names in every item, and a trail repeats them per point.
pub fn trail_attribute(trail: &[TrailPoint]) -> AttributeValue {
    AttributeValue::L(
        trail
            .iter()
            .map(|point| {
                let mut map = HashMap::from([
                    ("t".to_owned(), n(point.ts_ms)),
                    ("k".to_owned(), AttributeValue::S(point.reading_key.clone())),
                    ("la".to_owned(), f(point.lat)),
                    ("lo".to_owned(), f(point.lon)),
                ]);
                if let Some(speed) = point.speed {
                    map.insert("s".to_owned(), f(speed));
                }
                if let Some(battery) = point.battery {
                    map.insert("b".to_owned(), f(battery));
                }
                AttributeValue::M(map)
            })
            .collect(),
    )
}

/// Reads a `trail` attribute back; `None` if it is not one.
pub fn trail_from<V: ValueView>(value: &V) -> Option<Vec<TrailPoint>> {
    value
        .as_l()?
        .iter()
        .map(|point| {
            let map = point.as_m()?;
            Some(TrailPoint {
                ts_ms: map.number("t")?,
                reading_key: map.text("k")?.to_owned(),
                lat: map.number("la")?,
                lon: map.number("lo")?,
                speed: map.number("s"),
                battery: map.number("b"),
            })
        })
        .collect()
}

/// Reads a DeviceStats item back, from the SDK or from a stream image (old
/// or new, [`crate::stream::Image`]); `None` if it is not one.
pub fn stats_item_from<I: ItemView>(item: &I) -> Option<StatsItem> {
    let a = Attributes(item);
    let device_id = a.s("device_id")?;
    let revision = a.revision()?;
    let body = if a.s("sk")? == LATEST_SORT_KEY {
        StatsBody::Latest(latest_from(&a)?)
    } else {
        let (bucket, rollup) = rollup_from(&a)?;
        StatsBody::Rollup(bucket, rollup)
    };
    Some(StatsItem {
        device_id,
        revision,
        body,
    })
}

impl crate::stream::FromImage for StatsItem {
    fn from_image(image: &crate::stream::Image) -> Option<StatsItem> {
        stats_item_from(image)
    }
}

/// The table's stream as the alerts read it: each image an item, or `None`.
pub type DeviceStatsStreamEvent = crate::stream::StreamEvent<crate::stream::ReadAs<StatsItem>>;
pub type DeviceStatsStreamRecord = crate::stream::StreamRecord<crate::stream::ReadAs<StatsItem>>;

/// An item's attributes, read by type.
struct Attributes<'a, I>(&'a I);

impl<I: ItemView> Attributes<'_, I> {
    fn s(&self, name: &str) -> Option<String> {
        self.0.text(name).map(str::to_owned)
    }

    fn num(&self, name: &str) -> Option<f64> {
        self.0.number(name)
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.0.number(name)
    }

    fn revision(&self) -> Option<u64> {
        self.0.number("revision")
    }

    /// `{prefix}_ts`, `{prefix}_lat` and `{prefix}_lon`.
    fn point(&self, prefix: &str) -> Option<Point> {
        Some(Point {
            ts_ms: self.int(&format!("{prefix}_ts"))?,
            lat: self.num(&format!("{prefix}_lat"))?,
            lon: self.num(&format!("{prefix}_lon"))?,
        })
    }
}

/// Reads a `FleetIndex` item: a latest state as the index projects it,
/// without its reading key, revision and trail (an API listing needs none
/// of them, and each would cost read units for every tag listed).
pub fn listed_latest_from(item: &HashMap<String, AttributeValue>) -> Option<(String, LatestState)> {
    let mut projected = item.clone();
    projected
        .entry("reading_key".into())
        .or_insert_with(|| AttributeValue::S(String::new()));
    let a = Attributes(&projected);
    Some((a.s("device_id")?, latest_from(&a)?))
}

fn latest_from<I: ItemView>(a: &Attributes<I>) -> Option<LatestState> {
    Some(LatestState {
        ts_ms: a.int("ts")?,
        reading_key: a.s("reading_key")?,
        lat: a.num("lat")?,
        lon: a.num("lon")?,
        speed: a.num("speed"),
        heading: a.num("heading"),
        accuracy: a.num("accuracy"),
        battery: a.num("battery"),
        battery_ts_ms: a.int("battery_ts"),
        seq: a.0.number("seq"),
        owner: a.s(attr::FLEET_CUSTOMER),
        version: a.int("version")? as u64,
        trail: match a.0.attribute("trail") {
            None => Vec::new(),
            Some(trail) => trail_from(trail)?,
        },
    })
}

fn rollup_from<I: ItemView>(a: &Attributes<I>) -> Option<(Bucket, Rollup)> {
    let start = a.int("bucket_start")?;
    let bucket = match a.0.text("kind")? {
        "hour" => Bucket::Hour(start),
        "day" => Bucket::Day(start),
        _ => return None,
    };
    let hours = hours_from(a.0.attribute("hours"))?;
    let track = match (a.point("first"), a.point("last")) {
        (Some(first), Some(last)) => Some(Span {
            first,
            last,
            distance_m: a.num("distance_m")?,
        }),
        _ => None,
    };
    Some((
        bucket,
        Rollup {
            count: a.int("count")? as u64,
            speed_min: a.num("speed_min"),
            speed_max: a.num("speed_max"),
            speed_sum: a.num("speed_sum").unwrap_or(0.0),
            speed_count: a.int("speed_count").unwrap_or(0) as u64,
            battery_min: a.num("battery_min"),
            battery_last: a.int("battery_last_ts").zip(a.num("battery_last")),
            bbox: match (
                a.num("lat_min"),
                a.num("lat_max"),
                a.num("lon_min"),
                a.num("lon_max"),
            ) {
                (Some(lat_min), Some(lat_max), Some(lon_min), Some(lon_max)) => {
                    Some((lat_min, lat_max, lon_min, lon_max))
                }
                _ => None,
            },
            track,
            hours,
            holder: Holder::from_stored(a.s(attr::HOLDER).as_deref()),
        },
    ))
}

/// A day's `hours` list: [start, first ts/lat/lon, last ts/lat/lon, distance] each.
fn hours_from<V: ValueView>(value: Option<&V>) -> Option<Vec<(i64, Span)>> {
    Some(match value {
        None => Vec::new(),
        Some(list) => list
            .as_l()?
            .iter()
            .map(|hour| {
                let values: Vec<f64> = hour
                    .as_l()?
                    .iter()
                    .map(ValueView::as_number)
                    .collect::<Option<_>>()?;
                let [
                    start,
                    first_ts,
                    first_lat,
                    first_lon,
                    last_ts,
                    last_lat,
                    last_lon,
                    distance_m,
                ] = values.as_slice()
                else {
                    return None;
                };
                Some((
                    *start as i64,
                    Span {
                        first: Point {
                            ts_ms: *first_ts as i64,
                            lat: *first_lat,
                            lon: *first_lon,
                        },
                        last: Point {
                            ts_ms: *last_ts as i64,
                            lat: *last_lat,
                            lon: *last_lon,
                        },
                        distance_m: *distance_m,
                    },
                ))
            })
            .collect::<Option<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let readings: Vec<geotag::Reading> = (0..5)
            .map(|i| geotag::Reading {
                device_id: "tag-1".into(),
                ts_ms: 1_795_161_600_000 + i * 200_000,
                lat: 48.0 + i as f64 * 0.01,
                lon: 2.0,
                alt: None,
                speed: Some(i as f64),
                heading: Some(90.0),
                battery: Some(80.0 - i as f64),
                accuracy: Some(5.0),
                seq: Some(i as u64),
                received_at_ms: None,
                owner: None,
            })
            .collect();
        let hour = Bucket::of(readings[0].ts_ms)[0];
        let rollup = Rollup::of_hours(&[(hour.start_ms(), Rollup::of_readings(&readings))]);
        assert!(!rollup.hours.is_empty());
        let latest = LatestState::apply(None, &readings).unwrap();
        for body in [
            StatsBody::Rollup(Bucket::of(readings[0].ts_ms)[1], rollup),
            StatsBody::Latest(latest),
        ] {
            let item = StatsItem {
                device_id: "tag-1".into(),
                revision: 123,
                body,
            };
            assert_eq!(stats_item_from(&stats_item(&item)), Some(item));
        }
    }

    #[test]
    fn silence_shards_are_stable_and_spread() {
        assert_eq!(silence_shard("tag-0001"), silence_shard("tag-0001"));
        let mut per_shard = [0; SILENCE_SHARDS as usize];
        for i in 0..8000 {
            per_shard[silence_shard(&format!("tag-{i:04}")) as usize] += 1;
        }
        assert!(
            per_shard.iter().all(|&n| (800..1200).contains(&n)),
            "{per_shard:?}"
        );
    }
}
