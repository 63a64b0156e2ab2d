//! `geotag demo`: the whole pipeline on this machine, then an audited report.
//!
//! Emulator up, template provisioned, pump running, a simulated fleet
//! published, the pipeline drained, and a report that compares what the
//! tables and the dead-letter queue hold with what the simulator sent. The
//! demo fails (non-zero exit) if a single valid reading is missing or doubled,
//! or a malformed message is not dead-lettered with the reason it deserved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use geotag_local_cloud::invoker::{InProcess, Invoker, Launch};
use geotag_local_cloud::pump::{Pump, PumpOptions};
use geotag_local_cloud::stack::{LocalStack, Options};

use crate::edge::Edge;
use crate::spoof;
use geotag_operator::map;

use crate::alert_audit::{self, FleetRegistry};
use crate::api_audit;
use crate::cost;
use crate::faults::{self, FaultPlan, FaultyHttpClient};
use crate::flood_audit;
use crate::metrics::MetricTotals;
use crate::reading_audit::{self, Audit};
use crate::rebuild_audit;
use crate::report;
use crate::simulate::{self, FleetConfig};
use crate::summary::Summary;

#[derive(Clone)]
pub struct DemoOptions {
    pub stack: Options,
    pub fleet: FleetConfig,
    pub invoker: Option<Invoker>,
    /// A runtime to start once the stack exists (`sam local start-lambda`),
    /// in place of `invoker`.
    pub launch: Option<Launch>,
    /// Schedules run this many times faster than their rate says.
    pub time_scale: f64,
    pub drain_timeout: Duration,
    /// Faults to inject: the chaos run.
    pub chaos: Option<Chaos>,
    /// Print a row per device (a large fleet prints only the rows that differ).
    pub device_rows: bool,
    /// Where the map and the metrics go (default: `target/geotag` in the project).
    pub output_dir: Option<std::path::PathBuf>,
    /// How the fleet reaches the telemetry topic.
    pub via: crate::edge::Via,
    /// Publish at the readings' own pace, this many times faster (a flood
    /// then arrives as fast as it was sent); `None`: as fast as the ingest
    /// queue's depth allows.
    pub publish_speedup: Option<f64>,
    /// Play batching exactly (the pump's stepped runs): publish this much
    /// of the fleet's time at once, then let ingest, stats and alerts each
    /// take it all in batches of their `BatchSize`, one after another.
    /// `None`: the pump runs free and publishing is paced by the queue.
    pub stepped: Option<Duration>,
}

/// The faults of a chaos run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chaos {
    /// Share of the functions' AWS requests refused (throttled or 5xx).
    pub store_fault_rate: f64,
    /// Share of invocations that die half-way through their batch.
    pub crash_rate: f64,
    /// Share of the functions' writes that AWS applies and whose answer is
    /// lost (a 500 or a timeout), so that the SDK retries what was done.
    pub lost_answer_rate: f64,
    pub seed: u64,
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
    announce(&mut options)?;
    let local = start_stack(&options).await?;
    // Kept to the end of the run: dropping it stops the launched runtime.
    let _launched = match options.launch.clone() {
        Some(launch) => {
            let (invoker, guard) = launch(&local)?;
            options.invoker = Some(invoker);
            Some(guard)
        }
        None => None,
    };
    // The functions reach the emulator through a client that counts their
    // requests (the cost figures) and, in a chaos run, refuses some; the
    // pump, the simulator and the audit go straight to the emulator.
    let fault_plan = FaultPlan::with_lost_answers(
        options.chaos.map_or(0.0, |chaos| chaos.store_fault_rate),
        options.chaos.map_or(0.0, |chaos| chaos.lost_answer_rate),
        options.chaos.map_or(0, |chaos| chaos.seed),
    );
    let functions = Functions::for_run(&local, &options, &fault_plan)?;
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        functions.invoker.clone(),
        PumpOptions {
            time_scale: options.time_scale,
            play_schedules: false,
            stages: crate::pace::stepped_stages(options.stepped),
            ..PumpOptions::default()
        },
    );
    let registry = set_up_registry(&local, &options).await?;
    let mut plan = simulate::plan(&options.fleet);
    let output_dir = options
        .output_dir
        .clone()
        .unwrap_or_else(|| local.root.join("target/geotag"));
    let things: Vec<String> = plan.expected.behaviours.keys().cloned().collect();
    // A directory of its own: two runs at once (tests) must not swap tags' keys.
    static RUN: AtomicU64 = AtomicU64::new(0);
    let edge_dir = output_dir.join("iot").join(format!(
        "demo-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let edge = Edge::start(&local, options.via, &edge_dir, &things).await?;
    let liar_and_victim = (things.len() >= 2).then(|| (things[0].clone(), things[1].clone()));
    if let Some((liar, victim)) = &liar_and_victim {
        for spoof in spoof::ingest_spoofs(liar, victim, geotag::clock::now_ms()) {
            if let Some(reason) = spoof.expected_rejection {
                *plan.expected.rejected_by_reason.entry(reason).or_default() += 1;
            }
            plan.messages.push(spoof);
        }
    }
    let timings = publish_and_drain(&local, &edge, &options, &plan, &pump).await?;
    let edge_verdict = match &liar_and_victim {
        Some((liar, victim)) => edge.spoofs_refused(liar, victim).await?,
        None => None,
    };
    edge.stop().await;
    // The silence check runs on a schedule (every 5 minutes by default); the
    // demo runs it once now that the fleet's readings are in, as its next
    // tick would. EventBridge times have whole seconds.
    let silence_check_ms = geotag::clock::now_ms() / 1000 * 1000;
    if registry.is_some() {
        alert_audit::check_silence_as_eventbridge_would(
            &local,
            &functions.invoker,
            silence_check_ms,
        )
        .await?;
        pump.wait_drained(options.drain_timeout).await?;
    }
    let pump_stats = pump.stats.snapshot();
    pump.stop().await;

    let audit_started = Instant::now();
    let audit = reading_audit::audit(&local).await?;
    let audit_time = audit_started.elapsed();
    let (report, mut ok) = report::render(&plan.expected, &audit, &pump_stats, options.device_rows);
    println!("{report}");
    if let Some((refused, line)) = edge_verdict {
        println!("{line}\n");
        ok &= refused;
    }
    if let Some((line, rebuilt_as_built)) = rebuild_audit::audit(&local, &audit).await? {
        println!("{line}\n");
        ok &= rebuilt_as_built;
    }
    let budget = (local.stack.function("IngestFunction").ok())
        .and_then(|ingest| {
            ingest
                .environment
                .get("DEVICE_READINGS_PER_MINUTE")?
                .parse()
                .ok()
        })
        .unwrap_or(u64::MAX);
    let flood = flood_audit::findings(&plan.expected, &audit, budget);
    if let Some(findings) = &flood {
        let paced = options.publish_speedup.is_some();
        let (line, held) = flood_audit::report(&plan.expected, findings, paced);
        println!("{line}\n");
        ok &= held;
    }
    let mut summary = reading_audit::tally(&plan.expected, &audit);
    let mut operator_alerts = None;
    if let Some(registry) = &registry {
        let (alerts_ok, operator) = audit_alerts(
            &local,
            &plan,
            registry,
            silence_check_ms,
            fault_plan.lost_answers("sns", "Publish") as usize,
            &mut summary,
        )
        .await?;
        ok &= alerts_ok;
        let (line, subscriptions_ok) =
            alert_audit::audit_subscriptions(&local, &functions.invoker).await?;
        println!("{line}\n");
        ok &= subscriptions_ok;
        operator_alerts = Some(operator);
        // Read back through the API, as each customer would; not under chaos,
        // whose refused requests would make a read answer 503 (as it should).
        if options.chaos.is_none() && local.stack.function("ApiFunction").is_ok() {
            let (line, api_ok) =
                api_audit::audit(&local, &functions.invoker, registry, &audit).await?;
            println!("{line}\n");
            ok &= api_ok;
        }
    }
    if let Some(handlers) = &functions.in_process {
        ok &= read_back_metrics(
            &local,
            handlers,
            &output_dir,
            &audit,
            operator_alerts,
            options.chaos.is_none(),
            &mut summary,
        )?;
    }
    summary.crashes = functions.crashes.load(Ordering::Relaxed);
    summary.flood = flood;
    add_costs(&mut summary, &fault_plan, &audit, &plan, &pump_stats);
    summary.via = options.via;
    summary.publishing = timings.publishing;
    summary.publish_to_drained = timings.publish_to_drained;
    if registry.is_some() {
        summary.report = Some(draw_map(&local, &options, &output_dir).await?);
    }
    ok &= summary.lost == 0 && summary.double_counted == 0;
    summary.ok = ok;
    if options.chaos.is_some() {
        let table = report::chaos_table(&plan.expected, &summary, &pump_stats, &fault_plan);
        println!("{table}");
    } else {
        println!("{}", report::requests_table(&summary));
    }
    println!(
        "  wall time   {:.1} s: emulator {:.1} s, provisioning {:.1} s, publishing {:.1} s, \
         publish-to-drained {:.1} s, audit {:.1} s",
        total.elapsed().as_secs_f64(),
        local.emulator_start.as_secs_f64(),
        local.provision_time.as_secs_f64(),
        timings.publishing.as_secs_f64(),
        timings.publish_to_drained.as_secs_f64(),
        audit_time.as_secs_f64(),
    );
    drop(local);
    print_verdict(ok, registry.is_some());
    Ok(summary)
}

/// The run's first line; a chaos run also gets its faster-clock template.
fn announce(options: &mut DemoOptions) -> Result<()> {
    match options.chaos {
        None if options.launch.is_some() => println!(
            "geotag demo: the whole template on this machine, no cloud, the functions in sam local's containers\n"
        ),
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
    Ok(())
}

async fn start_stack(options: &DemoOptions) -> Result<LocalStack> {
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
    let not_emulated: Vec<&str> = (local.stack.not_emulated.iter())
        .map(|(id, _, _)| id.as_str())
        .collect();
    println!(
        "  provisioned {} resources from template.yaml; not emulated: {}",
        local.stack.created.len(),
        not_emulated.join(", ")
    );
    Ok(local)
}

/// How the run invokes the functions.
struct Functions {
    invoker: Invoker,
    /// The in-process handlers, kept to read their EMF lines back at the end
    /// (none when the functions run behind a Lambda Invoke API).
    in_process: Option<Arc<InProcess>>,
    /// Invocations the chaos run made die half-way.
    crashes: Arc<AtomicU64>,
}

impl Functions {
    fn for_run(
        local: &LocalStack,
        options: &DemoOptions,
        faults: &Arc<FaultPlan>,
    ) -> Result<Functions> {
        let (mut invoker, in_process) = match options.invoker.clone() {
            Some(invoker) => (invoker, None),
            None => {
                // The emulator speaks plain HTTP on loopback.
                let client = local
                    .sdk
                    .http_client()
                    .unwrap_or_else(|| aws_smithy_http_client::Builder::new().build_http());
                let functions_sdk = geotag_aws::clients::with_http_client(
                    &local.sdk,
                    FaultyHttpClient::wrap(client, Arc::clone(faults)),
                );
                let handlers = Arc::new(InProcess::for_stack(&local.stack, &functions_sdk)?);
                (Invoker::InProcess(Arc::clone(&handlers)), Some(handlers))
            }
        };
        let crashes = Arc::new(AtomicU64::new(0));
        if let Some(chaos) = options.chaos {
            invoker = faults::crashing(invoker, chaos.crash_rate, chaos.seed, Arc::clone(&crashes));
        }
        Ok(Functions {
            invoker,
            in_process,
            crashes,
        })
    }
}

/// The demo's customers, tags and zones, when the template has alerts.
async fn set_up_registry(
    local: &LocalStack,
    options: &DemoOptions,
) -> Result<Option<FleetRegistry>> {
    if local.stack.reference("AlertsTopic").is_err() {
        return Ok(None);
    }
    let registry = alert_audit::set_up(local, options.fleet.devices).await?;
    let zones: Vec<String> = (registry.zones.iter())
        .map(|z| {
            format!(
                "{} ({})",
                z.id,
                z.customer_id.as_deref().unwrap_or("every tag")
            )
        })
        .collect();
    println!(
        "  registry    customers acme and globex (battery threshold {}%), {} tags assigned, {} unassigned; \
         geofences {}",
        registry.thresholds_of["globex"].battery_low_pct,
        registry.customer_of.len(),
        options.fleet.devices - registry.customer_of.len(),
        zones.join(", ")
    );
    Ok(Some(registry))
}

struct Timings {
    publishing: Duration,
    publish_to_drained: Duration,
}

/// Publishes the fleet's messages, paced by the ingest queue's depth, and
/// waits for the pipeline to drain.
async fn publish_and_drain(
    local: &LocalStack,
    edge: &Edge,
    options: &DemoOptions,
    plan: &simulate::Plan,
    pump: &Pump,
) -> Result<Timings> {
    println!(
        "  simulating  {} tags, {} messages ({} readings, {} malformed or spoofed, {} duplicates), seed {}",
        options.fleet.devices,
        plan.messages.len(),
        plan.expected.unique_readings(),
        plan.expected.rejected(),
        plan.expected.duplicates,
        options.fleet.seed
    );
    match edge.broker_endpoint() {
        Some(broker) => println!(
            "  edge        {broker}: each tag over MQTT with its own certificate, through the topic rule to SNS"
        ),
        None => println!("  edge        SNS Publish, as a gateway (--via sns)"),
    }
    let started = Instant::now();
    if let Some(step) = options.stepped {
        crate::pace::publish_in_steps(edge, &plan.messages, step, pump, options.drain_timeout)
            .await?;
        let publishing = started.elapsed();
        return Ok(Timings {
            publishing,
            publish_to_drained: publishing,
        });
    }
    let schedule = options.publish_speedup.map(|speedup| {
        println!(
            "  pace        the readings' own, {speedup:.1} times faster: the fleet's normal rate is {:.1} messages a second",
            speedup * options.fleet.devices as f64 / options.fleet.interval_secs.max(1) as f64
        );
        crate::pace::Schedule {
            first_send_ms: plan.messages.iter().map(|m| m.send_ms).min().unwrap_or(0),
            speedup,
            started: Instant::now(),
        }
    });
    let pace = simulate::Pace {
        sqs: aws_sdk_sqs::Client::new(&local.sdk),
        queue_url: local.stack.reference("IngestQueue")?.to_owned(),
        max_depth: 1_000,
        schedule,
    };
    edge.publish(&plan.messages, true, Some(&pace)).await?;
    let publishing = started.elapsed();
    pump.wait_drained(options.drain_timeout).await?;
    Ok(Timings {
        publishing,
        publish_to_drained: started.elapsed(),
    })
}

/// Every inbox against the oracle; prints the alerts table. Returns whether
/// it matched and the distinct alerts the operator received.
async fn audit_alerts(
    local: &LocalStack,
    plan: &simulate::Plan,
    registry: &FleetRegistry,
    silence_check_ms: i64,
    lost_publish_answers: usize,
    summary: &mut Summary,
) -> Result<(bool, usize)> {
    let inboxes = alert_audit::read_inboxes(local, registry).await?;
    let comparison = alert_audit::AlertComparison::new(
        &plan.expected,
        registry,
        &inboxes,
        silence_check_ms,
        lost_publish_answers,
    );
    let (alerts_report, alerts_ok) =
        alert_audit::render(&plan.expected, registry, &inboxes, &comparison);
    println!("{alerts_report}");
    let (lost, double) = comparison.tally();
    summary.lost += lost;
    summary.double_counted += double;
    Ok((alerts_ok, comparison.distinct()))
}

/// The in-process handlers' EMF lines: written to `metrics.jsonl`, summed,
/// and set beside the audit. Returns whether they agree where they must.
fn read_back_metrics(
    local: &LocalStack,
    handlers: &InProcess,
    output_dir: &Path,
    audit: &Audit,
    operator_alerts: Option<usize>,
    must_agree: bool,
    summary: &mut Summary,
) -> Result<bool> {
    let lines = handlers.metric_lines();
    let binary_of: BTreeMap<&str, &str> = (local.stack.functions.values())
        .map(|function| (function.name.as_str(), function.binary.as_str()))
        .collect();
    summary.metrics = MetricTotals::of_lines(&lines, |name| {
        binary_of.get(name).map_or(name, |binary| binary).to_owned()
    });
    let path = output_dir.join("metrics.jsonl");
    geotag_local_cloud::project::write_file(&path, lines.join("\n") + "\n")?;
    let (text, agrees) =
        report::reconcile_metrics(&summary.metrics, audit, operator_alerts, must_agree);
    println!(
        "  metrics     {} EMF lines from the functions, as CloudWatch would read them: {}\n{text}",
        summary.metrics.lines,
        path.display()
    );
    Ok(agrees)
}

/// The functions' requests, refused ones included, and what their writes cost.
fn add_costs(
    summary: &mut Summary,
    fault_plan: &FaultPlan,
    audit: &Audit,
    plan: &simulate::Plan,
    pump_stats: &BTreeMap<&'static str, u64>,
) {
    summary.faults_injected = fault_plan.total_injected();
    summary.answers_lost = fault_plan.total_lost_answers();
    summary.messages_published = plan.messages.len() as u64;
    summary.iot_metered_units = (plan.messages.iter())
        .map(|message| {
            crate::summary::iot_metered_units(
                &crate::mqtt::topic_of(&message.thing),
                &message.payload,
            )
        })
        .sum();
    summary.readings_stored = audit.stored as u64;
    summary.requests = fault_plan.passed();
    for ((service, operation, _), n) in fault_plan.injected() {
        *summary.requests.entry((service, operation)).or_default() += n;
    }
    summary.write_units = cost::write_units(&fault_plan.item_writes(), &audit.item_sizes);
    summary.keys_read = fault_plan.keys_read();
    summary.invocations = pump_stats.get("invocations").copied().unwrap_or(0);
}

/// The run on one page: `report.html` in the output folder.
async fn draw_map(local: &LocalStack, options: &DemoOptions, output_dir: &Path) -> Result<PathBuf> {
    let path = output_dir.join("report.html");
    let run = if options.chaos.is_some() {
        "chaos"
    } else {
        "demo"
    };
    let title = format!(
        "geotag {run}: {} tags, seed {}",
        options.fleet.devices, options.fleet.seed
    );
    let data = map::gather(&local.sdk, &map::Tables::of_local(&local.stack)?, &title).await?;
    map::write(&path, &data)?;
    println!(
        "  map         {} devices, {} alerts, {} geofences: open {}",
        data.devices.len(),
        data.alerts.len(),
        data.geofences.len(),
        path.display()
    );
    Ok(path)
}

fn print_verdict(ok: bool, with_alerts: bool) {
    if !ok {
        println!("\n  the audit found differences (marked ✗ above)");
        return;
    }
    println!(
        "\n  every valid reading stored once and counted once in DeviceStats, distances as in time order,\n  \
         every malformed or spoofed message refused with its reason{} ✓",
        if with_alerts {
            ",\n  every alert the readings deserve published once, to the operator and to its customer only"
        } else {
            ""
        }
    );
}
