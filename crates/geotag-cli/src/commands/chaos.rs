//! `geotag chaos`: the demo through refused requests, lost answers, crashing
//! invocations and a flooding tag.

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
        flood: None,
    };
    while simulate::plan(&fleet).expected.unique_readings() < args.readings {
        fleet.devices += 1;
    }
    fleet.flood = (args.flood > 0).then_some(simulate::Flood {
        factor: args.flood,
        share: args.flood_share,
    });
    // A flood delays others only if it arrives as fast as it is sent: a run
    // with one is published at the readings' pace, sped up to give the
    // fleet's normal traffic the rate asked for.
    let publish_speedup = (fleet.flood.is_some() && args.publish_rate > 0.0)
        .then(|| args.publish_rate * fleet.interval_secs as f64 / fleet.devices as f64);
    let mut stack = args.stack.options()?;
    // The fleet reports once a minute: a budget of ten times that.
    stack
        .parameter_overrides
        .entry("DeviceReadingsPerMinute".into())
        .or_insert_with(|| "10".into());
    let summary = demo::run(DemoOptions {
        stack,
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
        publish_speedup,
        stepped: None,
    })
    .await?;
    ensure!(
        summary.ok,
        "the audit failed (lost {}, double-counted {}; the report above says what else)",
        summary.lost,
        summary.double_counted
    );
    Ok(())
}
