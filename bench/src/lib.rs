//! geotag's benchmarks, apart from the product: the events both languages
//! run on, the handlers wired for timing, and the `geotag-bench` report.

pub mod cold;
pub mod events;
pub mod fixtures;
pub mod lambda_api;
pub mod report;
