//! The alerts handler: DeviceStats' latest-state changes in, alerts published
//! once each.
//!
//! For each change of a device's `latest` item (old and new image, from the
//! DeviceStats stream), the device's assignment (customer, thresholds,
//! geofences) decides which rules apply (`geotag::alerts`). Each alert is
//! *claimed* in the alert log with a conditional write of its deterministic
//! id, then published, then marked published:
//!
//! - a duplicate stream record, a retried batch or a concurrent invocation
//!   finds the id claimed and published, and publishes nothing;
//! - a publish that fails leaves the id claimed but unpublished, and makes the
//!   record a batch item failure; the retry finds it unpublished and
//!   publishes it. Nothing is lost. The one window for a second copy is a crash
//!   between a successful publish and the mark, which a standard SNS topic
//!   cannot deduplicate (email cannot subscribe to a FIFO topic).
//!
//! A change is judged step by step along the live track it went through (the
//! `latest` item's trail, [`geotag::alerts::live_steps`]), so the alerts do not
//! depend on how many readings one stats batch folded together.
//!
//! A device's speeding episode ([`geotag::alerts::SpeedWatch`]) is saved after each change
//! whose alerts were all delivered, so a retry resumes the episode where the
//! failure left it and raises the same id.
//!
//! The same function answers an EventBridge schedule: [`process_schedule`]
//! finds the devices that went silent from the DeviceStats `SilenceIndex`
//! (a Query per shard over a time window, never a Scan), and raises one
//! silence alert per quiet period, through the same claim-publish-mark path.
//! A second schedule, hourly, audits AlertsTopic's subscriptions: SNS's
//! filter policies decide who receives whose alerts, and a filter cleared
//! or widened after `geotag customer add` made it would send one customer's
//! alerts to another. It counts them (`UnscopedSubscriptions`, alarmed).
//! Each schedule's events name its rule; an event naming neither is refused.
//!
//! # Layout
//!
//! - this file: the configuration, the wiring (AWS or in memory), the
//!   trigger and the handler with its metrics;
//! - [`stream`]: DeviceStats changes judged step by step, alerts delivered in order;
//! - [`schedule`]: the silence check;
//! - `delivery`: one alert claimed, published and marked, once.

use std::collections::BTreeMap;

use geotag::alert_filter::{Scope, ScopeCounts};
use geotag::alerts::{Alert, ThresholdField, Thresholds};
use geotag::store::{
    AlertLog, AlertSink, MemoryAlerts, MemoryRegistry, MemorySilenceIndex, Registry, SilenceIndex,
};
use geotag_aws::{DynamoAlertLog, DynamoRegistry, DynamoSilenceIndex, SnsAlertSink};
use geotag_runtime::emf::{self, Emitter, Metrics};
use geotag_runtime::responses::stream_batch_response;
use geotag_runtime::{ConfigError, Environment, FromEnvironment};
use lambda_runtime::{Error, LambdaEvent};
use serde::Deserialize;
use serde_json::{Value, json};

mod delivery;
pub mod schedule;
pub mod stream;

pub use schedule::{ScheduleOutcome, process_schedule};
pub use stream::{Outcome, process_stream, process_stream_leased};

/// The handler's dependencies.
pub struct Alerts<R, L, P, I> {
    /// Devices' customers, thresholds and geofences.
    pub registry: R,
    /// Claims of alert ids, and speeding episodes.
    pub log: L,
    /// The alerts topic.
    pub sink: P,
    /// Devices by last reading time, for the silence check.
    pub silence: I,
    /// How far back the silence check looks past the largest threshold: a
    /// device silent for longer was alerted on already (or before the
    /// function existed) and is not read again.
    pub silence_lookback_ms: i64,
    /// The EventBridge rule whose events run the silence check: an event
    /// naming another resource is refused, whoever could invoke the function.
    pub silence_rule_arn: String,
    /// The rule whose events run the subscription audit.
    pub audit_rule_arn: String,
    /// Where each invocation's metrics go (EMF lines on stdout in Lambda).
    pub metrics: Emitter,
}

/// Configuration from the environment variables that template.yaml sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub devices_table: String,
    pub customers_table: String,
    pub geofences_table: String,
    pub alerts_table: String,
    pub device_stats_table: String,
    pub alerts_topic_arn: String,
    /// `SILENCE_RULE_ARN`: the schedule's rule (see [`Alerts::silence_rule_arn`]).
    pub silence_rule_arn: String,
    /// `AUDIT_RULE_ARN`: the subscription audit's rule.
    pub audit_rule_arn: String,
    /// Defaults for customers that set none of their own.
    pub defaults: Thresholds,
    pub alert_retention_days: u32,
    pub silence_lookback_hours: u32,
    /// `METRICS_NAMESPACE` and `AWS_LAMBDA_FUNCTION_NAME`
    pub metrics: emf::Settings,
}

impl FromEnvironment for Config {
    fn read(env: &Environment) -> Result<Config, ConfigError> {
        let defaults = Thresholds::default();
        // The template's parameters bound these already; a hand-set variable
        // out of range stops the cold start rather than alerting a fleet.
        let threshold = |name: &'static str, field: ThresholdField, default: f64| {
            let value = env.parsed::<f64>(name, default)?;
            field.check(value).map_err(|_| {
                let (low, high) = field.range();
                ConfigError::Invalid {
                    name,
                    value: value.to_string(),
                    expected: format!("a number in [{low}, {high}]"),
                }
            })
        };
        Ok(Config {
            devices_table: env.required("DEVICES_TABLE")?,
            customers_table: env.required("CUSTOMERS_TABLE")?,
            geofences_table: env.required("GEOFENCES_TABLE")?,
            alerts_table: env.required("ALERTS_TABLE")?,
            device_stats_table: env.required("DEVICE_STATS_TABLE")?,
            alerts_topic_arn: env.required("ALERTS_TOPIC_ARN")?,
            silence_rule_arn: env.required("SILENCE_RULE_ARN")?,
            audit_rule_arn: env.required("AUDIT_RULE_ARN")?,
            defaults: Thresholds {
                battery_low_pct: threshold(
                    "BATTERY_LOW_PCT",
                    ThresholdField::BatteryLowPct,
                    defaults.battery_low_pct,
                )?,
                speed_limit_mps: threshold(
                    "SPEED_LIMIT_KMH",
                    ThresholdField::SpeedLimitKmh,
                    defaults.speed_limit_mps * 3.6,
                )? / 3.6,
                speed_grace_ms: (threshold(
                    "SPEED_GRACE_SECONDS",
                    ThresholdField::SpeedGraceSeconds,
                    defaults.speed_grace_ms as f64 / 1000.0,
                )? * 1000.0) as i64,
                silence_after_ms: (threshold(
                    "SILENCE_MINUTES",
                    ThresholdField::SilenceMinutes,
                    defaults.silence_after_ms as f64 / 60_000.0,
                )? * 60_000.0) as i64,
            },
            alert_retention_days: env.non_negative("ALERT_RETENTION_DAYS", 30.0)? as u32,
            silence_lookback_hours: env.non_negative("SILENCE_LOOKBACK_HOURS", 24.0)? as u32,
            metrics: env.metrics("alerts"),
        })
    }
}

/// The handler on AWS (or the emulator `AWS_ENDPOINT_URL` names).
pub type OnAws = Alerts<DynamoRegistry, DynamoAlertLog, SnsAlertSink, DynamoSilenceIndex>;

/// The handler over in-memory stores (the log is also the sink: what was
/// published is what it holds), for tests and for trying rules out.
pub type InMemory = Alerts<MemoryRegistry, MemoryAlerts, MemoryAlerts, MemorySilenceIndex>;

/// The in-memory handler of `registry`'s customers and zones, with a day of
/// silence look-back, run on schedule by `rules` (silence check, audit).
pub fn in_memory(registry: MemoryRegistry, rules: [&str; 2]) -> InMemory {
    let [silence_rule_arn, audit_rule_arn] = rules;
    Alerts {
        registry,
        log: MemoryAlerts::default(),
        sink: MemoryAlerts::default(),
        silence: MemorySilenceIndex::default(),
        silence_lookback_ms: geotag::clock::DAY_MS,
        silence_rule_arn: silence_rule_arn.to_owned(),
        audit_rule_arn: audit_rule_arn.to_owned(),
        metrics: Emitter::for_binary("alerts"),
    }
}

pub fn on_aws(sdk: &geotag_aws::clients::SdkConfig, config: &Config) -> OnAws {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    Alerts {
        registry: DynamoRegistry::new(
            dynamodb.clone(),
            &config.devices_table,
            &config.customers_table,
            &config.geofences_table,
            config.defaults,
        ),
        log: DynamoAlertLog::new(
            dynamodb.clone(),
            &config.alerts_table,
            config.alert_retention_days,
        ),
        sink: SnsAlertSink::new(aws_sdk_sns::Client::new(sdk), &config.alerts_topic_arn),
        silence: DynamoSilenceIndex::new(dynamodb, &config.device_stats_table),
        silence_lookback_ms: i64::from(config.silence_lookback_hours) * 3_600_000,
        silence_rule_arn: config.silence_rule_arn.clone(),
        audit_rule_arn: config.audit_rule_arn.clone(),
        metrics: Emitter::new(config.metrics.clone()),
    }
}

/// What triggers the function: the DeviceStats stream, or the schedule.
pub enum Trigger {
    Stream(geotag_aws::device_stats::DeviceStatsStreamEvent),
    Schedule(aws_lambda_events::eventbridge::EventBridgeEvent<Value>),
}

impl<'de> Deserialize<'de> for Trigger {
    /// Told apart by shape, and refused if it is neither: an event from a
    /// trigger nobody configured must fail loudly, not run a silence check.
    /// The event is held as its text while the shape is probed: a
    /// `serde_json::Value` of a 6 MB stream batch would take ten times that.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        struct Shape<'a> {
            #[serde(rename = "Records", borrow, default)]
            records: Option<&'a serde_json::value::RawValue>,
            #[serde(borrow, default)]
            source: Option<std::borrow::Cow<'a, str>>,
        }
        let text = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let shape: Shape = serde_json::from_str(text.get()).map_err(D::Error::custom)?;
        if shape.records.is_some() {
            serde_json::from_str(text.get())
                .map(Trigger::Stream)
                .map_err(D::Error::custom)
        } else if shape.source.as_deref() == Some("aws.events") {
            serde_json::from_str(text.get())
                .map(Trigger::Schedule)
                .map_err(D::Error::custom)
        } else {
            Err(D::Error::custom(
                "neither a DynamoDB stream event (Records) nor an EventBridge schedule event (source aws.events)",
            ))
        }
    }
}

/// The Lambda handler. A stream batch answers with its batch item failures;
/// a schedule run answers with a summary, or fails (EventBridge's
/// asynchronous invocation is then retried) if some alert was not delivered.
pub async fn handle<R: Registry, L: AlertLog, P: AlertSink, I: SilenceIndex>(
    alerts: &Alerts<R, L, P, I>,
    event: LambdaEvent<Trigger>,
) -> Result<Value, Error> {
    // The claim's lease: this invocation cannot outlive its deadline.
    let lease_until_ms = event.context.deadline as i64 + 1_000;
    let started = std::time::Instant::now();
    let mut metrics = Metrics::for_request(&event.context.request_id);
    match event.payload {
        Trigger::Stream(stream) => {
            let outcome = process_stream_leased(alerts, &stream.records, lease_until_ms).await;
            metrics
                .count("RecordsReceived", stream.records.len())
                .count("StateChanges", outcome.transitions)
                .count("AlertsRaised", outcome.raised)
                .count("AlreadyPublished", outcome.already_published)
                .count("BatchItemFailures", outcome.failures.len());
            outcome.published_by_type.count_into(&mut metrics);
            alerts
                .metrics
                .emit(metrics.duration("HandlerDuration", started.elapsed()));
            tracing::info!(
                records = stream.records.len(),
                transitions = outcome.transitions,
                raised = outcome.raised,
                published = outcome.published(),
                already_published = outcome.already_published,
                failures = outcome.failures.len(),
                "stream batch"
            );
            Ok(serde_json::to_value(stream_batch_response(
                outcome.failures,
            ))?)
        }
        Trigger::Schedule(scheduled) => {
            let job = scheduled_job(&scheduled, alerts, geotag::clock::now_ms());
            let result = match job {
                Ok(ScheduledJob::SilenceCheck { at_ms }) => {
                    silence_check(alerts, at_ms, lease_until_ms, &mut metrics).await
                }
                Ok(ScheduledJob::SubscriptionAudit) => {
                    subscription_audit(alerts, &mut metrics).await
                }
                Err(refusal) => {
                    metrics.count("ScheduleEventsRefused", 1);
                    tracing::error!(%refusal, resources = ?scheduled.resources, "schedule event refused");
                    Err(refusal.into())
                }
            };
            alerts
                .metrics
                .emit(metrics.duration("HandlerDuration", started.elapsed()));
            result
        }
    }
}

async fn silence_check<R: Registry, L: AlertLog, P: AlertSink, I: SilenceIndex>(
    alerts: &Alerts<R, L, P, I>,
    now_ms: i64,
    lease_until_ms: i64,
    metrics: &mut Metrics,
) -> Result<Value, Error> {
    let outcome = match process_schedule(alerts, now_ms, lease_until_ms).await {
        Ok(outcome) => outcome,
        Err(error) => {
            metrics.count("SilenceCheckFailures", 1);
            return Err(error.into());
        }
    };
    metrics
        .count("SilentDevices", outcome.silent)
        .count("AlreadyPublished", outcome.already_published)
        .count("AlertsUndelivered", outcome.undelivered);
    outcome.published_by_type.count_into(metrics);
    tracing::info!(?outcome, "silence check");
    if outcome.undelivered > 0 {
        return Err(format!(
            "{} silence alerts were not delivered; the run will be retried",
            outcome.undelivered
        )
        .into());
    }
    Ok(json!({
        "checked_at_ms": now_ms,
        "silent_devices": outcome.silent,
        "published": outcome.published(),
        "already_published": outcome.already_published,
    }))
}

/// Counts AlertsTopic's subscriptions by whose alerts they receive; the
/// template alarms on `UnscopedSubscriptions` above zero. Each unscoped one
/// is logged by ARN and reason (not by endpoint: an address is personal).
async fn subscription_audit<R: Registry, L: AlertLog, P: AlertSink, I: SilenceIndex>(
    alerts: &Alerts<R, L, P, I>,
    metrics: &mut Metrics,
) -> Result<Value, Error> {
    let subscriptions = alerts.sink.subscriptions().await?;
    for subscription in &subscriptions {
        if let Some(Scope::Unscoped(reason)) = subscription.scope() {
            tracing::error!(
                subscription = %subscription.arn,
                protocol = %subscription.protocol,
                %reason,
                "an alerts subscription receives more than one customer's alerts"
            );
        }
    }
    let counts = ScopeCounts::of(&subscriptions);
    metrics
        .count("UnscopedSubscriptions", counts.unscoped)
        .count("CustomerSubscriptions", counts.one_customer)
        .count("EveryCustomerSubscriptions", counts.every_customer)
        .count("PendingSubscriptions", counts.pending);
    tracing::info!(?counts, "subscription audit");
    Ok(json!({
        "unscoped": counts.unscoped,
        "one_customer": counts.one_customer,
        "every_customer": counts.every_customer,
        "pending": counts.pending,
    }))
}

/// What a schedule event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledJob {
    /// Judge silence at `at_ms`.
    SilenceCheck {
        at_ms: i64,
    },
    SubscriptionAudit,
}

/// The job a schedule event asks for, told by its rule: only a scheduled
/// event of exactly one of the stack's two rules is run. The silence check
/// judges the rule's time, not the clock, so that a retried run judges the
/// same instant; but never later than the clock (`clock_ms`), since a time
/// in the future would find the whole fleet silent.
pub fn scheduled_job<R, L, P, I>(
    event: &aws_lambda_events::eventbridge::EventBridgeEvent<Value>,
    alerts: &Alerts<R, L, P, I>,
    clock_ms: i64,
) -> Result<ScheduledJob, String> {
    if event.detail_type != "Scheduled Event" {
        return Err(format!(
            "wrong_detail_type: detail-type {:?}, not \"Scheduled Event\"",
            event.detail_type
        ));
    }
    match event.resources.as_deref() {
        Some([rule]) if *rule == alerts.silence_rule_arn => Ok(ScheduledJob::SilenceCheck {
            at_ms: event
                .time
                .map_or(clock_ms, |time| time.timestamp_millis().min(clock_ms)),
        }),
        Some([rule]) if *rule == alerts.audit_rule_arn => Ok(ScheduledJob::SubscriptionAudit),
        other => Err(format!(
            "unknown_schedule: resources {other:?}, not [{:?}] (SILENCE_RULE_ARN) or [{:?}] (AUDIT_RULE_ARN)",
            alerts.silence_rule_arn, alerts.audit_rule_arn
        )),
    }
}

/// Alerts published, counted by type code (`AlertsPublished` by `AlertType`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PublishedAlerts(BTreeMap<&'static str, usize>);

impl PublishedAlerts {
    fn add(&mut self, alert: &Alert) {
        *self.0.entry(alert.kind.code()).or_default() += 1;
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    fn count_into(&self, metrics: &mut Metrics) {
        metrics.count("AlertsPublished", self.total());
        for (alert_type, count) in &self.0 {
            metrics.count_by("AlertType", alert_type, "AlertsPublished", *count);
        }
    }
}
