//! Cold start and footprint: each function's process started against a
//! local Lambda Runtime API, timed to its first poll and first answer, with
//! its peak memory on the largest batch.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Options, largest, mb, ms, python};
use crate::events::{fleet, ingest_event, latest_changes_event, telemetry_stream_event};
use crate::lambda_api::{ColdRun, Function, Sandbox};

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
pub(crate) const FUNCTION_ENV: [(&str, &str); 15] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("TELEMETRY_TABLE", "geotag-telemetry"),
    ("DEVICE_STATS_TABLE", "geotag-device-stats"),
    (
        "INGEST_REJECTIONS_URL",
        "http://127.0.0.1:1/123456789012/geotag-ingest-rejections",
    ),
    (
        "INGEST_QUARANTINE_URL",
        "http://127.0.0.1:1/123456789012/geotag-ingest-quarantine",
    ),
    ("DEVICE_RATES_TABLE", "geotag-device-rates"),
    ("DEVICES_TABLE", "geotag-devices"),
    ("CUSTOMERS_TABLE", "geotag-customers"),
    ("GEOFENCES_TABLE", "geotag-geofences"),
    ("ALERTS_TABLE", "geotag-alerts"),
    (
        "ALERTS_TOPIC_ARN",
        "arn:aws:sns:eu-west-1:123456789012:geotag-alerts",
    ),
    (
        "SILENCE_RULE_ARN",
        "arn:aws:events:eu-west-1:123456789012:rule/geotag-silence-check",
    ),
    (
        "AUDIT_RULE_ARN",
        "arn:aws:events:eu-west-1:123456789012:rule/geotag-subscription-audit",
    ),
    ("RUST_LOG", "info"),
];

/// What one program's cold starts measured.
pub(super) struct Footprint {
    pub name: &'static str,
    pub init_median: Duration,
    pub answer_median: Duration,
    pub answer_min: Duration,
    /// Peak RSS of the first small invocation, bytes.
    pub rss_small: u64,
    /// Each largest event (what it holds, its bytes) with the peak RSS it made.
    pub largest: Vec<(String, usize, u64)>,
    /// The stripped release binary's size, bytes (none for Python).
    pub binary: Option<u64>,
    /// The arm64 `bootstrap` scripts/bench's `sam build` left, bytes, if any.
    pub sam_arm64: Option<u64>,
}

impl Footprint {
    /// The highest peak RSS of its largest events, bytes.
    pub fn peak_rss(&self) -> u64 {
        self.largest
            .iter()
            .map(|(_, _, rss)| *rss)
            .max()
            .unwrap_or(self.rss_small)
    }

    fn row(&self) -> String {
        let largest: Vec<String> = (self.largest.iter())
            .map(|(what, bytes, rss)| {
                format!(
                    "{:.1} MB ({what}, {:.1} MB event)",
                    mb(*rss),
                    *bytes as f64 / 1_048_576.0
                )
            })
            .collect();
        format!(
            "| {} | {:.1} ms | {:.1} ms / {:.1} ms | {:.1} MB | {} | {} | {} |",
            self.name,
            ms(self.init_median),
            ms(self.answer_median),
            ms(self.answer_min),
            mb(self.rss_small),
            largest.join("<br>"),
            self.binary
                .map_or("-".into(), |bytes| format!("{:.1} MB", mb(bytes))),
            self.sam_arm64.map_or("-".into(), |bytes| format!(
                "{:.1} MB ({bytes} bytes)",
                mb(bytes)
            )),
        )
    }
}

pub(super) async fn cold_starts(options: &Options) -> Result<(String, Vec<Footprint>)> {
    let mut cases = cold_cases(options, &options.root.join("target/release")).await?;
    let sandbox = Sandbox::start().await?;
    let mut table = String::new();
    writeln!(
        table,
        "## Cold start and footprint\n\nEach function's process started {} times against a local Lambda \
         Runtime API and an AWS endpoint that answers at once (bench/src/lambda_api.rs); init is start to \
         the first poll, answer is start to the first response (a 10-record event). Peak RSS is VmHWM once \
         the invocation answered. Binaries: release, stripped; arm64 from this run's `sam build` \
         (target/bench/sam-build, the shipped profile; `-` if it did not run).\n",
        options.cold_starts
    )?;
    writeln!(
        table,
        "| function | init (median) | first answer (median / min) | RSS, 10 records | peak RSS, largest batch | binary x86_64 | binary arm64 |"
    )?;
    writeln!(table, "|---|---:|---:|---:|---:|---:|---:|")?;
    let mut footprints = Vec::new();
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
        let footprint = cold_row(&sandbox, case, options).await?;
        writeln!(table, "{}", footprint.row())?;
        footprints.push(footprint);
    }
    writeln!(table)?;
    Ok((table, footprints))
}

/// `geotag-bench footprint`: the three functions of each build (a directory
/// holding `ingest`, `stats` and `alerts`), side by side in one run, each
/// started cold on its small event and once on each of its largest.
pub async fn compare_builds(
    root: &Path,
    builds: &[(String, PathBuf)],
    cold_starts: usize,
) -> Result<String> {
    let options = Options {
        root: root.to_owned(),
        out: PathBuf::from("target/bench"),
        readings: 0,
        cold_starts,
    };
    let sandbox = Sandbox::start().await?;
    let mut table = String::from(
        "| build | function | init (median) | first answer (median / min) | RSS, 10 records | peak RSS, largest batch | binary x86_64 | binary arm64 |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, dir) in builds {
        let cases = cold_cases(&options, dir).await?;
        for case in cases.iter().filter(|case| case.binary.is_some()) {
            if !case.program.exists() {
                bail!("{} is not built", case.program.display());
            }
            let mut footprint = cold_row(&sandbox, case, &options).await?;
            // The bench's sam build is of the checkout, not of this build.
            footprint.sam_arm64 = None;
            let row = footprint.row();
            writeln!(table, "| {label} {row}")?;
        }
    }
    Ok(table)
}

/// The three functions (their binaries in `release`) and the Python
/// baseline, each with a small event and its largest ones.
async fn cold_cases(options: &Options, release: &Path) -> Result<[ColdCase; 4]> {
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
    let cases = [
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
    Ok(cases)
}

/// One case's cold starts on the small event, then one on each large one.
async fn cold_row(sandbox: &Sandbox, case: &ColdCase, options: &Options) -> Result<Footprint> {
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
    let mut largest = Vec::new();
    for (what, event) in &case.large {
        let run = sandbox.invoke_cold(&function, event).await?;
        check_answer(case.name, &run)?;
        largest.push((what.clone(), event.len(), run.peak_rss));
    }
    let size = |path: &Path| std::fs::metadata(path).ok().map(|meta| meta.len());
    Ok(Footprint {
        name: case.name,
        init_median: init[init.len() / 2],
        answer_median: answer[answer.len() / 2],
        answer_min: answer[0],
        rss_small: runs[0].peak_rss,
        largest,
        binary: case.binary.as_deref().and_then(size),
        sam_arm64: case
            .binary
            .as_ref()
            .and_then(|_| size(&sam_bootstrap(&options.root, case.name))),
    })
}

pub(crate) fn check_answer(name: &str, run: &ColdRun) -> Result<()> {
    if run.response.starts_with("ERROR") || run.response.contains("\"itemIdentifier\"") {
        bail!("{name} did not process its event cleanly: {}", run.response);
    }
    Ok(())
}

/// Where scripts/bench's own `sam build` (the shipped profile) leaves a
/// function's arm64 bootstrap. Not `.aws-sam/build`: scripts/test's sam build
/// there uses a faster profile, and a developer's may be of another commit.
fn sam_bootstrap(root: &Path, function: &str) -> PathBuf {
    let logical = match function {
        "ingest" => "IngestFunction",
        "stats" => "StatsFunction",
        _ => "AlertsFunction",
    };
    root.join("target/bench/sam-build")
        .join(logical)
        .join("bootstrap")
}
