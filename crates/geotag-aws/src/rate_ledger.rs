//! The DeviceRates table: each tag's readings counted by the minute they are
//! stamped with, shared by every ingest instance (see `geotag::budget`).
//!
//! An item is one tag's minute: `device_id` and `minute` (epoch ms of its
//! start) as keys, `readings` added to atomically, and `expires_at` an hour
//! after the minute, when DynamoDB's TTL deletes it. A reading stamped with a
//! minute whose item has expired is counted from zero again: late readings
//! are a backlog's, not a flood's.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use futures::future::try_join_all;
use geotag::budget::{MinuteCount, RateLedger};
use geotag::clock::HOUR_MS;
use geotag::store::StoreError;

use crate::telemetry::store_error;

pub mod attr {
    pub const DEVICE_ID: &str = "device_id";
    pub const MINUTE: &str = "minute";
    pub const READINGS: &str = "readings";
    pub const EXPIRES_AT: &str = "expires_at";
}

#[derive(Debug, Clone)]
pub struct DynamoRateLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoRateLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoRateLedger {
            client,
            table: table.into(),
        }
    }

    async fn add_one(&self, count: &MinuteCount) -> Result<u64, StoreError> {
        let number = |value: i64| AttributeValue::N(value.to_string());
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::DEVICE_ID, AttributeValue::S(count.device_id.clone()))
            .key(attr::MINUTE, number(count.minute_ms))
            .update_expression(
                "ADD #readings :readings SET #expires = if_not_exists(#expires, :expires)",
            )
            .expression_attribute_names("#readings", attr::READINGS)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_values(":readings", AttributeValue::N(count.readings.to_string()))
            .expression_attribute_values(":expires", number((count.minute_ms + HOUR_MS) / 1000))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(store_error)?;
        let total = output
            .attributes()
            .and_then(|attributes| attributes.get(attr::READINGS))
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse::<u64>().ok());
        total.ok_or_else(|| StoreError::Service {
            code: "MissingAttribute".into(),
            message: format!(
                "UpdateItem on {} did not answer the new `{}`",
                self.table,
                attr::READINGS
            ),
        })
    }
}

impl RateLedger for DynamoRateLedger {
    async fn add(&self, counts: &[MinuteCount]) -> Result<Vec<u64>, StoreError> {
        // A batch counts few minutes (a flood fills one or two), each its own item.
        try_join_all(counts.iter().map(|count| self.add_one(count))).await
    }
}
