//! The audited simulation: a fleet published to a stack, and audits that add
//! up what the pipeline made of it against what the fleet sent.
//!
//! # Layout
//!
//! - [`simulate`]: the fleet's plan (tracks, malformed and duplicate messages,
//!   what each deserves) and its publishing;
//! - [`demo`]: `geotag demo` and `geotag chaos`, end to end, step by step;
//! - [`reading_audit`]: Telemetry, DeviceStats and the ingest queues of refused and failed messages against the plan;
//! - [`alert_audit`]: the demo's registry, customer inboxes and silence check,
//!   and the audit of every alert against the oracle;
//! - [`api_audit`]: each customer's fleet read back through the API function;
//! - [`flood`]: the flooding tag's plan;
//! - [`gateway`]: the fleet published to SNS as a server-side gateway (`--via sns`);
//! - [`flood_audit`]: one tag at many times its rate held to its budget, and
//!   the other tags' delay before, during and after;
//! - [`rebuild_audit`]: every tag's DeviceStats rebuilt from Telemetry alone,
//!   beside what the stream built;
//! - [`report`]: the printed tables and their marks;
//! - [`summary`]: a run's verdict in figures;
//! - [`cost`]: each table's writes priced in write units;
//! - [`malformed`]: each kind of malformed message and its reason code;
//! - [`faults`]: refused AWS requests and crashing invocations, for the chaos run;
//! - [`metrics`]: the functions' EMF lines read back and summed.

pub mod alert_audit;
pub mod api_audit;
pub mod cost;
pub mod demo;
pub mod edge;
pub mod faults;
pub mod flood;
pub mod flood_audit;
pub mod gateway;
pub mod malformed;
pub mod metrics;
pub mod mqtt;
pub mod pace;
pub mod reading_audit;
pub mod rebuild_audit;
pub mod report;
pub mod simulate;
pub mod spoof;
pub mod summary;
