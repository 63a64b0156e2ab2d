//! Backlogs through the whole local stack (SNS, ingest, Telemetry's stream,
//! stats, DeviceStats' stream, alerts), with the template's batch sizes: a tag
//! back from a day offline sends its 1,440 readings in one message, twice,
//! and every geofence crossing of that day is alerted once; a gateway's
//! message of 2,500 readings is stored whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use geotag_local_cloud::invoker::{InProcess, Invoker};
use geotag_local_cloud::pump::Pump;
use geotag_local_cloud::stack::{LocalStack, Options};
use geotag_operator::registry::RegistryAdmin;
use geotag_simulation::alert_audit::Received;
use serde_json::json;

mod common;
use common::DEPOT;

const MINUTE_MS: i64 = 60_000;

/// A tag's buffered readings as one batch payload: one a minute for `minutes`
/// minutes up to `end_ms`, at the depot during `inside` (minutes from the
/// start) and 3.7 km east of it otherwise.
fn backlog(minutes: i64, end_ms: i64, inside: &[std::ops::Range<i64>]) -> String {
    let readings: Vec<_> = (0..minutes)
        .map(|minute| {
            let at_depot = inside.iter().any(|visit| visit.contains(&minute));
            json!({
                "ts": end_ms - (minutes - 1 - minute) * MINUTE_MS,
                "lat": DEPOT.0,
                "lon": if at_depot { DEPOT.1 } else { DEPOT.1 + 0.05 },
                "speed": 12.5,
                "battery": 81.0,
            })
        })
        .collect();
    json!({ "readings": readings }).to_string()
}

#[tokio::test]
async fn a_day_offline_is_stored_whole_and_each_of_its_crossings_alerted_once() {
    let local = LocalStack::start(&Options::default())
        .await
        .expect("local stack");
    let admin = RegistryAdmin::for_local(&local.stack, &local.sdk).unwrap();
    common::put_depot(&admin).await;
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let (inbox, inbox_arn) = common::inbox(&local, "backlog").await;
    aws_sdk_sns::Client::new(&local.sdk)
        .subscribe()
        .topic_arn(&admin.alerts_topic_arn)
        .protocol("sqs")
        .endpoint(&inbox_arn)
        .attributes("FilterPolicy", geotag::alert_filter::EVERY_CUSTOMER_FILTER)
        .send()
        .await
        .unwrap();

    // A day at one reading a minute, through the depot three times: about
    // 100 KB, a message a tag can send over MQTT (IoT Core takes 128 KB).
    let now = geotag::clock::now_ms();
    let day = backlog(1_440, now - MINUTE_MS, &[200..260, 700..730, 1_300..1_380]);
    assert!(day.len() < geotag_local_iot::broker::MAX_PAYLOAD_BYTES);
    // A gateway's backlog: 2,500 readings, 180 KB, too big for MQTT and
    // under SNS's 256 KiB once base64 in the edge envelope.
    let gateway = backlog(2_500, now - MINUTE_MS, &[]);
    assert!(gateway.len() > 128 * 1024);
    common::publish(&local, "tag-day", &day).await;
    common::publish(&local, "tag-gateway", &gateway).await;
    // The tag's upload retried: the same readings once more.
    common::publish(&local, "tag-day", &day).await;

    let handlers = InProcess::for_stack(&local.stack, &local.sdk).unwrap();
    let pump = Pump::start(
        &local.stack,
        &local.sdk,
        Invoker::InProcess(Arc::new(handlers)),
    );
    pump.wait_drained(Duration::from_secs(600)).await.unwrap();
    let pump_stats = pump.stats.snapshot();
    pump.stop().await;

    assert_eq!(common::stored_readings(&local, "tag-day").await, 1_440);
    assert_eq!(common::stored_readings(&local, "tag-gateway").await, 2_500);
    for queue in ["IngestRejections", "IngestDLQ"] {
        let depth =
            geotag_local_cloud::pump::queue_depth(&sqs, local.stack.reference(queue).unwrap())
                .await
                .unwrap();
        assert_eq!(depth, 0, "nothing in {queue}: {pump_stats:?}");
    }

    let mut alerts: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = Vec::new();
    for message in geotag_local_cloud::pump::read_whole_queue(&sqs, &inbox)
        .await
        .unwrap()
    {
        let alert = Received::of_sqs_body(message.body().unwrap()).unwrap();
        assert_eq!(alert.device_id, "tag-day", "{alert:?}");
        *alerts.entry(alert.kind).or_default() += 1;
        ids.push(alert.id);
    }
    assert_eq!(
        alerts,
        BTreeMap::from([("geofence_enter".into(), 3), ("geofence_exit".into(), 3)]),
        "every crossing of the day, once: {pump_stats:?}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
}
