//! `geotag chaos`: the demo through refused requests and crashing invocations.

use std::time::Duration;

use anyhow::{Result, ensure};
use geotag_simulation::demo::{self, DemoOptions};
use geotag_simulation::simulate::{self, FleetConfig};

use crate::args::ChaosArgs;

pub async fn run(args: ChaosArgs) -> Result<()> {
    // Enough tags for `readings` valid readings (silent tags send fewer).
    let mut fleet = FleetConfig {
        devices: args.readings.div_ceil(args.per_device.max(1)).max(1),
        readings_per_device: args.per_device.max(1),
        interval_secs: 60,
        bad_ratio: args.bad_ratio.clamp(0.0, 1.0),
        dup_ratio: args.dup_ratio.clamp(0.0, 1.0),
        seed: args.seed,
        end_ms: geotag::clock::now_ms(),
        readings_per_message: None,
    };
    while simulate::plan(&fleet).expected.unique_readings() < args.readings {
        fleet.devices += 1;
    }
    let summary = demo::run(DemoOptions {
        stack: args.stack.options()?,
        fleet,
        invoker: None,
        launch: None,
        time_scale: args.stack.time_scale,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        chaos: Some(demo::Chaos {
            store_fault_rate: args.store_fault_rate,
            crash_rate: args.crash_rate,
            lost_answer_rate: args.lost_answer_rate,
            seed: args.seed,
        }),
        device_rows: false,
        output_dir: None,
        via: args.via,
    })
    .await?;
    ensure!(
        summary.ok,
        "lost {}, double-counted {}",
        summary.lost,
        summary.double_counted
    );
    Ok(())
}
