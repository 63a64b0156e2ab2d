//! The stats handler: a batch of Telemetry stream records in, each device's
//! latest state and hourly and daily rollups updated, exactly once.
//!
//! For every device in the batch, the items it touches (`latest`, each hour,
//! each day) are read in one BatchGetItem, every record not yet absorbed by an
//! item (its sequence number above the item's watermark, see
//! `geotag::stats`) is folded in memory, each touched hour's track is read
//! from Telemetry (one Query per device and hour), and each item is written
//! once, on the condition that its watermark has not moved. The number of
//! requests depends on the devices and buckets in the batch, not on its
//! readings, with one exception: a device with more than `TRAIL_MAX` new
//! readings (a backlog) has its `latest` item written in steps of that many,
//! in stream order, so that each step's trail carries every reading it
//! absorbed and the alerts judge all of them.
//!
//! An item whose write fails makes the lowest sequence number it still needed
//! a batch item failure: Lambda retries the batch from there, and the items
//! that were written skip, by their watermarks, what they already hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::DynamoDbEventResponse;
use geotag::Reading;
use geotag::clock::HOUR_MS;
use geotag::stats::{Bucket, LatestState, Point, Rollup, Span, TRAIL_MAX, cmp_sequence};
use geotag::store::{
    Expected, Loaded, SaveError, StatsBody, StatsItem, StatsKey, StatsStore, TrackSource,
};
use geotag_aws::{DynamoStatsStore, DynamoTrackSource};
use geotag_runtime::emf::{self, Emitter, Invocation, Metrics};
use geotag_runtime::responses::stream_batch_response;
use geotag_runtime::{ConfigError, Environment, FromEnvironment};
use lambda_runtime::{Error, LambdaEvent};

/// Rounds of reload-and-retry after a conditional-write conflict.
const CONFLICT_ROUNDS: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `DEVICE_STATS_TABLE`
    pub device_stats_table: String,
    /// `TELEMETRY_TABLE`: where hours' tracks are read from.
    pub telemetry_table: String,
    /// `METRICS_NAMESPACE` and `AWS_LAMBDA_FUNCTION_NAME`
    pub metrics: emf::Settings,
}

impl FromEnvironment for Config {
    fn read(env: &Environment) -> Result<Config, ConfigError> {
        Ok(Config {
            device_stats_table: env.required("DEVICE_STATS_TABLE")?,
            telemetry_table: env.required("TELEMETRY_TABLE")?,
            metrics: env.metrics("stats"),
        })
    }
}

/// The handler's dependencies: where stats live, and where tracks are read.
pub struct Stats<S, T> {
    pub store: S,
    pub tracks: T,
    /// Where each invocation's metrics go (EMF lines on stdout in Lambda).
    pub metrics: Emitter,
}

pub fn on_aws(
    sdk: &geotag_aws::clients::SdkConfig,
    config: &Config,
) -> Stats<DynamoStatsStore, DynamoTrackSource> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    Stats {
        store: DynamoStatsStore::new(client.clone(), &config.device_stats_table),
        tracks: DynamoTrackSource::new(client, &config.telemetry_table),
        metrics: Emitter::new(config.metrics.clone()),
    }
}

/// What one invocation did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Sequence numbers to report as batch item failures (Lambda retries from the lowest).
    pub failures: Vec<String>,
    /// Readings folded into at least one item.
    pub readings: usize,
    /// Records that were not INSERTs (the filter criteria should have dropped them).
    pub ignored: usize,
    /// INSERT records whose image is not a reading (logged; retrying cannot help).
    pub invalid: usize,
    pub items_written: usize,
    /// Item updates skipped because the item had absorbed those records already.
    pub already_applied: usize,
    pub conflicts: usize,
    /// Stored items that did not parse, replaced (see [`geotag::store::Loaded`]).
    pub unreadable: usize,
    /// Hour tracks read from Telemetry.
    pub track_queries: usize,
}

pub async fn handle<S: StatsStore, T: TrackSource>(
    stats: &Stats<S, T>,
    event: LambdaEvent<Event>,
) -> Result<DynamoDbEventResponse, Error> {
    let records = &event.payload.records;
    let invocation = Invocation::start(&stats.metrics, &event.context.request_id, records.len());
    let outcome = process(stats, records).await;
    invocation.finish(|metrics| count_outcome(metrics, &outcome));
    tracing::info!(
        request_id = %event.context.request_id,
        records = records.len(),
        readings = outcome.readings,
        items_written = outcome.items_written,
        already_applied = outcome.already_applied,
        conflicts = outcome.conflicts,
        ignored = outcome.ignored,
        invalid = outcome.invalid,
        unreadable = outcome.unreadable,
        batch_item_failures = outcome.failures.len(),
        "batch processed"
    );
    Ok(stream_batch_response(outcome.failures))
}

/// The invocation's own metrics: readings folded in, items written, and the
/// retries and conflicts on the way.
fn count_outcome(metrics: &mut Metrics, outcome: &Outcome) {
    metrics
        .count("ReadingsApplied", outcome.readings)
        .count("ItemsWritten", outcome.items_written)
        .count("AlreadyApplied", outcome.already_applied)
        .count("WriteConflicts", outcome.conflicts)
        .count("TrackQueries", outcome.track_queries)
        .count("InvalidRecords", outcome.invalid)
        .count("UnreadableItems", outcome.unreadable)
        .count("BatchItemFailures", outcome.failures.len());
}

/// The reading an INSERT record carries; `None` if its image is not a Telemetry reading.
pub fn reading_of(record: &EventRecord) -> Option<Reading> {
    geotag_aws::telemetry::reading_from_image(&record.change.new_image)
}

/// The stream batch's readings, folded into DeviceStats exactly once: each
/// item is loaded, given only the readings its watermark has not absorbed,
/// and written on the condition that the watermark has not moved; a
/// conflict reloads and tries again, and what still fails is reported from
/// its first record.
pub async fn process<S: StatsStore, T: TrackSource>(
    stats: &Stats<S, T>,
    records: &[EventRecord],
) -> Outcome {
    let mut outcome = Outcome::default();
    let by_device = readings_by_device(records, &mut outcome);
    outcome.readings = by_device.values().map(Vec::len).sum();
    let mut pending = keys_touched(&by_device);
    let mut failed: Vec<StatsKey> = Vec::new();
    // What this invocation wrote, so that a `latest` item written in steps is
    // not read back between them.
    let mut written: HashMap<StatsKey, StatsItem> = HashMap::new();
    let mut conflicts: HashMap<StatsKey, usize> = HashMap::new();
    while !pending.is_empty() {
        let unknown: Vec<StatsKey> = pending
            .iter()
            .filter(|key| !written.contains_key(*key))
            .cloned()
            .collect();
        let mut loaded = if unknown.is_empty() {
            Loaded::default()
        } else {
            match stats.store.load(&unknown).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "reading DeviceStats failed; the batch will be retried");
                    failed.append(&mut pending);
                    break;
                }
            }
        };
        for key in &pending {
            if let Some(item) = written.get(key) {
                loaded.unreadable.remove(key);
                loaded.items.insert(key.clone(), item.clone());
            }
        }
        for key in loaded.unreadable.keys() {
            // Its earlier counts are gone: it restarts from this batch's
            // readings. Left in place, every write to it would conflict and
            // its device's stats would stop for good.
            tracing::error!(device_id = %key.0, item = %key.1, "a DeviceStats item that does not parse is replaced");
            outcome.unreadable += 1;
        }
        let stored = &loaded.items;
        let fresh = fresh_work(&pending, stored, &by_device, &mut outcome);
        let tracks = read_tracks(stats, &fresh, &mut outcome).await;
        let mut writes: Vec<(StatsItem, Expected)> = Vec::new();
        let mut unfinished: BTreeSet<StatsKey> = BTreeSet::new();
        for (key, mut readings) in fresh {
            if key.1 == geotag::store::LATEST_SORT_KEY && readings.len() > TRAIL_MAX {
                // One write's trail holds TRAIL_MAX points: a backlog is
                // written in steps, in stream order, each a change the alerts
                // judge, each with the watermark of what it absorbed.
                readings.sort_by(|(a, _), (b, _)| cmp_sequence(a, b));
                readings.truncate(TRAIL_MAX);
                unfinished.insert(key.clone());
            }
            let Some(spans) = tracks.spans_for(&key, &readings) else {
                failed.push(key);
                continue;
            };
            if let Some(item) = next_item(&key, stored.get(&key), &readings, &spans) {
                writes.push((item, Expected::of(&loaded, &key)));
            }
        }
        let results = stats.store.save(&writes).await;
        let mut next = Vec::new();
        for ((item, _), result) in writes.into_iter().zip(results) {
            let key = (item.device_id.clone(), item.body.sort_key());
            match result {
                Ok(()) => {
                    outcome.items_written += 1;
                    if unfinished.contains(&key) {
                        next.push(key.clone());
                    }
                    written.insert(key, item);
                }
                Err(SaveError::Conflict)
                    if conflicts.get(&key).copied().unwrap_or(0) < CONFLICT_ROUNDS =>
                {
                    outcome.conflicts += 1;
                    *conflicts.entry(key.clone()).or_default() += 1;
                    written.remove(&key);
                    next.push(key);
                }
                Err(error) => {
                    tracing::warn!(device_id = %key.0, item = %key.1, %error, "DeviceStats write failed; retrying from its first record");
                    failed.push(key);
                }
            }
        }
        pending = next;
    }
    outcome.failures = first_records_needed(&failed, &by_device, &written);
    outcome
}

/// A device's readings in the batch, each with its record's sequence number.
type DeviceReadings = BTreeMap<String, Vec<(String, Reading)>>;

/// The INSERT records' readings by device; other records are counted
/// (ignored, or invalid and logged) and left out.
fn readings_by_device(records: &[EventRecord], outcome: &mut Outcome) -> DeviceReadings {
    let mut by_device = DeviceReadings::new();
    for record in records {
        let Some(sequence) = record.change.sequence_number.clone() else {
            tracing::error!(event_id = %record.event_id, "stream record without a sequence number");
            outcome.invalid += 1;
            continue;
        };
        if record.event_name != "INSERT" {
            outcome.ignored += 1;
            continue;
        }
        match reading_of(record) {
            Some(reading) => by_device
                .entry(reading.device_id.clone())
                .or_default()
                .push((sequence, reading)),
            None => {
                tracing::error!(event_id = %record.event_id, %sequence, "INSERT image is not a Telemetry reading; skipped");
                outcome.invalid += 1;
            }
        }
    }
    by_device
}

/// Each device's `latest` item and the hour and day items its readings fall in.
fn keys_touched(by_device: &DeviceReadings) -> Vec<StatsKey> {
    let mut keys: Vec<StatsKey> = Vec::new();
    for (device, readings) in by_device {
        keys.push((device.clone(), geotag::store::LATEST_SORT_KEY.to_owned()));
        let buckets: BTreeSet<Bucket> = readings
            .iter()
            .flat_map(|(_, r)| Bucket::of(r.ts_ms))
            .collect();
        keys.extend(
            buckets
                .into_iter()
                .map(|bucket| (device.clone(), bucket.sort_key())),
        );
    }
    keys
}

/// The items that still have readings to absorb, with those readings; the
/// others are counted as already applied.
fn fresh_work(
    pending: &[StatsKey],
    stored: &HashMap<StatsKey, StatsItem>,
    by_device: &DeviceReadings,
    outcome: &mut Outcome,
) -> Vec<(StatsKey, Vec<(String, Reading)>)> {
    let mut fresh = Vec::new();
    for key in pending {
        let readings = fresh_readings(key, stored.get(key), &by_device[&key.0]);
        if readings.is_empty() {
            outcome.already_applied += 1;
        } else {
            fresh.push((key.clone(), readings));
        }
    }
    fresh
}

fn hour_of(reading: &Reading) -> i64 {
    reading.ts_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The hours' tracks read from Telemetry, and the hours that could not be read.
struct HourTracks {
    spans: HashMap<(String, i64), Option<Span>>,
    failures: BTreeSet<(String, i64)>,
}

impl HourTracks {
    /// The spans of the hours `readings` touch, or `None` if one of them
    /// could not be read (a rollup needs them all; `latest` needs none).
    fn spans_for(
        &self,
        key: &StatsKey,
        readings: &[(String, Reading)],
    ) -> Option<Vec<(i64, Option<Span>)>> {
        let touched_hours: BTreeSet<i64> = readings.iter().map(|(_, r)| hour_of(r)).collect();
        if key.1 != geotag::store::LATEST_SORT_KEY
            && touched_hours
                .iter()
                .any(|hour| self.failures.contains(&(key.0.clone(), *hour)))
        {
            return None;
        }
        Some(
            touched_hours
                .iter()
                .map(|hour| {
                    let span = self.spans.get(&(key.0.clone(), *hour)).copied().flatten();
                    (*hour, span)
                })
                .collect(),
        )
    }
}

/// One Query per device and hour that a rollup with new readings needs,
/// sixteen at a time.
async fn read_tracks<S: StatsStore, T: TrackSource>(
    stats: &Stats<S, T>,
    fresh: &[(StatsKey, Vec<(String, Reading)>)],
    outcome: &mut Outcome,
) -> HourTracks {
    let needed: BTreeSet<(String, i64)> = fresh
        .iter()
        .filter(|(key, _)| key.1 != geotag::store::LATEST_SORT_KEY)
        .flat_map(|(key, readings)| readings.iter().map(|(_, r)| (key.0.clone(), hour_of(r))))
        .collect();
    let needed: Vec<(String, i64)> = needed.into_iter().collect();
    let mut tracks = HourTracks {
        spans: HashMap::new(),
        failures: BTreeSet::new(),
    };
    for chunk in needed.chunks(16) {
        let mut queries = Vec::with_capacity(chunk.len());
        for (device, hour) in chunk {
            queries.push(stats.tracks.track(device, *hour, hour + HOUR_MS));
        }
        for ((device, hour), result) in chunk.iter().zip(futures::future::join_all(queries).await) {
            outcome.track_queries += 1;
            match result {
                Ok(points) => {
                    tracks
                        .spans
                        .insert((device.clone(), *hour), Span::of_points(&points));
                }
                Err(error) => {
                    tracing::warn!(device_id = %device, hour, %error, "reading the hour's track failed");
                    tracks.failures.insert((device.clone(), *hour));
                }
            }
        }
    }
    tracks
}

/// The lowest sequence number each failed item still needs: Lambda retries
/// the batch from the lowest of them.
fn first_records_needed(
    failed: &[StatsKey],
    by_device: &DeviceReadings,
    written: &HashMap<StatsKey, StatsItem>,
) -> Vec<String> {
    let mut failures: Vec<String> = failed
        .iter()
        .filter_map(|key| {
            fresh_readings(key, written.get(key), &by_device[&key.0])
                .into_iter()
                .map(|(sequence, _)| sequence)
                .min_by(|a, b| cmp_sequence(a, b))
        })
        .collect();
    failures.sort_by(|a, b| cmp_sequence(a, b));
    failures.dedup();
    failures
}

fn belongs(sort_key: &str, reading: &Reading) -> bool {
    sort_key == geotag::store::LATEST_SORT_KEY
        || Bucket::of(reading.ts_ms)
            .iter()
            .any(|b| b.sort_key() == sort_key)
}

/// The records of `readings` that belong to `key`'s item and are above its watermark.
fn fresh_readings(
    key: &StatsKey,
    stored: Option<&StatsItem>,
    readings: &[(String, Reading)],
) -> Vec<(String, Reading)> {
    let watermark = stored.map(|item| item.watermark.as_str());
    readings
        .iter()
        .filter(|(sequence, reading)| {
            belongs(&key.1, reading)
                && watermark.is_none_or(|mark| cmp_sequence(sequence, mark).is_gt())
        })
        .cloned()
        .collect()
}

/// The item to write for `key`: `fresh` folded in, and the spans of the hours
/// they touch (from Telemetry) set.
fn next_item(
    key: &StatsKey,
    stored: Option<&StatsItem>,
    fresh: &[(String, Reading)],
    hour_spans: &[(i64, Option<Span>)],
) -> Option<StatsItem> {
    let new_watermark = fresh
        .iter()
        .map(|(sequence, _)| sequence)
        .max_by(|a, b| cmp_sequence(a, b))?
        .clone();
    let fresh_readings: Vec<Reading> = fresh.iter().map(|(_, reading)| reading.clone()).collect();
    let body = if key.1 == geotag::store::LATEST_SORT_KEY {
        let current = match stored.map(|item| &item.body) {
            Some(StatsBody::Latest(state)) => Some(state.clone()),
            _ => None,
        };
        StatsBody::Latest(LatestState::apply(current, &fresh_readings)?)
    } else {
        let bucket = Bucket::of(fresh_readings[0].ts_ms)
            .into_iter()
            .find(|bucket| bucket.sort_key() == key.1)?;
        let mut rollup = match stored.map(|item| &item.body) {
            Some(StatsBody::Rollup(_, rollup)) => rollup.clone(),
            _ => Rollup::default(),
        };
        rollup.count_readings(&fresh_readings);
        match bucket {
            Bucket::Hour(start) => {
                rollup.track = hour_spans
                    .iter()
                    .find(|(hour, _)| *hour == start)
                    .and_then(|(_, span)| *span)
                    // Telemetry should hold what the stream shows; if TTL removed
                    // it meanwhile, the new readings still make a track.
                    .or_else(|| {
                        Span::of_points(&fresh_readings.iter().map(Point::of).collect::<Vec<_>>())
                    });
            }
            Bucket::Day(_) => {
                for (hour, span) in hour_spans {
                    rollup.set_hour(*hour, *span);
                }
            }
        }
        StatsBody::Rollup(bucket, rollup)
    };
    Some(StatsItem {
        device_id: key.0.clone(),
        watermark: new_watermark,
        body,
    })
}
