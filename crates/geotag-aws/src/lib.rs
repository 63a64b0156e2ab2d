//! geotag's AWS adapters: the implementations of the domain's ports
//! ([`geotag::store::ReadingStore`], [`geotag::store::DeadLetterSink`],
//! [`geotag::store::StatsStore`], the alerts' registry, log and sink) on
//! DynamoDB, SQS and SNS, and the one place where SDK clients are configured.
//!
//! Nothing here knows whether it talks to AWS or to the local emulator: the
//! endpoint comes from the standard `AWS_ENDPOINT_URL` variable, credentials
//! and region from the standard chain.
//!
//! # Layout
//!
//! One module per table layout, which both writes and reads its items (SDK
//! items and stream images alike):
//! - [`telemetry`]: the Telemetry table (readings, hour tracks);
//! - [`device_stats`]: the DeviceStats table (latest state, rollups, silence index keys);
//! - [`registry`]: the Devices, Customers and Geofences tables;
//! - [`rate_ledger`]: the DeviceRates table (each tag's readings by minute);
//! - [`alert_log`]: the Alerts table, the alerts topic, the silence index queries.
//!
//! Each reads its items through [`item::ItemView`], whether they come from
//! the SDK or from a stream record ([`stream`]: DynamoDB stream events as
//! stats and alerts read them, lean).
//!
//! Beside them: [`dead_letters`] (the ingest DLQ), [`batch_get`] (BatchGetItem
//! and paged scans), [`retry`] (partial batch writes within a time budget),
//! [`capacity`] (write units of an item), [`request_count`] (requests counted
//! at the wire) and [`clients`] (SDK configuration).

pub mod alert_log;
pub mod batch_get;
pub mod capacity;
pub mod clients;
pub mod dead_letters;
pub mod device_stats;
pub mod fleet_reads;
pub mod item;
pub mod rate_ledger;
pub mod registry;
pub mod request_count;
pub mod retry;
pub mod stream;
pub mod telemetry;

pub use alert_log::{DynamoAlertLog, DynamoSilenceIndex, SnsAlertSink};
pub use dead_letters::SqsDeadLetters;
pub use device_stats::DynamoStatsStore;
pub use rate_ledger::DynamoRateLedger;
pub use registry::{DynamoDevices, DynamoRegistry};
pub use telemetry::{DynamoReadingStore, DynamoTelemetryReader};
