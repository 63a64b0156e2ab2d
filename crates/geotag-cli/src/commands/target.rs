//! The stack the operator's commands act on: local (`--endpoint`) or
//! deployed (`--stack`), resolved in one place for all of them.

use anyhow::{Result, bail};
use geotag_aws::clients::SdkConfig;
use geotag_local_cloud::stack::LocalStack;
use geotag_operator::registry::RegistryAdmin;

use crate::args::TargetArgs;

#[expect(clippy::large_enum_variant, reason = "one per command run")]
pub enum Target {
    Local(LocalStack),
    Deployed { sdk: SdkConfig, stack_name: String },
}

impl TargetArgs {
    pub async fn target(&self) -> Result<Target> {
        match (&self.emulator.endpoint, &self.stack) {
            (Some(_), _) => Ok(Target::Local(self.emulator.running_stack().await?)),
            (None, Some(stack)) => Ok(Target::Deployed {
                sdk: geotag_aws::clients::load().await,
                stack_name: stack.clone(),
            }),
            (None, None) => bail!(
                "say which stack: --endpoint URL (a running `geotag up`) or --stack NAME (deployed)"
            ),
        }
    }

    pub async fn admin(&self) -> Result<RegistryAdmin> {
        self.target().await?.admin().await
    }
}

impl Target {
    pub async fn admin(&self) -> Result<RegistryAdmin> {
        match self {
            Target::Local(local) => RegistryAdmin::for_local(&local.stack, &local.sdk),
            Target::Deployed { sdk, stack_name } => {
                RegistryAdmin::for_deployed(sdk, stack_name).await
            }
        }
    }

    pub fn sdk(&self) -> &SdkConfig {
        match self {
            Target::Local(local) => &local.sdk,
            Target::Deployed { sdk, .. } => sdk,
        }
    }
}
