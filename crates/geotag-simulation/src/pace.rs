//! What the publishers share: backpressure from the ingest queue's depth,
//! and the progress bar.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// Backpressure for the publishers ([`crate::simulate::publish`], [`crate::mqtt::Fleet::publish`]): wait while a queue holds more than
/// `max_depth` messages. The emulator slows down as its queues grow (it reads
/// them linearly), so a large run publishes about as fast as ingest drains.
#[derive(Debug, Clone)]
pub struct Pace {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub max_depth: u64,
}

impl Pace {
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
