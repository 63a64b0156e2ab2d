//! The alerts handler's stream path with in-memory registry, log and topic:
//! each alert published once, under duplicates and failed publishes, to the
//! right customer.

use geotag::alerts::{AlertKind, Thresholds};
use geotag::geofence::{Geofence, Shape};
use geotag::store::MemoryRegistry;
use geotag_alerts::{process_schedule, process_stream, process_stream_leased};
use geotag_aws::device_stats::DeviceStatsStreamRecord;
use serde_json::{Value, json};

const T0: i64 = 1_795_161_600_000; // 2026-11-20T08:00:00Z

/// A `latest` image as DeviceStats stores it.
fn latest(device: &str, minute: i64, lat: f64, battery: f64, speed: f64, version: u64) -> Value {
    let ts = T0 + minute * 60_000;
    json!({
        "device_id": {"S": device}, "sk": {"S": "latest"}, "revision": {"N": "1"}, "kind": {"S": "latest"},
        "ts": {"N": ts.to_string()}, "reading_key": {"S": format!("k{minute:04}")},
        "lat": {"N": lat.to_string()}, "lon": {"N": "2.0"}, "speed": {"N": speed.to_string()},
        "battery": {"N": battery.to_string()}, "battery_ts": {"N": ts.to_string()},
        "version": {"N": version.to_string()}, "silence_shard": {"N": "1"}, "last_seen": {"N": ts.to_string()},
    })
}

fn record(sequence: u64, old: Option<Value>, new: Value) -> DeviceStatsStreamRecord {
    let mut change = json!({
        "ApproximateCreationDateTime": 1_795_161_600.0,
        "Keys": {"device_id": new["device_id"].clone(), "sk": {"S": "latest"}},
        "NewImage": new,
        "SequenceNumber": sequence.to_string(),
        "SizeBytes": 200,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    let name = if old.is_some() { "MODIFY" } else { "INSERT" };
    if let Some(old) = old {
        change["OldImage"] = old;
    }
    serde_json::from_value(json!({
        "eventID": format!("e{sequence}"), "eventName": name, "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "us-east-1", "dynamodb": change,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/stats/stream/s",
    }))
    .unwrap()
}

fn sequence_of(record: &DeviceStatsStreamRecord) -> u64 {
    record
        .change
        .sequence_number
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// A track of states, as consecutive stream records (old image = previous state).
fn track(
    device: &str,
    first_sequence: u64,
    states: &[(f64, f64, f64)],
) -> Vec<DeviceStatsStreamRecord> {
    let mut previous: Option<Value> = None;
    states
        .iter()
        .enumerate()
        .map(|(i, (lat, battery, speed))| {
            let new = latest(device, i as i64, *lat, *battery, *speed, i as u64 + 1);
            let record = record(
                first_sequence + i as u64 * 10,
                previous.clone(),
                new.clone(),
            );
            previous = Some(new);
            record
        })
        .collect()
}

fn zone(id: &str, customer: Option<&str>) -> Geofence {
    Geofence {
        id: id.into(),
        name: format!("Zone {id}"),
        customer_id: customer.map(str::to_owned),
        shape: Shape::Circle {
            lat: 48.0,
            lon: 2.0,
            radius_m: 500.0,
        },
    }
}

type Memory = geotag_alerts::InMemory;

fn alerts() -> Memory {
    let registry = MemoryRegistry::default();
    registry.customers_of.lock().unwrap().extend([
        ("tag-a".to_owned(), "acme".to_owned()),
        ("tag-b".to_owned(), "globex".to_owned()),
    ]);
    registry.thresholds_of.lock().unwrap().insert(
        "globex".into(),
        Thresholds {
            battery_low_pct: 50.0,
            ..Thresholds::default()
        },
    );
    registry
        .geofences
        .lock()
        .unwrap()
        .extend([zone("depot", None), zone("acme-yard", Some("acme"))]);
    geotag_alerts::in_memory(
        registry,
        [
            "arn:aws:events:us-east-1:123456789012:rule/silence",
            "arn:aws:events:us-east-1:123456789012:rule/audit",
        ],
    )
}

/// The alerts of one kind published so far, in order.
fn published_of(alerts: &Memory, kind: AlertKind) -> Vec<geotag::alerts::Alert> {
    let mut published = alerts.sink.published();
    published.retain(|alert| alert.kind == kind);
    published
}

fn published(alerts: &Memory) -> Vec<(String, AlertKind, Option<String>)> {
    alerts
        .sink
        .published()
        .into_iter()
        .map(|a| (a.device_id, a.kind, a.geofence.map(|g| g.0)))
        .collect()
}

#[tokio::test]
async fn a_crossing_raises_enter_and_exit_once_for_each_zone_that_applies() {
    let alerts = alerts();
    // In, then out of both zones (same circle): acme's tag sees its own zone and
    // the global one; globex's tag only the global one; an unregistered tag too.
    let path = [(47.9, 90.0, 5.0), (48.0, 90.0, 5.0), (48.1, 90.0, 5.0)];
    let mut records = track("tag-a", 100, &path);
    records.extend(track("tag-b", 200, &path));
    records.extend(track("tag-z", 300, &path));
    let outcome = process_stream(&alerts, &records).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    let mut got = published(&alerts);
    got.sort();
    let enter = AlertKind::GeofenceEnter;
    let exit = AlertKind::GeofenceExit;
    let zone = |z: &str| Some(z.to_owned());
    assert_eq!(
        got,
        [
            ("tag-a".into(), enter, zone("acme-yard")),
            ("tag-a".into(), enter, zone("depot")),
            ("tag-a".into(), exit, zone("acme-yard")),
            ("tag-a".into(), exit, zone("depot")),
            ("tag-b".into(), enter, zone("depot")),
            ("tag-b".into(), exit, zone("depot")),
            ("tag-z".into(), enter, zone("depot")),
            ("tag-z".into(), exit, zone("depot")),
        ]
    );
    let customers: Vec<(String, Option<String>)> = (alerts.sink.published().into_iter())
        .map(|a| (a.device_id, a.customer_id))
        .collect();
    assert!(customers.contains(&("tag-b".into(), Some("globex".into()))));
    assert!(
        customers.contains(&("tag-z".into(), None)),
        "unregistered tags still raise operator alerts"
    );

    // The same records again (a retried batch, duplicates): nothing new.
    let again = process_stream(&alerts, &records).await;
    assert_eq!((again.published(), again.already_published), (0, 8));
    assert_eq!(alerts.sink.published().len(), 8);
}

#[tokio::test]
async fn a_failed_publish_is_retried_and_published_once() {
    let alerts = alerts();
    let records = track("tag-a", 100, &[(47.9, 90.0, 5.0), (48.0, 90.0, 5.0)]);
    alerts.sink.fail_next_publishes(1);
    let first = process_stream(&alerts, &records).await;
    assert_eq!(
        first.failures,
        ["110"],
        "the record whose alert failed is retried: {first:?}"
    );
    let published_first = alerts.sink.published().len();
    // Lambda retries from the failed record.
    let retry = process_stream(&alerts, &records[1..]).await;
    assert!(retry.failures.is_empty());
    let mut ids: Vec<_> = alerts.sink.published().into_iter().map(|a| a.id).collect();
    assert_eq!(
        ids.len(),
        2,
        "both zones' enter alerts, each once (first try published {published_first})"
    );
    ids.dedup();
    assert_eq!(ids.len(), 2);
}

#[tokio::test]
async fn battery_uses_the_customers_threshold_once_per_crossing() {
    let alerts = alerts();
    // acme uses the default 20%, globex 50%.
    let levels = [
        (47.0, 60.0, 0.0),
        (47.0, 45.0, 0.0),
        (47.0, 30.0, 0.0),
        (47.0, 15.0, 0.0),
        (47.0, 10.0, 0.0),
    ];
    let mut records = track("tag-a", 100, &levels);
    records.extend(track("tag-b", 200, &levels));
    assert!(process_stream(&alerts, &records).await.failures.is_empty());
    let battery: Vec<_> = published_of(&alerts, AlertKind::BatteryLow)
        .into_iter()
        .map(|a| (a.device_id, a.subject))
        .collect();
    assert_eq!(
        battery,
        [
            ("tag-a".to_owned(), "tag-a battery at 15%".to_owned()),
            ("tag-b".to_owned(), "tag-b battery at 45%".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_speeding_episode_spanning_batches_raises_one_alert() {
    let alerts = alerts();
    // 40 m/s (144 km/h) from minute 1; the default grace is one minute.
    let speeds: Vec<(f64, f64, f64)> = [5.0, 40.0, 40.0, 42.0, 41.0, 3.0]
        .iter()
        .map(|s| (47.0, 90.0, *s))
        .collect();
    let records = track("tag-a", 100, &speeds);
    for batch in records.chunks(2) {
        assert!(process_stream(&alerts, batch).await.failures.is_empty());
    }
    let speeding: Vec<_> = alerts
        .sink
        .published()
        .into_iter()
        .filter(|a| a.kind == AlertKind::Speeding)
        .collect();
    assert_eq!(speeding.len(), 1, "{speeding:?}");
    assert_eq!(speeding[0].id, format!("speeding#tag-a#{}", T0 + 60_000));
    assert_eq!(speeding[0].at_ms, T0 + 2 * 60_000);
}

/// Lambda retries a stream batch from its lowest failed record, whatever the
/// device: the records after it are replayed, including another device's,
/// whose speeding episode was already alerted on and then ended (and saved).
#[tokio::test]
async fn a_retry_from_another_devices_failure_does_not_alert_a_replayed_episode_again() {
    let alerts = alerts();
    // tag-b: 40 m/s from minute 1 (due at minute 2), back under at minute 4.
    let speeds: Vec<(f64, f64, f64)> = [5.0, 40.0, 40.0, 42.0, 3.0]
        .iter()
        .map(|s| (47.0, 90.0, *s))
        .collect();
    let mut records = track("tag-b", 100, &speeds);
    // tag-a's battery crossing at sequence 115, between tag-b's minutes 1 and 2;
    // its publish fails, so the retry starts there.
    records.extend(track("tag-a", 105, &[(47.0, 60.0, 0.0), (47.0, 15.0, 0.0)]));
    records.sort_by_key(sequence_of);
    alerts.sink.fail_next_publishes(1);
    let first = process_stream(&alerts, &records).await;
    assert_eq!(first.failures, ["115"], "{first:?}");
    let retry: Vec<_> = records
        .iter()
        .filter(|r| sequence_of(r) >= 115)
        .cloned()
        .collect();
    assert!(process_stream(&alerts, &retry).await.failures.is_empty());
    let speeding: Vec<String> = published_of(&alerts, AlertKind::Speeding)
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(speeding, [format!("speeding#tag-b#{}", T0 + 60_000)]);
    let battery = alerts
        .sink
        .published()
        .into_iter()
        .filter(|a| a.kind == AlertKind::BatteryLow)
        .count();
    assert_eq!(battery, 1, "tag-a's alert, published by the retry");
}

#[tokio::test]
async fn a_visit_folded_into_one_stats_write_is_seen_through_the_trail() {
    let alerts = alerts();
    // One record: the tag was outside, then one stats batch took it in and out
    // again. The ends are both outside; the trail shows the visit.
    let old = latest("tag-b", 0, 47.9, 90.0, 5.0, 1);
    let mut new = latest("tag-b", 3, 48.1, 90.0, 5.0, 2);
    let point = |minute: i64, lat: f64| {
        json!({"M": {"t": {"N": (T0 + minute * 60_000).to_string()}, "k": {"S": format!("k{minute:04}")},
                      "la": {"N": lat.to_string()}, "lo": {"N": "2.0"}, "s": {"N": "5"}, "b": {"N": "90"}}})
    };
    new["trail"] = json!({"L": [point(1, 48.0), point(2, 48.0), point(3, 48.1)]});
    let outcome = process_stream(&alerts, &[record(100, Some(old), new)]).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    let ids: Vec<_> = alerts.sink.published().into_iter().map(|a| a.id).collect();
    assert_eq!(
        ids,
        [
            "geofence_enter#tag-b#depot#k0001",
            "geofence_exit#tag-b#depot#k0003"
        ]
    );
}

/// The alert the first two states of `track("tag-b", 100, ...)` raise, as
/// another invocation would have claimed it.
fn tag_b_enters_the_depot() -> geotag::alerts::Alert {
    geotag::alerts::Alert {
        id: "geofence_enter#tag-b#depot#k0001".into(),
        kind: AlertKind::GeofenceEnter,
        device_id: "tag-b".into(),
        customer_id: Some("globex".into()),
        at_ms: T0,
        geofence: None,
        subject: String::new(),
        text: String::new(),
    }
}

#[tokio::test]
async fn a_claim_held_by_a_concurrent_invocation_is_retried_not_published_twice() {
    let alerts = alerts();
    let records = track("tag-b", 100, &[(47.9, 90.0, 5.0), (48.0, 90.0, 5.0)]);
    // Another invocation claimed the enter alert and is still publishing it.
    let enter = "geofence_enter#tag-b#depot#k0001".to_owned();
    use geotag::store::AlertLog as _;
    let raised = tag_b_enters_the_depot();
    let far_future = geotag::clock::now_ms() + 3_600_000;
    alerts.log.claim(&raised, far_future).await.unwrap();
    // This invocation has 4 s: it polls the claim for a second, then gives
    // the record back for a retry.
    let started = std::time::Instant::now();
    let busy = process_stream_leased(&alerts, &records, geotag::clock::now_ms() + 4_000).await;
    assert_eq!(busy.failures, ["110"], "{busy:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(alerts.sink.published().is_empty());
    // The other invocation publishes and marks it; the retry then skips it.
    alerts.log.mark_published(&enter).await.unwrap();
    let retry = process_stream(&alerts, &records[1..]).await;
    assert!(retry.failures.is_empty());
    assert_eq!((retry.published(), retry.already_published), (0, 1));
}

#[tokio::test]
async fn the_claim_of_an_invocation_that_died_is_taken_over_when_its_lease_ends() {
    let alerts = alerts();
    let records = track("tag-b", 100, &[(47.9, 90.0, 5.0), (48.0, 90.0, 5.0)]);
    use geotag::store::AlertLog as _;
    let raised = tag_b_enters_the_depot();
    // Claimed by an invocation that then died; its lease ends in 300 ms.
    alerts
        .log
        .claim(&raised, geotag::clock::now_ms() + 300)
        .await
        .unwrap();
    let outcome = process_stream(&alerts, &records).await;
    assert!(outcome.failures.is_empty(), "{outcome:?}");
    assert_eq!(outcome.published(), 1);
    assert_eq!(alerts.sink.published()[0].id, raised.id);
}

#[tokio::test]
async fn the_schedule_raises_silence_once_per_quiet_period_with_each_customers_threshold() {
    let alerts = alerts();
    alerts.registry.thresholds_of.lock().unwrap().insert(
        "acme".into(),
        Thresholds {
            silence_after_ms: 10 * 60_000,
            ..Thresholds::default()
        },
    );
    let now = T0 + 3_600_000;
    alerts.silence.last_seen.lock().unwrap().extend([
        // acme: 10 minutes; 15 quiet: silent.
        ("tag-a".to_owned(), now - 15 * 60_000),
        // globex: the default 30; 15 quiet: not yet.
        ("tag-b".to_owned(), now - 15 * 60_000),
        // unregistered, default 30; 45 quiet: silent.
        ("tag-z".to_owned(), now - 45 * 60_000),
        // silent for days: alerted long ago, outside the window.
        ("tag-old".to_owned(), now - 5 * 86_400_000),
        // seen a minute ago.
        ("tag-c".to_owned(), now - 60_000),
    ]);
    let lease = geotag::clock::now_ms() + 60_000;
    let first = process_schedule(&alerts, now, lease).await.unwrap();
    assert_eq!(
        (first.silent, first.published(), first.undelivered),
        (2, 2, 0)
    );
    let got: Vec<_> = alerts
        .sink
        .published()
        .into_iter()
        .map(|a| (a.device_id, a.kind, a.customer_id))
        .collect();
    assert_eq!(
        got,
        [
            ("tag-a".into(), AlertKind::Silence, Some("acme".into())),
            ("tag-z".into(), AlertKind::Silence, None)
        ]
    );
    // The next run, five minutes later: the same quiet periods, nothing new.
    let next = process_schedule(&alerts, now + 5 * 60_000, lease)
        .await
        .unwrap();
    assert_eq!((next.published(), next.already_published), (0, 2));
    // tag-a reports again, then falls silent again: a new period, a new alert.
    alerts
        .silence
        .last_seen
        .lock()
        .unwrap()
        .insert("tag-a".into(), now + 10 * 60_000);
    // Meanwhile tag-b passes globex's 30 minutes.
    let later = process_schedule(&alerts, now + 25 * 60_000, lease)
        .await
        .unwrap();
    assert_eq!((later.published(), later.already_published), (2, 1));
    let devices: Vec<_> = alerts.sink.published()[2..]
        .iter()
        .map(|a| a.device_id.clone())
        .collect();
    assert_eq!(devices, ["tag-a", "tag-b"]);
    // A publish that fails makes the run fail (EventBridge retries it) and
    // the retry publishes it.
    alerts
        .silence
        .last_seen
        .lock()
        .unwrap()
        .insert("tag-c".into(), now + 60_000);
    alerts.sink.fail_next_publishes(1);
    let failed = process_schedule(&alerts, now + 40 * 60_000, lease)
        .await
        .unwrap();
    assert_eq!(failed.undelivered, 1);
    let retried = process_schedule(&alerts, now + 40 * 60_000, lease)
        .await
        .unwrap();
    assert_eq!((retried.undelivered, retried.published()), (0, 1));
}
