//! How the simulated fleet reaches the telemetry topic: over MQTT through the
//! local IoT Core (the default, as production tags do), or published to SNS
//! directly as a gateway would (`--via sns`, the path before tags had
//! certificates).

use std::path::{Path, PathBuf};

use anyhow::Result;
use geotag_local_cloud::stack::LocalStack;
use geotag_local_iot::local::LocalIot;

use crate::mqtt::Fleet;
use crate::simulate::{self, Message, Pace};
use crate::spoof;

/// The path the fleet's messages take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// MQTT over mutual TLS to the local broker, a certificate per tag.
    #[default]
    Mqtt,
    /// SNS Publish of edge envelopes, as a gateway with the gateway role does.
    Sns,
}

impl std::str::FromStr for Via {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "mqtt" => Ok(Via::Mqtt),
            "sns" => Ok(Via::Sns),
            other => Err(format!("{other:?} is neither mqtt nor sns")),
        }
    }
}

/// The running edge of a local stack: its broker and the tags' connections,
/// or nothing but SNS.
pub struct Edge {
    iot: Option<LocalIot>,
    fleet: Option<Fleet>,
    topic_arn: String,
    sns: aws_sdk_sns::Client,
}

impl Edge {
    /// Starts the broker (its CA saved in `state_dir`), provisions `things`
    /// and connects each, for [`Via::Mqtt`]; for [`Via::Sns`] only SNS.
    pub async fn start(
        local: &LocalStack,
        via: Via,
        state_dir: &Path,
        things: &[String],
    ) -> Result<Edge> {
        let mut edge = Edge {
            iot: None,
            fleet: None,
            topic_arn: local.stack.reference("TelemetryTopic")?.to_owned(),
            sns: aws_sdk_sns::Client::new(&local.sdk),
        };
        if via == Via::Sns {
            return Ok(edge);
        }
        let iot = LocalIot::start(&local.stack, &local.sdk, state_dir).await?;
        for thing in things {
            iot.provision(thing).await?;
        }
        edge.fleet = Some(Fleet::connect(
            iot.broker.port(),
            iot.ca.certificate_pem(),
            &devices_dir(&iot),
            things.iter().map(String::as_str),
        )?);
        edge.iot = Some(iot);
        Ok(edge)
    }

    pub fn via(&self) -> Via {
        if self.iot.is_some() {
            Via::Mqtt
        } else {
            Via::Sns
        }
    }

    /// The broker's address, for MQTT.
    pub fn broker_endpoint(&self) -> Option<String> {
        self.iot.as_ref().map(|iot| iot.broker.endpoint())
    }

    pub async fn publish(
        &self,
        messages: &[Message],
        progress: bool,
        pace: Option<&Pace>,
    ) -> Result<()> {
        match &self.fleet {
            Some(fleet) => fleet.publish(messages, progress, pace).await,
            None => simulate::publish(&self.sns, &self.topic_arn, messages, progress, pace).await,
        }
    }

    /// The spoofing the broker must refuse (MQTT only): whether each attempt
    /// was refused and counted with its reason, and a line saying so.
    pub async fn spoofs_refused(&self, liar: &str, victim: &str) -> Result<Option<(bool, String)>> {
        let Some(iot) = &self.iot else {
            return Ok(None);
        };
        let refused = spoof::broker_spoofs(
            iot.broker.port(),
            iot.ca.certificate_pem(),
            &devices_dir(iot),
            liar,
            victim,
        )
        .await?;
        // The client can see its connection fail before the broker's side has
        // counted why: give the count a moment to arrive.
        let expected: std::collections::BTreeMap<&str, u64> =
            spoof::BROKER_REFUSALS.into_iter().collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut counted = iot.broker.refusals().by_reason();
        while counted != expected && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            counted = iot.broker.refusals().by_reason();
        }
        let as_expected = counted == expected;
        let reconnects = self.fleet.as_ref().map_or(0, Fleet::reconnects);
        let line = format!(
            "  broker      {} messages through the topic rule to SNS ({reconnects} tag reconnection(s)); refused at the edge: {} (expected {}) {}",
            iot.broker.published(),
            describe(&counted),
            describe(&expected),
            if refused && as_expected { "✓" } else { "✗" },
        );
        Ok(Some((refused && as_expected, line)))
    }

    /// Disconnects the tags, stops the broker and removes its state directory
    /// (the CA and the tags' keys of this run).
    pub async fn stop(self) {
        if let Some(fleet) = self.fleet {
            fleet.disconnect().await;
        }
        if let Some(iot) = self.iot {
            let state_dir = iot.state_dir.clone();
            iot.broker.stop();
            let _ = std::fs::remove_dir_all(state_dir);
        }
    }
}

fn describe(counts: &std::collections::BTreeMap<&str, u64>) -> String {
    if counts.is_empty() {
        return "nothing".to_owned();
    }
    counts
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn devices_dir(iot: &LocalIot) -> PathBuf {
    iot.state_dir.join("devices")
}
