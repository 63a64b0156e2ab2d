//! The alerts Lambda: DeviceStats' latest-state changes and a schedule in,
//! alerts published once each. Everything but the wiring lives in the library.

geotag_runtime::lambda_main!(
    "alerts",
    geotag_alerts::Config,
    geotag_alerts::on_aws,
    geotag_alerts::handle
);
