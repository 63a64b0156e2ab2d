//! What a function's `main` does, once: logs and traces set up, the
//! configuration read, SDK clients built, and the handler served to
//! `lambda_runtime`, each invocation in its own span (its X-Ray subsegment).
//!
//! One thread: at 256 MB Lambda gives a fraction of one vCPU, so worker
//! threads would only add start-up time and memory; the handlers overlap
//! their requests with async I/O, not with threads. The dependencies are
//! built once per cold start and live as long as the process, which is what
//! `Box::leak` says: every invocation borrows them, none owns them.

use std::future::Future;

use geotag_aws::clients::SdkConfig;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::observability::{self, invocation_span};

/// Serves `handler` until Lambda stops the process. `binary` names the
/// function in its spans; `config` reads its environment; `wire` builds its
/// dependencies from the SDK configuration and the config.
pub fn serve<C, E, D, Event, Response, Fut>(
    binary: &'static str,
    config: impl FnOnce() -> Result<C, E>,
    wire: impl FnOnce(&SdkConfig, &C) -> D,
    handler: impl Fn(&'static D, LambdaEvent<Event>) -> Fut,
) -> Result<(), Error>
where
    E: std::error::Error + Send + Sync + 'static,
    D: 'static,
    Event: DeserializeOwned + Send,
    Response: Serialize,
    Fut: Future<Output = Result<Response, Error>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _tracing = observability::init();
        let config = config()?;
        let dependencies: &'static D =
            Box::leak(Box::new(wire(&geotag_aws::clients::load().await, &config)));
        lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| {
            let span = invocation_span(
                binary,
                &event.context.request_id,
                event.context.xray_trace_id.as_deref(),
            );
            handler(dependencies, event).instrument(span)
        }))
        .await
    })
}

/// [`serve`] for an HTTP API function: `lambda_http` turns each payload v2
/// event into a request and the handler's response back into the event's
/// answer. The handler answers every request itself (problems included), so
/// the runtime never reports an invocation error for a request.
pub fn serve_http<C, E, D, Fut>(
    binary: &'static str,
    config: impl FnOnce() -> Result<C, E>,
    wire: impl FnOnce(&SdkConfig, &C) -> D,
    handler: impl Fn(&'static D, lambda_http::Request) -> Fut,
) -> Result<(), Error>
where
    E: std::error::Error + Send + Sync + 'static,
    D: 'static,
    Fut: Future<Output = lambda_http::Response<lambda_http::Body>> + Send,
{
    use lambda_http::RequestExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _tracing = observability::init();
        let config = config()?;
        let dependencies: &'static D =
            Box::leak(Box::new(wire(&geotag_aws::clients::load().await, &config)));
        lambda_http::run(lambda_http::service_fn(|request: lambda_http::Request| {
            let context = request.lambda_context();
            let span = invocation_span(
                binary,
                &context.request_id,
                context.xray_trace_id.as_deref(),
            );
            let answer = handler(dependencies, request);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }.instrument(span)
        }))
        .await
    })
}

/// An HTTP API function's whole `main`: its allocator and [`serve_http`].
#[macro_export]
macro_rules! lambda_http_main {
    ($binary:literal, $config:ty, $wire:expr, $handler:expr $(,)?) => {
        $crate::main_with!(serve_http, $binary, $config, $wire, $handler);
    };
}

/// A function's whole `main`: its allocator and [`serve`].
///
/// mimalloc, because ingest makes a dozen small allocations a reading (the
/// SDK's item maps), where glibc's malloc was a quarter of the time.
#[macro_export]
macro_rules! lambda_main {
    ($binary:literal, $config:ty, $wire:expr, $handler:expr $(,)?) => {
        $crate::main_with!(serve, $binary, $config, $wire, $handler);
    };
}

/// `main` with the allocator, serving through `main_scaffold::$serve`.
#[doc(hidden)]
#[macro_export]
macro_rules! main_with {
    ($serve:ident, $binary:literal, $config:ty, $wire:expr, $handler:expr) => {
        #[global_allocator]
        static ALLOCATOR: $crate::MiMalloc = $crate::MiMalloc;

        fn main() -> ::std::result::Result<(), $crate::Error> {
            $crate::main_scaffold::$serve(
                $binary,
                <$config as $crate::FromEnvironment>::from_env,
                $wire,
                $handler,
            )
        }
    };
}
