//! A Lambda sandbox on 127.0.0.1, for timing a function's process from start
//! to its first answer and for reading its memory high-water mark.
//!
//! One port serves two parts:
//! - the **Runtime API** (`/2018-06-01/runtime/...`) that a `bootstrap` or
//!   `awslambdaric` polls: it hands out one event, records when the answer
//!   arrives, and then holds the next poll open, as Lambda freezes a sandbox;
//! - an **AWS endpoint** that answers DynamoDB, SQS and SNS requests at once
//!   with empty successes, so that the first invocation runs its real SDK path
//!   (endpoint resolution, signing, a connection) without an emulator's
//!   latency in the figure.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const RUNTIME_PREFIX: &str = "/2018-06-01/runtime/";
const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";

#[derive(Default)]
struct Shared {
    event: Mutex<Option<String>>,
    first_poll: Mutex<Option<Instant>>,
    answer: Mutex<Option<(Instant, String)>>,
    answered: Notify,
    aws_requests: Mutex<BTreeMap<String, u64>>,
}

/// The sandbox's server; stops when dropped.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What one cold invocation measured.
#[derive(Debug, Clone)]
pub struct ColdRun {
    /// Process start to the first poll of the Runtime API (the init phase).
    pub init: Duration,
    /// Process start to the answer of the first invocation.
    pub first_answer: Duration,
    /// The process's peak resident set (VmHWM) once it answered, in bytes.
    pub peak_rss: u64,
    pub response: String,
    /// AWS requests the invocation made, by `service.operation`.
    pub aws_requests: BTreeMap<String, u64>,
}

/// A function process to start: the program, its arguments and environment.
pub struct Function<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub dir: &'a Path,
    pub env: &'a [(&'a str, &'a str)],
}

impl Sandbox {
    pub async fn start() -> anyhow::Result<Sandbox> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the sandbox's port on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| serve(shared.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Sandbox {
            addr,
            shared,
            server,
        })
    }

    /// Starts `function`, gives it `event` and waits for its answer.
    pub async fn invoke_cold(
        &self,
        function: &Function<'_>,
        event: &str,
    ) -> anyhow::Result<ColdRun> {
        *lock(&self.shared.event) = Some(event.to_owned());
        *lock(&self.shared.first_poll) = None;
        *lock(&self.shared.answer) = None;
        lock(&self.shared.aws_requests).clear();
        let endpoint = format!("http://{}", self.addr);
        let runtime_api = self.addr.to_string();
        let mut command = tokio::process::Command::new(function.program);
        command
            .args(function.args)
            .current_dir(function.dir)
            // Lambda's environment, and nothing of this machine's AWS settings.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("TZ", ":UTC")
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env("AWS_ACCESS_KEY_ID", "ASIABENCHBENCHBENCH0")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "bench/bench/bench/bench/bench/bench/bench0",
            )
            .env("AWS_SESSION_TOKEN", "bench-session-token")
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/25/[$LATEST]bench")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .envs(function.env.iter().copied())
            // The allocator's tuning, when experimenting with it.
            .envs(std::env::vars().filter(|(name, _)| name.starts_with("MIMALLOC_")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", function.program.display()))?;
        let answered = self.shared.answered.notified();
        let outcome = tokio::select! {
            () = answered => None,
            status = child.wait() => Some(status),
            () = tokio::time::sleep(Duration::from_secs(120)) => {
                bail!("{} did not answer within 120 s", function.program.display())
            }
        };
        if let Some(status) = outcome {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            bail!(
                "{} exited ({:?}) before answering: {}",
                function.program.display(),
                status,
                stderr.trim()
            );
        }
        let peak_rss = child.id().map_or(0, peak_rss_of);
        let _ = child.kill().await;
        let (answered_at, response) = lock(&self.shared.answer)
            .take()
            .context("answer recorded")?;
        let first_poll = lock(&self.shared.first_poll).unwrap_or(answered_at);
        Ok(ColdRun {
            init: first_poll.saturating_duration_since(started),
            first_answer: answered_at.saturating_duration_since(started),
            peak_rss,
            response,
            aws_requests: lock(&self.shared.aws_requests).clone(),
        })
    }
}

/// VmHWM of a live process, in bytes (0 where /proc does not say).
fn peak_rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kb| kb * 1024)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

async fn serve(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = request.uri().path().to_owned();
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let Some(runtime_path) = path.strip_prefix(RUNTIME_PREFIX) else {
        return Ok(aws(&shared, target.as_deref(), &body));
    };
    if runtime_path == "invocation/next" {
        lock(&shared.first_poll).get_or_insert_with(Instant::now);
        let Some(event) = lock(&shared.event).take() else {
            // A frozen sandbox: the next invocation never comes.
            std::future::pending::<()>().await;
            unreachable!("pending never resolves");
        };
        let deadline = geotag::clock::now_ms() + 60_000;
        let mut response = reply(StatusCode::OK, "application/json", event);
        let headers = response.headers_mut();
        for (name, value) in [
            ("lambda-runtime-aws-request-id", REQUEST_ID.to_owned()),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:bench".to_owned(),
            ),
            // Sampled, and current (X-Ray refuses old trace ids): with a
            // daemon address set, the function exports its whole trace.
            (
                "lambda-runtime-trace-id",
                format!(
                    "Root=1-{:08x}-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
                    geotag::clock::now_ms() / 1000
                ),
            ),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        return Ok(response);
    }
    if runtime_path.ends_with("/response") || runtime_path.ends_with("/error") {
        let text = String::from_utf8_lossy(&body).into_owned();
        let text = if runtime_path.ends_with("/error") {
            format!("ERROR {text}")
        } else {
            text
        };
        *lock(&shared.answer) = Some((Instant::now(), text));
        shared.answered.notify_one();
        return Ok(reply(StatusCode::ACCEPTED, "application/json", "{}"));
    }
    // init/error and anything else: record it as the answer, so it is seen.
    *lock(&shared.answer) = Some((
        Instant::now(),
        format!("ERROR {runtime_path}: {}", String::from_utf8_lossy(&body)),
    ));
    shared.answered.notify_one();
    Ok(reply(StatusCode::ACCEPTED, "application/json", "{}"))
}

/// Empty successes, in each protocol's shape.
fn aws(shared: &Shared, target: Option<&str>, body: &[u8]) -> Reply {
    let operation = match target {
        Some(target) => target.to_owned(),
        None => {
            // The SNS query protocol: a form with Action=...
            let form = String::from_utf8_lossy(body);
            let action = form
                .split('&')
                .find_map(|pair| pair.strip_prefix("Action="))
                .unwrap_or("?");
            format!("SNS.{action}")
        }
    };
    *lock(&shared.aws_requests)
        .entry(operation.clone())
        .or_default() += 1;
    let json = |value: Value, protocol: &str| {
        reply(
            StatusCode::OK,
            protocol,
            serde_json::to_vec(&value).unwrap_or_default(),
        )
    };
    let dynamo = "application/x-amz-json-1.0";
    match operation.as_str() {
        "DynamoDB_20120810.BatchWriteItem" => json(json!({"UnprocessedItems": {}}), dynamo),
        "DynamoDB_20120810.BatchGetItem" => {
            json(json!({"Responses": {}, "UnprocessedKeys": {}}), dynamo)
        }
        "DynamoDB_20120810.Query" | "DynamoDB_20120810.Scan" => {
            json(json!({"Count": 0, "ScannedCount": 0, "Items": []}), dynamo)
        }
        "AmazonSQS.SendMessageBatch" => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let successful: Vec<Value> = request["Entries"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|entry| {
                    json!({"Id": entry["Id"], "MessageId": "00000000-0000-4000-8000-000000000000",
                           "MD5OfMessageBody": "d41d8cd98f00b204e9800998ecf8427e"})
                })
                .collect();
            json(
                json!({"Successful": successful, "Failed": []}),
                "application/x-amz-json-1.0",
            )
        }
        "SNS.Publish" => reply(
            StatusCode::OK,
            "text/xml",
            "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult>\
             <MessageId>00000000-0000-4000-8000-000000000000</MessageId></PublishResult>\
             <ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata></PublishResponse>",
        ),
        _ if operation.starts_with("DynamoDB_") => json(json!({}), dynamo),
        _ => reply(
            StatusCode::BAD_REQUEST,
            "application/json",
            format!("{{\"message\": \"the bench sandbox does not answer {operation}\"}}"),
        ),
    }
}
