//! The local stack: geotag's whole template on one machine, no cloud account,
//! no Docker.
//!
//! - [`emulator`] runs moto server from the project's `.venv`;
//! - [`template`] reads template.yaml, the one list of resources;
//! - [`provision`] creates those resources in the emulator by API;
//! - [`pump`] plays Lambda's event source mappings.

pub mod emulator;
pub mod project;
pub mod provision;
pub mod pump;
pub mod template;
