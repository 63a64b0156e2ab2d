//! A run's verdict in figures: what the demo, the chaos run and the
//! benchmarks' counting runs report and assert on.

use std::collections::BTreeMap;

use crate::cost::WriteUnits;
use crate::metrics::MetricTotals;

/// A run's verdict, in figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub ok: bool,
    /// What the flooding tag sent, stored and had parked, and the other
    /// tags' delay, when the run had a flood.
    pub flood: Option<crate::flood_audit::FloodFindings>,
    /// Valid readings not stored or not counted, malformed messages not
    /// dead-lettered, alerts deserved and not published.
    pub lost: u64,
    /// Readings counted more than once in DeviceStats, alerts published more
    /// than once.
    pub double_counted: u64,
    pub faults_injected: u64,
    /// Of those, writes AWS applied whose answer was lost.
    pub answers_lost: u64,
    pub crashes: u64,
    /// Refused messages dead-lettered more than once (a crash after the
    /// dead-letter send): at-least-once, told apart by `source_message_id`.
    pub dead_letter_repeats: u64,
    /// Device messages published to the telemetry topic, duplicates included.
    pub messages_published: u64,
    pub readings_stored: u64,
    /// Function invocations the pump made.
    pub invocations: u64,
    /// The functions' AWS requests by (service, operation), refused ones included.
    pub requests: BTreeMap<(String, String), u64>,
    /// DynamoDB write units the functions' writes cost, by table name.
    pub write_units: BTreeMap<String, WriteUnits>,
    /// Keys the functions read by GetItem and BatchGetItem, by table name.
    pub keys_read: BTreeMap<String, u64>,
    /// The functions' EMF metrics, summed (in-process runs only).
    pub metrics: MetricTotals,
    /// The HTML map of the run (`target/geotag/report.html`).
    pub report: Option<std::path::PathBuf>,
    /// How the fleet's messages reached the telemetry topic.
    pub via: crate::edge::Via,
    /// The fleet's messages as IoT Core's pricing meters each MQTT PUBLISH
    /// from a device, and each rule it triggers: in 5 KB units of topic and
    /// payload ([`iot_metered_units`]).
    pub iot_metered_units: u64,
    /// From the first publish until the last was accepted (by SNS, or for
    /// MQTT by the broker once its rule had published it).
    pub publishing: std::time::Duration,
    /// From the first publish until every message had been through ingest
    /// and the stream functions.
    pub publish_to_drained: std::time::Duration,
}

/// IoT Core meters messages and rules in 5 KB steps.
pub const IOT_METERING_BYTES: u64 = 5 * 1024;

/// The units IoT Core bills a message on `topic` carrying `payload` as.
pub fn iot_metered_units(topic: &str, payload: &str) -> u64 {
    ((topic.len() + payload.len()) as u64)
        .div_ceil(IOT_METERING_BYTES)
        .max(1)
}
