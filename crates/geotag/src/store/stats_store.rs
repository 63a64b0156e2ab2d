//! The stats function's port: DeviceStats items, read and written on the
//! condition of their revision, and an in-memory implementation.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;

use super::{StoreError, lock};
use crate::reading::Reading;
use crate::stats::{Bucket, LatestState, Rollup, show_open_hour};

/// A DeviceStats item: a device's latest state, or one of its rollups, with
/// its revision (see `geotag::stats`): for `latest` the number of times it
/// was written, for a rollup the number of readings it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsItem {
    pub device_id: String,
    pub revision: u64,
    pub body: StatsBody,
}

impl StatsItem {
    /// A rollup computed from `count` readings: its revision is that count.
    pub fn rollup(device_id: &str, bucket: Bucket, rollup: Rollup) -> StatsItem {
        StatsItem {
            device_id: device_id.to_owned(),
            revision: rollup.count,
            body: StatsBody::Rollup(bucket, rollup),
        }
    }

    pub fn key(&self) -> StatsKey {
        (self.device_id.clone(), self.body.sort_key())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StatsBody {
    Latest(LatestState),
    Rollup(Bucket, Rollup),
}

/// The DeviceStats sort key of the latest state.
pub const LATEST_SORT_KEY: &str = "latest";

impl StatsBody {
    pub fn sort_key(&self) -> String {
        match self {
            StatsBody::Latest(_) => LATEST_SORT_KEY.to_owned(),
            StatsBody::Rollup(bucket, _) => bucket.sort_key(),
        }
    }
}

/// (device id, sort key) of a DeviceStats item.
pub type StatsKey = (String, String);

/// Why a conditional stats write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    /// The item is not as expected: someone wrote first, or (for
    /// [`Expected::FewerReadings`]) it holds as many readings already.
    #[error("the item changed since it was read")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`StatsStore::load`] found among the keys asked for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loaded {
    pub items: HashMap<StatsKey, StatsItem>,
    /// Items that exist but do not parse as stats (a hand edit, a bug, a
    /// layout from another release), with their `revision` if it is a
    /// number. A write may replace one (see [`Expected`]); nothing else can,
    /// so leaving them would stop their device's stats for good.
    pub unreadable: HashMap<StatsKey, Option<u64>>,
}

/// The state a conditional stats write expects to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// No item.
    Absent,
    /// An item of this revision, readable or not.
    Revision(u64),
    /// An item with no numeric revision.
    Unreadable,
    /// No item, an unreadable one, or one of a lower revision: a rollup
    /// recomputed from this many readings replaces one computed from fewer.
    /// Readings only accumulate, so an item of as many holds the same ones.
    FewerReadings(u64),
}

impl Expected {
    /// What a write of the item at `key` must find, given what was loaded.
    pub fn of(loaded: &Loaded, key: &StatsKey) -> Expected {
        Expected::stored(loaded.items.get(key), loaded.unreadable.get(key))
    }

    /// What a write must find where `item` is stored, or an unreadable item
    /// with `unreadable`'s revision.
    pub fn stored(item: Option<&StatsItem>, unreadable: Option<&Option<u64>>) -> Expected {
        match (item, unreadable) {
            (Some(item), _) => Expected::Revision(item.revision),
            (None, Some(Some(revision))) => Expected::Revision(*revision),
            (None, Some(None)) => Expected::Unreadable,
            (None, None) => Expected::Absent,
        }
    }

    /// Whether a write expecting this may replace what is stored.
    pub fn admits(&self, item: Option<&StatsItem>, unreadable: Option<&Option<u64>>) -> bool {
        match self {
            Expected::FewerReadings(count) => match (item, unreadable) {
                (Some(item), _) => item.revision < *count,
                (None, Some(Some(revision))) => revision < count,
                (None, _) => true,
            },
            expected => Expected::stored(item, unreadable) == *expected,
        }
    }
}

/// Telemetry's readings by device and hour start: what shows every
/// device's open hour when a whole table is read ([`shown_rollups_of_table`]).
#[derive(Debug, Clone, Default)]
pub struct ReadingsByHour(HashMap<(String, i64), Vec<Reading>>);

impl ReadingsByHour {
    pub fn add(&mut self, reading: Reading) {
        let hour = Bucket::of(reading.ts_ms)[0].start_ms();
        (self.0.entry((reading.device_id.clone(), hour)))
            .or_default()
            .push(reading);
    }

    /// `device_id`'s readings in the hour starting at `hour_start_ms`.
    pub fn in_hour(&self, device_id: &str, hour_start_ms: i64) -> &[Reading] {
        (self.0.get(&(device_id.to_owned(), hour_start_ms))).map_or(&[], Vec::as_slice)
    }
}

impl FromIterator<Reading> for ReadingsByHour {
    fn from_iter<I: IntoIterator<Item = Reading>>(readings: I) -> ReadingsByHour {
        let mut by_hour = ReadingsByHour::default();
        readings
            .into_iter()
            .for_each(|reading| by_hour.add(reading));
        by_hour
    }
}

/// Every device's rollups as a reader is shown them (see
/// [`crate::read::shown_rollups`]), from a whole DeviceStats table: the
/// stored rollups, with each device's open hour made from its readings.
pub fn shown_rollups_of_table<'a>(
    items: impl IntoIterator<Item = &'a StatsItem>,
    readings: &ReadingsByHour,
) -> BTreeMap<String, BTreeMap<Bucket, Rollup>> {
    let mut shown: BTreeMap<String, BTreeMap<Bucket, Rollup>> = BTreeMap::new();
    let mut open_hours = Vec::new();
    for item in items {
        match &item.body {
            StatsBody::Rollup(bucket, rollup) => {
                (shown.entry(item.device_id.clone()).or_default()).insert(*bucket, rollup.clone());
            }
            StatsBody::Latest(state) => {
                open_hours.push((item.device_id.as_str(), state.open_hour()))
            }
        }
    }
    for (device_id, open_hour) in open_hours {
        show_open_hour(
            shown.entry(device_id.to_owned()).or_default(),
            open_hour,
            readings.in_hour(device_id, open_hour),
        );
    }
    shown
}

/// Where per-device stats live.
pub trait StatsStore: Send + Sync {
    /// Reads the items that exist among `keys` (strongly consistent).
    fn load(&self, keys: &[StatsKey]) -> impl Future<Output = Result<Loaded, StoreError>> + Send;

    /// The hour rollups stored for `device_id`'s day starting at `day_start_ms`
    /// (strongly consistent), by hour start; unreadable ones left out.
    fn hours_of_day(
        &self,
        device_id: &str,
        day_start_ms: i64,
    ) -> impl Future<Output = Result<Vec<(i64, Rollup)>, StoreError>> + Send;

    /// Writes each item if what is stored is still as `expected`. One result
    /// per write, in order.
    fn save(
        &self,
        writes: &[(StatsItem, Expected)],
    ) -> impl Future<Output = Vec<Result<(), SaveError>>> + Send;
}

/// An in-memory [`StatsStore`] that can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryStatsStore {
    items: Mutex<BTreeMap<StatsKey, StatsItem>>,
    /// Sort keys whose n-th next write fails (once), with n.
    fail_once: Mutex<HashMap<String, u32>>,
    loads: Mutex<u64>,
    saves: Mutex<u64>,
    /// Every write that succeeded, in order: what the DeviceStats stream shows.
    written: Mutex<Vec<StatsItem>>,
    /// Items that do not parse, with their revision if it is a number.
    unreadable: Mutex<HashMap<StatsKey, Option<u64>>>,
    day_queries: Mutex<u64>,
}

impl MemoryStatsStore {
    /// Makes the next write of any item with this sort key fail, once.
    pub fn fail_next_write_of(&self, sort_key: &str) {
        self.fail_nth_write_of(sort_key, 1);
    }

    /// Lets `n - 1` writes of items with this sort key succeed, then fails one.
    pub fn fail_nth_write_of(&self, sort_key: &str, n: u32) {
        lock(&self.fail_once).insert(sort_key.to_owned(), n.max(1));
    }

    pub fn items(&self) -> Vec<StatsItem> {
        lock(&self.items).values().cloned().collect()
    }

    /// Stores an item that does not parse at `key`, as a hand edit would.
    pub fn put_unreadable(&self, key: StatsKey, revision: Option<u64>) {
        lock(&self.items).remove(&key);
        lock(&self.unreadable).insert(key, revision);
    }

    /// Every successful write so far, oldest first.
    pub fn written(&self) -> Vec<StatsItem> {
        lock(&self.written).clone()
    }

    pub fn get(&self, device_id: &str, sort_key: &str) -> Option<StatsItem> {
        lock(&self.items)
            .get(&(device_id.to_owned(), sort_key.to_owned()))
            .cloned()
    }

    /// (load calls, item writes) so far.
    pub fn calls(&self) -> (u64, u64) {
        (*lock(&self.loads), *lock(&self.saves))
    }

    /// [`StatsStore::hours_of_day`] calls so far.
    pub fn day_queries(&self) -> u64 {
        *lock(&self.day_queries)
    }
}

impl StatsStore for MemoryStatsStore {
    async fn load(&self, keys: &[StatsKey]) -> Result<Loaded, StoreError> {
        *lock(&self.loads) += keys.len().div_ceil(100) as u64;
        let items = lock(&self.items);
        let unreadable = lock(&self.unreadable);
        Ok(Loaded {
            items: keys
                .iter()
                .filter_map(|key| items.get(key).map(|item| (key.clone(), item.clone())))
                .collect(),
            unreadable: keys
                .iter()
                .filter_map(|key| unreadable.get(key).map(|mark| (key.clone(), *mark)))
                .collect(),
        })
    }

    async fn hours_of_day(
        &self,
        device_id: &str,
        day_start_ms: i64,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        *lock(&self.day_queries) += 1;
        let day = day_start_ms..day_start_ms + crate::clock::DAY_MS;
        Ok(lock(&self.items)
            .values()
            .filter(|item| item.device_id == device_id)
            .filter_map(|item| match &item.body {
                StatsBody::Rollup(Bucket::Hour(start), rollup) if day.contains(start) => {
                    Some((*start, rollup.clone()))
                }
                _ => None,
            })
            .collect())
    }

    async fn save(&self, writes: &[(StatsItem, Expected)]) -> Vec<Result<(), SaveError>> {
        let mut items = lock(&self.items);
        let mut unreadable = lock(&self.unreadable);
        let mut fail_once = lock(&self.fail_once);
        writes
            .iter()
            .map(|(item, expected)| {
                *lock(&self.saves) += 1;
                let key = item.key();
                if let Some(countdown) = fail_once.get_mut(&key.1) {
                    *countdown -= 1;
                    if *countdown == 0 {
                        fail_once.remove(&key.1);
                        return Err(SaveError::Store(StoreError::Service {
                            code: "InternalServerError".into(),
                            message: "injected".into(),
                        }));
                    }
                }
                if !expected.admits(items.get(&key), unreadable.get(&key)) {
                    return Err(SaveError::Conflict);
                }
                unreadable.remove(&key);
                items.insert(key, item.clone());
                lock(&self.written).push(item.clone());
                Ok(())
            })
            .collect()
    }
}
