//! `geotag rebuild-stats` checked on every run: each tag's DeviceStats
//! rebuilt from Telemetry alone, into memory, beside what the stream built.
//! The rebuild runs the stats function's own code on what Telemetry holds,
//! so any difference is a total the stream got wrong (or the rebuild did).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use geotag::clock::HOUR_MS;
use geotag::stats::Bucket;
use geotag::store::{
    LATEST_SORT_KEY, MemoryStatsStore, StatsBody, StatsItem, StatsKey, shown_rollups_of_table,
};
use geotag_aws::DynamoTelemetryReader;
use geotag_local_cloud::stack::LocalStack;

use crate::reading_audit::Audit;
use crate::report::mark;

/// Rebuilds every stored tag's stats and compares them with DeviceStats':
/// the report's line, and whether every item matched; `None` for a
/// template without DeviceStats.
pub async fn audit(local: &LocalStack, readings: &Audit) -> Result<Option<(String, bool)>> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let Ok(stats_table) = local.stack.reference("DeviceStatsTable") else {
        return Ok(None);
    };
    let mut built: BTreeMap<StatsKey, StatsItem> = BTreeMap::new();
    for item in geotag_operator::table_scan::scan_all(&dynamodb, stats_table, true).await? {
        let Some(stats) = geotag_aws::device_stats::stats_item_from(&item) else {
            bail!("an item in {stats_table} does not parse: {item:?}");
        };
        built.insert(stats.key(), stats);
    }
    let rebuilt = geotag_stats::Stats {
        store: MemoryStatsStore::default(),
        telemetry: DynamoTelemetryReader::new(dynamodb, local.stack.reference("TelemetryTable")?),
        metrics: geotag_runtime::emf::Emitter::for_binary("stats")
            .with_sink(geotag_runtime::emf::Sink::Discard),
    };
    for (device, stored) in &readings.stored_per_device {
        let from = stored.first_ms.div_euclid(HOUR_MS) * HOUR_MS;
        geotag_stats::rebuild(&rebuilt, device, from, stored.last_ms + 1).await?;
    }

    let rebuilt: BTreeMap<StatsKey, StatsItem> = rebuilt
        .store
        .items()
        .into_iter()
        .map(|item| (item.key(), item))
        .collect();
    let (mut hours, mut days, mut latest) = (0, 0, 0);
    let mut differences = Vec::new();
    // Rollups as the API shows them: a stored open hour is whatever a
    // recomputation left there before the hour closed, on either side.
    let built_shown = shown_rollups_of_table(built.values(), &readings.readings_by_hour);
    let rebuilt_shown = shown_rollups_of_table(rebuilt.values(), &readings.readings_by_hour);
    let no_rollups = BTreeMap::new();
    for (device, rollups) in &rebuilt_shown {
        let stream_built = built_shown.get(device).unwrap_or(&no_rollups);
        for (bucket, rollup) in rollups {
            match bucket {
                Bucket::Hour(_) => hours += 1,
                Bucket::Day(_) => days += 1,
            }
            if stream_built.get(bucket) != Some(rollup) {
                differences.push(format!("{device} {}", bucket.sort_key()));
            }
        }
    }
    let stored_devices =
        (built_shown.iter()).filter(|(device, _)| readings.stored_per_device.contains_key(*device));
    for (device, stream_built) in stored_devices {
        let rebuilt = rebuilt_shown.get(device).unwrap_or(&no_rollups);
        for bucket in stream_built
            .keys()
            .filter(|bucket| !rebuilt.contains_key(bucket))
        {
            differences.push(format!("{device} {} (not rebuilt)", bucket.sort_key()));
        }
    }
    for (key, item) in &rebuilt {
        let StatsBody::Latest(state) = &item.body else {
            continue;
        };
        latest += 1;
        // `version` and `trail` tell how the state was reached (in how
        // many writes), not where the tag is.
        let same = match built.get(key).map(|b| &b.body) {
            Some(StatsBody::Latest(stream_built)) => {
                (state.ts_ms, &state.reading_key, state.lat, state.lon)
                    == (
                        stream_built.ts_ms,
                        &stream_built.reading_key,
                        stream_built.lat,
                        stream_built.lon,
                    )
                    && (state.battery, state.battery_ts_ms, &state.owner)
                        == (
                            stream_built.battery,
                            stream_built.battery_ts_ms,
                            &stream_built.owner,
                        )
            }
            _ => false,
        };
        if !same {
            differences.push(format!("{} {}", key.0, key.1));
        }
    }
    for key in built.keys().filter(|key| key.1 == LATEST_SORT_KEY) {
        if readings.stored_per_device.contains_key(&key.0) && !rebuilt.contains_key(key) {
            differences.push(format!("{} {} (not rebuilt)", key.0, key.1));
        }
    }
    let ok = differences.is_empty();
    let mut line = format!(
        "  rebuild     DeviceStats rebuilt from Telemetry alone (geotag rebuild-stats) for {} tags: \
         {hours} hours, {days} days, {latest} latest states, each as the stream built it {}",
        readings.stored_per_device.len(),
        mark(ok)
    );
    if !ok {
        line.push_str(&format!(
            "\n    differ: {}",
            differences
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Some((line, ok)))
}
