//! The stats Lambda: Telemetry stream INSERTs in, DeviceStats updated exactly once.
//! Everything but the wiring lives in the library, where tests reach it.

use geotag_stats::{Config, handle, on_aws};
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let stats = on_aws(&geotag_aws::clients::load().await, &config);
    lambda_runtime::run(service_fn(|event| handle(&stats, event))).await
}
