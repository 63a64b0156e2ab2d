//! One file per `geotag` subcommand, each a `run` function of its arguments;
//! [`local`] and [`target`] resolve the options several commands share.

pub mod chaos;
pub mod customer;
pub mod demo;
pub mod device;
pub mod geofence;
pub mod invoke;
pub mod local;
pub mod rebuild_stats;
pub mod redrive;
pub mod report;
pub mod sam_docker;
pub mod simulate;
pub mod target;
pub mod token;
pub mod up;
