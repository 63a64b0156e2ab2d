//! How the local stack runs a function: the handlers linked into this binary
//! and called in-process (the default), the Lambda Invoke API of `cargo
//! lambda watch`, `sam local start-lambda` or AWS, or a closure (for tests of
//! the pump itself).
//!
//! In-process handlers are built from each function's template environment
//! exactly as the function's `main` builds them from Lambda's, and are given
//! a [`Context`] with the fields Lambda sets (request id, deadline, ARN), so
//! a handler cannot tell the local stack from AWS.

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::future::BoxFuture;
use geotag_aws::clients::SdkConfig;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

use crate::emulator::REGION;
use crate::provision::{FunctionSpec, Stack};
use geotag_runtime::FromEnvironment as _;

/// How functions are run.
#[derive(Clone)]
pub enum Invoker {
    /// The handlers, linked into this binary, called directly.
    InProcess(Arc<InProcess>),
    /// The Lambda Invoke API at an endpoint: `cargo lambda watch`, `sam local
    /// start-lambda`, or AWS.
    Remote(RemoteLambda),
    /// Any function of (function, event) to response: for tests of the pump itself.
    Closure(Arc<FunctionOfEvent>),
}

/// A Lambda Invoke API, and how it names the functions: cargo lambda by
/// their binary (`ingest`), SAM by their logical id (`IngestFunction`).
/// Learnt from the first answer: the binary's name is tried first, and an
/// endpoint that knows no such function is asked by logical id from then on.
#[derive(Clone)]
pub struct RemoteLambda {
    client: aws_sdk_lambda::Client,
    by_logical_id: Arc<std::sync::atomic::AtomicBool>,
}

impl RemoteLambda {
    pub fn new(client: aws_sdk_lambda::Client) -> RemoteLambda {
        RemoteLambda {
            client,
            by_logical_id: Arc::default(),
        }
    }

    async fn invoke(&self, function: &FunctionSpec, payload: Value) -> Result<Value> {
        use std::sync::atomic::Ordering;
        let body = serde_json::to_vec(&payload)?;
        let by_logical_id = self.by_logical_id.load(Ordering::Relaxed);
        let name = if by_logical_id {
            &function.logical_id
        } else {
            &function.binary
        };
        let mut sent = self.send(name, &body).await;
        // SAM answers 404 with `x-amzn-errortype: ResourceNotFound`, which the
        // SDK does not read as ResourceNotFoundException: the status decides.
        if !by_logical_id
            && let Err(error) = &sent
            && error
                .raw_response()
                .is_some_and(|response| response.status().as_u16() == 404)
        {
            self.by_logical_id.store(true, Ordering::Relaxed);
            sent = self.send(&function.logical_id, &body).await;
        }
        let output = sent.with_context(|| {
            format!(
                "invoking {} ({}) through the Lambda API",
                function.logical_id, function.binary
            )
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

    async fn send(
        &self,
        name: &str,
        body: &[u8],
    ) -> Result<
        aws_sdk_lambda::operation::invoke::InvokeOutput,
        aws_sdk_lambda::error::SdkError<aws_sdk_lambda::operation::invoke::InvokeError>,
    > {
        self.client
            .invoke()
            .function_name(name)
            .payload(aws_smithy_types::Blob::new(body.to_vec()))
            .send()
            .await
    }
}

/// Starts a runtime for the functions once the stack exists (`sam local
/// start-lambda` needs the stack's environment): its invoker, and a guard
/// that stops it when dropped.
pub type Launch =
    Arc<dyn Fn(&crate::stack::LocalStack) -> Result<(Invoker, Box<dyn Send + Sync>)> + Send + Sync>;

/// A function body for [`Invoker::Closure`]: (function, event) to response.
pub type FunctionOfEvent =
    dyn Fn(&FunctionSpec, Value) -> BoxFuture<'static, Result<Value>> + Send + Sync;

/// The handlers this binary can run in-process, keyed by cargo binary name.
pub struct InProcess {
    ingest: Option<geotag_ingest::AwsIngest>,
    stats: Option<
        geotag_stats::Stats<geotag_aws::DynamoStatsStore, geotag_aws::DynamoTelemetryReader>,
    >,
    alerts: Option<geotag_alerts::OnAws>,
    api: Option<geotag_api::Api<geotag_aws::fleet_reads::DynamoFleet>>,
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
            api: None,
            metric_lines: Arc::default(),
        };
        for function in stack.functions.values() {
            // What Lambda adds to the template's environment.
            let lookup = |name: &str| match name {
                "AWS_LAMBDA_FUNCTION_NAME" => Some(function.name.clone()),
                _ => function.environment.get(name).cloned(),
            };
            let metrics = |settings: &geotag_runtime::emf::Settings| {
                geotag_runtime::emf::Emitter::new(settings.clone()).with_sink(
                    geotag_runtime::emf::Sink::Memory(Arc::clone(&handlers.metric_lines)),
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
                "api" => {
                    let config = geotag_api::Config::from_lookup(lookup)
                        .with_context(|| format!("configuring {}", function.logical_id))?;
                    let mut api = geotag_api::on_aws(sdk, &config);
                    api.metrics = metrics(&config.metrics);
                    handlers.api = Some(api);
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
                let event: geotag_aws::telemetry::TelemetryStreamEvent =
                    serde_json::from_value(payload)?;
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
            "api" => {
                let api = self
                    .api
                    .as_ref()
                    .ok_or_else(|| anyhow!("api is not configured"))?;
                Ok(
                    geotag_api::payload::answer_event(api, payload, geotag::clock::now_ms())
                        .await?,
                )
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
                context.deadline = u64::try_from(geotag::clock::now_ms()).unwrap_or(0)
                    + function.timeout_secs * 1000;
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
            Invoker::Remote(remote) => remote.invoke(function, payload).await,
            Invoker::Closure(function_of) => function_of(function, payload).await,
        }
    }
}

pub(crate) fn request_id() -> String {
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
