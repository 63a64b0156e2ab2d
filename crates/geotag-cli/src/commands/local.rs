//! The local stack as the shared options describe it: which emulator, which
//! template and parameters, how functions are invoked, which fleet.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use geotag_local_cloud::invoker::{InProcess, Invoker, Launch, RemoteLambda};
use geotag_local_cloud::stack::{LocalStack, Options, default_container_host, parse_overrides};
use geotag_local_docker::sam::{Sam, StartLambda};
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

    /// With `--sam-local`: starts `sam local start-lambda` once the stack
    /// exists, with the stack's environment, and invokes through it.
    pub fn sam_launch(&self) -> Option<Launch> {
        if !self.sam_local {
            return None;
        }
        Some(Arc::new(|local: &LocalStack| {
            let (invoker, guard) = tokio::task::block_in_place(|| start_sam_lambda(local))?;
            Ok((invoker, Box::new(guard) as Box<dyn Send + Sync>))
        }))
    }

    /// The Lambda Invoke API `--invoke-endpoint` names, if it names one.
    pub async fn remote_invoker(&self) -> Option<Invoker> {
        let url = self.invoke_endpoint.as_deref()?;
        let sdk = geotag_aws::clients::for_emulator(url).await;
        Some(Invoker::Remote(RemoteLambda::new(
            aws_sdk_lambda::Client::new(&sdk),
        )))
    }

    /// The runtime asked for (`--sam-local`, `--invoke-endpoint`, else the
    /// handlers in-process), and what keeps it running.
    pub async fn invoker(
        &self,
        local: &LocalStack,
    ) -> Result<(Invoker, Option<Box<dyn Send + Sync>>)> {
        if let Some(launch) = self.sam_launch() {
            let (invoker, started) = launch(local)?;
            return Ok((invoker, Some(started)));
        }
        Ok(match self.remote_invoker().await {
            Some(remote) => (remote, None),
            None => (
                Invoker::InProcess(Arc::new(InProcess::for_stack(&local.stack, &local.sdk)?)),
                None,
            ),
        })
    }
}

/// `sam local start-lambda` against `local`, its env-vars file written
/// first; DOCKER_HOST must reach a Docker whose containers share the host
/// network (`geotag sam-docker`).
fn start_sam_lambda(local: &LocalStack) -> Result<(Invoker, StartLambda)> {
    let docker_host = std::env::var("DOCKER_HOST").context(
        "--sam-local needs DOCKER_HOST: run `geotag sam-docker` and export what it prints",
    )?;
    let env_vars = local.root.join(SAM_ENV_VARS);
    local.write_sam_env_vars(&env_vars, default_container_host())?;
    let sam = Sam {
        program: Sam::program_in(&local.root),
        project: local.root.clone(),
        env_vars,
        docker_host,
    };
    let started = sam.start_lambda(local.root.join("target/geotag/sam-start-lambda.log"))?;
    let endpoint = started.endpoint();
    eprintln!("geotag: the functions run in sam local start-lambda at {endpoint}");
    let remote =
        tokio::runtime::Handle::current().block_on(geotag_aws::clients::for_emulator(&endpoint));
    Ok((
        Invoker::Remote(RemoteLambda::new(aws_sdk_lambda::Client::new(&remote))),
        started,
    ))
}

/// Where the local stack writes `sam local`'s env-vars file.
pub const SAM_ENV_VARS: &str = "target/geotag-sam-env.json";

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
            flood: None,
        }
    }
}
