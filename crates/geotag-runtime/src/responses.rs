//! The answers a batch function gives Lambda: the records to deliver again.
//! `aws_lambda_events`' response types are `#[non_exhaustive]`, so they are
//! built from `Default` here, once, rather than in every handler.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

/// An SQS batch's answer: the message ids to deliver again.
pub fn sqs_batch_response(
    failed_message_ids: impl IntoIterator<Item = String>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed_message_ids
        .into_iter()
        .map(|message_id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            failure
        })
        .collect();
    response
}

/// A DynamoDB stream batch's answer: the sequence numbers to retry from
/// (Lambda retries from the lowest).
pub fn stream_batch_response(
    failed_sequence_numbers: impl IntoIterator<Item = String>,
) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = failed_sequence_numbers
        .into_iter()
        .map(|sequence| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence);
            failure
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_serialise_as_lambda_reads_them() {
        let sqs = serde_json::to_value(sqs_batch_response(["m-1".to_owned()])).unwrap();
        assert_eq!(
            sqs,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
        );
        let stream = serde_json::to_value(stream_batch_response(Vec::new())).unwrap();
        assert_eq!(stream, serde_json::json!({"batchItemFailures": []}));
    }
}
