//! The fleet over MQTT, as real tags publish: one connection per tag, over
//! mutual TLS with the tag's own certificate, QoS 1 on the tag's own topic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::Mutex;

pub use geotag_local_iot::ca::client_tls_config as tls_config;

use crate::simulate::{Message, Pace};

/// The telemetry topic of `thing`, as template.yaml's policy and rule name it.
pub fn topic_of(thing: &str) -> String {
    format!("geotag/{thing}/telemetry")
}

/// MQTT options for `client_id` at the broker on 127.0.0.1:`port`.
pub fn options(client_id: &str, port: u16, tls: rustls::ClientConfig) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    options.set_keep_alive(Duration::from_secs(30));
    // rumqttc refuses to send more than 10 KB by default; IoT Core takes 128 KB.
    let max = geotag_local_iot::broker::MAX_PAYLOAD_BYTES + 1024;
    options.set_max_packet_size(max, max);
    options
}

/// The tags' connections: one client and event loop per tag.
pub struct Fleet {
    clients: BTreeMap<String, AsyncClient>,
    acknowledged: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Connects every tag of `things` with its files under `devices_dir/THING/`.
    pub fn connect<'a>(
        port: u16,
        ca_pem: &str,
        devices_dir: &Path,
        things: impl IntoIterator<Item = &'a str>,
    ) -> Result<Fleet> {
        let acknowledged = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut clients = BTreeMap::new();
        let mut loops = Vec::new();
        for thing in things {
            let tls = tls_config(ca_pem, Some(&devices_dir.join(thing)))?;
            let mut options = options(thing, port, tls);
            // A tag has few messages in flight; a fleet's worth of unacknowledged
            // publishes at once only queues at the emulator behind the broker.
            options.set_inflight(5);
            let (client, mut events) = AsyncClient::new(options, 10);
            let mut network = events.network_options();
            // The broker asks the emulator about each certificate; a fleet
            // connecting at once waits its turn.
            network.set_connection_timeout(60);
            events.set_network_options(network);
            let (acknowledged, failures, thing_name) =
                (acknowledged.clone(), failures.clone(), thing.to_owned());
            loops.push(tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(error) => {
                            failures.lock().await.push(format!("{thing_name}: {error}"));
                            return;
                        }
                    }
                }
            }));
            clients.insert(thing.to_owned(), client);
        }
        Ok(Fleet {
            clients,
            acknowledged,
            failures,
            loops,
        })
    }

    /// Publishes each message on its tag's topic (QoS 1), in plan order, and
    /// waits for the broker to acknowledge all of them.
    pub async fn publish(
        &self,
        messages: &[Message],
        progress: bool,
        pace: Option<&Pace>,
    ) -> Result<()> {
        let bar = crate::simulate::progress_bar(progress, messages.len(), " over MQTT")?;
        let start = self.acknowledged.load(Ordering::Relaxed);
        for (index, message) in messages.iter().enumerate() {
            if let Some(pace) = pace.filter(|_| index % 200 == 0) {
                pace.hold().await?;
            }
            let client = self
                .clients
                .get(&message.thing)
                .ok_or_else(|| anyhow!("{} has no connection", message.thing))?;
            client
                .publish(
                    topic_of(&message.thing),
                    QoS::AtLeastOnce,
                    false,
                    message.payload.clone().into_bytes(),
                )
                .await?;
            self.check_failures().await?;
            bar.set_position(self.acknowledged.load(Ordering::Relaxed) - start);
        }
        let target = start + messages.len() as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while self.acknowledged.load(Ordering::Relaxed) < target {
            self.check_failures().await?;
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the broker acknowledged {} of {} messages in 120 s",
                    self.acknowledged.load(Ordering::Relaxed) - start,
                    messages.len()
                );
            }
            bar.set_position(self.acknowledged.load(Ordering::Relaxed) - start);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bar.finish_and_clear();
        Ok(())
    }

    async fn check_failures(&self) -> Result<()> {
        let failures = self.failures.lock().await;
        if failures.is_empty() {
            return Ok(());
        }
        bail!(
            "{} tag connection(s) failed: {}",
            failures.len(),
            failures.join("; ")
        )
    }

    pub async fn disconnect(self) {
        for client in self.clients.values() {
            let _ = client.disconnect().await;
        }
        for task in self.loops {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}
