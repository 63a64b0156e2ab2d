//! The handler driven by the sample events in events/alerts (the files
//! `cargo lambda invoke alerts --data-file` takes), with in-memory stores.

use std::path::Path;

use geotag::alerts::{AlertKind, Thresholds};
use geotag::geofence::{Geofence, Shape};
use geotag::store::MemoryRegistry;
use geotag_alerts::{ScheduledJob, Trigger, handle, scheduled_job};
use geotag_runtime::FromEnvironment as _;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

type Memory = geotag_alerts::InMemory;

const T0: i64 = 1_795_161_600_000; // 2026-11-20T08:00:00Z

/// The rules silence-check.json and subscription-audit.json name: the local
/// stack's (`geotag up`).
const SAMPLE_RULE: &str = "arn:aws:events:us-east-1:123456789012:rule/geotag-local-silence-check";
const AUDIT_RULE: &str =
    "arn:aws:events:us-east-1:123456789012:rule/geotag-local-subscription-audit";

fn event(name: &str) -> Trigger {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/alerts")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn alerts() -> Memory {
    let registry = MemoryRegistry::default();
    registry
        .customers_of
        .lock()
        .unwrap()
        .insert("tag-0042".into(), "acme".into());
    registry.geofences.lock().unwrap().push(Geofence {
        id: "depot".into(),
        name: "Central depot".into(),
        customer_id: None,
        shape: Shape::Circle {
            lat: 48.8606,
            lon: 2.3376,
            radius_m: 500.0,
        },
    });
    geotag_alerts::in_memory(registry, [SAMPLE_RULE, AUDIT_RULE])
}

async fn invoke(alerts: &Memory, name: &str) -> Result<Value, lambda_runtime::Error> {
    let mut context = Context::default();
    context.deadline = (geotag::clock::now_ms() + 30_000) as u64;
    handle(alerts, LambdaEvent::new(event(name), context)).await
}

#[tokio::test]
async fn latest_changes_raise_each_expected_alert_once() {
    let alerts = alerts();
    let response = invoke(&alerts, "latest-changes.json").await.unwrap();
    assert_eq!(response, serde_json::json!({"batchItemFailures": []}));
    let got: Vec<(String, AlertKind, Option<String>)> = alerts
        .sink
        .published()
        .into_iter()
        .map(|a| (a.id, a.kind, a.customer_id))
        .collect();
    let acme = Some("acme".to_owned());
    assert_eq!(
        got,
        [
            (
                "speeding#tag-0007#1795162260000".to_owned(),
                AlertKind::Speeding,
                None
            ),
            (
                "geofence_enter#tag-0042#depot#2026-11-20T08:01:00.000Z#00000000000000000002"
                    .to_owned(),
                AlertKind::GeofenceEnter,
                acme.clone()
            ),
            (
                format!("battery_low#tag-0042#{}", T0 + 2 * 60_000),
                AlertKind::BatteryLow,
                acme.clone()
            ),
            (
                "geofence_exit#tag-0042#depot#2026-11-20T08:03:00.000Z#00000000000000000004"
                    .to_owned(),
                AlertKind::GeofenceExit,
                acme
            ),
        ]
    );
    // The same batch again (Lambda retrying it): nothing is published twice.
    invoke(&alerts, "latest-changes.json").await.unwrap();
    assert_eq!(alerts.sink.published().len(), 4);
}

#[tokio::test]
async fn the_silence_check_event_judges_its_own_time() {
    let fleet = alerts();
    // The event says 09:00; tag-0042 was last seen at 08:20, tag-0007 at 08:45.
    fleet.silence.last_seen.lock().unwrap().extend([
        ("tag-0042".to_owned(), T0 + 20 * 60_000),
        ("tag-0007".to_owned(), T0 + 45 * 60_000),
    ]);
    let response = invoke(&fleet, "silence-check.json").await.unwrap();
    assert_eq!(response["silent_devices"], 1);
    assert_eq!(response["published"], 1);
    let silent = fleet.sink.published();
    assert_eq!(silent[0].kind, AlertKind::Silence);
    assert_eq!(silent[0].subject, "tag-0042 silent for 40 min");
    // A publish that keeps failing fails the run, so that EventBridge retries it.
    let strict = alerts();
    strict
        .silence
        .last_seen
        .lock()
        .unwrap()
        .extend([("tag-0042".to_owned(), T0)]);
    strict.sink.fail_next_publishes(1);
    assert!(invoke(&strict, "silence-check.json").await.is_err());
    assert!(invoke(&strict, "silence-check.json").await.is_ok());
    assert_eq!(strict.sink.published().len(), 1);
}

fn schedule_event(name: &str) -> aws_lambda_events::eventbridge::EventBridgeEvent<Value> {
    match event(name) {
        Trigger::Schedule(scheduled) => scheduled,
        Trigger::Stream(_) => panic!("{name} is a schedule event"),
    }
}

#[test]
fn a_schedule_event_is_judged_at_its_time_but_never_past_the_clock() {
    let fleet = alerts();
    let sample = schedule_event("silence-check.json");
    let nine = T0 + 60 * 60_000;
    let check = |at_ms| Ok(ScheduledJob::SilenceCheck { at_ms });
    // Before its time (a retry): the event's time, so the retry judges the same instant.
    assert_eq!(scheduled_job(&sample, &fleet, nine + 5_000), check(nine));
    // After: the clock's. A forged future time would find the whole fleet silent.
    assert_eq!(scheduled_job(&sample, &fleet, T0), check(T0));
    let mut untimed = sample.clone();
    untimed.time = None;
    assert_eq!(scheduled_job(&untimed, &fleet, T0), check(T0));
    assert_eq!(
        scheduled_job(&schedule_event("subscription-audit.json"), &fleet, T0),
        Ok(ScheduledJob::SubscriptionAudit)
    );
}

#[tokio::test]
async fn a_schedule_event_of_another_resource_is_refused() {
    let fleet = alerts();
    let sample = schedule_event("silence-check.json");
    let other = "arn:aws:events:us-east-1:123456789012:rule/other";
    for resources in [
        None,
        Some(vec![]),
        Some(vec![other.to_owned()]),
        Some(vec![SAMPLE_RULE.to_owned(); 2]),
        Some(vec![SAMPLE_RULE.to_owned(), AUDIT_RULE.to_owned()]),
    ] {
        let mut forged = sample.clone();
        forged.resources = resources;
        let refusal = scheduled_job(&forged, &fleet, T0).unwrap_err();
        assert!(refusal.starts_with("unknown_schedule"), "{refusal}");
    }
    let mut forged = sample.clone();
    forged.detail_type = "Object Created".into();
    assert!(
        scheduled_job(&forged, &fleet, T0)
            .unwrap_err()
            .starts_with("wrong_detail_type")
    );
    // Through the handler: refused before any device is looked at.
    let mut elsewhere = alerts();
    elsewhere.silence_rule_arn = other.into();
    for fleet in [&fleet, &elsewhere] {
        fleet
            .silence
            .last_seen
            .lock()
            .unwrap()
            .extend([("tag-0042".to_owned(), T0)]);
    }
    assert!(invoke(&elsewhere, "silence-check.json").await.is_err());
    assert!(elsewhere.sink.published().is_empty());
    assert!(invoke(&fleet, "silence-check.json").await.is_ok());
    assert_eq!(fleet.sink.published().len(), 1);
}

#[tokio::test]
async fn the_audit_counts_subscriptions_by_whose_alerts_they_receive() {
    use geotag::alert_filter::{EVERY_CUSTOMER_FILTER, Subscription, customer_filter};
    let fleet = alerts();
    let subscription = |n: usize, filter: Option<String>| Subscription {
        arn: if n == 0 {
            "PendingConfirmation".into()
        } else {
            format!("arn:aws:sns:us-east-1:123456789012:geotag-local-alerts:{n}")
        },
        protocol: "sqs".into(),
        endpoint: format!("arn:aws:sqs:us-east-1:123456789012:inbox-{n}"),
        filter_policy: filter,
        filter_policy_scope: None,
    };
    fleet.sink.subscriptions.lock().unwrap().extend([
        subscription(0, None),
        subscription(1, Some(customer_filter("acme"))),
        subscription(2, Some(customer_filter("globex"))),
        subscription(3, Some(EVERY_CUSTOMER_FILTER.into())),
        subscription(4, None),
        subscription(5, Some(r#"{"customer_id":[{"prefix":"a"}]}"#.into())),
    ]);
    let response = invoke(&fleet, "subscription-audit.json").await.unwrap();
    assert_eq!(
        response,
        serde_json::json!({"unscoped": 2, "one_customer": 2, "every_customer": 1, "pending": 1})
    );
    assert!(fleet.sink.published().is_empty());
}

#[test]
fn thresholds_out_of_range_in_the_environment_stop_the_cold_start() {
    for (name, value) in [
        ("SILENCE_MINUTES", "-5"),
        ("SILENCE_MINUTES", "1e300"),
        ("BATTERY_LOW_PCT", "120"),
        ("SPEED_LIMIT_KMH", "0"),
        ("SPEED_GRACE_SECONDS", "NaN"),
    ] {
        let error = geotag_alerts::Config::from_lookup(|n| {
            if n == name {
                Some(value.into())
            } else if n.ends_with("_TABLE") || n.ends_with("_ARN") {
                Some("t".into())
            } else {
                None
            }
        })
        .unwrap_err();
        assert!(
            error.to_string().contains(name) && error.to_string().contains("a number in ["),
            "{name}={value}: {error}"
        );
    }
}

#[tokio::test]
async fn an_event_from_no_configured_trigger_is_refused() {
    let error = serde_json::from_str::<Trigger>(r#"{"hello": "world"}"#)
        .err()
        .expect("refused");
    assert!(error.to_string().contains("neither"), "{error}");
    // Thresholds read from the environment the template sets.
    let config = geotag_alerts::Config::from_lookup(|name| {
        Some(
            match name {
                "SPEED_LIMIT_KMH" => "90",
                "SILENCE_MINUTES" => "15",
                "BATTERY_LOW_PCT" => "25",
                "SPEED_GRACE_SECONDS" => "30",
                _ => "x",
            }
            .to_owned(),
        )
    })
    .unwrap_err();
    assert!(
        config.to_string().contains("ALERT_RETENTION_DAYS"),
        "{config}"
    );
    let ok = geotag_alerts::Config::from_lookup(|name| match name {
        "SPEED_LIMIT_KMH" => Some("90".into()),
        "SILENCE_MINUTES" => Some("15".into()),
        n if n.ends_with("_TABLE") || n.ends_with("_ARN") => Some("t".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        ok.defaults,
        Thresholds {
            speed_limit_mps: 25.0,
            silence_after_ms: 15 * 60_000,
            ..Thresholds::default()
        }
    );
}
