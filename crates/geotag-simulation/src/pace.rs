//! What the publishers share: backpressure from the ingest queue's depth,
//! and the progress bar; and publishing in steps, for the pump's stepped
//! runs.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// Backpressure for the publishers ([`crate::gateway::publish`], [`crate::mqtt::Fleet::publish`]): wait while a queue holds more than
/// `max_depth` messages. The emulator slows down as its queues grow (it reads
/// them linearly), so a large run publishes about as fast as ingest drains.
#[derive(Debug, Clone)]
pub struct Pace {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub max_depth: u64,
    /// Publish at the readings' own pace, this many times faster; `None`:
    /// as fast as the queue's depth allows.
    pub schedule: Option<Schedule>,
}

/// The readings' clock played on the wall clock: the message a tag sends
/// at `first_send_ms + speedup × t` goes out `t` after `started`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub first_send_ms: i64,
    pub speedup: f64,
    pub started: std::time::Instant,
}

impl Pace {
    /// Waits until a message the tag sends at `send_ms` is due.
    pub async fn until(&self, send_ms: i64) {
        let Some(schedule) = self.schedule else {
            return;
        };
        let since_first_ms = (send_ms - schedule.first_send_ms).max(0) as f64;
        let due = schedule.started
            + std::time::Duration::from_secs_f64(
                since_first_ms / 1000.0 / schedule.speedup.max(1e-6),
            );
        tokio::time::sleep_until(due.into()).await;
    }

    /// Waits while the queue is deeper than `max_depth`.
    pub async fn hold(&self) -> Result<()> {
        while geotag_local_cloud::pump::queue_depth(&self.sqs, &self.queue_url).await?
            > self.max_depth
        {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

/// The publishing progress bar (hidden unless `shown`); `how` says by what path.
pub fn progress_bar(shown: bool, messages: usize, how: &str) -> Result<ProgressBar> {
    if !shown {
        return Ok(ProgressBar::hidden());
    }
    Ok(
        ProgressBar::new(messages as u64).with_style(ProgressStyle::with_template(&format!(
            "  publishing {{bar:30}} {{pos}}/{{len}} messages{how} ({{per_sec}}, {{eta}} left)"
        ))?),
    )
}

/// The functions a stepped run opens in turn, in the flow's order; none
/// when the run is not stepped.
pub fn stepped_stages(step: Option<std::time::Duration>) -> Vec<String> {
    match step {
        Some(_) => ["IngestFunction", "StatsFunction", "AlertsFunction"]
            .map(str::to_owned)
            .to_vec(),
        None => Vec::new(),
    }
}

/// Publishes `messages` a `step` of the fleet's time at a time (by the
/// time each tag sends its message), each step whole, then lets the pump's
/// stepped run take it through ingest, stats and alerts in turn before the
/// next (see `geotag_local_cloud::pump`).
pub async fn publish_in_steps(
    edge: &crate::edge::Edge,
    messages: &[crate::simulate::Message],
    step: std::time::Duration,
    pump: &geotag_local_cloud::pump::Pump,
    timeout: std::time::Duration,
) -> Result<()> {
    let step_ms = step.as_millis().max(1) as i64;
    let first_ms = messages.iter().map(|m| m.send_ms).min().unwrap_or(0);
    let mut steps: std::collections::BTreeMap<i64, Vec<crate::simulate::Message>> =
        std::collections::BTreeMap::new();
    for message in messages {
        let index = (message.send_ms - first_ms) / step_ms;
        steps.entry(index).or_default().push(message.clone());
    }
    println!(
        "  stepped     {} steps of {step:?} of the fleet's time: each published whole, then taken by ingest, stats and alerts in turn, in batches of their BatchSize",
        steps.len()
    );
    for step_messages in steps.values() {
        edge.publish(step_messages, false, None).await?;
        pump.play_step(timeout).await?;
    }
    Ok(())
}
