//! The local cloud: geotag's whole template on one machine, no cloud account,
//! no Docker. What `sam local` does not do (event sources, a stack of many
//! resources) is played here, with the semantics AWS documents.
//!
//! # Layout
//!
//! - [`project`]: where the checkout's files are (template, events, `.venv`);
//! - [`server_process`]: a child server and the proof that the address we use
//!   is the one it bound (never a neighbour's);
//! - [`emulator`]: moto server from the project's `.venv`, and SDK settings for it;
//! - [`template`]: template.yaml read, its intrinsic functions resolved;
//! - [`provision`]: the template's resources created in the emulator by API,
//!   and its functions' environment and event sources read;
//! - [`stack`]: a running local stack, emulator and provisioned resources;
//! - [`invoker`]: how a function runs: in-process, through the Lambda Invoke
//!   API (`cargo lambda watch`, `sam local start-lambda`), or a closure;
//! - [`pump`]: Lambda's event source mappings (SQS, DynamoDB streams, schedules).

pub mod emulator;
pub mod invoker;
pub mod project;
pub mod provision;
pub mod pump;
pub mod server_process;
pub mod stack;
pub mod template;
