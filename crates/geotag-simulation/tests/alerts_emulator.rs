//! The alerts function against the emulator, fed by the real DeviceStats
//! stream through the pump: every alert published exactly once to
//! AlertsTopic, under duplicate deliveries of every stream batch (two
//! invocations at once), a publish that fails, and a schedule delivered
//! twice; and SNS filter policies giving each customer its own tags' alerts
//! and none of another's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures::FutureExt;
use geotag::Reading;
use geotag::alerts::Alert;
use geotag::store::{AlertSink, ReadingStore, StoreError};
use geotag_aws::device_stats::DeviceStatsStreamEvent;
use geotag_aws::telemetry::TelemetryStreamEvent;
use geotag_aws::{DynamoAlertLog, DynamoRegistry, DynamoSilenceIndex, SnsAlertSink};
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::pump::Pump;
use geotag_local_cloud::stack::{LocalStack, Options};
use geotag_operator::registry::{CustomerSpec, RegistryAdmin};
use geotag_runtime::FromEnvironment as _;
use geotag_simulation::alert_audit::Received;
use serde_json::{Value, json};

mod common;
use common::DEPOT;

const T0: i64 = 1_795_161_600_000; // 2026-11-20T08:00:00Z

/// The alerts topic, except that the first `failures` publishes fail.
struct FlakySink {
    inner: SnsAlertSink,
    failures: AtomicU32,
}

impl AlertSink for FlakySink {
    async fn publish(&self, alert: &Alert) -> Result<(), StoreError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Service {
                code: "InternalError".into(),
                message: "injected publish failure".into(),
            });
        }
        self.inner.publish(alert).await
    }

    async fn subscriptions(&self) -> Result<Vec<geotag::alert_filter::Subscription>, StoreError> {
        self.inner.subscriptions().await
    }
}

type Handler = geotag_alerts::Alerts<DynamoRegistry, DynamoAlertLog, FlakySink, DynamoSilenceIndex>;

/// Ten readings a minute apart walking east through the depot (in at minutes
/// 4 to 6), with the given speed and battery at each minute.
fn walk(device: &str, speed: impl Fn(i64) -> f64, battery: impl Fn(i64) -> f64) -> Vec<Reading> {
    (0..10)
        .map(|minute| Reading {
            device_id: device.to_owned(),
            ts_ms: T0 + minute * 60_000,
            lat: DEPOT.0,
            // 0.0045° of longitude is about 330 m here.
            lon: DEPOT.1 + (minute - 5) as f64 * 0.0045,
            alt: None,
            speed: Some(speed(minute)),
            heading: Some(90.0),
            battery: Some(battery(minute)),
            accuracy: Some(5.0),
            seq: Some(minute as u64),
            received_at_ms: None,
            owner: None,
        })
        .collect()
}

async fn drain(local: &LocalStack, url: &str) -> Vec<Received> {
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let mut received = Vec::new();
    for message in geotag_local_cloud::pump::read_whole_queue(&sqs, url)
        .await
        .unwrap()
    {
        let envelope: Value = serde_json::from_str(message.body().unwrap()).unwrap();
        // Email readers get the subject and text; queues the JSON document.
        assert!(envelope["Subject"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(
            envelope["MessageAttributes"]["type"]["Value"],
            serde_json::from_str::<Value>(envelope["Message"].as_str().unwrap()).unwrap()["type"]
        );
        received.push(Received::of_sqs_body(message.body().unwrap()).unwrap());
    }
    received.sort();
    received
}

#[tokio::test]
async fn every_alert_is_published_once_and_only_to_its_customer() {
    let local = LocalStack::start(&Options::default())
        .await
        .expect("local stack");
    let admin = RegistryAdmin::for_local(&local.stack, &local.sdk).unwrap();
    let (operator_url, operator_arn) = common::inbox(&local, "operator").await;
    let (acme_url, acme_arn) = common::inbox(&local, "acme").await;
    let (globex_url, globex_arn) = common::inbox(&local, "globex").await;
    aws_sdk_sns::Client::new(&local.sdk)
        .subscribe()
        .topic_arn(&admin.alerts_topic_arn)
        .protocol("sqs")
        .endpoint(&operator_arn)
        .attributes("FilterPolicy", geotag::alert_filter::EVERY_CUSTOMER_FILTER)
        .send()
        .await
        .unwrap();
    admin
        .add_customer(&CustomerSpec {
            customer_id: "acme".into(),
            queue_arns: vec![acme_arn],
            ..CustomerSpec::default()
        })
        .await
        .unwrap();
    admin
        .add_customer(&CustomerSpec {
            customer_id: "globex".into(),
            queue_arns: vec![globex_arn],
            battery_low_pct: Some(50.0),
            ..CustomerSpec::default()
        })
        .await
        .unwrap();
    admin.assign(&["tag-a".into()], "acme").await.unwrap();
    admin.assign(&["tag-b".into()], "globex").await.unwrap();
    common::put_depot(&admin).await;

    // tag-a (acme): through the depot, speeding from minute 2 to 5, battery
    // 30% down to 12% (crosses 20%). tag-b (globex, 50% threshold): through
    // the depot, battery 60% to 42%. tag-z (nobody's): through the depot.
    let mut readings = walk(
        "tag-a",
        |m| if (2..=5).contains(&m) { 45.0 } else { 10.0 },
        |m| 30.0 - 2.0 * m as f64,
    );
    readings.extend(walk("tag-b", |_| 10.0, |m| 60.0 - 2.0 * m as f64));
    readings.extend(walk("tag-z", |_| 10.0, |_| 90.0));
    let telemetry = geotag_aws::DynamoReadingStore::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        local.stack.reference("TelemetryTable").unwrap(),
        3650,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    // Two writes, so that the DeviceStats stream carries two changes per tag.
    for part in [&readings[..15], &readings[15..]] {
        assert!(
            telemetry
                .put_readings(part, deadline)
                .await
                .failed
                .is_empty()
        );
    }

    let environment = |logical_id: &str| {
        local
            .stack
            .function(logical_id)
            .unwrap()
            .environment
            .clone()
    };
    let stats_config =
        geotag_stats::Config::from_lookup(|n| environment("StatsFunction").get(n).cloned())
            .unwrap();
    let alerts_config =
        geotag_alerts::Config::from_lookup(|n| environment("AlertsFunction").get(n).cloned())
            .unwrap();
    let stats = Arc::new(geotag_stats::on_aws(&local.sdk, &stats_config));
    let real = geotag_alerts::on_aws(&local.sdk, &alerts_config);
    let alerts: Arc<Handler> = Arc::new(geotag_alerts::Alerts {
        registry: real.registry,
        log: real.log,
        sink: FlakySink {
            inner: real.sink,
            failures: AtomicU32::new(1),
        },
        silence: real.silence,
        silence_lookback_ms: real.silence_lookback_ms,
        silence_rule_arn: real.silence_rule_arn,
        audit_rule_arn: real.audit_rule_arn,
        metrics: geotag_runtime::emf::Emitter::for_binary("alerts"),
    });
    let alert_invocations = Arc::new(AtomicUsize::new(0));
    let invoker = {
        let (stats, alerts, alert_invocations) = (
            Arc::clone(&stats),
            Arc::clone(&alerts),
            Arc::clone(&alert_invocations),
        );
        Invoker::Closure(Arc::new(move |function, payload: Value| {
            let (stats, alerts, alert_invocations) = (
                Arc::clone(&stats),
                Arc::clone(&alerts),
                Arc::clone(&alert_invocations),
            );
            let binary = function.binary.clone();
            async move {
                let failures: Vec<String> = match binary.as_str() {
                    "stats" => {
                        let event: TelemetryStreamEvent = serde_json::from_value(payload)?;
                        geotag_stats::process(&stats, &event.records).await.failures
                    }
                    "alerts" => {
                        let event: DeviceStatsStreamEvent = serde_json::from_value(payload)?;
                        alert_invocations.fetch_add(2, Ordering::SeqCst);
                        // Every batch is delivered twice at once, as two
                        // concurrent invocations would see it.
                        let (one, two) = futures::join!(
                            geotag_alerts::process_stream(&alerts, &event.records),
                            geotag_alerts::process_stream(&alerts, &event.records)
                        );
                        one.failures.into_iter().chain(two.failures).collect::<BTreeSet<_>>().into_iter().collect()
                    }
                    other => return Err(anyhow!("{other} is not under test")),
                };
                Ok(json!({"batchItemFailures": failures.iter().map(|s| json!({"itemIdentifier": s})).collect::<Vec<_>>()}))
            }
            .boxed()
        }))
    };
    let pump = Pump::start(&local.stack, &local.sdk, invoker);
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    let pump_stats = pump.stats.snapshot();
    pump.stop().await;
    assert!(
        pump_stats["batch item failures"] >= 1,
        "the failed publish was retried: {pump_stats:?}"
    );

    // The silence check, 31 minutes after the last readings, delivered twice.
    let now = T0 + 9 * 60_000 + 31 * 60_000;
    for _ in 0..2 {
        let outcome =
            geotag_alerts::process_schedule(&alerts, now, geotag::clock::now_ms() + 60_000)
                .await
                .unwrap();
        assert_eq!((outcome.silent, outcome.undelivered), (3, 0));
    }

    let operator = drain(&local, &operator_url).await;
    let mut kinds: BTreeMap<(String, String), usize> = BTreeMap::new();
    for alert in &operator {
        *kinds
            .entry((alert.device_id.clone(), alert.kind.clone()))
            .or_default() += 1;
    }
    let expected: BTreeMap<(String, String), usize> = [
        ("tag-a", "geofence_enter"),
        ("tag-a", "geofence_exit"),
        ("tag-a", "battery_low"),
        ("tag-a", "speeding"),
        ("tag-a", "silence"),
        ("tag-b", "geofence_enter"),
        ("tag-b", "geofence_exit"),
        ("tag-b", "battery_low"),
        ("tag-b", "silence"),
        ("tag-z", "geofence_enter"),
        ("tag-z", "geofence_exit"),
        ("tag-z", "silence"),
    ]
    .into_iter()
    .map(|(d, k)| ((d.to_owned(), k.to_owned()), 1))
    .collect();
    assert_eq!(kinds, expected, "each alert once: {operator:#?}");
    let ids: BTreeSet<&str> = operator.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), operator.len(), "no id published twice");
    assert!(
        operator
            .iter()
            .filter(|a| a.device_id == "tag-z")
            .all(|a| a.customer_id == "unassigned")
    );

    // Each customer's subscriber: exactly its tags' alerts, nothing else.
    let of = |device: &str| -> Vec<Received> {
        operator
            .iter()
            .filter(|a| a.device_id == device)
            .cloned()
            .collect()
    };
    assert_eq!(drain(&local, &acme_url).await, of("tag-a"));
    assert_eq!(drain(&local, &globex_url).await, of("tag-b"));
}

/// `customer add` subscribes with the customer's filter and the stack's
/// redrive queue, and refuses thresholds out of range before writing
/// anything; the audit finds every subscription that receives more than one
/// customer's alerts, whether subscribed without a filter or changed later.
#[tokio::test]
async fn the_audit_finds_every_subscription_not_scoped_to_one_customer() {
    use geotag::alert_filter::{EVERY_CUSTOMER_FILTER, customer_filter};
    let local = LocalStack::start(&Options::default())
        .await
        .expect("local stack");
    let admin = RegistryAdmin::for_local(&local.stack, &local.sdk).unwrap();
    let sns = aws_sdk_sns::Client::new(&local.sdk);
    let (_, acme_queue) = common::inbox(&local, "audit-acme").await;
    let (_, globex_queue) = common::inbox(&local, "audit-globex").await;
    let (_, operator_queue) = common::inbox(&local, "audit-operator").await;
    let (_, stray_queue) = common::inbox(&local, "audit-stray").await;

    let refused = admin
        .add_customer(&CustomerSpec {
            customer_id: "initech".into(),
            queue_arns: vec![stray_queue.clone()],
            silence_minutes: Some(-5.0),
            ..CustomerSpec::default()
        })
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("silence_minutes -5"),
        "{refused:#}"
    );
    assert!(admin.list_customers().await.unwrap().is_empty());
    assert!(admin.subscriptions().await.unwrap().is_empty());

    let mut subscribed = Vec::new();
    for (customer, queue) in [("acme", &acme_queue), ("globex", &globex_queue)] {
        let arns = admin
            .add_customer(&CustomerSpec {
                customer_id: customer.into(),
                queue_arns: vec![queue.clone()],
                ..CustomerSpec::default()
            })
            .await
            .unwrap();
        let attributes = sns
            .get_subscription_attributes()
            .subscription_arn(&arns[0])
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        assert_eq!(attributes["FilterPolicy"], customer_filter(customer));
        let redrive: Value = serde_json::from_str(&attributes["RedrivePolicy"]).unwrap();
        assert_eq!(redrive["deadLetterTargetArn"], admin.undelivered_queue_arn);
        subscribed.push(arns[0].clone());
    }
    for (queue, filter) in [
        (&operator_queue, Some(EVERY_CUSTOMER_FILTER)),
        (&stray_queue, None),
    ] {
        sns.subscribe()
            .topic_arn(&admin.alerts_topic_arn)
            .protocol("sqs")
            .endpoint(queue)
            .set_attributes(filter.map(|f| [("FilterPolicy".to_owned(), f.to_owned())].into()))
            .send()
            .await
            .unwrap();
    }

    let audit = admin.audit().await.unwrap();
    let customers: Vec<(&str, bool)> = audit
        .one_customer
        .iter()
        .map(|(_, id, known)| (id.as_str(), *known))
        .collect();
    assert_eq!(customers.len(), 2);
    assert!(customers.contains(&("acme", true)) && customers.contains(&("globex", true)));
    assert_eq!(audit.every_customer.len(), 1);
    assert_eq!(audit.every_customer[0].endpoint, operator_queue);
    assert_eq!(audit.unscoped.len(), 1);
    assert_eq!(audit.unscoped[0].0.endpoint, stray_queue);
    assert!(
        audit.unscoped[0].1.contains("no filter policy"),
        "{:?}",
        audit.unscoped
    );

    // Filters changed after the fact: one widened to two customers, one
    // replaced by a filter on the alert type only.
    for (arn, policy) in [
        (&subscribed[1], r#"{"customer_id":["globex","acme"]}"#),
        (&subscribed[0], r#"{"type":["silence"]}"#),
    ] {
        sns.set_subscription_attributes()
            .subscription_arn(arn)
            .attribute_name("FilterPolicy")
            .attribute_value(policy)
            .send()
            .await
            .unwrap();
    }
    let audit = admin.audit().await.unwrap();
    assert!(audit.one_customer.is_empty(), "{:?}", audit.one_customer);
    let mut reasons: Vec<(&str, &str)> = audit
        .unscoped
        .iter()
        .map(|(s, why)| (s.endpoint.as_str(), why.as_str()))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|(e, why)| *e == globex_queue && why.contains("names 2 customers"))
    );
    assert!(
        reasons
            .iter()
            .any(|(e, why)| *e == acme_queue && why.contains("does not name customer_id"))
    );
}
