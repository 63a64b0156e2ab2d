//! The SQS event source: see the [parent module](super) for its semantics.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{DEFAULT_CONCURRENCY, Gate, IDLE_POLL, PumpStats};
use crate::emulator::REGION;
use crate::invoker::Invoker;
use crate::provision::{FunctionSpec, SqsSource};

pub(super) async fn poll_sqs(
    sqs: aws_sdk_sqs::Client,
    source: SqsSource,
    function: FunctionSpec,
    invoker: Invoker,
    stats: Arc<PumpStats>,
    mut shutdown: watch::Receiver<bool>,
    mut gate: Option<Gate>,
) {
    let poller = source.queue_url.clone();
    // The step being played, in a stepped run.
    let mut step: Option<u64> = None;
    let concurrency = Arc::new(Semaphore::new(
        source
            .maximum_concurrency
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1),
    ));
    let source = Arc::new(source);
    let function = Arc::new(function);
    let mut invocations = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(gate) = gate.as_mut()
            && step.is_none()
        {
            step = gate.next_step(&poller, &mut shutdown).await;
            if step.is_none() {
                break;
            }
        }
        let Ok(permit) = Arc::clone(&concurrency).acquire_owned().await else {
            break;
        };
        // Counted before receiving, so that a batch between receive and
        // invoke never looks like a drained pipeline.
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        let batch = match gather(&sqs, &source, step.is_some()).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(queue = %source.queue_url, error = %format!("{error:#}"), "receive failed");
                Vec::new()
            }
        };
        if batch.is_empty() {
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            if let (Some(gate), Some(done)) = (&gate, step.take()) {
                gate.finish(&poller, done);
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let (sqs, source, function, invoker, stats) = (
            sqs.clone(),
            Arc::clone(&source),
            Arc::clone(&function),
            invoker.clone(),
            Arc::clone(&stats),
        );
        invocations.spawn(async move {
            if let Err(error) = invoke_and_settle(&sqs, &source, &function, &invoker, &stats, batch).await {
                tracing::warn!(function = %function.logical_id, error = %format!("{error:#}"), "settling a batch failed");
            }
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
        while invocations.try_join_next().is_some() {}
    }
    while invocations.join_next().await.is_some() {}
}

/// Receives up to `BatchSize` records within the batching window; in a
/// stepped run, until the batch is full or the queue has no more.
async fn gather(
    sqs: &aws_sdk_sqs::Client,
    source: &SqsSource,
    stepped: bool,
) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    let window = Duration::from_secs(source.batching_window_secs);
    let started = tokio::time::Instant::now();
    let mut batch = Vec::new();
    // Each held record's bytes in the event, measured once when received.
    let mut sizes: Vec<usize> = Vec::new();
    loop {
        let want = (source.batch_size - batch.len()).min(10) as i32;
        let received = sqs
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages(want)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        let got_some = !received.is_empty();
        for message in received {
            let size = serde_json::to_string(&sqs_record(&message, &source.queue_arn))
                .map_or(0, |json| json.len());
            // A record whose visibility ran out while the window was open comes
            // back; it is one record, with its newest receipt handle.
            match batch.iter().position(|held: &aws_sdk_sqs::types::Message| {
                held.message_id() == message.message_id()
            }) {
                Some(index) => (batch[index], sizes[index]) = (message, size),
                None => {
                    batch.push(message);
                    sizes.push(size);
                }
            }
        }
        let fit = super::records_that_fit(sizes.iter().copied());
        if fit < batch.len() {
            // What did not fit goes back to the queue at once, as Lambda's
            // poller returns it, for the next batch.
            for message in batch.split_off(fit) {
                sqs.change_message_visibility()
                    .queue_url(&source.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .visibility_timeout(0)
                    .send()
                    .await?;
            }
            return Ok(batch);
        }
        let window_closed = if stepped {
            !got_some
        } else {
            window.is_zero() || started.elapsed() >= window
        };
        if batch.is_empty() || batch.len() >= source.batch_size || window_closed {
            return Ok(batch);
        }
        if !got_some {
            tokio::time::sleep(IDLE_POLL).await;
        }
    }
}

async fn invoke_and_settle(
    sqs: &aws_sdk_sqs::Client,
    source: &SqsSource,
    function: &FunctionSpec,
    invoker: &Invoker,
    stats: &PumpStats,
    batch: Vec<aws_sdk_sqs::types::Message>,
) -> Result<()> {
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .map(|m| sqs_record(m, &source.queue_arn))
        .collect();
    stats.invocations.fetch_add(1, Ordering::Relaxed);
    stats
        .records_delivered
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let response = match invoker
        .invoke(function, serde_json::to_value(&event)?)
        .await
    {
        Ok(response) => response,
        Err(error) => {
            stats.function_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(function = %function.logical_id, error = %format!("{error:#}"), "function error; the batch returns after its visibility timeout");
            return Ok(());
        }
    };
    let ids: HashSet<&str> = batch.iter().filter_map(|m| m.message_id()).collect();
    let failed = if source.report_batch_item_failures {
        match failed_ids(&response, &ids) {
            Some(failed) => failed,
            None => {
                stats.function_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function = %function.logical_id, "batchItemFailures names an unknown record: the whole batch fails");
                return Ok(());
            }
        }
    } else {
        HashSet::new()
    };
    stats
        .batch_item_failures
        .fetch_add(failed.len() as u64, Ordering::Relaxed);
    let done: Vec<_> = batch
        .iter()
        .filter(|m| m.message_id().is_some_and(|id| !failed.contains(id)))
        .collect();
    for chunk in done.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, message)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = sqs
            .delete_message_batch()
            .queue_url(&source.queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
        stats
            .records_deleted
            .fetch_add(output.successful.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// The ids in a partial batch response; `None` if it names a record that is
/// not in the batch, which Lambda treats as a failure of the whole batch.
fn failed_ids(response: &Value, batch: &HashSet<&str>) -> Option<HashSet<String>> {
    let Some(failures) = response.get("batchItemFailures").and_then(Value::as_array) else {
        return Some(HashSet::new());
    };
    failures
        .iter()
        .map(|failure| {
            let id = failure.get("itemIdentifier")?.as_str()?;
            batch.contains(id).then(|| id.to_owned())
        })
        .collect()
}

/// An SQS message as the SQS event source would put it in a Lambda event.
pub fn sqs_record(message: &aws_sdk_sqs::types::Message, queue_arn: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id().map(str::to_owned);
    record.receipt_handle = message.receipt_handle().map(str::to_owned);
    record.body = message.body().map(str::to_owned);
    record.md5_of_body = message.md5_of_body().map(str::to_owned);
    record.md5_of_message_attributes = message.md5_of_message_attributes().map(str::to_owned);
    record.attributes = message
        .attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    record.message_attributes = message
        .message_attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| {
                    let mut attribute = SqsMessageAttribute::default();
                    attribute.string_value = value.string_value().map(str::to_owned);
                    attribute.string_list_values = value.string_list_values().to_vec();
                    attribute.data_type = Some(value.data_type().to_owned());
                    (name.clone(), attribute)
                })
                .collect()
        })
        .unwrap_or_default();
    record.event_source = Some("aws:sqs".to_owned());
    record.event_source_arn = Some(queue_arn.to_owned());
    record.aws_region = Some(REGION.to_owned());
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_batch_response_rules() {
        let batch: HashSet<&str> = ["a", "b"].into();
        assert_eq!(failed_ids(&Value::Null, &batch), Some(HashSet::new()));
        assert_eq!(
            failed_ids(&serde_json::json!({"batchItemFailures": []}), &batch),
            Some(HashSet::new())
        );
        assert_eq!(
            failed_ids(
                &serde_json::json!({"batchItemFailures": [{"itemIdentifier": "b"}]}),
                &batch
            ),
            Some(["b".to_owned()].into())
        );
        assert_eq!(
            failed_ids(
                &serde_json::json!({"batchItemFailures": [{"itemIdentifier": "zzz"}]}),
                &batch
            ),
            None
        );
        assert_eq!(
            failed_ids(
                &serde_json::json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
                &batch
            ),
            None
        );
    }
}
