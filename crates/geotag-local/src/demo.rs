//! `geotag demo`: the whole pipeline on this machine, then an audited report.
//!
//! Emulator up, template provisioned, pump running, a simulated fleet
//! published, the pipeline drained, and a report that compares what the
//! tables and the dead-letter queue hold with what the simulator sent. The
//! demo fails (non-zero exit) if a single valid reading is missing or doubled,
//! or a malformed message is not dead-lettered with the reason it deserved.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use geotag::Reason;
use geotag::stats::Bucket;
use geotag::store::StatsBody;
use geotag_aws::telemetry::reading_from_item;

use crate::pump::{Invoker, Pump, PumpOptions};
use crate::simulate::{self, Expected, FleetConfig};
use crate::stack::{LocalStack, Options};

#[derive(Clone)]
pub struct DemoOptions {
    pub stack: Options,
    pub fleet: FleetConfig,
    pub invoker: Option<Invoker>,
    /// Schedules run this many times faster than their rate says.
    pub time_scale: f64,
    pub drain_timeout: Duration,
}

/// What the demo found, beside what it expected.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub stored: usize,
    /// Per device, from DeviceStats (when the template has it).
    pub device_stats: Option<BTreeMap<String, DeviceStatsSummary>>,
    pub stored_per_device: BTreeMap<String, DeviceSummary>,
    pub dead_lettered_by_reason: BTreeMap<String, usize>,
}

/// What DeviceStats says of a device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceStatsSummary {
    /// Sums of the hourly and of the daily rollups' counts.
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
                pair[0].0.div_euclid(geotag::stats::DAY_MS)
                    == pair[1].0.div_euclid(geotag::stats::DAY_MS)
            })
            .map(|pair| geotag::geo::distance_m(pair[0].1, pair[0].2, pair[1].1, pair[1].2))
            .sum()
    }
}

/// Runs the demo and prints its report; `Err` if the audit finds a difference.
pub async fn run(options: DemoOptions) -> Result<()> {
    let total = Instant::now();
    println!("geotag demo: the whole template on this machine, no cloud, no Docker\n");
    let local = LocalStack::start(&options.stack).await?;
    println!(
        "  emulator    {} ({})",
        local.emulator.endpoint(),
        if options.stack.endpoint.is_some() {
            "given"
        } else {
            "moto, started from .venv"
        }
    );
    println!(
        "  provisioned {} resources from template.yaml; not emulated: {}",
        local.stack.created.len(),
        local
            .stack
            .not_emulated
            .iter()
            .map(|(id, _, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let invoker = match options.invoker.clone() {
        Some(invoker) => invoker,
        None => Invoker::InProcess(std::sync::Arc::new(crate::pump::InProcess::for_stack(
            &local.stack,
            &local.sdk,
        )?)),
    };
    let invoker_for_checks = invoker.clone();
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        invoker,
        PumpOptions {
            time_scale: options.time_scale,
        },
    );

    let has_alerts = local.stack.reference("AlertsTopic").is_ok();
    let registry = if has_alerts {
        let registry = crate::alert_audit::set_up(&local, options.fleet.devices).await?;
        println!(
            "  registry    customers acme and globex (battery threshold {}%), {} tags assigned, {} unassigned; \
             geofences {}",
            registry.thresholds_of["globex"].battery_low_pct,
            registry.customer_of.len(),
            options.fleet.devices - registry.customer_of.len(),
            registry
                .zones
                .iter()
                .map(|z| format!(
                    "{} ({})",
                    z.id,
                    z.customer_id.as_deref().unwrap_or("every tag")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Some(registry)
    } else {
        None
    };

    let plan = simulate::plan(&options.fleet);
    println!(
        "  simulating  {} tags, {} messages ({} readings, {} malformed, {} duplicates), seed {}",
        options.fleet.devices,
        plan.messages.len(),
        plan.expected.unique_readings(),
        plan.expected.rejected(),
        plan.expected.duplicates,
        options.fleet.seed
    );
    let sns = aws_sdk_sns::Client::new(&local.sdk);
    let topic = local.stack.reference("TelemetryTopic")?.to_owned();
    let publish_started = Instant::now();
    simulate::publish(&sns, &topic, &plan.messages, true).await?;
    let publish_time = publish_started.elapsed();
    pump.wait_drained(options.drain_timeout).await?;
    let drain_time = publish_started.elapsed();
    // The silence check runs on a schedule (every 5 minutes by default); the
    // demo runs it once now that the fleet's readings are in, as its next
    // tick would. EventBridge times have whole seconds.
    let silence_check_ms = geotag_ingest::system_clock_ms() / 1000 * 1000;
    if registry.is_some() {
        crate::alert_audit::check_silence(&local, &invoker_for_checks, silence_check_ms).await?;
        pump.wait_drained(options.drain_timeout).await?;
    }
    let pump_stats = pump.stats.snapshot();
    pump.stop().await;

    let audit_started = Instant::now();
    let audit = audit(&local).await?;
    let audit_time = audit_started.elapsed();
    let (report, mut ok) = render(&plan.expected, &audit, &pump_stats);
    println!("{report}");
    if let Some(registry) = &registry {
        let inboxes = crate::alert_audit::read_inboxes(&local, registry).await?;
        let (alerts_report, alerts_ok) =
            crate::alert_audit::render(&plan.expected, registry, &inboxes, silence_check_ms);
        println!("{alerts_report}");
        ok &= alerts_ok;
    }
    println!(
        "  wall time   {:.1} s: emulator {:.1} s, provisioning {:.1} s, publishing {:.1} s, \
         publish-to-drained {:.1} s, audit {:.1} s",
        total.elapsed().as_secs_f64(),
        local.emulator_start.as_secs_f64(),
        local.provision_time.as_secs_f64(),
        publish_time.as_secs_f64(),
        drain_time.as_secs_f64(),
        audit_time.as_secs_f64(),
    );
    drop(local);
    if !ok {
        bail!("the audit found differences (marked ✗ above)");
    }
    println!(
        "\n  every valid reading stored once and counted once in DeviceStats, distances as in time order,\n  \
         every malformed message dead-lettered with its reason{} ✓",
        if registry.is_some() {
            ",\n  every alert the readings deserve published once, to the operator and to its customer only"
        } else {
            ""
        }
    );
    Ok(())
}

/// Reads back the Telemetry table and the ingest DLQ.
pub async fn audit(local: &LocalStack) -> Result<Audit> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let table = local.stack.reference("TelemetryTable")?;
    let mut audit = Audit::default();
    let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in page.items.unwrap_or_default() {
            let Some(reading) = reading_from_item(&item) else {
                bail!("an item in {table} is not a reading: {item:?}");
            };
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
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }

    if let Ok(stats_table) = local.stack.reference("DeviceStatsTable") {
        let mut summaries: BTreeMap<String, DeviceStatsSummary> = BTreeMap::new();
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        loop {
            let page = dynamodb
                .scan()
                .table_name(stats_table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items.unwrap_or_default() {
                let Some(stats) = geotag_aws::device_stats::stats_item_from(&item) else {
                    bail!("an item in {stats_table} does not parse: {item:?}");
                };
                let summary = summaries.entry(stats.device_id.clone()).or_default();
                match stats.body {
                    StatsBody::Latest(state) => {
                        summary.latest_ms = Some(state.ts_ms);
                        summary.latest_position = Some((state.lat, state.lon));
                        summary.battery = state.battery;
                    }
                    StatsBody::Rollup(Bucket::Hour(_), rollup) => {
                        summary.hourly_count += rollup.count
                    }
                    StatsBody::Rollup(Bucket::Day(_), rollup) => {
                        summary.daily_count += rollup.count;
                        summary.distance_m += rollup.distance_m();
                    }
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        audit.device_stats = Some(summaries);
    }

    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let dlq = local.stack.reference("IngestDLQ")?;
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(300)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let reason = message
                .message_attributes()
                .and_then(|attributes| attributes.get("reason"))
                .and_then(|value| value.string_value())
                .unwrap_or("(none: redriven after maxReceiveCount)")
                .to_owned();
            *audit.dead_lettered_by_reason.entry(reason).or_default() += 1;
        }
    }
    Ok(audit)
}

pub(crate) fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

/// The report, and whether everything matched.
pub fn render(
    expected: &Expected,
    audit: &Audit,
    pump: &BTreeMap<&'static str, u64>,
) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let stored_ok = audit.stored == expected.unique_readings();
    ok &= stored_ok;
    let _ = writeln!(
        out,
        "\n  readings    {:>6} valid and unique published",
        expected.unique_readings()
    );
    let _ = writeln!(
        out,
        "              {:>6} stored in Telemetry {}",
        audit.stored,
        mark(stored_ok)
    );
    let _ = writeln!(
        out,
        "              {:>6} duplicate deliveries absorbed",
        expected.duplicates
    );
    let dead_total: usize = audit.dead_lettered_by_reason.values().sum();
    let dead_ok = dead_total == expected.rejected();
    ok &= dead_ok;
    let _ = writeln!(
        out,
        "  rejected    {:>6} malformed published, {} dead-lettered {}",
        expected.rejected(),
        dead_total,
        mark(dead_ok)
    );
    let mut reasons: Vec<String> = expected
        .rejected_by_reason
        .keys()
        .map(|r| r.code().to_owned())
        .collect();
    reasons.extend(audit.dead_lettered_by_reason.keys().cloned());
    reasons.sort();
    reasons.dedup();
    for reason in reasons {
        let want = Reason::from_code(&reason)
            .and_then(|r| expected.rejected_by_reason.get(&r))
            .copied()
            .unwrap_or(0);
        let got = audit
            .dead_lettered_by_reason
            .get(&reason)
            .copied()
            .unwrap_or(0);
        ok &= want == got;
        let _ = writeln!(
            out,
            "              {got:>6} {reason:<22} (expected {want}) {}",
            mark(want == got)
        );
    }
    let _ = writeln!(
        out,
        "  pump        {}",
        pump.iter()
            .map(|(name, value)| format!("{value} {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "\n  {:<10} {:<9} {:>10}  {:<8} {:<8} {:>17}  {:>21}  {:>7}",
        "device",
        "kind",
        "Telemetry",
        "first",
        "last",
        "DeviceStats h/d",
        "latest position",
        "battery"
    );
    for (device, want) in &expected.readings_per_device {
        let summary = audit
            .stored_per_device
            .get(device)
            .cloned()
            .unwrap_or_default();
        let device_ok = summary.readings == *want;
        ok &= device_ok;
        let kind = expected.behaviours.get(device).map_or("?", |b| b.name());
        let stats = audit
            .device_stats
            .as_ref()
            .map(|all| all.get(device).cloned().unwrap_or_default());
        let (stats_column, position, battery) = match &stats {
            None => ("-".to_owned(), summary.last_position, summary.last_battery),
            Some(stats) => {
                let counts_ok =
                    stats.hourly_count == *want as u64 && stats.daily_count == *want as u64;
                let latest_ok = stats.latest_ms == Some(summary.last_ms);
                let in_order = summary.in_order_daily_distance_m();
                let distance_ok = (stats.distance_m - in_order).abs() <= 1e-6 * in_order.max(1.0);
                if !distance_ok {
                    let _ = writeln!(
                        out,
                        "  ✗ {device}: DeviceStats distance {:.3} m, in time order {in_order:.3} m",
                        stats.distance_m
                    );
                }
                let latest_ok = latest_ok && distance_ok;
                ok &= counts_ok && latest_ok;
                (
                    format!(
                        "{}/{} {:>5.1} km {}",
                        stats.hourly_count,
                        stats.daily_count,
                        stats.distance_m / 1000.0,
                        mark(counts_ok && latest_ok)
                    ),
                    stats.latest_position.unwrap_or_default(),
                    stats.battery,
                )
            }
        };
        let _ = writeln!(
            out,
            "  {device:<10} {kind:<9} {:>8} {} {:<8} {:<8} {:>17}  {:>10.5},{:>10.5}  {:>7}",
            summary.readings,
            mark(device_ok),
            clock(summary.first_ms),
            clock(summary.last_ms),
            stats_column,
            position.0,
            position.1,
            battery.map_or("-".to_owned(), |b| format!("{b:.0}%")),
        );
    }
    if !expected.crossings.is_empty() {
        let _ = writeln!(
            out,
            "\n  scripted    {} crossings of {:?} ({} m around {}, {}): {}",
            expected.crossings.len(),
            simulate::DEPOT.name,
            simulate::DEPOT.radius_m,
            simulate::DEPOT.lat,
            simulate::DEPOT.lon,
            expected
                .crossings
                .iter()
                .map(|c| format!(
                    "{} in {}, out {}",
                    c.device_id,
                    clock(c.entered_ms),
                    clock(c.left_ms)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if let Some(extra) = audit
        .stored_per_device
        .keys()
        .find(|d| !expected.readings_per_device.contains_key(*d))
    {
        ok = false;
        let _ = writeln!(
            out,
            "  ✗ readings stored for a device that was never simulated: {extra}"
        );
    }
    (out, ok)
}

/// HH:MM:SS (UTC) of an epoch-ms time.
fn clock(ms: i64) -> String {
    let mut text = String::new();
    geotag::reading::write_rfc3339_millis(&mut text, ms);
    text.get(11..19).unwrap_or("-").to_owned()
}
