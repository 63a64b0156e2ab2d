//! Logs and X-Ray traces of a function, set up once in its `main`.
//!
//! Logs: Lambda's advanced logging controls, as `lambda_runtime`'s default
//! subscriber reads them: JSON lines when `AWS_LAMBDA_LOG_FORMAT=JSON` (each
//! with the invocation's `requestId` from `lambda_runtime`'s span), the level
//! from `AWS_LAMBDA_LOG_LEVEL` (the template's `ApplicationLogLevel`), else
//! `RUST_LOG`, else INFO. A level, not `EnvFilter`'s per-module directives:
//! Lambda's log controls set one level, and `EnvFilter` brought the regex
//! crates into every function (half a megabyte of its code, `cargo bloat`).
//!
//! Traces: when the function runs with active tracing, Lambda starts an X-Ray
//! daemon beside it and names it in `AWS_XRAY_DAEMON_ADDRESS`. Then each
//! invocation gets a subsegment (the handler's span, a child of the segment
//! Lambda recorded, named in the invocation's trace header), and each AWS
//! call the SDK makes gets one under it. The SDK already opens a span per
//! operation (`DynamoDB.BatchWriteItem`, with `rpc.service` and
//! `rpc.method`); they are exported as X-Ray subsegments by the OpenTelemetry
//! project's AWS exporter, one UDP datagram per span as it ends, so nothing
//! is left buffered when Lambda freezes the process between invocations.
//! Without a daemon, no OpenTelemetry layer is installed and the SDK's spans
//! cost nothing (their level is DEBUG).

use std::net::SocketAddr;

use opentelemetry::trace::{SpanKind, TraceContextExt as _, TracerProvider as _};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_aws::xray_exporter::XrayExporter;
use opentelemetry_aws::xray_exporter::daemon_client::XrayDaemonClient;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SimpleSpanProcessor, SpanData, SpanProcessor};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

/// The environment variable Lambda sets when active tracing is on.
pub const DAEMON_ADDRESS: &str = "AWS_XRAY_DAEMON_ADDRESS";

/// Keeps the tracer provider alive; dropping it flushes and stops tracing.
#[must_use = "tracing stops when the guard is dropped"]
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's subscriber from the environment (see the module).
pub fn init() -> Guard {
    let daemon = std::env::var(DAEMON_ADDRESS)
        .ok()
        .and_then(|address| daemon_address(&address));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    init_with(daemon, json, std::io::stdout)
}

/// `AWS_XRAY_DAEMON_ADDRESS` is `host:port`, or `udp:host:port tcp:host:port`
/// when the two protocols differ; segments go over UDP.
pub fn daemon_address(value: &str) -> Option<SocketAddr> {
    let udp = value
        .split_whitespace()
        .find_map(|part| part.strip_prefix("udp:"))
        .unwrap_or(value);
    udp.parse().ok()
}

/// As [`init`], with the daemon, the log format and the log writer given (tests).
pub fn init_with<W>(daemon: Option<SocketAddr>, json: bool, writer: W) -> Guard
where
    W: for<'writer> fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let logs = fmt::layer()
        .with_target(false)
        .without_time()
        .with_writer(writer);
    let logs = if json {
        logs.json().with_filter(level).boxed()
    } else {
        logs.with_filter(level).boxed()
    };

    let provider = daemon.and_then(|address| match XrayDaemonClient::new(address) {
        Ok(client) => Some(
            SdkTracerProvider::builder()
                .with_id_generator(XrayIdGenerator::default())
                .with_span_processor(AwsCallsAreClientSpans(SimpleSpanProcessor::new(
                    XrayExporter::new(client),
                )))
                .build(),
        ),
        Err(error) => {
            eprintln!("X-Ray daemon at {address} unusable ({error}); tracing off");
            None
        }
    });
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("geotag"))
            .with_filter(filter_fn(|metadata| {
                // Spans only (not log events), and only ours and the SDK's
                // operations: not its per-attempt internals, nor the runtime's.
                metadata.is_span()
                    && (metadata.target().starts_with("geotag")
                        || metadata.target().starts_with("aws_sdk_"))
            }))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    Guard(provider)
}

/// The span of one invocation: the X-Ray subsegment under Lambda's own
/// segment (`trace_header` is the invocation's `Root=...;Parent=...;Sampled=...`).
pub fn invocation_span(
    function: &'static str,
    request_id: &str,
    trace_header: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        target: "geotag::invocation",
        "invocation",
        otel.name = function,
        faas.invocation_id = request_id,
    );
    if let Some(parent) =
        trace_header.and_then(opentelemetry_aws::trace::xray_propagator::span_context_from_str)
    {
        let context = opentelemetry::Context::new().with_remote_span_context(parent);
        // Fails only when no OpenTelemetry layer is installed: nothing to link.
        let _ = span.set_parent(context);
    }
    span
}

/// The SDK's operation spans do not say they are client calls; X-Ray draws a
/// client subsegment in the `aws` namespace as a node of the service map
/// (DynamoDB, SQS, SNS), so they are marked as such on their way out.
#[derive(Debug)]
struct AwsCallsAreClientSpans<P>(P);

impl<P: SpanProcessor> SpanProcessor for AwsCallsAreClientSpans<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        let is_aws_call = span
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "rpc.system" && kv.value.as_str() == "aws-api");
        if is_aws_call {
            span.span_kind = SpanKind::Client;
        }
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_address_takes_both_forms() {
        assert_eq!(
            daemon_address("169.254.79.129:2000"),
            Some("169.254.79.129:2000".parse().unwrap())
        );
        assert_eq!(
            daemon_address("tcp:127.0.0.1:2000 udp:127.0.0.1:2001"),
            Some("127.0.0.1:2001".parse().unwrap())
        );
        assert_eq!(daemon_address("nonsense"), None);
    }
}
