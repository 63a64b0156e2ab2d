//! `geotag simulate`: a simulated fleet published to a running local stack.

use anyhow::Result;
use geotag_simulation::simulate;

use crate::args::SimulateArgs;

pub async fn run(args: SimulateArgs) -> Result<()> {
    let local = args.emulator.running_stack().await?;
    let plan = simulate::plan(&args.fleet.config());
    let topic = local.stack.reference("TelemetryTopic")?.to_owned();
    let sns = aws_sdk_sns::Client::new(&local.sdk);
    simulate::publish(&sns, &topic, &plan.messages, true, None).await?;
    println!(
        "published {} messages: {} readings, {} malformed, {} duplicates",
        plan.messages.len(),
        plan.expected.unique_readings(),
        plan.expected.rejected(),
        plan.expected.duplicates
    );
    Ok(())
}
