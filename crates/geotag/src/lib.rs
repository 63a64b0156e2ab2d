//! geotag's domain: what a position reading is, how a message body becomes
//! validated readings, how a reading is keyed for storage, and the ports
//! (traits) that storage adapters implement.
//!
//! Nothing here knows about Lambda or the AWS SDK; the function crates wire
//! these pieces to AWS through `geotag-aws`, and tests wire them to the
//! in-memory stores in [`store`].

pub mod alerts;
pub mod clock;
pub mod decode;
pub mod geo;
pub mod geofence;
pub mod reading;
pub mod reject;
pub mod stats;
pub mod store;

pub use decode::{BodyForm, DecodedMessage, decode_message};
pub use reading::{Limits, Reading};
pub use reject::{Reason, Rejection};
