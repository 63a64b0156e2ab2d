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
//! - never more than Lambda's 6 MB invocation payload
//!   ([`INVOCATION_PAYLOAD_LIMIT`]): records received past it are made visible
//!   again at once for the next batch (stream records wait in the shard's
//!   queue), so a batch of backlogs near 256 KiB each is split, not refused;
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
//! The records a handler sees are built by [`sqs::sqs_record`] with the fields
//! the Lambda service sets, so a handler cannot tell the local stack from AWS.
//!
//! DynamoDB streams and schedules are played by [`stream`] and [`schedule`],
//! whose documentation gives their semantics; [`filter`] implements event
//! filtering patterns.
//!
//! # Stepped runs
//!
//! Free-running, the pump's batches depend on how fast moto, the publisher
//! and the functions happen to be: two runs of the same fleet batch it
//! differently, and the requests a reading costs change with it (stats'
//! work is per tag and batch). A stepped run ([`PumpOptions::stages`])
//! plays batching exactly instead: the caller publishes a step of traffic
//! (a minute of the fleet's readings, say) and calls [`Pump::play_step`],
//! which opens the named functions' event sources one after another in the
//! flow's order, each taking everything its source holds in batches of
//! `BatchSize` (a batch ends when it is full or the source has no more, never
//! on a timer), and waits for each to finish before opening the next. That is
//! what Lambda delivers when every source's batching window covers the step
//! and its `BatchSize` is the only limit.

pub mod filter;
pub mod schedule;
pub mod sqs;
pub mod stream;

pub use sqs::sqs_record;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use geotag_aws::clients::SdkConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::invoker::Invoker;
use crate::provision::{EventSource, Stack};

/// Lambda's limit on a synchronous invocation's payload: an event source
/// stops adding records to a batch before it would pass this, whatever its
/// `BatchSize` (ten 256 KiB messages are 2.5 MB; a hundred are not).
pub const INVOCATION_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// How many of `sizes` (each record's bytes in the event, in order) one
/// invocation takes: as many as fit in [`INVOCATION_PAYLOAD_LIMIT`] with the
/// event's own envelope, and always at least one.
pub fn records_that_fit(sizes: impl IntoIterator<Item = usize>) -> usize {
    // `{"Records":[` ... `]}` and a comma between records.
    let mut total = 14;
    let mut taken = 0;
    for size in sizes {
        total += size + 1;
        if taken > 0 && total > INVOCATION_PAYLOAD_LIMIT {
            break;
        }
        taken += 1;
    }
    taken
}

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
    /// Stream shards with records read but not yet processed, shards not yet
    /// read to their end once, and streams whose shards are not yet listed.
    pub busy_streams: AtomicU64,
    pub records_filtered_out: AtomicU64,
    /// Stream records whose batch exhausted its retries (sent to OnFailure).
    pub records_given_up: AtomicU64,
    /// Stream records older than `MaximumRecordAgeInSeconds` (sent to OnFailure).
    pub records_expired: AtomicU64,
    pub schedule_ticks: AtomicU64,
}

impl PumpStats {
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        [
            ("invocations", &self.invocations),
            ("records delivered", &self.records_delivered),
            ("records deleted", &self.records_deleted),
            ("batch item failures", &self.batch_item_failures),
            ("function errors", &self.function_errors),
            ("stream records filtered out", &self.records_filtered_out),
            ("stream records given up", &self.records_given_up),
            ("stream records expired", &self.records_expired),
            ("schedule ticks", &self.schedule_ticks),
        ]
        .into_iter()
        .map(|(name, counter)| (name, counter.load(Ordering::Relaxed)))
        .collect()
    }
}

/// How the pump plays time.
#[derive(Debug, Clone)]
pub struct PumpOptions {
    /// Schedules run this many times faster than their rate says.
    pub time_scale: f64,
    /// Whether schedules tick. A demo that plays an hour of readings in
    /// seconds turns them off: a silence check in the middle of compressed
    /// time would find every tag silent. It fires the check itself at the end.
    pub play_schedules: bool,
    /// Plays a split of every stream shard after this many of its records,
    /// as DynamoDB splits a hot partition's shard (see [`stream`]).
    pub split_shards_after: Option<usize>,
    /// A stepped run (see the module): the functions (logical ids) whose
    /// event sources wait for [`Pump::play_step`], in the order it opens
    /// them. Empty: every source runs free.
    pub stages: Vec<String>,
}

impl Default for PumpOptions {
    fn default() -> Self {
        PumpOptions {
            time_scale: 1.0,
            play_schedules: true,
            split_shards_after: None,
            stages: Vec::new(),
        }
    }
}

/// A stepped run's hold on one function's event sources: each of its pollers
/// takes records only while a step it has not finished is open.
#[derive(Clone)]
pub(crate) struct Gate {
    opened: watch::Receiver<u64>,
    /// The last step each poller (by name) finished.
    finished: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

impl Gate {
    /// Waits for a step `poller` has not finished; `None` once shut down.
    pub(crate) async fn next_step(
        &mut self,
        poller: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<u64> {
        let done = *self
            .finished
            .lock()
            .expect("gate lock")
            .entry(poller.to_owned())
            .or_insert(0);
        loop {
            let open = *self.opened.borrow_and_update();
            if open > done {
                return Some(open);
            }
            if *shutdown.borrow() {
                return None;
            }
            tokio::select! {
                changed = self.opened.changed() => if changed.is_err() { return None },
                _ = shutdown.changed() => {}
            }
        }
    }

    /// `poller` has taken every record of `step` its source held.
    pub(crate) fn finish(&self, poller: &str, step: u64) {
        self.finished
            .lock()
            .expect("gate lock")
            .insert(poller.to_owned(), step);
    }
}

/// The pump's side of a [`Gate`].
struct Stage {
    function: String,
    open: watch::Sender<u64>,
    finished: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

/// The running pump: one poller per event source.
pub struct Pump {
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    pub stats: Arc<PumpStats>,
    queues: Vec<String>,
    sqs: aws_sdk_sqs::Client,
    stages: Vec<Stage>,
}

impl Pump {
    /// Starts polling every event source of every function in `stack`.
    pub fn start(stack: &Stack, sdk: &SdkConfig, invoker: Invoker) -> Pump {
        Pump::start_with(stack, sdk, invoker, PumpOptions::default())
    }

    pub fn start_with(
        stack: &Stack,
        sdk: &SdkConfig,
        invoker: Invoker,
        options: PumpOptions,
    ) -> Pump {
        let (shutdown, watcher) = watch::channel(false);
        let stats = Arc::new(PumpStats::default());
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
        let mut tasks = JoinSet::new();
        let mut queues = Vec::new();
        let stages: Vec<Stage> = (options.stages.iter())
            .map(|function| Stage {
                function: function.clone(),
                open: watch::channel(0).0,
                finished: Arc::default(),
            })
            .collect();
        let gate_of = |function: &str| {
            (stages.iter().find(|stage| stage.function == function)).map(|stage| Gate {
                opened: stage.open.subscribe(),
                finished: Arc::clone(&stage.finished),
            })
        };
        for function in stack.functions.values() {
            let gate = gate_of(&function.logical_id);
            for source in &function.events {
                match source {
                    EventSource::Sqs(source) => {
                        queues.push(source.queue_url.clone());
                        tasks.spawn(sqs::poll_sqs(
                            sqs.clone(),
                            source.clone(),
                            function.clone(),
                            invoker.clone(),
                            Arc::clone(&stats),
                            watcher.clone(),
                            gate.clone(),
                        ));
                    }
                    EventSource::DynamoDb(source) => {
                        let poller = stream::StreamPoller {
                            streams: streams.clone(),
                            sqs: sqs.clone(),
                            source: source.clone(),
                            function: function.clone(),
                            invoker: invoker.clone(),
                            stats: Arc::clone(&stats),
                            split_after: options.split_shards_after,
                            gate: gate.clone(),
                        };
                        // Busy until its first look at the stream: records
                        // written before the pump started are not yet read,
                        // and the pipeline is not drained while they wait.
                        stats.busy_streams.fetch_add(1, Ordering::SeqCst);
                        tasks.spawn(poller.run(watcher.clone()));
                    }
                    // Requests come from the local API, not from a poller.
                    EventSource::HttpApi(_) => {}
                    EventSource::Schedule(_) if !options.play_schedules => {}
                    EventSource::Schedule(source) => {
                        tasks.spawn(schedule::run_schedule(
                            source.clone(),
                            function.clone(),
                            invoker.clone(),
                            Arc::clone(&stats),
                            options.time_scale,
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
            stages,
        }
    }

    /// A stepped run's step (see the module): opens each stage's event
    /// sources in turn, waits until each of its pollers has taken all its
    /// source held and every invocation has ended, then opens the next.
    /// Fails if the pipeline is not drained at the end: a stepped run plays
    /// clean traffic, and a record left for a retry would wait for a later
    /// step, which is not the batching it claims to play.
    pub async fn play_step(&self, timeout: Duration) -> Result<()> {
        let started = tokio::time::Instant::now();
        for stage in &self.stages {
            let step = *stage.open.borrow() + 1;
            stage.open.send_replace(step);
            loop {
                let finished = {
                    let finished = stage.finished.lock().expect("gate lock");
                    !finished.is_empty() && finished.values().all(|done| *done >= step)
                };
                if finished
                    && self.stats.in_flight.load(Ordering::SeqCst) == 0
                    && self.stats.busy_streams.load(Ordering::SeqCst) == 0
                {
                    break;
                }
                if started.elapsed() > timeout {
                    bail!(
                        "{}'s event sources did not finish step {step} within {timeout:?}",
                        stage.function
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if !self.is_drained().await? {
            bail!(
                "records are left after a step (a failure waiting for its retry): a stepped run expects clean traffic"
            );
        }
        Ok(())
    }

    /// Whether every source queue is empty (visible and in flight) and no
    /// invocation is running.
    pub async fn is_drained(&self) -> Result<bool> {
        if self.stats.in_flight.load(Ordering::SeqCst) > 0
            || self.stats.busy_streams.load(Ordering::SeqCst) > 0
        {
            return Ok(false);
        }
        for queue in &self.queues {
            if queue_depth(&self.sqs, queue).await? > 0 {
                return Ok(false);
            }
        }
        Ok(self.stats.in_flight.load(Ordering::SeqCst) == 0
            && self.stats.busy_streams.load(Ordering::SeqCst) == 0)
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

/// Every message in a queue, each once: received with their attributes and a
/// visibility timeout long enough that none comes back before the queue is
/// empty (for audits and tests; nothing is deleted).
pub async fn read_whole_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    let mut all = Vec::new();
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(600)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            return Ok(all);
        }
        all.extend(messages);
    }
}

#[cfg(test)]
mod tests {
    use super::{INVOCATION_PAYLOAD_LIMIT, records_that_fit};

    #[test]
    fn a_batch_stops_before_lambdas_payload_limit() {
        let message = 256 * 1024 + 900;
        assert_eq!(records_that_fit([message; 100]), 23);
        assert!(23 * (message + 1) + 14 <= INVOCATION_PAYLOAD_LIMIT);
        assert_eq!(records_that_fit([500; 100]), 100);
        assert_eq!(records_that_fit([7 * 1024 * 1024]), 1, "never none");
        assert_eq!(records_that_fit([]), 0);
    }
}
