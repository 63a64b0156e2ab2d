//! The SQS event as ingest reads it: lean, each record's id, body and the
//! one attribute that matters.

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use serde::Deserialize;

/// An SQS event as ingest reads it: each record's message id, body, and
/// whether `geotag redrive` sent it.
///
/// `aws_lambda_events::sqs::SqsEvent` also parses every record's attributes,
/// ARNs, digests and receipt handle, a dozen allocations a record that ingest
/// never reads; on a 10,000-record batch that was a fifth of the handler's
/// time. The rest of each record is skipped by the parser.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IngestEvent {
    #[serde(rename = "Records")]
    pub records: Vec<IngestRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IngestRecord {
    #[serde(rename = "messageId")]
    pub message_id: Option<String>,
    pub body: Option<String>,
    #[serde(rename = "messageAttributes", default)]
    pub message_attributes: Option<RecordAttributes>,
}

/// The one message attribute ingest reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RecordAttributes {
    /// Set by `geotag redrive` ([`geotag_aws::dead_letters::attr::REDRIVEN_FROM`]).
    #[serde(rename = "redriven_from")]
    pub redriven_from: Option<StringAttribute>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StringAttribute {
    #[serde(rename = "stringValue")]
    pub string_value: Option<String>,
}

impl IngestRecord {
    /// Whether an operator sent this record back with `geotag redrive`.
    pub fn redriven(&self) -> bool {
        self.message_attributes
            .as_ref()
            .and_then(|attributes| attributes.redriven_from.as_ref())
            .is_some()
    }
}

impl From<SqsMessage> for IngestRecord {
    fn from(mut message: SqsMessage) -> Self {
        let redriven_from = message
            .message_attributes
            .remove(geotag_aws::dead_letters::attr::REDRIVEN_FROM)
            .map(|attribute| StringAttribute {
                string_value: attribute.string_value,
            });
        IngestRecord {
            message_id: message.message_id,
            body: message.body,
            message_attributes: Some(RecordAttributes { redriven_from }),
        }
    }
}

impl From<SqsEvent> for IngestEvent {
    fn from(event: SqsEvent) -> Self {
        IngestEvent {
            records: event.records.into_iter().map(IngestRecord::from).collect(),
        }
    }
}
