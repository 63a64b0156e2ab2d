//! The stats handler driven by the sample stream events in `events/stats/`,
//! and by generated batches, with the in-memory store: exact totals under
//! duplicates, redelivery and a failure in the middle of a batch.

use std::collections::BTreeMap;
use std::path::Path;

use geotag::Reading;
use geotag::stats::{Bucket, Rollup};
use geotag::store::{
    MemoryReadingStore, MemoryStatsStore, ReadingsByHour, StatsBody, shown_rollups_of_table,
};
use geotag_aws::telemetry::{TelemetryStreamEvent, TelemetryStreamRecord};
use geotag_stats::{Stats, handle, process, reading_of};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

const T0: i64 = 1_795_161_600_000; // 2026-11-20T08:00:00Z

type MemoryStats = Stats<MemoryStatsStore, MemoryReadingStore>;

fn stats() -> MemoryStats {
    Stats {
        store: MemoryStatsStore::default(),
        telemetry: MemoryReadingStore::default(),
        metrics: geotag_runtime::emf::Emitter::for_binary("stats"),
    }
}

/// Puts the records' readings in the in-memory Telemetry, as ingest had before
/// the stream showed them.
fn stored(stats: &MemoryStats, records: &[TelemetryStreamRecord]) {
    let readings: Vec<_> = records
        .iter()
        .filter(|r| r.event_name == "INSERT")
        .filter_map(reading_of)
        .collect();
    stats.telemetry.insert(&readings);
}

fn sample(name: &str) -> TelemetryStreamEvent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/stats")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// What a reader is shown of each device's rollups: the stored ones, with
/// its open hour made from its readings in Telemetry (see
/// `geotag::stats::show_open_hour`).
fn shown(stats: &MemoryStats) -> BTreeMap<(String, Bucket), Rollup> {
    let readings: ReadingsByHour = stats.telemetry.readings().into_iter().collect();
    (shown_rollups_of_table(&stats.store.items(), &readings).into_iter())
        .flat_map(|(device, rollups)| {
            (rollups.into_iter()).map(move |(bucket, rollup)| ((device.clone(), bucket), rollup))
        })
        .collect()
}

/// A rollup as a reader is shown it.
fn rollup(stats: &MemoryStats, device: &str, sort_key: &str) -> Rollup {
    shown(stats)
        .into_iter()
        .find(|((d, bucket), _)| d == device && bucket.sort_key() == sort_key)
        .map(|(_, rollup)| rollup)
        .unwrap_or_else(|| panic!("{device} {sort_key}: no rollup"))
}

fn latest(stats: &MemoryStats, device: &str) -> geotag::stats::LatestState {
    match stats.store.get(device, "latest").map(|item| item.body) {
        Some(StatsBody::Latest(state)) => state,
        other => panic!("{device} latest: {other:?}"),
    }
}

async fn invoke(stats: &MemoryStats, event: TelemetryStreamEvent) -> Vec<String> {
    stored(stats, &event.records);
    handle(stats, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap()
        .batch_item_failures
        .into_iter()
        .filter_map(|failure| failure.item_identifier)
        .collect()
}

#[tokio::test]
async fn inserts_become_latest_state_and_rollups() {
    let stats = stats();
    assert!(invoke(&stats, sample("inserts.json")).await.is_empty());

    let hour8 = rollup(&stats, "tag-0001", "hour#2026-11-20T08");
    let hour9 = rollup(&stats, "tag-0001", "hour#2026-11-20T09");
    let day = rollup(&stats, "tag-0001", "day#2026-11-20");
    assert_eq!((hour8.count, hour9.count, day.count), (4, 2, 6));
    // 0.005 degree of latitude per step: 5 steps in the day, 3 and 1 within the hours.
    let step = 0.005_f64.to_radians() * geotag::geo::EARTH_RADIUS_M;
    assert!(
        (day.distance_m() - 5.0 * step).abs() < 0.01,
        "{}",
        day.distance_m()
    );
    assert!((hour8.distance_m() - 3.0 * step).abs() < 0.01);
    assert!((hour9.distance_m() - step).abs() < 0.01);
    assert_eq!(day.battery_min, Some(85.0));
    assert_eq!(day.speed_max, Some(2.0));

    let state = latest(&stats, "tag-0001");
    assert_eq!(state.ts_ms, T0 + 1_500_000 + 5 * 600_000);
    assert_eq!(
        (state.lat, state.battery, state.version),
        (48.875, Some(85.0), 1)
    );
    assert_eq!(rollup(&stats, "tag-0002", "hour#2026-11-20T08").count, 3);
    assert_eq!(latest(&stats, "tag-0002").battery, Some(20.0));
}

#[tokio::test]
async fn a_redelivered_batch_writes_nothing() {
    // The readings in the tags' open hours were folded into their latest
    // states (the trail names them): their hour is left open, as the first
    // delivery left it, and nothing else changes either.
    let stats = stats();
    assert!(invoke(&stats, sample("inserts.json")).await.is_empty());
    let before = stats.store.written().len();
    let event = sample("inserts.json");
    stored(&stats, &event.records);
    let outcome = process(&stats, &event.records).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    assert_eq!(outcome.items_written, 0, "{outcome:?}");
    assert_eq!(stats.store.written().len(), before);
    assert_eq!(
        outcome.hour_queries, 1,
        "only tag-0001's closed 08:00: {outcome:?}"
    );
}

#[tokio::test]
async fn duplicates_and_redeliveries_never_count_twice() {
    let stats = stats();
    for _ in 0..3 {
        assert!(invoke(&stats, sample("inserts.json")).await.is_empty());
    }
    assert!(
        invoke(&stats, sample("modify-and-late.json"))
            .await
            .is_empty()
    );
    assert!(
        invoke(&stats, sample("modify-and-late.json"))
            .await
            .is_empty()
    );
    // 6 inserts plus one late reading; the MODIFY is not a new reading.
    assert_eq!(rollup(&stats, "tag-0001", "day#2026-11-20").count, 7);
    assert_eq!(rollup(&stats, "tag-0001", "hour#2026-11-20T08").count, 5);
    // The late reading is older than the latest one: the position stays.
    let state = latest(&stats, "tag-0001");
    assert_eq!((state.lat, state.version), (48.875, 1));
}

/// A batch for `devices` tags, `per_device` readings each, one a minute from T0.
fn generated(devices: usize, per_device: usize) -> Vec<TelemetryStreamRecord> {
    let mut records = Vec::new();
    for step in 0..per_device {
        for device in 0..devices {
            let n = records.len() + 1;
            let ts = T0 + step as i64 * 60_000 * 120 / per_device as i64;
            let device_id = format!("tag-{device:04}");
            let record = json!({
                "eventID": format!("e{n}"), "eventName": "INSERT", "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_795_161_600.0,
                    "Keys": {"device_id": {"S": device_id}, "sk": {"S": format!("{ts}")}},
                    "NewImage": {"device_id": {"S": device_id}, "sk": {"S": format!("{ts}")}, "ts": {"N": ts.to_string()},
                                 "lat": {"N": format!("{}", 45.0 + step as f64 * 1e-4)}, "lon": {"N": format!("{}", device as f64 * 0.1)},
                                 "speed": {"N": "3.5"}, "battery": {"N": format!("{}", 100 - step * 50 / per_device)}},
                    "SequenceNumber": format!("{}", 1_000_000 + n * 10),
                    "SizeBytes": 100, "StreamViewType": "NEW_IMAGE"},
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/s"
            });
            records.push(serde_json::from_value(record).unwrap());
        }
    }
    records
}

/// Each device's `latest` state and the rollups a reader is shown.
fn totals(stats: &MemoryStats) -> Vec<(String, String, u64, String)> {
    let latest = (stats.store.items().into_iter()).filter_map(|item| match &item.body {
        StatsBody::Latest(state) => Some((
            item.device_id.clone(),
            item.body.sort_key(),
            state.version,
            format!("{}", state.ts_ms),
        )),
        StatsBody::Rollup(..) => None,
    });
    let rollups = shown(stats).into_iter().map(|((device, bucket), rollup)| {
        (
            device,
            bucket.sort_key(),
            rollup.count,
            format!(
                "{:.6} {:?} {:?}",
                rollup.distance_m(),
                rollup.battery_min,
                rollup.bbox
            ),
        )
    });
    let mut totals: Vec<_> = latest.chain(rollups).collect();
    totals.sort();
    totals
}

/// Stats after `records`, stored in Telemetry, went through in one clean batch.
async fn processed_cleanly(records: &[TelemetryStreamRecord]) -> MemoryStats {
    let stats = stats();
    stored(&stats, records);
    assert!(process(&stats, records).await.failures.is_empty());
    stats
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_batch_is_retried_to_the_same_totals() {
    let records = generated(4, 40);
    let clean = processed_cleanly(&records).await;

    // The same batch, with one hourly item's write failing: the function
    // reports that device's first record; Lambda retries from it.
    let faulty = stats();
    stored(&faulty, &records);
    // (09:00 is the tags' open hour at the end: written when it closes.)
    faulty.store.fail_next_write_of("hour#2026-11-20T08");
    let outcome = process(&faulty, &records).await;
    assert_eq!(outcome.failures.len(), 1, "{outcome:?}");
    let first_of_tag0 = records[0].change.sequence_number.clone().unwrap();
    assert_eq!(
        outcome.failures,
        [first_of_tag0],
        "tag-0000's hour failed first"
    );
    assert!(
        outcome.items_written > 0,
        "the other items were written before the retry"
    );
    let retry = process(&faulty, &records).await;
    assert!(retry.failures.is_empty());
    assert!(
        retry.already_applied > 0,
        "items written the first time are left as they are"
    );
    // And once more, bisected, as Lambda may deliver it.
    let (first, second) = records.split_at(records.len() / 2);
    assert!(process(&faulty, first).await.failures.is_empty());
    assert!(process(&faulty, second).await.failures.is_empty());
    assert_eq!(totals(&faulty), totals(&clean));
}

#[tokio::test]
async fn one_write_per_device_and_bucket_whatever_the_number_of_readings() {
    // 1,000 readings from 10 tags over 2 hours.
    let records = generated(10, 100);
    assert_eq!(records.len(), 1000);
    let stats = stats();
    stored(&stats, &records);
    let outcome = process(&stats, &records).await;
    assert!(outcome.failures.is_empty());
    let (loads, writes) = stats.store.calls();
    // Per tag: latest, the hour 08:00 and the day. 09:00, where the latest
    // state is, stays open: its rollup is written when the tag moves on.
    assert_eq!(writes, 10 * 3);
    assert_eq!(loads, 1, "one BatchGetItem for the 10 latest items");
    assert_eq!(
        outcome.hour_queries, 10,
        "one Telemetry query per tag and closed hour"
    );
    assert_eq!(
        outcome.day_queries, 10,
        "one DeviceStats query per tag and day"
    );
    assert_eq!(stats.store.day_queries(), 10);
    assert_eq!(rollup(&stats, "tag-0003", "day#2026-11-20").count, 100);
    let hours: u64 = [8, 9]
        .iter()
        .map(|h| rollup(&stats, "tag-0003", &format!("hour#2026-11-20T{h:02}")).count)
        .sum();
    assert_eq!(hours, 100);
    assert_eq!(Bucket::of(T0)[1].sort_key(), "day#2026-11-20");
}

#[tokio::test]
async fn readings_in_any_arrival_order_give_the_in_order_distance() {
    let records = generated(3, 60);
    let in_order = processed_cleanly(&records).await;

    // The same readings reach the stream shuffled (concurrent ingest, buffered
    // uploads), in small batches: each record keeps its position in the
    // stream (its sequence number), the readings' times are out of order.
    let mut shuffled: Vec<TelemetryStreamRecord> = records.clone();
    let mut sequences: Vec<compact_str::CompactString> = shuffled
        .iter()
        .map(|r| r.change.sequence_number.clone().unwrap())
        .collect();
    fastrand::Rng::with_seed(11).shuffle(&mut shuffled);
    sequences.sort_by_key(|s| s.parse::<u64>().unwrap());
    for (record, sequence) in shuffled.iter_mut().zip(sequences) {
        record.change.sequence_number = Some(sequence);
    }
    let late = stats();
    for batch in shuffled.chunks(7) {
        stored(&late, batch);
        assert!(process(&late, batch).await.failures.is_empty());
    }
    for device in ["tag-0000", "tag-0001", "tag-0002"] {
        for key in ["day#2026-11-20", "hour#2026-11-20T08", "hour#2026-11-20T09"] {
            let (a, b) = (rollup(&late, device, key), rollup(&in_order, device, key));
            assert_eq!(a.count, b.count, "{device} {key}");
            assert!(
                (a.distance_m() - b.distance_m()).abs() < 1e-6,
                "{device} {key}: {} vs {}",
                a.distance_m(),
                b.distance_m()
            );
            assert_eq!(
                a.track.map(|t| (t.first, t.last)),
                b.track.map(|t| (t.first, t.last))
            );
        }
        assert_eq!(latest(&late, device).ts_ms, latest(&in_order, device).ts_ms);
    }
}

/// The `latest` states written, in order, and the reading keys of their trails.
fn latest_writes(stats: &MemoryStats) -> Vec<geotag::stats::LatestState> {
    stats
        .store
        .written()
        .into_iter()
        .filter_map(|item| match item.body {
            StatsBody::Latest(state) => Some(state),
            StatsBody::Rollup(..) => None,
        })
        .collect()
}

#[tokio::test]
async fn a_backlog_reaches_the_alerts_whole_in_steps_of_one_trail() {
    use geotag::stats::TRAIL_MAX;
    // A tag back from two hours offline: 250 readings in one stream batch.
    let records = generated(1, 250);
    let clean = processed_cleanly(&records).await;
    let steps = latest_writes(&clean);
    assert_eq!(
        steps.iter().map(|s| s.trail.len()).collect::<Vec<_>>(),
        [TRAIL_MAX, TRAIL_MAX, 50]
    );
    assert_eq!(
        steps.iter().map(|s| s.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let in_trails: Vec<String> = steps
        .iter()
        .flat_map(|s| s.trail.iter().map(|p| p.reading_key.clone()))
        .collect();
    let all: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(reading_of)
        .map(|r| r.sort_key())
        .collect();
    assert_eq!(in_trails.len(), 250, "each reading in one trail");
    assert_eq!(
        in_trails
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        all
    );

    // The third step's write fails: Lambda retries the batch from the
    // device's first record, and the steps already written are not redone.
    let crashed = stats();
    stored(&crashed, &records);
    crashed.store.fail_nth_write_of("latest", 3);
    let outcome = process(&crashed, &records).await;
    assert_eq!(
        outcome.failures,
        [records[0].change.sequence_number.clone().unwrap()],
        "{outcome:?}"
    );
    assert!(process(&crashed, &records).await.failures.is_empty());
    let retried = latest_writes(&crashed);
    assert_eq!(
        retried.iter().map(|s| s.trail.len()).collect::<Vec<_>>(),
        [TRAIL_MAX, TRAIL_MAX, 50]
    );
    assert_eq!(totals(&crashed), totals(&clean));
}

#[tokio::test]
async fn an_unreadable_item_is_replaced_and_its_device_counted_again() {
    let records = generated(2, 30);
    let stats = stats();
    stored(&stats, &records);
    let hour = Bucket::of(T0)[0].sort_key();
    stats
        .store
        .put_unreadable(("tag-0000".into(), "latest".into()), None);
    stats
        .store
        .put_unreadable(("tag-0000".into(), hour.clone()), Some(1));
    let outcome = process(&stats, &records).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    assert_eq!(
        outcome.unreadable, 1,
        "the latest item; the hour is recomputed over"
    );
    let clean = processed_cleanly(&records).await;
    assert_eq!(rollup(&stats, "tag-0000", &hour).count, 15);
    assert_eq!(latest(&stats, "tag-0000").version, 1);
    assert_eq!(totals(&stats), totals(&clean));
}

#[tokio::test]
async fn a_rebuild_from_telemetry_equals_what_the_stream_built() {
    let records = generated(4, 40);
    let clean = processed_cleanly(&records).await;
    let (day_start, day_end) = (T0 - 8 * 3_600_000, T0 + 16 * 3_600_000);

    // From nothing: as if DeviceStats had been lost.
    let rebuilt = stats();
    stored(&rebuilt, &records);
    for device in ["tag-0000", "tag-0001", "tag-0002", "tag-0003"] {
        let outcome = geotag_stats::rebuild(&rebuilt, device, day_start, day_end)
            .await
            .unwrap();
        assert_eq!(outcome.readings, 40);
    }
    assert_eq!(totals(&rebuilt), totals(&clean));

    // After a stream batch was given up: Telemetry holds every reading, the
    // stream brought only the first half. Rebuilding one hour's range is
    // enough for that hour and its day; rebuilding the rest changes nothing
    // already right, and a second rebuild nothing at all.
    let half_done = stats();
    stored(&half_done, &records);
    let (first, _given_up) = records.split_at(records.len() / 2);
    assert!(process(&half_done, first).await.failures.is_empty());
    assert_ne!(totals(&half_done), totals(&clean));
    for device in ["tag-0000", "tag-0001", "tag-0002", "tag-0003"] {
        geotag_stats::rebuild(&half_done, device, day_start, day_end)
            .await
            .unwrap();
    }
    // Every total equal; `latest` moved twice (its `version`), to the same place.
    let without_versions = |stats: &MemoryStats| -> Vec<(String, String, String)> {
        totals(stats)
            .into_iter()
            .map(|(device, key, count, rest)| {
                let count = if key == "latest" {
                    String::new()
                } else {
                    count.to_string()
                };
                (device, key, format!("{count} {rest}"))
            })
            .collect()
    };
    assert_eq!(without_versions(&half_done), without_versions(&clean));
    let again = geotag_stats::rebuild(&half_done, "tag-0000", day_start, day_end)
        .await
        .unwrap();
    assert_eq!(again.items_written, 0, "{again:?}");
}

#[tokio::test]
async fn a_tag_reading_once_a_minute_writes_its_hour_and_day_once_the_hour_closes() {
    // One tag, a reading a minute from 08:00 to 09:59, each reading in a
    // stats batch of its own, as a real fleet's minute of traffic delivers it.
    let records = generated(1, 120);
    let stats = stats();
    let (mut hour_queries, mut day_queries) = (0, 0);
    for record in &records {
        let batch = std::slice::from_ref(record);
        stored(&stats, batch);
        let outcome = process(&stats, batch).await;
        assert!(outcome.failures.is_empty(), "{outcome:?}");
        hour_queries += outcome.hour_queries;
        day_queries += outcome.day_queries;
    }
    let writes_of = |sort_key: &str| {
        (stats.store.written().iter())
            .filter(|item| item.body.sort_key() == sort_key)
            .count()
    };
    assert_eq!(writes_of("latest"), 120);
    assert_eq!(
        writes_of("hour#2026-11-20T08"),
        1,
        "when 09:00's first reading came"
    );
    assert_eq!(writes_of("day#2026-11-20"), 1);
    assert_eq!(writes_of("hour#2026-11-20T09"), 0, "09:00 is still open");
    assert_eq!((hour_queries, day_queries), (1, 1));
    // What a reader is shown is what one batch of all of them gives.
    assert_eq!(shown(&stats), shown(&processed_cleanly(&records).await));
}

/// A DeviceStats store two invocations share.
struct SharedStats(std::sync::Arc<MemoryStatsStore>);

impl geotag::store::StatsStore for SharedStats {
    async fn load(
        &self,
        keys: &[geotag::store::StatsKey],
    ) -> Result<geotag::store::Loaded, geotag::store::StoreError> {
        self.0.load(keys).await
    }

    async fn hours_of_day(
        &self,
        device_id: &str,
        day_start_ms: i64,
    ) -> Result<Vec<(i64, Rollup)>, geotag::store::StoreError> {
        self.0.hours_of_day(device_id, day_start_ms).await
    }

    async fn save(
        &self,
        writes: &[(geotag::store::StatsItem, geotag::store::Expected)],
    ) -> Vec<Result<(), geotag::store::SaveError>> {
        self.0.save(writes).await
    }
}

/// A Telemetry two invocations share, whose first query answers, then
/// holds its answer until told to go on: the invocation is paused with
/// what Telemetry held at that moment.
struct PausingTelemetry {
    readings: std::sync::Arc<MemoryReadingStore>,
    pause: std::sync::Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
}

impl geotag::store::TelemetryReader for PausingTelemetry {
    async fn readings_between(
        &self,
        device_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Reading>, geotag::store::StoreError> {
        let answer = self
            .readings
            .readings_between(device_id, from_ms, to_ms)
            .await;
        let pause = self.pause.lock().unwrap().take();
        if let Some((paused, go_on)) = pause {
            paused.send(()).unwrap();
            go_on.await.unwrap();
        }
        answer
    }
}

#[tokio::test]
async fn a_reading_left_in_the_open_hour_while_another_batch_closes_it_is_counted() {
    use std::sync::Arc;
    // tag-0000 has read 08:00 to 08:48; 08:00 is its open hour.
    let records = generated(1, 150);
    let at = |minute: usize| records[minute * 150 / 120].clone();
    let (before, closing, left_in_open) = (
        (0..=48).map(at).collect::<Vec<_>>(),
        vec![at(65)],
        vec![at(55)],
    );
    let (store, telemetry) = (
        Arc::new(MemoryStatsStore::default()),
        Arc::new(MemoryReadingStore::default()),
    );
    let invocation = |pause| {
        Arc::new(Stats {
            store: SharedStats(store.clone()),
            telemetry: PausingTelemetry {
                readings: telemetry.clone(),
                pause: std::sync::Mutex::new(pause),
            },
            metrics: geotag_runtime::emf::Emitter::for_binary("stats"),
        })
    };
    let store_readings = |batch: &[TelemetryStreamRecord]| {
        telemetry.insert(&batch.iter().filter_map(reading_of).collect::<Vec<_>>());
    };
    store_readings(&before);
    assert!(
        process(&invocation(None), &before)
            .await
            .failures
            .is_empty()
    );

    // Batch B brings 09:05: the state moves on, so B recomputes 08:00 and
    // is paused with what Telemetry held then.
    let (paused, wait_paused) = tokio::sync::oneshot::channel();
    let (go_on, wait_go_on) = tokio::sync::oneshot::channel();
    store_readings(&closing);
    let b = invocation(Some((paused, wait_go_on)));
    let b = tokio::spawn(async move { process(&b, &closing).await });
    wait_paused.await.unwrap();
    // Meanwhile 08:55 reaches Telemetry, and batch A folds it into a state
    // still in 08:00, leaving it to whoever closes that hour.
    store_readings(&left_in_open);
    let a = process(&invocation(None), &left_in_open).await;
    assert_eq!((a.failures.len(), a.hour_queries), (0, 0), "{a:?}");
    go_on.send(()).unwrap();
    let b = b.await.unwrap();
    assert!(b.failures.is_empty(), "{b:?}");
    assert_eq!(b.conflicts, 1, "B's state was read before A wrote its own");

    let hour = store
        .get("tag-0000", "hour#2026-11-20T08")
        .map(|item| item.revision);
    assert_eq!(hour, Some(50), "08:00 to 08:48, and 08:55");
    let latest = store.get("tag-0000", "latest").unwrap();
    match latest.body {
        StatsBody::Latest(state) => assert_eq!(state.open_hour(), T0 + 3_600_000),
        other => panic!("{other:?}"),
    }
}
