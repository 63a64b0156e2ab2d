//! Per-device state and rollups: the latest position, and hourly and daily
//! aggregates of a tag's readings.
//!
//! # Exactly once
//!
//! Stats are fed by the Telemetry stream's INSERT records: a duplicate
//! delivery of a reading rewrites the same Telemetry item (a MODIFY, or no
//! record at all), so it never reaches these aggregates twice. The stats
//! function's own retries are the other risk: a stream batch that updated some
//! items and then failed is delivered again, whole, bisected, or from a
//! checkpoint. Every DeviceStats item therefore carries the stream sequence
//! number of the last record it absorbed (its *watermark*); an update first
//! drops the records at or below the watermark, and is written on the
//! condition that the watermark is still the one it read. A retried batch thus
//! finds its already-applied part filtered out, item by item, and the totals
//! equal those of one clean run. Sequence numbers grow within a shard, and all
//! the readings of one device share a partition, hence a shard.
//!
//! # Late and out-of-order readings
//!
//! A reading older than the latest state never moves the latest position (ties
//! on time are broken by the reading's sort key, so the choice is stable); it
//! still counts in the hour and the day it was taken in.
//!
//! Distance is the sum of great-circle segments between consecutive readings
//! in time order, within a bucket. A tag that loses connectivity buffers its
//! readings and often sends them after its first live reading, so the bucket
//! has first counted a straight segment across the outage. Such a segment,
//! spanning more than [`RollupRules::gap_ms`], is kept as a *gap*: when a late
//! run arrives whose readings all fall inside a gap, the gap's straight line is
//! replaced by the path through the run (gap start → run → gap end), and the
//! distance is the one an in-order arrival would have given. A late run that
//! falls between two counted readings less than `gap_ms` apart (not a gap)
//! adds only its own internal distance, and is counted in
//! [`Rollup::interleaved_runs`] so that this approximation is visible.

use std::cmp::Ordering;

use crate::geo::distance_m;
use crate::reading::{Reading, write_rfc3339_millis};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

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
    fn of(reading: &Reading) -> Point {
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

/// A straight segment across a time gap, counted provisionally (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    pub from: Point,
    pub to: Point,
}

impl Gap {
    fn duration_ms(&self) -> i64 {
        self.to.ts_ms - self.from.ts_ms
    }
}

/// How rollups treat time gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupRules {
    /// A segment longer than this is a gap that late readings may fill.
    pub gap_ms: i64,
    /// Gaps kept per bucket; beyond it the shortest becomes a plain segment.
    pub max_gaps: usize,
}

impl Default for RollupRules {
    fn default() -> Self {
        RollupRules {
            gap_ms: 120_000,
            max_gaps: 16,
        }
    }
}

/// What a bucket knows of a device's readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    pub count: u64,
    pub distance_m: f64,
    pub speed_min: Option<f64>,
    pub speed_max: Option<f64>,
    pub speed_sum: f64,
    pub speed_count: u64,
    pub battery_min: Option<f64>,
    /// Battery of the newest reading that reported one, and its time.
    pub battery_last: Option<(i64, f64)>,
    /// (lat_min, lat_max, lon_min, lon_max)
    pub bbox: Option<(f64, f64, f64, f64)>,
    pub first: Option<Point>,
    pub last: Option<Point>,
    pub gaps: Vec<Gap>,
    pub interleaved_runs: u64,
}

impl Rollup {
    pub fn speed_mean(&self) -> Option<f64> {
        (self.speed_count > 0).then(|| self.speed_sum / self.speed_count as f64)
    }

    /// Adds readings that all belong to this rollup's bucket, in any order.
    pub fn add_run(&mut self, readings: &[Reading], rules: &RollupRules) {
        if readings.is_empty() {
            return;
        }
        let mut run: Vec<&Reading> = readings.iter().collect();
        run.sort_by(|a, b| {
            a.ts_ms
                .cmp(&b.ts_ms)
                .then_with(|| a.sort_key().cmp(&b.sort_key()))
        });
        for reading in &run {
            self.count_reading(reading);
        }

        let points: Vec<Point> = run.iter().map(|r| Point::of(r)).collect();
        let (head, tail) = (points[0], points[points.len() - 1]);
        let mut gaps = Vec::new();
        let mut internal = 0.0;
        for pair in points.windows(2) {
            internal += pair[0].to(pair[1]);
            self.note_gap(&mut gaps, pair[0], pair[1], rules);
        }

        match (self.first, self.last) {
            (Some(_), Some(last)) if head.ts_ms >= last.ts_ms => {
                self.distance_m += last.to(head) + internal;
                self.note_gap(&mut gaps, last, head, rules);
                self.last = Some(tail);
            }
            (Some(first), Some(_)) if tail.ts_ms <= first.ts_ms => {
                self.distance_m += internal + tail.to(first);
                self.note_gap(&mut gaps, tail, first, rules);
                self.first = Some(head);
            }
            (Some(_), Some(_)) => {
                let filled = self
                    .gaps
                    .iter()
                    .position(|gap| gap.from.ts_ms <= head.ts_ms && tail.ts_ms <= gap.to.ts_ms);
                match filled {
                    Some(index) => {
                        let gap = self.gaps.remove(index);
                        self.distance_m +=
                            gap.from.to(head) + internal + tail.to(gap.to) - gap.from.to(gap.to);
                        self.note_gap(&mut gaps, gap.from, head, rules);
                        self.note_gap(&mut gaps, tail, gap.to, rules);
                    }
                    None => {
                        self.distance_m += internal;
                        self.interleaved_runs += 1;
                    }
                }
            }
            _ => {
                self.distance_m += internal;
                self.first = Some(head);
                self.last = Some(tail);
            }
        }
        self.gaps.extend(gaps);
        while self.gaps.len() > rules.max_gaps {
            if let Some(shortest) = self
                .gaps
                .iter()
                .enumerate()
                .min_by_key(|(_, gap)| gap.duration_ms())
                .map(|(index, _)| index)
            {
                self.gaps.remove(shortest);
            }
        }
        self.gaps.sort_by_key(|gap| gap.from.ts_ms);
    }

    fn note_gap(&self, gaps: &mut Vec<Gap>, from: Point, to: Point, rules: &RollupRules) {
        if to.ts_ms - from.ts_ms > rules.gap_ms {
            gaps.push(Gap { from, to });
        }
    }

    fn count_reading(&mut self, reading: &Reading) {
        self.count += 1;
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

/// Where a device is now: its newest reading, by reading time.
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
    /// Counts the changes of position, so that consumers can order them.
    pub version: u64,
}

impl LatestState {
    /// Folds `readings` (any order) into `current`; `None` stays `None` only for no readings.
    pub fn apply(current: Option<LatestState>, readings: &[Reading]) -> Option<LatestState> {
        let (reading, key) = readings
            .iter()
            .map(|reading| (reading, reading.sort_key()))
            .max_by(|(a, ka), (b, kb)| a.ts_ms.cmp(&b.ts_ms).then_with(|| ka.cmp(kb)))?;
        let newer = current.as_ref().is_none_or(|state| {
            (reading.ts_ms, key.as_str()) > (state.ts_ms, state.reading_key.as_str())
        });
        let mut state = match current {
            Some(state) if !newer => state,
            previous => LatestState {
                ts_ms: reading.ts_ms,
                reading_key: key,
                lat: reading.lat,
                lon: reading.lon,
                speed: reading.speed,
                heading: reading.heading,
                accuracy: reading.accuracy,
                battery: previous.as_ref().and_then(|p| p.battery),
                battery_ts_ms: previous.as_ref().and_then(|p| p.battery_ts_ms),
                seq: reading.seq,
                version: previous.as_ref().map_or(0, |p| p.version) + 1,
            },
        };
        let newest_battery = readings
            .iter()
            .filter_map(|r| r.battery.map(|battery| (r.ts_ms, battery)))
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
        }
    }

    /// A walk along the equator, one reading a minute, 0.01 degree apart.
    fn equator_track(n: usize) -> Vec<Reading> {
        (0..n)
            .map(|i| reading(T0 + i as i64 * 60_000, 0.0, i as f64 * 0.01))
            .collect()
    }

    fn whole(readings: &[Reading]) -> Rollup {
        let mut rollup = Rollup::default();
        rollup.add_run(readings, &RollupRules::default());
        rollup
    }

    fn assert_same_totals(a: &Rollup, b: &Rollup) {
        assert_eq!(a.count, b.count);
        assert!(
            (a.distance_m - b.distance_m).abs() < 1e-6,
            "{} vs {}",
            a.distance_m,
            b.distance_m
        );
        assert_eq!(
            (a.speed_min, a.speed_max, a.speed_count),
            (b.speed_min, b.speed_max, b.speed_count)
        );
        assert!((a.speed_sum - b.speed_sum).abs() < 1e-9);
        assert_eq!(
            (a.battery_min, a.battery_last, a.bbox),
            (b.battery_min, b.battery_last, b.bbox)
        );
        assert_eq!((a.first, a.last), (b.first, b.last));
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
        let rollup = whole(&equator_track(100));
        let expected = 99.0 * 0.01_f64.to_radians() * EARTH_RADIUS_M;
        assert!(
            (rollup.distance_m - expected).abs() / expected < 0.001,
            "{}",
            rollup.distance_m
        );
        assert_eq!(rollup.count, 100);
        assert_eq!(rollup.speed_mean(), Some(49.5));
        assert_eq!(rollup.battery_min, Some(1.0));
        assert_eq!(rollup.battery_last, Some((T0 + 99 * 60_000, 1.0)));
        assert_eq!(rollup.bbox, Some((0.0, 0.0, 0.0, 0.99)));
    }

    #[test]
    fn a_buffered_run_arriving_after_newer_readings_fills_its_gap() {
        let track = equator_track(60);
        let mut late = Rollup::default();
        let rules = RollupRules::default();
        // Live until minute 10, offline until 40 (buffering), then live again;
        // the buffered readings arrive last.
        late.add_run(&track[..11], &rules);
        late.add_run(&track[40..], &rules);
        assert_eq!(
            late.gaps.len(),
            1,
            "the outage is a provisional straight segment"
        );
        late.add_run(&track[11..40], &rules);
        assert_same_totals(&late, &whole(&track));
        assert!(late.gaps.is_empty());
        assert_eq!(late.interleaved_runs, 0);
    }

    #[test]
    fn a_late_run_between_close_readings_is_counted_as_interleaved() {
        let track = equator_track(10);
        let rules = RollupRules::default();
        let mut rollup = Rollup::default();
        let (odd, even): (Vec<_>, Vec<_>) = track
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 2 == 1);
        let even: Vec<_> = even.into_iter().map(|(_, r)| r).collect();
        let odd: Vec<_> = odd.into_iter().map(|(_, r)| r).collect();
        rollup.add_run(&even, &rules);
        rollup.add_run(&odd[..1], &rules);
        assert_eq!(rollup.interleaved_runs, 1);
        assert_eq!(rollup.count, 6);
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

    proptest! {
        /// Splitting a track into live runs and one buffered block that arrives
        /// last gives the totals of one in-order run, whatever the split.
        #[test]
        fn arrival_order_does_not_change_totals(n in 6usize..80, cut in any::<prop::sample::Index>(),
                                                len in 2usize..20, late_first in any::<bool>()) {
            let track = equator_track(n);
            let start = 1 + cut.index(n - 3);
            let end = (start + len).min(n - 1);
            prop_assume!(end - start >= 2);
            let rules = RollupRules::default();
            let mut rollup = Rollup::default();
            if late_first {
                rollup.add_run(&track[end..], &rules);
                rollup.add_run(&track[..start], &rules);
            } else {
                rollup.add_run(&track[..start], &rules);
                rollup.add_run(&track[end..], &rules);
            }
            rollup.add_run(&track[start..end], &rules);
            assert_same_totals(&rollup, &whole(&track));
            prop_assert_eq!(rollup.interleaved_runs, 0);
        }

        /// Contiguous runs in time order associate: (A+B)+C = A+(B+C).
        #[test]
        fn appending_runs_associates(n in 3usize..60, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
            let track = equator_track(n);
            let (mut i, mut j) = (1 + a.index(n - 2), 1 + b.index(n - 2));
            if i > j { std::mem::swap(&mut i, &mut j); }
            let rules = RollupRules::default();
            let mut left = Rollup::default();
            left.add_run(&track[..j], &rules);
            left.add_run(&track[j..], &rules);
            let mut right = Rollup::default();
            right.add_run(&track[..i], &rules);
            right.add_run(&track[i..], &rules);
            assert_same_totals(&left, &right);
            assert_same_totals(&left, &whole(&track));
        }
    }
}
