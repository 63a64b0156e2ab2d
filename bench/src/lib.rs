//! geotag's benchmarks, apart from the product: the events both languages
//! run on, the handlers wired for timing, and the `geotag-bench` report.
//!
//! # Layout
//!
//! - [`api`]: the API's fleets and requests, and what DynamoDB bills to read them;
//! - [`events`]: the fleets and Lambda events both languages are timed on;
//! - [`fixtures`]: the handlers wired to in-memory or counting stores;
//! - [`lambda_api`]: a local Lambda Runtime API and AWS endpoint for cold starts;
//! - [`cold`]: `geotag-bench cold`, builds compared side by side, cold;
//! - [`report`]: the report `scripts/bench` prints.

pub mod api;
pub mod cold;
pub mod events;
pub mod fixtures;
pub mod lambda_api;
pub mod report;
