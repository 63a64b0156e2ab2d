//! Tables with their keys, indexes, streams and TTL, as the template declares them.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, ProvisionedThroughput, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use serde_json::{Map, Value};

use super::{default_name, text};
use crate::template::{Physical, Resolver, Resource};

pub(super) async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    resolver: &Resolver,
    resource: &Resource,
    properties: &Map<String, Value>,
) -> Result<Physical> {
    let name = text(properties, "TableName").unwrap_or_else(|| default_name(resolver, resource));
    let list = |name: &str| list_of(properties, name);
    let billing = text(properties, "BillingMode").unwrap_or_else(|| "PROVISIONED".into());
    let mut request = dynamodb
        .create_table()
        .table_name(&name)
        .set_attribute_definitions(Some(attribute_definitions(&list("AttributeDefinitions"))?))
        .set_key_schema(Some(key_schema(&Value::Array(list("KeySchema")))?))
        .billing_mode(BillingMode::from(billing.as_str()))
        .set_provisioned_throughput(throughput(properties.get("ProvisionedThroughput"))?);
    for index in list("GlobalSecondaryIndexes") {
        request = request.global_secondary_indexes(global_index(&index)?);
    }
    for index in list("LocalSecondaryIndexes") {
        request = request.local_secondary_indexes(local_index(&index)?);
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

fn list_of(properties: &Map<String, Value>, name: &str) -> Vec<Value> {
    properties
        .get(name)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn attribute_definitions(definitions: &[Value]) -> Result<Vec<AttributeDefinition>> {
    definitions
        .iter()
        .map(|definition| {
            Ok(AttributeDefinition::builder()
                .attribute_name(field(definition, "AttributeName")?)
                .attribute_type(ScalarAttributeType::from(
                    field(definition, "AttributeType")?.as_str(),
                ))
                .build()?)
        })
        .collect()
}

fn throughput(value: Option<&Value>) -> Result<Option<ProvisionedThroughput>> {
    let Some(value) = value else { return Ok(None) };
    Ok(Some(
        ProvisionedThroughput::builder()
            .read_capacity_units(field(value, "ReadCapacityUnits")?.parse()?)
            .write_capacity_units(field(value, "WriteCapacityUnits")?.parse()?)
            .build()?,
    ))
}

fn global_index(index: &Value) -> Result<GlobalSecondaryIndex> {
    Ok(GlobalSecondaryIndex::builder()
        .index_name(field(index, "IndexName")?)
        .set_key_schema(Some(key_schema(
            index.get("KeySchema").unwrap_or(&Value::Null),
        )?))
        .projection(projection(index.get("Projection"))?)
        .set_provisioned_throughput(throughput(index.get("ProvisionedThroughput"))?)
        .build()?)
}

fn local_index(index: &Value) -> Result<LocalSecondaryIndex> {
    Ok(LocalSecondaryIndex::builder()
        .index_name(field(index, "IndexName")?)
        .set_key_schema(Some(key_schema(
            index.get("KeySchema").unwrap_or(&Value::Null),
        )?))
        .projection(projection(index.get("Projection"))?)
        .build()?)
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
