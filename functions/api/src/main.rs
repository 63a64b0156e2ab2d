//! The API Lambda: HTTP API requests (payload v2) in, each customer's own data out.
//! Everything but the wiring lives in the library, where tests reach it.

geotag_runtime::lambda_http_main!(
    "api",
    geotag_api::Config,
    geotag_api::on_aws,
    geotag_api::answer
);
