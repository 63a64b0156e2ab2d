//! Faults between the functions and AWS, for the chaos run.
//!
//! [`FaultyHttpClient`] sits where the SDK's HTTP client sits: for a share of
//! requests it answers, without asking the emulator, what AWS answers when it
//! is overloaded or failing: a throttling error (HTTP 400 with the service's
//! own throttling code) or a server error (HTTP 500), in the service's own
//! wire format. The SDK's retry logic (standard mode: three attempts, backoff,
//! a retry quota) therefore runs for real, and what it cannot cure reaches the
//! handlers as the errors they must survive. The emulator never sees a
//! refused request, so nothing is half-applied by a refusal.
//!
//! A second kind hides a success: for a share of the functions' writes
//! (DynamoDB's, SNS Publish, SQS sends) the request goes to the emulator and
//! is applied, and the answer is lost on the way back: the client sees a 500
//! or a timeout, as it does when AWS applied a request and the connection
//! dropped. The SDK then retries what was done already (a conditional write
//! finds its own condition gone, a Publish publishes again), and the
//! handlers must still count nothing twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

/// The kind of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Throttling,
    ServerError,
    /// Applied, then answered with a 500.
    AppliedThenServerError,
    /// Applied, then no answer (a timeout).
    AppliedThenTimeout,
}

impl Fault {
    /// Whether AWS did the request despite the error the client saw.
    pub fn hides_a_success(self) -> bool {
        matches!(
            self,
            Fault::AppliedThenServerError | Fault::AppliedThenTimeout
        )
    }
}

/// What to inject, and the tally of what was injected.
#[derive(Debug)]
pub struct FaultPlan {
    /// Share of requests refused, in [0, 1]; half throttled, half 5xx.
    pub rate: f64,
    /// Share of the writes that go through whose answer is then lost, in
    /// [0, 1]; half a 500, half a timeout.
    pub lost_answer_rate: f64,
    rng: Mutex<fastrand::Rng>,
    /// (service, operation, fault) -> count.
    injected: Mutex<BTreeMap<(String, String, Fault), u64>>,
    /// (service, operation) -> requests that went through.
    passed: Mutex<BTreeMap<(String, String), u64>>,
    /// (table, transactional?) -> item writes in requests that went through.
    item_writes: Mutex<BTreeMap<(String, bool), u64>>,
    /// table -> keys read by GetItem and BatchGetItem requests that went through.
    keys_read: Mutex<BTreeMap<String, u64>>,
}

impl FaultPlan {
    pub fn new(rate: f64, seed: u64) -> Arc<FaultPlan> {
        FaultPlan::with_lost_answers(rate, 0.0, seed)
    }

    pub fn with_lost_answers(rate: f64, lost_answer_rate: f64, seed: u64) -> Arc<FaultPlan> {
        Arc::new(FaultPlan {
            rate: rate.clamp(0.0, 1.0),
            lost_answer_rate: lost_answer_rate.clamp(0.0, 1.0),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            injected: Mutex::new(BTreeMap::new()),
            passed: Mutex::new(BTreeMap::new()),
            item_writes: Mutex::new(BTreeMap::new()),
            keys_read: Mutex::new(BTreeMap::new()),
        })
    }

    /// Faults injected, by (service, operation, kind).
    pub fn injected(&self) -> BTreeMap<(String, String, Fault), u64> {
        lock(&self.injected).clone()
    }

    /// Requests let through to the emulator, by (service, operation).
    pub fn passed(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.passed).clone()
    }

    /// Item writes that went through, by (table name, transactional?): what
    /// DynamoDB bills write units for.
    pub fn item_writes(&self) -> BTreeMap<(String, bool), u64> {
        lock(&self.item_writes).clone()
    }

    /// Keys read by GetItem and BatchGetItem that went through, by table name.
    pub fn keys_read(&self) -> BTreeMap<String, u64> {
        lock(&self.keys_read).clone()
    }

    pub fn total_injected(&self) -> u64 {
        lock(&self.injected).values().sum()
    }

    /// Lost-answer faults injected on (service, operation).
    pub fn lost_answers(&self, service: &str, operation: &str) -> u64 {
        self.lost_answers_where(|s, o| s == service && o == operation)
    }

    /// Lost-answer faults injected on any request (the rest were refusals).
    pub fn total_lost_answers(&self) -> u64 {
        self.lost_answers_where(|_, _| true)
    }

    fn lost_answers_where(&self, on: impl Fn(&str, &str) -> bool) -> u64 {
        lock(&self.injected)
            .iter()
            .filter(|((service, operation, fault), _)| {
                fault.hides_a_success() && on(service, operation)
            })
            .map(|(_, count)| count)
            .sum()
    }

    fn draw(&self) -> Option<Fault> {
        let mut rng = lock(&self.rng);
        (rng.f64() < self.rate).then(|| {
            if rng.bool() {
                Fault::Throttling
            } else {
                Fault::ServerError
            }
        })
    }

    fn draw_lost_answer(&self) -> Option<Fault> {
        let mut rng = lock(&self.rng);
        (rng.f64() < self.lost_answer_rate).then(|| {
            if rng.bool() {
                Fault::AppliedThenServerError
            } else {
                Fault::AppliedThenTimeout
            }
        })
    }
}

/// Whether a request writes: what a lost answer can hide.
fn is_write(service: &str, operation: &str) -> bool {
    match service {
        "dynamodb" => matches!(
            operation,
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems"
        ),
        "sns" => operation == "Publish",
        "sqs" => matches!(operation, "SendMessage" | "SendMessageBatch"),
        _ => false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The SDK's HTTP client, with faults.
#[derive(Debug, Clone)]
pub struct FaultyHttpClient {
    inner: SharedHttpClient,
    plan: Arc<FaultPlan>,
}

impl FaultyHttpClient {
    pub fn wrap(inner: SharedHttpClient, plan: Arc<FaultPlan>) -> SharedHttpClient {
        SharedHttpClient::new(FaultyHttpClient { inner, plan })
    }
}

impl HttpClient for FaultyHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            plan: Arc::clone(&self.plan),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    plan: Arc<FaultPlan>,
}

/// The wire protocols of the services the functions call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// DynamoDB, DynamoDB Streams, SQS: `X-Amz-Target`, JSON errors with `__type`.
    AwsJson,
    /// SNS: form-encoded `Action=...`, XML errors.
    AwsQuery,
}

/// (service, operation, protocol) of a request.
fn operation_of(request: &HttpRequest) -> (String, String, Protocol) {
    if let Some(target) = request.headers().get("x-amz-target") {
        let (prefix, operation) = target.split_once('.').unwrap_or((target, ""));
        let service = match prefix {
            p if p.starts_with("DynamoDBStreams") => "dynamodbstreams",
            p if p.starts_with("DynamoDB") => "dynamodb",
            p if p.starts_with("AmazonSQS") => "sqs",
            other => other,
        };
        return (service.to_owned(), operation.to_owned(), Protocol::AwsJson);
    }
    let body = request.body().bytes().unwrap_or_default();
    let action = std::str::from_utf8(body)
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_owned();
    ("sns".to_owned(), action, Protocol::AwsQuery)
}

fn json_body(request: &HttpRequest) -> serde_json::Value {
    request
        .body()
        .bytes()
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or_default()
}

/// The keys a DynamoDB request reads by key: (table, keys).
fn keys_read_of(operation: &str, body: &serde_json::Value) -> Vec<(String, u64)> {
    match operation {
        "GetItem" => vec![(body["TableName"].as_str().unwrap_or("?").to_owned(), 1)],
        "BatchGetItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(table, request)| {
                (
                    table.clone(),
                    request["Keys"].as_array().map_or(0, Vec::len) as u64,
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The items a DynamoDB request writes: (table, transactional?) for each.
fn item_writes_of(operation: &str, body: &serde_json::Value) -> Vec<(String, bool)> {
    let table = |value: &serde_json::Value| value["TableName"].as_str().unwrap_or("?").to_owned();
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => vec![(table(body), false)],
        "BatchWriteItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(name, requests)| {
                let count = requests.as_array().map_or(0, Vec::len);
                std::iter::repeat_n((name.clone(), false), count)
            })
            .collect(),
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                item.as_object()?
                    .values()
                    .next()
                    .map(|op| (table(op), true))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The answer AWS gives for `fault`, in the service's format.
fn error_response(service: &str, protocol: Protocol, fault: Fault) -> HttpResponse {
    let (status, code, message) = match (fault, service) {
        (Fault::AppliedThenServerError | Fault::AppliedThenTimeout, "sns" | "sqs") => {
            (500, "InternalError", "Internal error")
        }
        (Fault::AppliedThenServerError | Fault::AppliedThenTimeout, _) => {
            (500, "InternalServerError", "Internal server error")
        }
        (Fault::Throttling, "dynamodb" | "dynamodbstreams") => (
            400,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
        (Fault::Throttling, "sns") => (400, "Throttling", "Rate exceeded"),
        (Fault::Throttling, _) => (400, "ThrottlingException", "Rate exceeded"),
        (Fault::ServerError, "sns") => (500, "InternalError", "Internal error"),
        (Fault::ServerError, "sqs") => (500, "InternalError", "Internal error"),
        (Fault::ServerError, _) => (500, "InternalServerError", "Internal server error"),
    };
    let (content_type, body) = match protocol {
        Protocol::AwsJson => (
            "application/x-amz-json-1.0",
            serde_json::json!({"__type": format!("com.amazonaws.{service}#{code}"), "message": message})
                .to_string(),
        ),
        Protocol::AwsQuery => (
            "text/xml",
            format!(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>{}</Type>\
                 <Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>",
                if status >= 500 { "Receiver" } else { "Sender" }
            ),
        ),
    };
    let mut response = HttpResponse::new(
        StatusCode::try_from(status).expect("a valid status"),
        SdkBody::from(body),
    );
    response.headers_mut().insert("content-type", content_type);
    response
        .headers_mut()
        .insert("x-amzn-requestid", "00000000-0000-0000-0000-000000000000");
    if protocol == Protocol::AwsJson {
        // SQS's JSON protocol also names the query-protocol error code.
        response
            .headers_mut()
            .insert("x-amzn-query-error", format!("{code};Sender"));
    }
    response
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (service, operation, protocol) = operation_of(&request);
        match self.plan.draw() {
            Some(fault) => {
                *lock(&self.plan.injected)
                    .entry((service.clone(), operation, fault))
                    .or_default() += 1;
                HttpConnectorFuture::ready(Ok(error_response(&service, protocol, fault)))
            }
            None => {
                let lost = if is_write(&service, &operation) {
                    self.plan.draw_lost_answer()
                } else {
                    None
                };
                if service == "dynamodb" {
                    let body = json_body(&request);
                    let mut writes = lock(&self.plan.item_writes);
                    for table_write in item_writes_of(&operation, &body) {
                        *writes.entry(table_write).or_default() += 1;
                    }
                    let mut reads = lock(&self.plan.keys_read);
                    for (table, keys) in keys_read_of(&operation, &body) {
                        *reads.entry(table).or_default() += keys;
                    }
                }
                *lock(&self.plan.passed)
                    .entry((service.clone(), operation.clone()))
                    .or_default() += 1;
                let Some(fault) = lost else {
                    return self.inner.call(request);
                };
                *lock(&self.plan.injected)
                    .entry((service.clone(), operation, fault))
                    .or_default() += 1;
                let applied = self.inner.call(request);
                HttpConnectorFuture::new(async move {
                    // Done by the emulator; what it answered never arrives.
                    let _ = applied.await;
                    match fault {
                        Fault::AppliedThenTimeout => Err(ConnectorError::timeout(
                            "the answer did not arrive in time (injected after the request was applied)".into(),
                        )),
                        _ => Ok(error_response(&service, protocol, fault)),
                    }
                })
            }
        }
    }
}

/// A function that dies half-way through a share of its batches: it
/// processes the first half of the records (their writes, dead letters and
/// alerts happen), then fails as a crash or a timeout would, and the event
/// source delivers the whole batch again by its own rules. Schedule events
/// (no `Records`) crash before doing anything.
pub fn crashing(
    inner: geotag_local_cloud::invoker::Invoker,
    rate: f64,
    seed: u64,
    crashes: Arc<std::sync::atomic::AtomicU64>,
) -> geotag_local_cloud::invoker::Invoker {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
    geotag_local_cloud::invoker::Invoker::Closure(Arc::new(
        move |function, payload: serde_json::Value| {
            let crash = lock(&rng).f64() < rate;
            let (inner, function, crashes) =
                (inner.clone(), function.clone(), Arc::clone(&crashes));
            Box::pin(async move {
                if !crash {
                    return inner.invoke(&function, payload).await;
                }
                crashes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(records) = payload.get("Records").and_then(|r| r.as_array()) {
                    let half = records[..records.len() / 2].to_vec();
                    if !half.is_empty() {
                        let mut partial = payload.clone();
                        partial["Records"] = serde_json::Value::Array(half);
                        // What it did before dying stays done; its answer is lost.
                        let _ = inner.invoke(&function, partial).await;
                    }
                }
                anyhow::bail!(
                    "{} died half-way through its batch (injected crash)",
                    function.binary
                )
            })
        },
    ))
}
