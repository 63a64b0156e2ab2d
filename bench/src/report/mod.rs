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

use crate::events::{NOW_MS, ingest_event};

mod api;
mod cold_start;
mod cost;
mod edge;
mod goals;

pub use cold_start::compare_builds;
pub(crate) use cold_start::{FUNCTION_ENV, check_answer};

pub struct Options {
    pub root: PathBuf,
    pub out: PathBuf,
    pub readings: usize,
    pub cold_starts: usize,
}

/// Lambda's limit on an invocation's payload: the largest batch is the one
/// that fills it (or 10,000 records, whichever comes first).
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// The local API's load run alone (`geotag-bench api-load`).
pub async fn api_load(clients: usize, requests: usize) -> Result<String> {
    api::load_table(clients, requests).await
}

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
    let (cold_table, footprints) = cold_start::cold_starts(options).await?;
    let mut runs = Vec::new();
    if options.readings > 0 {
        runs = cost::request_runs(options.readings).await?;
    }
    // The goals first: each figure below is one of the tables that follow.
    out.push_str(&goals::table(&hot, &footprints, &runs));
    out.push_str(&hot.table);
    out.push_str(&api::api_table(&hot));
    out.push_str(&cold_table);
    if options.readings > 0 {
        out.push_str(&edge::edge_throughput_table(&runs));
        out.push_str(&cost::requests_table(&runs));
        out.push_str(&cost::cost_table(&runs, &hot));
        out.push_str(&cost::agreement_table(&runs, &hot));
        out.push_str(&api::load_table(8, 20).await?);
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

pub(crate) fn python(root: &Path) -> PathBuf {
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
    /// The Python baseline's medians per reading, by the same ids.
    pub python_ns: BTreeMap<String, f64>,
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
    Ok(HotPaths {
        table,
        rust_ns,
        python_ns,
    })
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
pub(crate) fn largest(make: impl Fn(usize) -> String, records: usize) -> (String, usize) {
    let event = make(records);
    if event.len() <= MAX_PAYLOAD {
        return (event, records);
    }
    let fitting = records * MAX_PAYLOAD / event.len();
    let fitting = fitting - fitting / 50;
    (make(fitting), fitting)
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}
