//! The fleet published as a server-side gateway does (`--via sns`): SNS
//! PublishBatch, ten messages a call, each in its edge envelope.

use anyhow::Result;
use aws_sdk_sns::types::PublishBatchRequestEntry;

use crate::pace::{Pace, progress_bar};
use crate::simulate::Message;

/// Publishes the plan's messages to `topic_arn`, ten per PublishBatch call.
pub async fn publish(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    messages: &[Message],
    progress: bool,
    pace: Option<&Pace>,
) -> Result<()> {
    let bar = progress_bar(progress, messages.len(), "")?;
    for (index, chunk) in messages.chunks(10).enumerate() {
        if let Some(pace) = pace {
            if index % 20 == 0 {
                pace.hold().await?;
            }
            pace.until(chunk[0].send_ms).await;
        }
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, message)| {
                PublishBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message(message.gateway_body(geotag::clock::now_ms()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = sns
            .publish_batch()
            .topic_arn(topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await?;
        if !output.failed().is_empty() {
            anyhow::bail!(
                "SNS refused {} messages: {:?}",
                output.failed().len(),
                output.failed()
            );
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}
