//! A running local stack: the emulator (owned or borrowed) with the template
//! provisioned into it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use geotag_aws::clients::SdkConfig;

use crate::emulator::{self, Emulator};
use crate::project;
use crate::provision::{LOCAL_STACK_NAME, Stack, provision};
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
