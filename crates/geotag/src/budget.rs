//! One tag cannot delay the fleet: a reading budget per tag and minute.
//!
//! A tag may have at most `readings_per_minute` readings stamped in any one
//! minute of its own clock; messages beyond that are parked in the
//! quarantine queue with the reason [`Reason::RateExceeded`], unchanged, not
//! stored and not lost (`geotag redrive --quarantine` sends them back, past
//! the budget, once an operator has looked).
//!
//! # Why the readings' time, not the arrival time
//!
//! A rate by arrival would call the whole fleet a flood after every outage:
//! when ingest comes back, an hour of everybody's messages arrives in
//! minutes. A tag back from a day offline sends a day of readings at once,
//! one a minute. Counted by the minute each reading is stamped with, both
//! are what they are, ordinary; a tag in a publish loop (a firmware bug, a
//! stuck clock repeating one reading) is not: its copies pile into few
//! minutes. Copies count, because a loop that repeats one reading costs
//! ingest as much as one that does not.
//!
//! # Why only some tags are counted
//!
//! The count is shared by every ingest instance, so it lives in a table (the
//! [`RateLedger`]), and one conditional write per tag per batch would double
//! what a fleet of one-reading messages costs. A tag is counted only for the
//! minutes in which one batch holds at least [`SUSPECT_AT`] of its readings.
//! A flood is, by being one, a large share of the traffic, so it fills every
//! batch; a tag that never has two readings of one minute in a batch sends
//! at most one a minute per concurrent batch, which is no share of a fleet.
//! Once a tag has been counted, each ingest instance remembers it
//! ([`HotTags`]) for [`HOT_FOR`] and counts all of its readings, one alone
//! in a batch too, stamped within [`HOT_MARGIN_MS`] of the minutes it has
//! counted: a copy of a flood's reading that SNS delivers late, minutes
//! after the flood moved on, is counted against its minute too. What a flood
//! sends before its first batch with two of its readings of one minute, at
//! most one a batch, is all that goes uncounted.

use std::collections::BTreeMap;
use std::future::Future;

use crate::clock::MINUTE_MS;
use crate::store::StoreError;
use crate::{Reason, Rejection};

/// Readings of one tag stamped in one minute, in one batch, from which the
/// tag is counted against its budget for that minute.
pub const SUSPECT_AT: usize = 2;

/// How far (in the readings' time) outside the minutes it was counted in a
/// hot tag's readings are all counted.
pub const HOT_MARGIN_MS: i64 = 5 * MINUTE_MS;

/// How long (by the instance's clock) a tag stays hot after it was last
/// counted: as long as DeviceRates keeps the counts.
pub const HOT_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// The minutes a hot tag was counted in, and when it was last.
#[derive(Debug, Clone, Copy)]
struct HotRange {
    from_ms: i64,
    to_ms: i64,
    at: std::time::Instant,
}

/// Tags remembered past this many are forgotten, all at once, the next
/// time one is counted (a flood is one or a few tags; this bounds memory
/// if many tags are counted once each, as SNS's duplicates make some).
const HOT_TAGS_KEPT: usize = 10_000;

/// The tags an ingest instance has counted, and the last minute it counted
/// each (see the module's doc).
#[derive(Debug, Default)]
pub struct HotTags {
    counted: std::sync::Mutex<std::collections::HashMap<String, HotRange>>,
}

impl HotTags {
    fn is_hot(&self, device_id: &str, minute_ms: i64) -> bool {
        let hot = crate::store::lock(&self.counted);
        hot.get(device_id).is_some_and(|range| {
            range.at.elapsed() < HOT_FOR
                && (range.from_ms - HOT_MARGIN_MS..=range.to_ms + HOT_MARGIN_MS)
                    .contains(&minute_ms)
        })
    }

    fn counted(&self, counts: &[MinuteCount]) {
        let now = std::time::Instant::now();
        let mut hot = crate::store::lock(&self.counted);
        if hot.len() > HOT_TAGS_KEPT {
            hot.retain(|_, range| now.duration_since(range.at) < HOT_FOR);
            if hot.len() > HOT_TAGS_KEPT {
                hot.clear();
            }
        }
        for count in counts {
            let range = hot.entry(count.device_id.clone()).or_insert(HotRange {
                from_ms: count.minute_ms,
                to_ms: count.minute_ms,
                at: now,
            });
            range.from_ms = range.from_ms.min(count.minute_ms);
            range.to_ms = range.to_ms.max(count.minute_ms);
            range.at = now;
        }
    }
}

/// The budget as configured (`DEVICE_READINGS_PER_MINUTE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub readings_per_minute: u64,
}

/// A tag's readings in one minute, as one batch adds them to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MinuteCount {
    pub device_id: String,
    /// The minute's start, epoch ms.
    pub minute_ms: i64,
    pub readings: u64,
}

/// The shared counts: every ingest instance adds to the same ones.
pub trait RateLedger: Send + Sync {
    /// Adds each count to its tag's minute and answers each total after the
    /// addition, in the order given.
    fn add(
        &self,
        counts: &[MinuteCount],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;
}

/// No ledger: every reading is within budget (a stack deployed without one,
/// and tests of everything else).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited;

impl RateLedger for Unlimited {
    async fn add(&self, counts: &[MinuteCount]) -> Result<Vec<u64>, StoreError> {
        Ok(counts.iter().map(|_| 0).collect())
    }
}

/// An in-memory [`RateLedger`], shared as the table is by whoever holds it.
#[derive(Debug, Default)]
pub struct MemoryRateLedger {
    totals: std::sync::Mutex<BTreeMap<(String, i64), u64>>,
    unavailable: std::sync::atomic::AtomicBool,
}

impl MemoryRateLedger {
    /// Makes every `add` fail (a throttled table), or succeed again.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable
            .store(unavailable, std::sync::atomic::Ordering::Relaxed);
    }

    /// The count of a tag's minute.
    pub fn total(&self, device_id: &str, minute_ms: i64) -> u64 {
        let totals = crate::store::lock(&self.totals);
        totals
            .get(&(device_id.to_owned(), minute_ms))
            .copied()
            .unwrap_or(0)
    }
}

impl RateLedger for MemoryRateLedger {
    async fn add(&self, counts: &[MinuteCount]) -> Result<Vec<u64>, StoreError> {
        if self.unavailable.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Service {
                code: "ThrottlingException".into(),
                message: "the rate ledger is unavailable (a test's fault)".into(),
            });
        }
        let mut totals = crate::store::lock(&self.totals);
        Ok(counts
            .iter()
            .map(|count| {
                let total = totals
                    .entry((count.device_id.clone(), count.minute_ms))
                    .or_default();
                *total += count.readings;
                *total
            })
            .collect())
    }
}

/// A reading of the batch, as the budget sees it.
#[derive(Debug, Clone, Copy)]
pub struct Stamped<'a> {
    pub device_id: &'a str,
    pub ts_ms: i64,
}

/// The (tag, minute) groups of a batch worth counting: every group of a tag
/// that has one with at least [`SUSPECT_AT`] readings, and any of a tag in
/// `hot`, each with the indices of its readings in batch order. The tags
/// returned are remembered in `hot`.
pub fn suspects_among(readings: &[Stamped<'_>], hot: &HotTags) -> Vec<(MinuteCount, Vec<usize>)> {
    let groups = grouped(readings);
    let suspected: std::collections::BTreeSet<&str> = (groups.iter())
        .filter(|(_, indices)| indices.len() >= SUSPECT_AT)
        .map(|((device_id, _), _)| *device_id)
        .collect();
    let groups = counts_of(groups, |device_id, minute_ms, _| {
        suspected.contains(device_id) || hot.is_hot(device_id, minute_ms)
    });
    let counts: Vec<MinuteCount> = groups.iter().map(|(count, _)| count.clone()).collect();
    hot.counted(&counts);
    groups
}

/// The (tag, minute) groups of a batch with at least [`SUSPECT_AT`]
/// readings, each with the indices of its readings in batch order.
pub fn suspects(readings: &[Stamped<'_>]) -> Vec<(MinuteCount, Vec<usize>)> {
    counts_of(grouped(readings), |_, _, readings| readings >= SUSPECT_AT)
}

/// The batch's readings by (tag, minute), each group's indices in batch order.
fn grouped<'a>(readings: &[Stamped<'a>]) -> BTreeMap<(&'a str, i64), Vec<usize>> {
    let mut groups: BTreeMap<(&str, i64), Vec<usize>> = BTreeMap::new();
    for (index, reading) in readings.iter().enumerate() {
        let minute_ms = reading.ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        groups
            .entry((reading.device_id, minute_ms))
            .or_default()
            .push(index);
    }
    groups
}

/// The groups `counted` keeps, as the ledger takes them.
fn counts_of(
    groups: BTreeMap<(&str, i64), Vec<usize>>,
    counted: impl Fn(&str, i64, usize) -> bool,
) -> Vec<(MinuteCount, Vec<usize>)> {
    groups
        .into_iter()
        .filter(|((device_id, minute_ms), indices)| counted(device_id, *minute_ms, indices.len()))
        .map(|((device_id, minute_ms), indices)| {
            let count = MinuteCount {
                device_id: device_id.to_owned(),
                minute_ms,
                readings: indices.len() as u64,
            };
            (count, indices)
        })
        .collect()
}

/// Which readings are over budget: in each group, those after the first ones
/// that fit in what the minute had left before this batch added to it
/// (`total` is the ledger's answer, this batch's readings included).
pub fn over_budget(
    groups: &[(MinuteCount, Vec<usize>)],
    totals: &[u64],
    limit: RateLimit,
) -> Vec<usize> {
    let mut over = Vec::new();
    for ((count, indices), &total) in groups.iter().zip(totals) {
        let before = total.saturating_sub(count.readings);
        let left =
            usize::try_from(limit.readings_per_minute.saturating_sub(before)).unwrap_or(usize::MAX);
        over.extend(indices.iter().skip(left));
    }
    over.sort_unstable();
    over
}

/// The reason a parked message carries: which minute ran over, by how much.
pub fn rate_exceeded(count: &MinuteCount, total: u64, limit: RateLimit) -> Rejection {
    Rejection::new(
        Reason::RateExceeded,
        "ts",
        format!(
            "{:?} has {total} readings stamped in the minute from {} (epoch ms), over its budget of {} a minute; \
             parked, not stored: redrive them with `geotag redrive --quarantine` once the tag is looked at",
            count.device_id, count.minute_ms, limit.readings_per_minute
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamped(readings: &[(&'static str, i64)]) -> Vec<Stamped<'static>> {
        readings
            .iter()
            .map(|&(device_id, ts_ms)| Stamped { device_id, ts_ms })
            .collect()
    }

    #[test]
    fn a_tag_with_one_reading_in_a_minute_is_not_counted() {
        let readings = stamped(&[("a", 0), ("a", MINUTE_MS), ("b", 5), ("a", 2 * MINUTE_MS)]);
        assert!(suspects(&readings).is_empty());
    }

    #[test]
    fn a_backlog_of_a_day_at_one_a_minute_is_not_counted() {
        let day: Vec<(&str, i64)> = (0..1_440).map(|minute| ("a", minute * MINUTE_MS)).collect();
        assert!(suspects(&stamped(&day)).is_empty());
    }

    #[test]
    fn a_counted_tag_is_counted_alone_too_while_it_stays_hot() {
        let hot = HotTags::default();
        let pair = stamped(&[("a", 1), ("a", 2), ("b", 3)]);
        assert_eq!(suspects_among(&pair, &hot).len(), 1);
        // Alone in its batch now, a minute later: counted; b never was.
        let alone = stamped(&[("a", MINUTE_MS + 1), ("b", MINUTE_MS + 2)]);
        let groups = suspects_among(&alone, &hot);
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].0.device_id.as_str(), groups[0].0.readings),
            ("a", 1)
        );
        // A late copy of a minute it was counted in: counted.
        let late = stamped(&[("a", 3)]);
        assert_eq!(suspects_among(&late, &hot).len(), 1);
        // Far from the minutes it was counted in, a lone reading is not.
        let later = stamped(&[("a", 2 * MINUTE_MS + HOT_MARGIN_MS)]);
        assert!(suspects_among(&later, &hot).is_empty());
    }

    #[test]
    fn readings_of_one_minute_are_grouped_whatever_their_order() {
        let readings = stamped(&[("a", 59_999), ("b", 1), ("a", 1), ("a", -1), ("a", 60_000)]);
        let groups = suspects(&readings);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0.device_id, "a");
        assert_eq!(groups[0].0.minute_ms, 0);
        assert_eq!(groups[0].0.readings, 2);
        assert_eq!(groups[0].1, vec![0, 2]);
    }

    #[test]
    fn the_first_readings_that_fit_are_admitted_and_the_rest_are_over() {
        let limit = RateLimit {
            readings_per_minute: 5,
        };
        let readings = stamped(&[("a", 1), ("a", 2), ("a", 3), ("a", 4)]);
        let groups = suspects(&readings);
        // Three were counted before this batch: two of its four fit.
        assert_eq!(over_budget(&groups, &[7], limit), vec![2, 3]);
        // None were: all fit.
        assert!(over_budget(&groups, &[4], limit).is_empty());
        // The minute was full already.
        assert_eq!(over_budget(&groups, &[100], limit), vec![0, 1, 2, 3]);
    }

    proptest! {
        /// Whatever a batch holds and the ledger answers, no index is lost or
        /// invented, and what is admitted of a minute never takes its total
        /// past the budget.
        #[test]
        fn admitted_readings_never_exceed_what_the_minute_has_left(
            readings in proptest::collection::vec((0usize..3, -200_000i64..200_000), 0..60),
            before in proptest::collection::vec(0u64..20, 20),
            per_minute in 0u64..10,
        ) {
            const TAGS: [&str; 3] = ["a", "b", "c"];
            let stamped: Vec<Stamped<'_>> = readings
                .iter()
                .map(|&(tag, ts_ms)| Stamped { device_id: TAGS[tag], ts_ms })
                .collect();
            let limit = RateLimit { readings_per_minute: per_minute };
            let groups = suspects(&stamped);
            let totals: Vec<u64> = groups
                .iter()
                .enumerate()
                .map(|(index, (count, _))| before[index % before.len()] + count.readings)
                .collect();
            let over = over_budget(&groups, &totals, limit);
            prop_assert!(over.iter().all(|&index| index < stamped.len()));
            for ((count, indices), total) in groups.iter().zip(&totals) {
                let admitted = indices.iter().filter(|index| !over.contains(index)).count() as u64;
                let before = total - count.readings;
                prop_assert!(admitted <= per_minute.saturating_sub(before));
                prop_assert_eq!(admitted, count.readings.min(per_minute.saturating_sub(before)));
            }
            let counted: usize = groups.iter().map(|(_, indices)| indices.len()).sum();
            prop_assert!(over.len() <= counted);
        }
    }
}
