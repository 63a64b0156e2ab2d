//! The printed report of a run: the readings' table, the chaos table, the
//! functions' requests and metrics beside the audit, and the marks (✓ ✗)
//! that say what matched.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use geotag::Reason;

use crate::faults::FaultPlan;
use crate::metrics::MetricTotals;
use crate::reading_audit::Audit;
use crate::simulate::{self, Expected};
use crate::summary::Summary;

/// ✓ when `ok`, else ✗.
pub fn mark(ok: bool) -> &'static str {
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
    let mut ok = readings_lines(&mut out, expected, audit);
    ok &= rejection_lines(&mut out, expected, audit);
    let pumped: Vec<String> = pump
        .iter()
        .map(|(name, value)| format!("{value} {name}"))
        .collect();
    let _ = writeln!(out, "  pump        {}", pumped.join(", "));
    ok &= device_table(&mut out, expected, audit, device_rows);
    crossings_line(&mut out, expected);
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

/// Valid readings published, stored, and duplicates absorbed.
fn readings_lines(out: &mut String, expected: &Expected, audit: &Audit) -> bool {
    let to_store = audit.expected_stored_in_all(expected);
    let stored_ok = audit.stored == to_store;
    let _ = writeln!(
        out,
        "\n  readings    {:>6} valid and unique published",
        expected.unique_readings()
    );
    if to_store != expected.unique_readings() {
        let _ = writeln!(
            out,
            "              {:>6} parked in IngestQuarantine and not stored (over their tag's budget)",
            expected.unique_readings() - to_store
        );
    }
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
    stored_ok
}

/// Malformed messages published and dead-lettered, in all and by reason.
fn rejection_lines(out: &mut String, expected: &Expected, audit: &Audit) -> bool {
    let dead_total: usize = audit.dead_lettered_by_reason.values().sum();
    let mut ok = dead_total == expected.rejected();
    let _ = writeln!(
        out,
        "  rejected    {:>6} malformed published, {} dead-lettered {}",
        expected.rejected(),
        dead_total,
        mark(ok)
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
    ok
}

/// A row per device (or, without `device_rows`, only the rows that differ).
fn device_table(out: &mut String, expected: &Expected, audit: &Audit, device_rows: bool) -> bool {
    let mut ok = true;
    let mut rows = String::new();
    for (device, want) in &expected.readings_per_device {
        let want = audit.expected_stored(device, *want);
        let (row, row_ok) = device_row(out, expected, audit, device, want);
        ok &= row_ok;
        if device_rows || !row_ok {
            rows.push_str(&row);
        }
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "  devices     {} tags, each as expected ✓",
            expected.readings_per_device.len()
        );
        return ok;
    }
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
    ok
}

/// One device's row, and whether Telemetry and DeviceStats hold what it
/// sent. A distance off the in-order one is also said in `out`, at once.
fn device_row(
    out: &mut String,
    expected: &Expected,
    audit: &Audit,
    device: &str,
    want: usize,
) -> (String, bool) {
    let summary = audit
        .stored_per_device
        .get(device)
        .cloned()
        .unwrap_or_default();
    let device_ok = summary.readings == want;
    let mut ok = device_ok;
    let kind = expected.behaviours.get(device).map_or("?", |b| b.name());
    let stats = audit
        .device_stats
        .as_ref()
        .map(|all| all.get(device).cloned().unwrap_or_default());
    let (stats_column, position, battery) = match &stats {
        None => ("-".to_owned(), summary.last_position, summary.last_battery),
        Some(stats) => {
            let counts_ok = stats.hourly_count == want as u64 && stats.daily_count == want as u64;
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
    let row = format!(
        "  {device:<10} {kind:<9} {:>8} {} {:<8} {:<8} {:>17}  {:>10.5},{:>10.5}  {:>7}\n",
        summary.readings,
        mark(device_ok),
        clock(summary.first_ms),
        clock(summary.last_ms),
        stats_column,
        position.0,
        position.1,
        battery.map_or("-".to_owned(), |b| format!("{b:.0}%")),
    );
    (row, ok)
}

/// The depot crossings the simulator scripted, when it scripted any.
fn crossings_line(out: &mut String, expected: &Expected) {
    if expected.crossings.is_empty() {
        return;
    }
    let crossings: Vec<String> = (expected.crossings.iter())
        .map(|c| {
            let (entered, left) = (clock(c.entered_ms), clock(c.left_ms));
            format!("{} in {entered}, out {left}", c.device_id)
        })
        .collect();
    let _ = writeln!(
        out,
        "\n  scripted    {} crossings of {:?} ({} m around {}, {}): {}",
        expected.crossings.len(),
        simulate::DEPOT.name,
        simulate::DEPOT.radius_m,
        simulate::DEPOT.lat,
        simulate::DEPOT.lon,
        crossings.join("; ")
    );
}

/// The demo's cost figures: the functions' requests per stored reading.
pub fn requests_table(summary: &Summary) -> String {
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

/// The chaos run's table: what went in, what was done to it, what came out.
pub fn chaos_table(
    expected: &Expected,
    summary: &Summary,
    pump: &BTreeMap<&'static str, u64>,
    faults: &FaultPlan,
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
    let answers_lost = faults.total_lost_answers();
    let refused = faults.total_injected() - answers_lost;
    // Requests whose answer was lost went through: they are among `passed`.
    let passed: u64 = faults.passed().values().sum();
    row(
        &mut out,
        "AWS requests of the functions",
        format!(
            "{} ({refused} refused, {answers_lost} applied with their answer lost)",
            passed + refused,
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

/// Sets the functions' own counts beside the audit's. Faults and crashes cut
/// invocations short before they report, so only a run without them must agree.
pub fn reconcile_metrics(
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
    let refused = audit
        .dead_lettered_by_reason
        .iter()
        .filter(|(reason, _)| *reason != crate::reading_audit::FAILED_AFTER_RETRIES)
        .map(|(_, count)| *count)
        .sum::<usize>() as u64
        + audit.dead_letter_repeats;
    let mut checks = vec![
        (
            "ingest MessagesRejected",
            metrics.total("ingest", "MessagesRejected"),
            "messages in IngestRejections",
            refused as f64,
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

/// HH:MM:SS (UTC) of an epoch-ms time.
fn clock(ms: i64) -> String {
    let mut text = String::new();
    geotag::reading::write_rfc3339_millis(&mut text, ms);
    text.get(11..19).unwrap_or("-").to_owned()
}
