//! The spoofing the demo attempts, and what must become of each attempt:
//!
//! | attempt                                          | refused by | as                         |
//! |--------------------------------------------------|------------|----------------------------|
//! | a tag publishes on another tag's topic           | the broker | `publish_denied_by_policy` |
//! | a client with no certificate connects            | the broker | `tls_handshake_failed`     |
//! | a tag's reading names another tag                | ingest     | `device_id_mismatch`       |
//! | a tag's reading is stamped an hour ahead          | ingest     | `timestamp_in_future`      |
//!
//! None is stored, and none raises or mutes an alert: the readings audit
//! finds each ingest refusal in the dead-letter queue with its reason, and
//! the alert audit finds exactly the alerts the honest readings deserve.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use geotag::Reason;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;

use crate::mqtt::{options, tls_config, topic_of};
use crate::simulate::Message;

/// The broker refusals the attempts below must cause, by reason.
pub const BROKER_REFUSALS: [(&str, u64); 2] = [
    (geotag_local_iot::broker::reason::PUBLISH_DENIED, 1),
    (geotag_local_iot::broker::reason::TLS_HANDSHAKE, 1),
];

/// Messages `liar` sends over its own connection that ingest must refuse.
pub fn ingest_spoofs(liar: &str, victim: &str, now_ms: i64) -> Vec<Message> {
    vec![
        Message {
            thing: liar.to_owned(),
            payload: json!({"device_id": victim, "ts": now_ms - 60_000, "lat": 48.85, "lon": 2.35})
                .to_string(),
            expected_rejection: Some(Reason::DeviceIdMismatch),
            send_ms: now_ms,
        },
        Message {
            thing: liar.to_owned(),
            payload:
                json!({"device_id": liar, "ts": now_ms + 3_600_000, "lat": 48.85, "lon": 2.35})
                    .to_string(),
            expected_rejection: Some(Reason::TimestampInFuture),
            send_ms: now_ms,
        },
    ]
}

/// The attempts the broker must refuse; `Ok(true)` when each was refused.
pub async fn broker_spoofs(
    port: u16,
    ca_pem: &str,
    devices_dir: &Path,
    liar: &str,
    victim: &str,
) -> Result<bool> {
    let on_victims_topic = attempt(
        options(
            liar,
            port,
            tls_config(ca_pem, Some(&devices_dir.join(liar)))?,
        ),
        &topic_of(victim),
    )
    .await;
    let without_certificate = attempt(
        options(victim, port, tls_config(ca_pem, None)?),
        &topic_of(victim),
    )
    .await;
    Ok(!on_victims_topic && !without_certificate)
}

/// Whether the broker acknowledged a publish on `topic`.
async fn attempt(options: rumqttc::MqttOptions, topic: &str) -> bool {
    let (client, mut events) = AsyncClient::new(options, 10);
    let payload = json!({"ts": geotag::clock::now_ms(), "lat": 48.85, "lon": 2.35}).to_string();
    if client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .is_err()
    {
        return false;
    }
    let acknowledged = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break false,
        }
    };
    let _ = client.disconnect().await;
    acknowledged
}
