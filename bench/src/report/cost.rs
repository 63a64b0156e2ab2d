//! The AWS requests of a local run per stored reading, and what a million
//! readings cost at those counts, beside a naive design.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};

use super::HotPaths;

/// A local run's counts, for one kind of device and one path to the topic.
pub struct RequestRun {
    pub readings_per_message: usize,
    /// Played in steps of the fleet's time ([`STEP`]): batching exact, the
    /// run the cost tables price. Otherwise free-running, for throughput.
    pub stepped: bool,
    pub summary: geotag_simulation::summary::Summary,
}

/// The fleet's time a counting run publishes at once before ingest, stats
/// and alerts take it in turn (see `geotag_local_cloud::pump`'s stepped
/// runs): a minute, the tags' reading interval.
pub const STEP: Duration = Duration::from_secs(60);

/// Counting runs of each kind, to show that they agree.
const REPEATS: usize = 2;

/// The batching the cost tables assume, as the report states it.
pub(super) fn batching_assumption() -> String {
    format!(
        "Batching as Lambda delivers it when each event source's batching window covers a minute of \
         the fleet's traffic: the fleet is published a minute of its time at a time ({}s steps), then \
         ingest takes the whole queue, stats the whole Telemetry stream and alerts the whole \
         DeviceStats stream, one after another, each in batches of its BatchSize (the template's: \
         ingest 100, stats 500, alerts 100), a batch ending when full or when its source is empty. \
         A tag reading once a minute is then in one stats batch per reading, as it is at any fleet \
         size whose minute of traffic fills batches before the window closes. The readings lie in \
         minutes 5 to 54 of one hour, two hours back, so that every run meets the same hour and day \
         boundaries (none: a 50-reading message touches one hour, not the two it would 49 times in \
         60 at random phases) and the same silence.",
        STEP.as_secs()
    )
}

/// The counting runs: single-reading and batching tags published to SNS as
/// a gateway would, each played in steps [`REPEATS`] times; then the
/// single-reading fleet free-running, through SNS and over MQTT through the
/// local broker and its topic rule, for the edge's throughput. The same
/// fleet (seed, size) for all.
pub(super) async fn request_runs(readings: usize) -> Result<Vec<RequestRun>> {
    use geotag_simulation::edge::Via;
    // Two hours back, minutes 5 to 54 of that hour: every run's readings
    // meet the same hour and day boundaries (none), and every tag has been
    // silent for over an hour when the run's silence check comes.
    const HOUR_MS: i64 = 3_600_000;
    let hour = (geotag::clock::now_ms().div_euclid(HOUR_MS) - 2) * HOUR_MS;
    let mut runs = Vec::new();
    let mut kinds: Vec<(usize, Via, bool)> = Vec::new();
    for per_message in [1, 50] {
        kinds.extend(std::iter::repeat_n((per_message, Via::Sns, true), REPEATS));
    }
    kinds.extend([(1, Via::Sns, false), (1, Via::Mqtt, false)]);
    for (per_message, via, stepped) in kinds {
        let fleet = geotag_simulation::simulate::FleetConfig {
            devices: readings.div_ceil(50).max(1),
            readings_per_device: 50,
            interval_secs: 60,
            bad_ratio: 0.0,
            dup_ratio: 0.0,
            seed: 5,
            end_ms: if stepped {
                hour + 54 * 60_000
            } else {
                geotag::clock::now_ms()
            },
            readings_per_message: Some(per_message),
            flood: None,
        };
        println!(
            "\nbench: a local run of {readings} readings, {per_message} per message, via {via:?}, {}, counting requests",
            if stepped { "stepped" } else { "free-running" }
        );
        let summary = geotag_simulation::demo::run(geotag_simulation::demo::DemoOptions {
            stack: geotag_local_cloud::stack::Options::default(),
            fleet,
            invoker: None,
            launch: None,
            time_scale: 1.0,
            drain_timeout: Duration::from_secs(3600),
            chaos: None,
            device_rows: false,
            output_dir: None,
            via,
            publish_speedup: None,
            stepped: stepped.then_some(STEP),
        })
        .await?;
        if !summary.ok {
            bail!("the counting run's audit failed; its figures would not mean anything");
        }
        runs.push(RequestRun {
            readings_per_message: per_message,
            stepped,
            summary,
        });
    }
    Ok(runs)
}

/// The runs the request and cost tables price: the first stepped run of
/// each kind (the functions' requests do not depend on the path a message
/// came by).
fn cost_runs(runs: &[RequestRun]) -> Vec<&RequestRun> {
    let mut priced: Vec<&RequestRun> = Vec::new();
    for run in runs.iter().filter(|run| run.stepped) {
        if !priced
            .iter()
            .any(|p| p.readings_per_message == run.readings_per_message)
        {
            priced.push(run);
        }
    }
    priced
}

/// The stepped runs of fleets sending `readings_per_message` readings a message.
fn stepped_of_kind(runs: &[RequestRun], readings_per_message: usize) -> Vec<&RequestRun> {
    (runs.iter())
        .filter(|run| run.stepped && run.readings_per_message == readings_per_message)
        .collect()
}

/// The stepped runs of each kind side by side: their totals, and how far
/// apart they are (the figure holds still if within 5%).
pub(super) fn agreement_table(runs: &[RequestRun], hot: &HotPaths) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## Do two counting runs agree?\n\nEach kind of fleet counted {REPEATS} times in steps, \
         priced alike (the gateway's total).\n"
    );
    let _ = writeln!(
        table,
        "| readings a message | runs' totals per million | stats write units a reading | Queries a reading | spread |"
    );
    let _ = writeln!(table, "|---:|---|---|---|---:|");
    for kind in kind_costs(runs, hot) {
        let stepped = stepped_of_kind(runs, kind.readings_per_message);
        let stats_units: Vec<String> = (stepped.iter())
            .map(|run| format!("{:.4}", run.writes_per_reading("device-stats").1))
            .collect();
        let queries: Vec<String> = (stepped.iter())
            .map(|run| format!("{:.4}", run.requests_per_reading("dynamodb", "Query")))
            .collect();
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {:.2}% |",
            kind.readings_per_message,
            (kind.totals.iter())
                .map(|t| format!("${t:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            stats_units.join(", "),
            queries.join(", "),
            kind.spread
        );
    }
    let _ = writeln!(table);
    table
}

/// How far apart the highest and lowest of `totals` are, in percent of the lowest.
fn spread_percent(totals: &[f64]) -> f64 {
    let (low, high) = totals.iter().fold((f64::MAX, f64::MIN), |(low, high), t| {
        (low.min(*t), high.max(*t))
    });
    100.0 * (high - low) / low.max(1e-9)
}

/// One kind of fleet's cost as the goals judge it.
pub(super) struct KindCost {
    pub readings_per_message: usize,
    /// The gateway's total per million readings, of the priced (first stepped) run.
    pub total: f64,
    /// The naive design's, at the same counts.
    pub naive: f64,
    /// The stepped runs' totals, and how far apart they are (percent).
    pub totals: Vec<f64>,
    pub spread: f64,
    /// Per million readings, what is paid before stats and alerts write
    /// anything: SNS, SQS and the Telemetry items.
    pub floor: f64,
    /// Stats' DeviceStats write units and Queries a reading.
    pub stats_units: f64,
    pub queries: f64,
}

/// Each kind of fleet's cost, from the stepped runs.
pub(super) fn kind_costs(runs: &[RequestRun], hot: &HotPaths) -> Vec<KindCost> {
    cost_runs(runs)
        .into_iter()
        .map(|priced| {
            let totals: Vec<f64> = stepped_of_kind(runs, priced.readings_per_message)
                .into_iter()
                .map(|run| Cost::of(run, hot, false).total())
                .collect();
            let cost = Cost::of(priced, hot, false);
            let telemetry_units = priced.writes_per_reading("telemetry").1;
            KindCost {
                readings_per_message: priced.readings_per_message,
                total: cost.total(),
                naive: Cost::of(priced, hot, true).total(),
                spread: spread_percent(&totals),
                totals,
                floor: cost.sns + cost.sqs + 1e6 * telemetry_units * price::DYNAMODB_WRITE_UNIT,
                stats_units: priced.writes_per_reading("device-stats").1,
                queries: priced.requests_per_reading("dynamodb", "Query"),
            }
        })
        .collect()
}

fn per_reading(run: &RequestRun, count: f64) -> f64 {
    count / run.summary.readings_stored.max(1) as f64
}

impl RequestRun {
    /// Requests of one operation the functions made, per stored reading.
    fn requests_per_reading(&self, service: &str, operation: &str) -> f64 {
        let key = (service.to_owned(), operation.to_owned());
        per_reading(
            self,
            self.summary.requests.get(&key).copied().unwrap_or(0) as f64,
        )
    }

    /// Item writes and write units, per stored reading, of the tables
    /// whose names contain `table`.
    fn writes_per_reading(&self, table: &str) -> (f64, f64) {
        let (writes, units) = (self.summary.write_units.iter())
            .filter(|(name, _)| name.contains(table))
            .fold((0.0, 0.0), |(w, u), (_, units)| {
                (w + units.item_writes as f64, u + units.units)
            });
        (per_reading(self, writes), per_reading(self, units))
    }
}

pub(super) fn requests_table(runs: &[RequestRun]) -> String {
    let runs = cost_runs(runs);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## AWS requests per stored reading\n\nCounted at the functions' HTTP client in a local run \
         (moto), clean traffic, 50 readings per tag a minute apart. {}\n",
        batching_assumption()
    );
    let _ = write!(table, "| request |");
    for run in &runs {
        let _ = write!(table, " {} per message |", run.readings_per_message);
    }
    let _ = writeln!(table);
    let _ = writeln!(table, "|---|{}", "---:|".repeat(runs.len()));
    let operations: std::collections::BTreeSet<&(String, String)> = (runs.iter())
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
pub(super) mod price {
    /// IoT Core (aws.amazon.com/iot-core/pricing, as its worked examples and
    /// metering details gave them on 2026-12-02): messaging for the first
    /// billion messages a month, per 5 KB; rules triggered and actions
    /// executed, per 5 KB; connectivity per minute connected. Basic Ingest
    /// (publishing on `$aws/rules/RULE/...`) waives the messaging charge.
    pub const IOT_MESSAGE: f64 = 1.00e-6;
    pub const IOT_RULE_TRIGGERED: f64 = 0.15e-6;
    pub const IOT_ACTION: f64 = 0.15e-6;
    pub const IOT_CONNECTION_MINUTE: f64 = 0.08e-6;
    pub const LAMBDA_REQUEST: f64 = 0.20e-6;
    /// arm64, per GB-second (first pricing tier).
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    pub const SQS_REQUEST: f64 = 0.40e-6;
    pub const SNS_PUBLISH: f64 = 0.50e-6;
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625e-6;
    pub const DYNAMODB_READ_UNIT: f64 = 0.125e-6;
}

/// Assumptions the cost model states rather than measures.
pub(super) mod assume {
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
    /// chunks concurrently (one round); stats loads and writes `latest`
    /// (two), and in the batches of an hour's first minute, where tags
    /// reading once a minute close their hours, first queries the closed
    /// hours, writes them, queries their days and writes them (four more,
    /// in one batch minute of 60); alerts reads the registry, claims,
    /// publishes and marks (four).
    pub const INGEST_ROUNDS: f64 = 1.0;
    pub const STATS_ROUNDS: f64 = 2.0 + 4.0 / 60.0;
    pub const ALERTS_ROUNDS: f64 = 4.0;
    /// Write units of each of the naive design's three stats items (latest,
    /// hour, day): none carries a trail, each is under 1 KB, as geotag's
    /// rollups are. (geotag's own mean is no guide: its `latest` items carry
    /// the trail of every reading a write absorbed, 5 units for 50.)
    pub const NAIVE_STATS_ITEM_UNITS: f64 = 1.0;
    /// Readings of a tag an hour (one a minute): the track an hour Query reads.
    pub const READINGS_PER_HOUR: f64 = 60.0;
    /// A tag stays connected to IoT Core and reads once a minute: a minute
    /// of connection per reading, however many readings a message carries.
    pub const CONNECTION_MINUTES_PER_READING: f64 = 1.0;
}

pub(super) fn cost_table(runs: &[RequestRun], hot: &HotPaths) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## Cost per million stored readings (USD, us-east-1, on-demand, arm64 at 256 MB)\n\n\
         Requests and write units per reading as counted above; handler CPU time from the hot-path \
         figures; prices and the assumptions in bench/src/report/cost.rs (`price`, `assume`): {} ms per \
         sequential DynamoDB round, full batches (ingest {}, stats {}, alerts {}), Lambda's pollers \
         receiving and deleting 10 messages per SQS request. The naive design: one PutItem per \
         reading in ingest, awaited in turn, and stats by GetItem + PutItem of the latest, hour and \
         day items for each reading. Tags reach the telemetry topic through IoT Core (a rule and its \
         SNS action per message, messages and rules metered per 5 KB of topic and payload as the run \
         sent them, a tag connected all the time and reading once a minute), or a gateway publishes \
         to SNS itself (the SNS lines alone). IoT Core's prices are dated in `price`.\n",
        assume::DYNAMODB_ROUND_MS,
        assume::INGEST_BATCH,
        assume::STATS_BATCH,
        assume::ALERTS_BATCH
    );
    let mut columns: Vec<(String, Cost)> = Vec::new();
    for run in cost_runs(runs) {
        let label = format!("{} per message", run.readings_per_message);
        columns.push((format!("geotag, {label}"), Cost::of(run, hot, false)));
        columns.push((format!("naive, {label}"), Cost::of(run, hot, true)));
    }
    let _ = write!(table, "| per million readings |");
    for (name, _) in &columns {
        let _ = write!(table, " {name} |");
    }
    let _ = writeln!(table);
    let _ = writeln!(table, "|---|{}", "---:|".repeat(columns.len()));
    type Line = (&'static str, fn(&Cost) -> f64);
    let lines: [Line; 12] = [
        ("SNS publishes", |c| c.sns),
        ("SQS requests", |c| c.sqs),
        ("Lambda requests", |c| c.lambda_requests),
        ("Lambda duration", |c| c.lambda_duration),
        ("DynamoDB writes", |c| c.dynamodb_writes),
        ("DynamoDB reads", |c| c.dynamodb_reads),
        ("**total, a gateway publishing to SNS**", Cost::total),
        ("IoT Core messaging", |c| c.iot_messaging),
        ("IoT Core rule and its SNS action", |c| c.iot_rules),
        ("IoT Core connectivity", |c| c.iot_connectivity),
        ("**total, tags over IoT Core**", Cost::total_over_iot_core),
        (
            "**total, over IoT Core's Basic Ingest** (no messaging charge)",
            |c| c.total_over_iot_core() - c.iot_messaging,
        ),
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
    iot_messaging: f64,
    iot_rules: f64,
    iot_connectivity: f64,
}

impl Cost {
    /// Everything from the telemetry topic on: what a gateway publishing to
    /// SNS pays.
    fn total(&self) -> f64 {
        self.sns
            + self.sqs
            + self.lambda_requests
            + self.lambda_duration
            + self.dynamodb_writes
            + self.dynamodb_reads
    }

    fn total_over_iot_core(&self) -> f64 {
        self.total() + self.iot_messaging + self.iot_rules + self.iot_connectivity
    }

    /// What a million readings cost at `run`'s counts, with the handlers'
    /// time from the hot paths; `naive`: the naive design's requests instead.
    fn of(run: &RequestRun, hot: &HotPaths, naive: bool) -> Cost {
        const MILLION: f64 = 1e6;
        let ns = |id: &str| hot.rust_ns.get(id).copied().unwrap_or(0.0);
        let ingest_ns = ns(if run.readings_per_message == 1 {
            "ingest/single/100"
        } else {
            "ingest/batched50/100"
        });
        let stats_ns = ns("stats/stream/10000");
        let alerts_ns = ns("alerts/latest-changes/10000");
        let summary = &run.summary;
        let stored = summary.readings_stored.max(1) as f64;
        let per_reading = |n: f64| n / stored;
        let requests =
            |service: &str, operation: &str| run.requests_per_reading(service, operation);
        let (telemetry_writes, telemetry_units) = run.writes_per_reading("telemetry");
        let stats_units = run.writes_per_reading("device-stats").1;
        let total_units: f64 = per_reading(summary.write_units.values().map(|w| w.units).sum());
        let other_units = total_units - telemetry_units - stats_units;
        let keys_read = per_reading(summary.keys_read.values().sum::<u64>() as f64);
        let messages = MILLION / run.readings_per_message as f64;
        let readings_per_ingest = assume::INGEST_BATCH * run.readings_per_message as f64;
        let ingest_invocations = messages / assume::INGEST_BATCH;
        let stats_invocations = MILLION / assume::STATS_BATCH;
        // Alerts see one change per `latest` write, as many as the run's
        // alerts function received.
        let latest_changes = per_reading(summary.metrics.total("alerts", "RecordsReceived"));
        let alerts_invocations = MILLION * latest_changes / assume::ALERTS_BATCH;
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
            (
                telemetry_units / telemetry_writes.max(1e-9)
                    + 3.0 * assume::NAIVE_STATS_ITEM_UNITS
                    + other_units,
                3.0,
            )
        } else {
            (
                total_units,
                keys_read + requests("dynamodb", "Query") * track_query_units,
            )
        };
        let function_sqs = requests("sqs", "SendMessageBatch") + requests("sqs", "SendMessage");
        // The run's own messages, as IoT Core would meter them, per reading.
        let iot_units = MILLION * per_reading(summary.iot_metered_units as f64);
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
            iot_messaging: iot_units * price::IOT_MESSAGE,
            iot_rules: iot_units * (price::IOT_RULE_TRIGGERED + price::IOT_ACTION),
            iot_connectivity: MILLION
                * assume::CONNECTION_MINUTES_PER_READING
                * price::IOT_CONNECTION_MINUTE,
        }
    }
}
