//! API Gateway's HTTP API played on 127.0.0.1, for `geotag up`: a local
//! token issuer in Cognito's place, its JWT authorizer, the template's CORS,
//! payload v2 events to the API function through the stack's invoker, and
//! the live map's files beside it.
//!
//! # Layout
//! - [`issuer`]: ES256 keys made at start, tokens for a customer or the operator;
//! - [`gateway`]: the server: preflights, the authorizer, events, answers;
//! - [`site`]: the map's static files;
//! - [`probe`]: a client of it, for the tests and the bench.

pub mod gateway;
pub mod issuer;
pub mod probe;
pub mod site;

pub use gateway::{Gateway, LocalApi};
pub use issuer::{LocalIssuer, Subject};
