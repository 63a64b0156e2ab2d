//! The ingest Lambda: SQS batch in, readings to Telemetry, refusals to the DLQ.
//! Everything but the wiring lives in the library, where tests reach it.

geotag_runtime::lambda_main!(
    "ingest",
    geotag_ingest::Config,
    geotag_ingest::on_aws,
    geotag_ingest::handle
);
