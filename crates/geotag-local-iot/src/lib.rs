//! The local stack's IoT Core.
//!
//! A tag connects over MQTT with mutual TLS, with a certificate the local CA
//! signed ([`ca`]) and that is registered, ACTIVE, in the emulator's IoT API
//! (moto's things, certificates and policies), as on AWS. The broker
//! ([`broker`]) then does what IoT Core does with the template's resources:
//!
//! - **connect**: the certificate must be registered and active; the thing
//!   whose name is the client id must be attached to it; the policies
//!   attached to the certificate (template.yaml's `DevicePolicy`, as the
//!   stack created it) must allow `iot:Connect` ([`policy`]);
//! - **publish**: the policies must allow `iot:Publish` on the topic, and the
//!   payload must fit IoT Core's 128 KB; otherwise the connection is closed,
//!   as IoT Core closes it;
//! - **the topic rule**: template.yaml's `TelemetryRule`, its SQL played
//!   ([`rule`]) and its SNS action published to the local telemetry topic; a
//!   failed action goes to the rule's error queue.
//!
//! Each refusal is logged with its reason and counted ([`broker::Refusals`]);
//! nothing refused reaches SNS. What is not played: subscriptions (the
//! device policy grants none, and nothing is delivered to MQTT subscribers),
//! retained messages, QoS 2 (taken as QoS 1), and any IoT SQL or policy
//! element [`rule`] and [`policy`] do not list: those are refused when read.

pub mod broker;
pub mod ca;
pub mod local;
pub mod policy;
pub mod provision;
pub mod rule;
