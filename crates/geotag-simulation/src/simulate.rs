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
//! - **speeding** tags drive like moving ones, but at 45 m/s (162 km/h)
//!   through the middle fifth of the run;
//! - **silent** tags stop reporting after the first 40% of the run;
//! - **crossing** tags walk due east straight through the [`DEPOT`] zone,
//!   entering and leaving it mid-run (the plan records when), and then
//!   through [`EAST_GATE`];
//! - every tag's battery drains; one tag in three is dying, and crosses 20%
//!   mid-run.
//!
//! Tags that are not crossing keep away from the depot, so that the zone
//! crossings are exactly the scripted ones.
//!
//! On request, a share of messages is malformed (each kind with the reason
//! code ingest must give it) and a share is published twice.

use std::collections::BTreeMap;

use geotag::alerts::{AlertKind, Thresholds};
use geotag::geo::{destination, distance_m as haversine_m};
use geotag::geofence::Geofence;
use geotag::{Reading, Reason};
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
    /// Every tag sends its readings in messages of this many (firmware that
    /// batches, for the cost figures); `None`: each tag as its behaviour does.
    pub readings_per_message: Option<usize>,
    /// One more tag that, for a stretch of the run, publishes many times
    /// its normal rate (see [`Flood`]).
    pub flood: Option<Flood>,
}

pub use crate::flood::{FLOOD_TAG, Flood, FloodPlan};

/// The kind of each tag, by its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behaviour {
    Moving,
    Speeding,
    Crossing,
    Parked,
    Buffered,
    Silent,
}

impl Behaviour {
    fn of(index: usize) -> Behaviour {
        match index % 10 {
            0..=3 => Behaviour::Moving,
            4 => Behaviour::Speeding,
            5 => Behaviour::Crossing,
            6 | 7 => Behaviour::Parked,
            8 => Behaviour::Buffered,
            _ => Behaviour::Silent,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Moving => "moving",
            Behaviour::Speeding => "speeding",
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

/// A polygon on the crossing tags' way out, 1.0 to 1.6 km east of the depot's
/// centre and 600 m tall: as (lat, lon) vertices.
pub fn east_gate() -> Vec<(f64, f64)> {
    let corner = |east_m: f64, north_m: f64| {
        let (lat, lon) = destination(DEPOT.lat, DEPOT.lon, 90.0, east_m);
        destination(
            lat,
            lon,
            if north_m >= 0.0 { 0.0 } else { 180.0 },
            north_m.abs(),
        )
    };
    vec![
        corner(1_000.0, 300.0),
        corner(1_600.0, 300.0),
        corner(1_600.0, -300.0),
        corner(1_000.0, -300.0),
    ]
}

/// The id and name of [`east_gate`].
pub const EAST_GATE: (&str, &str) = ("east-gate", "East gate");

/// Tags that are not crossing turn back before they come this close to the depot.
const DEPOT_KEEP_OUT_M: f64 = DEPOT.radius_m + 400.0;

/// Speed of speeding tags in their episode, m/s (162 km/h; the default limit is 130).
pub const SPEEDING_MPS: f64 = 45.0;

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
    /// The tag that sends it, over its own connection.
    pub thing: String,
    /// What the tag sends.
    pub payload: String,
    /// The reason ingest must refuse it with; `None` for a valid message.
    pub expected_rejection: Option<Reason>,
    /// When, by the readings' clock, the tag sends it (epoch ms): a run
    /// published at the readings' pace waits for it ([`Pace::until`]).
    pub send_ms: i64,
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
    /// Each device's valid readings, in time order (the flood's tag aside:
    /// which of its readings are stored depends on their arrival).
    pub tracks: BTreeMap<String, Vec<TrackPoint>>,
    /// The flood, if the run has one; its tag's readings are in
    /// `readings_per_device`, each either stored or parked.
    pub flood: Option<FloodPlan>,
}

/// A reading, as the alert rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackPoint {
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub speed: f64,
    pub battery: f64,
}

impl Message {
    /// The message as a gateway (or IoT Core's topic rule) publishes it to
    /// SNS: [`geotag::edge_envelope`].
    pub fn gateway_body(&self, received_at_ms: i64) -> String {
        geotag::edge_envelope(&self.thing, received_at_ms, self.payload.as_bytes())
    }
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
    // (send time, order, tag, payload) so that buffered batches go out late.
    let mut timeline: Vec<(i64, usize, String, String)> = Vec::new();
    for index in 0..config.devices {
        plan_device(config, index, &mut rng, &mut expected, &mut timeline);
    }
    if let Some(flood) = config.flood {
        crate::flood::plan(config, flood, &mut expected, &mut timeline);
    }
    timeline.sort();
    for track in expected.tracks.values_mut() {
        track.sort_by_key(|point| point.ts_ms);
    }
    let messages = in_publishing_order(timeline, config, &mut rng, &mut expected);
    Plan { messages, expected }
}

/// Where a tag starts, and its heading. Around Paris, within ~20 km;
/// crossing tags west of the depot, heading east.
fn starting_point(behaviour: Behaviour, rng: &mut fastrand::Rng) -> (f64, f64, f64) {
    if behaviour == Behaviour::Crossing {
        let (lat, lon) = destination(DEPOT.lat, DEPOT.lon, 270.0, CROSSING_APPROACH_M);
        return (lat, lon, 90.0);
    }
    let (mut lat, mut lon) = (
        48.8566 + rng.f64() * 0.3 - 0.15,
        2.3522 + rng.f64() * 0.4 - 0.2,
    );
    // Jitter reaches 10 m at most: a start this far out stays out.
    if haversine_m(lat, lon, DEPOT.lat, DEPOT.lon) < DEPOT_KEEP_OUT_M + 100.0 {
        (lat, lon) = destination(DEPOT.lat, DEPOT.lon, rng.f64() * 360.0, 5_000.0);
    }
    (lat, lon, rng.f64() * 360.0)
}

/// A tag's battery at the start and its drain per reading. One tag in
/// three is dying: it starts a little above 20% and drains 10 to 15 points
/// over the run, so it crosses 20% mid-run.
fn battery_of(index: usize, readings: usize, rng: &mut fastrand::Rng) -> (f64, f64) {
    if index % 3 == 1 {
        let start = 25.0 + rng.f64() * 3.0;
        (start, (10.0 + rng.f64() * 5.0) / readings.max(1) as f64)
    } else {
        let start = 40.0 + rng.f64() * 60.0;
        (start, 0.05 + rng.f64() * 0.4)
    }
}

/// A tag moving `distance` along `heading`; any but a crossing tag wanders
/// a little, and turns back (or stays) rather than stray into the depot.
fn step_forward(
    behaviour: Behaviour,
    (lat, lon): (f64, f64),
    heading: &mut f64,
    distance: f64,
    rng: &mut fastrand::Rng,
) -> (f64, f64) {
    if behaviour == Behaviour::Crossing {
        return destination(lat, lon, *heading, distance);
    }
    *heading = (*heading + rng.f64() * 30.0 - 15.0).rem_euclid(360.0);
    let next = destination(lat, lon, *heading, distance);
    if haversine_m(next.0, next.1, DEPOT.lat, DEPOT.lon) >= DEPOT_KEEP_OUT_M {
        return next;
    }
    *heading = (*heading + 180.0).rem_euclid(360.0);
    let back = destination(lat, lon, *heading, distance);
    if haversine_m(back.0, back.1, DEPOT.lat, DEPOT.lon) < DEPOT_KEEP_OUT_M {
        return (lat, lon);
    }
    back
}

/// One tag's readings, recorded in `expected` and sent on `timeline` as
/// its firmware would: one a message, or buffered and sent late.
fn plan_device(
    config: &FleetConfig,
    index: usize,
    rng: &mut fastrand::Rng,
    expected: &mut Expected,
    timeline: &mut Vec<(i64, usize, String, String)>,
) {
    let interval_ms = config.interval_secs as i64 * 1000;
    let start_ms =
        config.end_ms - interval_ms * config.readings_per_device.saturating_sub(1) as i64;
    let device_id = format!("tag-{index:04}");
    let behaviour = Behaviour::of(index);
    expected.behaviours.insert(device_id.clone(), behaviour);
    let (mut lat, mut lon, mut heading) = starting_point(behaviour, rng);
    let crossing_speed = 2.0 * CROSSING_APPROACH_M
        / (config.interval_secs as f64 * config.readings_per_device.max(2) as f64 - 1.0).max(1.0);
    let mut inside_since: Option<i64> = None;
    let (mut battery, drain_per_reading) = battery_of(index, config.readings_per_device, rng);
    let count = match behaviour {
        Behaviour::Silent => config.readings_per_device * 2 / 5,
        _ => config.readings_per_device,
    };
    let n = config.readings_per_device;
    let speeding_steps = (n * 2 / 5)..(n * 3 / 5);
    let buffer_size = match (config.readings_per_message, behaviour) {
        (Some(size), _) => size.max(1),
        (None, Behaviour::Buffered) => BUFFER_SIZE,
        (None, _) => 1,
    };
    let mut buffer: Vec<serde_json::Value> = Vec::new();
    for step in 0..count {
        let ts = start_ms + step as i64 * interval_ms + rng.i64(0..1000);
        let (speed, accuracy) = match behaviour {
            Behaviour::Parked => (0.0, 3.0 + rng.f64() * 7.0),
            Behaviour::Crossing => (crossing_speed, 0.0),
            Behaviour::Speeding if speeding_steps.contains(&step) => {
                (SPEEDING_MPS, 3.0 + rng.f64() * 12.0)
            }
            _ => (5.0 + rng.f64() * 25.0, 3.0 + rng.f64() * 12.0),
        };
        if step > 0 && speed > 0.0 {
            let distance = speed * config.interval_secs as f64;
            (lat, lon) = step_forward(behaviour, (lat, lon), &mut heading, distance, rng);
        }
        let jitter = |rng: &mut fastrand::Rng| (rng.f64() - 0.5) * accuracy / 111_320.0;
        let (fix_lat, fix_lon) = (round6(lat + jitter(rng)), round6(lon + jitter(rng)));
        if behaviour == Behaviour::Crossing {
            let inside = haversine_m(fix_lat, fix_lon, DEPOT.lat, DEPOT.lon) <= DEPOT.radius_m;
            note_crossing(&device_id, inside, ts, &mut inside_since, expected);
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
        expected
            .tracks
            .entry(device_id.clone())
            .or_default()
            .push(TrackPoint {
                ts_ms: ts,
                lat: fix_lat,
                lon: fix_lon,
                speed: round2(speed),
                battery: round2(battery),
            });
        battery = (battery - drain_per_reading).max(1.0);
        *expected
            .readings_per_device
            .entry(device_id.clone())
            .or_default() += 1;
        if buffer_size == 1 {
            let mut single = reading;
            single["device_id"] = json!(device_id);
            timeline.push((ts, timeline.len(), device_id.clone(), single.to_string()));
            continue;
        }
        buffer.push(reading);
        if buffer.len() == buffer_size || step + 1 == count {
            if behaviour == Behaviour::Buffered {
                // Buffering firmware sends its newest reading first.
                buffer.reverse();
            }
            let payload = json!({"device_id": device_id, "readings": buffer}).to_string();
            timeline.push((ts, timeline.len(), device_id.clone(), payload));
            buffer = Vec::new();
        }
    }
}

/// A crossing tag's fix, inside the depot or not: the time it entered, and
/// each crossing once it has left.
fn note_crossing(
    device_id: &str,
    inside: bool,
    ts: i64,
    inside_since: &mut Option<i64>,
    expected: &mut Expected,
) {
    match (inside, *inside_since) {
        (true, None) => *inside_since = Some(ts),
        (false, Some(entered_ms)) => {
            expected.crossings.push(Crossing {
                device_id: device_id.to_owned(),
                zone: DEPOT.id,
                entered_ms,
                left_ms: ts,
            });
            *inside_since = None;
        }
        _ => {}
    }
}

/// Each message gets a place in publishing order, malformed ones mixed in;
/// a duplicate lands somewhere after its original, as SNS and SQS
/// redeliveries do (a device cannot send a reading before it takes it).
fn in_publishing_order(
    timeline: Vec<(i64, usize, String, String)>,
    config: &FleetConfig,
    rng: &mut fastrand::Rng,
    expected: &mut Expected,
) -> Vec<Message> {
    let mut placed: Vec<(f64, Message)> = Vec::with_capacity(timeline.len());
    let mut duplicates = Vec::new();
    let count = timeline.len() as f64;
    for (ts, _, thing, payload) in timeline {
        let place = placed.len() as f64;
        if rng.f64() < config.bad_ratio {
            let (bad, reason) = crate::malformed::malformed(rng, &thing, ts, config.end_ms);
            *expected.rejected_by_reason.entry(reason).or_default() += 1;
            placed.push((
                place,
                Message {
                    thing: thing.clone(),
                    payload: bad,
                    expected_rejection: Some(reason),
                    send_ms: ts,
                },
            ));
        }
        let message = Message {
            thing,
            payload,
            expected_rejection: None,
            send_ms: ts,
        };
        let place = placed.len() as f64;
        if rng.f64() < config.dup_ratio {
            duplicates.push((
                place + 0.5 + rng.f64() * (count - place).max(1.0),
                message.clone(),
            ));
        }
        placed.push((place, message));
    }
    expected.duplicates = duplicates.len();
    placed.extend(duplicates);
    placed.sort_by(|a, b| a.0.total_cmp(&b.0));
    // A duplicate goes out when its place comes, not when its original did.
    let mut clock = i64::MIN;
    placed
        .into_iter()
        .map(|(_, mut message)| {
            clock = clock.max(message.send_ms);
            message.send_ms = clock;
            message
        })
        .collect()
}

/// The alerts a fleet's readings deserve, by (device, alert type): an oracle
/// that judges each device's whole track in time order, independent of the
/// pipeline (its batching, its stream, its retries), for the demo to audit
/// the pipeline against. `setup` gives a device's customer, thresholds and
/// zones; `now_ms` is when the silence check runs.
pub fn expected_alerts(
    expected: &Expected,
    setup: impl Fn(&str) -> (Option<String>, Thresholds, Vec<Geofence>),
    now_ms: i64,
) -> BTreeMap<(String, AlertKind), usize> {
    let mut alerts: BTreeMap<(String, AlertKind), usize> = BTreeMap::new();
    for (device, track) in &expected.tracks {
        let (_, thresholds, zones) = setup(device);
        let mut count = |kind: AlertKind, n: usize| {
            if n > 0 {
                *alerts.entry((device.clone(), kind)).or_default() += n;
            }
        };
        for zone in &zones {
            let inside: Vec<bool> = track.iter().map(|p| zone.contains(p.lat, p.lon)).collect();
            for pair in inside.windows(2) {
                match (pair[0], pair[1]) {
                    (false, true) => count(AlertKind::GeofenceEnter, 1),
                    (true, false) => count(AlertKind::GeofenceExit, 1),
                    _ => {}
                }
            }
        }
        let low = |p: &TrackPoint| p.battery < thresholds.battery_low_pct;
        count(
            AlertKind::BatteryLow,
            track
                .iter()
                .enumerate()
                .filter(|(i, p)| low(p) && (*i == 0 || !low(&track[i - 1])))
                .count(),
        );
        let mut episode_start: Option<i64> = None;
        let mut alerted = false;
        for point in track {
            if point.speed <= thresholds.speed_limit_mps {
                (episode_start, alerted) = (None, false);
                continue;
            }
            let since = *episode_start.get_or_insert(point.ts_ms);
            if !alerted && point.ts_ms - since >= thresholds.speed_grace_ms {
                alerted = true;
                count(AlertKind::Speeding, 1);
            }
        }
        if let Some(last) = track.last()
            && now_ms - last.ts_ms > thresholds.silence_after_ms
        {
            count(AlertKind::Silence, 1);
        }
    }
    alerts
}

pub(crate) fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub use crate::gateway::publish;
pub use crate::pace::{Pace, progress_bar};

/// The readings a valid message carries (for audits in tests).
pub fn readings_of(message: &Message, now_ms: i64) -> Vec<Reading> {
    if message.expected_rejection.is_some() {
        return Vec::new();
    }
    let body = message.gateway_body(now_ms);
    geotag::decode_message(&body, &geotag::Limits::default(), now_ms)
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
            readings_per_message: None,
            flood: None,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let (a, b) = (plan(&config(7)), plan(&config(7)));
        let bodies = |p: &Plan| {
            p.messages
                .iter()
                .map(|m| (m.thing.clone(), m.payload.clone()))
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
            let body = message.gateway_body(now);
            match geotag::decode_message(&body, &geotag::Limits::default(), now) {
                Ok(decoded) => {
                    assert_eq!(message.expected_rejection, None, "{}", message.payload);
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
                        message.payload
                    );
                    *rejected.entry(rejection.reason).or_default() += 1;
                }
            }
        }
        assert_eq!(unique.len(), plan.expected.unique_readings());
        assert_eq!(rejected, plan.expected.rejected_by_reason);
        assert!(plan.expected.duplicates > 0 && plan.expected.rejected() > 0);
        // Silent tags send 40% of what the others send.
        assert_eq!(plan.expected.readings_per_device["tag-0009"], 12);
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
    fn the_oracle_finds_exactly_the_scripted_alerts() {
        let config = FleetConfig {
            readings_per_device: 60,
            ..config(5)
        };
        let plan = plan(&config);
        let depot = Geofence {
            id: DEPOT.id.into(),
            name: DEPOT.name.into(),
            customer_id: None,
            shape: geotag::geofence::Shape::Circle {
                lat: DEPOT.lat,
                lon: DEPOT.lon,
                radius_m: DEPOT.radius_m,
            },
        };
        let alerts = expected_alerts(
            &plan.expected,
            |_| (None, Thresholds::default(), vec![depot.clone()]),
            config.end_ms + 10_000,
        );
        let devices_of = |kind: AlertKind| {
            alerts
                .iter()
                .filter(|((_, k), _)| *k == kind)
                .map(|((device, _), n)| (device.as_str(), *n))
                .collect::<Vec<_>>()
        };
        // Only the crossing tags touch the depot, once in and once out.
        assert_eq!(
            devices_of(AlertKind::GeofenceEnter),
            [("tag-0005", 1), ("tag-0015", 1)]
        );
        assert_eq!(
            devices_of(AlertKind::GeofenceExit),
            [("tag-0005", 1), ("tag-0015", 1)]
        );
        assert_eq!(
            devices_of(AlertKind::Speeding),
            [("tag-0004", 1), ("tag-0014", 1)]
        );
        assert_eq!(
            devices_of(AlertKind::Silence),
            [("tag-0009", 1), ("tag-0019", 1)]
        );
        // Batteries drain monotonically: one crossing at most; every dying
        // tag that reports the whole run crosses 20%.
        let battery = devices_of(AlertKind::BatteryLow);
        assert!(battery.iter().all(|(_, n)| *n == 1), "{battery:?}");
        for index in (1..20).step_by(3).filter(|i| i % 10 != 9) {
            let device = format!("tag-{index:04}");
            assert!(
                battery.iter().any(|(d, _)| *d == device),
                "{device}: {battery:?}"
            );
        }
        // The east gate is on the crossing tags' way out.
        let gate = Geofence {
            id: EAST_GATE.0.into(),
            name: EAST_GATE.1.into(),
            customer_id: None,
            shape: geotag::geofence::Shape::Polygon { ring: east_gate() },
        };
        let through_gate = expected_alerts(
            &plan.expected,
            |_| (None, Thresholds::default(), vec![gate.clone()]),
            config.end_ms,
        );
        assert_eq!(
            through_gate
                .iter()
                .filter(|((_, kind), _)| *kind == AlertKind::GeofenceEnter)
                .count(),
            2,
            "{through_gate:?}"
        );
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
