//! The ingest function against the emulator: moto started on a free port by
//! each test, the template provisioned into it, the handler invoked in-process
//! with the real DynamoDB and SQS adapters. A test that cannot start moto fails;
//! none is skipped.

use std::collections::{BTreeMap, HashMap};

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use geotag_aws::telemetry::{attr, reading_from_item};
use geotag_ingest::{Config, handle, on_aws};
use geotag_local_cloud::emulator::Emulator;
use geotag_local_cloud::project;
use geotag_local_cloud::provision::{LOCAL_STACK_NAME, Stack, provision};
use geotag_local_cloud::pump;
use geotag_local_cloud::template::Template;
use geotag_runtime::FromEnvironment as _;
use lambda_runtime::{Context, LambdaEvent};

use geotag_ingest::AwsIngest;

/// 2026-11-20T08:15:00Z: the samples' readings were taken from 08:00, and
/// the broker received them at 08:10.
fn sample_clock() -> i64 {
    1_795_162_500_000
}

/// The tags of the sample events and of the tests below, in the registry.
const REGISTERED: [&str; 15] = [
    "tag-0001", "tag-0002", "tag-0003", "tag-0004", "tag-0005", "tag-0006", "tag-0007", "tag-0008",
    "tag-0009", "tag-0010", "tag-0011", "tag-0012", "tag-0013", "tag-0100", "tag-0101",
];

struct Local {
    _emulator: Emulator,
    sdk: geotag_aws::clients::SdkConfig,
    stack: Stack,
}

async fn local() -> Local {
    let root = project::root().expect("the checkout");
    let emulator = Emulator::start(&root).expect("moto must start for this test");
    let sdk = emulator.sdk_config().await;
    let template = Template::load(&root.join("template.yaml")).expect("template.yaml");
    // The template's defaults, as production runs: unregistered tags are refused.
    let stack = provision(
        &template,
        &sdk,
        LOCAL_STACK_NAME,
        &geotag_local_cloud::provision::production_parameters(),
    )
    .await
    .expect("provisioning");
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    for device in REGISTERED {
        dynamodb
            .put_item()
            .table_name(stack.reference("DevicesTable").unwrap())
            .set_item(Some(geotag_aws::registry::device_item(device, "acme")))
            .send()
            .await
            .expect("registering a tag");
    }
    Local {
        _emulator: emulator,
        sdk,
        stack,
    }
}

impl Local {
    /// The ingest function configured from the template's own environment.
    fn ingest(&self, overrides: &[(&str, &str)]) -> AwsIngest {
        let mut environment = self
            .stack
            .function("IngestFunction")
            .unwrap()
            .environment
            .clone();
        for (name, value) in overrides {
            environment.insert((*name).to_owned(), (*value).to_owned());
        }
        let config = Config::from_lookup(|name| environment.get(name).cloned()).expect("config");
        let mut ingest = on_aws(&self.sdk, &config);
        ingest.clock = sample_clock;
        ingest
    }

    fn table(&self) -> &str {
        self.stack.reference("TelemetryTable").unwrap()
    }

    async fn items(&self) -> Vec<HashMap<String, AttributeValue>> {
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(self.table())
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        items.sort_by_key(|item| {
            (
                item[attr::DEVICE_ID].as_s().unwrap().clone(),
                item[attr::SORT_KEY].as_s().unwrap().clone(),
            )
        });
        items
    }

    /// Receives everything in a queue (up to `limit` messages), deleting nothing.
    async fn drain(&self, queue: &str, limit: usize) -> Vec<aws_sdk_sqs::types::Message> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let url = self.stack.reference(queue).unwrap();
        let mut messages = Vec::new();
        while messages.len() < limit {
            let batch = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .visibility_timeout(30)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            messages.extend(batch);
        }
        messages
    }
}

fn sample(name: &str) -> SqsEvent {
    let path = project::root().unwrap().join("events/ingest").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn invoke(ingest: &AwsIngest, event: SqsEvent) -> Vec<String> {
    handle(ingest, LambdaEvent::new(event.into(), Context::default()))
        .await
        .expect("the handler answers")
        .batch_item_failures
        .into_iter()
        .map(|failure| failure.item_identifier)
        .collect()
}

fn message_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> String {
    message
        .message_attributes()
        .and_then(|attributes| attributes.get(name))
        .and_then(|value| value.string_value())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn sample_events_are_stored_and_refusals_dead_lettered_with_reasons() {
    let local = local().await;
    let ingest = local.ingest(&[]);
    for name in [
        "valid-batch.json",
        "sns-envelope.json",
        "multi-reading.json",
        "bad-records.json",
    ] {
        assert_eq!(
            invoke(&ingest, sample(name)).await,
            Vec::<String>::new(),
            "{name}"
        );
    }

    let items = local.items().await;
    // 3 + 2 + 6 + (2 valid of the partly bad batch + 1 good reading sent twice)
    assert_eq!(items.len(), 14);
    let first = reading_from_item(&items[0]).unwrap();
    assert_eq!(first.device_id, "tag-0001");
    assert_eq!(first.seq, Some(100));
    assert_eq!(
        items[0][attr::SORT_KEY].as_s().unwrap(),
        "2026-11-20T08:00:00.000Z#00000000000000000100"
    );
    assert_eq!(
        items[0][attr::EXPIRES_AT].as_n().unwrap(),
        &(1_795_161_600 + 30 * 86_400).to_string(),
        "TTL is reading time plus the template's RetentionDays"
    );

    let letters: BTreeMap<String, (String, String, String)> = local
        .drain("IngestRejections", 20)
        .await
        .iter()
        .map(|m| {
            (
                attribute(m, "source_message_id"),
                (
                    attribute(m, "reason"),
                    attribute(m, "field"),
                    attribute(m, "stored_readings"),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, String, String)> = [
        (32, "malformed_json", "payload", "0"),
        (33, "out_of_range", "payload.lat", "0"),
        (34, "device_id_mismatch", "payload.device_id", "0"),
        (35, "invalid_device_id", "payload.device_id", "0"),
        (36, "out_of_range", "payload.readings[1].lat", "2"),
        (38, "malformed_json", "Message", "0"),
        (39, "unauthenticated", "thing_name", "0"),
        (40, "timestamp_in_future", "payload.ts", "0"),
    ]
    .into_iter()
    .map(|(n, reason, field, stored)| (message_id(n), (reason.into(), field.into(), stored.into())))
    .collect();
    assert_eq!(letters, expected);
}

#[tokio::test]
async fn a_duplicate_delivery_leaves_one_item() {
    let local = local().await;
    let ingest = local.ingest(&[]);
    for _ in 0..2 {
        assert!(invoke(&ingest, sample("valid-batch.json")).await.is_empty());
    }
    // The same readings, once as raw delivery and once through the envelope.
    let mut event = sample("valid-batch.json");
    for record in &mut event.records {
        let message = record.body.take().unwrap();
        record.body = Some(
            serde_json::json!({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                               "MessageId": "m", "Message": message})
            .to_string(),
        );
    }
    assert!(invoke(&ingest, event).await.is_empty());
    assert_eq!(local.items().await.len(), 3);
}

#[tokio::test]
async fn store_failures_are_batch_item_failures_and_invalid_messages_are_still_done() {
    let local = local().await;
    let ingest = local.ingest(&[("TELEMETRY_TABLE", "no-such-table")]);
    let mut failures = invoke(&ingest, sample("bad-records.json")).await;
    failures.sort();
    // Records with a valid reading cannot be stored; wholly invalid ones are dead-lettered.
    assert_eq!(failures, [message_id(31), message_id(36), message_id(37)]);
    let reasons: Vec<_> = local
        .drain("IngestRejections", 20)
        .await
        .iter()
        .map(|m| attribute(m, "source_message_id"))
        .collect();
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    assert!(
        !reasons.contains(&message_id(36)),
        "36 waits for its retry before its DLQ copy"
    );
}

#[tokio::test]
async fn sns_fan_out_reaches_the_ingest_queue_and_redrive_dead_letters_what_keeps_failing() {
    let local = local().await;
    let sns = aws_sdk_sns::Client::new(&local.sdk);
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let topic = local.stack.reference("TelemetryTopic").unwrap();
    let queue_url = local.stack.reference("IngestQueue").unwrap().to_owned();
    let queue_arn = local
        .stack
        .attribute("IngestQueue", "Arn")
        .unwrap()
        .to_owned();

    // The template's redrive policy reached the queue.
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["maxReceiveCount"].as_u64(), Some(5));
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "180");

    let single =
        r#"{"device_id":"tag-0100","ts":"2026-11-20T08:01:00Z","lat":52.52,"lon":13.405,"seq":1}"#;
    let batch = r#"{"device_id":"tag-0101","readings":[{"ts":1795161660000,"lat":52.5,"lon":13.4,"seq":1},{"ts":1795161690000,"lat":52.51,"lon":13.41,"seq":2}]}"#;
    // Published as a gateway does, received at 08:02.
    for (thing, payload) in [("tag-0100", single), ("tag-0101", batch)] {
        sns.publish()
            .topic_arn(topic)
            .message(geotag::edge_envelope(
                thing,
                1_795_161_720_000,
                payload.as_bytes(),
            ))
            .send()
            .await
            .unwrap();
    }

    // Raw delivery: the bodies are the edge envelopes, not SNS envelopes.
    let received = local.drain("IngestQueue", 10).await;
    assert_eq!(received.len(), 2);
    assert!(
        received
            .iter()
            .all(|m| m.body().unwrap().contains("\"thing_name\":\"tag-010"))
    );

    // A table outage: every record fails, stays in the queue, and after
    // maxReceiveCount receives the redrive policy moves it to the DLQ.
    let broken = local.ingest(&[("TELEMETRY_TABLE", "no-such-table")]);
    let mut event = SqsEvent::default();
    event.records = received
        .iter()
        .map(|m| pump::sqs_record(m, &queue_arn))
        .collect();
    assert_eq!(invoke(&broken, event).await.len(), 2);
    let mut in_flight = received.clone();
    for receive in 2..=5 {
        make_visible(&sqs, &queue_url, &in_flight).await;
        in_flight = local.drain("IngestQueue", 10).await;
        assert_eq!(
            in_flight.len(),
            2,
            "redelivered while under maxReceiveCount"
        );
        for message in &in_flight {
            let count = &message.attributes().unwrap()
                [&MessageSystemAttributeName::ApproximateReceiveCount];
            assert_eq!(count, &receive.to_string());
        }
    }
    make_visible(&sqs, &queue_url, &in_flight).await;
    assert!(
        local.drain("IngestQueue", 10).await.is_empty(),
        "moved after 5 receives"
    );
    let dead = local.drain("IngestDLQ", 10).await;
    assert_eq!(dead.len(), 2);

    // Once the table is back, redriving the DLQ's messages stores the readings.
    let ingest = local.ingest(&[]);
    let dlq_arn = local.stack.attribute("IngestDLQ", "Arn").unwrap();
    let mut event = SqsEvent::default();
    event.records = dead.iter().map(|m| pump::sqs_record(m, dlq_arn)).collect();
    assert!(invoke(&ingest, event).await.is_empty());
    assert_eq!(local.items().await.len(), 3);
}

/// Ends the visibility timeout of `messages` now, as if it had run out.
async fn make_visible(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[aws_sdk_sqs::types::Message],
) {
    for message in messages {
        sqs.change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(message.receipt_handle().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_tag_missing_from_the_registry_is_refused_unless_the_stack_admits_it() {
    let local = local().await;
    let unknown = serde_json::json!({
        "Records": [{
            "messageId": "unknown-tag",
            "body": geotag::edge_envelope(
                "tag-9999",
                1_795_162_200_000,
                br#"{"ts":1795162100000,"lat":48.85,"lon":2.35}"#,
            ),
        }]
    });
    let event: SqsEvent = serde_json::from_value(unknown).unwrap();

    let refusing = local.ingest(&[]);
    assert!(invoke(&refusing, event.clone()).await.is_empty());
    assert!(local.items().await.is_empty());
    let letters = local.drain("IngestRejections", 10).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            attribute(&letters[0], "reason"),
            attribute(&letters[0], "field")
        ),
        ("unregistered_device".to_owned(), "thing_name".to_owned())
    );

    let admitting = local.ingest(&[("UNREGISTERED_DEVICES", "admit")]);
    assert!(invoke(&admitting, event).await.is_empty());
    let items = local.items().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0][attr::DEVICE_ID].as_s().unwrap(), "tag-9999");
    assert_eq!(
        items[0][attr::RECEIVED_AT].as_n().unwrap(),
        "1795162200000",
        "the edge's receive time is stored with the reading"
    );
}
