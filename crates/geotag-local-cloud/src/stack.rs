//! A running local stack: the emulator (owned or borrowed) with the template
//! provisioned into it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use geotag_aws::clients::SdkConfig;

use crate::emulator::{self, Emulator};
use crate::project;
use crate::provision::{FunctionSpec, LOCAL_STACK_NAME, Stack, provision};
use crate::template::Template;

/// Where the emulator comes from, and how the template is filled in.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Use an emulator already running here instead of starting moto.
    pub endpoint: Option<String>,
    /// Template parameters, as `sam deploy --parameter-overrides` takes them.
    pub parameter_overrides: HashMap<String, String>,
    /// The template to provision (default: template.yaml at the project root).
    pub template: Option<PathBuf>,
}

/// Parameters the local stack takes unless told otherwise: those of a dev
/// stack (samconfig.toml's default environment), where a tag can connect
/// before anyone owns it. `--parameter-overrides UnregisteredDevices=refuse`
/// plays production.
pub const LOCAL_PARAMETER_DEFAULTS: [(&str, &str); 2] = [
    ("UnregisteredDevices", "admit"),
    ("AdminPrincipalArns", crate::provision::LOCAL_ADMINS),
];

pub struct LocalStack {
    pub emulator: Emulator,
    pub sdk: SdkConfig,
    pub stack: Stack,
    pub root: PathBuf,
    pub emulator_start: Duration,
    pub provision_time: Duration,
}

impl LocalStack {
    pub async fn start(options: &Options) -> Result<LocalStack> {
        let root = project::root()?;
        let started = Instant::now();
        let emulator = match &options.endpoint {
            Some(endpoint) => Emulator::existing(endpoint),
            None => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || Emulator::start(&root))
                    .await?
                    .context("starting the emulator")?
            }
        };
        let emulator_start = started.elapsed();
        let sdk = emulator.sdk_config().await;
        let template_path = options
            .template
            .clone()
            .unwrap_or_else(|| root.join("template.yaml"));
        let template = Template::load(&template_path)?;
        let mut parameters: HashMap<String, String> = LOCAL_PARAMETER_DEFAULTS
            .iter()
            .filter(|(name, _)| template.parameters.contains_key(*name))
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        parameters.extend(options.parameter_overrides.clone());
        let started = Instant::now();
        let stack = provision(&template, &sdk, LOCAL_STACK_NAME, &parameters)
            .await
            .with_context(|| format!("provisioning {}", template_path.display()))?;
        Ok(LocalStack {
            emulator,
            sdk,
            stack,
            root,
            emulator_start,
            provision_time: started.elapsed(),
        })
    }

    /// Writes the environment `cargo lambda watch --env-file` needs to run the
    /// functions against this stack, and returns its path.
    pub fn write_env_file(&self, path: &Path) -> Result<()> {
        let mut lines = vec![
            "# Written by `geotag up`: the functions' environment for `cargo lambda watch --env-file`.".to_owned(),
            format!("AWS_ENDPOINT_URL={}", self.emulator.endpoint()),
            format!("AWS_REGION={}", emulator::REGION),
            "AWS_ACCESS_KEY_ID=testing".to_owned(),
            "AWS_SECRET_ACCESS_KEY=testing".to_owned(),
        ];
        let mut variables = std::collections::BTreeMap::new();
        for function in self.stack.functions.values() {
            variables.extend(function.environment.clone());
        }
        lines.extend(
            variables
                .iter()
                .map(|(name, value)| format!("{name}={value}")),
        );
        project::write_file(path, lines.join("\n") + "\n")
    }

    /// Writes `sam local`'s `--env-vars` file: for each function, by logical
    /// id, every variable the template gives it filled in for this stack, and
    /// `AWS_ENDPOINT_URL` the emulator as a container reaches it (`127.0.0.1`
    /// with host networking on Linux, `host.docker.internal` where Docker runs
    /// in a VM). SAM takes region and credentials from its own environment,
    /// not from this file.
    pub fn write_sam_env_vars(&self, path: &Path, container_host: &str) -> Result<()> {
        let variables = sam_env_vars(
            self.stack.functions.values(),
            self.emulator.endpoint(),
            container_host,
        )?;
        project::write_file(path, serde_json::to_string_pretty(&variables)? + "\n")
    }
}

/// SAM's `--env-vars` document for `functions`: each function's variables by
/// its logical id, every mention of the emulator (its endpoint, a queue's
/// URL) as a container at `container_host` reaches it.
pub fn sam_env_vars<'a>(
    functions: impl IntoIterator<Item = &'a FunctionSpec>,
    emulator_endpoint: &str,
    container_host: &str,
) -> Result<serde_json::Value> {
    let seen_from_containers = endpoint_for_containers(emulator_endpoint, container_host)?;
    let as_containers_see = |value: &str| match value.strip_prefix(emulator_endpoint) {
        Some(rest) => format!("{seen_from_containers}{rest}"),
        None => value.to_owned(),
    };
    let mut document = serde_json::Map::new();
    for function in functions {
        let mut variables: serde_json::Map<String, serde_json::Value> = function
            .environment
            .iter()
            .map(|(name, value)| (name.clone(), as_containers_see(value).into()))
            .collect();
        variables.insert(
            "AWS_ENDPOINT_URL".into(),
            seen_from_containers.clone().into(),
        );
        document.insert(function.logical_id.clone(), variables.into());
    }
    Ok(document.into())
}

/// `http://127.0.0.1:PORT` as a container at `container_host` reaches it.
pub fn endpoint_for_containers(endpoint: &str, container_host: &str) -> Result<String> {
    let rest = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("{endpoint} is not an http:// endpoint"))?;
    let port = rest
        .rsplit_once(':')
        .map(|(_, port)| port.trim_end_matches('/'))
        .with_context(|| format!("{endpoint} names no port"))?;
    Ok(format!("http://{container_host}:{port}"))
}

/// Where a container reaches this machine's loopback: itself, on Linux, where
/// `geotag sam-docker` puts SAM's containers on the host network; Docker
/// Desktop's name for the host elsewhere.
pub fn default_container_host() -> &'static str {
    if cfg!(target_os = "linux") {
        "127.0.0.1"
    } else {
        "host.docker.internal"
    }
}

/// Parses `Key=Value` pairs (`sam deploy --parameter-overrides` style).
pub fn parse_overrides(pairs: &[String]) -> Result<HashMap<String, String>> {
    pairs
        .iter()
        .flat_map(|pair| pair.split_whitespace())
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .with_context(|| format!("{pair:?} is not Key=Value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest() -> FunctionSpec {
        FunctionSpec {
            logical_id: "IngestFunction".into(),
            name: "geotag-local-IngestFunction".into(),
            binary: "ingest".into(),
            timeout_secs: 30,
            environment: [
                ("TELEMETRY_TABLE", "geotag-local-telemetry"),
                (
                    "INGEST_REJECTIONS_URL",
                    "http://127.0.0.1:43155/123456789012/geotag-local-ingest-rejections",
                ),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
            events: vec![],
        }
    }

    #[test]
    fn sams_env_vars_name_the_emulator_as_the_containers_reach_it() {
        let document = sam_env_vars(
            [&ingest()],
            "http://127.0.0.1:43155",
            "host.docker.internal",
        )
        .unwrap();
        assert_eq!(
            document,
            serde_json::json!({
                "IngestFunction": {
                    "AWS_ENDPOINT_URL": "http://host.docker.internal:43155",
                    "INGEST_REJECTIONS_URL": "http://host.docker.internal:43155/123456789012/geotag-local-ingest-rejections",
                    "TELEMETRY_TABLE": "geotag-local-telemetry"
                }
            })
        );
    }

    #[test]
    fn an_endpoint_without_a_port_is_refused() {
        assert!(endpoint_for_containers("http://localhost", "127.0.0.1").is_err());
        assert!(endpoint_for_containers("https://127.0.0.1:1", "127.0.0.1").is_err());
    }
}
