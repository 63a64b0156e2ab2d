//! The MQTT broker playing IoT Core's data plane for the local stack: see the
//! crate documentation for what it enforces.
//!
//! It runs ntex-mqtt (MQTT 3.1.1, what rumqttc and `mosquitto_pub` speak by
//! default; MQTT 5 connections are refused) on a thread of its own with an
//! ntex system, on 127.0.0.1 and a port the kernel picks, bound before
//! [`Broker::start`] returns. Its calls to the emulator (certificates,
//! things, policies, SNS) run on the caller's tokio runtime.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, anyhow};
use aws_sdk_iot::types::CertificateStatus;
use ntex_mqtt::{MqttServer, v3};
use ntex_tls::rustls::{PeerCert, TlsAcceptor};
use rustls::server::WebPkiClientVerifier;

use crate::ca::{LocalCa, certificate_id};
use crate::policy::{self, Connection, Decision, Policy, Request};
use crate::rule::{Message, RuleSql};

/// IoT Core's largest message payload.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// The topic rule as the stack created it: its SQL, and where its actions go.
#[derive(Debug, Clone)]
pub struct PlayedRule {
    pub name: String,
    pub sql: RuleSql,
    /// The SNS action's target.
    pub topic_arn: String,
    /// The SQS error action's queue, if the rule has one.
    pub error_queue_url: Option<String>,
}

/// What the broker needs: the CA, the emulator's clients, the rule.
pub struct BrokerConfig {
    pub ca: Arc<LocalCa>,
    pub iot: aws_sdk_iot::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// The template's topic rules (each message goes through every rule whose
    /// filter matches its topic).
    pub rules: Vec<PlayedRule>,
    /// `arn:aws:iot:REGION:ACCOUNT`, the prefix of the policies' resources.
    pub arn_prefix: String,
    /// Where the emulator calls run.
    pub runtime: tokio::runtime::Handle,
}

/// Refusals by reason, and messages the rule published: what the audits and
/// tests read.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl Refusals {
    fn count(&self, reason: &'static str) {
        *self.lock().entry(reason).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.lock().clone()
    }

    pub fn get(&self, reason: &str) -> u64 {
        self.lock().get(reason).copied().unwrap_or(0)
    }
}

/// Why the broker refused a connection or a publish: the codes its log
/// lines and counters use.
pub mod reason {
    /// TLS failed: no client certificate, or one the CA did not sign.
    pub const TLS_HANDSHAKE: &str = "tls_handshake_failed";
    pub const CERTIFICATE_UNKNOWN: &str = "certificate_unknown";
    /// Registered, but INACTIVE or REVOKED.
    pub const CERTIFICATE_NOT_ACTIVE: &str = "certificate_not_active";
    /// The client id is no thing attached to the certificate.
    pub const CLIENT_ID_NOT_THING: &str = "client_id_not_its_thing";
    pub const CONNECT_DENIED: &str = "connect_denied_by_policy";
    pub const PUBLISH_DENIED: &str = "publish_denied_by_policy";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The emulator could not be asked (its error is logged).
    pub const LOOKUP_FAILED: &str = "lookup_failed";
    /// The rule's action failed; the message went to the error action.
    pub const RULE_ACTION_FAILED: &str = "rule_action_failed";
}

/// Emulator calls the broker makes at once. moto serves each request on a
/// thread of its own and stops accepting connections in time when a fleet's
/// publishes arrive together (measured: HTTP connect timeouts with 20 tags
/// and no bound); IoT Core's rules engine has its own bounded throughput too.
const EMULATOR_CALLS_AT_ONCE: usize = 8;

struct Shared {
    config: BrokerConfig,
    calls: tokio::sync::Semaphore,
    refusals: Refusals,
    published: Mutex<u64>,
}

#[derive(Clone)]
struct Session {
    connection: Connection,
    policies: Arc<Vec<Policy>>,
}

#[derive(Debug)]
#[expect(dead_code, reason = "ntex-mqtt logs a service's error through Debug")]
struct Refused(&'static str);

impl From<()> for Refused {
    fn from(_: ()) -> Self {
        Refused("internal")
    }
}

/// A running broker; stopped when dropped.
pub struct Broker {
    port: u16,
    shared: Arc<Shared>,
    server: Option<ntex_server::Server<ntex_server::net::Connection>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    pub fn start(config: BrokerConfig) -> Result<Broker> {
        let (chain, key) = config.ca.server_identity()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(config.ca.certificate_der()?)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("the client certificate verifier")?;
        let tls = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?,
        );
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding the broker on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            config,
            calls: tokio::sync::Semaphore::new(EMULATOR_CALLS_AT_ONCE),
            refusals: Refusals::default(),
            published: Mutex::new(0),
        });
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("geotag-broker".into())
            .spawn(move || serve(listener, tls, thread_shared, started_tx))
            .context("starting the broker's thread")?;
        let server = started_rx
            .recv()
            .map_err(|_| anyhow!("the broker's thread ended before it served"))??;
        Ok(Broker {
            port,
            shared,
            server: Some(server),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtts://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    pub fn refusals(&self) -> Refusals {
        self.shared.refusals.clone()
    }

    /// Messages the rule published to SNS.
    pub fn published(&self) -> u64 {
        *self
            .shared
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            // Not graceful: a graceful stop waits for every client to leave.
            futures::executor::block_on(server.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Started = std::sync::mpsc::Sender<Result<ntex_server::Server<ntex_server::net::Connection>>>;

fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    started: Started,
) {
    ntex_rt::System::new("geotag-broker", ntex_net::DefaultRuntime).block_on(async move {
        let factory_shared = shared.clone();
        let built = ntex_server::net::ServerBuilder::default()
            .listen("mqtt", listener, async move |_| {
                let tls_refusals = factory_shared.refusals.clone();
                let on_connect = factory_shared.clone();
                let on_publish = factory_shared.clone();
                ntex_service::chain_factory(TlsAcceptor::new(tls.clone()))
                    .map_err(move |error| {
                        tracing::warn!(reason = reason::TLS_HANDSHAKE, %error, "broker: refused a connection");
                        tls_refusals.count(reason::TLS_HANDSHAKE);
                        ntex_mqtt::MqttError::Service(Refused(reason::TLS_HANDSHAKE))
                    })
                    .and_then(MqttServer::new().v3(
                        v3::MqttServer::new(move |handshake| {
                            let shared = on_connect.clone();
                            async move { Ok::<_, Refused>(connect(&shared, handshake).await) }
                        })
                        .publish(ntex_service::fn_factory_with_config(move |session: v3::Session<Session>| {
                            let shared = on_publish.clone();
                            ntex_util::future::Ready::Ok::<_, Refused>(ntex_service::fn_service(
                                move |publish| {
                                    let (shared, session) = (shared.clone(), session.clone());
                                    async move { publish_of(&shared, &session, publish).await }
                                },
                            ))
                        })),
                    ))
            });
        let server = match built {
            Ok(builder) => builder.workers(1).disable_signals().run(),
            Err(error) => {
                let _ = started.send(Err(error.into()));
                return;
            }
        };
        let _ = started.send(Ok(server.clone()));
        let _ = server.await;
    });
}

/// Runs an emulator call on the caller's runtime.
async fn on_runtime<T: Send + 'static>(
    shared: &Shared,
    call: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let _permit = shared
        .calls
        .acquire()
        .await
        .map_err(|_| anyhow!("the broker is stopping"))?;
    shared
        .config
        .runtime
        .spawn(call)
        .await
        .map_err(|error| anyhow!("an emulator call panicked or was cancelled: {error}"))
}

async fn connect(shared: &Arc<Shared>, handshake: v3::Handshake) -> v3::HandshakeAck<Session> {
    let client_id = handshake.packet().client_id.to_string();
    let der = handshake
        .io()
        .query::<PeerCert<'static>>()
        .as_ref()
        .map(|cert| cert.0.to_vec());
    match authorize(shared, &client_id, der).await {
        Ok(session) => {
            tracing::debug!(client_id, "broker: connected");
            handshake.ack(session, false)
        }
        Err(reason) => {
            tracing::warn!(client_id, reason, "broker: refused a connection");
            shared.refusals.count(reason);
            handshake.not_authorized()
        }
    }
}

async fn authorize(
    shared: &Arc<Shared>,
    client_id: &str,
    der: Option<Vec<u8>>,
) -> Result<Session, &'static str> {
    let der = der.ok_or(reason::TLS_HANDSHAKE)?;
    let id = certificate_id(&der);
    let iot = shared.config.iot.clone();
    let lookup = async move {
        let certificate = match iot.describe_certificate().certificate_id(&id).send().await {
            Ok(output) => output.certificate_description,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(error) => {
                return Err(anyhow!(
                    aws_sdk_iot::error::DisplayErrorContext(error).to_string()
                ));
            }
        };
        let Some(certificate) = certificate else {
            return Ok(None);
        };
        let arn = certificate.certificate_arn.clone().unwrap_or_default();
        let things = iot
            .list_principal_things()
            .principal(&arn)
            .send()
            .await?
            .things
            .unwrap_or_default();
        let attached = iot
            .list_attached_policies()
            .target(&arn)
            .send()
            .await?
            .policies
            .unwrap_or_default();
        let mut documents = Vec::new();
        for attached in attached {
            let name = attached.policy_name.unwrap_or_default();
            let policy = iot.get_policy().policy_name(&name).send().await?;
            documents.push((name, policy.policy_document.unwrap_or_default()));
        }
        anyhow::Ok(Some((certificate.status, things, documents)))
    };
    let found = on_runtime(shared, lookup)
        .await
        .and_then(|inner| inner)
        .map_err(|error| {
            tracing::error!(%error, "broker: the emulator's IoT API could not be asked");
            reason::LOOKUP_FAILED
        })?;
    let (status, things, documents) = found.ok_or(reason::CERTIFICATE_UNKNOWN)?;
    if status != Some(CertificateStatus::Active) {
        return Err(reason::CERTIFICATE_NOT_ACTIVE);
    }
    let mut policies = Vec::new();
    for (name, document) in documents {
        let document: serde_json::Value = serde_json::from_str(&document).map_err(|error| {
            tracing::error!(policy = name, %error, "broker: a policy document is not JSON");
            reason::LOOKUP_FAILED
        })?;
        policies.push(Policy::parse(&name, &document).map_err(|error| {
            tracing::error!(%error, "broker: a policy is not played");
            reason::LOOKUP_FAILED
        })?);
    }
    let connection = Connection {
        client_id: client_id.to_owned(),
        thing_name: things
            .iter()
            .any(|thing| thing == client_id)
            .then(|| client_id.to_owned()),
    };
    if connection.thing_name.is_none() {
        return Err(reason::CLIENT_ID_NOT_THING);
    }
    let resource = format!("{}:client/{client_id}", shared.config.arn_prefix);
    let request = Request {
        action: "iot:Connect",
        resource: &resource,
    };
    match policy::decide(&policies, request, &connection) {
        Decision::Allowed => Ok(Session {
            connection,
            policies: Arc::new(policies),
        }),
        Decision::ImplicitlyDenied | Decision::ExplicitlyDenied => Err(reason::CONNECT_DENIED),
    }
}

/// A publish: authorised, then played through the rule. `Err` closes the
/// connection, as IoT Core does on a publish its policy does not allow.
async fn publish_of(
    shared: &Arc<Shared>,
    session: &v3::Session<Session>,
    publish: v3::Publish,
) -> Result<(), Refused> {
    let client_id = session.connection.client_id.clone();
    let topic = publish.publish_topic().to_owned();
    let refuse = |reason: &'static str| {
        tracing::warn!(client_id, topic, reason, "broker: refused a publish");
        shared.refusals.count(reason);
        Err(Refused(reason))
    };
    if publish.payload_size() > MAX_PAYLOAD_BYTES {
        return refuse(reason::PAYLOAD_TOO_LARGE);
    }
    let resource = format!("{}:topic/{topic}", shared.config.arn_prefix);
    let request = Request {
        action: "iot:Publish",
        resource: &resource,
    };
    if policy::decide(&session.policies, request, &session.connection) != Decision::Allowed {
        return refuse(reason::PUBLISH_DENIED);
    }
    let payload = publish
        .read_all()
        .await
        .map_err(|_| Refused("payload_unreadable"))?;
    let received_at_ms = geotag::clock::now_ms();
    for rule in shared
        .config
        .rules
        .iter()
        .filter(|rule| rule.sql.matches(&topic))
    {
        let message = Message {
            topic: &topic,
            client_id: &client_id,
            payload: &payload,
            received_at_ms,
        };
        let published = match rule.sql.apply(message) {
            Ok(output) => {
                let sns = shared.config.sns.clone();
                let topic_arn = rule.topic_arn.clone();
                on_runtime(shared, async move {
                    sns.publish()
                        .topic_arn(topic_arn)
                        .message(output)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|error| aws_sdk_sns::error::DisplayErrorContext(error).to_string())
                })
                .await
                .map_err(|error| error.to_string())
                .and_then(|inner| inner)
            }
            Err(error) => Err(error.to_string()),
        };
        match published {
            Ok(()) => *shared.published.lock().unwrap_or_else(|p| p.into_inner()) += 1,
            Err(failure) => {
                tracing::error!(
                    client_id,
                    topic,
                    rule = rule.name,
                    failure,
                    "broker: the topic rule's action failed"
                );
                shared.refusals.count(reason::RULE_ACTION_FAILED);
                error_action(shared, rule, message, &failure).await;
            }
        }
    }
    Ok(())
}

/// IoT Core's error action: the failure and the original message, to the queue.
async fn error_action(
    shared: &Arc<Shared>,
    rule: &PlayedRule,
    message: Message<'_>,
    failure: &str,
) {
    let Some(queue_url) = rule.error_queue_url.clone() else {
        return;
    };
    use base64::Engine as _;
    let body = serde_json::json!({
        "ruleName": rule.name,
        "topic": message.topic,
        "clientId": message.client_id,
        "base64OriginalPayload": base64::engine::general_purpose::STANDARD.encode(message.payload),
        "failures": [{"failedAction": "SnsAction", "failedResource": rule.topic_arn, "errorMessage": failure}],
    })
    .to_string();
    let sqs = shared.config.sqs.clone();
    let sent = on_runtime(shared, async move {
        sqs.send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        tracing::error!(
            topic = message.topic,
            "broker: the topic rule's error action failed too; the message is lost"
        );
    }
}
