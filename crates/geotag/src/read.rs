//! The read side's port: what the HTTP API asks of the tables, and an
//! in-memory implementation its tests use.
//!
//! Every method is scoped the way the tables are keyed, so that no answer
//! needs a Scan: a customer's fleet is one partition of the `FleetIndex`, a
//! device's readings and stats are its partitions, a customer's alerts are
//! one partition of the `CustomerAlertsIndex`, its geofences one partition
//! of Geofences. Who may see what is decided by the caller of this port (the
//! API checks the registry, then the owner stamped on every item, see
//! [`crate::tenancy`]); the port only reads where it is told.
//!
//! Pages end at a [`Position`]: the key of the last item examined, in domain
//! terms (a device id, a reading's sort key, an alert's time and id). The
//! API wraps it into an opaque cursor; adapters turn it back into their
//! table's start key.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use crate::geofence::Geofence;
use crate::reading::Reading;
use crate::stats::{Bucket, LatestState, Rollup, show_open_hour};
use crate::store::{StoreError, lock};

/// An alert as the Alerts table logs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedAlert {
    pub id: String,
    /// The alert type's code (`geofence_enter`, `battery_low`, ...).
    pub kind: String,
    pub device_id: String,
    /// The customer it was raised for (`unassigned` for a tag nobody owned).
    pub customer_id: String,
    pub at_ms: i64,
    pub subject: String,
    pub published: bool,
    pub geofence_id: Option<String>,
    pub geofence_name: Option<String>,
}

/// Where a page stopped, to go on from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Position {
    /// After this device of a fleet listing.
    Device(String),
    /// After this Telemetry sort key of a device's readings.
    Reading(String),
    /// After this alert (time, id) of a customer's alerts.
    Alert(i64, String),
}

/// One page of a listing; `next` is `None` on the last page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Position>,
}

/// The granularity of stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    pub fn bucket(self, start_ms: i64) -> Bucket {
        match self {
            Period::Hour => Bucket::Hour(start_ms),
            Period::Day => Bucket::Day(start_ms),
        }
    }
}

/// How a geofence write treats an existing zone of that id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Only if there is none (POST).
    Create,
    /// Only if there is one (PUT).
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeofenceWriteError {
    #[error("a geofence with this id exists")]
    Exists,
    #[error("no geofence with this id")]
    Missing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the API reads and writes.
pub trait FleetReader: Send + Sync {
    /// The customer the registry names for a tag now (`None`: not registered).
    fn owner(
        &self,
        device_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// A customer's tags with their latest state, by device id, after `after`.
    fn fleet(
        &self,
        customer_id: &str,
        after: Option<&Position>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<(String, LatestState)>, StoreError>> + Send;

    /// A tag's latest state.
    fn latest(
        &self,
        device_id: &str,
    ) -> impl Future<Output = Result<Option<LatestState>, StoreError>> + Send;

    /// A tag's readings with `from_ms <= ts < to_ms` stamped with `owner`, in
    /// time order. At most `limit` readings are examined per page (as
    /// DynamoDB's `Limit` does before a filter), so a page can hold fewer than
    /// `limit`, even none, and still have a next one.
    fn readings(
        &self,
        device_id: &str,
        owner: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<&Position>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<Reading>, StoreError>> + Send;

    /// A tag's rollups of one period starting in `[from_ms, to_ms)`, oldest first.
    fn rollups(
        &self,
        device_id: &str,
        period: Period,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<(Bucket, Rollup)>, StoreError>> + Send;

    /// Every reading of a tag in the hour starting at `hour_start_ms`,
    /// whoever owned it: what [`shown_rollups`] makes the open hour's rollup
    /// of (whose holder then decides who may see it).
    fn hour_readings(
        &self,
        device_id: &str,
        hour_start_ms: i64,
    ) -> impl Future<Output = Result<Vec<Reading>, StoreError>> + Send;

    /// A customer's published alerts raised in `[since_ms, until_ms)`, of
    /// `kind` if given, oldest first; `limit` examined per page as above.
    fn alerts(
        &self,
        customer_id: &str,
        since_ms: i64,
        until_ms: i64,
        kind: Option<&str>,
        after: Option<&Position>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<LoggedAlert>, StoreError>> + Send;

    /// The geofences of one scope (a customer id, or `*` for the global ones).
    fn geofences(
        &self,
        scope: &str,
    ) -> impl Future<Output = Result<Vec<Geofence>, StoreError>> + Send;

    /// Writes a customer's geofence (its `customer_id` is the scope).
    fn put_geofence(
        &self,
        geofence: &Geofence,
        mode: WriteMode,
    ) -> impl Future<Output = Result<(), GeofenceWriteError>> + Send;

    /// Removes a customer's geofence; `false` if there was none.
    fn delete_geofence(
        &self,
        customer_id: &str,
        geofence_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A tag's rollups of one period starting in `[from_ms, to_ms)`, oldest
/// first, as a reader must be shown them: the stored ones, with the tag's
/// open hour (its rollup written only when the hour closes, see
/// [`crate::stats`]) made from its readings, and the day holding it joined
/// anew from its hours. Two rounds: the stored rollups and the latest
/// state, then the open hour's readings (and, for days, that day's hours).
pub async fn shown_rollups<F: FleetReader>(
    fleet: &F,
    device_id: &str,
    period: Period,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(Bucket, Rollup)>, StoreError> {
    let (stored, latest) = futures::join!(
        fleet.rollups(device_id, period, from_ms, to_ms),
        fleet.latest(device_id)
    );
    let mut rollups: BTreeMap<Bucket, Rollup> = stored?.into_iter().collect();
    let Some(open_hour) = latest?.map(|state| state.open_hour()) else {
        return Ok(rollups.into_iter().collect());
    };
    let [hour, day] = Bucket::of(open_hour);
    let shown = match period {
        Period::Hour => hour,
        Period::Day => day,
    };
    if !(from_ms..to_ms).contains(&shown.start_ms()) {
        return Ok(rollups.into_iter().collect());
    }
    let day_end = day.start_ms() + crate::clock::DAY_MS;
    let (readings, hours_of_day) =
        futures::join!(fleet.hour_readings(device_id, open_hour), async {
            match period {
                Period::Hour => Ok(Vec::new()),
                Period::Day => {
                    (fleet.rollups(device_id, Period::Hour, day.start_ms(), day_end)).await
                }
            }
        });
    let readings = readings?;
    match period {
        Period::Hour => {
            show_open_hour(&mut rollups, open_hour, &readings);
            // The day it also joins from the hours asked for is not asked for.
            rollups.remove(&day);
        }
        Period::Day => {
            let mut hours: BTreeMap<Bucket, Rollup> = hours_of_day?.into_iter().collect();
            show_open_hour(&mut hours, open_hour, &readings);
            match hours.remove(&day) {
                Some(joined) => rollups.insert(day, joined),
                None => rollups.remove(&day),
            };
        }
    }
    Ok(rollups.into_iter().collect())
}

/// The tables in memory, for tests of the API.
#[derive(Debug, Default)]
pub struct MemoryFleet {
    owners: Mutex<BTreeMap<String, String>>,
    latest: Mutex<BTreeMap<String, LatestState>>,
    readings: Mutex<BTreeMap<(String, String), Reading>>,
    rollups: Mutex<BTreeMap<(String, Bucket), Rollup>>,
    alerts: Mutex<Vec<LoggedAlert>>,
    geofences: Mutex<BTreeMap<(String, String), Geofence>>,
}

impl MemoryFleet {
    pub fn assign(&self, device_id: &str, customer_id: &str) {
        lock(&self.owners).insert(device_id.to_owned(), customer_id.to_owned());
    }

    /// Stores readings as ingest would, and what the stats function makes of them: each
    /// tag's latest state, and the rollups of every hour but its open one
    /// (written when it closes, see [`crate::stats`]) and of their days.
    pub fn record(&self, readings: &[Reading]) {
        let mut latest = lock(&self.latest);
        let mut stored = lock(&self.readings);
        let mut touched = std::collections::BTreeSet::new();
        for reading in readings {
            stored.insert(
                (reading.device_id.clone(), reading.sort_key()),
                reading.clone(),
            );
            let current = latest.remove(&reading.device_id);
            if let Some(state) = LatestState::apply(current, std::slice::from_ref(reading)) {
                latest.insert(reading.device_id.clone(), state);
            }
            touched.insert(reading.device_id.clone());
        }
        let mut rollups = lock(&self.rollups);
        for device_id in touched {
            let open_hour = latest.get(&device_id).map(LatestState::open_hour);
            let mut hours: BTreeMap<i64, Vec<Reading>> = BTreeMap::new();
            for ((device, _), reading) in stored.iter() {
                let [hour, _] = Bucket::of(reading.ts_ms);
                if *device == device_id && Some(hour.start_ms()) != open_hour {
                    hours
                        .entry(hour.start_ms())
                        .or_default()
                        .push(reading.clone());
                }
            }
            let mut days: BTreeMap<i64, Vec<(i64, Rollup)>> = BTreeMap::new();
            for (start, in_hour) in hours {
                let rollup = Rollup::of_readings(&in_hour);
                let [hour, day] = Bucket::of(start);
                days.entry(day.start_ms())
                    .or_default()
                    .push((start, rollup.clone()));
                rollups.insert((device_id.clone(), hour), rollup);
            }
            for (start, hours) in days {
                rollups.insert(
                    (device_id.clone(), Bucket::Day(start)),
                    Rollup::of_hours(&hours),
                );
            }
        }
    }

    pub fn put_rollup(&self, device_id: &str, bucket: Bucket, rollup: Rollup) {
        lock(&self.rollups).insert((device_id.to_owned(), bucket), rollup);
    }

    pub fn log_alert(&self, alert: LoggedAlert) {
        lock(&self.alerts).push(alert);
    }

    pub fn add_geofence(&self, geofence: Geofence) {
        let key = (geofence.scope().to_owned(), geofence.id.clone());
        lock(&self.geofences).insert(key, geofence);
    }
}

/// The first `limit` of `items` after `after`, and where they stopped.
fn page_of<T: Clone>(
    items: impl Iterator<Item = (Position, T)>,
    after: Option<&Position>,
    limit: usize,
) -> (Vec<(Position, T)>, Option<Position>) {
    let mut rest = items.filter(|(position, _)| after.is_none_or(|after| position > after));
    let examined: Vec<(Position, T)> = rest.by_ref().take(limit).collect();
    let next = if examined.len() == limit && rest.next().is_some() {
        examined.last().map(|(position, _)| position.clone())
    } else {
        None
    };
    (examined, next)
}

impl FleetReader for MemoryFleet {
    async fn owner(&self, device_id: &str) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.owners).get(device_id).cloned())
    }

    async fn fleet(
        &self,
        customer_id: &str,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Page<(String, LatestState)>, StoreError> {
        let latest = lock(&self.latest);
        let (examined, next) = page_of(
            latest
                .iter()
                .filter(|(_, state)| state.owner.as_deref() == Some(customer_id))
                .map(|(device, state)| {
                    (
                        Position::Device(device.clone()),
                        (device.clone(), state.clone()),
                    )
                }),
            after,
            limit,
        );
        Ok(Page {
            items: examined.into_iter().map(|(_, item)| item).collect(),
            next,
        })
    }

    async fn latest(&self, device_id: &str) -> Result<Option<LatestState>, StoreError> {
        Ok(lock(&self.latest).get(device_id).cloned())
    }

    async fn readings(
        &self,
        device_id: &str,
        owner: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Page<Reading>, StoreError> {
        let readings = lock(&self.readings);
        let (examined, next) = page_of(
            readings
                .iter()
                .filter(|((device, _), reading)| {
                    device == device_id && (from_ms..to_ms).contains(&reading.ts_ms)
                })
                .map(|((_, key), reading)| (Position::Reading(key.clone()), reading.clone())),
            after,
            limit,
        );
        Ok(Page {
            items: examined
                .into_iter()
                .map(|(_, reading)| reading)
                .filter(|reading| reading.owner.as_deref() == Some(owner))
                .collect(),
            next,
        })
    }

    async fn rollups(
        &self,
        device_id: &str,
        period: Period,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(Bucket, Rollup)>, StoreError> {
        Ok(lock(&self.rollups)
            .iter()
            .filter(|((device, bucket), _)| {
                device == device_id
                    && *bucket == period.bucket(bucket.start_ms())
                    && (from_ms..to_ms).contains(&bucket.start_ms())
            })
            .map(|((_, bucket), rollup)| (*bucket, rollup.clone()))
            .collect())
    }

    async fn hour_readings(
        &self,
        device_id: &str,
        hour_start_ms: i64,
    ) -> Result<Vec<Reading>, StoreError> {
        let hour = hour_start_ms..hour_start_ms + crate::clock::HOUR_MS;
        Ok(lock(&self.readings)
            .iter()
            .filter(|((device, _), reading)| device == device_id && hour.contains(&reading.ts_ms))
            .map(|(_, reading)| reading.clone())
            .collect())
    }

    async fn alerts(
        &self,
        customer_id: &str,
        since_ms: i64,
        until_ms: i64,
        kind: Option<&str>,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Page<LoggedAlert>, StoreError> {
        let mut alerts: Vec<LoggedAlert> = lock(&self.alerts)
            .iter()
            .filter(|alert| {
                alert.customer_id == customer_id && (since_ms..until_ms).contains(&alert.at_ms)
            })
            .cloned()
            .collect();
        alerts.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        let (examined, next) = page_of(
            alerts
                .into_iter()
                .map(|alert| (Position::Alert(alert.at_ms, alert.id.clone()), alert)),
            after,
            limit,
        );
        Ok(Page {
            items: examined
                .into_iter()
                .map(|(_, alert)| alert)
                .filter(|alert| alert.published && kind.is_none_or(|kind| alert.kind == kind))
                .collect(),
            next,
        })
    }

    async fn geofences(&self, scope: &str) -> Result<Vec<Geofence>, StoreError> {
        Ok(lock(&self.geofences)
            .iter()
            .filter(|((held, _), _)| held == scope)
            .map(|(_, geofence)| geofence.clone())
            .collect())
    }

    async fn put_geofence(
        &self,
        geofence: &Geofence,
        mode: WriteMode,
    ) -> Result<(), GeofenceWriteError> {
        let mut geofences = lock(&self.geofences);
        let key = (geofence.scope().to_owned(), geofence.id.clone());
        match (mode, geofences.contains_key(&key)) {
            (WriteMode::Create, true) => Err(GeofenceWriteError::Exists),
            (WriteMode::Replace, false) => Err(GeofenceWriteError::Missing),
            _ => {
                geofences.insert(key, geofence.clone());
                Ok(())
            }
        }
    }

    async fn delete_geofence(
        &self,
        customer_id: &str,
        geofence_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(lock(&self.geofences)
            .remove(&(customer_id.to_owned(), geofence_id.to_owned()))
            .is_some())
    }
}
