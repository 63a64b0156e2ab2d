//! The ingest dead-letter queue, written to directly for messages that can
//! never succeed, so that they do not use up five receives first.
//!
//! Each letter carries the original body unchanged (so that it can be redriven
//! once the device or the code is fixed) and its reason as message attributes,
//! so that an operator can group the queue's contents without parsing bodies.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use geotag::store::{DeadLetter, DeadLetterSink};

/// Message attribute names on a dead-lettered message.
pub mod attr {
    pub const REASON: &str = "reason";
    pub const FIELD: &str = "field";
    pub const DETAIL: &str = "detail";
    pub const SOURCE_MESSAGE_ID: &str = "source_message_id";
    pub const REJECTED_READINGS: &str = "rejected_readings";
    pub const STORED_READINGS: &str = "stored_readings";
    /// On what `geotag redrive` sends back to the ingest queue: the queue it
    /// came from. Ingest admits such messages past the tags' budget.
    pub const REDRIVEN_FROM: &str = "redriven_from";
}

/// SendMessageBatch's limits: entries per call, and total payload bytes.
const MAX_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Attribute values are kept short: they are for grouping, the body has the rest.
const MAX_DETAIL_CHARS: usize = 500;
/// SQS refuses empty bodies; a record that arrived without one is sent as this.
pub const EMPTY_BODY_PLACEHOLDER: &str = "(empty body)";

#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsDeadLetters {
            client,
            queue_url: queue_url.into(),
        }
    }

    async fn send_batch(&self, letters: &[&DeadLetter]) -> Vec<String> {
        let entries: Vec<_> = letters
            .iter()
            .enumerate()
            .filter_map(|(index, letter)| entry(index, letter).ok())
            .collect();
        let all_ids = || {
            letters
                .iter()
                .map(|l| l.source_message_id.clone())
                .collect()
        };
        if entries.len() != letters.len() {
            return all_ids();
        }
        match self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(output) => output
                .failed()
                .iter()
                .filter_map(|failure| failure.id().parse::<usize>().ok())
                .filter_map(|index| letters.get(index))
                .map(|letter| letter.source_message_id.clone())
                .collect(),
            Err(error) => {
                tracing::warn!(
                    error = %aws_sdk_sqs::error::DisplayErrorContext(&error),
                    letters = letters.len(),
                    "dead-letter send failed; the messages will be retried"
                );
                all_ids()
            }
        }
    }
}

impl DeadLetterSink for SqsDeadLetters {
    async fn send(&self, letters: &[DeadLetter]) -> Vec<String> {
        let mut failed = Vec::new();
        let mut batch: Vec<&DeadLetter> = Vec::new();
        let mut batch_bytes = 0;
        for letter in letters {
            let size = letter_size(letter);
            if !batch.is_empty()
                && (batch.len() == MAX_ENTRIES || batch_bytes + size > MAX_BATCH_BYTES)
            {
                failed.extend(self.send_batch(&batch).await);
                batch.clear();
                batch_bytes = 0;
            }
            batch.push(letter);
            batch_bytes += size;
        }
        if !batch.is_empty() {
            failed.extend(self.send_batch(&batch).await);
        }
        failed
    }
}

fn letter_size(letter: &DeadLetter) -> usize {
    // Body plus a generous bound for the attributes' names and values.
    letter.body.len().max(EMPTY_BODY_PLACEHOLDER.len()) + 1024
}

fn entry(
    index: usize,
    letter: &DeadLetter,
) -> Result<SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError> {
    let text = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
    };
    let count = |value: usize| {
        MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(value.to_string())
            .build()
    };
    let detail: String = letter
        .rejection
        .detail
        .chars()
        .take(MAX_DETAIL_CHARS)
        .collect();
    let body = if letter.body.is_empty() {
        EMPTY_BODY_PLACEHOLDER
    } else {
        &letter.body
    };
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(body)
        .message_attributes(attr::REASON, text(letter.rejection.reason.code())?)
        .message_attributes(attr::FIELD, text(&letter.rejection.field)?)
        .message_attributes(attr::DETAIL, text(&detail)?)
        .message_attributes(attr::SOURCE_MESSAGE_ID, text(&letter.source_message_id)?)
        .message_attributes(attr::REJECTED_READINGS, count(letter.rejected_readings)?)
        .message_attributes(attr::STORED_READINGS, count(letter.stored_readings)?)
        .build()
}
