//! The local stack as the shared options describe it: which emulator, which
//! template and parameters, how functions are invoked, which fleet.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use geotag_local_cloud::invoker::{InProcess, Invoker};
use geotag_local_cloud::stack::{LocalStack, Options, parse_overrides};
use geotag_simulation::simulate::FleetConfig;

use crate::args::{EmulatorArgs, FleetArgs, StackArgs};

impl EmulatorArgs {
    /// The stack already provisioned in the emulator `--endpoint` names.
    pub async fn running_stack(&self) -> Result<LocalStack> {
        let endpoint = self
            .endpoint
            .clone()
            .context("say which emulator: --endpoint URL (as `geotag up` printed it)")?;
        LocalStack::start(&Options {
            endpoint: Some(endpoint),
            ..Options::default()
        })
        .await
    }
}

impl StackArgs {
    pub fn options(&self) -> Result<Options> {
        Ok(Options {
            endpoint: self.emulator.endpoint.clone(),
            parameter_overrides: parse_overrides(&self.parameter_overrides)?,
            template: self.template.clone(),
        })
    }

    /// The Lambda Invoke API `--invoke-endpoint` names, if it names one.
    pub async fn remote_invoker(&self) -> Option<Invoker> {
        let url = self.invoke_endpoint.as_deref()?;
        let sdk = geotag_aws::clients::for_emulator(url).await;
        Some(Invoker::Remote(aws_sdk_lambda::Client::new(&sdk)))
    }

    /// The remote invoker if asked for, else the handlers in-process.
    pub async fn invoker(&self, local: &LocalStack) -> Result<Invoker> {
        Ok(match self.remote_invoker().await {
            Some(remote) => remote,
            None => Invoker::InProcess(Arc::new(InProcess::for_stack(&local.stack, &local.sdk)?)),
        })
    }
}

impl FleetArgs {
    /// The fleet, its tracks ending now.
    pub fn config(&self) -> FleetConfig {
        FleetConfig {
            devices: self.devices,
            readings_per_device: self.readings,
            interval_secs: self.interval,
            bad_ratio: self.bad_ratio.clamp(0.0, 1.0),
            dup_ratio: self.dup_ratio.clamp(0.0, 1.0),
            seed: self.seed,
            end_ms: geotag::clock::now_ms(),
            readings_per_message: self.readings_per_message,
        }
    }
}
