//! Topics, queues (visibility timeout, retention, redrive policy) and SNS
//! subscriptions (raw delivery, filter policies), with the template's properties.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Map, Value};

use super::{default_name, text};
use crate::template::{Physical, Resolver, Resource};

pub(super) async fn create_topic(
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

pub(super) async fn create_queue(
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

pub(super) async fn subscribe(
    sns: &aws_sdk_sns::Client,
    properties: &Map<String, Value>,
) -> Result<Physical> {
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
