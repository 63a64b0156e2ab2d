//! Reading many items: by key with BatchGetItem, 100 keys a request, strongly
//! consistent, with the keys DynamoDB leaves unprocessed (throttling) asked
//! for again after a backoff (the one loop every adapter that reads by key
//! uses); a range of one partition's sort keys with Query; and all of a small
//! table with Scan.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use geotag::store::StoreError;

use crate::retry::Backoff;
use crate::telemetry::store_error;

/// BatchGetItem's limit of keys per request.
pub const MAX_BATCH_GET: usize = 100;
/// Rounds of asking again for unprocessed keys before giving up.
const ROUNDS: u32 = 8;

/// An item key or a whole item, as the SDK holds it.
pub type Item = HashMap<String, AttributeValue>;

/// The items of `table` that exist among `keys`, in no particular order.
pub async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
) -> Result<Vec<Item>, StoreError> {
    let mut found = Vec::new();
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        let mut pending: Vec<Item> = keys.by_ref().take(MAX_BATCH_GET).collect();
        for round in 0..ROUNDS {
            if pending.is_empty() {
                break;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|error| StoreError::Service {
                    code: "BuildError".into(),
                    message: error.to_string(),
                })?;
            let output = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(store_error)?;
            found.extend(
                output
                    .responses
                    .and_then(|mut tables| tables.remove(table))
                    .unwrap_or_default(),
            );
            pending = output
                .unprocessed_keys
                .and_then(|mut tables| tables.remove(table))
                .map(|unprocessed| unprocessed.keys)
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(Backoff::default().delay(round)).await;
            }
        }
        if !pending.is_empty() {
            return Err(StoreError::OutOfTime);
        }
    }
    Ok(found)
}

/// A key of one string attribute.
pub fn string_key(name: &str, value: impl Into<String>) -> Item {
    HashMap::from([(name.to_owned(), AttributeValue::S(value.into()))])
}

/// Every item of a table, page by page. The functions scan only the
/// registry's small tables (Customers, Devices, Geofences); the operator's
/// report and the demo's audit read whole tables, the latter `consistent`ly.
pub async fn scan_all(
    client: &Client,
    table: &str,
    consistent: bool,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(consistent)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(store_error)?;
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}

/// Every item of `device_id`'s partition with `low <= sk <= high`, strongly
/// consistent (so that it holds every write that finished before), page
/// after page.
pub async fn query_sort_key_range(
    client: &Client,
    table: &str,
    device_id: &str,
    low: &str,
    high: &str,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .key_condition_expression("device_id = :device AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":device", AttributeValue::S(device_id.to_owned()))
            .expression_attribute_values(":low", AttributeValue::S(low.to_owned()))
            .expression_attribute_values(":high", AttributeValue::S(high.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(store_error)?;
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}
