//! Tools for whoever runs a geotag stack, the same for a local stack (by its
//! emulator endpoint) and a deployed one (by its CloudFormation stack name).
//!
//! # Layout
//!
//! - [`registry`]: customers, their thresholds and alert subscriptions,
//!   device assignments and geofences (`geotag customer`, `device`, `geofence`);
//! - [`map`]: the fleet on one self-contained HTML page (`geotag report --html`),
//!   from the stack's tables;
//! - [`redrive`]: the ingest dead-letter queue sent back through ingest
//!   after a fix (`geotag redrive`), crash-safe;
//! - [`table_scan`]: whole-table reads, page after page.

pub mod map;
pub mod redrive;
pub mod registry;
pub mod table_scan;
