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
//! The records a handler sees are built by [`sqs::sqs_record`] with the fields
//! the Lambda service sets, so a handler cannot tell the local stack from AWS.
//!
//! DynamoDB streams and schedules are played by [`stream`] and [`schedule`],
//! whose documentation gives their semantics; [`filter`] implements event
//! filtering patterns.

pub mod filter;
pub mod schedule;
pub mod sqs;
pub mod stream;

pub use sqs::sqs_record;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use futures::future::BoxFuture;
use geotag_aws::clients::SdkConfig;
use geotag_aws::{DynamoReadingStore, SqsDeadLetters};
use geotag_ingest::Ingest;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::emulator::REGION;
use crate::provision::{EventSource, FunctionSpec, Stack};

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
    /// Stream shards with records read but not yet processed.
    pub busy_streams: AtomicU64,
    pub records_filtered_out: AtomicU64,
    /// Stream records whose batch exhausted its retries (sent to OnFailure).
    pub records_given_up: AtomicU64,
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
            ("schedule ticks", &self.schedule_ticks),
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
    stats: Option<geotag_stats::Stats<geotag_aws::DynamoStatsStore, DynamoReadingStore>>,
    alerts: Option<geotag_alerts::OnAws>,
    /// The EMF lines the handlers wrote, as CloudWatch Logs would receive them.
    metric_lines: Arc<Mutex<Vec<String>>>,
}

impl InProcess {
    /// Builds each function's handler from its template environment, as the
    /// function's `main` would from its Lambda environment.
    pub fn for_stack(stack: &Stack, sdk: &SdkConfig) -> Result<InProcess> {
        let mut handlers = InProcess {
            ingest: None,
            stats: None,
            alerts: None,
            metric_lines: Arc::default(),
        };
        for function in stack.functions.values() {
            // What Lambda adds to the template's environment.
            let lookup = |name: &str| match name {
                "AWS_LAMBDA_FUNCTION_NAME" => Some(function.name.clone()),
                _ => function.environment.get(name).cloned(),
            };
            let metrics = |settings: &geotag_aws::emf::Settings| {
                geotag_aws::emf::Emitter::new(settings.clone()).with_sink(
                    geotag_aws::emf::Sink::Memory(Arc::clone(&handlers.metric_lines)),
                )
            };
            match function.binary.as_str() {
                "ingest" => {
                    let config = geotag_ingest::Config::from_lookup(lookup)
                        .with_context(|| format!("configuring {}", function.logical_id))?;
                    handlers.ingest = Some(
                        geotag_ingest::on_aws(sdk, &config).with_metrics(metrics(&config.metrics)),
                    );
                }
                "stats" => {
                    let config = geotag_stats::Config::from_lookup(lookup)
                        .with_context(|| format!("configuring {}", function.logical_id))?;
                    let mut stats = geotag_stats::on_aws(sdk, &config);
                    stats.metrics = metrics(&config.metrics);
                    handlers.stats = Some(stats);
                }
                "alerts" => {
                    let config = geotag_alerts::Config::from_lookup(lookup)
                        .with_context(|| format!("configuring {}", function.logical_id))?;
                    let mut alerts = geotag_alerts::on_aws(sdk, &config);
                    alerts.metrics = metrics(&config.metrics);
                    handlers.alerts = Some(alerts);
                }
                other => bail!(
                    "no in-process handler for binary {other:?} ({}); run it with --invoke-endpoint",
                    function.logical_id
                ),
            }
        }
        Ok(handlers)
    }

    /// The EMF lines written so far, oldest first.
    pub fn metric_lines(&self) -> Vec<String> {
        self.metric_lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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
                let event: geotag_ingest::IngestEvent = serde_json::from_value(payload)?;
                let response = geotag_ingest::handle(ingest, LambdaEvent::new(event, context))
                    .await
                    .map_err(|error| anyhow!("{error}"))?;
                Ok(serde_json::to_value(response)?)
            }
            "stats" => {
                let stats = self
                    .stats
                    .as_ref()
                    .ok_or_else(|| anyhow!("stats is not configured"))?;
                let event: aws_lambda_events::dynamodb::Event = serde_json::from_value(payload)?;
                let response = geotag_stats::handle(stats, LambdaEvent::new(event, context))
                    .await
                    .map_err(|error| anyhow!("{error}"))?;
                Ok(serde_json::to_value(response)?)
            }
            "alerts" => {
                let alerts = self
                    .alerts
                    .as_ref()
                    .ok_or_else(|| anyhow!("alerts is not configured"))?;
                let event: geotag_alerts::Trigger = serde_json::from_value(payload)?;
                geotag_alerts::handle(alerts, LambdaEvent::new(event, context))
                    .await
                    .map_err(|error| anyhow!("{error}"))
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

/// How the pump plays time.
#[derive(Debug, Clone, Copy)]
pub struct PumpOptions {
    /// Schedules run this many times faster than their rate says.
    pub time_scale: f64,
    /// Whether schedules tick. A demo that plays an hour of readings in
    /// seconds turns them off: a silence check in the middle of compressed
    /// time would find every tag silent. It fires the check itself at the end.
    pub play_schedules: bool,
}

impl Default for PumpOptions {
    fn default() -> Self {
        PumpOptions {
            time_scale: 1.0,
            play_schedules: true,
        }
    }
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
        for function in stack.functions.values() {
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
                        };
                        tasks.spawn(poller.run(watcher.clone()));
                    }
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
        }
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
