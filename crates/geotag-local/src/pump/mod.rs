//! The pump: plays the part of Lambda's event source mappings, with their
//! documented semantics, for the event sources template.yaml declares.
//!
//! # SQS event sources
//!
//! As the Lambda service does for an SQS trigger
//! (<https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html>):
//!
//! - up to `BatchSize` records per invocation, gathered for at most
//!   `MaximumBatchingWindowInSeconds` (with no window, whatever one receive
//!   returns is invoked at once);
//! - at most `ScalingConfig.MaximumConcurrency` invocations in flight;
//! - receiving makes records invisible for the queue's visibility timeout;
//!   after the invocation the pump deletes the records that succeeded. With
//!   `ReportBatchItemFailures`, those named in `batchItemFailures` are left for
//!   SQS to deliver again once their visibility timeout runs out; an answer
//!   naming a record that is not in the batch (or an empty id) fails the whole
//!   batch, as Lambda does. A function error deletes nothing.
//! - the queue's redrive policy, applied by SQS itself (moto), moves a record
//!   to the dead-letter queue after `maxReceiveCount` receives.
//!
//! The records a handler sees are built by [`sqs_record`] with the fields the
//! Lambda service sets, so a handler cannot tell the local stack from AWS.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use futures::future::BoxFuture;
use geotag_aws::clients::SdkConfig;
use geotag_aws::{DynamoReadingStore, SqsDeadLetters};
use geotag_ingest::Ingest;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::emulator::REGION;
use crate::provision::{EventSource, FunctionSpec, SqsSource, Stack};

/// How long an idle poller waits before asking an empty queue again.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Lambda's default when `ScalingConfig` is absent is "as many as the account
/// allows"; locally a handful keeps moto responsive.
const DEFAULT_CONCURRENCY: usize = 5;

/// Counters of what the pump did, shared with the report.
#[derive(Debug, Default)]
pub struct PumpStats {
    pub invocations: AtomicU64,
    pub records_delivered: AtomicU64,
    pub records_deleted: AtomicU64,
    pub batch_item_failures: AtomicU64,
    pub function_errors: AtomicU64,
    pub in_flight: AtomicU64,
}

impl PumpStats {
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        [
            ("invocations", &self.invocations),
            ("records delivered", &self.records_delivered),
            ("records deleted", &self.records_deleted),
            ("batch item failures", &self.batch_item_failures),
            ("function errors", &self.function_errors),
        ]
        .into_iter()
        .map(|(name, counter)| (name, counter.load(Ordering::Relaxed)))
        .collect()
    }
}

/// How functions are run.
#[derive(Clone)]
pub enum Invoker {
    /// The handlers, linked into this binary, called directly.
    InProcess(Arc<InProcess>),
    /// The Lambda Invoke API at an endpoint: `cargo lambda watch`, or AWS.
    Remote(aws_sdk_lambda::Client),
    /// Any function of (function, event) to response: for tests of the pump itself.
    Closure(Arc<FunctionOfEvent>),
}

/// A function body for [`Invoker::Closure`]: (function, event) to response.
pub type FunctionOfEvent =
    dyn Fn(&FunctionSpec, Value) -> BoxFuture<'static, Result<Value>> + Send + Sync;

/// The handlers this binary can run in-process, keyed by cargo binary name.
pub struct InProcess {
    ingest: Option<Ingest<DynamoReadingStore, SqsDeadLetters>>,
}

impl InProcess {
    /// Builds each function's handler from its template environment, as the
    /// function's `main` would from its Lambda environment.
    pub fn for_stack(stack: &Stack, sdk: &SdkConfig) -> Result<InProcess> {
        let mut handlers = InProcess { ingest: None };
        for function in stack.functions.values() {
            let lookup = |name: &str| function.environment.get(name).cloned();
            match function.binary.as_str() {
                "ingest" => {
                    let config = geotag_ingest::Config::from_lookup(lookup)
                        .with_context(|| format!("configuring {}", function.logical_id))?;
                    handlers.ingest = Some(geotag_ingest::on_aws(sdk, &config));
                }
                other => bail!(
                    "no in-process handler for binary {other:?} ({}); run it with --invoke-endpoint",
                    function.logical_id
                ),
            }
        }
        Ok(handlers)
    }

    async fn call(
        &self,
        function: &FunctionSpec,
        payload: Value,
        context: Context,
    ) -> Result<Value> {
        match function.binary.as_str() {
            "ingest" => {
                let ingest = self
                    .ingest
                    .as_ref()
                    .ok_or_else(|| anyhow!("ingest is not configured"))?;
                let event: SqsEvent = serde_json::from_value(payload)?;
                let response = geotag_ingest::handle(ingest, LambdaEvent::new(event, context))
                    .await
                    .map_err(|error| anyhow!("{error}"))?;
                Ok(serde_json::to_value(response)?)
            }
            other => bail!("no in-process handler for {other}"),
        }
    }
}

impl Invoker {
    /// Runs `function` once on `payload`; `Err` is a function error.
    pub async fn invoke(&self, function: &FunctionSpec, payload: Value) -> Result<Value> {
        match self {
            Invoker::InProcess(handlers) => {
                let mut context = Context::default();
                context.request_id = request_id();
                context.deadline = epoch_ms() + function.timeout_secs * 1000;
                context.invoked_function_arn = format!(
                    "arn:aws:lambda:{REGION}:123456789012:function:{}",
                    function.name
                );
                let handlers = Arc::clone(handlers);
                let function = function.clone();
                // A panicking handler is a function error, as in Lambda, not a dead pump.
                tokio::spawn(async move { handlers.call(&function, payload, context).await })
                    .await
                    .map_err(|join| anyhow!("the handler panicked: {join}"))?
            }
            Invoker::Remote(client) => {
                let output = client
                    .invoke()
                    .function_name(&function.binary)
                    .payload(aws_smithy_types::Blob::new(serde_json::to_vec(&payload)?))
                    .send()
                    .await
                    .with_context(|| {
                        format!("invoking {} through the Lambda API", function.binary)
                    })?;
                let body = output
                    .payload
                    .map(|blob| blob.into_inner())
                    .unwrap_or_default();
                if let Some(kind) = output.function_error {
                    bail!("{kind}: {}", String::from_utf8_lossy(&body));
                }
                if body.is_empty() {
                    return Ok(Value::Null);
                }
                Ok(serde_json::from_slice(&body)?)
            }
            Invoker::Closure(function_of) => function_of(function, payload).await,
        }
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn request_id() -> String {
    let mut rng = fastrand::Rng::new();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rng.u32(..),
        rng.u16(..),
        rng.u16(..0x1000),
        rng.u16(..0x1000),
        rng.u64(..1 << 48)
    )
}

/// The running pump: one poller per event source.
pub struct Pump {
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    pub stats: Arc<PumpStats>,
    queues: Vec<String>,
    sqs: aws_sdk_sqs::Client,
}

impl Pump {
    /// Starts polling every event source of every function in `stack`.
    pub fn start(stack: &Stack, sdk: &SdkConfig, invoker: Invoker) -> Pump {
        let (shutdown, watcher) = watch::channel(false);
        let stats = Arc::new(PumpStats::default());
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let mut tasks = JoinSet::new();
        let mut queues = Vec::new();
        for function in stack.functions.values() {
            for source in &function.events {
                match source {
                    EventSource::Sqs(source) => {
                        queues.push(source.queue_url.clone());
                        tasks.spawn(poll_sqs(
                            sqs.clone(),
                            source.clone(),
                            function.clone(),
                            invoker.clone(),
                            Arc::clone(&stats),
                            watcher.clone(),
                        ));
                    }
                }
            }
        }
        Pump {
            tasks,
            shutdown,
            stats,
            queues,
            sqs,
        }
    }

    /// Whether every source queue is empty (visible and in flight) and no
    /// invocation is running.
    pub async fn is_drained(&self) -> Result<bool> {
        if self.stats.in_flight.load(Ordering::SeqCst) > 0 {
            return Ok(false);
        }
        for queue in &self.queues {
            if queue_depth(&self.sqs, queue).await? > 0 {
                return Ok(false);
            }
        }
        Ok(self.stats.in_flight.load(Ordering::SeqCst) == 0)
    }

    /// Waits until [`Pump::is_drained`] holds twice in a row, or `timeout`.
    pub async fn wait_drained(&self, timeout: Duration) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut confirmations = 0;
        while confirmations < 2 {
            if started.elapsed() > timeout {
                bail!("the pipeline did not drain within {timeout:?}");
            }
            if self.is_drained().await? {
                confirmations += 1;
            } else {
                confirmations = 0;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stops polling and waits for invocations in flight to finish.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Messages in a queue: visible, in flight and delayed.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<u64> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await?
        .attributes
        .unwrap_or_default();
    Ok(attributes
        .values()
        .filter_map(|value| value.parse::<u64>().ok())
        .sum())
}

async fn poll_sqs(
    sqs: aws_sdk_sqs::Client,
    source: SqsSource,
    function: FunctionSpec,
    invoker: Invoker,
    stats: Arc<PumpStats>,
    mut shutdown: watch::Receiver<bool>,
) {
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
        let Ok(permit) = Arc::clone(&concurrency).acquire_owned().await else {
            break;
        };
        // Counted before receiving, so that a batch between receive and
        // invoke never looks like a drained pipeline.
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        let batch = match gather(&sqs, &source).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(queue = %source.queue_url, error = %format!("{error:#}"), "receive failed");
                Vec::new()
            }
        };
        if batch.is_empty() {
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
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

/// Receives up to `BatchSize` records within the batching window.
async fn gather(
    sqs: &aws_sdk_sqs::Client,
    source: &SqsSource,
) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    let window = Duration::from_secs(source.batching_window_secs);
    let started = tokio::time::Instant::now();
    let mut batch = Vec::new();
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
            // A record whose visibility ran out while the window was open comes
            // back; it is one record, with its newest receipt handle.
            match batch
                .iter_mut()
                .find(|held: &&mut aws_sdk_sqs::types::Message| {
                    held.message_id() == message.message_id()
                }) {
                Some(held) => *held = message,
                None => batch.push(message),
            }
        }
        if batch.is_empty()
            || batch.len() >= source.batch_size
            || window.is_zero()
            || started.elapsed() >= window
        {
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
