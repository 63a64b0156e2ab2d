//! The fleet over MQTT, as real tags publish: one connection per tag, over
//! mutual TLS with the tag's own certificate, QoS 1 on the tag's own topic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Request,
    TlsConfiguration, Transport,
};
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

/// Attempts in a row a tag makes to get its connection back before it gives
/// up; a refusal by the broker is never retried.
const RECONNECT_ATTEMPTS: u32 = 6;

/// One tag's event loop. A real tag whose connection drops (a keep-alive
/// unanswered in time, a reset) connects again and sends what the broker had
/// not acknowledged: QoS 1 is at least once, and the pipeline drops the
/// copies. The broker keeps no sessions (IoT Core keeps them only for
/// persistent sessions, which the tags do not ask for), so rumqttc forgets
/// those messages on the new connection; and it would send its own leftovers
/// past the in-flight limit, reusing packet ids still in flight. The loop
/// takes them over and publishes them again through the client, in order.
struct TagLoop {
    thing: String,
    client: AsyncClient,
    acknowledged: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl TagLoop {
    async fn run(self, mut events: EventLoop) {
        let mut unacknowledged = Vec::new();
        let mut failed_attempts = 0u32;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    self.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failed_attempts = 0;
                    self.publish_again(std::mem::take(&mut unacknowledged));
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return self.fail(format!("refused by the broker: {code:?}")).await;
                }
                Err(error) => {
                    failed_attempts += 1;
                    if failed_attempts > RECONNECT_ATTEMPTS {
                        return self
                            .fail(format!(
                                "{error} ({RECONNECT_ATTEMPTS} reconnections failed)"
                            ))
                            .await;
                    }
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    for request in events.pending.drain(..) {
                        match request {
                            Request::Publish(publish) => unacknowledged.push(publish),
                            // The fleet was disconnecting when the connection went.
                            Request::Disconnect(_) => return,
                            _ => {}
                        }
                    }
                    let backoff = Duration::from_millis(500 << failed_attempts.min(5));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Publishes `messages` again on a task of their own: the client's queue
    /// is bounded and this loop is what empties it.
    fn publish_again(&self, messages: Vec<Publish>) {
        if messages.is_empty() {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            for message in messages {
                let sent = client
                    .publish_bytes(message.topic, message.qos, message.retain, message.payload)
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        });
    }

    async fn fail(&self, reason: String) {
        self.failures
            .lock()
            .await
            .push(format!("{}: {reason}", self.thing));
    }
}

/// The tags' connections: one client and event loop per tag.
pub struct Fleet {
    clients: BTreeMap<String, AsyncClient>,
    acknowledged: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
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
        let reconnects = Arc::new(AtomicU64::new(0));
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
            let tag = TagLoop {
                thing: thing.to_owned(),
                client: client.clone(),
                acknowledged: acknowledged.clone(),
                reconnects: reconnects.clone(),
                failures: failures.clone(),
            };
            loops.push(tokio::spawn(tag.run(events)));
            clients.insert(thing.to_owned(), client);
        }
        Ok(Fleet {
            clients,
            acknowledged,
            reconnects,
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
            if let Some(pace) = pace {
                if index % 200 == 0 {
                    pace.hold().await?;
                }
                pace.until(message.send_ms).await;
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

    /// Connections the tags lost and made again (their unacknowledged
    /// messages were sent again).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::task::JoinHandle;

    /// A TCP relay between the tags and the broker that can hold what the
    /// tags send and then cut every connection, as a mobile network does to
    /// a tag that drives into a tunnel.
    struct Relay {
        port: u16,
        holding: Arc<AtomicBool>,
        connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
        accepting: JoinHandle<()>,
    }

    impl Relay {
        async fn start(broker_port: u16) -> Relay {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let holding = Arc::new(AtomicBool::new(false));
            let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (held, tasks) = (holding.clone(), connections.clone());
            let accepting = tokio::spawn(async move {
                while let Ok((tag, _)) = listener.accept().await {
                    let broker = tokio::net::TcpStream::connect(("127.0.0.1", broker_port))
                        .await
                        .expect("the broker accepts");
                    let (mut from_tag, mut to_tag) = tag.into_split();
                    let (mut from_broker, mut to_broker) = broker.into_split();
                    let held = held.clone();
                    let upstream = tokio::spawn(async move {
                        let mut buffer = vec![0; 16 * 1024];
                        while let Ok(read @ 1..) = from_tag.read(&mut buffer).await {
                            while held.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            if to_broker.write_all(&buffer[..read]).await.is_err() {
                                return;
                            }
                        }
                    });
                    let downstream = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_broker, &mut to_tag).await;
                    });
                    let mut tasks = tasks.lock().unwrap();
                    tasks.push(upstream);
                    tasks.push(downstream);
                }
            });
            Relay {
                port,
                holding,
                connections,
                accepting,
            }
        }

        fn hold(&self) {
            self.holding.store(true, Ordering::Relaxed);
        }

        /// Drops every connection (and what it held); new ones flow freely.
        fn cut(&self) {
            for task in self.connections.lock().unwrap().drain(..) {
                task.abort();
            }
            self.holding.store(false, Ordering::Relaxed);
        }
    }

    impl Drop for Relay {
        fn drop(&mut self) {
            self.cut();
            self.accepting.abort();
        }
    }

    fn readings(things: &[&str], count: usize) -> Vec<Message> {
        let now = geotag::clock::now_ms();
        (0..count)
            .flat_map(|seq| {
                things.iter().map(move |thing| Message {
                    thing: (*thing).to_owned(),
                    payload: format!(
                        r#"{{"device_id":"{thing}","ts":{},"lat":48.85,"lon":2.35,"seq":{seq}}}"#,
                        now - 60_000 + seq as i64
                    ),
                    expected_rejection: None,
                    send_ms: now,
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_whose_connection_drops_reconnects_and_sends_what_was_not_acknowledged() {
        let local = geotag_local_cloud::stack::LocalStack::start(&Default::default())
            .await
            .expect("moto and the stack must start for this test");
        let state = tempfile::tempdir().unwrap();
        let iot = geotag_local_iot::local::LocalIot::start(&local.stack, &local.sdk, state.path())
            .await
            .expect("the broker must start");
        let things = ["tag-0001", "tag-0002"];
        for thing in things {
            iot.provision(thing).await.unwrap();
        }
        let relay = Relay::start(iot.broker.port()).await;
        let fleet = Fleet::connect(
            relay.port,
            iot.ca.certificate_pem(),
            &iot.state_dir.join("devices"),
            things,
        )
        .unwrap();

        // Connected and flowing: one reading each, acknowledged.
        fleet
            .publish(&readings(&things, 1), false, None)
            .await
            .unwrap();
        assert_eq!((iot.broker.published(), fleet.reconnects()), (2, 0));

        // Then eight each while the network holds them, and the connections
        // drop with five of each tag's in flight and three still queued.
        relay.hold();
        let in_the_tunnel = readings(&things, 8);
        let tunnel = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            relay.cut();
        };
        let (published, ()) = tokio::join!(
            tokio::time::timeout(
                Duration::from_secs(90),
                fleet.publish(&in_the_tunnel, false, None)
            ),
            tunnel
        );
        published
            .expect("every reading is acknowledged after the reconnection")
            .unwrap();
        assert!(
            fleet.reconnects() >= 2,
            "{} reconnections",
            fleet.reconnects()
        );
        // Nothing held reached the broker before the cut, so each reading
        // went through the rule exactly once, on the new connections.
        assert_eq!(iot.broker.published(), 2 + 16);
        fleet.disconnect().await;
        iot.broker.stop();
    }
}
