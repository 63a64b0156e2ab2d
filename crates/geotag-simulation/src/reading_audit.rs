//! The readings' audit: what Telemetry, DeviceStats, IngestRejections and IngestDLQ hold
//! at the end of a run, set against what the simulator sent.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{Result, bail};
use geotag::stats::Bucket;
use geotag::store::{ReadingsByHour, StatsBody, shown_rollups_of_table};
use geotag_aws::telemetry::reading_from_item;
use geotag_local_cloud::stack::LocalStack;

use crate::cost::ItemSizes;
use crate::simulate::Expected;
use crate::summary::Summary;

/// What the demo found, beside what it expected.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub stored: usize,
    /// Per device, from DeviceStats (when the template has it).
    pub device_stats: Option<BTreeMap<String, DeviceStatsSummary>>,
    pub stored_per_device: BTreeMap<String, DeviceSummary>,
    /// Refused messages in IngestRejections, each once (by
    /// `source_message_id`), by reason; and the messages SQS moved to
    /// IngestDLQ after five receives, under [`FAILED_AFTER_RETRIES`].
    pub dead_lettered_by_reason: BTreeMap<String, usize>,
    /// Refusals repeating one already counted.
    pub dead_letter_repeats: u64,
    /// What IngestQuarantine holds: each tag's parked readings, by (time,
    /// sequence number).
    pub parked_per_device: BTreeMap<String, BTreeSet<(i64, Option<u64>)>>,
    /// Items and their sizes, by table name.
    pub item_sizes: BTreeMap<String, ItemSizes>,
    /// Telemetry's readings by tag and hour start.
    pub readings_by_hour: ReadingsByHour,
}

/// What DeviceStats says of a device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceStatsSummary {
    /// Sums of the hourly and of the daily rollups' counts, as the API
    /// shows them (each tag's open hour made from its readings in Telemetry).
    pub hourly_count: u64,
    pub daily_count: u64,
    pub distance_m: f64,
    pub latest_ms: Option<i64>,
    pub latest_position: Option<(f64, f64)>,
    pub battery: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct DeviceSummary {
    pub readings: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    pub last_position: (f64, f64),
    pub last_battery: Option<f64>,
    /// The readings' (time, lat, lon), for the in-order distance.
    pub track: Vec<(i64, f64, f64)>,
    /// The readings' keys, (time, sequence number).
    pub keys: BTreeSet<(i64, Option<u64>)>,
    /// Each reading's time, its arrival at the edge and its write to
    /// Telemetry, epoch ms.
    pub received_and_stored: Vec<(i64, i64, i64)>,
}

impl DeviceSummary {
    /// Distance between consecutive readings in time order, within each UTC
    /// day: what DeviceStats' daily rollups must add up to.
    pub fn in_order_daily_distance_m(&self) -> f64 {
        let mut track = self.track.clone();
        track.sort_by_key(|point| point.0);
        track
            .windows(2)
            .filter(|pair| {
                pair[0].0.div_euclid(geotag::clock::DAY_MS)
                    == pair[1].0.div_euclid(geotag::clock::DAY_MS)
            })
            .map(|pair| geotag::geo::distance_m(pair[0].1, pair[0].2, pair[1].1, pair[1].2))
            .sum()
    }
}

impl Audit {
    /// A tag's readings in IngestQuarantine and not in Telemetry: held
    /// back over its budget, accounted for, not lost.
    pub fn parked_only(&self, device: &str) -> usize {
        let stored = self.stored_per_device.get(device);
        self.parked_per_device.get(device).map_or(0, |parked| {
            parked
                .iter()
                .filter(|key| stored.is_none_or(|s| !s.keys.contains(key)))
                .count()
        })
    }

    /// What Telemetry should hold of a tag that sent `sent` readings.
    pub fn expected_stored(&self, device: &str, sent: usize) -> usize {
        sent.saturating_sub(self.parked_only(device))
    }

    /// What Telemetry should hold of the whole fleet.
    pub fn expected_stored_in_all(&self, expected: &Expected) -> usize {
        (expected.readings_per_device.iter())
            .map(|(device, sent)| self.expected_stored(device, *sent))
            .sum()
    }
}

/// Where the audit counts the messages in IngestDLQ, which carry no reason.
pub const FAILED_AFTER_RETRIES: &str = "(none: in IngestDLQ after maxReceiveCount)";

/// Reads back the Telemetry table and the ingest queues of refused and failed messages.
pub async fn audit(local: &LocalStack) -> Result<Audit> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let table = local.stack.reference("TelemetryTable")?;
    let mut audit = Audit::default();
    for item in geotag_operator::table_scan::scan_all(&dynamodb, table, false).await? {
        let Some(reading) = reading_from_item(&item) else {
            bail!("an item in {table} is not a reading: {item:?}");
        };
        audit.readings_by_hour.add(reading.clone());
        audit
            .item_sizes
            .entry(table.to_owned())
            .or_default()
            .add(&item);
        audit.stored += 1;
        let summary = audit
            .stored_per_device
            .entry(reading.device_id.clone())
            .or_default();
        if summary.readings == 0 || reading.ts_ms < summary.first_ms {
            summary.first_ms = reading.ts_ms;
        }
        if summary.readings == 0 || reading.ts_ms >= summary.last_ms {
            summary.last_ms = reading.ts_ms;
            summary.last_position = (reading.lat, reading.lon);
            summary.last_battery = reading.battery;
        }
        summary.readings += 1;
        summary
            .track
            .push((reading.ts_ms, reading.lat, reading.lon));
        summary.keys.insert((reading.ts_ms, reading.seq));
        let stored_at = item
            .get(geotag_aws::telemetry::attr::STORED_AT)
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse::<i64>().ok());
        if let (Some(received_at), Some(stored_at)) = (reading.received_at_ms, stored_at) {
            summary
                .received_and_stored
                .push((reading.ts_ms, received_at, stored_at));
        }
    }

    if let Ok(stats_table) = local.stack.reference("DeviceStatsTable") {
        let mut summaries: BTreeMap<String, DeviceStatsSummary> = BTreeMap::new();
        let mut items = Vec::new();
        for item in geotag_operator::table_scan::scan_all(&dynamodb, stats_table, true).await? {
            let Some(stats) = geotag_aws::device_stats::stats_item_from(&item) else {
                bail!("an item in {stats_table} does not parse: {item:?}");
            };
            audit
                .item_sizes
                .entry(stats_table.to_owned())
                .or_default()
                .add(&item);
            if let StatsBody::Latest(state) = &stats.body {
                let summary = summaries.entry(stats.device_id.clone()).or_default();
                summary.latest_ms = Some(state.ts_ms);
                summary.latest_position = Some((state.lat, state.lon));
                summary.battery = state.battery;
            }
            items.push(stats);
        }
        // The rollups as the API shows them: the open hours from Telemetry.
        let shown = shown_rollups_of_table(&items, &audit.readings_by_hour);
        for (device, rollups) in shown {
            let summary = summaries.entry(device).or_default();
            for (bucket, rollup) in rollups {
                match bucket {
                    Bucket::Hour(_) => summary.hourly_count += rollup.count,
                    Bucket::Day(_) => {
                        summary.daily_count += rollup.count;
                        summary.distance_m += rollup.distance_m();
                    }
                }
            }
        }
        audit.device_stats = Some(summaries);
    }

    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let dlq = local.stack.reference("IngestDLQ")?;
    let failed = geotag_local_cloud::pump::read_whole_queue(&sqs, dlq).await?;
    if !failed.is_empty() {
        audit
            .dead_lettered_by_reason
            .insert(FAILED_AFTER_RETRIES.to_owned(), failed.len());
    }
    let rejections = local.stack.reference("IngestRejections")?;
    let mut seen_sources = HashSet::new();
    for message in geotag_local_cloud::pump::read_whole_queue(&sqs, rejections).await? {
        if !seen_sources.insert(source_message_id(&message)) {
            audit.dead_letter_repeats += 1;
            continue;
        }
        let reason = attribute(&message, geotag_aws::dead_letters::attr::REASON)
            .unwrap_or_else(|| "(none)".into());
        *audit.dead_lettered_by_reason.entry(reason).or_default() += 1;
    }
    if let Ok(quarantine) = local.stack.reference("IngestQuarantine") {
        let now_ms = geotag::clock::now_ms();
        let mut seen_sources = HashSet::new();
        for message in geotag_local_cloud::pump::read_whole_queue(&sqs, quarantine).await? {
            if !seen_sources.insert(source_message_id(&message)) {
                continue;
            }
            let body = message.body().unwrap_or_default();
            let Ok(decoded) = geotag::decode_message(body, &geotag::Limits::default(), now_ms)
            else {
                bail!("a message in {quarantine} does not decode: {body}");
            };
            for reading in decoded.readings {
                audit
                    .parked_per_device
                    .entry(reading.device_id)
                    .or_default()
                    .insert((reading.ts_ms, reading.seq));
            }
        }
    }
    Ok(audit)
}

fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    message
        .message_attributes()
        .and_then(|attributes| attributes.get(name))
        .and_then(|value| value.string_value())
        .map(str::to_owned)
}

/// The message ingest refused or parked, by its id: a function that sends a
/// letter and then dies is retried, and sends it again, the same source
/// message, counted once.
fn source_message_id(message: &aws_sdk_sqs::types::Message) -> String {
    attribute(message, geotag_aws::dead_letters::attr::SOURCE_MESSAGE_ID)
        .or_else(|| message.message_id().map(str::to_owned))
        .unwrap_or_default()
}

/// Lost and double-counted readings and refused messages.
pub fn tally(expected: &Expected, audit: &Audit) -> Summary {
    let mut summary = Summary {
        dead_letter_repeats: audit.dead_letter_repeats,
        ..Summary::default()
    };
    let gap = |want: u64, got: u64| (want.saturating_sub(got), got.saturating_sub(want));
    for (device, want) in &expected.readings_per_device {
        let want = *want as u64;
        let stored = audit
            .stored_per_device
            .get(device)
            .map_or(0, |s| s.readings) as u64;
        // A reading parked and not stored is accounted for: held back, not lost.
        let parked_only = audit.parked_only(device) as u64;
        let (lost, _) = gap(want, stored + parked_only);
        summary.lost += lost;
        // The stats count what is stored: what was sent, unless some was parked.
        let want = if parked_only > 0 { stored } else { want };
        if let Some(stats) = audit.device_stats.as_ref() {
            let stats = stats.get(device).cloned().unwrap_or_default();
            for counted in [stats.hourly_count, stats.daily_count] {
                let (lost, double) = gap(want, counted);
                summary.lost += lost;
                summary.double_counted += double;
            }
        }
    }
    for (reason, want) in &expected.rejected_by_reason {
        let got = audit
            .dead_lettered_by_reason
            .get(reason.code())
            .copied()
            .unwrap_or(0);
        summary.lost += (*want as u64).saturating_sub(got as u64);
    }
    summary
}
