//! `geotag redrive` through the whole local stack: a tag's messages refused
//! while it was unregistered are stored once it is registered and redriven,
//! the messages still bad come back with their reason, and a redrive that
//! dies between sending and deleting loses nothing and stores nothing twice;
//! and a flooding tag held to its budget, its parked messages redriven past it.

use std::sync::Arc;
use std::time::Duration;

use geotag_local_cloud::invoker::{InProcess, Invoker};
use geotag_local_cloud::pump::Pump;
use geotag_local_cloud::stack::{LocalStack, Options};
use geotag_operator::redrive::{Redrive, RedriveOptions, Sources};
use geotag_operator::registry::{CustomerSpec, RegistryAdmin};
use serde_json::json;

mod common;

/// What a redrive holds invisible (300 s by default), short for the test.
const HOLD: Duration = Duration::from_secs(3);

async fn publish(local: &LocalStack, thing: &str, readings: serde_json::Value) {
    common::publish(local, thing, &json!({ "readings": readings }).to_string()).await;
}

/// The reasons on the messages of a queue (IngestRejections,
/// IngestQuarantine), each message once, read without keeping them.
async fn reasons_in(local: &LocalStack, queue: &str) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let url = local.stack.reference(queue).unwrap();
    let messages = geotag_local_cloud::pump::read_whole_queue(&sqs, url)
        .await
        .unwrap();
    let mut reasons: Vec<String> = messages
        .iter()
        .map(|message| {
            message
                .message_attributes()
                .and_then(|a| a.get("reason"))
                .and_then(|v| v.string_value())
                .unwrap_or("(none)")
                .to_owned()
        })
        .collect();
    // Visible again for whoever reads next.
    for message in &messages {
        sqs.change_message_visibility()
            .queue_url(url)
            .receipt_handle(message.receipt_handle().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    reasons.sort();
    reasons
}

/// A redrive that waits for what it sent to come back.
async fn run_to_the_end(redrive: &Redrive) -> geotag_operator::redrive::RedriveReport {
    redrive
        .run(&RedriveOptions {
            wait_for_returns: Duration::from_secs(120),
            hold: HOLD,
            crash_after_sending: None,
        })
        .await
        .unwrap()
}

async fn rejection_reasons(local: &LocalStack) -> Vec<String> {
    reasons_in(local, "IngestRejections").await
}

async fn parked(local: &LocalStack) -> Vec<String> {
    reasons_in(local, "IngestQuarantine").await
}

#[tokio::test]
async fn a_redrive_after_registering_a_tag_stores_its_readings_once_even_after_a_crash() {
    let local = LocalStack::start(&Options {
        parameter_overrides: [("UnregisteredDevices".to_owned(), "refuse".to_owned())].into(),
        ..Options::default()
    })
    .await
    .expect("local stack");
    let admin = RegistryAdmin::for_local(&local.stack, &local.sdk).unwrap();
    admin
        .add_customer(&CustomerSpec {
            customer_id: "acme".into(),
            emails: vec![],
            queue_arns: vec![],
            battery_low_pct: None,
            speed_limit_kmh: None,
            speed_grace_seconds: None,
            silence_minutes: None,
        })
        .await
        .unwrap();
    admin.assign(&["tag-known".into()], "acme").await.unwrap();

    // Six messages of a tag nobody registered yet, two readings each; two
    // messages of a registered tag with a latitude past the pole.
    let now = geotag::clock::now_ms();
    for message in 0..6 {
        let readings: Vec<_> = (0..2)
            .map(|i| json!({"ts": now - 60_000 * (message * 2 + i + 1), "lat": 48.0, "lon": 2.0}))
            .collect();
        publish(&local, "tag-new", json!(readings)).await;
    }
    for message in 0..2 {
        publish(
            &local,
            "tag-known",
            json!([{"ts": now - message * 1000, "lat": 95.0, "lon": 2.0}]),
        )
        .await;
    }
    let handlers = InProcess::for_stack(&local.stack, &local.sdk).unwrap();
    let pump = Pump::start(
        &local.stack,
        &local.sdk,
        Invoker::InProcess(Arc::new(handlers)),
    );
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    let mut refused = ["out_of_range"; 2].map(str::to_owned).to_vec();
    refused.extend(["unregistered_device"; 6].map(str::to_owned));
    assert_eq!(rejection_reasons(&local).await, refused);
    assert_eq!(common::stored_readings(&local, "tag-new").await, 0);

    // The fix: the tag is registered. The first redrive dies after sending
    // its first batch and before deleting it.
    admin.assign(&["tag-new".into()], "acme").await.unwrap();
    let redrive = Redrive::for_local(&local.stack, &local.sdk, Sources::RefusedAndFailed).unwrap();
    let crashed = redrive
        .run(&RedriveOptions {
            wait_for_returns: Duration::ZERO,
            hold: HOLD,
            crash_after_sending: Some(1),
        })
        .await;
    assert!(crashed.is_err(), "{crashed:?}");
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    assert_eq!(
        common::stored_readings(&local, "tag-new").await,
        12,
        "the copies sent before the crash"
    );

    // Run again once what the dead run held is visible again, as the
    // operator would: the originals left behind are sent once more (their
    // returns deleted as duplicates); the still bad ones come back, once each.
    tokio::time::sleep(HOLD + Duration::from_secs(1)).await;
    let report = run_to_the_end(&redrive).await;
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    pump.stop().await;
    assert!(report.ingest_drained, "{report:?}");
    assert_eq!(report.redriven, 8, "{report:?}");
    assert_eq!(report.duplicates, 2, "{report:?}");
    assert_eq!(
        report.returned,
        [("out_of_range".to_owned(), 2)].into(),
        "{report:?}"
    );
    assert_eq!(
        common::stored_readings(&local, "tag-new").await,
        12,
        "stored once"
    );
    assert_eq!(common::stored_readings(&local, "tag-known").await, 0);
    assert_eq!(
        rejection_reasons(&local).await,
        ["out_of_range"; 2].map(str::to_owned).to_vec(),
        "only the still bad ones are left, once each"
    );
}

#[tokio::test]
async fn a_flooding_tag_is_held_to_its_budget_and_a_quarantine_redrive_stores_the_rest() {
    let local = LocalStack::start(&Options {
        parameter_overrides: [("DeviceReadingsPerMinute".to_owned(), "5".to_owned())].into(),
        ..Options::default()
    })
    .await
    .expect("local stack");
    // A tag in a publish loop: 30 readings stamped within one minute, one a
    // message; beside it a calm tag, one a minute.
    let minute = (geotag::clock::now_ms() / 60_000 - 5) * 60_000;
    for n in 0..30 {
        publish(
            &local,
            "tag-flood",
            json!([{"ts": minute + n * 1_000, "lat": 48.0, "lon": 2.0}]),
        )
        .await;
    }
    for n in 0..3 {
        publish(
            &local,
            "tag-calm",
            json!([{"ts": minute + n * 60_000, "lat": 48.1, "lon": 2.1}]),
        )
        .await;
    }
    let handlers = InProcess::for_stack(&local.stack, &local.sdk).unwrap();
    let pump = Pump::start(
        &local.stack,
        &local.sdk,
        Invoker::InProcess(Arc::new(handlers)),
    );
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    assert_eq!(
        common::stored_readings(&local, "tag-flood").await,
        5,
        "its budget"
    );
    assert_eq!(common::stored_readings(&local, "tag-calm").await, 3);
    assert_eq!(parked(&local).await, vec!["rate_exceeded".to_owned(); 25]);
    assert!(
        rejection_reasons(&local).await.is_empty(),
        "parked, not refused"
    );

    // Someone looked: the quarantine goes back through ingest, past the budget.
    let redrive = Redrive::for_local(&local.stack, &local.sdk, Sources::Quarantine).unwrap();
    let report = run_to_the_end(&redrive).await;
    pump.wait_drained(Duration::from_secs(120)).await.unwrap();
    pump.stop().await;
    assert_eq!((report.redriven, report.duplicates), (25, 0), "{report:?}");
    assert!(report.returned.is_empty(), "{report:?}");
    assert_eq!(common::stored_readings(&local, "tag-flood").await, 30);
    assert!(parked(&local).await.is_empty());
}
