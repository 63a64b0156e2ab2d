//! A function as the pump needs it: its name, binary, timeout and
//! environment, and the event sources its `Events` declare (SQS, DynamoDB
//! streams with their filters, retries and destinations, schedules).

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Value};

use super::{default_name, number, queue_url_of_arn, text};
use crate::emulator::{ACCOUNT_ID, REGION};
use crate::template::{Physical, Resolver, Resource};

/// A function as the pump needs it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub name: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`), as `cargo lambda` knows it.
    pub binary: String,
    pub timeout_secs: u64,
    pub environment: BTreeMap<String, String>,
    pub events: Vec<EventSource>,
}

/// An event source mapping (or schedule), read from a function's `Events`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventSource {
    Sqs(SqsSource),
    DynamoDb(StreamSource),
    Schedule(ScheduleSource),
    /// Requests through an HTTP API: `geotag up`'s local API serves them.
    HttpApi(HttpRoute),
}

/// A function's HTTP API route (`Type: HttpApi`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    pub name: String,
    /// `ANY`, or one method.
    pub method: String,
    /// As the template writes it: `/v1/{proxy+}`.
    pub path: String,
}

impl HttpRoute {
    /// Whether a request's method and path take this route.
    pub fn takes(&self, method: &str, path: &str) -> bool {
        let method_matches = self.method == "ANY" || self.method.eq_ignore_ascii_case(method);
        let path_matches = match self.path.strip_suffix("{proxy+}") {
            Some(prefix) => path.starts_with(prefix) && path.len() > prefix.len(),
            None => self.path == path,
        };
        method_matches && path_matches
    }
}

/// Where a stream event source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamSource {
    pub name: String,
    pub stream_arn: String,
    pub starting_position: StartingPosition,
    pub batch_size: usize,
    pub batching_window_secs: u64,
    /// Event filtering patterns (`FilterCriteria.Filters[].Pattern`), any of which admits a record.
    pub filters: Vec<Value>,
    pub bisect_on_error: bool,
    /// `None` retries until the record expires from the stream (Lambda's -1).
    pub maximum_retry_attempts: Option<u32>,
    pub report_batch_item_failures: bool,
    /// The queue that receives a description of each batch given up on.
    pub on_failure_queue_url: Option<String>,
    /// `ParallelizationFactor`: batches of one shard in flight at once (1 to 10).
    pub parallelization_factor: usize,
    /// `MaximumRecordAgeInSeconds`; `None` keeps records until they expire
    /// from the stream (Lambda's -1).
    pub maximum_record_age_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSource {
    pub name: String,
    pub expression: String,
    pub period: std::time::Duration,
    /// The rule's `Name`, where the template gives one (SAM makes one up
    /// otherwise): the event's `resources` name it.
    pub rule_name: Option<String>,
    /// The event's `detail` (from `Input`), `{}` by default.
    pub input: Option<Value>,
}

/// Parses `rate(N unit)`; cron expressions are not played locally.
pub fn parse_rate(expression: &str) -> Result<std::time::Duration> {
    let inner = expression
        .trim()
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| anyhow!("{expression:?}: only rate(...) schedules are played locally"))?;
    let (count, unit) = inner
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow!("{expression:?}: expected rate(N unit)"))?;
    let count: u64 = count
        .parse()
        .map_err(|_| anyhow!("{expression:?}: {count} is not a count"))?;
    let seconds = match (unit.trim(), count) {
        ("minute", 1) | ("minutes", 2..) => 60,
        ("hour", 1) | ("hours", 2..) => 3600,
        ("day", 1) | ("days", 2..) => 86_400,
        _ => bail!("{expression:?}: the unit must be minute(s), hour(s) or day(s), singular for 1"),
    };
    Ok(std::time::Duration::from_secs(count * seconds))
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqsSource {
    pub name: String,
    pub queue_arn: String,
    pub queue_url: String,
    pub batch_size: usize,
    pub batching_window_secs: u64,
    pub report_batch_item_failures: bool,
    pub maximum_concurrency: Option<usize>,
}

pub(super) fn read_function(
    resolver: &Resolver,
    resource: &Resource,
    properties: &Map<String, Value>,
) -> Result<(Physical, FunctionSpec)> {
    let name = text(properties, "FunctionName").unwrap_or_else(|| default_name(resolver, resource));
    let binary = resource
        .metadata
        .get("BuildProperties")
        .and_then(|p| p.get("Binary"))
        .and_then(Value::as_str)
        .unwrap_or(&resource.logical_id)
        .to_owned();
    let mut events = Vec::new();
    if let Some(declared) = properties.get("Events").and_then(Value::as_object) {
        for (event_name, event) in declared {
            let kind = event
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let empty = Map::new();
            let event_properties = event
                .get("Properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            match kind {
                "SQS" => events.push(EventSource::Sqs(sqs_source(
                    resolver,
                    event_name,
                    event_properties,
                )?)),
                "DynamoDB" => events.push(EventSource::DynamoDb(stream_source(
                    resolver,
                    event_name,
                    event_properties,
                )?)),
                "Schedule" | "ScheduleV2" => {
                    if let Some(schedule) = schedule_source(event_name, event_properties)? {
                        events.push(EventSource::Schedule(schedule));
                    }
                }
                "HttpApi" => events.push(EventSource::HttpApi(HttpRoute {
                    name: event_name.clone(),
                    method: text(event_properties, "Method").unwrap_or_else(|| "ANY".into()),
                    path: text(event_properties, "Path")
                        .ok_or_else(|| anyhow!("{event_name}: an HttpApi event without Path"))?,
                })),
                other => bail!(
                    "function {}: event {event_name} of type {other} is not pumped by the local stack",
                    resource.logical_id
                ),
            }
        }
    }
    let spec = FunctionSpec {
        logical_id: resource.logical_id.clone(),
        name: name.clone(),
        binary,
        timeout_secs: number(properties, "Timeout")?.unwrap_or(3),
        environment: environment_of(properties),
        events,
    };
    let physical = Physical {
        reference: name.clone(),
        attributes: [(
            "Arn".to_owned(),
            format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"),
        )]
        .into(),
    };
    Ok((physical, spec))
}

/// `Environment.Variables`, each value as text.
fn environment_of(properties: &Map<String, Value>) -> BTreeMap<String, String> {
    let Some(variables) = properties
        .get("Environment")
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_object)
    else {
        return BTreeMap::new();
    };
    variables
        .iter()
        .map(|(key, value)| {
            let text = text(variables, key).unwrap_or_else(|| value.to_string());
            (key.clone(), text)
        })
        .collect()
}

/// Whether `FunctionResponseTypes` asks for partial batch responses.
fn reports_batch_item_failures(event_properties: &Map<String, Value>) -> bool {
    event_properties
        .get("FunctionResponseTypes")
        .and_then(Value::as_array)
        .is_some_and(|types| {
            types
                .iter()
                .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
        })
}

fn sqs_source(
    resolver: &Resolver,
    event_name: &str,
    event_properties: &Map<String, Value>,
) -> Result<SqsSource> {
    let queue_arn = text(event_properties, "Queue")
        .ok_or_else(|| anyhow!("SQS event {event_name} without Queue"))?;
    let queue_url = queue_url_of_arn(resolver, &queue_arn)
        .ok_or_else(|| anyhow!("SQS event {event_name}: no local queue {queue_arn}"))?;
    Ok(SqsSource {
        name: event_name.to_owned(),
        queue_arn,
        queue_url,
        batch_size: number(event_properties, "BatchSize")?.unwrap_or(10),
        batching_window_secs: number(event_properties, "MaximumBatchingWindowInSeconds")?
            .unwrap_or(0),
        report_batch_item_failures: reports_batch_item_failures(event_properties),
        maximum_concurrency: event_properties
            .get("ScalingConfig")
            .and_then(Value::as_object)
            .map(|scaling| number(scaling, "MaximumConcurrency"))
            .transpose()?
            .flatten(),
    })
}

fn stream_source(
    resolver: &Resolver,
    event_name: &str,
    event_properties: &Map<String, Value>,
) -> Result<StreamSource> {
    let stream_arn = text(event_properties, "Stream")
        .ok_or_else(|| anyhow!("DynamoDB event {event_name} without Stream"))?;
    let starting_position = match text(event_properties, "StartingPosition").as_deref() {
        Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
        Some("LATEST") | None => StartingPosition::Latest,
        Some(other) => {
            bail!("DynamoDB event {event_name}: StartingPosition {other} is not supported")
        }
    };
    let retries: Option<i64> = number(event_properties, "MaximumRetryAttempts")?;
    let parallelization: i64 = number(event_properties, "ParallelizationFactor")?.unwrap_or(1);
    if !(1..=10).contains(&parallelization) {
        bail!(
            "DynamoDB event {event_name}: ParallelizationFactor {parallelization} is not 1 to 10"
        );
    }
    let maximum_age: Option<i64> = number(event_properties, "MaximumRecordAgeInSeconds")?;
    Ok(StreamSource {
        name: event_name.to_owned(),
        stream_arn,
        starting_position,
        batch_size: number(event_properties, "BatchSize")?.unwrap_or(100),
        batching_window_secs: number(event_properties, "MaximumBatchingWindowInSeconds")?
            .unwrap_or(0),
        filters: filter_patterns(event_name, event_properties)?,
        bisect_on_error: text(event_properties, "BisectBatchOnFunctionError").as_deref()
            == Some("true"),
        maximum_retry_attempts: retries.and_then(|n| u32::try_from(n).ok()),
        report_batch_item_failures: reports_batch_item_failures(event_properties),
        on_failure_queue_url: on_failure_queue_url(resolver, event_name, event_properties)?,
        parallelization_factor: parallelization as usize,
        maximum_record_age_secs: maximum_age.and_then(|age| u64::try_from(age).ok()),
    })
}

/// `FilterCriteria.Filters[].Pattern`, each a JSON text or an object.
fn filter_patterns(event_name: &str, event_properties: &Map<String, Value>) -> Result<Vec<Value>> {
    let filters = event_properties
        .get("FilterCriteria")
        .and_then(|criteria| criteria.get("Filters"))
        .and_then(Value::as_array);
    filters
        .into_iter()
        .flatten()
        .map(|filter| match filter.get("Pattern") {
            Some(Value::String(pattern)) => serde_json::from_str(pattern)
                .map_err(|e| anyhow!("{event_name}: filter pattern is not JSON: {e}")),
            Some(object @ Value::Object(_)) => Ok(object.clone()),
            _ => bail!("{event_name}: a filter without Pattern"),
        })
        .collect()
}

/// `DestinationConfig.OnFailure.Destination`, which must be a local queue.
fn on_failure_queue_url(
    resolver: &Resolver,
    event_name: &str,
    event_properties: &Map<String, Value>,
) -> Result<Option<String>> {
    let Some(arn) = event_properties
        .get("DestinationConfig")
        .and_then(|config| config.get("OnFailure"))
        .and_then(|on_failure| on_failure.get("Destination"))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    let url = queue_url_of_arn(resolver, arn).ok_or_else(|| {
        anyhow!("{event_name}: on-failure destination {arn} is not a local queue")
    })?;
    Ok(Some(url))
}

/// A `rate(...)` schedule, or `None` when it is disabled.
fn schedule_source(
    event_name: &str,
    event_properties: &Map<String, Value>,
) -> Result<Option<ScheduleSource>> {
    let expression = text(event_properties, "Schedule")
        .or_else(|| text(event_properties, "ScheduleExpression"))
        .ok_or_else(|| anyhow!("schedule {event_name} without an expression"))?;
    let enabled = text(event_properties, "Enabled").as_deref() != Some("false")
        && text(event_properties, "State").as_deref() != Some("DISABLED");
    if !enabled {
        return Ok(None);
    }
    Ok(Some(ScheduleSource {
        name: event_name.to_owned(),
        period: parse_rate(&expression)?,
        expression,
        rule_name: text(event_properties, "Name"),
        input: match event_properties.get("Input") {
            Some(Value::String(json)) => Some(serde_json::from_str(json)?),
            Some(other) => Some(other.clone()),
            None => None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_expressions() {
        assert_eq!(parse_rate("rate(1 minute)").unwrap().as_secs(), 60);
        assert_eq!(parse_rate("rate(5 minutes)").unwrap().as_secs(), 300);
        assert_eq!(parse_rate("rate(2 hours)").unwrap().as_secs(), 7200);
        assert_eq!(parse_rate("rate(1 day)").unwrap().as_secs(), 86_400);
        assert!(parse_rate("rate(1 minutes)").is_err());
        assert!(parse_rate("rate(5 minute)").is_err());
        assert!(parse_rate("cron(0 12 * * ? *)").is_err());
        assert!(parse_rate("rate(x minutes)").is_err());
    }
}
