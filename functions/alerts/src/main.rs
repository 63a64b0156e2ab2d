//! The alerts Lambda: DeviceStats' latest-state changes and a schedule in,
//! alerts published once each. Everything but the wiring lives in the library.

use geotag_alerts::{Config, handle, on_aws};
use geotag_aws::observability::{self, invocation_span};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing::Instrument as _;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One thread: at 256 MB Lambda gives a fraction of one vCPU, so worker threads
// would only add start-up time and memory; the handlers overlap their
// requests with async I/O, not with threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let _tracing = observability::init();
    let config = Config::from_env()?;
    let alerts = on_aws(&geotag_aws::clients::load().await, &config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<geotag_alerts::Trigger>| {
        let span = invocation_span(
            "alerts",
            &event.context.request_id,
            event.context.xray_trace_id.as_deref(),
        );
        handle(&alerts, event).instrument(span)
    }))
    .await
}
