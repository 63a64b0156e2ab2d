//! `geotag demo`: the whole pipeline on a simulated fleet, audited.

use std::time::Duration;

use anyhow::{Result, ensure};
use geotag_simulation::demo::{self, DemoOptions};

use crate::args::DemoArgs;

pub async fn run(args: DemoArgs) -> Result<()> {
    let summary = demo::run(DemoOptions {
        stack: args.stack.options()?,
        fleet: args.fleet.config(),
        invoker: args.stack.remote_invoker().await,
        launch: args.stack.sam_launch(),
        time_scale: args.stack.time_scale,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        chaos: None,
        device_rows: true,
        output_dir: None,
        via: args.via,
        publish_speedup: None,
        stepped: None,
    })
    .await?;
    ensure!(summary.ok, "the audit found differences");
    Ok(())
}
