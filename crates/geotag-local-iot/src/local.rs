//! The local IoT Core of a running local stack: the CA made at start (saved
//! under `target/geotag/iot/` for `geotag device provision` to sign with),
//! the broker playing the stack's topic rules, and provisioning against both.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use geotag_aws::clients::SdkConfig;
use geotag_local_cloud::emulator::{ACCOUNT_ID, REGION};
use geotag_local_cloud::provision::Stack;

use crate::broker::{Broker, BrokerConfig, PlayedRule};
use crate::ca::LocalCa;
use crate::provision::{Provisioned, Signer, provision_device};
use crate::rule::RuleSql;

/// Where the local IoT Core keeps its CA and the tags' files, under the
/// project root.
pub const STATE_DIR: &str = "target/geotag/iot";

pub struct LocalIot {
    pub broker: Broker,
    pub ca: Arc<LocalCa>,
    pub iot: aws_sdk_iot::Client,
    /// The stack's device policy (template.yaml's `AWS::IoT::Policy`).
    pub device_policy: String,
    pub state_dir: PathBuf,
}

impl LocalIot {
    /// Makes a CA, saves it in `state_dir` (the project's [`STATE_DIR`], or
    /// a test's own), and starts the broker for `stack`.
    pub async fn start(stack: &Stack, sdk: &SdkConfig, state_dir: &Path) -> Result<LocalIot> {
        let state_dir = state_dir.to_owned();
        let ca = Arc::new(LocalCa::create()?);
        ca.save(&state_dir)?;
        let rules = stack
            .topic_rules
            .values()
            .map(|spec| {
                Ok(PlayedRule {
                    name: spec.name.clone(),
                    sql: RuleSql::parse(&spec.sql)?,
                    topic_arn: spec.sns_target_arn.clone(),
                    error_queue_url: spec.error_queue_url.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()
            .context("reading the template's topic rules")?;
        let iot = aws_sdk_iot::Client::new(sdk);
        let broker = Broker::start(BrokerConfig {
            ca: ca.clone(),
            iot: iot.clone(),
            sns: aws_sdk_sns::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            rules,
            arn_prefix: format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}"),
            runtime: tokio::runtime::Handle::current(),
        })?;
        Ok(LocalIot {
            broker,
            ca,
            iot,
            device_policy: device_policy(stack)?,
            state_dir,
        })
    }

    /// Provisions `thing`: its files go to `target/geotag/iot/devices/THING/`.
    pub async fn provision(&self, thing: &str) -> Result<Provisioned> {
        provision_device(
            &self.iot,
            Signer::Local(&self.ca),
            &self.device_policy,
            thing,
            &self.state_dir.join("devices"),
        )
        .await
    }
}

/// The name of the stack's one IoT policy.
pub fn device_policy(stack: &Stack) -> Result<String> {
    let policies: Vec<&str> = stack
        .created
        .iter()
        .filter(|(_, kind)| kind == "AWS::IoT::Policy")
        .filter_map(|(logical_id, _)| stack.reference(logical_id).ok())
        .collect();
    match policies.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("the template declares no AWS::IoT::Policy for the tags"),
        many => {
            bail!("the template declares several IoT policies ({many:?}); say which the tags get")
        }
    }
}
