//! The ingest Lambda: SQS batch in, readings to Telemetry, refusals to the DLQ.
//! Everything but the wiring lives in the library, where tests reach it.

use geotag_aws::observability::{self, invocation_span};
use geotag_ingest::{Config, handle, on_aws};
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
    let ingest = on_aws(&geotag_aws::clients::load().await, &config);
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<geotag_ingest::IngestEvent>| {
            let span = invocation_span(
                "ingest",
                &event.context.request_id,
                event.context.xray_trace_id.as_deref(),
            );
            handle(&ingest, event).instrument(span)
        },
    ))
    .await
}
