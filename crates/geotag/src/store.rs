//! The ports the functions read and write through, and in-memory implementations.
//!
//! The traits say what the handler needs, not how AWS does it: the DynamoDB and
//! SQS adapters live in `geotag-aws`; the in-memory ones below serve unit and
//! handler tests, and can be told to fail so that failure paths are tested too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use crate::alerts::{Alert, SpeedWatch, Thresholds};
use crate::clock::now_ms;
use crate::geofence::Geofence;
use crate::reading::Reading;
use crate::reject::Rejection;

pub use crate::directory::{DeviceDirectory, MemoryDirectory, NoRegistry, UnregisteredDevices};

mod stats_store;
pub use stats_store::{
    Expected, LATEST_SORT_KEY, Loaded, MemoryStatsStore, ReadingsByHour, SaveError, StatsBody,
    StatsItem, StatsKey, StatsStore, shown_rollups_of_table,
};

/// Why a write did not happen. Every variant is worth retrying later (SQS will):
/// even a missing table is usually a deployment in progress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttled, or unprocessed by BatchWriteItem, until the time budget ran out.
    #[error("throttled or unprocessed until the invocation's time budget ran out")]
    OutOfTime,
    /// A service or transport error that retrying in this invocation did not cure.
    #[error("{code}: {message}")]
    Service { code: String, message: String },
}

/// What a batch of writes did, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Readings that were not stored, by their index in the input, with why.
    pub failed: Vec<(usize, StoreError)>,
    /// Write requests sent (BatchWriteItem calls, including retries).
    pub requests: u32,
    /// Retries after throttling, errors or unprocessed items.
    pub retries: u32,
    /// Write units the stored readings cost (one per started kilobyte of item).
    pub write_units: u64,
}

/// Where readings are stored. Writing the same reading twice must leave one item.
pub trait ReadingStore: Send + Sync {
    /// Stores every reading, retrying while `deadline` allows, and reports the
    /// ones that could not be stored. Never fails as a whole.
    fn put_readings(
        &self,
        readings: &[Reading],
        deadline: Instant,
    ) -> impl Future<Output = WriteReport> + Send;
}

/// A message refused for good, on its way to the dead-letter queue with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The SQS message id of the refused message.
    pub source_message_id: String,
    /// The original body, unchanged, so that it can be redriven once fixed.
    pub body: String,
    /// The first reason the message (or one of its readings) was refused.
    pub rejection: Rejection,
    /// Readings of the message that were refused.
    pub rejected_readings: usize,
    /// Readings of the message that were stored (a batch can be partly valid).
    pub stored_readings: usize,
}

/// Where refused messages go: the ingest dead-letter queue.
pub trait DeadLetterSink: Send + Sync {
    /// Sends the letters; returns the `source_message_id`s of those not sent.
    fn send(&self, letters: &[DeadLetter]) -> impl Future<Output = Vec<String>> + Send;
}

/// An in-memory [`ReadingStore`] keyed like the Telemetry table.
#[derive(Debug, Default)]
pub struct MemoryReadingStore {
    items: Mutex<BTreeMap<(String, String), Reading>>,
    failing_devices: Mutex<HashSet<String>>,
    puts: Mutex<u64>,
}

impl MemoryReadingStore {
    /// Makes every write of this device fail, as a throttled table would.
    pub fn fail_device(&self, device_id: &str) {
        lock(&self.failing_devices).insert(device_id.to_owned());
    }

    pub fn heal(&self) {
        lock(&self.failing_devices).clear();
    }

    /// The stored readings in key order.
    pub fn readings(&self) -> Vec<Reading> {
        lock(&self.items).values().cloned().collect()
    }

    /// Item writes performed, duplicates included.
    pub fn puts(&self) -> u64 {
        *lock(&self.puts)
    }
}

impl ReadingStore for MemoryReadingStore {
    async fn put_readings(&self, readings: &[Reading], _deadline: Instant) -> WriteReport {
        let failing = lock(&self.failing_devices).clone();
        let mut items = lock(&self.items);
        let mut report = WriteReport {
            requests: readings.len().div_ceil(25) as u32,
            ..WriteReport::default()
        };
        for (index, reading) in readings.iter().enumerate() {
            if failing.contains(&reading.device_id) {
                report.failed.push((index, StoreError::OutOfTime));
            } else {
                *lock(&self.puts) += 1;
                items.insert(
                    (reading.device_id.clone(), reading.sort_key()),
                    reading.clone(),
                );
            }
        }
        report
    }
}

/// An in-memory [`DeadLetterSink`].
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
    unavailable: Mutex<bool>,
}

impl MemoryDeadLetters {
    pub fn letters(&self) -> Vec<DeadLetter> {
        lock(&self.letters).clone()
    }

    /// Makes every send fail until called again with `false`.
    pub fn set_unavailable(&self, unavailable: bool) {
        *lock(&self.unavailable) = unavailable;
    }
}

impl DeadLetterSink for MemoryDeadLetters {
    async fn send(&self, letters: &[DeadLetter]) -> Vec<String> {
        if *lock(&self.unavailable) {
            return letters
                .iter()
                .map(|l| l.source_message_id.clone())
                .collect();
        }
        lock(&self.letters).extend_from_slice(letters);
        Vec::new()
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where the stats function reads a bucket's readings from: the Telemetry table.
pub trait TelemetryReader: Send + Sync {
    /// `device_id`'s readings with `from_ms <= ts < to_ms`, reading
    /// everything written so far.
    fn readings_between(
        &self,
        device_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<Reading>, StoreError>> + Send;
}

impl TelemetryReader for MemoryReadingStore {
    async fn readings_between(
        &self,
        device_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Reading>, StoreError> {
        Ok(lock(&self.items)
            .values()
            .filter(|r| r.device_id == device_id && (from_ms..to_ms).contains(&r.ts_ms))
            .cloned()
            .collect())
    }
}

impl MemoryReadingStore {
    /// Stores readings directly, as if ingest had (for tests of what follows it).
    pub fn insert(&self, readings: &[Reading]) {
        let mut items = lock(&self.items);
        for reading in readings {
            items.insert(
                (reading.device_id.clone(), reading.sort_key()),
                reading.clone(),
            );
        }
    }
}

/// What applies to a tag: its customer (`None`: not in the registry), that
/// customer's thresholds (or the defaults), and the geofences to watch (the
/// customer's and the global ones).
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub customer_id: Option<String>,
    pub thresholds: Thresholds,
    pub geofences: Vec<Geofence>,
}

/// The device registry, customers' thresholds and the geofences.
pub trait Registry: Send + Sync {
    /// An assignment for every device asked for (unknown devices get the
    /// defaults, no customer, and the global geofences).
    fn assignments(
        &self,
        devices: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Assignment>, StoreError>> + Send;

    /// The thresholds in force for any device: the defaults and every
    /// customer's own (the silence check takes its time window from them).
    fn all_thresholds(&self) -> impl Future<Output = Result<Vec<Thresholds>, StoreError>> + Send;
}

/// Devices by the time they were last seen: the DeviceStats `SilenceIndex`.
pub trait SilenceIndex: Send + Sync {
    /// (device id, last seen) of the devices last seen in `[from_ms, to_ms)`.
    fn last_seen_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;
}

/// What [`AlertLog::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First time this id is seen: it is now recorded; publish it.
    New,
    /// Recorded before, never marked published (a publish failed): publish it.
    Unpublished,
    /// Published already: do nothing.
    Published,
    /// Claimed by another invocation that may still be publishing it, until
    /// its lease runs out at `until_ms`: try again later.
    Busy { until_ms: i64 },
}

/// The record of alerts raised, keyed by their deterministic ids, and each
/// device's speeding episode.
///
/// A claim is a lease: the claimer has until `lease_until_ms` (its
/// invocation's deadline) to publish and mark the alert, and meanwhile a
/// concurrent claimer finds it [`Claim::Busy`]. A claimer that failed to
/// publish releases it at once, so that the retry need not wait.
pub trait AlertLog: Send + Sync {
    /// Records the alert with a conditional write, unless it is published or
    /// leased to another claimer.
    fn claim(
        &self,
        alert: &Alert,
        lease_until_ms: i64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    fn mark_published(&self, alert_id: &str)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Gives up a claim whose publish failed.
    fn release(&self, alert_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn speed_watches(
        &self,
        devices: &[String],
    ) -> impl Future<Output = Result<HashMap<String, SpeedWatch>, StoreError>> + Send;
    fn save_speed_watch(
        &self,
        device_id: &str,
        watch: &SpeedWatch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Where alerts go: the alerts topic, and who is subscribed to it.
pub trait AlertSink: Send + Sync {
    fn publish(&self, alert: &Alert) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every subscription of the topic, with its filter attributes.
    fn subscriptions(
        &self,
    ) -> impl Future<Output = Result<Vec<crate::alert_filter::Subscription>, StoreError>> + Send;
}

/// An in-memory [`Registry`].
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    pub defaults: Thresholds,
    pub customers_of: Mutex<HashMap<String, String>>,
    pub thresholds_of: Mutex<HashMap<String, Thresholds>>,
    pub geofences: Mutex<Vec<Geofence>>,
}

impl Registry for MemoryRegistry {
    async fn assignments(
        &self,
        devices: &[String],
    ) -> Result<HashMap<String, Assignment>, StoreError> {
        let customers = lock(&self.customers_of);
        let thresholds = lock(&self.thresholds_of);
        let geofences = lock(&self.geofences);
        Ok(devices
            .iter()
            .map(|device| {
                let customer_id = customers.get(device).cloned();
                let assignment = Assignment {
                    thresholds: customer_id
                        .as_ref()
                        .and_then(|c| thresholds.get(c))
                        .copied()
                        .unwrap_or(self.defaults),
                    geofences: geofences
                        .iter()
                        .filter(|g| g.customer_id.is_none() || g.customer_id == customer_id)
                        .cloned()
                        .collect(),
                    customer_id,
                };
                (device.clone(), assignment)
            })
            .collect())
    }

    async fn all_thresholds(&self) -> Result<Vec<Thresholds>, StoreError> {
        let mut all = vec![self.defaults];
        all.extend(lock(&self.thresholds_of).values().copied());
        Ok(all)
    }
}

/// An in-memory [`AlertLog`] and [`AlertSink`], which can be told to fail publishes.
#[derive(Debug, Default)]
pub struct MemoryAlerts {
    /// id -> (published?, lease until)
    claims: Mutex<BTreeMap<String, (bool, i64)>>,
    watches: Mutex<HashMap<String, SpeedWatch>>,
    published: Mutex<Vec<Alert>>,
    failing_publishes: Mutex<u32>,
    /// What [`AlertSink::subscriptions`] answers.
    pub subscriptions: Mutex<Vec<crate::alert_filter::Subscription>>,
}

impl MemoryAlerts {
    /// Makes the next `count` publishes fail.
    pub fn fail_next_publishes(&self, count: u32) {
        *lock(&self.failing_publishes) = count;
    }

    /// Every alert published, in order.
    pub fn published(&self) -> Vec<Alert> {
        lock(&self.published).clone()
    }
}

impl AlertLog for MemoryAlerts {
    async fn claim(&self, alert: &Alert, lease_until_ms: i64) -> Result<Claim, StoreError> {
        let mut claims = lock(&self.claims);
        let now = now_ms();
        Ok(match claims.get(&alert.id).copied() {
            None => {
                claims.insert(alert.id.clone(), (false, lease_until_ms));
                Claim::New
            }
            Some((true, _)) => Claim::Published,
            Some((false, lease)) if lease > now => Claim::Busy { until_ms: lease },
            Some((false, _)) => {
                claims.insert(alert.id.clone(), (false, lease_until_ms));
                Claim::Unpublished
            }
        })
    }

    async fn mark_published(&self, alert_id: &str) -> Result<(), StoreError> {
        lock(&self.claims).insert(alert_id.to_owned(), (true, 0));
        Ok(())
    }

    async fn release(&self, alert_id: &str) -> Result<(), StoreError> {
        if let Some((false, lease)) = lock(&self.claims).get_mut(alert_id) {
            *lease = 0;
        }
        Ok(())
    }

    async fn speed_watches(
        &self,
        devices: &[String],
    ) -> Result<HashMap<String, SpeedWatch>, StoreError> {
        let watches = lock(&self.watches);
        Ok(devices
            .iter()
            .filter_map(|d| watches.get(d).map(|w| (d.clone(), *w)))
            .collect())
    }

    async fn save_speed_watch(
        &self,
        device_id: &str,
        watch: &SpeedWatch,
    ) -> Result<(), StoreError> {
        lock(&self.watches).insert(device_id.to_owned(), *watch);
        Ok(())
    }
}

/// An in-memory [`SilenceIndex`]: device -> last seen.
#[derive(Debug, Default)]
pub struct MemorySilenceIndex {
    pub last_seen: Mutex<BTreeMap<String, i64>>,
}

impl SilenceIndex for MemorySilenceIndex {
    async fn last_seen_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(lock(&self.last_seen)
            .iter()
            .filter(|(_, seen)| (from_ms..to_ms).contains(*seen))
            .map(|(device, seen)| (device.clone(), *seen))
            .collect())
    }
}

impl AlertSink for MemoryAlerts {
    async fn publish(&self, alert: &Alert) -> Result<(), StoreError> {
        let mut failing = lock(&self.failing_publishes);
        if *failing > 0 {
            *failing -= 1;
            return Err(StoreError::Service {
                code: "InternalError".into(),
                message: "injected publish failure".into(),
            });
        }
        lock(&self.published).push(alert.clone());
        Ok(())
    }

    async fn subscriptions(&self) -> Result<Vec<crate::alert_filter::Subscription>, StoreError> {
        Ok(lock(&self.subscriptions).clone())
    }
}
