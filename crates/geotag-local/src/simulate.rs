//! The device simulator: a fleet of tags publishing realistic tracks.
//!
//! [`plan`] decides, deterministically from a seed, every message the fleet
//! sends and what the pipeline should make of it ([`Expected`]); [`publish`]
//! sends the messages to the telemetry topic. Keeping the two apart lets the
//! demo and the tests audit the pipeline against the plan, not against itself.
//!
//! The fleet mixes the behaviours a real one shows:
//! - **moving** tags drive at 5 to 30 m/s with a wandering heading;
//! - **parked** tags stay put, their fixes jittering within their accuracy;
//! - **buffered** tags lose connectivity and send what they stored as one
//!   batch message, late, with the readings in reverse order;
//! - **silent** tags stop reporting part-way through the run;
//! - **crossing** tags walk due east straight through the [`DEPOT`] zone,
//!   entering and leaving it mid-run (the plan records when);
//! - every tag's battery drains, some below 20%.
//!
//! On request, a share of messages is malformed (each kind with the reason
//! code ingest must give it) and a share is published twice.

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_sns::types::PublishBatchRequestEntry;
use geotag::geo::{destination, distance_m as haversine_m};
use geotag::{Reading, Reason};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub devices: usize,
    /// Readings each tag takes (a silent tag stops early).
    pub readings_per_device: usize,
    /// Seconds between a tag's readings.
    pub interval_secs: u64,
    /// Share of messages replaced by a malformed one, in [0, 1].
    pub bad_ratio: f64,
    /// Share of messages published a second time, in [0, 1].
    pub dup_ratio: f64,
    pub seed: u64,
    /// Time of the last reading, epoch ms (the run ends "now").
    pub end_ms: i64,
}

/// The kind of each tag, by its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behaviour {
    Moving,
    Crossing,
    Parked,
    Buffered,
    Silent,
}

impl Behaviour {
    fn of(index: usize) -> Behaviour {
        match index % 10 {
            0..=4 => Behaviour::Moving,
            5 => Behaviour::Crossing,
            6 | 7 => Behaviour::Parked,
            8 => Behaviour::Buffered,
            _ => Behaviour::Silent,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Moving => "moving",
            Behaviour::Crossing => "crossing",
            Behaviour::Parked => "parked",
            Behaviour::Buffered => "buffered",
            Behaviour::Silent => "silent",
        }
    }
}

/// A circular zone the crossing tags pass through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zone {
    pub id: &'static str,
    pub name: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

/// The depot the crossing tags walk through: 500 m around the Louvre.
pub const DEPOT: Zone = Zone {
    id: "depot",
    name: "Central depot",
    lat: 48.8606,
    lon: 2.3376,
    radius_m: 500.0,
};

/// Crossing tags start this far west of the depot's centre and cover twice
/// the distance over the run, so they are inside it around mid-run.
const CROSSING_APPROACH_M: f64 = 3_000.0;

/// When a crossing tag's readings first fall inside, then outside, a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub device_id: String,
    pub zone: &'static str,
    /// Time of the first reading inside the zone.
    pub entered_ms: i64,
    /// Time of the first reading outside it again.
    pub left_ms: i64,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: String,
    /// The reason ingest must refuse it with; `None` for a valid message.
    pub expected_rejection: Option<Reason>,
}

/// What the pipeline should end up with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// Valid readings per device (each once, however often it was sent).
    pub readings_per_device: BTreeMap<String, usize>,
    pub behaviours: BTreeMap<String, Behaviour>,
    /// Malformed messages by the reason they must be refused with.
    pub rejected_by_reason: BTreeMap<Reason, usize>,
    /// Messages published a second time.
    pub duplicates: usize,
    /// The zone crossings the crossing tags make.
    pub crossings: Vec<Crossing>,
}

impl Expected {
    pub fn unique_readings(&self) -> usize {
        self.readings_per_device.values().sum()
    }

    pub fn rejected(&self) -> usize {
        self.rejected_by_reason.values().sum()
    }
}

/// A planned run: the messages in publishing order, and what they should give.
#[derive(Debug, Clone)]
pub struct Plan {
    pub messages: Vec<Message>,
    pub expected: Expected,
}

const BUFFER_SIZE: usize = 10;

/// Plans a run; the same config always gives the same plan.
pub fn plan(config: &FleetConfig) -> Plan {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut expected = Expected::default();
    // (send time, order, body) so that buffered batches go out late.
    let mut timeline: Vec<(i64, usize, String)> = Vec::new();
    let interval_ms = config.interval_secs as i64 * 1000;
    let start_ms =
        config.end_ms - interval_ms * config.readings_per_device.saturating_sub(1) as i64;

    for index in 0..config.devices {
        let device_id = format!("tag-{index:04}");
        let behaviour = Behaviour::of(index);
        expected.behaviours.insert(device_id.clone(), behaviour);
        // Around Paris, within ~20 km; crossing tags west of the depot, heading east.
        let (mut lat, mut lon, mut heading) = match behaviour {
            Behaviour::Crossing => {
                let (lat, lon) = destination(DEPOT.lat, DEPOT.lon, 270.0, CROSSING_APPROACH_M);
                (lat, lon, 90.0)
            }
            _ => (
                48.8566 + rng.f64() * 0.3 - 0.15,
                2.3522 + rng.f64() * 0.4 - 0.2,
                rng.f64() * 360.0,
            ),
        };
        let crossing_speed = 2.0 * CROSSING_APPROACH_M
            / (config.interval_secs as f64 * config.readings_per_device.max(2) as f64 - 1.0)
                .max(1.0);
        let mut inside_since: Option<i64> = None;
        let mut battery = 40.0 + rng.f64() * 60.0;
        let drain_per_reading = 0.05 + rng.f64() * 0.4;
        let count = match behaviour {
            Behaviour::Silent => config.readings_per_device * 3 / 5,
            _ => config.readings_per_device,
        };
        let mut buffer: Vec<serde_json::Value> = Vec::new();
        for step in 0..count {
            let ts = start_ms + step as i64 * interval_ms + rng.i64(0..1000);
            let (speed, accuracy) = match behaviour {
                Behaviour::Parked => (0.0, 3.0 + rng.f64() * 7.0),
                Behaviour::Crossing => (crossing_speed, 0.0),
                _ => (5.0 + rng.f64() * 25.0, 3.0 + rng.f64() * 12.0),
            };
            if step > 0 && speed > 0.0 {
                if behaviour != Behaviour::Crossing {
                    heading = (heading + rng.f64() * 30.0 - 15.0).rem_euclid(360.0);
                }
                let distance = speed * config.interval_secs as f64;
                (lat, lon) = destination(lat, lon, heading, distance);
            }
            let jitter = |rng: &mut fastrand::Rng| (rng.f64() - 0.5) * accuracy / 111_320.0;
            let (fix_lat, fix_lon) = (
                round6(lat + jitter(&mut rng)),
                round6(lon + jitter(&mut rng)),
            );
            if behaviour == Behaviour::Crossing {
                let inside = haversine_m(fix_lat, fix_lon, DEPOT.lat, DEPOT.lon) <= DEPOT.radius_m;
                match (inside, inside_since) {
                    (true, None) => inside_since = Some(ts),
                    (false, Some(entered_ms)) => {
                        expected.crossings.push(Crossing {
                            device_id: device_id.clone(),
                            zone: DEPOT.id,
                            entered_ms,
                            left_ms: ts,
                        });
                        inside_since = None;
                    }
                    _ => {}
                }
            }
            let reading = json!({
                "ts": ts,
                "lat": fix_lat,
                "lon": fix_lon,
                "speed": round2(speed),
                "heading": round2(heading),
                "battery": round2(battery),
                "accuracy": round2(accuracy),
                "seq": step as u64 + 1,
            });
            battery = (battery - drain_per_reading).max(1.0);
            *expected
                .readings_per_device
                .entry(device_id.clone())
                .or_default() += 1;
            if behaviour == Behaviour::Buffered {
                buffer.push(reading);
                if buffer.len() == BUFFER_SIZE || step + 1 == count {
                    buffer.reverse();
                    let body = json!({"device_id": device_id, "readings": buffer}).to_string();
                    timeline.push((ts, timeline.len(), body));
                    buffer = Vec::new();
                }
            } else {
                let mut single = reading;
                single["device_id"] = json!(device_id);
                timeline.push((ts, timeline.len(), single.to_string()));
            }
        }
    }
    timeline.sort();

    let mut messages = Vec::with_capacity(timeline.len());
    let mut duplicates = Vec::new();
    for (ts, _, body) in timeline {
        if rng.f64() < config.bad_ratio {
            let (bad, reason) = malformed(&mut rng, ts, config.end_ms);
            *expected.rejected_by_reason.entry(reason).or_default() += 1;
            messages.push(Message {
                body: bad,
                expected_rejection: Some(reason),
            });
        }
        if rng.f64() < config.dup_ratio {
            duplicates.push(body.clone());
        }
        messages.push(Message {
            body,
            expected_rejection: None,
        });
    }
    // Duplicates arrive later, as SNS and SQS redeliveries do.
    expected.duplicates = duplicates.len();
    for body in duplicates {
        let at = rng.usize(0..=messages.len());
        messages.insert(
            at,
            Message {
                body,
                expected_rejection: None,
            },
        );
    }
    Plan { messages, expected }
}

/// A malformed message of a random kind, and the reason it must be refused with.
fn malformed(rng: &mut fastrand::Rng, ts: i64, now_ms: i64) -> (String, Reason) {
    let device = format!("tag-{:04}", rng.usize(0..10_000));
    let good = json!({"device_id": device, "ts": ts, "lat": 48.85, "lon": 2.35});
    match rng.usize(0..8) {
        0 => {
            let text = good.to_string();
            let cut = rng.usize(1..text.len() - 1);
            (text[..cut].to_owned(), Reason::MalformedJson)
        }
        1 => (
            json!({"device_id": device, "ts": ts, "lat": 91.0 + rng.f64() * 100.0, "lon": 2.35})
                .to_string(),
            Reason::OutOfRange,
        ),
        2 => (
            json!({"ts": ts, "lat": 48.85, "lon": 2.35}).to_string(),
            Reason::MissingField,
        ),
        3 => (
            json!({"device_id": device, "ts": ts, "lat": "48.85", "lon": 2.35}).to_string(),
            Reason::InvalidType,
        ),
        4 => (
            json!({"device_id": device, "ts": "yesterday at noon", "lat": 48.85, "lon": 2.35})
                .to_string(),
            Reason::InvalidTimestamp,
        ),
        5 => (
            json!({"device_id": "tag with spaces!", "ts": ts, "lat": 48.85, "lon": 2.35})
                .to_string(),
            Reason::InvalidDeviceId,
        ),
        6 => (
            json!({"device_id": device, "ts": now_ms + 86_400_000, "lat": 48.85, "lon": 2.35})
                .to_string(),
            Reason::TimestampInFuture,
        ),
        _ => (
            json!({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:x",
                   "MessageId": "garbage", "Message": "\u{1}garbage{"})
            .to_string(),
            Reason::MalformedJson,
        ),
    }
}

fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Publishes the plan's messages to `topic_arn`, ten per PublishBatch call.
pub async fn publish(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    messages: &[Message],
    progress: bool,
) -> Result<()> {
    let bar = if progress {
        ProgressBar::new(messages.len() as u64).with_style(ProgressStyle::with_template(
            "  publishing {bar:30} {pos}/{len} messages ({per_sec}, {eta} left)",
        )?)
    } else {
        ProgressBar::hidden()
    };
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, message)| {
                PublishBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message(&message.body)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = sns
            .publish_batch()
            .topic_arn(topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await?;
        if !output.failed().is_empty() {
            anyhow::bail!(
                "SNS refused {} messages: {:?}",
                output.failed().len(),
                output.failed()
            );
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// The readings a valid message carries (for audits in tests).
pub fn readings_of(message: &Message, now_ms: i64) -> Vec<Reading> {
    if message.expected_rejection.is_some() {
        return Vec::new();
    }
    geotag::decode_message(&message.body, &geotag::Limits::default(), now_ms)
        .map(|decoded| decoded.readings)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> FleetConfig {
        FleetConfig {
            devices: 20,
            readings_per_device: 30,
            interval_secs: 60,
            bad_ratio: 0.1,
            dup_ratio: 0.1,
            seed,
            end_ms: 1_795_161_600_000,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let (a, b) = (plan(&config(7)), plan(&config(7)));
        let bodies = |p: &Plan| {
            p.messages
                .iter()
                .map(|m| m.body.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(&a), bodies(&b));
        assert_ne!(bodies(&a), bodies(&plan(&config(8))));
    }

    #[test]
    fn every_message_decodes_as_the_plan_says() {
        let plan = plan(&config(1));
        let now = 1_795_161_600_000 + 1000;
        let mut rejected: BTreeMap<Reason, usize> = BTreeMap::new();
        let mut unique = std::collections::BTreeSet::new();
        for message in &plan.messages {
            match geotag::decode_message(&message.body, &geotag::Limits::default(), now) {
                Ok(decoded) => {
                    assert_eq!(message.expected_rejection, None, "{}", message.body);
                    assert!(decoded.rejected.is_empty());
                    for reading in decoded.readings {
                        unique.insert((reading.device_id.clone(), reading.sort_key()));
                    }
                }
                Err(rejection) => {
                    assert_eq!(
                        message.expected_rejection,
                        Some(rejection.reason),
                        "{}",
                        message.body
                    );
                    *rejected.entry(rejection.reason).or_default() += 1;
                }
            }
        }
        assert_eq!(unique.len(), plan.expected.unique_readings());
        assert_eq!(rejected, plan.expected.rejected_by_reason);
        assert!(plan.expected.duplicates > 0 && plan.expected.rejected() > 0);
        // Silent tags send 60% of what the others send.
        assert_eq!(plan.expected.readings_per_device["tag-0009"], 18);
        assert_eq!(plan.expected.readings_per_device["tag-0000"], 30);
    }

    #[test]
    fn crossing_tags_enter_and_leave_the_depot_mid_run() {
        let plan = plan(&config(3));
        let crossers: Vec<_> = plan
            .expected
            .crossings
            .iter()
            .map(|c| c.device_id.as_str())
            .collect();
        assert_eq!(crossers, ["tag-0005", "tag-0015"]);
        let start = 1_795_161_600_000 - 29 * 60_000;
        for crossing in &plan.expected.crossings {
            assert!(crossing.entered_ms > start + 5 * 60_000, "{crossing:?}");
            assert!(
                crossing.left_ms > crossing.entered_ms + 60_000,
                "{crossing:?}"
            );
            assert!(crossing.left_ms < 1_795_161_600_000, "{crossing:?}");
        }
    }

    #[test]
    fn moving_tags_move_at_their_speed() {
        let (lat, lon) = destination(48.0, 2.0, 90.0, 1000.0);
        let metres_east =
            (lon - 2.0).to_radians() * geotag::geo::EARTH_RADIUS_M * 48f64.to_radians().cos();
        assert!((metres_east - 1000.0).abs() < 1.0, "{metres_east}");
        assert!((lat - 48.0).abs() < 1e-4);
    }
}
