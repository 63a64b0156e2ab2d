//! The alerts part of the demo: a registry for the simulated fleet, an inbox
//! per customer, the silence check, and an audit of what each inbox got.
//!
//! The fleet is split between two customers, `acme` (tags 0-9 of every
//! twenty) and `globex` (10-19), with each tenth tag's 7 left unassigned;
//! globex sets its own 30% battery threshold and owns the [`east_gate`]
//! polygon, the depot is everyone's. Each customer's inbox is an SQS queue
//! subscribed through `geotag customer add --queue-arn` (the same filter
//! policy an email subscription gets), and the operator's inbox is
//! subscribed to everything. The audit compares what arrived with what the
//! oracle ([`simulate::expected_alerts`]) says the readings deserve.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use geotag::alerts::{AlertKind, Thresholds};
use geotag::geofence::{Geofence, Shape};
use serde_json::Value;

use crate::simulate::{self, DEPOT, EAST_GATE, Expected, east_gate};
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::provision::EventSource;
use geotag_local_cloud::pump::schedule::scheduled_event;
use geotag_local_cloud::stack::LocalStack;
use geotag_operator::registry::{CustomerSpec, RegistryAdmin};
use geotag_runtime::FromEnvironment as _;

/// The operator's inbox, subscribed to every alert.
pub const OPERATOR: &str = "operator";
const ALL_KINDS: [AlertKind; 5] = [
    AlertKind::GeofenceEnter,
    AlertKind::GeofenceExit,
    AlertKind::BatteryLow,
    AlertKind::Speeding,
    AlertKind::Silence,
];

/// The registry the demo sets up, and where each inbox is.
#[derive(Debug, Clone)]
pub struct FleetRegistry {
    pub customer_of: BTreeMap<String, String>,
    pub thresholds_of: BTreeMap<String, Thresholds>,
    pub defaults: Thresholds,
    pub zones: Vec<Geofence>,
    /// Inbox queue URL by customer id (and [`OPERATOR`]).
    pub inboxes: BTreeMap<String, String>,
}

impl FleetRegistry {
    /// (customer, thresholds, zones) of a device, as the alerts function sees it.
    pub fn setup_of(&self, device: &str) -> (Option<String>, Thresholds, Vec<Geofence>) {
        let customer = self.customer_of.get(device).cloned();
        let thresholds = customer
            .as_ref()
            .and_then(|c| self.thresholds_of.get(c))
            .copied()
            .unwrap_or(self.defaults);
        let zones = self
            .zones
            .iter()
            .filter(|z| z.customer_id.is_none() || z.customer_id == customer)
            .cloned()
            .collect();
        (customer, thresholds, zones)
    }
}

/// The customer of the simulated tag `tag-NNNN`, if any.
pub fn customer_of_tag(index: usize) -> Option<&'static str> {
    match (index % 10, (index / 10) % 2) {
        (7, _) => None,
        (_, 0) => Some("acme"),
        _ => Some("globex"),
    }
}

/// Creates the demo's customers, inboxes, assignments and zones.
pub async fn set_up(local: &LocalStack, devices: usize) -> Result<FleetRegistry> {
    let admin = RegistryAdmin::for_local(&local.stack, &local.sdk)?;
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let sns = aws_sdk_sns::Client::new(&local.sdk);
    let alerts_function = local
        .stack
        .functions
        .values()
        .find(|f| f.binary == "alerts")
        .context("the template has no alerts function")?;
    let config =
        geotag_alerts::Config::from_lookup(|name| alerts_function.environment.get(name).cloned())?;

    let (inboxes, inbox_arn) = create_inboxes(&sqs).await?;
    // The operator's inbox takes every customer's alerts, and says so (as
    // the template's AlertEmail does): the subscription audit counts it apart.
    sns.subscribe()
        .topic_arn(&admin.alerts_topic_arn)
        .protocol("sqs")
        .endpoint(&inbox_arn[OPERATOR])
        .attributes("FilterPolicy", geotag::alert_filter::EVERY_CUSTOMER_FILTER)
        .send()
        .await?;

    let globex = Thresholds {
        battery_low_pct: 30.0,
        ..config.defaults
    };
    admin
        .add_customer(&CustomerSpec {
            customer_id: "acme".into(),
            emails: vec!["fleet-ops@acme.example".into()],
            queue_arns: vec![inbox_arn["acme"].clone()],
            ..CustomerSpec::default()
        })
        .await?;
    admin
        .add_customer(&CustomerSpec {
            customer_id: "globex".into(),
            emails: vec!["alerts@globex.example".into()],
            queue_arns: vec![inbox_arn["globex"].clone()],
            battery_low_pct: Some(globex.battery_low_pct),
            ..CustomerSpec::default()
        })
        .await?;
    let customer_of = assign_tags(&admin, devices).await?;
    let zones = demo_zones();
    for zone in &zones {
        admin.put_geofence(zone).await?;
    }
    Ok(FleetRegistry {
        customer_of,
        thresholds_of: BTreeMap::from([
            ("acme".into(), config.defaults),
            ("globex".into(), globex),
        ]),
        defaults: config.defaults,
        zones,
        inboxes,
    })
}

/// A customer's inbox cell, and whether it holds exactly the operator's
/// alerts of its tags (an unassigned group has no inbox).
fn inbox_cell(
    received: Option<&Vec<Received>>,
    customer: &str,
    devices: &[String],
    operator: &[Received],
) -> (String, bool) {
    let Some(received) = received else {
        return ("(operator only)".to_owned(), true);
    };
    let theirs: Vec<&Received> = operator
        .iter()
        .filter(|r| devices.contains(&r.device_id))
        .collect();
    let exact = received.len() == theirs.len()
        && received.iter().zip(&theirs).all(|(a, b)| a == *b)
        && received.iter().all(|r| r.customer_id == customer);
    let cell = format!(
        "{} alerts, exactly its tags' {}",
        received.len(),
        crate::report::mark(exact)
    );
    (cell, exact)
}

/// A line per (device, type) whose count differs from the oracle's.
fn differences(out: &mut String, comparison: &AlertComparison) {
    let AlertComparison {
        want,
        got,
        operator,
        ..
    } = comparison;
    for ((device, kind), n) in got {
        if want.get(&(device.clone(), *kind)) != Some(n) {
            // The ids tell a repeated alert from two causes the oracle saw as one.
            let ids: Vec<&str> = operator
                .iter()
                .filter(|r| &r.device_id == device && r.kind == kind.code())
                .map(|r| r.id.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  ✗ {device}: {n} {} alerts, expected {}: {}",
                kind.code(),
                want.get(&(device.clone(), *kind)).copied().unwrap_or(0),
                ids.join(", ")
            );
        }
    }
    for ((device, kind), n) in want {
        if !got.contains_key(&(device.clone(), *kind)) {
            let _ = writeln!(out, "  ✗ {device}: no {} alert, expected {n}", kind.code());
        }
    }
}

/// An SQS inbox per customer and one for the operator: (URL by name, ARN by name).
async fn create_inboxes(
    sqs: &aws_sdk_sqs::Client,
) -> Result<(BTreeMap<String, String>, BTreeMap<&'static str, String>)> {
    let mut inboxes = BTreeMap::new();
    let mut inbox_arn: BTreeMap<&'static str, String> = BTreeMap::new();
    for name in [OPERATOR, "acme", "globex"] {
        let url = sqs
            .create_queue()
            .queue_name(format!(
                "{}-inbox-{name}",
                geotag_local_cloud::provision::LOCAL_STACK_NAME
            ))
            .send()
            .await?
            .queue_url
            .context("CreateQueue returned no URL")?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .context("no queue ARN")?;
        inboxes.insert(name.to_owned(), url);
        inbox_arn.insert(name, arn);
    }
    Ok((inboxes, inbox_arn))
}

/// Assigns every tag that has a customer (see [`customer_of_tag`]) to it.
async fn assign_tags(admin: &RegistryAdmin, devices: usize) -> Result<BTreeMap<String, String>> {
    let mut customer_of = BTreeMap::new();
    for index in 0..devices {
        if let Some(customer) = customer_of_tag(index) {
            customer_of.insert(format!("tag-{index:04}"), customer.to_owned());
        }
    }
    for customer in ["acme", "globex"] {
        let tags: Vec<String> = customer_of
            .iter()
            .filter(|(_, c)| c.as_str() == customer)
            .map(|(d, _)| d.clone())
            .collect();
        if !tags.is_empty() {
            admin.assign(&tags, customer).await?;
        }
    }
    Ok(customer_of)
}

/// The depot, everyone's, and globex's east gate polygon.
fn demo_zones() -> Vec<Geofence> {
    vec![
        Geofence {
            id: DEPOT.id.into(),
            name: DEPOT.name.into(),
            customer_id: None,
            shape: Shape::Circle {
                lat: DEPOT.lat,
                lon: DEPOT.lon,
                radius_m: DEPOT.radius_m,
            },
        },
        Geofence {
            id: EAST_GATE.0.into(),
            name: EAST_GATE.1.into(),
            customer_id: Some("globex".into()),
            shape: Shape::Polygon { ring: east_gate() },
        },
    ]
}

/// Runs the alerts function's subscription audit once, as its hourly rule
/// would, and renders its line of the demo report: whether no subscription
/// receives more than one customer's alerts.
pub async fn audit_subscriptions(local: &LocalStack, invoker: &Invoker) -> Result<(String, bool)> {
    // It claims nothing, so nothing leased needs waiting out between
    // attempts (a chaos run's crash of this one invocation failed a whole
    // CI run once, before it was retried).
    let answer = run_schedule_as_eventbridge_would(
        local,
        invoker,
        "SubscriptionAudit",
        geotag::clock::now_ms(),
        std::time::Duration::ZERO,
    )
    .await?;
    let count = |name: &str| answer.get(name).and_then(Value::as_u64);
    let (Some(unscoped), Some(one), Some(every), Some(pending)) = (
        count("unscoped"),
        count("one_customer"),
        count("every_customer"),
        count("pending"),
    ) else {
        anyhow::bail!("the subscription audit answered {answer}");
    };
    let ok = unscoped == 0;
    Ok((
        format!(
            "  subscriptions {one} to one customer, {every} to every customer (the operator's inbox), {pending} awaiting confirmation, {unscoped} unscoped {}",
            crate::report::mark(ok)
        ),
        ok,
    ))
}

/// Invokes the alerts function as its schedule `event_name` (the template's
/// name of the event) fires at `at_ms`. Returns the function's answer.
async fn run_schedule(
    local: &LocalStack,
    invoker: &Invoker,
    event_name: &str,
    at_ms: i64,
) -> Result<Value> {
    let (function, source) = local
        .stack
        .functions
        .values()
        .find_map(|function| {
            function.events.iter().find_map(|event| match event {
                EventSource::Schedule(source) if source.name == event_name => {
                    Some((function, source))
                }
                _ => None,
            })
        })
        .with_context(|| format!("the template has no schedule {event_name}"))?;
    invoker
        .invoke(function, scheduled_event(function, source, at_ms))
        .await
}

/// An alert as an inbox received it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Received {
    pub id: String,
    pub kind: String,
    pub device_id: String,
    pub customer_id: String,
}

impl Received {
    /// An alert as an SQS subscriber of AlertsTopic receives it: the SNS
    /// envelope around the alert's JSON document.
    pub fn of_sqs_body(body: &str) -> Result<Received> {
        let envelope: Value = serde_json::from_str(body).context("a message that is not JSON")?;
        let document: Value =
            serde_json::from_str(envelope["Message"].as_str().unwrap_or_default())
                .context("the alert is not the JSON document")?;
        let text = |key: &str| document[key].as_str().unwrap_or_default().to_owned();
        Ok(Received {
            id: text("id"),
            kind: text("type"),
            device_id: text("device_id"),
            customer_id: text("customer_id"),
        })
    }
}

/// Everything in each inbox (read with a long visibility timeout: once each).
pub async fn read_inboxes(
    local: &LocalStack,
    registry: &FleetRegistry,
) -> Result<BTreeMap<String, Vec<Received>>> {
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let mut all = BTreeMap::new();
    for (name, url) in &registry.inboxes {
        let mut received = Vec::new();
        for message in geotag_local_cloud::pump::read_whole_queue(&sqs, url).await? {
            received.push(
                Received::of_sqs_body(message.body().unwrap_or_default())
                    .with_context(|| format!("{name} inbox"))?,
            );
        }
        received.sort();
        all.insert(name.clone(), received);
    }
    Ok(all)
}

/// The alerts the operator's inbox received, beside those the readings deserve.
#[derive(Debug, Clone, Default)]
pub struct AlertComparison {
    /// What the oracle says, by (device, type).
    pub want: BTreeMap<(String, AlertKind), usize>,
    /// The distinct alerts (by id) the operator received, by (device, type).
    pub got: BTreeMap<(String, AlertKind), usize>,
    /// Messages repeating an alert id already received.
    pub repeated_ids: usize,
    /// Repeats a run's faults explain: each Publish whose answer was lost
    /// after SNS took it is published again by the SDK's retry, the same
    /// alert under the same id (see the README's delivery guarantees).
    pub repeats_allowed: usize,
    pub operator: Vec<Received>,
}

impl AlertComparison {
    pub fn new(
        expected: &Expected,
        registry: &FleetRegistry,
        inboxes: &BTreeMap<String, Vec<Received>>,
        silence_check_ms: i64,
        repeats_allowed: usize,
    ) -> AlertComparison {
        let want = simulate::expected_alerts(expected, |d| registry.setup_of(d), silence_check_ms);
        let operator = inboxes.get(OPERATOR).cloned().unwrap_or_default();
        let mut got: BTreeMap<(String, AlertKind), usize> = BTreeMap::new();
        let mut unique: BTreeSet<&str> = BTreeSet::new();
        for alert in &operator {
            if unique.insert(alert.id.as_str())
                && let Some(kind) = ALL_KINDS.iter().find(|k| k.code() == alert.kind)
            {
                *got.entry((alert.device_id.clone(), *kind)).or_default() += 1;
            }
        }
        let repeated_ids = operator.len() - unique.len();
        AlertComparison {
            want,
            got,
            repeated_ids,
            repeats_allowed,
            operator,
        }
    }

    /// Distinct alerts the operator received.
    pub fn distinct(&self) -> usize {
        self.operator.len() - self.repeated_ids
    }

    /// (lost, double-counted) alerts: deserved and not published, and published
    /// more often than deserved (or under one id more than once).
    pub fn tally(&self) -> (u64, u64) {
        let count = |of: &BTreeMap<(String, AlertKind), usize>, key| {
            of.get(key).copied().unwrap_or(0) as u64
        };
        // Repeats of one id beyond what lost answers explain are the double
        // count; the rest is compared by kind.
        let mut double = self.repeated_ids.saturating_sub(self.repeats_allowed) as u64;
        let mut distinct: BTreeMap<(String, AlertKind), usize> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for alert in &self.operator {
            if ids.insert(alert.id.as_str())
                && let Some(kind) = ALL_KINDS.iter().find(|k| k.code() == alert.kind)
            {
                *distinct
                    .entry((alert.device_id.clone(), *kind))
                    .or_default() += 1;
            }
        }
        let lost = self
            .want
            .iter()
            .map(|(key, n)| (*n as u64).saturating_sub(count(&distinct, key)))
            .sum();
        double += distinct
            .iter()
            .map(|(key, g)| (*g as u64).saturating_sub(count(&self.want, key)))
            .sum::<u64>();
        (lost, double)
    }
}

/// The alerts section of the demo report, and whether everything matched.
pub fn render(
    expected: &Expected,
    registry: &FleetRegistry,
    inboxes: &BTreeMap<String, Vec<Received>>,
    comparison: &AlertComparison,
) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let AlertComparison {
        want,
        got,
        repeated_ids,
        repeats_allowed,
        operator,
    } = comparison;
    let once = repeated_ids <= repeats_allowed;
    ok &= once;
    let want_total: usize = want.values().sum();
    let total_ok = comparison.distinct() == want_total;
    ok &= total_ok;
    let repeats = if *repeated_ids == 0 {
        String::new()
    } else {
        format!(
            " ({repeated_ids} delivered again under their id, {repeats_allowed} Publish answers lost)"
        )
    };
    let _ = writeln!(
        out,
        "\n  alerts      {:>6} published to AlertsTopic, {} expected {}; each id once{repeats} {}",
        comparison.distinct(),
        want_total,
        crate::report::mark(total_ok),
        crate::report::mark(once)
    );
    let _ = writeln!(
        out,
        "\n  {:<11} {:>4}  {:>9} {:>9} {:>9} {:>9} {:>9}   inbox",
        "customer", "tags", "enter", "exit", "battery", "speeding", "silence"
    );
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for device in expected.tracks.keys() {
        let customer = registry
            .customer_of
            .get(device)
            .cloned()
            .unwrap_or_else(|| geotag_aws::registry::UNASSIGNED.to_owned());
        groups.entry(customer).or_default().push(device.clone());
    }
    for (customer, devices) in &groups {
        let mut cells = String::new();
        for kind in ALL_KINDS {
            let sum = |of: &BTreeMap<(String, AlertKind), usize>| -> usize {
                devices
                    .iter()
                    .map(|d| of.get(&(d.clone(), kind)).copied().unwrap_or(0))
                    .sum()
            };
            let (g, w) = (sum(got), sum(want));
            ok &= g == w;
            let _ = write!(
                cells,
                " {:>7} {}",
                format!("{g}/{w}"),
                crate::report::mark(g == w)
            );
        }
        let (inbox, inbox_ok) = inbox_cell(inboxes.get(customer), customer, devices, operator);
        ok &= inbox_ok;
        let _ = writeln!(
            out,
            "  {customer:<11} {:>4} {cells}   {inbox}",
            devices.len()
        );
    }
    differences(&mut out, comparison);
    (out, ok)
}

/// The silence check, retried as EventBridge retries a failed asynchronous
/// invocation: twice, a minute and more apart. The wait matters: an alert
/// the failed attempt left claimed stays leased until that invocation's
/// deadline, and a retry at once would find it busy. (The 20,000-reading
/// chaos run failed three attempts in a row that way.) This waits out the lease.
pub async fn check_silence_as_eventbridge_would(
    local: &LocalStack,
    invoker: &Invoker,
    at_ms: i64,
) -> Result<()> {
    let longest_timeout = (local.stack.functions.values())
        .map(|function| function.timeout_secs)
        .max()
        .unwrap_or(30);
    let lease = std::time::Duration::from_secs(longest_timeout + 1);
    run_schedule_as_eventbridge_would(local, invoker, "SilenceCheck", at_ms, lease).await?;
    Ok(())
}

/// [`run_schedule`], retried as EventBridge retries a failed asynchronous
/// invocation: twice, `wait` apart. Returns the answer of the run that
/// succeeded.
async fn run_schedule_as_eventbridge_would(
    local: &LocalStack,
    invoker: &Invoker,
    event_name: &str,
    at_ms: i64,
    wait: std::time::Duration,
) -> Result<Value> {
    let mut attempts = 0;
    loop {
        match run_schedule(local, invoker, event_name, at_ms).await {
            Ok(answer) => return Ok(answer),
            Err(error) if attempts < 2 => {
                attempts += 1;
                println!(
                    "  {event_name} failed ({error:#}); retrying in {} s, as EventBridge would",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                return Err(error.context(format!("{event_name} failed three times")));
            }
        }
    }
}
