//! geotag's AWS adapters: the implementations of the domain's ports
//! ([`geotag::store::ReadingStore`], [`geotag::store::DeadLetterSink`],
//! [`geotag::store::StatsStore`], the alerts' registry, log and sink) on
//! DynamoDB, SQS and SNS, and the one place where SDK clients are configured.
//!
//! Nothing here knows whether it talks to AWS or to the local emulator: the
//! endpoint comes from the standard `AWS_ENDPOINT_URL` variable, credentials
//! and region from the standard chain.

pub mod alert_log;
pub mod batch_get;
pub mod capacity;
pub mod clients;
pub mod dead_letters;
pub mod device_stats;
pub mod registry;
pub mod request_count;
pub mod retry;
pub mod telemetry;

pub use alert_log::{DynamoAlertLog, DynamoSilenceIndex, SnsAlertSink};
pub use dead_letters::SqsDeadLetters;
pub use device_stats::DynamoStatsStore;
pub use registry::DynamoRegistry;
pub use telemetry::{DynamoReadingStore, DynamoTrackSource};
