//! The command line, as clap reads it: every subcommand's arguments, and the
//! options several share (declared once here, flattened where they are used).
//! What each command does lives in `commands/`, one file per command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Runs geotag's template locally: an AWS emulator (moto, installed into
/// .venv on first use), the template's resources, a pump that plays Lambda's
/// event source mappings, and a device simulator. No cloud account, no Docker.
#[derive(Parser)]
#[command(name = "geotag", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the whole pipeline on a simulated fleet, print an audited report, stop.
    Demo(DemoArgs),
    /// Run the pipeline through faults (malformed and duplicate messages,
    /// throttled and failing AWS requests, functions dying mid-batch) and
    /// audit that nothing was lost or counted twice.
    Chaos(ChaosArgs),
    /// Start the stack and keep it running for interactive work, until Ctrl-C.
    Up(UpArgs),
    /// Print a token of the running `geotag up`'s local issuer, for its API
    /// (as Cognito signs them for a deployed stack).
    Token(TokenArgs),
    /// Run one function once on an event file and print its response
    /// (what `sam local invoke` does, without Docker).
    Invoke(InvokeArgs),
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
    /// Publish a simulated fleet's readings to a running stack: over MQTT
    /// through its IoT Core (the default), or to its telemetry topic directly.
    Simulate(SimulateArgs),
    /// Draw the fleet on one self-contained HTML page: tracks, geofences,
    /// alerts where they fired, and the per-device stats table.
    Report(ReportArgs),
    /// Recompute a tag's DeviceStats (hours, days, latest state) from its
    /// readings in Telemetry, as the stats function would have: after a
    /// stats batch went to the on-failure queue, or a fix. Safe to run
    /// beside the live stack, and again.
    RebuildStats(RebuildStatsArgs),
    /// Send the ingest dead-letter queue's messages back through ingest,
    /// after a fix (a tag registered, a bug fixed): those still bad come
    /// back with their reason. Safe to stop half-way and run again.
    Redrive(RedriveArgs),
    /// Docker for `sam local` on Linux: a socket whose daemon puts SAM's
    /// Lambda containers on the host network (where the local stack is),
    /// with the functions' arm64 base image; until Ctrl-C.
    SamDocker(SamDockerArgs),
}

#[derive(Args)]
pub struct SamDockerArgs {
    /// Forward to the Docker daemon at this Unix socket (e.g.
    /// /var/run/docker.sock) instead of starting dockerd of our own.
    #[arg(long)]
    pub docker_socket: Option<PathBuf>,
    /// Where SAM's DOCKER_HOST points.
    #[arg(long, default_value = "target/geotag/sam-docker.sock")]
    pub socket: PathBuf,
    /// Only build the base image's stand-in into its cache (debootstrap, once)
    /// and exit: scripts/test does this beside sam build.
    #[arg(long)]
    pub cache_image: bool,
}

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// How the tags reach the telemetry topic: mqtt (each tag over MQTT with
    /// its own certificate, through the local IoT Core) or sns (published to
    /// SNS directly, as a gateway).
    #[arg(long, default_value = "mqtt")]
    pub via: geotag_simulation::edge::Via,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Give up if the pipeline has not drained after this many seconds. It
    /// drains in about 50 s on an idle 2-core machine; 120 s was not enough
    /// twice on a loaded one (2026-12-02 and 2026-12-03), where moto is slower.
    #[arg(long, default_value_t = 300)]
    pub drain_timeout: u64,
}

#[derive(Args)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// mqtt or sns, as for `geotag demo`.
    #[arg(long, default_value = "mqtt")]
    pub via: geotag_simulation::edge::Via,
    /// Valid readings to publish, about (whole tags of --per-device readings).
    #[arg(long, default_value_t = 20_000)]
    pub readings: usize,
    /// Readings per tag (a minute apart).
    #[arg(long, default_value_t = 60)]
    pub per_device: usize,
    /// Share of malformed messages.
    #[arg(long, default_value_t = 0.05)]
    pub bad_ratio: f64,
    /// Share of messages delivered twice.
    #[arg(long, default_value_t = 0.10)]
    pub dup_ratio: f64,
    /// Share of the functions' AWS requests refused (throttled or 5xx).
    #[arg(long, default_value_t = 0.10)]
    pub store_fault_rate: f64,
    /// Share of invocations that die half-way through their batch.
    #[arg(long, default_value_t = 0.01)]
    pub crash_rate: f64,
    /// Share of the functions' writes (DynamoDB, SNS Publish, SQS sends) that
    /// AWS applies and whose answer is lost: a 500 or a timeout.
    #[arg(long, default_value_t = 0.02)]
    pub lost_answer_rate: f64,
    /// One more tag publishes this many times its rate (a publish loop)
    /// through the middle --flood-share of the run; 0: no flood.
    #[arg(long, value_name = "FACTOR", default_value_t = 100)]
    pub flood: u32,
    #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
    pub flood_share: f64,
    /// With a flood, the fleet's normal traffic is published at this many
    /// messages a second, at the readings' own pace (the flood as fast as
    /// it sends); 0: as fast as the ingest queue's depth allows.
    #[arg(long, value_name = "PER_SEC", default_value_t = 4.0)]
    pub publish_rate: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Give up if the pipeline has not drained this many seconds after
    /// publishing. The emulator is the limit: at 20,000 readings it still
    /// had the alerts stream to drain after 30 minutes.
    #[arg(long, default_value_t = 7200)]
    pub drain_timeout: u64,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Where to write the functions' environment for `cargo lambda watch --env-file`.
    #[arg(long, default_value = "target/geotag-local.env")]
    pub env_file: PathBuf,
    /// Where to write the functions' environment for `sam local ... --env-vars`.
    #[arg(long, default_value = crate::commands::local::SAM_ENV_VARS)]
    pub sam_env_vars: PathBuf,
    /// The emulator's host as SAM's containers reach it (default: 127.0.0.1 on
    /// Linux, with `geotag sam-docker`; host.docker.internal elsewhere).
    #[arg(long)]
    pub container_host: Option<String>,
    /// The port of the local HTTP API and the live map, on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 3400)]
    pub api_port: u16,
}

#[derive(Args)]
pub struct TokenArgs {
    /// The customer whose data the token reads.
    #[arg(
        long,
        required_unless_present = "operator",
        conflicts_with = "operator"
    )]
    pub customer: Option<String>,
    /// A token of the operator, who names a customer on each request.
    #[arg(long)]
    pub operator: bool,
    /// How long the token is valid, in minutes.
    #[arg(long, default_value_t = 60)]
    pub minutes: u64,
}

#[derive(Args)]
pub struct InvokeArgs {
    /// The function's logical id in template.yaml (IngestFunction) or its binary (ingest).
    pub function: String,
    /// The event, as JSON (see events/).
    pub event: PathBuf,
    #[command(flatten)]
    pub stack: StackArgs,
}

#[derive(Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub emulator: EmulatorArgs,
    /// mqtt (the tags provisioned and connected to the running `geotag up`'s
    /// broker) or sns (published to SNS directly, as a gateway).
    #[arg(long, default_value = "mqtt")]
    pub via: geotag_simulation::edge::Via,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Customers to give the fleet's tags to, in turn (added if new), so
    /// that each sees its own through the API; by default the tags are nobody's.
    #[arg(long, value_delimiter = ',')]
    pub customers: Vec<String>,
}

#[derive(Args)]
pub struct RedriveArgs {
    /// Seconds to wait, once the dead-letter queue is drained, for the
    /// redriven messages to be processed (and the still bad ones counted).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u64,
    /// Redrive IngestQuarantine instead (the messages parked because their
    /// tag ran over its budget), past the budget, once the tag is looked at.
    #[arg(long)]
    pub quarantine: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Args)]
pub struct RebuildStatsArgs {
    /// The tag whose stats to rebuild.
    #[arg(long, value_name = "ID")]
    pub device: String,
    /// The readings taken from this time on (RFC 3339); every hour and day
    /// they fall in is recomputed whole.
    #[arg(long, value_name = "TIME", value_parser = rfc3339_ms)]
    pub from: i64,
    /// Up to this time, excluded (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = rfc3339_ms)]
    pub to: i64,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// An RFC 3339 time as epoch milliseconds.
fn rfc3339_ms(text: &str) -> Result<i64, String> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|error| {
            format!("{text} is not an RFC 3339 time (2026-11-20T08:00:00Z): {error}")
        })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text} is out of range"))
}

#[derive(Args)]
pub struct ReportArgs {
    /// Where to write the page.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Subcommand)]
pub enum CustomerAction {
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
    /// List every alerts-topic subscription whose filter does not name
    /// exactly one customer (missing, cleared, several ids, an operator such
    /// as prefix); fails if there is one, other than the explicit
    /// every-customer filter the operator's AlertEmail uses.
    Audit,
}

#[derive(Subcommand)]
pub enum DeviceAction {
    /// Make a tag an IoT thing with a certificate of its own (its key pair made
    /// here; IoT Core, or the local CA, signs the request), attach the stack's
    /// device policy, and assign it to a customer. Writes the tag's PEM files
    /// (mode 0600) and prints where.
    Provision {
        device: String,
        /// The customer it belongs to (without one the tag is provisioned but
        /// unassigned: a stack that refuses unregistered tags refuses its readings).
        #[arg(long)]
        customer: Option<String>,
        /// Where the tag's directory of PEM files goes.
        #[arg(long, default_value = "target/geotag/iot/devices")]
        out: PathBuf,
    },
    /// Deactivate a tag's certificates: it can no longer connect.
    Revoke {
        device: String,
    },
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
pub enum GeofenceAction {
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

/// An emulator that is already running: `geotag up`'s, or any moto or LocalStack.
#[derive(Args)]
pub struct EmulatorArgs {
    /// The AWS emulator to use (e.g. the one `geotag up` printed) instead of starting moto.
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
}

/// Where the registry and report commands act: a local stack or a deployed one.
#[derive(Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub emulator: EmulatorArgs,
    /// A stack deployed by `sam deploy` (AWS credentials and region from the environment).
    #[arg(long, global = true, conflicts_with = "endpoint")]
    pub stack: Option<String>,
}

/// How the local stack is started and its functions run.
#[derive(Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub emulator: EmulatorArgs,
    /// Send invocations through the Lambda Invoke API at this URL (`cargo lambda watch`'s
    /// http://127.0.0.1:9000, `sam local start-lambda`'s http://127.0.0.1:3001) instead of
    /// calling the handlers in-process.
    #[arg(long)]
    pub invoke_endpoint: Option<String>,
    /// Run the functions in `sam local start-lambda`, started against this stack
    /// (needs `sam build`'s .aws-sam/build and DOCKER_HOST from `geotag sam-docker`).
    #[arg(long, conflicts_with = "invoke_endpoint")]
    pub sam_local: bool,
    /// Template parameters, as `sam deploy` takes them: Key=Value ...
    #[arg(long, num_args = 1..)]
    pub parameter_overrides: Vec<String>,
    /// The template (default: template.yaml at the project root).
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Run schedules this many times faster than their rate(...) says.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
}

/// The simulated fleet.
#[derive(Args)]
pub struct FleetArgs {
    /// Tags in the fleet.
    #[arg(long, default_value_t = 20)]
    pub devices: usize,
    /// Readings per tag.
    #[arg(long, default_value_t = 60)]
    pub readings: usize,
    /// Seconds between a tag's readings.
    #[arg(long, default_value_t = 60)]
    pub interval: u64,
    /// Share of malformed messages, 0 to 1.
    #[arg(long, default_value_t = 0.05)]
    pub bad_ratio: f64,
    /// Share of messages delivered twice, 0 to 1.
    #[arg(long, default_value_t = 0.05)]
    pub dup_ratio: f64,
    /// Seed of the simulation: the same seed gives the same fleet.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Every tag sends its readings in messages of this many (default: one
    /// reading per message, and batches of 10 from the tags that buffer).
    #[arg(long)]
    pub readings_per_message: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoint_and_stack_exclude_each_other() {
        let both = Cli::try_parse_from([
            "geotag",
            "device",
            "list",
            "--endpoint",
            "http://127.0.0.1:5000",
            "--stack",
            "prod",
        ]);
        assert!(both.is_err());
        assert!(Cli::try_parse_from(["geotag", "device", "list", "--stack", "prod"]).is_ok());
    }
}
