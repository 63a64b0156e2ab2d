//! The stats function against the emulator, through the pump's stream event
//! source: exact DeviceStats under duplicate deliveries, and under a function
//! that dies in the middle of a batch after writing part of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures::FutureExt;
use geotag::Reading;
use geotag::stats::{Bucket, Point, Span};
use geotag::store::{Expected, ReadingStore, StatsBody, StatsStore};
use geotag_aws::telemetry::TelemetryStreamEvent as Event;
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::pump::Pump;
use geotag_local_cloud::stack::{LocalStack, Options};
use geotag_runtime::FromEnvironment as _;
use serde_json::Value;

const T0: i64 = 1_795_161_600_000; // 2026-11-20T08:00:00Z

/// 6 tags, 50 readings each, 90 s apart (75 minutes: two hours, one day),
/// in a shuffled write order as concurrent ingest produces.
fn readings() -> Vec<Reading> {
    let mut readings = Vec::new();
    for device in 0..6 {
        for i in 0..50 {
            readings.push(Reading {
                device_id: format!("tag-{device:04}"),
                ts_ms: T0 + 1_800_000 + i * 90_000,
                lat: 48.8 + device as f64 * 0.01 + i as f64 * 0.0007,
                lon: 2.3 + (i as f64 * 0.3).sin() * 0.002,
                alt: None,
                speed: Some(i as f64 % 7.0),
                heading: None,
                battery: Some(90.0 - i as f64 * 0.5),
                accuracy: None,
                seq: Some(i as u64),
                received_at_ms: None,
                owner: None,
            });
        }
    }
    fastrand::Rng::with_seed(5).shuffle(&mut readings);
    readings
}

/// What DeviceStats must hold, computed from the readings directly.
fn expected(readings: &[Reading]) -> BTreeMap<(String, String), (u64, f64)> {
    let mut points: BTreeMap<(String, String), Vec<Point>> = BTreeMap::new();
    for reading in readings {
        for bucket in Bucket::of(reading.ts_ms) {
            points
                .entry((reading.device_id.clone(), bucket.sort_key()))
                .or_default()
                .push(Point::of(reading));
        }
    }
    points
        .into_iter()
        .map(|(key, points)| {
            let distance = Span::of_points(&points).map_or(0.0, |span| span.distance_m);
            (key, (points.len() as u64, distance))
        })
        .collect()
}

/// A reading of `device` at `ts_ms` with a position and nothing else.
fn position_only(device: &str, ts_ms: i64) -> Reading {
    Reading {
        device_id: device.to_owned(),
        ts_ms,
        lat: 48.0,
        lon: 2.0,
        alt: None,
        speed: None,
        heading: None,
        battery: None,
        accuracy: None,
        seq: None,
        received_at_ms: None,
        owner: None,
    }
}

/// Writes each part of the readings to Telemetry as one ingest invocation
/// would (a part given twice is a duplicate delivery).
async fn store_in_parts(telemetry: &geotag_aws::DynamoReadingStore, parts: &[&[Reading]]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for part in parts {
        assert!(
            telemetry
                .put_readings(part, deadline)
                .await
                .failed
                .is_empty()
        );
    }
}

/// A default local stack, its DeviceStats table, a client and the stats store on it.
async fn device_stats_stack() -> (
    LocalStack,
    String,
    aws_sdk_dynamodb::Client,
    geotag_aws::DynamoStatsStore,
) {
    let local = LocalStack::start(&Options::default())
        .await
        .expect("local stack");
    let table = local
        .stack
        .reference("DeviceStatsTable")
        .unwrap()
        .to_owned();
    let client = aws_sdk_dynamodb::Client::new(&local.sdk);
    let store = geotag_aws::DynamoStatsStore::new(client.clone(), &table);
    (local, table, client, store)
}

/// The new `latest` item and hour rollup that readings of one tag, all
/// within the first one's hour, make.
fn latest_and_hour(readings: &[Reading]) -> [(geotag::store::StatsItem, Expected); 2] {
    let latest = geotag::stats::LatestState::apply(None, readings).unwrap();
    let rollup = geotag::stats::Rollup::of_readings(readings);
    [
        geotag::store::StatsItem {
            device_id: readings[0].device_id.clone(),
            revision: 1,
            body: StatsBody::Latest(latest),
        },
        geotag::store::StatsItem::rollup(
            &readings[0].device_id,
            Bucket::of(readings[0].ts_ms)[0],
            rollup,
        ),
    ]
    .map(|item| (item, Expected::Absent))
}

/// DeviceStats' rollups of the readings' tags as the API shows them: the
/// stored ones, each tag's open hour made from its readings.
async fn actual(
    local: &LocalStack,
    readings: &[Reading],
) -> BTreeMap<(String, String), (u64, f64)> {
    let store = geotag_aws::DynamoStatsStore::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        local.stack.reference("DeviceStatsTable").unwrap(),
    );
    let mut keys: Vec<(String, String)> = expected(readings).into_keys().collect();
    let devices: std::collections::BTreeSet<&String> =
        keys.iter().map(|(device, _)| device).collect();
    let latest: Vec<(String, String)> = (devices.into_iter())
        .map(|device| (device.clone(), geotag::store::LATEST_SORT_KEY.to_owned()))
        .collect();
    keys.extend(latest);
    let items: Vec<geotag::store::StatsItem> = store
        .load(&keys)
        .await
        .unwrap()
        .items
        .into_values()
        .collect();
    let readings: geotag::store::ReadingsByHour = readings.iter().cloned().collect();
    (geotag::store::shown_rollups_of_table(&items, &readings).into_iter())
        .flat_map(|(device, rollups)| {
            (rollups.into_iter()).map(move |(bucket, rollup)| {
                (
                    (device.clone(), bucket.sort_key()),
                    (rollup.count, rollup.distance_m()),
                )
            })
        })
        .collect()
}

fn assert_exact(
    actual: &BTreeMap<(String, String), (u64, f64)>,
    expected: &BTreeMap<(String, String), (u64, f64)>,
) {
    assert_eq!(actual.len(), expected.len());
    for (key, (count, distance)) in expected {
        let (got_count, got_distance) = actual[key];
        assert_eq!(got_count, *count, "{key:?}");
        assert!(
            (got_distance - distance).abs() < 1e-6,
            "{key:?}: {got_distance} vs {distance}"
        );
    }
}

#[tokio::test]
async fn device_stats_are_exact_under_duplicates_and_a_crash_mid_batch() {
    let local = LocalStack::start(&Options::default())
        .await
        .expect("local stack");
    let config = geotag_stats::Config::from_lookup(|name| {
        local
            .stack
            .function("StatsFunction")
            .unwrap()
            .environment
            .get(name)
            .cloned()
    })
    .unwrap();
    let stats = Arc::new(geotag_stats::on_aws(&local.sdk, &config));

    // Telemetry written as ingest writes it, in three parts, the first twice
    // (a duplicate delivery: the same items again, MODIFY records).
    let telemetry = geotag_aws::DynamoReadingStore::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        local.stack.reference("TelemetryTable").unwrap(),
        3650,
    );
    let readings = readings();
    store_in_parts(
        &telemetry,
        &[
            &readings[..100],
            &readings[..100],
            &readings[100..200],
            &readings[200..],
        ],
    )
    .await;

    // The stats function, except that its first invocation applies half of
    // its batch to DeviceStats and then dies.
    let invocations = Arc::new(AtomicUsize::new(0));
    let crashed_after = Arc::new(Mutex::new(0usize));
    let event_names = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let invoker = {
        let (stats, invocations, crashed_after, event_names) = (
            Arc::clone(&stats),
            Arc::clone(&invocations),
            Arc::clone(&crashed_after),
            Arc::clone(&event_names),
        );
        Invoker::Closure(Arc::new(move |function, payload: Value| {
            let (stats, invocations, crashed_after, event_names) = (
                Arc::clone(&stats),
                Arc::clone(&invocations),
                Arc::clone(&crashed_after),
                Arc::clone(&event_names),
            );
            let binary = function.binary.clone();
            async move {
                if binary == "alerts" {
                    // Not under test here: acknowledge DeviceStats' changes.
                    return Ok(serde_json::json!({"batchItemFailures": []}));
                }
                if binary != "stats" {
                    return Err(anyhow!("only stats runs in this test"));
                }
                let event: Event = serde_json::from_value(payload)?;
                for record in &event.records {
                    *event_names.lock().unwrap().entry(record.event_name.to_string()).or_default() += 1;
                }
                if invocations.fetch_add(1, Ordering::SeqCst) == 0 {
                    let half = event.records.len() / 2;
                    let partial = geotag_stats::process(&stats, &event.records[..half]).await;
                    assert!(partial.failures.is_empty());
                    *crashed_after.lock().unwrap() = partial.items_written;
                    return Err(anyhow!("the function died after writing {} items", partial.items_written));
                }
                let outcome = geotag_stats::process(&stats, &event.records).await;
                Ok(serde_json::json!({
                    "batchItemFailures": outcome.failures.iter().map(|s| serde_json::json!({"itemIdentifier": s})).collect::<Vec<_>>()
                }))
            }
            .boxed()
        }))
    };
    let pump = Pump::start(&local.stack, &local.sdk, invoker);
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    let pump_stats = pump.stats.snapshot();
    pump.stop().await;

    assert!(
        *crashed_after.lock().unwrap() > 0,
        "the crash came after some items were written"
    );
    assert!(pump_stats["function errors"] >= 1, "{pump_stats:?}");
    // The duplicate writes are MODIFYs, which the filter keeps from stats
    // (the counter also holds DeviceStats rollup changes kept from alerts).
    assert!(
        pump_stats["stream records filtered out"] >= 100,
        "{pump_stats:?}"
    );
    assert_eq!(
        event_names
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["INSERT"],
        "only inserts reach stats"
    );
    assert_exact(&actual(&local, &readings).await, &expected(&readings));
}

#[tokio::test]
async fn a_batch_of_1000_readings_costs_one_write_per_device_and_bucket_at_the_wire() {
    // The template's batch size raised by parameter, as `sam deploy` would.
    let local = LocalStack::start(&Options {
        parameter_overrides: [("StatsBatchSize".to_owned(), "1000".to_owned())].into(),
        ..Options::default()
    })
    .await
    .expect("local stack");
    let environment = local
        .stack
        .function("StatsFunction")
        .unwrap()
        .environment
        .clone();
    let config = geotag_stats::Config::from_lookup(|name| environment.get(name).cloned()).unwrap();

    // 1,000 readings from 10 tags over 2 hours (08:00 to 09:59).
    let readings: Vec<Reading> = (0..1000)
        .map(|i| Reading {
            device_id: format!("tag-{:04}", i % 10),
            ts_ms: T0 + (i / 10) as i64 * 72_000,
            lat: 48.8 + (i / 10) as f64 * 1e-4,
            lon: 2.3 + (i % 10) as f64 * 0.01,
            alt: None,
            speed: Some(4.0),
            heading: None,
            battery: Some(80.0),
            accuracy: None,
            seq: Some(i as u64),
            owner: None,
            received_at_ms: None,
        })
        .collect();
    let telemetry = geotag_aws::DynamoReadingStore::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &config.telemetry_table,
        3650,
    );
    let report = telemetry
        .put_readings(&readings, Instant::now() + Duration::from_secs(60))
        .await;
    assert!(report.failed.is_empty());

    let counter = geotag_aws::request_count::RequestCounter::default();
    let client = counter.dynamodb(&local.sdk);
    let stats = Arc::new(geotag_stats::Stats {
        store: geotag_aws::DynamoStatsStore::new(client.clone(), &config.device_stats_table),
        telemetry: geotag_aws::DynamoTelemetryReader::new(client, &config.telemetry_table),
        metrics: geotag_runtime::emf::Emitter::for_binary("stats"),
    });
    let batch_sizes = Arc::new(Mutex::new(Vec::new()));
    let invoker = {
        let (stats, batch_sizes) = (Arc::clone(&stats), Arc::clone(&batch_sizes));
        Invoker::Closure(Arc::new(move |function, payload: Value| {
            let (stats, batch_sizes) = (Arc::clone(&stats), Arc::clone(&batch_sizes));
            let binary = function.binary.clone();
            async move {
                if binary == "alerts" {
                    // Not under test here: acknowledge DeviceStats' changes.
                    return Ok(serde_json::json!({"batchItemFailures": []}));
                }
                if binary != "stats" {
                    return Err(anyhow!("only stats runs in this test"));
                }
                let event: Event = serde_json::from_value(payload)?;
                batch_sizes.lock().unwrap().push(event.records.len());
                let outcome = geotag_stats::process(&stats, &event.records).await;
                assert!(outcome.failures.is_empty());
                Ok(serde_json::json!({}))
            }
            .boxed()
        }))
    };
    let pump = Pump::start(&local.stack, &local.sdk, invoker);
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    pump.stop().await;

    assert_eq!(
        *batch_sizes.lock().unwrap(),
        [1000],
        "one batch of 1,000 records"
    );
    // Per tag: `latest`, the hour 08:00 and the day = 30 items (09:00, its
    // latest state's hour, stays open until the tag moves on); 10 hours
    // read from Telemetry and 10 days' hours from DeviceStats; one
    // BatchGetItem for the 10 `latest` items.
    assert_eq!(counter.of("PutItem"), 30, "{:?}", counter.counts());
    assert_eq!(counter.of("BatchGetItem"), 1, "{:?}", counter.counts());
    assert_eq!(counter.of("Query"), 20, "{:?}", counter.counts());
    assert_eq!(counter.total(), 51, "{:?}", counter.counts());
    assert_exact(&actual(&local, &readings).await, &expected(&readings));
}

#[tokio::test]
async fn the_silence_index_finds_silent_devices_without_a_scan() {
    let (_local, table, client, store) = device_stats_stack().await;

    // 40 tags, last seen 0 to 78 minutes before T0; each also has rollups,
    // which the sparse index must not show.
    let mut writes = Vec::new();
    for i in 0..40i64 {
        let reading = position_only(&format!("tag-{i:04}"), T0 - i * 2 * 60_000);
        writes.extend(latest_and_hour(std::slice::from_ref(&reading)));
    }
    assert!(store.save(&writes).await.iter().all(Result::is_ok));

    // Silent for more than 30 minutes at T0: last seen before T0 - 30 min.
    let cutoff = T0 - 30 * 60_000;
    let mut silent = Vec::new();
    for shard in 0..geotag_aws::device_stats::SILENCE_SHARDS {
        let page = client
            .query()
            .table_name(&table)
            .index_name("SilenceIndex")
            .key_condition_expression("silence_shard = :shard AND last_seen < :cutoff")
            .expression_attribute_values(
                ":shard",
                aws_sdk_dynamodb::types::AttributeValue::N(shard.to_string()),
            )
            .expression_attribute_values(
                ":cutoff",
                aws_sdk_dynamodb::types::AttributeValue::N(cutoff.to_string()),
            )
            .send()
            .await
            .unwrap();
        for item in page.items.unwrap_or_default() {
            silent.push(item["device_id"].as_s().unwrap().clone());
        }
    }
    silent.sort();
    let expected: Vec<String> = (16..40).map(|i| format!("tag-{i:04}")).collect();
    assert_eq!(silent, expected);
}

#[tokio::test]
async fn the_fleet_index_lists_a_customers_tags_by_their_latest_readings_owner() {
    let (_local, table, client, store) = device_stats_stack().await;

    // tag-0000..2 are acme's, tag-0003 globex's, tag-0004 nobody's; tag-0005
    // was acme's and passed to globex within its hour.
    let owner_of = |device: usize, minute: i64| match (device, minute) {
        (0..=2, _) | (5, 0) => Some("acme".to_owned()),
        (3, _) | (5, _) => Some("globex".to_owned()),
        _ => None,
    };
    let mut writes = Vec::new();
    for device in 0..6 {
        let readings: Vec<Reading> = (0..2)
            .map(|minute| Reading {
                device_id: format!("tag-{device:04}"),
                ts_ms: T0 + minute * 60_000,
                lat: 48.0,
                lon: 2.0,
                alt: None,
                speed: None,
                heading: None,
                battery: Some(80.0),
                accuracy: None,
                seq: None,
                received_at_ms: None,
                owner: owner_of(device, minute),
            })
            .collect();
        writes.extend(latest_and_hour(&readings));
    }
    assert!(store.save(&writes).await.iter().all(Result::is_ok));

    let fleet = |customer: &'static str| {
        let client = client.clone();
        let table = table.clone();
        async move {
            let page = client
                .query()
                .table_name(&table)
                .index_name(geotag_aws::device_stats::FLEET_INDEX)
                .key_condition_expression("customer_id = :customer")
                .expression_attribute_values(
                    ":customer",
                    aws_sdk_dynamodb::types::AttributeValue::S(customer.into()),
                )
                .send()
                .await
                .unwrap();
            page.items
                .unwrap_or_default()
                .iter()
                .map(|item| {
                    assert_eq!(item["sk"].as_s().unwrap(), "latest", "only latest items");
                    item["device_id"].as_s().unwrap().clone()
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(fleet("acme").await, ["tag-0000", "tag-0001", "tag-0002"]);
    assert_eq!(fleet("globex").await, ["tag-0003", "tag-0005"]);

    // The hour tag-0005 changed hands in is neither customer's.
    let hour = Bucket::of(T0)[0].sort_key();
    let loaded = store
        .load(&[
            ("tag-0000".to_owned(), hour.clone()),
            ("tag-0004".to_owned(), hour.clone()),
            ("tag-0005".to_owned(), hour.clone()),
        ])
        .await
        .unwrap();
    let holder = |device: &str| match &loaded.items[&(device.to_owned(), hour.clone())].body {
        StatsBody::Rollup(_, rollup) => rollup.holder.clone(),
        StatsBody::Latest(_) => panic!("a rollup"),
    };
    use geotag::tenancy::Holder;
    assert_eq!(holder("tag-0000"), Holder::One(Some("acme".into())));
    assert_eq!(holder("tag-0004"), Holder::One(None));
    assert_eq!(holder("tag-0005"), Holder::Mixed);
}

#[tokio::test]
async fn an_item_that_does_not_parse_is_replaced_not_conflicted_on_forever() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    use geotag::store::SaveError;
    let (_local, table, client, store) = device_stats_stack().await;
    let hour = Bucket::of(T0)[0].sort_key();
    // Hand edits: a `latest` whose revision is a word and whose latitude
    // is a word; an hour whose count is a word.
    for item in [
        vec![
            ("sk", S("latest".into())),
            ("revision", S("seven".into())),
            ("lat", S("north".into())),
        ],
        vec![
            ("sk", S(hour.clone())),
            ("revision", N("5".into())),
            ("count", S("many".into())),
        ],
    ] {
        client
            .put_item()
            .table_name(&table)
            .item("device_id", S("tag-x".into()))
            .set_item(Some(
                item.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .chain([("device_id".to_owned(), S("tag-x".into()))])
                    .collect(),
            ))
            .send()
            .await
            .unwrap();
    }
    let keys = [
        ("tag-x".to_owned(), "latest".to_owned()),
        ("tag-x".to_owned(), hour.clone()),
    ];
    let loaded = store.load(&keys).await.unwrap();
    assert!(loaded.items.is_empty());
    assert_eq!(loaded.unreadable[&keys[0]], None);
    assert_eq!(loaded.unreadable[&keys[1]], Some(5));

    let reading = position_only("tag-x", T0);
    let writes = latest_and_hour(std::slice::from_ref(&reading));
    // Written as if absent (what stats did before), each write conflicts.
    assert!(
        store
            .save(&writes)
            .await
            .iter()
            .all(|result| *result == Err(SaveError::Conflict))
    );
    let replacing: Vec<_> = writes
        .into_iter()
        .map(|(item, _)| {
            let key = (item.device_id.clone(), item.body.sort_key());
            (item, Expected::of(&loaded, &key))
        })
        .collect();
    assert!(store.save(&replacing).await.iter().all(Result::is_ok));
    let reloaded = store.load(&keys).await.unwrap();
    assert_eq!(reloaded.items.len(), 2, "{reloaded:?}");
    assert!(reloaded.unreadable.is_empty());

    // A recomputed hour replaces one of fewer readings, never one of as many.
    let recomputed = |readings: &[Reading]| {
        let item = geotag::store::StatsItem::rollup(
            "tag-x",
            Bucket::of(T0)[0],
            geotag::stats::Rollup::of_readings(readings),
        );
        let expected = Expected::FewerReadings(item.revision);
        vec![(item, expected)]
    };
    let one = recomputed(std::slice::from_ref(&reading));
    assert_eq!(store.save(&one).await, [Err(SaveError::Conflict)]);
    let two = recomputed(&[reading.clone(), position_only("tag-x", T0 + 60_000)]);
    assert_eq!(store.save(&two).await, [Ok(())]);
    let hour_now = store.load(&keys[1..]).await.unwrap().items[&keys[1]].clone();
    assert_eq!(hour_now.revision, 2);
}

#[tokio::test]
async fn one_tag_through_concurrent_batches_and_a_shard_split_with_crashes_is_counted_exactly() {
    // Two batches of one shard in flight at once (by item, and every reading
    // is its own item), batches of 40, and a split after 300 records.
    let local = LocalStack::start(&Options {
        parameter_overrides: [
            ("StatsParallelizationFactor".to_owned(), "2".to_owned()),
            ("StatsBatchSize".to_owned(), "40".to_owned()),
        ]
        .into(),
        ..Options::default()
    })
    .await
    .expect("local stack");
    let stats_function = local.stack.function("StatsFunction").unwrap().clone();
    let config =
        geotag_stats::Config::from_lookup(|name| stats_function.environment.get(name).cloned())
            .unwrap();
    let stats = Arc::new(geotag_stats::on_aws(&local.sdk, &config));

    // A hot tag, 600 readings over three hours, and a quiet one; stored in
    // four deliveries, the second one again.
    let mut readings: Vec<Reading> = (0..600)
        .map(|i| Reading {
            lat: 48.8 + i as f64 * 1e-4,
            speed: Some(i as f64 % 11.0),
            battery: Some(90.0 - i as f64 * 0.05),
            ..position_only("tag-hot", T0 + i * 18_000)
        })
        .collect();
    readings.extend((0..30).map(|i| position_only("tag-quiet", T0 + i * 300_000)));
    fastrand::Rng::with_seed(3).shuffle(&mut readings);
    let telemetry = geotag_aws::DynamoReadingStore::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &config.telemetry_table,
        3650,
    );
    store_in_parts(
        &telemetry,
        &[
            &readings[..150],
            &readings[150..300],
            &readings[150..300],
            &readings[300..],
        ],
    )
    .await;

    // The stats function, slowed so that batches overlap, and dying after
    // half its batch on every third invocation.
    #[derive(Default)]
    struct Seen {
        invocations: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight_with_the_hot_tag: AtomicUsize,
        sequences: Mutex<Vec<String>>,
    }
    let seen = Arc::new(Seen::default());
    let invoker = {
        let (stats, seen) = (Arc::clone(&stats), Arc::clone(&seen));
        Invoker::Closure(Arc::new(move |function, payload: Value| {
            let (stats, seen) = (Arc::clone(&stats), Arc::clone(&seen));
            let binary = function.binary.clone();
            async move {
                if binary == "alerts" {
                    return Ok(serde_json::json!({"batchItemFailures": []}));
                }
                let event: Event = serde_json::from_value(payload)?;
                let hot = event
                    .records
                    .iter()
                    .filter_map(geotag_stats::reading_of)
                    .any(|r| r.device_id == "tag-hot");
                seen.sequences.lock().unwrap().extend(
                    event.records.iter().filter_map(|r| r.change.sequence_number.as_deref().map(str::to_owned)),
                );
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                if hot {
                    seen.most_in_flight_with_the_hot_tag.fetch_max(now, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                let result = if seen.invocations.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
                    let half = event.records.len() / 2;
                    geotag_stats::process(&stats, &event.records[..half]).await;
                    Err(anyhow!("the function died after half its batch"))
                } else {
                    let outcome = geotag_stats::process(&stats, &event.records).await;
                    Ok(serde_json::json!({
                        "batchItemFailures": outcome.failures.iter().map(|s| serde_json::json!({"itemIdentifier": s})).collect::<Vec<_>>()
                    }))
                };
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                result
            }
            .boxed()
        }))
    };
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        invoker,
        geotag_local_cloud::pump::PumpOptions {
            split_shards_after: Some(300),
            ..Default::default()
        },
    );
    pump.wait_drained(Duration::from_secs(180)).await.unwrap();
    let pump_stats = pump.stats.snapshot();
    pump.stop().await;

    assert!(pump_stats["function errors"] >= 3, "{pump_stats:?}");
    assert_eq!(pump_stats["stream records given up"], 0, "{pump_stats:?}");
    assert!(
        seen.most_in_flight_with_the_hot_tag.load(Ordering::SeqCst) >= 2,
        "batches holding the hot tag ran concurrently"
    );
    let sequences = seen.sequences.lock().unwrap().clone();
    for child in ["1", "2"] {
        assert!(
            sequences
                .iter()
                .any(|s| s.len() == 21 && s.starts_with(child)),
            "child shard {child} was read"
        );
    }
    assert_exact(&actual(&local, &readings).await, &expected(&readings));
    let store = geotag_aws::DynamoStatsStore::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &config.device_stats_table,
    );
    let latest = store
        .load(&[("tag-hot".to_owned(), "latest".to_owned())])
        .await
        .unwrap();
    match &latest.items.values().next().map(|item| &item.body) {
        Some(StatsBody::Latest(state)) => assert_eq!(state.ts_ms, T0 + 599 * 18_000),
        other => panic!("{other:?}"),
    }
}
