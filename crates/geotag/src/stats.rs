//! Per-device state and rollups: the latest position, and hourly and daily
//! aggregates of a tag's readings.
//!
//! # Exactly once, whatever the order and the concurrency
//!
//! Stats are fed by the Telemetry stream's INSERT records, and nothing about
//! that feed can be counted on: a stats batch is retried whole, bisected or
//! from a checkpoint; DynamoDB Streams orders records per item only, and every
//! reading is its own item, so with a `ParallelizationFactor` above 1 two
//! batches holding one device's readings run at once, and after a partition
//! splits a device's readings sit in shards whose sequence numbers cannot be
//! compared. So no DeviceStats item accumulates what the records carry. An
//! hour's rollup is recomputed from that hour's readings in Telemetry (one
//! strongly consistent Query per device and hour: the source of truth, which
//! holds every reading whose record is being processed), and a day's from its
//! hours' items. Readings are only ever added to an hour (a reading written
//! twice is one item), so a recomputation that saw more readings saw a
//! later, larger set: a rollup is written only over one of fewer readings
//! (its *revision* is its count), and whichever batch computes last from the
//! most readings wins, in any order, any number of times. The `latest` item
//! is a fold that forgets nothing it needs: a reading older than the state
//! changes nothing, so a retried record is a no-op, and concurrent writers
//! are kept apart by the item's revision, a count of its writes (a write
//! that finds another revision reloads and folds again).
//!
//! # The open hour: rollups written when the hour closes
//!
//! A tag reading once a minute is in every stats batch once, so recomputing
//! its hour and day on every batch cost a Query and three writes a reading.
//! Instead the hour of a device's `latest` state is its *open hour*
//! ([`LatestState::open_hour`]), and a batch leaves a reading there
//! unrecomputed if, and only if, its `latest` write succeeds with the state
//! still in that hour. Every other hour a batch touches is recomputed as
//! before, and so is the hour of the state a `latest` write replaces when
//! the new state is in another hour: *closing* it. A device whose state a
//! batch does not change (duplicates, late readings) has every hour of its
//! readings recomputed: without a write of its own, a batch cannot know
//! that the state it read is still there. Except readings that state
//! folded in itself (its own reading and its trail) in its open hour: they
//! were in Telemetry before it was written, so whoever moves it on closes
//! the hour with them, and a redelivered batch writes nothing.
//!
//! Why no reading is lost: successful `latest` writes form a chain, each
//! conditioned on the revision of the one before, so each writer read its
//! predecessor. A reading left in hour H was in Telemetry before its batch
//! wrote a state in H; the first state of the chain outside H is written by
//! a batch that read a state in H (so after that write), recomputed H from
//! Telemetry after reading it, and writes only if that state is still
//! there, and only once H's rollups are written. A batch that loses the
//! race reads again, and recomputes whatever its new read leaves behind.
//!
//! So a stored rollup is exact for every hour but the open one, and the
//! day holding the open hour lacks it. Readers show the open hour from its
//! readings ([`show_open_hour`]): one Query of at most an hour of one
//! device's readings, in place of a write per reading.
//!
//! # Late and out-of-order readings
//!
//! A reading older than the latest state never moves the latest position (ties
//! on time are broken by the reading's sort key, so the choice is stable); it
//! still counts in the hour and the day it was taken in. A reading stamped
//! ahead of its arrival counts at its arrival for the latest state, so that a
//! tag cannot park its latest position in the future and turn the genuine
//! readings after it into history.
//!
//! Distance is the sum of great-circle segments between consecutive readings
//! in time order: within the hour for an hourly rollup, within the day for a
//! daily one. Readings reach the stream out of time order all the time (SQS
//! batches are processed concurrently; a tag uploads what it buffered offline
//! after its first live reading), and a late reading splits a segment that was
//! already counted. Recomputing each touched hour from its readings (above)
//! settles this too: a day joins the spans of its hours, adding the segments
//! that cross from one hour to the next, so the segment a late reading falls
//! into is replaced by the two through it, exactly as if the readings had
//! come in order. A rollup holds what Telemetry held when it was computed, so
//! it may run ahead of the stream (readings stored whose records are still to
//! come), and is recomputed, to the same or more, when they come.

use std::cmp::Ordering;

use crate::clock::{DAY_MS, HOUR_MS};
use crate::geo::distance_m;
use crate::reading::{Reading, write_rfc3339_millis};
use crate::tenancy::Holder;

/// Compares two DynamoDB stream sequence numbers (decimal strings of up to 40
/// digits, wider than u128 can always hold).
pub fn cmp_sequence(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// An hour or a day of a device's readings (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    Hour(i64),
    Day(i64),
}

impl Bucket {
    /// The hour and the day a reading taken at `ts_ms` counts in.
    pub fn of(ts_ms: i64) -> [Bucket; 2] {
        [
            Bucket::Hour(ts_ms.div_euclid(HOUR_MS) * HOUR_MS),
            Bucket::Day(ts_ms.div_euclid(DAY_MS) * DAY_MS),
        ]
    }

    pub fn start_ms(self) -> i64 {
        match self {
            Bucket::Hour(start) | Bucket::Day(start) => start,
        }
    }

    /// The DeviceStats sort key: `hour#2026-11-20T08` or `day#2026-11-20`.
    pub fn sort_key(self) -> String {
        let mut time = String::with_capacity(24);
        write_rfc3339_millis(&mut time, self.start_ms());
        match self {
            Bucket::Hour(_) => format!("hour#{}", &time[..time.len().min(13)]),
            Bucket::Day(_) => format!("day#{}", &time[..time.len().min(10)]),
        }
    }
}

/// A position at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
}

impl Point {
    pub fn of(reading: &Reading) -> Point {
        Point {
            ts_ms: reading.ts_ms,
            lat: reading.lat,
            lon: reading.lon,
        }
    }

    fn to(self, other: Point) -> f64 {
        distance_m(self.lat, self.lon, other.lat, other.lon)
    }
}

/// A stretch of track: its first and last points and the distance between
/// consecutive points along it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub first: Point,
    pub last: Point,
    pub distance_m: f64,
}

impl Span {
    /// The span of `points`, taken in time order (a stable sort keeps the
    /// given order of equal times). `None` for no points.
    pub fn of_points(points: &[Point]) -> Option<Span> {
        let mut points = points.to_vec();
        points.sort_by_key(|point| point.ts_ms);
        let (first, last) = (*points.first()?, *points.last()?);
        let distance_m = points.windows(2).map(|pair| pair[0].to(pair[1])).sum();
        Some(Span {
            first,
            last,
            distance_m,
        })
    }

    /// Consecutive spans joined into one: their distances plus the segments
    /// from each span's last point to the next one's first.
    pub fn join<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Option<Span> {
        let mut spans: Vec<&Span> = spans.into_iter().collect();
        spans.sort_by_key(|span| span.first.ts_ms);
        let (first, last) = (spans.first()?.first, spans.last()?.last);
        let inner: f64 = spans.iter().map(|span| span.distance_m).sum();
        let joints: f64 = spans
            .windows(2)
            .map(|pair| pair[0].last.to(pair[1].first))
            .sum();
        Some(Span {
            first,
            last,
            distance_m: inner + joints,
        })
    }
}

/// What a bucket knows of a device's readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    pub count: u64,
    pub speed_min: Option<f64>,
    pub speed_max: Option<f64>,
    pub speed_sum: f64,
    pub speed_count: u64,
    pub battery_min: Option<f64>,
    /// Battery of the newest reading that reported one, and its time.
    pub battery_last: Option<(i64, f64)>,
    /// (lat_min, lat_max, lon_min, lon_max)
    pub bbox: Option<(f64, f64, f64, f64)>,
    /// First and last point and distance, recomputed from Telemetry (see the module docs).
    pub track: Option<Span>,
    /// For a day: the span of each of its hours, by hour start, to join.
    pub hours: Vec<(i64, Span)>,
    /// Whose readings the bucket holds (see [`crate::tenancy`]).
    pub holder: Holder,
}

impl Rollup {
    /// A bucket's rollup computed from all of its readings (any order).
    pub fn of_readings(readings: &[Reading]) -> Rollup {
        let mut rollup = Rollup::default();
        rollup.count_readings(readings);
        let points: Vec<Point> = readings.iter().map(Point::of).collect();
        rollup.track = Span::of_points(&points);
        rollup
    }

    /// A day's rollup from the rollups of its hours, by hour start (any order).
    pub fn of_hours(hours: &[(i64, Rollup)]) -> Rollup {
        let mut day = Rollup::default();
        for (start, hour) in hours {
            day.add(hour);
            if let Some(span) = hour.track {
                day.hours.push((*start, span));
            }
        }
        day.hours.sort_by_key(|(start, _)| *start);
        day.track = Span::join(day.hours.iter().map(|(_, span)| span));
        day
    }

    /// Adds another bucket's order-independent aggregates to this one's.
    fn add(&mut self, other: &Rollup) {
        self.count += other.count;
        self.holder.join(&other.holder);
        self.speed_min = min_of(self.speed_min, other.speed_min);
        self.speed_max = match (self.speed_max, other.speed_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.speed_sum += other.speed_sum;
        self.speed_count += other.speed_count;
        self.battery_min = min_of(self.battery_min, other.battery_min);
        self.battery_last = match (self.battery_last, other.battery_last) {
            (Some(a), Some(b)) => Some(if b.0 >= a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        self.bbox = match (self.bbox, other.bbox) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1), a.2.min(b.2), a.3.max(b.3))),
            (a, b) => a.or(b),
        };
    }

    pub fn speed_mean(&self) -> Option<f64> {
        (self.speed_count > 0).then(|| self.speed_sum / self.speed_count as f64)
    }

    pub fn distance_m(&self) -> f64 {
        self.track.map_or(0.0, |track| track.distance_m)
    }

    /// Counts readings into the order-independent aggregates.
    pub fn count_readings(&mut self, readings: &[Reading]) {
        for reading in readings {
            self.count_reading(reading);
        }
    }

    fn count_reading(&mut self, reading: &Reading) {
        self.count += 1;
        self.holder.absorb(&reading.owner);
        if let Some(speed) = reading.speed {
            self.speed_min = Some(self.speed_min.map_or(speed, |m| m.min(speed)));
            self.speed_max = Some(self.speed_max.map_or(speed, |m| m.max(speed)));
            self.speed_sum += speed;
            self.speed_count += 1;
        }
        if let Some(battery) = reading.battery {
            self.battery_min = Some(self.battery_min.map_or(battery, |m| m.min(battery)));
            if self.battery_last.is_none_or(|(ts, _)| reading.ts_ms >= ts) {
                self.battery_last = Some((reading.ts_ms, battery));
            }
        }
        let (lat, lon) = (reading.lat, reading.lon);
        self.bbox = Some(match self.bbox {
            None => (lat, lat, lon, lon),
            Some((lat_min, lat_max, lon_min, lon_max)) => (
                lat_min.min(lat),
                lat_max.max(lat),
                lon_min.min(lon),
                lon_max.max(lon),
            ),
        });
    }
}

/// A device's rollups as a reader must show them: `stored` (every stored
/// hour of the open hour's day among them, and whatever else the reader
/// asked for) with the open hour made from `open_readings`, its readings in
/// Telemetry, and the day holding it joined anew from its hours. The stored
/// open hour, if any, is whatever a recomputation left there before the
/// hour closed (see the module docs), and is replaced.
pub fn show_open_hour(
    stored: &mut std::collections::BTreeMap<Bucket, Rollup>,
    open_hour: i64,
    open_readings: &[Reading],
) {
    let [hour, day] = Bucket::of(open_hour);
    if open_readings.is_empty() {
        stored.remove(&hour);
    } else {
        stored.insert(hour, Rollup::of_readings(open_readings));
    }
    let day_end = Bucket::Hour(day.start_ms() + DAY_MS);
    let hours: Vec<(i64, Rollup)> = stored
        .range(Bucket::Hour(day.start_ms())..day_end)
        .map(|(bucket, rollup)| (bucket.start_ms(), rollup.clone()))
        .collect();
    if hours.is_empty() {
        stored.remove(&day);
    } else {
        stored.insert(day, Rollup::of_hours(&hours));
    }
}

fn min_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Most positions a `latest` item carries in its trail.
///
/// A stats batch can absorb many readings of one tag (a backlog after an
/// outage, a buffered upload), but the alerts see one stream record per
/// `latest` write. The trail is the live track between the two: the readings
/// the write absorbed that are newer than the previous latest state, in time
/// order, so that a tag that entered and left a zone within one batch still
/// raises both alerts. It is bounded so that an item stays small (about 90
/// bytes a point); past the bound only the newest points are kept, so the
/// stats function writes a backlog's `latest` in steps of at most this many
/// readings, each step a change of its own on the stream.
pub const TRAIL_MAX: usize = 100;

/// One position of the live track (see [`TRAIL_MAX`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TrailPoint {
    pub ts_ms: i64,
    pub reading_key: String,
    pub lat: f64,
    pub lon: f64,
    pub speed: Option<f64>,
    pub battery: Option<f64>,
}

/// Where a device is now: its newest reading, by reading time, a time never
/// later than the reading's arrival ([`Reading::latest_time_ms`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LatestState {
    pub ts_ms: i64,
    /// The Telemetry sort key of the reading: the tie-break between equal times.
    pub reading_key: String,
    pub lat: f64,
    pub lon: f64,
    pub speed: Option<f64>,
    pub heading: Option<f64>,
    pub accuracy: Option<f64>,
    /// The newest battery level reported, even by an older reading if the newest had none.
    pub battery: Option<f64>,
    pub battery_ts_ms: Option<i64>,
    pub seq: Option<u64>,
    /// The owner of the reading this state is (see [`crate::tenancy`]).
    pub owner: Option<String>,
    /// Counts the changes of position, so that consumers can order them.
    pub version: u64,
    /// The readings the change that made this `version` absorbed, newer than
    /// the previous latest state, oldest first, the newest last (at most [`TRAIL_MAX`]).
    pub trail: Vec<TrailPoint>,
}

impl LatestState {
    /// The start of the device's open hour: the hour of this state's time,
    /// whose rollup is written when the state moves on from it (see the
    /// module docs).
    pub fn open_hour(&self) -> i64 {
        self.ts_ms.div_euclid(HOUR_MS) * HOUR_MS
    }

    /// Folds `readings` (any order) into `current`; `None` stays `None` only for no readings.
    pub fn apply(current: Option<LatestState>, readings: &[Reading]) -> Option<LatestState> {
        let mut keyed: Vec<(&Reading, String)> = readings
            .iter()
            .map(|reading| (reading, reading.sort_key()))
            .collect();
        keyed.sort_by(|(a, ka), (b, kb)| {
            a.latest_time_ms()
                .cmp(&b.latest_time_ms())
                .then_with(|| ka.cmp(kb))
        });
        keyed.dedup_by(|(_, a), (_, b)| a == b);
        let (reading, key) = keyed.last()?;
        let newer_than_current = |ts_ms: i64, key: &str| {
            current
                .as_ref()
                .is_none_or(|state| (ts_ms, key) > (state.ts_ms, state.reading_key.as_str()))
        };
        let mut state = match current {
            Some(ref state) if !newer_than_current(reading.latest_time_ms(), key) => state.clone(),
            ref previous => {
                // A battery level of the tag's former owner's time is not the new owner's.
                let same_owner = previous.as_ref().filter(|p| p.owner == reading.owner);
                let fresh: Vec<&(&Reading, String)> = keyed
                    .iter()
                    .filter(|(r, k)| newer_than_current(r.latest_time_ms(), k))
                    .collect();
                let trail = fresh[fresh.len().saturating_sub(TRAIL_MAX)..]
                    .iter()
                    .map(|(r, k)| TrailPoint {
                        ts_ms: r.latest_time_ms(),
                        reading_key: k.clone(),
                        lat: r.lat,
                        lon: r.lon,
                        speed: r.speed,
                        battery: r.battery,
                    })
                    .collect();
                LatestState {
                    ts_ms: reading.latest_time_ms(),
                    reading_key: key.clone(),
                    lat: reading.lat,
                    lon: reading.lon,
                    speed: reading.speed,
                    heading: reading.heading,
                    accuracy: reading.accuracy,
                    battery: same_owner.and_then(|p| p.battery),
                    battery_ts_ms: same_owner.and_then(|p| p.battery_ts_ms),
                    seq: reading.seq,
                    owner: reading.owner.clone(),
                    version: previous.as_ref().map_or(0, |p| p.version) + 1,
                    trail,
                }
            }
        };
        let newest_battery = readings
            .iter()
            .filter(|r| r.owner == state.owner)
            .filter_map(|r| r.battery.map(|battery| (r.latest_time_ms(), battery)))
            .max_by_key(|(ts, _)| *ts);
        if let Some((ts, battery)) = newest_battery
            && state.battery_ts_ms.is_none_or(|known| ts >= known)
        {
            state.battery = Some(battery);
            state.battery_ts_ms = Some(ts);
        }
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::EARTH_RADIUS_M;
    use proptest::prelude::*;

    const T0: i64 = 1_795_161_600_000; // 2026-11-20T08:00:00Z

    fn reading(ts_ms: i64, lat: f64, lon: f64) -> Reading {
        Reading {
            device_id: "tag-1".into(),
            ts_ms,
            lat,
            lon,
            alt: None,
            speed: Some((ts_ms - T0) as f64 / 60_000.0),
            heading: None,
            battery: Some(100.0 - (ts_ms - T0) as f64 / 60_000.0),
            accuracy: None,
            seq: None,
            received_at_ms: Some(ts_ms),
            owner: None,
        }
    }

    /// A walk along the equator, one reading a minute, 0.01 degree apart.
    fn equator_track(n: usize) -> Vec<Reading> {
        (0..n)
            .map(|i| reading(T0 + i as i64 * 60_000, 0.0, i as f64 * 0.01))
            .collect()
    }

    fn points(readings: &[Reading]) -> Vec<Point> {
        readings.iter().map(Point::of).collect()
    }

    fn owned(mut reading: Reading, owner: &str) -> Reading {
        reading.owner = Some(owner.to_owned());
        reading
    }

    #[test]
    fn a_tag_passed_on_keeps_its_former_owners_battery_and_buckets_to_itself() {
        let acme = owned(reading(T0, 0.0, 0.0), "acme");
        let mut globex = owned(reading(T0 + 60_000, 0.0, 0.01), "globex");
        globex.battery = None;
        let before = LatestState::apply(None, std::slice::from_ref(&acme)).unwrap();
        assert_eq!(before.owner.as_deref(), Some("acme"));
        let after = LatestState::apply(Some(before), std::slice::from_ref(&globex)).unwrap();
        assert_eq!(after.owner.as_deref(), Some("globex"));
        assert_eq!(after.battery, None, "acme's battery level stays acme's");

        let mut hour = Rollup::default();
        hour.count_readings(std::slice::from_ref(&acme));
        assert_eq!(hour.holder.customer(), Some("acme"));
        hour.count_readings(&[globex]);
        assert_eq!(hour.holder, Holder::Mixed);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(cmp_sequence("900", "1000"), Ordering::Less);
        assert_eq!(cmp_sequence("000123", "123"), Ordering::Equal);
        assert_eq!(
            cmp_sequence(
                "1234567890123456789012345678901234567890",
                "999999999999999999999999999999999999999"
            ),
            Ordering::Greater
        );
    }

    #[test]
    fn buckets_and_their_keys() {
        let [hour, day] = Bucket::of(T0 + 59 * 60_000 + 59_999);
        assert_eq!(hour, Bucket::Hour(T0));
        assert_eq!(hour.sort_key(), "hour#2026-11-20T08");
        assert_eq!(day.sort_key(), "day#2026-11-20");
        assert_eq!(Bucket::of(T0 + HOUR_MS)[0], Bucket::Hour(T0 + HOUR_MS));
    }

    #[test]
    fn distance_of_a_known_route_within_a_thousandth() {
        let track = equator_track(100);
        let span = Span::of_points(&points(&track)).unwrap();
        let expected = 99.0 * 0.01_f64.to_radians() * EARTH_RADIUS_M;
        assert!(
            (span.distance_m - expected).abs() / expected < 0.001,
            "{}",
            span.distance_m
        );
        let mut rollup = Rollup::default();
        rollup.count_readings(&track);
        assert_eq!(rollup.count, 100);
        assert_eq!(rollup.speed_mean(), Some(49.5));
        assert_eq!(rollup.battery_min, Some(1.0));
        assert_eq!(rollup.battery_last, Some((T0 + 99 * 60_000, 1.0)));
        assert_eq!(rollup.bbox, Some((0.0, 0.0, 0.0, 0.99)));
    }

    #[test]
    fn a_day_joins_its_hours_across_the_boundaries() {
        // Two hours of walking, one reading a minute: 119 segments in the day,
        // 59 within each hour, 1 across 09:00.
        let track = equator_track(120);
        let hours: Vec<(i64, Rollup)> = [T0 + HOUR_MS, T0]
            .into_iter()
            .map(|hour| {
                let in_hour: Vec<_> = track
                    .iter()
                    .filter(|r| r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS == hour)
                    .cloned()
                    .collect();
                (hour, Rollup::of_readings(&in_hour))
            })
            .collect();
        let day = Rollup::of_hours(&hours);
        let whole = Rollup::of_readings(&track);
        assert!((day.distance_m() - whole.distance_m()).abs() < 1e-6);
        assert_eq!(
            day.track.map(|t| (t.first, t.last)),
            whole.track.map(|t| (t.first, t.last))
        );
        assert_eq!(
            day.hours
                .iter()
                .map(|(start, _)| *start)
                .collect::<Vec<_>>(),
            [T0, T0 + HOUR_MS]
        );
        assert_eq!(Rollup::of_hours(&hours[..1]).hours.len(), 1);
    }

    #[test]
    fn the_open_hour_is_shown_from_its_readings_and_its_day_joined_anew() {
        // 08:00-09:59 walked; 08:00 stored (closed), 09:00 open, its stored
        // item what a recomputation left after ten minutes.
        let track = equator_track(120);
        let (hour8, hour9) = track.split_at(60);
        let mut stored: std::collections::BTreeMap<Bucket, Rollup> = [
            (Bucket::Hour(T0), Rollup::of_readings(hour8)),
            (
                Bucket::Hour(T0 + HOUR_MS),
                Rollup::of_readings(&hour9[..10]),
            ),
            (
                Bucket::Day(T0 - 8 * HOUR_MS),
                Rollup::of_readings(&track[..70]),
            ),
        ]
        .into();
        show_open_hour(&mut stored, T0 + HOUR_MS, hour9);
        assert_eq!(stored[&Bucket::Hour(T0 + HOUR_MS)].count, 60);
        let day = &stored[&Bucket::Day(T0 - 8 * HOUR_MS)];
        let whole = Rollup::of_readings(&track);
        assert_eq!(day.count, 120);
        assert!((day.distance_m() - whole.distance_m()).abs() < 1e-6);
        // An open hour whose readings are gone (TTL) shows nothing, and its
        // day only what its other hours hold.
        show_open_hour(&mut stored, T0 + HOUR_MS, &[]);
        assert!(!stored.contains_key(&Bucket::Hour(T0 + HOUR_MS)));
        assert_eq!(stored[&Bucket::Day(T0 - 8 * HOUR_MS)].count, 60);
    }

    #[test]
    fn a_reading_stamped_ahead_of_its_arrival_cannot_mute_the_tag() {
        // A tag (or whoever holds its certificate) sends one reading stamped
        // five minutes ahead; the genuine readings of the next minutes arrive
        // after it. Each must still move the latest position, as it would
        // without the forged one.
        let now = T0 + 10 * 60_000;
        let mut forged = reading(now + 300_000, 10.0, 10.0);
        forged.received_at_ms = Some(now);
        let state = LatestState::apply(None, &[forged]).unwrap();
        assert_eq!(
            state.ts_ms, now,
            "counted at its arrival, not in the future"
        );
        let mut state = state;
        for minute in 1..=4 {
            let genuine = reading(now + minute * 60_000, 0.0, minute as f64 * 0.01);
            state = LatestState::apply(Some(state), std::slice::from_ref(&genuine)).unwrap();
            assert_eq!(
                (state.ts_ms, state.lon, state.trail.len()),
                (genuine.ts_ms, genuine.lon, 1),
                "minute {minute}: the genuine reading is live, not history"
            );
        }
    }

    #[test]
    fn latest_state_ignores_older_readings_and_breaks_ties_stably() {
        let track = equator_track(5);
        let state = LatestState::apply(None, &track[3..]).unwrap();
        assert_eq!((state.ts_ms, state.version), (track[4].ts_ms, 1));
        let after_late = LatestState::apply(Some(state.clone()), &track[..3]).unwrap();
        assert_eq!(
            after_late, state,
            "older readings do not move the latest position"
        );
        let mut twin = track[4].clone();
        twin.seq = Some(9);
        twin.lon = 5.0;
        let tied = LatestState::apply(Some(state.clone()), &[twin]).unwrap();
        assert_eq!(
            (tied.lon, tied.version),
            (5.0, 2),
            "same time, greater key wins"
        );
        assert_eq!(
            LatestState::apply(Some(tied.clone()), &[track[4].clone()]).unwrap(),
            tied
        );
        assert_eq!(LatestState::apply(None, &[]), None);
    }

    #[test]
    fn the_trail_holds_the_newer_readings_of_a_change_in_time_order() {
        let track = equator_track(8);
        let first = LatestState::apply(None, &track[..3]).unwrap();
        let keys = |state: &LatestState| state.trail.iter().map(|p| p.ts_ms).collect::<Vec<_>>();
        assert_eq!(
            keys(&first),
            [track[0].ts_ms, track[1].ts_ms, track[2].ts_ms]
        );
        // A batch mixing a late reading, a duplicate and newer ones, shuffled:
        // the trail has only the newer ones, once each, oldest first.
        let batch = [
            track[6].clone(),
            track[1].clone(),
            track[4].clone(),
            track[6].clone(),
            track[3].clone(),
        ];
        let next = LatestState::apply(Some(first.clone()), &batch).unwrap();
        assert_eq!(
            keys(&next),
            [track[3].ts_ms, track[4].ts_ms, track[6].ts_ms]
        );
        assert_eq!(next.trail.last().map(|p| p.ts_ms), Some(next.ts_ms));
        // Only late readings: the state and its trail stay as they were.
        assert_eq!(
            LatestState::apply(Some(next.clone()), &track[..2]).unwrap(),
            next
        );
        // A backlog longer than the bound keeps the newest points.
        let long = equator_track(TRAIL_MAX + 20);
        let capped = LatestState::apply(None, &long).unwrap();
        assert_eq!(capped.trail.len(), TRAIL_MAX);
        assert_eq!(capped.trail[0].ts_ms, long[20].ts_ms);
    }

    proptest! {
        /// The order-independent aggregates do not depend on how readings are
        /// split into batches or in which order the batches come.
        #[test]
        fn counts_do_not_depend_on_arrival(n in 2usize..80, seed in any::<u64>()) {
            let mut track = equator_track(n);
            let whole = { let mut r = Rollup::default(); r.count_readings(&track); r };
            fastrand::Rng::with_seed(seed).shuffle(&mut track);
            let mut shuffled = Rollup::default();
            for chunk in track.chunks(1 + (seed % 7) as usize) {
                shuffled.count_readings(chunk);
            }
            prop_assert_eq!(shuffled.count, whole.count);
            prop_assert_eq!((shuffled.speed_min, shuffled.speed_max, shuffled.speed_count), (whole.speed_min, whole.speed_max, whole.speed_count));
            prop_assert!((shuffled.speed_sum - whole.speed_sum).abs() < 1e-9);
            prop_assert_eq!((shuffled.battery_min, shuffled.battery_last, shuffled.bbox), (whole.battery_min, whole.battery_last, whole.bbox));
        }

        /// A day made of its hours' rollups is the day made of its readings.
        #[test]
        fn a_day_of_its_hours_is_the_day_of_its_readings(n in 1usize..200, seed in any::<u64>()) {
            let mut rng = fastrand::Rng::with_seed(seed);
            // Readings over a day, some hours empty, owners mixed or not.
            let mut track = equator_track(n);
            for reading in &mut track {
                reading.ts_ms = T0 + rng.i64(0..DAY_MS - HOUR_MS * 8);
                reading.owner = (rng.u8(0..4) == 0).then(|| "acme".to_owned());
                if rng.bool() { reading.speed = None; }
                if rng.bool() { reading.battery = None; }
            }
            let mut hours: std::collections::BTreeMap<i64, Vec<Reading>> = Default::default();
            for reading in &track {
                hours.entry(reading.ts_ms.div_euclid(HOUR_MS) * HOUR_MS).or_default().push(reading.clone());
            }
            let hours: Vec<(i64, Rollup)> = hours.into_iter().map(|(start, readings)| (start, Rollup::of_readings(&readings))).collect();
            let (day, whole) = (Rollup::of_hours(&hours), Rollup::of_readings(&track));
            prop_assert_eq!(day.count, whole.count);
            prop_assert_eq!(&day.holder, &whole.holder);
            prop_assert_eq!((day.speed_min, day.speed_max, day.speed_count), (whole.speed_min, whole.speed_max, whole.speed_count));
            prop_assert!((day.speed_sum - whole.speed_sum).abs() < 1e-6);
            prop_assert_eq!((day.battery_min, day.bbox), (whole.battery_min, whole.bbox));
            prop_assert_eq!(day.battery_last.map(|(ts, _)| ts), whole.battery_last.map(|(ts, _)| ts));
            prop_assert!((day.distance_m() - whole.distance_m()).abs() < 1e-6 * whole.distance_m().max(1.0));
            prop_assert_eq!(day.track.map(|t| (t.first.ts_ms, t.last.ts_ms)), whole.track.map(|t| (t.first.ts_ms, t.last.ts_ms)));
        }

        /// Joining consecutive spans associates: any split gives the whole.
        #[test]
        fn joined_spans_equal_the_whole_track(n in 2usize..80, cuts in prop::collection::btree_set(1usize..79, 0..6)) {
            let track = points(&equator_track(n));
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().filter(|&c| c < n).chain([n]) {
                if cut > start {
                    pieces.push(Span::of_points(&track[start..cut]).unwrap());
                    start = cut;
                }
            }
            pieces.reverse();
            let joined = Span::join(&pieces).unwrap();
            let whole = Span::of_points(&track).unwrap();
            prop_assert!((joined.distance_m - whole.distance_m).abs() < 1e-6);
            prop_assert_eq!((joined.first, joined.last), (whole.first, whole.last));
        }

        /// A span does not depend on the order its points are given in.
        #[test]
        fn spans_ignore_arrival_order(n in 1usize..60, seed in any::<u64>()) {
            let mut track = points(&equator_track(n));
            let whole = Span::of_points(&track).unwrap();
            fastrand::Rng::with_seed(seed).shuffle(&mut track);
            prop_assert_eq!(Span::of_points(&track), Some(whole));
        }
    }
}
