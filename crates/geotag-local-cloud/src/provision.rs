//! Creating what template.yaml declares in the emulator, by API.
//!
//! moto's own CloudFormation silently skips SNS subscriptions and queue
//! policies, and its Lambda event source mappings try to start Docker, so the
//! local stack creates each resource itself, with the same properties the
//! template gives it: topics, queues (visibility timeout, retention, redrive
//! policy), SNS subscriptions (raw delivery, filter policies), tables (keys,
//! indexes, streams, TTL). Functions are not created in the emulator: their
//! environment and event sources are read here and played by the pump.
//!
//! What the local stack does not emulate (KMS keys, IAM policies, log groups,
//! alarms, ...) is listed by name in [`Stack::not_emulated`], never dropped
//! silently: a reader of the report knows exactly what the local run did not
//! exercise.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, ProvisionedThroughput, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use geotag_aws::clients::SdkConfig;
use serde_json::{Map, Value};

use crate::emulator::{ACCOUNT_ID, REGION};
use crate::template::{Physical, Resolver, Resource, Template};

/// The name the local stack gives `AWS::StackName`.
pub const LOCAL_STACK_NAME: &str = "geotag-local";

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSource {
    pub name: String,
    pub expression: String,
    pub period: std::time::Duration,
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

/// What was created, what was not, and the functions to pump.
#[derive(Debug, Clone)]
pub struct Stack {
    pub resolver: Resolver,
    pub created: Vec<(String, String)>,
    /// (logical id, type, why) of declared resources the local stack did not create.
    pub not_emulated: Vec<(String, String, String)>,
    pub functions: BTreeMap<String, FunctionSpec>,
    /// Resolved template outputs.
    pub outputs: BTreeMap<String, String>,
}

impl Stack {
    /// The `Ref` of a created resource: queue URL, topic ARN, table name.
    pub fn reference(&self, logical_id: &str) -> Result<&str> {
        self.resolver
            .physical
            .get(logical_id)
            .map(|p| p.reference.as_str())
            .ok_or_else(|| anyhow!("the stack has no resource {logical_id}"))
    }

    pub fn attribute(&self, logical_id: &str, attribute: &str) -> Result<&str> {
        self.resolver
            .physical
            .get(logical_id)
            .and_then(|p| p.attributes.get(attribute))
            .map(String::as_str)
            .ok_or_else(|| anyhow!("the stack has no {logical_id}.{attribute}"))
    }

    pub fn function(&self, logical_id: &str) -> Result<&FunctionSpec> {
        self.functions
            .get(logical_id)
            .ok_or_else(|| anyhow!("the template has no function {logical_id}"))
    }

    /// The queue URL for a queue ARN (event sources name queues by ARN).
    pub fn queue_url_of_arn(&self, arn: &str) -> Option<String> {
        queue_url_of_arn(&self.resolver, arn)
    }
}

const TOPIC: &str = "AWS::SNS::Topic";
const QUEUE: &str = "AWS::SQS::Queue";
const SUBSCRIPTION: &str = "AWS::SNS::Subscription";
const TABLE: &str = "AWS::DynamoDB::Table";
const FUNCTION: &str = "AWS::Serverless::Function";

/// Why a kind of resource is not created locally.
fn not_emulated_reason(kind: &str) -> &'static str {
    match kind {
        "AWS::KMS::Key" | "AWS::KMS::Alias" => "encryption at rest is not emulated",
        "AWS::SNS::TopicPolicy" | "AWS::SQS::QueuePolicy" => {
            "resource policies are not enforced locally"
        }
        "AWS::Logs::LogGroup" => {
            "functions log to the terminal locally; their EMF metrics go to target/geotag/metrics.jsonl"
        }
        "AWS::CloudWatch::Alarm" | "AWS::CloudWatch::Dashboard" => "no CloudWatch locally",
        "AWS::IAM::Role" | "AWS::IAM::Policy" => "IAM is not enforced locally",
        _ => "not supported by the local stack",
    }
}

/// Creates the template's resources through `sdk` and returns the stack.
pub async fn provision(
    template: &Template,
    sdk: &SdkConfig,
    stack_name: &str,
    overrides: &HashMap<String, String>,
) -> Result<Stack> {
    let mut resolver = Resolver::new(template, stack_name, REGION, ACCOUNT_ID, overrides)?;
    let sns = aws_sdk_sns::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let mut stack = Stack {
        resolver: resolver.clone(),
        created: Vec::new(),
        not_emulated: Vec::new(),
        functions: BTreeMap::new(),
        outputs: BTreeMap::new(),
    };

    let mut pending: Vec<&Resource> = Vec::new();
    for resource in template.resources.values() {
        if let Some(condition) = &resource.condition
            && !resolver.condition(condition)?
        {
            continue;
        }
        match resource.kind.as_str() {
            TOPIC | QUEUE | SUBSCRIPTION | TABLE | FUNCTION => pending.push(resource),
            kind => {
                // A placeholder keeps `Ref`s to it resolvable (a key id in a property).
                let id = format!("local-{}", resource.logical_id);
                resolver.physical.insert(
                    resource.logical_id.clone(),
                    Physical {
                        reference: id.clone(),
                        attributes: [(
                            "Arn".to_owned(),
                            format!("arn:aws:local:{REGION}:{ACCOUNT_ID}:{id}"),
                        )]
                        .into(),
                    },
                );
                stack.not_emulated.push((
                    resource.logical_id.clone(),
                    kind.to_owned(),
                    not_emulated_reason(kind).to_owned(),
                ));
            }
        }
    }

    // Create in passes: a resource whose references are not created yet waits
    // for the next pass, so the template's order does not matter.
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut errors = Vec::new();
        let created_before = stack.created.len();
        for resource in pending.drain(..) {
            let properties = match resolver.resolve(&Value::Object(match resource.kind.as_str() {
                FUNCTION => template.function_properties(resource),
                _ => resource.properties.clone(),
            })) {
                Ok(Value::Object(properties)) => properties,
                Ok(_) => unreachable!("an object resolves to an object"),
                Err(error) => {
                    errors.push(format!("{}: {error:#}", resource.logical_id));
                    waiting.push(resource);
                    continue;
                }
            };
            let logical_id = resource.logical_id.clone();
            let physical = match resource.kind.as_str() {
                TOPIC => create_topic(&sns, &resolver, resource, &properties).await,
                QUEUE => create_queue(&sqs, &resolver, resource, &properties).await,
                TABLE => create_table(&dynamodb, &resolver, resource, &properties).await,
                SUBSCRIPTION => subscribe(&sns, &properties).await,
                FUNCTION => {
                    let (physical, spec) = read_function(&resolver, resource, &properties)?;
                    stack.functions.insert(logical_id.clone(), spec);
                    Ok(physical)
                }
                _ => unreachable!("only creatable kinds are pending"),
            }
            .with_context(|| format!("creating {logical_id} ({})", resource.kind))?;
            resolver.physical.insert(logical_id.clone(), physical);
            stack.resolver.physical = resolver.physical.clone();
            stack.created.push((logical_id, resource.kind.clone()));
        }
        if !waiting.is_empty() && stack.created.len() == created_before {
            bail!("cannot resolve these resources:\n  {}", errors.join("\n  "));
        }
        pending = waiting;
    }
    stack.resolver = resolver;
    Ok(stack)
}

fn text(properties: &Map<String, Value>, name: &str) -> Option<String> {
    properties.get(name).and_then(|value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn number<T: std::str::FromStr>(properties: &Map<String, Value>, name: &str) -> Result<Option<T>> {
    text(properties, name)
        .map(|value| {
            value
                .parse::<T>()
                .map_err(|_| anyhow!("{name}={value} is not a number"))
        })
        .transpose()
}

/// The URL of the created queue whose ARN is `arn`.
fn queue_url_of_arn(resolver: &Resolver, arn: &str) -> Option<String> {
    resolver
        .physical
        .values()
        .find(|p| p.attributes.get("Arn").map(String::as_str) == Some(arn))
        .and_then(|p| p.attributes.get("QueueUrl"))
        .cloned()
}

fn default_name(resolver: &Resolver, resource: &Resource) -> String {
    format!("{}-{}", resolver.stack_name, resource.logical_id)
}

async fn create_topic(
    sns: &aws_sdk_sns::Client,
    resolver: &Resolver,
    resource: &Resource,
    properties: &Map<String, Value>,
) -> Result<Physical> {
    let name = text(properties, "TopicName").unwrap_or_else(|| default_name(resolver, resource));
    let mut request = sns.create_topic().name(&name);
    for attribute in ["FifoTopic", "ContentBasedDeduplication"] {
        if let Some(value) = text(properties, attribute) {
            request = request.attributes(attribute, value);
        }
    }
    let arn = request
        .send()
        .await?
        .topic_arn
        .ok_or_else(|| anyhow!("CreateTopic returned no ARN"))?;
    Ok(Physical {
        reference: arn.clone(),
        attributes: [("TopicArn".to_owned(), arn), ("TopicName".to_owned(), name)].into(),
    })
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    resolver: &Resolver,
    resource: &Resource,
    properties: &Map<String, Value>,
) -> Result<Physical> {
    let name = text(properties, "QueueName").unwrap_or_else(|| default_name(resolver, resource));
    let mut request = sqs.create_queue().queue_name(&name);
    for attribute in [
        "VisibilityTimeout",
        "MessageRetentionPeriod",
        "DelaySeconds",
        "MaximumMessageSize",
        "ReceiveMessageWaitTimeSeconds",
        "FifoQueue",
        "ContentBasedDeduplication",
    ] {
        if let Some(value) = text(properties, attribute) {
            request = request.attributes(QueueAttributeName::from(attribute), value);
        }
    }
    if let Some(redrive) = properties.get("RedrivePolicy") {
        let redrive = match redrive {
            Value::String(json) => json.clone(),
            object => object.to_string(),
        };
        request = request.attributes(QueueAttributeName::RedrivePolicy, redrive);
    }
    let url = request
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow!("CreateQueue returned no URL"))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| anyhow!("GetQueueAttributes returned no ARN"))?;
    Ok(Physical {
        reference: url.clone(),
        attributes: [
            ("Arn".to_owned(), arn),
            ("QueueName".to_owned(), name),
            ("QueueUrl".to_owned(), url),
        ]
        .into(),
    })
}

async fn subscribe(sns: &aws_sdk_sns::Client, properties: &Map<String, Value>) -> Result<Physical> {
    let field =
        |name: &str| text(properties, name).ok_or_else(|| anyhow!("subscription without {name}"));
    let mut request = sns
        .subscribe()
        .topic_arn(field("TopicArn")?)
        .protocol(field("Protocol")?)
        .endpoint(field("Endpoint")?)
        .return_subscription_arn(true);
    for attribute in ["RawMessageDelivery", "FilterPolicyScope", "RedrivePolicy"] {
        if let Some(value) = properties.get(attribute) {
            let value = match value {
                Value::Object(_) => value.to_string(),
                _ => text(properties, attribute).unwrap_or_default(),
            };
            request = request.attributes(attribute, value);
        }
    }
    if let Some(policy) = properties.get("FilterPolicy") {
        let policy = match policy {
            Value::String(json) => json.clone(),
            object => object.to_string(),
        };
        request = request.attributes("FilterPolicy", policy);
    }
    let arn = request.send().await?.subscription_arn.unwrap_or_default();
    Ok(Physical {
        reference: arn,
        attributes: HashMap::new(),
    })
}

async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    resolver: &Resolver,
    resource: &Resource,
    properties: &Map<String, Value>,
) -> Result<Physical> {
    let name = text(properties, "TableName").unwrap_or_else(|| default_name(resolver, resource));
    let list = |name: &str| {
        properties
            .get(name)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let attribute_definitions = list("AttributeDefinitions")
        .iter()
        .map(|definition| {
            Ok(AttributeDefinition::builder()
                .attribute_name(field(definition, "AttributeName")?)
                .attribute_type(ScalarAttributeType::from(
                    field(definition, "AttributeType")?.as_str(),
                ))
                .build()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let billing = text(properties, "BillingMode").unwrap_or_else(|| "PROVISIONED".into());
    let throughput = |value: Option<&Value>| -> Result<Option<ProvisionedThroughput>> {
        let Some(value) = value else { return Ok(None) };
        Ok(Some(
            ProvisionedThroughput::builder()
                .read_capacity_units(field(value, "ReadCapacityUnits")?.parse()?)
                .write_capacity_units(field(value, "WriteCapacityUnits")?.parse()?)
                .build()?,
        ))
    };
    let mut request = dynamodb
        .create_table()
        .table_name(&name)
        .set_attribute_definitions(Some(attribute_definitions))
        .set_key_schema(Some(key_schema(&Value::Array(list("KeySchema")))?))
        .billing_mode(BillingMode::from(billing.as_str()))
        .set_provisioned_throughput(throughput(properties.get("ProvisionedThroughput"))?);
    for index in list("GlobalSecondaryIndexes") {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(field(&index, "IndexName")?)
                .set_key_schema(Some(key_schema(
                    index.get("KeySchema").unwrap_or(&Value::Null),
                )?))
                .projection(projection(index.get("Projection"))?)
                .set_provisioned_throughput(throughput(index.get("ProvisionedThroughput"))?)
                .build()?,
        );
    }
    for index in list("LocalSecondaryIndexes") {
        request = request.local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name(field(&index, "IndexName")?)
                .set_key_schema(Some(key_schema(
                    index.get("KeySchema").unwrap_or(&Value::Null),
                )?))
                .projection(projection(index.get("Projection"))?)
                .build()?,
        );
    }
    if let Some(stream) = properties.get("StreamSpecification") {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(
                    field(stream, "StreamViewType")?.as_str(),
                ))
                .build()?,
        );
    }
    // A table that exists already (a second `geotag invoke --endpoint` against
    // a running `geotag up`) is used as it is.
    let (description, created) = match request.send().await {
        Ok(output) => (output.table_description, true),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            let existing = dynamodb.describe_table().table_name(&name).send().await?;
            (existing.table, false)
        }
        Err(error) => return Err(error.into()),
    };
    let description = description.ok_or_else(|| anyhow!("no description of table {name}"))?;
    if let Some(ttl) = properties.get("TimeToLiveSpecification")
        && created
        && ttl.get("Enabled").and_then(Value::as_bool).unwrap_or(false)
    {
        dynamodb
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(field(ttl, "AttributeName")?)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await?;
    }
    let mut attributes: HashMap<String, String> =
        [("Arn".to_owned(), description.table_arn.unwrap_or_default())].into();
    if let Some(stream_arn) = description.latest_stream_arn {
        attributes.insert("StreamArn".into(), stream_arn);
    }
    Ok(Physical {
        reference: name,
        attributes,
    })
}

fn field(value: &Value, name: &str) -> Result<String> {
    match value.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => bail!("missing {name} in {value}"),
    }
}

fn key_schema(value: &Value) -> Result<Vec<KeySchemaElement>> {
    value
        .as_array()
        .ok_or_else(|| anyhow!("KeySchema must be a list"))?
        .iter()
        .map(|key| {
            Ok(KeySchemaElement::builder()
                .attribute_name(field(key, "AttributeName")?)
                .key_type(KeyType::from(field(key, "KeyType")?.as_str()))
                .build()?)
        })
        .collect()
}

fn projection(value: Option<&Value>) -> Result<Projection> {
    let value = value.ok_or_else(|| anyhow!("index without Projection"))?;
    let non_key = value
        .get("NonKeyAttributes")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
    Ok(Projection::builder()
        .projection_type(ProjectionType::from(
            field(value, "ProjectionType")?.as_str(),
        ))
        .set_non_key_attributes(non_key)
        .build())
}

fn read_function(
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
    let environment = properties
        .get("Environment")
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_object)
        .map(|variables| {
            variables
                .iter()
                .map(|(key, value)| {
                    (
                        key.clone(),
                        text(variables, key).unwrap_or_else(|| value.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
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
                "SQS" => {
                    let queue_arn = text(event_properties, "Queue")
                        .ok_or_else(|| anyhow!("SQS event {event_name} without Queue"))?;
                    let queue_url = queue_url_of_arn(resolver, &queue_arn).ok_or_else(|| {
                        anyhow!("SQS event {event_name}: no local queue {queue_arn}")
                    })?;
                    let response_types = event_properties
                        .get("FunctionResponseTypes")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    events.push(EventSource::Sqs(SqsSource {
                        name: event_name.clone(),
                        queue_arn,
                        queue_url,
                        batch_size: number(event_properties, "BatchSize")?.unwrap_or(10),
                        batching_window_secs: number(
                            event_properties,
                            "MaximumBatchingWindowInSeconds",
                        )?
                        .unwrap_or(0),
                        report_batch_item_failures: response_types
                            .iter()
                            .any(|t| t.as_str() == Some("ReportBatchItemFailures")),
                        maximum_concurrency: event_properties
                            .get("ScalingConfig")
                            .and_then(Value::as_object)
                            .map(|scaling| number(scaling, "MaximumConcurrency"))
                            .transpose()?
                            .flatten(),
                    }));
                }
                "DynamoDB" => {
                    let stream_arn = text(event_properties, "Stream")
                        .ok_or_else(|| anyhow!("DynamoDB event {event_name} without Stream"))?;
                    let starting_position = match text(event_properties, "StartingPosition")
                        .as_deref()
                    {
                        Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
                        Some("LATEST") | None => StartingPosition::Latest,
                        Some(other) => bail!(
                            "DynamoDB event {event_name}: StartingPosition {other} is not supported"
                        ),
                    };
                    let filters = event_properties
                        .get("FilterCriteria")
                        .and_then(|criteria| criteria.get("Filters"))
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|filter| match filter.get("Pattern") {
                            Some(Value::String(pattern)) => {
                                serde_json::from_str(pattern).map_err(|e| {
                                    anyhow!("{event_name}: filter pattern is not JSON: {e}")
                                })
                            }
                            Some(object @ Value::Object(_)) => Ok(object.clone()),
                            _ => bail!("{event_name}: a filter without Pattern"),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let on_failure_queue_url = match event_properties
                        .get("DestinationConfig")
                        .and_then(|config| config.get("OnFailure"))
                        .and_then(|on_failure| on_failure.get("Destination"))
                        .and_then(Value::as_str)
                    {
                        None => None,
                        Some(arn) => Some(queue_url_of_arn(resolver, arn).ok_or_else(|| {
                            anyhow!(
                                "{event_name}: on-failure destination {arn} is not a local queue"
                            )
                        })?),
                    };
                    let retries: Option<i64> = number(event_properties, "MaximumRetryAttempts")?;
                    events.push(EventSource::DynamoDb(StreamSource {
                        name: event_name.clone(),
                        stream_arn,
                        starting_position,
                        batch_size: number(event_properties, "BatchSize")?.unwrap_or(100),
                        batching_window_secs: number(
                            event_properties,
                            "MaximumBatchingWindowInSeconds",
                        )?
                        .unwrap_or(0),
                        filters,
                        bisect_on_error: text(event_properties, "BisectBatchOnFunctionError")
                            .as_deref()
                            == Some("true"),
                        maximum_retry_attempts: retries.and_then(|n| u32::try_from(n).ok()),
                        report_batch_item_failures: event_properties
                            .get("FunctionResponseTypes")
                            .and_then(Value::as_array)
                            .is_some_and(|types| {
                                types
                                    .iter()
                                    .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
                            }),
                        on_failure_queue_url,
                    }));
                }
                "Schedule" | "ScheduleV2" => {
                    let expression = text(event_properties, "Schedule")
                        .or_else(|| text(event_properties, "ScheduleExpression"))
                        .ok_or_else(|| anyhow!("schedule {event_name} without an expression"))?;
                    let enabled = text(event_properties, "Enabled").as_deref() != Some("false")
                        && text(event_properties, "State").as_deref() != Some("DISABLED");
                    if enabled {
                        events.push(EventSource::Schedule(ScheduleSource {
                            name: event_name.clone(),
                            period: parse_rate(&expression)?,
                            expression,
                            input: match event_properties.get("Input") {
                                Some(Value::String(json)) => Some(serde_json::from_str(json)?),
                                Some(other) => Some(other.clone()),
                                None => None,
                            },
                        }));
                    }
                }
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
        environment,
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
