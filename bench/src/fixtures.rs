//! The handlers wired to stores that do everything but the network: what the
//! benchmarks time is decoding, validating, folding and building requests.

use std::collections::HashMap;
use std::time::Instant;

use geotag::Reading;
use geotag::alerts::Thresholds;
use geotag::store::{
    MemoryAlerts, MemoryDeadLetters, MemoryRegistry, MemorySilenceIndex, MemoryStatsStore,
    ReadingStore, StoreError, TelemetryReader, WriteReport,
};
use geotag_aws::telemetry::{MAX_BATCH_WRITE, write_request};

use crate::events::{NOW_MS, RETENTION_DAYS, geofences};

/// A Telemetry store that builds every BatchWriteItem request, as the real
/// one does before sending, and sends nothing.
#[derive(Debug, Default)]
pub struct RequestsBuilt;

impl ReadingStore for RequestsBuilt {
    async fn put_readings(&self, readings: &[Reading], _deadline: Instant) -> WriteReport {
        let mut report = WriteReport::default();
        for (index, chunk) in readings.chunks(MAX_BATCH_WRITE).enumerate() {
            let requests: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(
                    |(offset, reading)| match write_request(reading, RETENTION_DAYS) {
                        Ok(request) => Some(request),
                        Err(error) => {
                            report
                                .failed
                                .push((index * MAX_BATCH_WRITE + offset, error));
                            None
                        }
                    },
                )
                .collect();
            std::hint::black_box(requests);
            report.requests += 1;
        }
        report
    }
}

pub type Ingest = geotag_ingest::Ingest<
    RequestsBuilt,
    MemoryDeadLetters,
    geotag::store::NoRegistry,
    geotag::budget::Unlimited,
>;

/// Ingest as deployed but for AWS: the tags' budget checked too (its
/// grouping by tag and minute is on the hot path; the ledger answers as if
/// each batch were a minute's first, so that repeating the batch parks nothing).
pub fn ingest() -> Ingest {
    let mut ingest = geotag_ingest::Ingest::new(
        RequestsBuilt,
        MemoryDeadLetters::default(),
        geotag::Limits::default(),
    )
    .with_throttle(geotag_ingest::Throttle::new(
        geotag::budget::Unlimited,
        MemoryDeadLetters::default(),
        geotag::budget::RateLimit {
            readings_per_minute: 60,
        },
    ));
    ingest.clock = || NOW_MS;
    ingest.metrics = geotag_runtime::emf::Emitter::for_binary("ingest")
        .with_sink(geotag_runtime::emf::Sink::Discard);
    ingest
}

/// The hours' readings, as Telemetry Queries would answer them.
#[derive(Debug, Default, Clone)]
pub struct HourReadings(HashMap<(String, i64), Vec<Reading>>);

impl HourReadings {
    pub fn of(readings: &[Reading]) -> HourReadings {
        let mut hours: HashMap<(String, i64), Vec<Reading>> = HashMap::new();
        for reading in readings {
            let hour = reading.ts_ms.div_euclid(3_600_000) * 3_600_000;
            hours
                .entry((reading.device_id.clone(), hour))
                .or_default()
                .push(reading.clone());
        }
        HourReadings(hours)
    }
}

impl TelemetryReader for HourReadings {
    async fn readings_between(
        &self,
        device_id: &str,
        from_ms: i64,
        _to_ms: i64,
    ) -> Result<Vec<Reading>, StoreError> {
        Ok(self
            .0
            .get(&(device_id.to_owned(), from_ms))
            .cloned()
            .unwrap_or_default())
    }
}

pub type Stats = geotag_stats::Stats<MemoryStatsStore, HourReadings>;

pub fn stats(hours: &HourReadings) -> Stats {
    geotag_stats::Stats {
        store: MemoryStatsStore::default(),
        telemetry: hours.clone(),
        metrics: geotag_runtime::emf::Emitter::for_binary("stats")
            .with_sink(geotag_runtime::emf::Sink::Discard),
    }
}

pub type Alerts =
    geotag_alerts::Alerts<MemoryRegistry, MemoryAlerts, MemoryAlerts, MemorySilenceIndex>;

/// Two customers with their own thresholds, every fourth tag unassigned,
/// and the benchmark's geofences.
pub fn alerts(devices: impl IntoIterator<Item = String>) -> Alerts {
    let registry = MemoryRegistry::default();
    {
        let mut customers = registry
            .customers_of
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (index, device) in devices.into_iter().enumerate() {
            match index % 4 {
                0 | 1 => customers.insert(device, "acme".into()),
                2 => customers.insert(device, "globex".into()),
                _ => None,
            };
        }
    }
    registry
        .thresholds_of
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            "globex".into(),
            Thresholds {
                battery_low_pct: 60.0,
                ..Thresholds::default()
            },
        );
    registry
        .geofences
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(geofences());
    geotag_alerts::Alerts {
        registry,
        log: MemoryAlerts::default(),
        sink: MemoryAlerts::default(),
        silence: MemorySilenceIndex::default(),
        silence_lookback_ms: 24 * 3_600_000,
        // The bench runs no schedule.
        silence_rule_arn: String::new(),
        audit_rule_arn: String::new(),
        metrics: geotag_runtime::emf::Emitter::for_binary("alerts")
            .with_sink(geotag_runtime::emf::Sink::Discard),
    }
}
