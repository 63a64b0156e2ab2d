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

use crate::metrics::MetricTotals;
use crate::simulate::{self, Expected, FleetConfig};
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::pump::{Pump, PumpOptions};
use geotag_local_cloud::stack::{LocalStack, Options};

#[derive(Clone)]
pub struct DemoOptions {
    pub stack: Options,
    pub fleet: FleetConfig,
    pub invoker: Option<Invoker>,
    /// Schedules run this many times faster than their rate says.
    pub time_scale: f64,
    pub drain_timeout: Duration,
    /// Faults to inject: the chaos run.
    pub chaos: Option<Chaos>,
    /// Print a row per device (a large fleet prints only the rows that differ).
    pub device_rows: bool,
    /// Where the map and the metrics go (default: `target/geotag` in the project).
    pub output_dir: Option<std::path::PathBuf>,
}

/// The faults of a chaos run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chaos {
    /// Share of the functions' AWS requests refused (throttled or 5xx).
    pub store_fault_rate: f64,
    /// Share of invocations that die half-way through their batch.
    pub crash_rate: f64,
    pub seed: u64,
}

/// A run's verdict, in figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub ok: bool,
    /// Valid readings not stored or not counted, malformed messages not
    /// dead-lettered, alerts deserved and not published.
    pub lost: u64,
    /// Readings counted more than once in DeviceStats, alerts published more
    /// than once.
    pub double_counted: u64,
    pub faults_injected: u64,
    pub crashes: u64,
    /// Refused messages dead-lettered more than once (a crash after the
    /// dead-letter send): at-least-once, told apart by `source_message_id`.
    pub dead_letter_repeats: u64,
    /// Device messages published to the telemetry topic, duplicates included.
    pub messages_published: u64,
    pub readings_stored: u64,
    /// Function invocations the pump made.
    pub invocations: u64,
    /// The functions' AWS requests by (service, operation), refused ones included.
    pub requests: BTreeMap<(String, String), u64>,
    /// DynamoDB write units the functions' writes cost, by table name.
    pub write_units: BTreeMap<String, WriteUnits>,
    /// Keys the functions read by GetItem and BatchGetItem, by table name.
    pub keys_read: BTreeMap<String, u64>,
    /// The functions' EMF metrics, summed (in-process runs only).
    pub metrics: MetricTotals,
    /// The HTML map of the run (`target/geotag/report.html`).
    pub report: Option<std::path::PathBuf>,
}

/// A table's writes and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteUnits {
    pub item_writes: u64,
    /// Write units, each write costed at its item's size as the run left it
    /// (transactional writes count double).
    pub units: f64,
    /// The mean size of the table's items at the end of the run.
    pub mean_item_bytes: f64,
}

/// Costs each table's item writes at its items' mean write units.
fn write_units(
    item_writes: &BTreeMap<(String, bool), u64>,
    item_sizes: &BTreeMap<String, ItemSizes>,
) -> BTreeMap<String, WriteUnits> {
    let mut out: BTreeMap<String, WriteUnits> = BTreeMap::new();
    for ((table, transactional), writes) in item_writes {
        let sizes = item_sizes.get(table).filter(|sizes| sizes.items > 0);
        let per_write = sizes.map_or(1.0, |sizes| sizes.write_units as f64 / sizes.items as f64);
        let entry = out.entry(table.clone()).or_default();
        entry.mean_item_bytes = sizes.map_or(0.0, |sizes| sizes.bytes as f64 / sizes.items as f64);
        entry.item_writes += writes;
        entry.units += *writes as f64 * per_write * if *transactional { 2.0 } else { 1.0 };
    }
    out
}

/// The items a table holds at the end of a run, and their sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ItemSizes {
    pub items: u64,
    pub bytes: u64,
    /// Write units of writing each item once.
    pub write_units: u64,
}

impl ItemSizes {
    fn add(&mut self, item: &std::collections::HashMap<String, AttributeValue>) {
        let size = geotag_aws::capacity::item_size(item);
        self.items += 1;
        self.bytes += size as u64;
        self.write_units += geotag_aws::capacity::write_units(size);
    }
}

/// The demo's cost figures: the functions' requests per stored reading.
fn requests_table(summary: &Summary) -> String {
    let mut out = String::new();
    let per_reading = |n: f64| n / summary.readings_stored.max(1) as f64;
    let _ = writeln!(
        out,
        "\n  AWS requests of the functions ({} readings stored from {} messages, {} invocations)",
        summary.readings_stored, summary.messages_published, summary.invocations
    );
    for ((service, operation), n) in &summary.requests {
        let _ = writeln!(
            out,
            "    {:<40} {n:>7}   {:.3} per reading",
            format!("{service} {operation}"),
            per_reading(*n as f64)
        );
    }
    for (table, units) in &summary.write_units {
        let _ = writeln!(
            out,
            "    {:<40} {:>7}   {:.3} write units per reading",
            format!("{table} item writes"),
            units.item_writes,
            per_reading(units.units)
        );
    }
    out
}

/// What the demo found, beside what it expected.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub stored: usize,
    /// Per device, from DeviceStats (when the template has it).
    pub device_stats: Option<BTreeMap<String, DeviceStatsSummary>>,
    pub stored_per_device: BTreeMap<String, DeviceSummary>,
    /// Refused messages in the DLQ, each once (by `source_message_id`), by reason.
    pub dead_lettered_by_reason: BTreeMap<String, usize>,
    /// DLQ messages repeating one already counted.
    pub dead_letter_repeats: u64,
    /// Items and their sizes, by table name.
    pub item_sizes: BTreeMap<String, ItemSizes>,
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
                pair[0].0.div_euclid(geotag::clock::DAY_MS)
                    == pair[1].0.div_euclid(geotag::clock::DAY_MS)
            })
            .map(|pair| geotag::geo::distance_m(pair[0].1, pair[0].2, pair[1].1, pair[1].2))
            .sum()
    }
}

/// The template with its timeouts shortened for a chaos run, so that a
/// crashed SQS batch is redelivered in seconds, not minutes: the same
/// semantics on a faster clock.
fn chaos_template(options: &Options) -> Result<std::path::PathBuf> {
    let root = geotag_local_cloud::project::root()?;
    let source = options
        .template
        .clone()
        .unwrap_or_else(|| root.join("template.yaml"));
    let mut text = std::fs::read_to_string(&source)?;
    for (from, to) in [
        ("Timeout: 30", "Timeout: 10"),
        ("VisibilityTimeout: 180", "VisibilityTimeout: 20"),
    ] {
        if !text.contains(from) {
            bail!("{} no longer says {from:?}", source.display());
        }
        text = text.replace(from, to);
    }
    let path = root.join("target/geotag-chaos.template.yaml");
    geotag_local_cloud::project::write_file(&path, text)?;
    Ok(path)
}

/// Runs the demo (or, with faults, the chaos run) and prints its report.
pub async fn run(mut options: DemoOptions) -> Result<Summary> {
    let total = Instant::now();
    match options.chaos {
        None => println!("geotag demo: the whole template on this machine, no cloud, no Docker\n"),
        Some(chaos) => {
            println!(
                "geotag chaos: the whole template on this machine, with {:.0}% of the functions' AWS requests \
                 refused and {:.0}% of invocations crashing\n",
                chaos.store_fault_rate * 100.0,
                chaos.crash_rate * 100.0
            );
            options.stack.template = Some(chaos_template(&options.stack)?);
        }
    }
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

    // The functions reach the emulator through a client that counts their
    // requests (the cost figures) and, in a chaos run, refuses some; the
    // pump, the simulator and the audit go straight to the emulator.
    let fault_plan = crate::faults::FaultPlan::new(
        options.chaos.map_or(0.0, |chaos| chaos.store_fault_rate),
        options.chaos.map_or(0, |chaos| chaos.seed),
    );
    let functions_sdk = {
        // The emulator speaks plain HTTP on loopback.
        let client = local
            .sdk
            .http_client()
            .unwrap_or_else(|| aws_smithy_http_client::Builder::new().build_http());
        geotag_aws::clients::with_http_client(
            &local.sdk,
            crate::faults::FaultyHttpClient::wrap(client, std::sync::Arc::clone(&fault_plan)),
        )
    };
    // In-process handlers are kept: their EMF lines are read back at the end.
    let (mut invoker, in_process) = match options.invoker.clone() {
        Some(invoker) => (invoker, None),
        None => {
            let handlers = std::sync::Arc::new(geotag_local_cloud::invoker::InProcess::for_stack(
                &local.stack,
                &functions_sdk,
            )?);
            (
                Invoker::InProcess(std::sync::Arc::clone(&handlers)),
                Some(handlers),
            )
        }
    };
    let crashes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(chaos) = options.chaos {
        invoker = crate::faults::crashing(
            invoker,
            chaos.crash_rate,
            chaos.seed,
            std::sync::Arc::clone(&crashes),
        );
    }
    let invoker_for_checks = invoker.clone();
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        invoker,
        PumpOptions {
            time_scale: options.time_scale,
            play_schedules: false,
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
    let pace = simulate::Pace {
        sqs: aws_sdk_sqs::Client::new(&local.sdk),
        queue_url: local.stack.reference("IngestQueue")?.to_owned(),
        max_depth: 1_000,
    };
    simulate::publish(&sns, &topic, &plan.messages, true, Some(&pace)).await?;
    let publish_time = publish_started.elapsed();
    pump.wait_drained(options.drain_timeout).await?;
    let drain_time = publish_started.elapsed();
    // The silence check runs on a schedule (every 5 minutes by default); the
    // demo runs it once now that the fleet's readings are in, as its next
    // tick would. EventBridge times have whole seconds.
    let silence_check_ms = geotag::clock::now_ms() / 1000 * 1000;
    if registry.is_some() {
        // EventBridge retries a failed asynchronous invocation twice, a minute
        // and more apart. The wait matters: an alert the failed attempt left
        // claimed stays leased until that invocation's deadline, and a retry
        // at once would find it busy. (The 20,000-reading chaos run failed
        // three attempts in a row that way.) This waits out the lease.
        let lease = Duration::from_secs(
            local
                .stack
                .functions
                .values()
                .map(|function| function.timeout_secs)
                .max()
                .unwrap_or(30)
                + 1,
        );
        let mut attempts = 0;
        while let Err(error) =
            crate::alert_audit::check_silence(&local, &invoker_for_checks, silence_check_ms).await
        {
            attempts += 1;
            if attempts > 2 {
                return Err(error.context("the silence check failed three times"));
            }
            println!(
                "  silence check failed ({error:#}); retrying in {} s, as EventBridge would",
                lease.as_secs()
            );
            tokio::time::sleep(lease).await;
        }
        pump.wait_drained(options.drain_timeout).await?;
    }
    let pump_stats = pump.stats.snapshot();
    pump.stop().await;

    let audit_started = Instant::now();
    let audit = audit(&local).await?;
    let audit_time = audit_started.elapsed();
    let (report, mut ok) = render(&plan.expected, &audit, &pump_stats, options.device_rows);
    println!("{report}");
    let mut summary = tally(&plan.expected, &audit);
    let output_dir = options
        .output_dir
        .clone()
        .unwrap_or_else(|| local.root.join("target/geotag"));
    let mut operator_alerts = None;
    if let Some(registry) = &registry {
        let inboxes = crate::alert_audit::read_inboxes(&local, registry).await?;
        let comparison = crate::alert_audit::AlertComparison::new(
            &plan.expected,
            registry,
            &inboxes,
            silence_check_ms,
        );
        let (alerts_report, alerts_ok) =
            crate::alert_audit::render(&plan.expected, registry, &inboxes, &comparison);
        println!("{alerts_report}");
        ok &= alerts_ok;
        let (lost, double) = comparison.tally();
        summary.lost += lost;
        summary.double_counted += double;
        operator_alerts = Some(comparison.operator.len() - comparison.repeated_ids);
    }
    if let Some(handlers) = &in_process {
        let lines = handlers.metric_lines();
        let binary_of: BTreeMap<&str, &str> = local
            .stack
            .functions
            .values()
            .map(|function| (function.name.as_str(), function.binary.as_str()))
            .collect();
        summary.metrics = MetricTotals::of_lines(&lines, |name| {
            binary_of.get(name).map_or(name, |binary| binary).to_owned()
        });
        let path = output_dir.join("metrics.jsonl");
        geotag_local_cloud::project::write_file(&path, lines.join("\n") + "\n")?;
        let (text, agrees) = reconcile_metrics(
            &summary.metrics,
            &audit,
            operator_alerts,
            options.chaos.is_none(),
        );
        println!(
            "  metrics     {} EMF lines from the functions, as CloudWatch would read them: {}\n{text}",
            summary.metrics.lines,
            path.display()
        );
        ok &= agrees;
    }
    summary.crashes = crashes.load(std::sync::atomic::Ordering::Relaxed);
    summary.faults_injected = fault_plan.total_injected();
    summary.messages_published = plan.messages.len() as u64;
    summary.readings_stored = audit.stored as u64;
    summary.requests = fault_plan.passed();
    for ((service, operation, _), n) in fault_plan.injected() {
        *summary.requests.entry((service, operation)).or_default() += n;
    }
    summary.write_units = write_units(&fault_plan.item_writes(), &audit.item_sizes);
    summary.keys_read = fault_plan.keys_read();
    summary.invocations = pump_stats.get("invocations").copied().unwrap_or(0);
    if registry.is_some() {
        let path = output_dir.join("report.html");
        let data = geotag_operator::map::gather(
            &local.sdk,
            &geotag_operator::map::Tables::of_local(&local.stack)?,
            &format!(
                "geotag {}: {} tags, seed {}",
                if options.chaos.is_some() {
                    "chaos"
                } else {
                    "demo"
                },
                options.fleet.devices,
                options.fleet.seed
            ),
        )
        .await?;
        geotag_operator::map::write(&path, &data)?;
        println!(
            "  map         {} devices, {} alerts, {} geofences: open {}",
            data.devices.len(),
            data.alerts.len(),
            data.geofences.len(),
            path.display()
        );
        summary.report = Some(path);
    }
    ok &= summary.lost == 0 && summary.double_counted == 0;
    summary.ok = ok;
    if options.chaos.is_some() {
        println!(
            "{}",
            chaos_table(&plan.expected, &summary, &pump_stats, &fault_plan)
        );
    } else {
        println!("{}", requests_table(&summary));
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
        println!("\n  the audit found differences (marked ✗ above)");
        return Ok(summary);
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
    Ok(summary)
}

/// Sets the functions' own counts beside the audit's. Faults and crashes cut
/// invocations short before they report, so only a run without them must agree.
fn reconcile_metrics(
    metrics: &MetricTotals,
    audit: &Audit,
    operator_alerts: Option<usize>,
    must_agree: bool,
) -> (String, bool) {
    let mut text = metrics.render();
    let mut ok = metrics.invalid.is_empty();
    for invalid in metrics.invalid.iter().take(3) {
        text.push_str(&format!("    ✗ not a valid EMF document: {invalid}\n"));
    }
    let dead_lettered =
        audit.dead_lettered_by_reason.values().sum::<usize>() as u64 + audit.dead_letter_repeats;
    let mut checks = vec![
        (
            "ingest MessagesDeadLettered",
            metrics.total("ingest", "MessagesDeadLettered"),
            "messages in the DLQ",
            dead_lettered as f64,
        ),
        (
            "stats ReadingsApplied",
            metrics.total("stats", "ReadingsApplied"),
            "readings in Telemetry",
            audit.stored as f64,
        ),
    ];
    if let Some(received) = operator_alerts {
        checks.push((
            "alerts AlertsPublished",
            metrics.total("alerts", "AlertsPublished"),
            "alerts the operator received",
            received as f64,
        ));
    }
    for (metric, value, counted, expected) in checks {
        let agrees = value == expected;
        if must_agree {
            ok &= agrees;
        }
        let mark = match (agrees, must_agree) {
            (true, _) => "✓",
            (false, true) => "✗",
            (false, false) => "~",
        };
        text.push_str(&format!(
            "    {mark} {metric} {value:.0}, {counted} {expected:.0}\n"
        ));
    }
    if !must_agree {
        text.push_str("    (~: an invocation that crashed or was refused reports nothing; only a run without faults must agree)\n");
    }
    (text, ok)
}

/// Reads back the Telemetry table and the ingest DLQ.
pub async fn audit(local: &LocalStack) -> Result<Audit> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let table = local.stack.reference("TelemetryTable")?;
    let mut audit = Audit::default();
    for item in geotag_operator::table_scan::scan_all(&dynamodb, table, false).await? {
        let Some(reading) = reading_from_item(&item) else {
            bail!("an item in {table} is not a reading: {item:?}");
        };
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
    }

    if let Ok(stats_table) = local.stack.reference("DeviceStatsTable") {
        let mut summaries: BTreeMap<String, DeviceStatsSummary> = BTreeMap::new();
        for item in geotag_operator::table_scan::scan_all(&dynamodb, stats_table, true).await? {
            let Some(stats) = geotag_aws::device_stats::stats_item_from(&item) else {
                bail!("an item in {stats_table} does not parse: {item:?}");
            };
            audit
                .item_sizes
                .entry(stats_table.to_owned())
                .or_default()
                .add(&item);
            let summary = summaries.entry(stats.device_id.clone()).or_default();
            match stats.body {
                StatsBody::Latest(state) => {
                    summary.latest_ms = Some(state.ts_ms);
                    summary.latest_position = Some((state.lat, state.lon));
                    summary.battery = state.battery;
                }
                StatsBody::Rollup(Bucket::Hour(_), rollup) => summary.hourly_count += rollup.count,
                StatsBody::Rollup(Bucket::Day(_), rollup) => {
                    summary.daily_count += rollup.count;
                    summary.distance_m += rollup.distance_m();
                }
            }
        }
        audit.device_stats = Some(summaries);
    }

    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let dlq = local.stack.reference("IngestDLQ")?;
    let mut seen_sources = std::collections::HashSet::new();
    for message in geotag_local_cloud::pump::read_whole_queue(&sqs, dlq).await? {
        let attribute = |name: &str| {
            message
                .message_attributes()
                .and_then(|attributes| attributes.get(name))
                .and_then(|value| value.string_value())
                .map(str::to_owned)
        };
        // A function that dead-letters and then dies is retried, and
        // dead-letters again: the same source message, counted once.
        let source = attribute("source_message_id")
            .or_else(|| message.message_id().map(str::to_owned))
            .unwrap_or_default();
        if !seen_sources.insert(source) {
            audit.dead_letter_repeats += 1;
            continue;
        }
        let reason =
            attribute("reason").unwrap_or_else(|| "(none: redriven after maxReceiveCount)".into());
        *audit.dead_lettered_by_reason.entry(reason).or_default() += 1;
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
    device_rows: bool,
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
    let mut rows = String::new();
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
        let row_ok = device_ok && stats_column.chars().last().is_none_or(|mark| mark != '✗');
        if !device_rows && row_ok {
            continue;
        }
        let _ = writeln!(
            rows,
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
    if !rows.is_empty() {
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
        out.push_str(&rows);
    } else {
        let _ = writeln!(
            out,
            "  devices     {} tags, each as expected ✓",
            expected.readings_per_device.len()
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
        let (lost, _) = gap(want, stored);
        summary.lost += lost;
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

/// The chaos run's table: what went in, what was done to it, what came out.
fn chaos_table(
    expected: &Expected,
    summary: &Summary,
    pump: &BTreeMap<&'static str, u64>,
    faults: &crate::faults::FaultPlan,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n  chaos");
    let row = |out: &mut String, name: &str, value: String| {
        let _ = writeln!(out, "    {name:<40} {value}");
    };
    row(
        &mut out,
        "valid unique readings published",
        expected.unique_readings().to_string(),
    );
    row(
        &mut out,
        "malformed messages published",
        expected.rejected().to_string(),
    );
    row(
        &mut out,
        "duplicate deliveries published",
        expected.duplicates.to_string(),
    );
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for ((service, operation, fault), n) in faults.injected() {
        *by_kind
            .entry(format!("{service} {operation} {fault:?}"))
            .or_default() += n;
    }
    let passed: u64 = faults.passed().values().sum();
    row(
        &mut out,
        "AWS requests of the functions",
        format!(
            "{} ({} refused by injected faults)",
            passed + faults.total_injected(),
            faults.total_injected()
        ),
    );
    for (kind, n) in by_kind {
        row(&mut out, &format!("  {kind}"), n.to_string());
    }
    row(
        &mut out,
        "invocations crashed half-way",
        summary.crashes.to_string(),
    );
    row(
        &mut out,
        "function errors seen by the pump",
        pump.get("function errors")
            .copied()
            .unwrap_or(0)
            .to_string(),
    );
    row(
        &mut out,
        "batch item failures (records retried)",
        pump.get("batch item failures")
            .copied()
            .unwrap_or(0)
            .to_string(),
    );
    row(
        &mut out,
        "dead letters repeated by a crash",
        summary.dead_letter_repeats.to_string(),
    );
    row(
        &mut out,
        "lost",
        format!("{} {}", summary.lost, mark(summary.lost == 0)),
    );
    row(
        &mut out,
        "double-counted",
        format!(
            "{} {}",
            summary.double_counted,
            mark(summary.double_counted == 0)
        ),
    );
    out
}

/// HH:MM:SS (UTC) of an epoch-ms time.
fn clock(ms: i64) -> String {
    let mut text = String::new();
    geotag::reading::write_rfc3339_millis(&mut text, ms);
    text.get(11..19).unwrap_or("-").to_owned()
}
