//! What the emulator tests of alerts share: a queue to receive alerts in,
//! and the depot geofence their tags drive through.

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
