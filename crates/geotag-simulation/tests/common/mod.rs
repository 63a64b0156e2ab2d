//! What the whole-stack emulator tests share: a tag's message published as
//! the edge publishes it, a queue to receive alerts in, and the depot
//! geofence their tags drive through.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use geotag::geofence::{Geofence, Shape};
use geotag_local_cloud::stack::LocalStack;
use geotag_operator::registry::RegistryAdmin;

pub const DEPOT: (f64, f64) = (48.8606, 2.3376);

/// A queue for a test to subscribe to AlertsTopic: its URL and ARN.
pub async fn inbox(local: &LocalStack, name: &str) -> (String, String) {
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let url = sqs
        .create_queue()
        .queue_name(format!("test-inbox-{name}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap();
    (url, arn)
}

/// A zone of nobody's, 500 m around [`DEPOT`], in the stack's registry.
pub async fn put_depot(admin: &RegistryAdmin) {
    admin
        .put_geofence(&Geofence {
            id: "depot".into(),
            name: "Central depot".into(),
            customer_id: None,
            shape: Shape::Circle {
                lat: DEPOT.0,
                lon: DEPOT.1,
                radius_m: 500.0,
            },
        })
        .await
        .unwrap();
}

/// Publishes `payload` as `thing`'s message to TelemetryTopic, in the edge
/// envelope IoT Core's rule gives it.
pub async fn publish(local: &LocalStack, thing: &str, payload: &str) {
    let body = geotag::edge_envelope(thing, geotag::clock::now_ms(), payload.as_bytes());
    assert!(
        body.len() <= 256 * 1024,
        "SNS takes it: {} bytes",
        body.len()
    );
    aws_sdk_sns::Client::new(&local.sdk)
        .publish()
        .topic_arn(local.stack.reference("TelemetryTopic").unwrap())
        .message(body)
        .send()
        .await
        .expect("SNS accepts the message");
}

/// How many readings of `device` Telemetry holds.
pub async fn stored_readings(local: &LocalStack, device: &str) -> i32 {
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let mut count = 0;
    let mut start = None;
    loop {
        let page = dynamodb
            .query()
            .table_name(local.stack.reference("TelemetryTable").unwrap())
            .key_condition_expression("device_id = :d")
            .expression_attribute_values(
                ":d",
                aws_sdk_dynamodb::types::AttributeValue::S(device.into()),
            )
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        count += page.count;
        start = page.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}
