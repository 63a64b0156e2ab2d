//! The stats Lambda: Telemetry stream INSERTs in, DeviceStats updated exactly once.
//! Everything but the wiring lives in the library, where tests reach it.

geotag_runtime::lambda_main!(
    "stats",
    geotag_stats::Config,
    geotag_stats::on_aws,
    geotag_stats::handle
);
