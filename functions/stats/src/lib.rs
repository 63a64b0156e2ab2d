//! The stats handler: a batch of Telemetry stream records in, each device's
//! latest state and hourly and daily rollups updated, exactly once.
//!
//! Nothing here counts on the order or the number of times records arrive
//! (see `geotag::stats`). Each device's `latest` item is read (one
//! BatchGetItem for the batch), the batch's newer readings folded in, and
//! written on the condition that its revision has not moved. Before it is
//! written, every hour the new state leaves behind (the hours of the
//! batch's readings but the new state's own, the *open hour*, and the hour
//! of the state it replaces) is recomputed from its readings in Telemetry
//! (one Query per device and hour) and written over an item of fewer
//! readings, and every day those fall in is recomputed from its hour items
//! (one Query per device and day) the same way. A tag reading in time order
//! costs one BatchGetItem share and one write a batch, and its hour and day
//! once an hour. A device with more than `TRAIL_MAX` newer readings (a
//! backlog) has its `latest` written in steps of that many, in time order,
//! so that each step's trail carries every reading it absorbed and the
//! alerts judge all of them.
//!
//! A device whose item could not be read or written makes its first record in
//! the batch a batch item failure: Lambda retries the batch from there, and
//! what was written already is recomputed to the same values or left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_lambda_events::streams::DynamoDbEventResponse;
use geotag::Reading;
use geotag::clock::HOUR_MS;
use geotag::stats::{Bucket, LatestState, Rollup, TRAIL_MAX, cmp_sequence};
use geotag::store::{
    Expected, LATEST_SORT_KEY, Loaded, SaveError, StatsBody, StatsItem, StatsKey, StatsStore,
    TelemetryReader,
};
use geotag_aws::telemetry::{TelemetryStreamEvent, TelemetryStreamRecord};
use geotag_aws::{DynamoStatsStore, DynamoTelemetryReader};
use geotag_runtime::emf::{self, Emitter, Invocation, Metrics};
use geotag_runtime::responses::stream_batch_response;
use geotag_runtime::{ConfigError, Environment, FromEnvironment};
use lambda_runtime::{Error, LambdaEvent};

/// Rounds of reload-and-retry after a conditional-write conflict on `latest`.
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

/// The handler's dependencies: where stats live, and where readings are read.
pub struct Stats<S, T> {
    pub store: S,
    pub telemetry: T,
    /// Where each invocation's metrics go (EMF lines on stdout in Lambda).
    pub metrics: Emitter,
}

pub fn on_aws(
    sdk: &geotag_aws::clients::SdkConfig,
    config: &Config,
) -> Stats<DynamoStatsStore, DynamoTelemetryReader> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    Stats {
        store: DynamoStatsStore::new(client.clone(), &config.device_stats_table),
        telemetry: DynamoTelemetryReader::new(client, &config.telemetry_table),
        metrics: Emitter::new(config.metrics.clone()),
    }
}

/// The stats of a stack's two tables, for tools ([`rebuild`]): the same
/// stores as the function's, its metrics discarded.
pub fn for_tables(
    sdk: &geotag_aws::clients::SdkConfig,
    telemetry_table: &str,
    device_stats_table: &str,
) -> Stats<DynamoStatsStore, DynamoTelemetryReader> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    Stats {
        store: DynamoStatsStore::new(client.clone(), device_stats_table),
        telemetry: DynamoTelemetryReader::new(client, telemetry_table),
        metrics: Emitter::for_binary("stats").with_sink(geotag_runtime::emf::Sink::Discard),
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
    /// Item updates that changed nothing: the item held those readings already.
    pub already_applied: usize,
    /// `latest` writes that found another revision and were folded again.
    pub conflicts: usize,
    /// Stored `latest` items that did not parse, replaced (see
    /// [`geotag::store::Loaded`]). Rollups are not read: one that does not
    /// parse is written over by the next recomputation, unless its
    /// `revision` is a number no lower than that recomputation's count.
    pub unreadable: usize,
    /// Hours read from Telemetry.
    pub hour_queries: usize,
    /// Days' hour items read from DeviceStats.
    pub day_queries: usize,
}

pub async fn handle<S: StatsStore, T: TelemetryReader>(
    stats: &Stats<S, T>,
    event: LambdaEvent<TelemetryStreamEvent>,
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
        .count("HourQueries", outcome.hour_queries)
        .count("DayQueries", outcome.day_queries)
        .count("InvalidRecords", outcome.invalid)
        .count("UnreadableItems", outcome.unreadable)
        .count("BatchItemFailures", outcome.failures.len());
}

/// The reading an INSERT record carries; `None` if its image is not a Telemetry reading.
pub fn reading_of(record: &TelemetryStreamRecord) -> Option<Reading> {
    record.change.new_image.0.clone()
}

/// The stream batch's readings, in DeviceStats exactly once: the rollups
/// they touch recomputed, each device's `latest` folded forward, and the
/// first record of each device that could not be finished reported.
pub async fn process<S: StatsStore, T: TelemetryReader>(
    stats: &Stats<S, T>,
    records: &[TelemetryStreamRecord],
) -> Outcome {
    let mut outcome = Outcome::default();
    let by_device = readings_by_device(records, &mut outcome);
    outcome.readings = by_device.values().map(Vec::len).sum();
    let mut failed = BTreeSet::new();
    update_stats(stats, &by_device, &mut outcome, &mut failed).await;
    let mut failures: Vec<String> = failed
        .iter()
        .filter_map(|device| {
            by_device[device]
                .iter()
                .map(|(sequence, _)| sequence.clone())
                .min_by(|a, b| cmp_sequence(a, b))
        })
        .collect();
    failures.sort_by(|a, b| cmp_sequence(a, b));
    outcome.failures = failures;
    outcome
}

/// Recomputes `device_id`'s DeviceStats from its readings in Telemetry
/// taken in `[from_ms, to_ms)`: every hour and day they fall in, and its
/// `latest` state, exactly as the stream would have made them (the same
/// functions, the same conditions), for when the stream could not: a batch
/// given up on and sent to the on-failure queue, a bug fixed since. Safe
/// beside the running stack: a rollup is written only over one of fewer
/// readings, `latest` only on its revision. Returns what it did; an error if
/// any item could not be read or written (running it again is safe).
pub async fn rebuild<S: StatsStore, T: TelemetryReader>(
    stats: &Stats<S, T>,
    device_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Outcome, RebuildError> {
    let readings = stats
        .telemetry
        .readings_between(device_id, from_ms, to_ms)
        .await?;
    let mut outcome = Outcome {
        readings: readings.len(),
        ..Outcome::default()
    };
    if readings.is_empty() {
        return Ok(outcome);
    }
    // Sequence numbers only name what failed, and nothing is retried here.
    let by_device = DeviceReadings::from([(
        device_id.to_owned(),
        readings
            .into_iter()
            .map(|reading| (reading.sort_key(), reading))
            .collect(),
    )]);
    let mut failed = BTreeSet::new();
    update_stats(stats, &by_device, &mut outcome, &mut failed).await;
    if failed.is_empty() {
        Ok(outcome)
    } else {
        Err(RebuildError::Incomplete {
            device_id: device_id.to_owned(),
            written: outcome.items_written,
        })
    }
}

/// Why [`rebuild`] did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading the readings from Telemetry: {0}")]
    Telemetry(#[from] geotag::store::StoreError),
    #[error(
        "some DeviceStats items of {device_id} could not be read or written ({written} were; the log says which): running it again is safe"
    )]
    Incomplete { device_id: String, written: usize },
}

/// A device's readings in the batch, each with its record's sequence number.
type DeviceReadings = BTreeMap<String, Vec<(String, Reading)>>;

/// The INSERT records' readings by device; other records are counted
/// (ignored, or invalid and logged) and left out.
fn readings_by_device(records: &[TelemetryStreamRecord], outcome: &mut Outcome) -> DeviceReadings {
    let mut by_device = DeviceReadings::new();
    for record in records {
        let Some(sequence) = record.change.sequence_number.as_deref().map(str::to_owned) else {
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

/// Requests of one kind in flight at once.
const CONCURRENCY: usize = 16;

/// Recomputes each of `hours` (device, hour start) from Telemetry, then
/// the days they fall in from their hours, each written over an item of
/// fewer readings. A device whose hour or day could not be read or written
/// joins `failed`.
async fn recompute_rollups<S: StatsStore, T: TelemetryReader>(
    stats: &Stats<S, T>,
    hours: &BTreeSet<(String, i64)>,
    outcome: &mut Outcome,
    failed: &mut BTreeSet<String>,
) {
    let hours: Vec<&(String, i64)> = hours.iter().collect();
    let mut hour_items = Vec::with_capacity(hours.len());
    for chunk in hours.chunks(CONCURRENCY) {
        let queries = chunk.iter().map(|(device, hour)| {
            stats
                .telemetry
                .readings_between(device, *hour, hour + HOUR_MS)
        });
        for (&(device, hour), result) in chunk.iter().zip(futures::future::join_all(queries).await)
        {
            outcome.hour_queries += 1;
            match result {
                // Empty only if TTL removed the hour meanwhile: nothing to count.
                Ok(readings) if readings.is_empty() => {}
                Ok(readings) => hour_items.push(StatsItem::rollup(
                    device,
                    Bucket::Hour(*hour),
                    Rollup::of_readings(&readings),
                )),
                Err(error) => {
                    tracing::warn!(device_id = %device, hour, %error, "reading the hour's readings failed");
                    failed.insert(device.clone());
                }
            }
        }
    }
    save_rollups(stats, hour_items, outcome, failed).await;

    // A day is read only once all of its touched hours are written, so that
    // it joins what they hold now.
    let days: BTreeSet<(String, i64)> = hours
        .iter()
        .filter(|(device, _)| !failed.contains(device))
        .map(|(device, hour)| (device.clone(), Bucket::of(*hour)[1].start_ms()))
        .collect();
    let days: Vec<(String, i64)> = days.into_iter().collect();
    let mut day_items = Vec::with_capacity(days.len());
    for chunk in days.chunks(CONCURRENCY) {
        let queries = chunk
            .iter()
            .map(|(device, day)| stats.store.hours_of_day(device, *day));
        for ((device, day), result) in chunk.iter().zip(futures::future::join_all(queries).await) {
            outcome.day_queries += 1;
            match result {
                Ok(hours) if hours.is_empty() => {}
                Ok(hours) => day_items.push(StatsItem::rollup(
                    device,
                    Bucket::Day(*day),
                    Rollup::of_hours(&hours),
                )),
                Err(error) => {
                    tracing::warn!(device_id = %device, day, %error, "reading the day's hours failed");
                    failed.insert(device.clone());
                }
            }
        }
    }
    save_rollups(stats, day_items, outcome, failed).await;
}

/// Writes recomputed rollups over items of fewer readings; an item of as
/// many holds these readings already.
async fn save_rollups<S: StatsStore, T>(
    stats: &Stats<S, T>,
    items: Vec<StatsItem>,
    outcome: &mut Outcome,
    failed: &mut BTreeSet<String>,
) {
    let writes: Vec<(StatsItem, Expected)> = items
        .into_iter()
        .map(|item| {
            let expected = Expected::FewerReadings(item.revision);
            (item, expected)
        })
        .collect();
    for ((item, _), result) in writes.iter().zip(stats.store.save(&writes).await) {
        match result {
            Ok(()) => outcome.items_written += 1,
            Err(SaveError::Conflict) => outcome.already_applied += 1,
            Err(error) => {
                tracing::warn!(device_id = %item.device_id, item = %item.body.sort_key(), %error, "DeviceStats write failed; retrying from the device's first record");
                failed.insert(item.device_id.clone());
            }
        }
    }
}

fn latest_key(device: &str) -> StatsKey {
    (device.to_owned(), LATEST_SORT_KEY.to_owned())
}

/// Folds each device's newer readings into its `latest` item, one step of at
/// most `TRAIL_MAX` newer readings per write, each write conditioned on the
/// revision it read (a conflict reloads and folds again), and recomputes,
/// before each write, every hour the write leaves behind: the hours of the
/// batch's readings but the one the new state stays in, and the hour of
/// the state it replaces if it moves on from it (see `geotag::stats`, the
/// open hour). A device whose state does not change leaves nothing open:
/// every hour of its readings is recomputed, but for readings its state
/// folded in itself ([`folded_into`]).
async fn update_stats<S: StatsStore, T: TelemetryReader>(
    stats: &Stats<S, T>,
    by_device: &DeviceReadings,
    outcome: &mut Outcome,
    failed: &mut BTreeSet<String>,
) {
    let mut pending: Vec<String> = by_device.keys().cloned().collect();
    // What this invocation wrote, so that a `latest` written in steps is not
    // read back between them.
    let mut written: HashMap<String, StatsItem> = HashMap::new();
    let mut conflicts: HashMap<String, usize> = HashMap::new();
    // Hours recomputed since each device's state was last read from the
    // table: a state read again may have left readings in an hour that was
    // recomputed before it.
    let mut recomputed: BTreeSet<(String, i64)> = BTreeSet::new();
    while !pending.is_empty() {
        let unknown: Vec<StatsKey> = pending
            .iter()
            .filter(|device| !written.contains_key(*device))
            .map(|device| latest_key(device))
            .collect();
        let loaded = if unknown.is_empty() {
            Loaded::default()
        } else {
            match stats.store.load(&unknown).await {
                Ok(loaded) => loaded,
                Err(error) => {
                    tracing::warn!(%error, "reading DeviceStats failed; the batch will be retried");
                    failed.extend(pending);
                    return;
                }
            }
        };
        for key in loaded.unreadable.keys() {
            // Its earlier state is gone: it restarts from this batch's
            // readings. Left in place, every write to it would conflict and
            // its device's latest state would stop for good.
            tracing::error!(device_id = %key.0, "a latest item that does not parse is replaced");
            outcome.unreadable += 1;
        }
        let mut writes: Vec<(StatsItem, Expected)> = Vec::new();
        let mut unfinished: BTreeSet<String> = BTreeSet::new();
        let mut hours: BTreeSet<(String, i64)> = BTreeSet::new();
        for device in &pending {
            let key = latest_key(device);
            let (stored, expected) = match written.get(device) {
                Some(item) => (Some(item), Expected::Revision(item.revision)),
                None => {
                    recomputed.retain(|(recomputed_device, _)| recomputed_device != device);
                    (loaded.items.get(&key), Expected::of(&loaded, &key))
                }
            };
            let current = stored.and_then(|item| match &item.body {
                StatsBody::Latest(state) => Some(state),
                StatsBody::Rollup(..) => None,
            });
            let next = next_latest(current, &by_device[device]);
            let open = next.as_ref().map(|(state, _)| state.open_hour());
            let left_behind = by_device[device]
                .iter()
                .filter(|(_, reading)| open.is_some() || !folded_into(current, reading))
                .map(|(_, reading)| Bucket::of(reading.ts_ms)[0].start_ms())
                .chain(
                    current
                        .filter(|_| open.is_some())
                        .map(LatestState::open_hour),
                );
            for hour in left_behind {
                if Some(hour) != open && !recomputed.contains(&(device.clone(), hour)) {
                    hours.insert((device.clone(), hour));
                }
            }
            let Some((state, more)) = next else {
                outcome.already_applied += 1;
                continue;
            };
            if more {
                unfinished.insert(device.clone());
            }
            let revision = match expected {
                Expected::Revision(revision) => revision + 1,
                _ => 1,
            };
            let item = StatsItem {
                device_id: device.clone(),
                revision,
                body: StatsBody::Latest(state),
            };
            writes.push((item, expected));
        }
        recompute_rollups(stats, &hours, outcome, failed).await;
        recomputed.extend(hours);
        // A state moves on only once the hours it leaves behind are written.
        writes.retain(|(item, _)| !failed.contains(&item.device_id));
        let results = stats.store.save(&writes).await;
        let mut next = Vec::new();
        for ((item, _), result) in writes.into_iter().zip(results) {
            let device = item.device_id.clone();
            match result {
                Ok(()) => {
                    outcome.items_written += 1;
                    if unfinished.contains(&device) {
                        next.push(device.clone());
                    }
                    written.insert(device, item);
                }
                Err(SaveError::Conflict)
                    if conflicts.get(&device).copied().unwrap_or(0) < CONFLICT_ROUNDS =>
                {
                    outcome.conflicts += 1;
                    *conflicts.entry(device.clone()).or_default() += 1;
                    written.remove(&device);
                    next.push(device);
                }
                Err(error) => {
                    tracing::warn!(device_id = %device, %error, "latest write failed; retrying from the device's first record");
                    failed.insert(device);
                }
            }
        }
        pending = next;
    }
}

/// Whether `reading` is one the write of `state` folded in (the state's
/// own reading or one of its trail) and lies in its open hour. Then it was
/// in Telemetry before the state was written, so whoever moves the state on
/// closes that hour with it: a redelivery of it leaves the hour open, as
/// the first delivery did, instead of writing it.
fn folded_into(state: Option<&LatestState>, reading: &Reading) -> bool {
    state.is_some_and(|state| {
        Bucket::of(reading.ts_ms)[0].start_ms() == state.open_hour() && {
            let key = reading.sort_key();
            key == state.reading_key || state.trail.iter().any(|point| point.reading_key == key)
        }
    })
}

/// The next `latest` state of a device: `current` with the readings folded
/// in, the newer of them at most `TRAIL_MAX` at a time, oldest first, and
/// whether newer readings remain for another step. `None` if nothing changes
/// (every reading already folded in, or older and without a newer battery).
fn next_latest(
    current: Option<&LatestState>,
    readings: &[(String, Reading)],
) -> Option<(LatestState, bool)> {
    // The latest state's order is (latest time, sort key). Sort keys order
    // as (time, sequence number) do (`geotag::reading`'s property test), so
    // readings are ordered without formatting their keys; a key is written
    // only to break a tie of times with the stored state's.
    let order_of = |reading: &Reading| (reading.latest_time_ms(), reading.ts_ms, reading.seq);
    let newer_than_current = |reading: &Reading| {
        current.is_none_or(|state| match reading.latest_time_ms().cmp(&state.ts_ms) {
            std::cmp::Ordering::Equal => reading.sort_key() > state.reading_key,
            later_or_earlier => later_or_earlier.is_gt(),
        })
    };
    let (mut newer, older): (Vec<&Reading>, Vec<&Reading>) = readings
        .iter()
        .map(|(_, reading)| reading)
        .partition(|reading| newer_than_current(reading));
    newer.sort_by_key(|reading| order_of(reading));
    let more = newer.len() > TRAIL_MAX;
    newer.truncate(TRAIL_MAX);
    let step: Vec<Reading> = older.into_iter().chain(newer).cloned().collect();
    let state = LatestState::apply(current.cloned(), &step)?;
    (Some(&state) != current).then_some((state, more))
}
