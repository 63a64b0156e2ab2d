//! geotag's domain: what a position reading is, how a message body becomes
//! validated readings, how a reading is keyed for storage, and the ports
//! (traits) that storage adapters implement.
//!
//! Nothing here knows about Lambda or the AWS SDK; the function crates wire
//! these pieces to AWS through `geotag-aws`, and tests wire them to the
//! in-memory stores in [`store`].
//!
//! # Layout
//!
//! - [`reading`]: a validated position reading, its limits, its storage key;
//! - [`decode`]: an SQS message body (an edge envelope naming the authenticated
//!   tag, raw or in an SNS envelope, around one reading or a batch) to readings;
//! - [`reject`]: the reason codes of refused messages and readings;
//! - [`budget`]: a reading budget per tag and minute, so that one tag cannot delay the fleet;
//! - [`clock`]: epoch milliseconds, the one system clock, hour and day lengths;
//! - [`geo`]: great-circle distance and destination on a spherical Earth;
//! - [`geofence`]: circles and polygons, and whether a point is inside;
//! - [`stats`]: latest state with its trail, hourly and daily rollups, and why they are exact in any order;
//! - [`alerts`]: the alert rules (geofence, battery, speeding, silence);
//! - [`alert_filter`]: whose alerts an AlertsTopic subscription's filter admits;
//! - [`store`]: the ports the functions use, and in-memory implementations;
//! - [`read`]: what the HTTP API reads, scoped as the tables are keyed;
//! - [`directory`]: which tags the registry knows and whose they are, and what
//!   ingest does with the others;
//! - [`tenancy`]: whose data is whose: readings stamped with their owner, and
//!   the aggregates that carry it.

pub mod alert_filter;
pub mod alerts;
pub mod budget;
pub mod clock;
pub mod decode;
pub mod directory;
pub mod geo;
pub mod geofence;
pub mod read;
pub mod reading;
pub mod reject;
pub mod stats;
pub mod store;
pub mod tenancy;

pub use decode::{BodyForm, DecodedMessage, EdgeIdentity, decode_message, edge_envelope};
pub use reading::{Limits, Reading};
pub use reject::{Reason, Rejection};
