//! `geotag report --html FILE`: the fleet on one page, from a local or a
//! deployed stack.

use anyhow::Result;
use geotag_operator::map::{self, Tables};

use super::target::Target;
use crate::args::ReportArgs;

pub async fn run(args: ReportArgs) -> Result<()> {
    let (sdk, tables, title) = match args.target.target().await? {
        Target::Local(local) => (
            local.sdk.clone(),
            Tables::of_local(&local.stack)?,
            format!("geotag: local stack at {}", local.emulator.endpoint()),
        ),
        Target::Deployed { sdk, stack_name } => (
            sdk,
            Tables::of_deployed(&stack_name),
            format!("geotag: stack {stack_name}"),
        ),
    };
    let data = map::gather(&sdk, &tables, &title).await?;
    map::write(&args.html, &data)?;
    println!(
        "wrote {}: {} devices, {} alerts, {} geofences",
        args.html.display(),
        data.devices.len(),
        data.alerts.len(),
        data.geofences.len()
    );
    Ok(())
}
