//! The edge's throughput in the free-running counting runs: messages a
//! second through SNS as a gateway publishes, and over MQTT through the
//! local broker and its topic rule.

use std::fmt::Write as _;
use std::time::Duration;

use super::cost::RequestRun;

/// Messages a second from the first publish to the topic accepting the
/// last, and to the pipeline having drained, for each path.
pub(super) fn edge_throughput_table(runs: &[RequestRun]) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## The edge's throughput, locally\n\nThe same fleet (seed 5, clean traffic) published to the \
         telemetry topic two ways: SNS Publish as a gateway does, and MQTT over mutual TLS, a connection \
         and certificate per tag, QoS 1, through the local broker's policy checks and topic rule to SNS \
         (a PUBACK once the rule's SNS Publish returned). \"Accepted\" ends when the last message was \
         accepted; \"stored\" when ingest, stats and alerts had drained. Both go through moto and \
         pace publishing at 1,000 queued messages: these figures compare the two paths on this machine, \
         they are not what AWS sustains.\n"
    );
    let _ = writeln!(
        table,
        "| path | readings a message | messages | accepted (s) | messages/s accepted | stored (s) | messages/s stored |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|");
    for run in runs.iter().filter(|run| !run.stepped) {
        let summary = &run.summary;
        let path = match summary.via {
            geotag_simulation::edge::Via::Sns => "SNS Publish (gateway)",
            geotag_simulation::edge::Via::Mqtt => "MQTT → broker → rule → SNS",
        };
        let rate = |elapsed: Duration| summary.messages_published as f64 / elapsed.as_secs_f64();
        let _ = writeln!(
            table,
            "| {path} | {} | {} | {:.1} | {:.0} | {:.1} | {:.0} |",
            run.readings_per_message,
            summary.messages_published,
            summary.publishing.as_secs_f64(),
            rate(summary.publishing),
            summary.publish_to_drained.as_secs_f64(),
            rate(summary.publish_to_drained),
        );
    }
    let _ = writeln!(table);
    table
}
