//! The local IoT Core end to end: moto started by the test on a free loopback
//! port, the template provisioned into it, the CA and the broker started on
//! 127.0.0.1, tags provisioned as `geotag device provision` does, and real
//! MQTT clients (rumqttc) connecting over mutual TLS. Everything started here
//! is stopped when the test ends; nothing is skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use geotag_local_cloud::emulator::Emulator;
use geotag_local_cloud::project;
use geotag_local_cloud::provision::{LOCAL_STACK_NAME, Stack, provision};
use geotag_local_cloud::pump;
use geotag_local_cloud::template::Template;
use geotag_local_iot::broker::reason;
use geotag_local_iot::ca::LocalCa;
use geotag_local_iot::local::LocalIot;
use geotag_local_iot::provision::{Provisioned, revoke_device};
use geotag_runtime::FromEnvironment as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

struct Local {
    _emulator: Emulator,
    sdk: geotag_aws::clients::SdkConfig,
    stack: Stack,
    iot: LocalIot,
    dir: PathBuf,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn local(name: &str) -> Local {
    let root = project::root().expect("the checkout");
    let emulator = Emulator::start(&root).expect("moto must start for this test");
    let sdk = emulator.sdk_config().await;
    let template = Template::load(&root.join("template.yaml")).expect("template.yaml");
    let stack = provision(
        &template,
        &sdk,
        LOCAL_STACK_NAME,
        &geotag_local_cloud::provision::production_parameters(),
    )
    .await
    .expect("provisioning");
    let dir = std::env::temp_dir().join(format!("geotag-iot-{name}-{}", std::process::id()));
    let iot = LocalIot::start(&stack, &sdk, &dir)
        .await
        .expect("the broker must start");
    Local {
        _emulator: emulator,
        sdk,
        stack,
        iot,
        dir,
    }
}

/// What one MQTT session saw.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The broker acknowledged the publish.
    Acknowledged,
    /// The broker refused the connection (CONNACK with a refusal code).
    ConnectionRefused(String),
    /// The broker closed the connection (TLS failed, or a publish was refused).
    Closed(String),
}

fn client_config(ca_pem: &str, identity_dir: Option<&Path>) -> rustls::ClientConfig {
    geotag_local_iot::ca::client_tls_config(ca_pem, identity_dir).unwrap()
}

/// Connects as `client_id` with `tls` and publishes `payload` on `topic` (QoS 1).
async fn publish(
    port: u16,
    tls: rustls::ClientConfig,
    client_id: &str,
    topic: &str,
    payload: Vec<u8>,
) -> Outcome {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    options.set_max_packet_size(512 * 1024, 512 * 1024);
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break Outcome::Acknowledged,
            Ok(Ok(_)) => {}
            Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => {
                break Outcome::ConnectionRefused(format!("{code:?}"));
            }
            Ok(Err(error)) => break Outcome::Closed(error.to_string()),
            Err(_) => panic!("{client_id} on {topic}: no answer from the broker in 10 s"),
        }
    };
    let _ = client.disconnect().await;
    outcome
}

fn tls_of(local: &Local, tag: &Provisioned) -> rustls::ClientConfig {
    client_config(
        local.iot.ca.certificate_pem(),
        tag.certificate_file.parent(),
    )
}

fn reading(device_id: Option<&str>) -> Vec<u8> {
    let mut reading = serde_json::json!({"ts": geotag::clock::now_ms() - 1_000, "lat": 48.85, "lon": 2.35, "seq": 1});
    if let Some(device_id) = device_id {
        reading["device_id"] = device_id.into();
    }
    reading.to_string().into_bytes()
}

/// Everything in IngestQueue now, as the SQS event Lambda would get.
async fn ingest_queue(local: &Local) -> SqsEvent {
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let url = local.stack.reference("IngestQueue").unwrap();
    let arn = local.stack.attribute("IngestQueue", "Arn").unwrap();
    let mut event = SqsEvent::default();
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            return event;
        }
        event
            .records
            .extend(messages.iter().map(|m| pump::sqs_record(m, arn)));
    }
}

#[tokio::test]
async fn a_tag_publishes_on_its_own_topic_and_its_readings_are_stored() {
    let local = local("stored").await;
    let tag = local.iot.provision("tag-0001").await.unwrap();
    let port = local.iot.broker.port();

    // Its own reading, on its own topic; then one naming another tag.
    assert_eq!(
        publish(
            port,
            tls_of(&local, &tag),
            "tag-0001",
            "geotag/tag-0001/telemetry",
            reading(Some("tag-0001"))
        )
        .await,
        Outcome::Acknowledged
    );
    assert_eq!(
        publish(
            port,
            tls_of(&local, &tag),
            "tag-0001",
            "geotag/tag-0001/telemetry",
            reading(Some("tag-0002"))
        )
        .await,
        Outcome::Acknowledged,
        "the broker cannot read bodies: ingest refuses this one"
    );
    assert_eq!(local.iot.broker.published(), 2);

    let event = ingest_queue(&local).await;
    assert_eq!(event.records.len(), 2);
    let mut environment = local
        .stack
        .function("IngestFunction")
        .unwrap()
        .environment
        .clone();
    environment.insert("UNREGISTERED_DEVICES".into(), "admit".into());
    let config = geotag_ingest::Config::from_lookup(|name| environment.get(name).cloned()).unwrap();
    let ingest = geotag_ingest::on_aws(&local.sdk, &config);
    let outcome = geotag_ingest::process(
        &ingest,
        &geotag_ingest::IngestEvent::from(event).records,
        std::time::Instant::now() + Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(outcome.readings_stored, 1);
    assert_eq!(
        outcome.rejected.get(&geotag::Reason::DeviceIdMismatch),
        Some(&1)
    );

    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let items = dynamodb
        .scan()
        .table_name(local.stack.reference("TelemetryTable").unwrap())
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 1);
    let stored = geotag_aws::telemetry::reading_from_item(&items[0]).unwrap();
    assert_eq!(stored.device_id, "tag-0001");
    assert!(
        stored.received_at_ms.is_some(),
        "the broker's receive time came along"
    );
}

#[tokio::test]
async fn the_broker_refuses_what_the_certificate_and_the_policy_do_not_allow_and_counts_why() {
    let local = local("refused").await;
    let tag1 = local.iot.provision("tag-0001").await.unwrap();
    local.iot.provision("tag-0002").await.unwrap();
    let port = local.iot.broker.port();
    let ca = local.iot.ca.certificate_pem().to_owned();

    // Another tag's topic: the connection is closed, nothing published.
    assert!(matches!(
        publish(
            port,
            tls_of(&local, &tag1),
            "tag-0001",
            "geotag/tag-0002/telemetry",
            reading(None)
        )
        .await,
        Outcome::Closed(_)
    ));
    // Another tag's client id with this tag's certificate.
    assert!(matches!(
        publish(
            port,
            tls_of(&local, &tag1),
            "tag-0002",
            "geotag/tag-0002/telemetry",
            reading(None)
        )
        .await,
        Outcome::ConnectionRefused(_)
    ));
    // No certificate at all, and one signed by a CA the broker does not know.
    assert!(matches!(
        publish(
            port,
            client_config(&ca, None),
            "tag-0001",
            "geotag/tag-0001/telemetry",
            reading(None)
        )
        .await,
        Outcome::Closed(_)
    ));
    let stranger_ca = LocalCa::create().unwrap();
    let (key, request) = geotag_local_iot::ca::key_and_request("tag-0001").unwrap();
    let forged = local.dir.join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::write(
        forged.join("certificate.pem"),
        stranger_ca.sign_request(&request).unwrap(),
    )
    .unwrap();
    std::fs::write(forged.join("private.key"), key.serialize_pem()).unwrap();
    assert!(matches!(
        publish(
            port,
            client_config(&ca, Some(&forged)),
            "tag-0001",
            "geotag/tag-0001/telemetry",
            reading(None)
        )
        .await,
        Outcome::Closed(_)
    ));
    // A payload over IoT Core's 128 KB.
    let huge = vec![b' '; 129 * 1024];
    assert!(matches!(
        publish(
            port,
            tls_of(&local, &tag1),
            "tag-0001",
            "geotag/tag-0001/telemetry",
            huge
        )
        .await,
        Outcome::Closed(_)
    ));
    // Revoked: refused at the next connect.
    assert_eq!(
        publish(
            port,
            tls_of(&local, &tag1),
            "tag-0001",
            "geotag/tag-0001/telemetry",
            reading(None)
        )
        .await,
        Outcome::Acknowledged
    );
    assert_eq!(
        revoke_device(&local.iot.iot, "tag-0001")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        publish(
            port,
            tls_of(&local, &tag1),
            "tag-0001",
            "geotag/tag-0001/telemetry",
            reading(None)
        )
        .await,
        Outcome::ConnectionRefused(_)
    ));

    let refusals = local.iot.broker.refusals();
    assert_eq!(
        refusals.get(reason::PUBLISH_DENIED),
        1,
        "{:?}",
        refusals.by_reason()
    );
    assert_eq!(
        refusals.get(reason::CLIENT_ID_NOT_THING),
        1,
        "{:?}",
        refusals.by_reason()
    );
    assert_eq!(
        refusals.get(reason::TLS_HANDSHAKE),
        2,
        "{:?}",
        refusals.by_reason()
    );
    assert_eq!(
        refusals.get(reason::PAYLOAD_TOO_LARGE),
        1,
        "{:?}",
        refusals.by_reason()
    );
    assert_eq!(
        refusals.get(reason::CERTIFICATE_NOT_ACTIVE),
        1,
        "{:?}",
        refusals.by_reason()
    );
    // Only the one allowed publish reached SNS.
    assert_eq!(local.iot.broker.published(), 1);
    assert_eq!(ingest_queue(&local).await.records.len(), 1);
}
