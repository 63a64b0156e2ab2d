//! The report `scripts/bench` prints: hot paths in Rust beside the Python
//! baseline, cold start and memory of the release binaries, their sizes, the
//! AWS requests of a local run per stored reading, and the cost per million
//! readings those make, beside a naive design.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::events::{NOW_MS, fleet, ingest_event, latest_changes_event, telemetry_stream_event};
use crate::lambda_api::{ColdRun, Function, Sandbox};

pub struct Options {
    pub root: PathBuf,
    pub out: PathBuf,
    pub readings: usize,
    pub cold_starts: usize,
}

/// Lambda's limit on an invocation's payload: the largest batch is the one
/// that fills it (or 10,000 records, whichever comes first).
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

pub async fn run(options: &Options) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "# geotag benchmarks\n")?;
    writeln!(
        out,
        "Machine: {} cores ({}); Rust in release (LTO, one codegen unit), Python {}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        python_version(&options.root)
    )?;
    let hot = hot_paths(options).await?;
    out.push_str(&hot.table);
    out.push_str(&cold_starts(options).await?);
    if options.readings > 0 {
        let runs = request_runs(options.readings).await?;
        out.push_str(&requests_table(&runs));
        out.push_str(&cost_table(&runs, &hot));
    }
    Ok(out)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn python(root: &Path) -> PathBuf {
    root.join(".venv/bin/python")
}

fn python_version(root: &Path) -> String {
    std::process::Command::new(python(root))
        .arg("--version")
        .output()
        .ok()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .replace("Python ", "")
        })
        .unwrap_or_else(|| "(not installed)".into())
}

/// The hot paths' figures, also used by the cost model.
pub struct HotPaths {
    pub table: String,
    /// Criterion medians per reading, by benchmark id ("ingest/single/100").
    pub rust_ns: BTreeMap<String, f64>,
}

/// The ingest events both languages time: (id, records, readings per message).
pub const INGEST_CASES: [(&str, usize, usize); 6] = [
    ("ingest/single/10", 10, 1),
    ("ingest/single/100", 100, 1),
    ("ingest/single/10000", 10_000, 1),
    ("ingest/batched50/10", 10, 50),
    ("ingest/batched50/100", 100, 50),
    ("ingest/batched50/1000", 1_000, 50),
];

async fn hot_paths(options: &Options) -> Result<HotPaths> {
    let events_dir = options.root.join(&options.out).join("events");
    std::fs::create_dir_all(&events_dir)?;
    let mut readings_of = BTreeMap::new();
    let mut arguments = vec![NOW_MS.to_string()];
    for (id, records, per_message) in INGEST_CASES {
        // The criterion bench builds the same events from the same seed.
        let (event, readings) = ingest_event(records, per_message, 7);
        let path = events_dir.join(format!("{}.json", id.replace('/', "-")));
        std::fs::write(&path, event)?;
        readings_of.insert(id, readings);
        arguments.push(format!("{id}={}:{readings}", path.display()));
    }
    let output = tokio::process::Command::new(python(&options.root))
        .arg("bench_ingest.py")
        .args(&arguments)
        // The baseline makes its boto3 client at import, as a Lambda's init does.
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .current_dir(options.root.join("bench/python"))
        .output()
        .await
        .context("running the Python baseline (scripts/bench installs it into .venv)")?;
    if !output.status.success() {
        bail!(
            "the Python baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut python_ns = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let value: Value = serde_json::from_str(line)?;
        python_ns.insert(
            value["name"].as_str().unwrap_or_default().to_owned(),
            value["ns_per_reading"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let rust_ns = criterion_results(&options.root.join("target/criterion"))?;
    let mut table = String::new();
    writeln!(
        table,
        "## Hot paths: time per reading\n\nFrom the event's JSON text to the requests that would be sent \
         (criterion median for Rust; median of repeated runs for Python, same event files, same run).\n"
    )?;
    writeln!(
        table,
        "| path | records | readings | Rust ns/reading | Python ns/reading | Python ÷ Rust |"
    )?;
    writeln!(table, "|---|---:|---:|---:|---:|---:|")?;
    for (id, records, _) in INGEST_CASES {
        let rust = rust_ns.get(id).copied();
        let py = python_ns.get(id).copied();
        writeln!(
            table,
            "| {id} | {records} | {} | {} | {} | {} |",
            readings_of[id],
            rust.map_or("(not run)".into(), |ns| format!("{ns:.0}")),
            py.map_or("(not run)".into(), |ns| format!("{ns:.0}")),
            match (rust, py) {
                (Some(r), Some(p)) => format!("{:.0}×", p / r),
                _ => "-".into(),
            }
        )?;
    }
    for (id, what) in [
        ("stats/stream/10000", "10,000 Telemetry INSERTs, 100 tags"),
        (
            "alerts/latest-changes/10000",
            "latest changes of 10,000 readings, 100 tags",
        ),
    ] {
        writeln!(
            table,
            "| {id} ({what}) | | 10000 | {} | - | - |",
            rust_ns
                .get(id)
                .map_or("(not run)".into(), |ns| format!("{ns:.0}"))
        )?;
    }
    writeln!(table)?;
    Ok(HotPaths { table, rust_ns })
}

/// Criterion's median per element, by full benchmark id.
fn criterion_results(dir: &Path) -> Result<BTreeMap<String, f64>> {
    let mut results = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name == "new") {
                    let read = |name: &str| -> Result<Value> {
                        Ok(serde_json::from_str(&std::fs::read_to_string(
                            path.join(name),
                        )?)?)
                    };
                    let (Ok(benchmark), Ok(estimates)) =
                        (read("benchmark.json"), read("estimates.json"))
                    else {
                        continue;
                    };
                    let elements = benchmark["throughput"]["Elements"].as_f64().unwrap_or(1.0);
                    if let (Some(id), Some(median)) = (
                        benchmark["full_id"].as_str(),
                        estimates["median"]["point_estimate"].as_f64(),
                    ) {
                        results.insert(id.to_owned(), median / elements);
                    }
                } else {
                    pending.push(path);
                }
            }
        }
    }
    Ok(results)
}

/// An event of `records` records, or as many as fit in Lambda's payload limit.
fn largest(make: impl Fn(usize) -> String, records: usize) -> (String, usize) {
    let event = make(records);
    if event.len() <= MAX_PAYLOAD {
        return (event, records);
    }
    let fitting = records * MAX_PAYLOAD / event.len();
    let fitting = fitting - fitting / 50;
    (make(fitting), fitting)
}

struct ColdCase {
    name: &'static str,
    program: PathBuf,
    args: Vec<&'static str>,
    dir: PathBuf,
    env: Vec<(&'static str, &'static str)>,
    small: String,
    large: Vec<(String, String)>,
    binary: Option<PathBuf>,
}

/// The functions' environment: template.yaml's tables, and its allocator settings.
pub(crate) const FUNCTION_ENV: [(&str, &str); 11] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("TELEMETRY_TABLE", "geotag-telemetry"),
    ("DEVICE_STATS_TABLE", "geotag-device-stats"),
    (
        "INGEST_DLQ_URL",
        "http://127.0.0.1:1/123456789012/geotag-ingest-dlq",
    ),
    ("DEVICES_TABLE", "geotag-devices"),
    ("CUSTOMERS_TABLE", "geotag-customers"),
    ("GEOFENCES_TABLE", "geotag-geofences"),
    ("ALERTS_TABLE", "geotag-alerts"),
    (
        "ALERTS_TOPIC_ARN",
        "arn:aws:sns:eu-west-1:123456789012:geotag-alerts",
    ),
    ("RUST_LOG", "info"),
];

async fn cold_starts(options: &Options) -> Result<String> {
    let release = options.root.join("target/release");
    // The alerts' events come from running stats on a runtime of its own.
    let (ingest_single, ingest_batched, stats_small, stats_large, alerts_small, changes) =
        tokio::task::spawn_blocking(|| {
            let readings = fleet(100, 100, 11);
            (
                largest(|n| ingest_event(n, 1, 3).0, 10_000),
                largest(|n| ingest_event(n, 50, 3).0, 10_000),
                telemetry_stream_event(&readings[..10]),
                largest(|n| telemetry_stream_event(&readings[..n]), 10_000),
                latest_changes_event(&readings[..20], 10),
                latest_changes_event(&readings, 500),
            )
        })
        .await?;
    let change_count = changes.matches("\"eventID\"").count();
    let rust = |name: &'static str| ColdCase {
        name,
        program: release.join(name),
        args: Vec::new(),
        dir: options.root.clone(),
        env: FUNCTION_ENV.to_vec(),
        small: String::new(),
        large: Vec::new(),
        binary: Some(release.join(name)),
    };
    let mut cases = [
        ColdCase {
            small: ingest_event(10, 1, 3).0,
            large: vec![
                (
                    format!("{} single-reading records", ingest_single.1),
                    ingest_single.0.clone(),
                ),
                (
                    format!("{} records of 50 readings", ingest_batched.1),
                    ingest_batched.0,
                ),
            ],
            ..rust("ingest")
        },
        ColdCase {
            small: stats_small,
            large: vec![(format!("{} stream records", stats_large.1), stats_large.0)],
            ..rust("stats")
        },
        ColdCase {
            small: alerts_small,
            large: vec![(format!("{change_count} latest changes"), changes)],
            ..rust("alerts")
        },
        ColdCase {
            name: "Python ingest baseline (awslambdaric)",
            program: python(&options.root),
            args: vec!["-m", "awslambdaric", "ingest_baseline.handler"],
            dir: options.root.join("bench/python"),
            env: FUNCTION_ENV.to_vec(),
            small: ingest_event(10, 1, 3).0,
            large: vec![(
                format!("{} single-reading records", ingest_single.1),
                ingest_single.0,
            )],
            binary: None,
        },
    ];
    let sandbox = Sandbox::start().await?;
    let mut table = String::new();
    writeln!(
        table,
        "## Cold start and footprint\n\nEach function's process started {} times against a local Lambda \
         Runtime API and an AWS endpoint that answers at once (bench/src/lambda_api.rs); init is start to \
         the first poll, answer is start to the first response (a 10-record event). Peak RSS is VmHWM once \
         the invocation answered. Binaries: release, stripped.\n",
        options.cold_starts
    )?;
    writeln!(
        table,
        "| function | init (median) | first answer (median / min) | RSS, 10 records | peak RSS, largest batch | binary x86_64 | binary arm64 |"
    )?;
    writeln!(table, "|---|---:|---:|---:|---:|---:|---:|")?;
    for case in cases.iter_mut() {
        if !case.program.exists() {
            writeln!(
                table,
                "| {} | not built ({}) | | | | | |",
                case.name,
                case.program.display()
            )?;
            continue;
        }
        let function = Function {
            program: &case.program,
            args: &case.args,
            dir: &case.dir,
            env: &case.env,
        };
        let mut runs: Vec<ColdRun> = Vec::new();
        for _ in 0..options.cold_starts.max(1) {
            let run = sandbox.invoke_cold(&function, &case.small).await?;
            check_answer(case.name, &run)?;
            runs.push(run);
        }
        let mut init: Vec<Duration> = runs.iter().map(|r| r.init).collect();
        let mut answer: Vec<Duration> = runs.iter().map(|r| r.first_answer).collect();
        init.sort();
        answer.sort();
        let mut large = Vec::new();
        for (what, event) in &case.large {
            let run = sandbox.invoke_cold(&function, event).await?;
            check_answer(case.name, &run)?;
            large.push(format!(
                "{:.1} MB ({what}, {:.1} MB event)",
                mb(run.peak_rss),
                event.len() as f64 / 1_048_576.0
            ));
        }
        writeln!(
            table,
            "| {} | {:.1} ms | {:.1} ms / {:.1} ms | {:.1} MB | {} | {} | {} |",
            case.name,
            ms(init[init.len() / 2]),
            ms(answer[answer.len() / 2]),
            ms(answer[0]),
            mb(runs[0].peak_rss),
            large.join("<br>"),
            case.binary
                .as_ref()
                .and_then(|path| std::fs::metadata(path).ok())
                .map_or("-".into(), |meta| format!("{:.1} MB", mb(meta.len()))),
            case.binary
                .as_ref()
                .map_or("-".into(), |_| arm64_size(&options.root, case.name)),
        )?;
    }
    writeln!(table)?;
    Ok(table)
}

pub(crate) fn check_answer(name: &str, run: &ColdRun) -> Result<()> {
    if run.response.starts_with("ERROR") || run.response.contains("\"itemIdentifier\"") {
        bail!("{name} did not process its event cleanly: {}", run.response);
    }
    Ok(())
}

/// The arm64 bootstrap `sam build` or `cargo lambda build --arm64` left, if any.
fn arm64_size(root: &Path, function: &str) -> String {
    let logical = match function {
        "ingest" => "IngestFunction",
        "stats" => "StatsFunction",
        _ => "AlertsFunction",
    };
    [
        root.join(".aws-sam/build").join(logical).join("bootstrap"),
        root.join("target/lambda").join(function).join("bootstrap"),
    ]
    .into_iter()
    .find_map(|path| std::fs::metadata(path).ok())
    .map_or("(not built: sam build)".into(), |meta| {
        format!("{:.1} MB", mb(meta.len()))
    })
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// A local run's counts, for one kind of device.
pub struct RequestRun {
    pub readings_per_message: usize,
    pub summary: geotag_simulation::demo::Summary,
}

async fn request_runs(readings: usize) -> Result<Vec<RequestRun>> {
    let mut runs = Vec::new();
    for per_message in [1, 50] {
        let fleet = geotag_simulation::simulate::FleetConfig {
            devices: readings.div_ceil(50).max(1),
            readings_per_device: 50,
            interval_secs: 60,
            bad_ratio: 0.0,
            dup_ratio: 0.0,
            seed: 5,
            end_ms: geotag::clock::now_ms(),
            readings_per_message: Some(per_message),
        };
        println!(
            "\nbench: a local run of {readings} readings, {per_message} per message, counting requests"
        );
        let summary = geotag_simulation::demo::run(geotag_simulation::demo::DemoOptions {
            stack: geotag_local_cloud::stack::Options::default(),
            fleet,
            invoker: None,
            time_scale: 1.0,
            drain_timeout: Duration::from_secs(3600),
            chaos: None,
            device_rows: false,
            output_dir: None,
        })
        .await?;
        if !summary.ok {
            bail!("the counting run's audit failed; its figures would not mean anything");
        }
        runs.push(RequestRun {
            readings_per_message: per_message,
            summary,
        });
    }
    Ok(runs)
}

fn per_reading(run: &RequestRun, count: f64) -> f64 {
    count / run.summary.readings_stored.max(1) as f64
}

fn requests_table(runs: &[RequestRun]) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## AWS requests per stored reading\n\nCounted at the functions' HTTP client in a local run \
         (moto), clean traffic, 50 readings per tag a minute apart.\n"
    );
    let _ = write!(table, "| request |");
    for run in runs {
        let _ = write!(table, " {} per message |", run.readings_per_message);
    }
    let _ = writeln!(table);
    let _ = writeln!(table, "|---|{}", "---:|".repeat(runs.len()));
    let operations: std::collections::BTreeSet<&(String, String)> = runs
        .iter()
        .flat_map(|run| run.summary.requests.keys())
        .collect();
    let row = |table: &mut String, name: &str, values: Vec<f64>| {
        let _ = write!(table, "| {name} |");
        for value in values {
            let _ = write!(table, " {value:.4} |");
        }
        let _ = writeln!(table);
    };
    row(
        &mut table,
        "device messages (SNS Publish)",
        runs.iter()
            .map(|run| per_reading(run, run.summary.messages_published as f64))
            .collect(),
    );
    for operation in operations {
        row(
            &mut table,
            &format!("{} {}", operation.0, operation.1),
            runs.iter()
                .map(|run| {
                    let count = run.summary.requests.get(operation).copied().unwrap_or(0);
                    per_reading(run, count as f64)
                })
                .collect(),
        );
    }
    let mut tables: Vec<&String> = runs
        .iter()
        .flat_map(|run| run.summary.write_units.keys())
        .collect();
    tables.sort();
    tables.dedup();
    for name in tables {
        row(
            &mut table,
            &format!("{name}: write units"),
            runs.iter()
                .map(|run| {
                    per_reading(
                        run,
                        run.summary.write_units.get(name).map_or(0.0, |w| w.units),
                    )
                })
                .collect(),
        );
    }
    let _ = writeln!(table);
    table
}

/// us-east-1 list prices from AWS's public pricing pages as published in
/// 2025 (DynamoDB on-demand after its November 2024 cut). Not fetched live:
/// check them before quoting a bill.
mod price {
    pub const LAMBDA_REQUEST: f64 = 0.20e-6;
    /// arm64, per GB-second (first pricing tier).
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    pub const SQS_REQUEST: f64 = 0.40e-6;
    pub const SNS_PUBLISH: f64 = 0.50e-6;
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625e-6;
    pub const DYNAMODB_READ_UNIT: f64 = 0.125e-6;
}

/// Assumptions the cost model states rather than measures.
mod assume {
    /// In-region DynamoDB latency per sequential round of requests.
    pub const DYNAMODB_ROUND_MS: f64 = 5.0;
    /// The functions' memory (template.yaml's Globals).
    pub const MEMORY_GB: f64 = 0.25;
    /// Event source batch sizes under sustained load (template defaults).
    pub const INGEST_BATCH: f64 = 100.0;
    pub const STATS_BATCH: f64 = 500.0;
    pub const ALERTS_BATCH: f64 = 100.0;
    /// Messages per SQS ReceiveMessage, and per DeleteMessageBatch.
    pub const SQS_PER_REQUEST: f64 = 10.0;
    /// Sequential rounds of requests per invocation: ingest writes its
    /// chunks concurrently (one round); stats loads, queries tracks and
    /// saves (three); alerts reads the registry, claims, publishes and marks (four).
    pub const INGEST_ROUNDS: f64 = 1.0;
    pub const STATS_ROUNDS: f64 = 3.0;
    pub const ALERTS_ROUNDS: f64 = 4.0;
    /// Readings of a tag an hour (one a minute): the track an hour Query reads.
    pub const READINGS_PER_HOUR: f64 = 60.0;
}

fn cost_table(runs: &[RequestRun], hot: &HotPaths) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## Cost per million stored readings (USD, us-east-1, on-demand, arm64 at 256 MB)\n\n\
         Requests and write units per reading as counted above; handler CPU time from the hot-path \
         figures; prices and the assumptions in bench/src/report.rs (`price`, `assume`): {} ms per \
         sequential DynamoDB round, full batches (ingest {}, stats {}, alerts {}), Lambda's pollers \
         receiving and deleting 10 messages per SQS request. The naive design: one PutItem per \
         reading in ingest, awaited in turn, and stats by GetItem + PutItem of the latest, hour and \
         day items for each reading.\n",
        assume::DYNAMODB_ROUND_MS,
        assume::INGEST_BATCH,
        assume::STATS_BATCH,
        assume::ALERTS_BATCH
    );
    let mut columns: Vec<(String, Cost)> = Vec::new();
    for run in runs {
        let id = if run.readings_per_message == 1 {
            "ingest/single/100"
        } else {
            "ingest/batched50/100"
        };
        let ingest_ns = hot.rust_ns.get(id).copied().unwrap_or(0.0);
        let stats_ns = hot
            .rust_ns
            .get("stats/stream/10000")
            .copied()
            .unwrap_or(0.0);
        let alerts_ns = hot
            .rust_ns
            .get("alerts/latest-changes/10000")
            .copied()
            .unwrap_or(0.0);
        let label = format!("{} per message", run.readings_per_message);
        columns.push((
            format!("geotag, {label}"),
            Cost::of(run, ingest_ns, stats_ns, alerts_ns, false),
        ));
        columns.push((
            format!("naive, {label}"),
            Cost::of(run, ingest_ns, stats_ns, alerts_ns, true),
        ));
    }
    let _ = write!(table, "| per million readings |");
    for (name, _) in &columns {
        let _ = write!(table, " {name} |");
    }
    let _ = writeln!(table);
    let _ = writeln!(table, "|---|{}", "---:|".repeat(columns.len()));
    type Line = (&'static str, fn(&Cost) -> f64);
    let lines: [Line; 7] = [
        ("SNS publishes", |c| c.sns),
        ("SQS requests", |c| c.sqs),
        ("Lambda requests", |c| c.lambda_requests),
        ("Lambda duration", |c| c.lambda_duration),
        ("DynamoDB writes", |c| c.dynamodb_writes),
        ("DynamoDB reads", |c| c.dynamodb_reads),
        ("**total**", Cost::total),
    ];
    for (name, value) in lines {
        let _ = write!(table, "| {name} |");
        for (_, cost) in &columns {
            let _ = write!(table, " ${:.3} |", value(cost));
        }
        let _ = writeln!(table);
    }
    let _ = writeln!(table);
    table
}

#[derive(Debug, Default)]
struct Cost {
    sns: f64,
    sqs: f64,
    lambda_requests: f64,
    lambda_duration: f64,
    dynamodb_writes: f64,
    dynamodb_reads: f64,
}

impl Cost {
    fn total(&self) -> f64 {
        self.sns
            + self.sqs
            + self.lambda_requests
            + self.lambda_duration
            + self.dynamodb_writes
            + self.dynamodb_reads
    }

    fn of(run: &RequestRun, ingest_ns: f64, stats_ns: f64, alerts_ns: f64, naive: bool) -> Cost {
        const MILLION: f64 = 1e6;
        let summary = &run.summary;
        let stored = summary.readings_stored.max(1) as f64;
        let per_reading = |n: f64| n / stored;
        let requests = |service: &str, operation: &str| {
            per_reading(
                summary
                    .requests
                    .get(&(service.to_owned(), operation.to_owned()))
                    .copied()
                    .unwrap_or(0) as f64,
            )
        };
        let table_units = |needle: &str| {
            let (writes, units) = summary
                .write_units
                .iter()
                .filter(|(name, _)| name.contains(needle))
                .fold((0.0, 0.0), |(w, u), (_, units)| {
                    (w + units.item_writes as f64, u + units.units)
                });
            (per_reading(writes), per_reading(units))
        };
        let (telemetry_writes, telemetry_units) = table_units("telemetry");
        let (stats_writes, stats_units) = table_units("device-stats");
        let total_units: f64 = per_reading(summary.write_units.values().map(|w| w.units).sum());
        let other_units = total_units - telemetry_units - stats_units;
        let keys_read = per_reading(summary.keys_read.values().sum::<u64>() as f64);
        let messages = MILLION / run.readings_per_message as f64;
        let readings_per_ingest = assume::INGEST_BATCH * run.readings_per_message as f64;
        let ingest_invocations = messages / assume::INGEST_BATCH;
        let stats_invocations = MILLION / assume::STATS_BATCH;
        // Alerts see one change per latest write: a third of the stats writes.
        let alerts_invocations = MILLION * stats_writes / 3.0 / assume::ALERTS_BATCH;
        let seconds = |invocations: f64, cpu_ns: f64, rounds: f64| {
            invocations * (cpu_ns * 1e-9 + rounds * assume::DYNAMODB_ROUND_MS / 1000.0)
        };
        // The naive design awaits every request in turn: a round per reading
        // in ingest, six (three reads, three writes) per reading in stats.
        let (ingest_rounds, stats_rounds) = if naive {
            (readings_per_ingest, 6.0 * assume::STATS_BATCH)
        } else {
            (assume::INGEST_ROUNDS, assume::STATS_ROUNDS)
        };
        let gb_seconds = assume::MEMORY_GB
            * (seconds(
                ingest_invocations,
                ingest_ns * readings_per_ingest,
                ingest_rounds,
            ) + seconds(
                stats_invocations,
                stats_ns * assume::STATS_BATCH,
                stats_rounds,
            ) + seconds(
                alerts_invocations,
                alerts_ns * MILLION / alerts_invocations.max(1.0),
                assume::ALERTS_ROUNDS,
            ));
        let telemetry_item_bytes = summary
            .write_units
            .iter()
            .find(|(name, _)| name.contains("telemetry"))
            .map_or(256.0, |(_, units)| units.mean_item_bytes);
        // A strongly consistent Query costs a read unit per started 4 KB.
        let track_query_units = (assume::READINGS_PER_HOUR * telemetry_item_bytes / 4096.0).ceil();
        let (write_units, read_units) = if naive {
            // One write per reading per item, and a strongly consistent read
            // before each stats write.
            let mean_stats_units = if stats_writes > 0.0 {
                stats_units / stats_writes
            } else {
                1.0
            };
            (
                telemetry_units / telemetry_writes.max(1e-9) + 3.0 * mean_stats_units + other_units,
                3.0,
            )
        } else {
            (
                total_units,
                keys_read + requests("dynamodb", "Query") * track_query_units,
            )
        };
        let function_sqs = requests("sqs", "SendMessageBatch") + requests("sqs", "SendMessage");
        Cost {
            sns: messages * price::SNS_PUBLISH
                + MILLION * requests("sns", "Publish") * price::SNS_PUBLISH,
            sqs: (2.0 * messages / assume::SQS_PER_REQUEST + MILLION * function_sqs)
                * price::SQS_REQUEST,
            lambda_requests: (ingest_invocations + stats_invocations + alerts_invocations)
                * price::LAMBDA_REQUEST,
            lambda_duration: gb_seconds * price::LAMBDA_GB_SECOND,
            dynamodb_writes: MILLION * write_units * price::DYNAMODB_WRITE_UNIT,
            dynamodb_reads: MILLION * read_units * price::DYNAMODB_READ_UNIT,
        }
    }
}
