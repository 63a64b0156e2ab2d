//! Creating what template.yaml declares in the emulator, by API.
//!
//! [`provision`] creates in passes (a resource whose references are not
//! created yet waits for the next pass); `messaging` creates topics, queues
//! and subscriptions, `tables` the tables, `iot` the IoT policies and topic
//! rules (which the local broker in `geotag-local-iot` enforces and plays),
//! and `functions` reads each function's environment and event sources for
//! the pump.
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
use geotag_aws::clients::SdkConfig;
use serde_json::{Map, Value};

use crate::emulator::{ACCOUNT_ID, REGION};
use crate::template::{Physical, Resolver, Resource, Template};

mod functions;
mod iot;
mod messaging;
mod tables;

pub use functions::{
    EventSource, FunctionSpec, HttpRoute, ScheduleSource, SqsSource, StartingPosition,
    StreamSource, parse_rate,
};
pub use iot::TopicRuleSpec;

/// The name the local stack gives `AWS::StackName`.
pub const LOCAL_STACK_NAME: &str = "geotag-local";

/// `AdminPrincipalArns` locally, the template's one parameter without a
/// default: IAM is not enforced here, and the emulator's account stands for
/// the admins.
pub const LOCAL_ADMINS: &str = "arn:aws:iam::123456789012:root";

/// The parameters of a stack that plays production: the template's
/// defaults, and [`LOCAL_ADMINS`].
pub fn production_parameters() -> HashMap<String, String> {
    HashMap::from([("AdminPrincipalArns".to_owned(), LOCAL_ADMINS.to_owned())])
}

/// What was created, what was not, and the functions to pump.
#[derive(Debug, Clone)]
pub struct Stack {
    pub resolver: Resolver,
    pub created: Vec<(String, String)>,
    /// (logical id, type, why) of declared resources the local stack did not create.
    pub not_emulated: Vec<(String, String, String)>,
    pub functions: BTreeMap<String, FunctionSpec>,
    /// The IoT topic rules, by logical id, for the local broker to play.
    pub topic_rules: BTreeMap<String, TopicRuleSpec>,
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
const IOT_POLICY: &str = "AWS::IoT::Policy";
const TOPIC_RULE: &str = "AWS::IoT::TopicRule";

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
        "AWS::Serverless::HttpApi" => {
            "`geotag up` serves the API on 127.0.0.1, verifying tokens of its local issuer"
        }
        "AWS::Cognito::UserPool"
        | "AWS::Cognito::UserPoolClient"
        | "AWS::Cognito::UserPoolGroup" => "tokens come from the local issuer (`geotag token`)",
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
    let iot = aws_sdk_iot::Client::new(sdk);
    let mut stack = Stack {
        resolver: resolver.clone(),
        created: Vec::new(),
        not_emulated: Vec::new(),
        functions: BTreeMap::new(),
        topic_rules: BTreeMap::new(),
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
            TOPIC | QUEUE | SUBSCRIPTION | TABLE | FUNCTION | IOT_POLICY | TOPIC_RULE => {
                pending.push(resource)
            }
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
                TOPIC => messaging::create_topic(&sns, &resolver, resource, &properties).await,
                QUEUE => messaging::create_queue(&sqs, &resolver, resource, &properties).await,
                TABLE => tables::create_table(&dynamodb, &resolver, resource, &properties).await,
                SUBSCRIPTION => messaging::subscribe(&sns, &properties).await,
                IOT_POLICY => iot::create_policy(&iot, &resolver, resource, &properties).await,
                TOPIC_RULE => {
                    let (physical, spec) =
                        iot::create_topic_rule(&iot, &resolver, resource, &properties).await?;
                    stack.topic_rules.insert(logical_id.clone(), spec);
                    Ok(physical)
                }
                FUNCTION => {
                    let (physical, spec) =
                        functions::read_function(&resolver, resource, &properties)?;
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

pub(crate) fn text(properties: &Map<String, Value>, name: &str) -> Option<String> {
    properties.get(name).and_then(|value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

pub(crate) fn number<T: std::str::FromStr>(
    properties: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>> {
    text(properties, name)
        .map(|value| {
            value
                .parse::<T>()
                .map_err(|_| anyhow!("{name}={value} is not a number"))
        })
        .transpose()
}

/// The URL of the created queue whose ARN is `arn`.
pub(crate) fn queue_url_of_arn(resolver: &Resolver, arn: &str) -> Option<String> {
    resolver
        .physical
        .values()
        .find(|p| p.attributes.get("Arn").map(String::as_str) == Some(arn))
        .and_then(|p| p.attributes.get("QueueUrl"))
        .cloned()
}

pub(crate) fn default_name(resolver: &Resolver, resource: &Resource) -> String {
    format!("{}-{}", resolver.stack_name, resource.logical_id)
}
