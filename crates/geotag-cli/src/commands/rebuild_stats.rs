//! `geotag rebuild-stats --device ID --from T --to T`: a tag's DeviceStats
//! recomputed from Telemetry by the stats function's own code
//! (`geotag_stats::rebuild`), on a local or a deployed stack.

use anyhow::{Result, bail};
use geotag_operator::map::Tables;

use super::target::Target;
use crate::args::RebuildStatsArgs;

pub async fn run(args: RebuildStatsArgs) -> Result<()> {
    if args.from >= args.to {
        bail!("--from must be before --to");
    }
    let target = args.target.target().await?;
    let tables = match &target {
        Target::Local(local) => Tables::of_local(&local.stack)?,
        Target::Deployed { stack_name, .. } => Tables::of_deployed(stack_name),
    };
    let stats = geotag_stats::for_tables(target.sdk(), &tables.telemetry, &tables.device_stats);
    let outcome = geotag_stats::rebuild(&stats, &args.device, args.from, args.to).await?;
    println!(
        "{}: {} readings in Telemetry; {} hours and {} days recomputed, {} items written, \
         {} already as they should be",
        args.device,
        outcome.readings,
        outcome.hour_queries,
        outcome.day_queries,
        outcome.items_written,
        outcome.already_applied,
    );
    Ok(())
}
