//! The local stack: geotag's whole template on one machine, no cloud account,
//! no Docker.
//!
//! - [`emulator`] runs moto server from the project's `.venv`;
//! - [`template`] reads template.yaml, the one list of resources;
//! - [`provision`] creates those resources in the emulator by API;
//! - [`pump`] plays Lambda's event source mappings;
//! - [`registry`] manages customers, device assignments and geofences;
//! - [`simulate`] plans and publishes a fleet's messages;
//! - [`demo`] runs it all and audits the result;
//! - [`metrics`] reads back the functions' EMF lines;
//! - [`map`] draws the fleet on one self-contained HTML page.

pub mod alert_audit;
pub mod demo;
pub mod emulator;
pub mod faults;
pub mod map;
pub mod metrics;
pub mod project;
pub mod provision;
pub mod pump;
pub mod registry;
pub mod server_process;
pub mod simulate;
pub mod stack;
pub mod template;
