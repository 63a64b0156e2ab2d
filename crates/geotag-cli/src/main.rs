//! `geotag`: the whole template on one machine (see `geotag --help`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use geotag::geofence::{Geofence, Shape};
use geotag_aws::clients::SdkConfig;
use geotag_local_cloud::invoker::{InProcess, Invoker};
use geotag_local_cloud::pump::{Pump, PumpOptions};
use geotag_local_cloud::stack::{LocalStack, Options, parse_overrides};
use geotag_operator::registry::{CustomerSpec, RegistryAdmin};
use geotag_simulation::demo::{self, DemoOptions};
use geotag_simulation::simulate::{self, FleetConfig};

/// Runs geotag's template locally: an AWS emulator (moto, installed into
/// .venv on first use), the template's resources, a pump that plays Lambda's
/// event source mappings, and a device simulator. No cloud account, no Docker.
#[derive(Parser)]
#[command(name = "geotag", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on a simulated fleet, print an audited report, stop.
    Demo {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Give up if the pipeline has not drained after this many seconds.
        #[arg(long, default_value_t = 120)]
        drain_timeout: u64,
    },
    /// Run the pipeline through faults (malformed and duplicate messages,
    /// throttled and failing AWS requests, functions dying mid-batch) and
    /// audit that nothing was lost or counted twice.
    Chaos {
        #[command(flatten)]
        stack: StackArgs,
        /// Valid readings to publish, about (whole tags of --per-device readings).
        #[arg(long, default_value_t = 20_000)]
        readings: usize,
        /// Readings per tag (a minute apart).
        #[arg(long, default_value_t = 60)]
        per_device: usize,
        /// Share of malformed messages.
        #[arg(long, default_value_t = 0.05)]
        bad_ratio: f64,
        /// Share of messages delivered twice.
        #[arg(long, default_value_t = 0.10)]
        dup_ratio: f64,
        /// Share of the functions' AWS requests refused (throttled or 5xx).
        #[arg(long, default_value_t = 0.10)]
        store_fault_rate: f64,
        /// Share of invocations that die half-way through their batch.
        #[arg(long, default_value_t = 0.01)]
        crash_rate: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Give up if the pipeline has not drained this many seconds after
        /// publishing. The emulator is the limit: at 20,000 readings it still
        /// had the alerts stream to drain after 30 minutes.
        #[arg(long, default_value_t = 7200)]
        drain_timeout: u64,
    },
    /// Start the stack and keep it running for interactive work, until Ctrl-C.
    Up {
        #[command(flatten)]
        stack: StackArgs,
        /// Where to write the functions' environment for `cargo lambda watch --env-file`.
        #[arg(long, default_value = "target/geotag-local.env")]
        env_file: PathBuf,
    },
    /// Run one function once on an event file and print its response
    /// (what `sam local invoke` does, without Docker).
    Invoke {
        /// The function's logical id in template.yaml (IngestFunction) or its binary (ingest).
        function: String,
        /// The event, as JSON (see events/).
        event: PathBuf,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Customers: each receives the alerts of its own tags, by email or on a queue.
    Customer {
        #[command(subcommand)]
        action: CustomerAction,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The device registry: which customer owns a tag.
    Device {
        #[command(subcommand)]
        action: DeviceAction,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Geofences: zones whose entry and exit raise alerts.
    Geofence {
        #[command(subcommand)]
        action: GeofenceAction,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Publish a simulated fleet's readings to the telemetry topic of a running stack.
    Simulate {
        /// The emulator of a running `geotag up`.
        #[arg(long)]
        endpoint: String,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Draw the fleet on one self-contained HTML page: tracks, geofences,
    /// alerts where they fired, and the per-device stats table.
    Report {
        /// Where to write the page.
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand)]
enum CustomerAction {
    /// Add (or update) a customer and subscribe its addresses to its tags' alerts.
    Add {
        id: String,
        /// An address to email the customer's alerts to (repeatable; SNS asks it to confirm).
        #[arg(long)]
        email: Vec<String>,
        /// An SQS queue ARN to send the customer's alerts to (repeatable).
        #[arg(long)]
        queue_arn: Vec<String>,
        /// The customer's own battery threshold, percent (default: the template's).
        #[arg(long)]
        battery_low_pct: Option<f64>,
        /// The customer's own speed limit, km/h.
        #[arg(long)]
        speed_limit_kmh: Option<f64>,
        /// Seconds above the speed limit before an alert.
        #[arg(long)]
        speed_grace_seconds: Option<f64>,
        /// Minutes without a reading before a silence alert.
        #[arg(long)]
        silence_minutes: Option<f64>,
    },
    List,
    /// Remove a customer, its subscriptions and its tags' assignments.
    Remove {
        id: String,
    },
}

#[derive(Subcommand)]
enum DeviceAction {
    /// Assign tags to a customer.
    Assign {
        #[arg(required = true)]
        devices: Vec<String>,
        #[arg(long)]
        customer: String,
    },
    /// Remove tags from the registry (their alerts go to the operator only).
    Unassign {
        #[arg(required = true)]
        devices: Vec<String>,
    },
    List,
}

#[derive(Subcommand)]
enum GeofenceAction {
    /// Add (or replace) a zone: a circle or a polygon.
    Add {
        id: String,
        #[arg(long)]
        name: String,
        /// The customer whose tags it applies to (default: every tag).
        #[arg(long)]
        customer: Option<String>,
        /// LAT,LON,RADIUS_M
        #[arg(long, conflicts_with = "polygon", required_unless_present = "polygon")]
        circle: Option<String>,
        /// LAT,LON;LAT,LON;LAT,LON... (at least 3 vertices; the ring closes itself)
        #[arg(long)]
        polygon: Option<String>,
    },
    List,
    Remove {
        id: String,
        /// The customer the zone belongs to (default: a zone of every tag).
        #[arg(long)]
        customer: Option<String>,
    },
}

/// Where the registry and report commands act.
#[derive(Args)]
struct TargetArgs {
    /// The emulator of a running `geotag up`.
    #[arg(long, global = true, conflicts_with = "stack")]
    endpoint: Option<String>,
    /// A stack deployed by `sam deploy` (AWS credentials and region from the environment).
    #[arg(long, global = true)]
    stack: Option<String>,
}

/// A stack the commands act on.
#[expect(clippy::large_enum_variant, reason = "one per command run")]
enum Target {
    Local(LocalStack),
    Deployed { sdk: SdkConfig, stack_name: String },
}

impl TargetArgs {
    async fn target(&self) -> Result<Target> {
        match (&self.endpoint, &self.stack) {
            (Some(endpoint), _) => Ok(Target::Local(
                LocalStack::start(&Options {
                    endpoint: Some(endpoint.clone()),
                    ..Options::default()
                })
                .await?,
            )),
            (None, Some(stack)) => Ok(Target::Deployed {
                sdk: geotag_aws::clients::load().await,
                stack_name: stack.clone(),
            }),
            (None, None) => anyhow::bail!(
                "say which stack: --endpoint URL (a running `geotag up`) or --stack NAME (deployed)"
            ),
        }
    }

    async fn admin(&self) -> Result<RegistryAdmin> {
        match self.target().await? {
            Target::Local(local) => RegistryAdmin::for_local(&local.stack, &local.sdk),
            Target::Deployed { sdk, stack_name } => {
                RegistryAdmin::for_deployed(&sdk, &stack_name).await
            }
        }
    }
}

fn numbers(text: &str, what: &str) -> Result<Vec<f64>> {
    text.split(',')
        .map(|part| {
            part.trim()
                .parse::<f64>()
                .with_context(|| format!("{what}: {part:?} is not a number"))
        })
        .collect()
}

fn shape_of(circle: Option<&str>, polygon: Option<&str>) -> Result<Shape> {
    if let Some(circle) = circle {
        let [lat, lon, radius_m] = numbers(circle, "--circle")?[..] else {
            anyhow::bail!("--circle takes LAT,LON,RADIUS_M");
        };
        return Ok(Shape::Circle { lat, lon, radius_m });
    }
    let polygon = polygon.context("--circle or --polygon")?;
    let ring = polygon
        .split(';')
        .filter(|vertex| !vertex.trim().is_empty())
        .map(|vertex| match numbers(vertex, "--polygon")?[..] {
            [lat, lon] => Ok((lat, lon)),
            _ => anyhow::bail!("--polygon vertex {vertex:?} is not LAT,LON"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Shape::Polygon { ring })
}

#[derive(Args)]
struct StackArgs {
    /// Use an AWS emulator that is already running (moto, LocalStack) instead of starting moto.
    #[arg(long)]
    endpoint: Option<String>,
    /// Send invocations through the Lambda Invoke API at this URL (e.g. `cargo lambda watch`'s
    /// http://127.0.0.1:9000) instead of calling the handlers in-process.
    #[arg(long)]
    invoke_endpoint: Option<String>,
    /// Template parameters, as `sam deploy` takes them: Key=Value ...
    #[arg(long, num_args = 1..)]
    parameter_overrides: Vec<String>,
    /// The template (default: template.yaml at the project root).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Run schedules this many times faster than their rate(...) says.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

#[derive(Args)]
struct FleetArgs {
    /// Tags in the fleet.
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Readings per tag.
    #[arg(long, default_value_t = 60)]
    readings: usize,
    /// Seconds between a tag's readings.
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// Share of malformed messages, 0 to 1.
    #[arg(long, default_value_t = 0.05)]
    bad_ratio: f64,
    /// Share of messages delivered twice, 0 to 1.
    #[arg(long, default_value_t = 0.05)]
    dup_ratio: f64,
    /// Seed of the simulation: the same seed gives the same fleet.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Every tag sends its readings in messages of this many (default: one
    /// reading per message, and batches of 10 from the tags that buffer).
    #[arg(long)]
    readings_per_message: Option<usize>,
}

impl FleetArgs {
    fn config(&self) -> FleetConfig {
        FleetConfig {
            devices: self.devices,
            readings_per_device: self.readings,
            interval_secs: self.interval,
            bad_ratio: self.bad_ratio.clamp(0.0, 1.0),
            dup_ratio: self.dup_ratio.clamp(0.0, 1.0),
            seed: self.seed,
            end_ms: geotag::clock::now_ms(),
            readings_per_message: self.readings_per_message,
        }
    }
}

impl StackArgs {
    fn options(&self) -> Result<Options> {
        Ok(Options {
            endpoint: self.endpoint.clone(),
            parameter_overrides: parse_overrides(&self.parameter_overrides)?,
            template: self.template.clone(),
        })
    }

    async fn invoker(&self, local: &LocalStack) -> Result<Invoker> {
        Ok(match &self.invoke_endpoint {
            Some(url) => {
                let sdk = geotag_local_cloud::emulator::sdk_config_for(url).await;
                Invoker::Remote(aws_sdk_lambda::Client::new(&sdk))
            }
            None => Invoker::InProcess(std::sync::Arc::new(InProcess::for_stack(
                &local.stack,
                &local.sdk,
            )?)),
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GEOTAG_LOG")
                // The SDK complains of a connection it cannot close after the
                // chaos run's injected errors, which never had one.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "error,aws_smithy_runtime::client::http::connection_poisoning=off",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Ctrl-C ends the command through the same path as an error would, so the
    // emulator (owned by the stack) is stopped when it is dropped.
    let result = tokio::select! {
        result = run(cli) => result,
        () = interrupted() => {
            eprintln!("\ngeotag: interrupted; stopping the emulator");
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes, not a backtrace: these are users' errors.
            eprintln!("geotag: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ctrl-C, or SIGTERM (`kill`, a supervisor): either way the emulator is
/// stopped on the way out rather than left running.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            stack,
            fleet,
            drain_timeout,
        } => {
            let options = stack.options()?;
            let invoker = match &stack.invoke_endpoint {
                Some(url) => {
                    let sdk = geotag_local_cloud::emulator::sdk_config_for(url).await;
                    Some(Invoker::Remote(aws_sdk_lambda::Client::new(&sdk)))
                }
                None => None,
            };
            let summary = demo::run(DemoOptions {
                stack: options,
                fleet: fleet.config(),
                invoker,
                time_scale: stack.time_scale,
                drain_timeout: Duration::from_secs(drain_timeout),
                chaos: None,
                device_rows: true,
                output_dir: None,
            })
            .await?;
            anyhow::ensure!(summary.ok, "the audit found differences");
            Ok(())
        }
        Command::Chaos {
            stack,
            readings,
            per_device,
            bad_ratio,
            dup_ratio,
            store_fault_rate,
            crash_rate,
            seed,
            drain_timeout,
        } => {
            // Enough tags for `readings` valid readings (silent tags send fewer).
            let mut fleet = FleetConfig {
                devices: readings.div_ceil(per_device.max(1)).max(1),
                readings_per_device: per_device.max(1),
                interval_secs: 60,
                bad_ratio: bad_ratio.clamp(0.0, 1.0),
                dup_ratio: dup_ratio.clamp(0.0, 1.0),
                seed,
                end_ms: geotag::clock::now_ms(),
                readings_per_message: None,
            };
            while simulate::plan(&fleet).expected.unique_readings() < readings {
                fleet.devices += 1;
            }
            let summary = demo::run(DemoOptions {
                stack: stack.options()?,
                fleet,
                invoker: None,
                time_scale: stack.time_scale,
                drain_timeout: Duration::from_secs(drain_timeout),
                chaos: Some(demo::Chaos {
                    store_fault_rate,
                    crash_rate,
                    seed,
                }),
                device_rows: false,
                output_dir: None,
            })
            .await?;
            anyhow::ensure!(
                summary.ok,
                "lost {}, double-counted {}",
                summary.lost,
                summary.double_counted
            );
            Ok(())
        }
        Command::Up { stack, env_file } => {
            let local = LocalStack::start(&stack.options()?).await?;
            let env_file = local.root.join(env_file);
            local.write_env_file(&env_file)?;
            let pump = Pump::start_with(
                &local.stack,
                &local.sdk,
                stack.invoker(&local).await?,
                PumpOptions {
                    time_scale: stack.time_scale,
                    play_schedules: true,
                },
            );
            print_up(&local, &env_file, stack.invoke_endpoint.is_some());
            interrupted().await;
            eprintln!("\ngeotag: stopping the pump and the emulator");
            pump.stop().await;
            Ok(())
        }
        Command::Invoke {
            function,
            event,
            stack,
        } => {
            let local = LocalStack::start(&stack.options()?).await?;
            let spec = local
                .stack
                .functions
                .values()
                .find(|f| f.logical_id == function || f.binary == function || f.name == function)
                .with_context(|| {
                    format!(
                        "no function {function:?} in the template; there are: {}",
                        local
                            .stack
                            .functions
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?
                .clone();
            let payload: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&event)
                    .with_context(|| format!("reading {}", event.display()))?,
            )
            .with_context(|| format!("{} is not JSON", event.display()))?;
            let response = stack.invoker(&local).await?.invoke(&spec, payload).await?;
            println!("{}", serde_json::to_string_pretty(&response)?);
            Ok(())
        }
        Command::Customer { action, target } => {
            let admin = target.admin().await?;
            match action {
                CustomerAction::Add {
                    id,
                    email,
                    queue_arn,
                    battery_low_pct,
                    speed_limit_kmh,
                    speed_grace_seconds,
                    silence_minutes,
                } => {
                    let subscriptions = admin
                        .add_customer(&CustomerSpec {
                            customer_id: id.clone(),
                            emails: email,
                            queue_arns: queue_arn,
                            battery_low_pct,
                            speed_limit_kmh,
                            speed_grace_seconds,
                            silence_minutes,
                        })
                        .await?;
                    println!(
                        "customer {id}: {} subscription(s) to {} with filter policy {}",
                        subscriptions.len(),
                        admin.alerts_topic_arn,
                        geotag_operator::registry::customer_filter_policy(&id)
                    );
                    for arn in subscriptions {
                        println!("  {arn}");
                    }
                }
                CustomerAction::List => {
                    for row in admin.list_customers().await? {
                        println!(
                            "{:<20} thresholds: {:<40} subscriptions: {}",
                            row.customer_id,
                            row.thresholds,
                            row.subscriptions
                                .iter()
                                .map(|(protocol, endpoint)| format!("{protocol}:{endpoint}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                }
                CustomerAction::Remove { id } => {
                    let (subscriptions, devices) = admin.remove_customer(&id).await?;
                    println!(
                        "customer {id} removed: {subscriptions} subscription(s), {devices} tag(s) unassigned"
                    );
                }
            }
            Ok(())
        }
        Command::Device { action, target } => {
            let admin = target.admin().await?;
            match action {
                DeviceAction::Assign { devices, customer } => {
                    admin.assign(&devices, &customer).await?;
                    println!("{} tag(s) assigned to {customer}", devices.len());
                }
                DeviceAction::Unassign { devices } => {
                    admin.unassign(&devices).await?;
                    println!("{} tag(s) unassigned", devices.len());
                }
                DeviceAction::List => {
                    for (device, customer) in admin.list_devices().await? {
                        println!("{device:<24} {customer}");
                    }
                }
            }
            Ok(())
        }
        Command::Geofence { action, target } => {
            let admin = target.admin().await?;
            match action {
                GeofenceAction::Add {
                    id,
                    name,
                    customer,
                    circle,
                    polygon,
                } => {
                    let geofence = Geofence {
                        shape: shape_of(circle.as_deref(), polygon.as_deref())?,
                        id,
                        name,
                        customer_id: customer,
                    };
                    admin.put_geofence(&geofence).await?;
                    println!("geofence {} saved", geofence.id);
                }
                GeofenceAction::List => {
                    for zone in admin.list_geofences().await? {
                        let shape = match &zone.shape {
                            Shape::Circle { lat, lon, radius_m } => {
                                format!("circle {radius_m} m around {lat}, {lon}")
                            }
                            Shape::Polygon { ring } => {
                                format!("polygon of {} vertices", ring.len())
                            }
                        };
                        println!(
                            "{:<16} {:<12} {:<28} {shape}",
                            zone.id,
                            zone.customer_id.as_deref().unwrap_or("(every tag)"),
                            zone.name
                        );
                    }
                }
                GeofenceAction::Remove { id, customer } => {
                    if admin.remove_geofence(customer.as_deref(), &id).await? {
                        println!("geofence {id} removed");
                    } else {
                        anyhow::bail!("no geofence {id} in that scope");
                    }
                }
            }
            Ok(())
        }
        Command::Simulate { endpoint, fleet } => {
            let local = LocalStack::start(&Options {
                endpoint: Some(endpoint),
                ..Options::default()
            })
            .await?;
            let plan = simulate::plan(&fleet.config());
            let topic = local.stack.reference("TelemetryTopic")?.to_owned();
            simulate::publish(
                &aws_sdk_sns::Client::new(&local.sdk),
                &topic,
                &plan.messages,
                true,
                None,
            )
            .await?;
            println!(
                "published {} messages: {} readings, {} malformed, {} duplicates",
                plan.messages.len(),
                plan.expected.unique_readings(),
                plan.expected.rejected(),
                plan.expected.duplicates
            );
            Ok(())
        }
        Command::Report { html, target } => {
            let (sdk, tables, title) = match target.target().await? {
                Target::Local(local) => (
                    local.sdk.clone(),
                    geotag_operator::map::Tables::of_local(&local.stack)?,
                    format!("geotag: local stack at {}", local.emulator.endpoint()),
                ),
                Target::Deployed { sdk, stack_name } => (
                    sdk,
                    geotag_operator::map::Tables::of_deployed(&stack_name),
                    format!("geotag: stack {stack_name}"),
                ),
            };
            let data = geotag_operator::map::gather(&sdk, &tables, &title).await?;
            geotag_operator::map::write(&html, &data)?;
            println!(
                "wrote {}: {} devices, {} alerts, {} geofences",
                html.display(),
                data.devices.len(),
                data.alerts.len(),
                data.geofences.len()
            );
            Ok(())
        }
    }
}

fn print_up(local: &LocalStack, env_file: &std::path::Path, remote: bool) {
    let endpoint = local.emulator.endpoint();
    println!("geotag up: the local stack is running (Ctrl-C stops it)\n");
    println!("  emulator   {endpoint}");
    for (logical_id, kind) in &local.stack.created {
        if let Ok(reference) = local.stack.reference(logical_id) {
            println!("  {logical_id:<22} {kind:<28} {reference}");
        }
    }
    for (logical_id, kind, why) in &local.stack.not_emulated {
        println!("  {logical_id:<22} {kind:<28} not emulated: {why}");
    }
    println!(
        "\n  the pump runs {}",
        if remote {
            "each invocation through the Lambda Invoke API"
        } else {
            "the handlers in-process"
        }
    );
    println!(
        "\n  run the functions under cargo lambda instead (restart with --invoke-endpoint http://127.0.0.1:9000):"
    );
    println!(
        "    cargo lambda watch --invoke-address 127.0.0.1 --env-file {}",
        env_file.display()
    );
    println!(
        "    cargo lambda invoke --invoke-address 127.0.0.1 ingest --data-file events/ingest/valid-batch.json"
    );
    println!(
        "    cargo lambda invoke --invoke-address 127.0.0.1 stats --data-file events/stats/inserts.json"
    );
    println!(
        "    cargo lambda invoke --invoke-address 127.0.0.1 alerts --data-file events/alerts/latest-changes.json"
    );
    println!("\n  the AWS CLI against it:");
    println!(
        "    export AWS_ENDPOINT_URL={endpoint} AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
    );
    if let Ok(topic) = local.stack.reference("TelemetryTopic") {
        println!(
            "    aws sns publish --topic-arn {topic} --message '{{\"device_id\":\"tag-1\",\"ts\":\"'$(date -u +%FT%TZ)'\",\"lat\":48.85,\"lon\":2.35}}'"
        );
    }
    if let Ok(table) = local.stack.reference("TelemetryTable") {
        println!("    aws dynamodb scan --table-name {table}");
    }
    println!("\n  a simulated fleet: cargo run -p geotag-local -- simulate --endpoint {endpoint}");
    println!(
        "  the map:           cargo run -p geotag-local -- report --html target/geotag/fleet.html --endpoint {endpoint}"
    );
}
