//! The events every benchmark runs on, Rust and Python alike: a fleet's
//! readings as SQS batches for ingest, the Telemetry stream for stats, and
//! DeviceStats `latest` changes for alerts. Deterministic for a seed, so that
//! both languages see the same bytes.

use geotag::Reading;
use geotag::geofence::{Geofence, Shape};
use geotag::store::{MemoryStatsStore, StatsBody};
use geotag_aws::device_stats::stats_item;
use geotag_aws::stream::StreamRecord;
use geotag_aws::telemetry::reading_item;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The clock every benchmark runs at: 2026-11-21T08:00:00Z.
pub const NOW_MS: i64 = 1_795_248_000_000;
/// Telemetry retention the events are stored with (the template's default).
pub const RETENTION_DAYS: u32 = 30;
const REGION: &str = "eu-west-1";
const QUEUE_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:geotag-ingest";
const TELEMETRY_STREAM: &str =
    "arn:aws:dynamodb:eu-west-1:123456789012:table/geotag-telemetry/stream/2026-11-20T00:00:00.000";
const STATS_STREAM: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/geotag-device-stats/stream/2026-11-20T00:00:00.000";
/// The depot the fleet drives around, and a zone on its edge the tags cross.
pub const DEPOT: (f64, f64) = (48.8566, 2.3522);

/// `per_device` readings a minute apart for each of `devices` tags, ending
/// five minutes before [`NOW_MS`], in time order across the fleet (as a
/// stream shard interleaves them). Values are rounded as firmware sends them.
pub fn fleet(devices: usize, per_device: usize, seed: u64) -> Vec<Reading> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = NOW_MS - 300_000 - per_device as i64 * 60_000;
    let mut tracks: Vec<Vec<Reading>> = (0..devices)
        .map(|device| {
            let device_id = format!("tag-{device:05}");
            let heading = rng.f64() * 360.0;
            let speed = if device % 4 == 0 {
                0.0
            } else {
                2.0 + rng.f64() * 12.0
            };
            let (mut lat, mut lon) = (
                DEPOT.0 + (rng.f64() - 0.5) * 0.02,
                DEPOT.1 + (rng.f64() - 0.5) * 0.03,
            );
            let mut battery = 40.0 + rng.f64() * 60.0;
            (0..per_device)
                .map(|i| {
                    let metres = speed * 60.0;
                    lat += metres * heading.to_radians().cos() / 111_320.0;
                    lon +=
                        metres * heading.to_radians().sin() / (111_320.0 * lat.to_radians().cos());
                    battery = (battery - 0.05).max(0.0);
                    Reading {
                        device_id: device_id.clone(),
                        ts_ms: start + i as i64 * 60_000 + rng.i64(0..1000),
                        lat: round(lat, 6),
                        lon: round(lon, 6),
                        alt: Some(round(35.0 + rng.f64() * 5.0, 1)),
                        speed: Some(round(speed + rng.f64() * 0.5, 2)),
                        heading: Some(round(heading, 1)),
                        battery: Some(round(battery, 1)),
                        accuracy: Some(round(3.0 + rng.f64() * 5.0, 1)),
                        seq: Some(i as u64),
                        received_at_ms: None,
                        owner: None,
                    }
                })
                .collect()
        })
        .collect();
    let mut readings: Vec<Reading> = tracks.iter_mut().flat_map(std::mem::take).collect();
    readings.sort_by(|a, b| (a.ts_ms, &a.device_id).cmp(&(b.ts_ms, &b.device_id)));
    readings
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn wire_fields(reading: &Reading) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("ts".into(), json!(reading.ts_ms));
    fields.insert("lat".into(), json!(reading.lat));
    fields.insert("lon".into(), json!(reading.lon));
    for (name, value) in [
        ("alt", reading.alt),
        ("speed", reading.speed),
        ("heading", reading.heading),
        ("battery", reading.battery),
        ("accuracy", reading.accuracy),
    ] {
        if let Some(value) = value {
            fields.insert(name.into(), json!(value));
        }
    }
    if let Some(seq) = reading.seq {
        fields.insert("seq".into(), json!(seq));
    }
    fields
}

/// A device's message: one reading, or a batch of several of one tag.
pub fn device_message(readings: &[Reading]) -> String {
    match readings {
        [one] => {
            let mut fields = wire_fields(one);
            fields.insert("device_id".into(), json!(one.device_id));
            Value::Object(fields).to_string()
        }
        _ => json!({
            "device_id": readings.first().map(|r| r.device_id.as_str()).unwrap_or_default(),
            "readings": readings.iter().map(|r| Value::Object(wire_fields(r))).collect::<Vec<_>>(),
        })
        .to_string(),
    }
}

/// The edge envelopes of device messages of `per_message` readings each (a
/// tag's consecutive readings), as IoT Core's topic rule publishes them,
/// received a second before the event, and how many readings each carries.
pub fn messages(readings: &[Reading], per_message: usize) -> Vec<(String, usize)> {
    let mut by_device: std::collections::BTreeMap<&str, Vec<Reading>> = Default::default();
    for reading in readings {
        by_device
            .entry(&reading.device_id)
            .or_default()
            .push(reading.clone());
    }
    let mut out = Vec::new();
    for track in by_device.values() {
        out.extend(track.chunks(per_message.max(1)).map(|chunk| {
            let payload = device_message(chunk);
            let thing = &chunk[0].device_id;
            (
                geotag::edge_envelope(thing, NOW_MS - 1_000, payload.as_bytes()),
                chunk.len(),
            )
        }));
    }
    out
}

/// An SQS event as Lambda delivers it to ingest, bodies raw (the template's
/// subscription uses raw message delivery).
pub fn sqs_event(bodies: &[String]) -> String {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(index, body)| {
            json!({
                "messageId": format!("{:08x}-5c1f-4d7e-9a43-{:012x}", index, index * 7919),
                "receiptHandle": format!("AQEB{}", "x".repeat(100)),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": (NOW_MS - 2_000).to_string(),
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": (NOW_MS - 1_000).to_string(),
                },
                "messageAttributes": {},
                "md5OfBody": "7b270e59b47ff90a553787216d55d91d",
                "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN,
                "awsRegion": REGION,
            })
        })
        .collect();
    json!({ "Records": records }).to_string()
}

/// The ingest event of `records` messages of `per_message` readings each,
/// and the number of readings in it.
pub fn ingest_event(records: usize, per_message: usize, seed: u64) -> (String, usize) {
    let devices = records.div_ceil(10).max(1);
    let per_device = (records * per_message).div_ceil(devices);
    let readings = fleet(devices, per_device, seed);
    let mut bodies = messages(&readings, per_message);
    bodies.truncate(records);
    let count = bodies.iter().map(|(_, readings)| readings).sum();
    let bodies: Vec<String> = bodies.into_iter().map(|(body, _)| body).collect();
    (sqs_event(&bodies), count)
}

/// The Telemetry stream records of `readings` (INSERTs, new image only).
pub fn telemetry_stream_event(readings: &[Reading]) -> String {
    telemetry_stream_event_from(readings, 0)
}

/// The same, numbering the records from `first`: a shard's later batch.
pub fn telemetry_stream_event_from(readings: &[Reading], first: usize) -> String {
    let records: Vec<Value> = readings
        .iter()
        .enumerate()
        .map(|(offset, reading)| {
            let index = first + offset;
            let item = reading_item(reading, RETENTION_DAYS, reading.ts_ms);
            stream_record(
                index,
                "INSERT",
                TELEMETRY_STREAM,
                json!({"device_id": item["device_id"].as_s().ok(), "sk": item["sk"].as_s().ok()}),
                None,
                item_json(&item),
                "NEW_IMAGE",
            )
        })
        .collect();
    json!({ "Records": records }).to_string()
}

fn stream_record(
    index: usize,
    name: &str,
    stream_arn: &str,
    keys: Value,
    old: Option<Value>,
    new: Value,
    view: &str,
) -> Value {
    let keys = json!({"device_id": {"S": keys["device_id"]}, "sk": {"S": keys["sk"]}});
    let mut change = json!({
        "ApproximateCreationDateTime": (NOW_MS / 1000) as f64,
        "Keys": keys,
        "NewImage": new,
        "SequenceNumber": format!("{:021}", 100_000_000_000_000_000_000u128 + index as u128 * 100),
        "SizeBytes": 180,
        "StreamViewType": view,
    });
    if let Some(old) = old {
        change["OldImage"] = old;
    }
    json!({
        "eventID": format!("{index:032x}"),
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "eventSourceARN": stream_arn,
        "dynamodb": change,
    })
}

/// The DeviceStats `latest` changes that stats writes for `readings` when
/// they arrive in stream batches of `batch` records: computed by running the
/// stats function itself on in-memory stores. One record per tag and batch.
pub fn latest_changes_event(readings: &[Reading], batch: usize) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let stats = geotag_stats::Stats {
        store: MemoryStatsStore::default(),
        telemetry: geotag::store::MemoryReadingStore::default(),
        metrics: geotag_runtime::emf::Emitter::for_binary("stats")
            .with_sink(geotag_runtime::emf::Sink::Discard),
    };
    let mut records = Vec::new();
    for (number, chunk) in readings.chunks(batch.max(1)).enumerate() {
        let before = latest_images(&stats.store);
        let event: geotag_aws::telemetry::TelemetryStreamEvent =
            serde_json::from_str(&telemetry_stream_event_from(chunk, number * batch.max(1)))
                .expect("a stream event");
        runtime.block_on(geotag_stats::process(&stats, &event.records));
        for (device, new) in latest_images(&stats.store) {
            let old = before.get(&device).cloned();
            if old.as_ref() == Some(&new) {
                continue;
            }
            let name = if old.is_some() { "MODIFY" } else { "INSERT" };
            records.push(stream_record(
                records.len(),
                name,
                STATS_STREAM,
                json!({"device_id": device, "sk": "latest"}),
                old,
                new,
                "NEW_AND_OLD_IMAGES",
            ));
        }
    }
    json!({ "Records": records }).to_string()
}

fn latest_images(store: &MemoryStatsStore) -> std::collections::BTreeMap<String, Value> {
    store
        .items()
        .into_iter()
        .filter(|item| matches!(item.body, StatsBody::Latest(_)))
        .map(|item| (item.device_id.clone(), item_json(&stats_item(&item))))
        .collect()
}

/// The geofences the alerts benchmark judges against: the depot, and a
/// corridor to its north-east that part of the fleet drives through.
pub fn geofences() -> Vec<Geofence> {
    vec![
        Geofence {
            id: "depot".into(),
            name: "Depot".into(),
            customer_id: None,
            shape: Shape::Circle {
                lat: DEPOT.0,
                lon: DEPOT.1,
                radius_m: 600.0,
            },
        },
        Geofence {
            id: "north-east".into(),
            name: "North-east corridor".into(),
            customer_id: None,
            shape: Shape::Polygon {
                ring: vec![
                    (DEPOT.0 + 0.004, DEPOT.1 + 0.004),
                    (DEPOT.0 + 0.004, DEPOT.1 + 0.04),
                    (DEPOT.0 + 0.03, DEPOT.1 + 0.04),
                    (DEPOT.0 + 0.03, DEPOT.1 + 0.004),
                ],
            },
        },
    ]
}

/// An item as a stream image: DynamoDB JSON.
fn item_json(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Value {
    let item: serde_dynamo::Item = item.clone().into();
    serde_json::to_value(item).expect("an item serializes")
}

/// Parses an event the way the runtime does, for the benches' setup.
pub fn stream_records<I: DeserializeOwned + Default>(event: &str) -> Vec<StreamRecord<I>> {
    serde_json::from_str::<geotag_aws::stream::StreamEvent<I>>(event)
        .expect("a stream event")
        .records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reading_of_the_events_is_valid_and_counted() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let ingest = crate::fixtures::ingest();
        for (records, per_message) in [(10, 1), (100, 50)] {
            let (event, readings) = ingest_event(records, per_message, 7);
            let event: geotag_ingest::IngestEvent =
                serde_json::from_str(&event).expect("an SQS event");
            assert_eq!(event.records.len(), records);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let outcome = runtime
                .block_on(geotag_ingest::process(&ingest, &event.records, deadline))
                .expect("answerable");
            assert_eq!(outcome.readings_stored, readings);
            assert_eq!(readings, records * per_message);
            assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        }
    }

    #[test]
    fn latest_changes_carry_old_and_new_images_for_the_alerts() {
        let readings = fleet(4, 30, 1);
        let records = stream_records(&latest_changes_event(&readings, 20));
        // 120 readings in 6 stream batches: each tag changes in each batch.
        assert_eq!(records.len(), 4 * 6);
        assert_eq!(
            records.iter().filter(|r| r.event_name == "INSERT").count(),
            4
        );
        let alerts = crate::fixtures::alerts(readings.iter().map(|r| r.device_id.clone()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let outcome = runtime.block_on(geotag_alerts::process_stream_leased(
            &alerts,
            &records,
            NOW_MS + 60_000,
        ));
        assert!(outcome.failures.is_empty());
        assert_eq!(outcome.ignored, 0);
    }
}
