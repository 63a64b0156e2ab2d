//! What every geotag Lambda function shares, so that a function crate holds
//! only what differs: its configuration, its wiring and its handler.
//!
//! # Layout
//!
//! - [`config`]: environment variables read once, with one error type;
//! - [`emf`]: CloudWatch metrics as Embedded Metric Format lines;
//! - [`observability`]: JSON logs as Lambda's logging controls say, and X-Ray
//!   subsegments for each invocation and AWS call when a daemon runs;
//! - [`responses`]: SQS and DynamoDB stream batch item failures;
//! - [`main_scaffold`]: `main`, once: [`main_scaffold::serve`] and [`lambda_main!`].

pub mod config;
pub mod emf;
pub mod main_scaffold;
pub mod observability;
pub mod responses;

pub use config::{ConfigError, Environment, FromEnvironment};
pub use lambda_runtime::Error;
pub use mimalloc::MiMalloc;
