//! The read side on DynamoDB: [`geotag::read::FleetReader`] with a Query on
//! one partition (of a table or of an index) or a GetItem per answer, never a
//! Scan. Reads are eventually consistent (half the read units of strong
//! ones): a map a second behind is a map; the ownership check reads the
//! registry strongly, because it decides what a caller may see.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use geotag::geofence::Geofence;
use geotag::read::{
    FleetReader, GeofenceWriteError, LoggedAlert, Page, Period, Position, WriteMode,
};
use geotag::reading::{Reading, write_rfc3339_millis};
use geotag::stats::{Bucket, LatestState, Rollup};
use geotag::store::{LATEST_SORT_KEY, StatsBody, StoreError};

use crate::alert_log::logged_alert_from;
use crate::device_stats::{FLEET_INDEX, attr as stats_attr, listed_latest_from, stats_item_from};
use crate::registry::{geofence_from, geofence_item};
use crate::telemetry::{attr, reading_from_item, store_error};

/// The index of a customer's alerts by time.
pub const CUSTOMER_ALERTS_INDEX: &str = "CustomerAlertsIndex";

/// The tables the API reads (and the one it writes, Geofences).
#[derive(Debug, Clone)]
pub struct DynamoFleet {
    pub client: Client,
    pub devices_table: String,
    pub device_stats_table: String,
    pub telemetry_table: String,
    pub alerts_table: String,
    pub geofences_table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn rfc3339(ts_ms: i64) -> String {
    let mut text = String::with_capacity(24);
    write_rfc3339_millis(&mut text, ts_ms);
    text
}

/// A page size DynamoDB accepts (1 or more; the API bounds it above).
fn query_limit(limit: usize) -> i32 {
    i32::try_from(limit.max(1)).unwrap_or(i32::MAX)
}

/// The Telemetry sort keys of readings taken in `[from_ms, to_ms)`, as a
/// `BETWEEN` range: `~` sorts after the `#sequence` suffix of any key at
/// that millisecond.
fn telemetry_key_range(from_ms: i64, to_ms: i64) -> (String, String) {
    (rfc3339(from_ms), format!("{}#~", rfc3339(to_ms - 1)))
}

impl DynamoFleet {
    /// A Query of one device's items in `table` with sort keys from `low`
    /// to `high`.
    fn device_range(
        &self,
        table: &str,
        device_id: &str,
        (low, high): (String, String),
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(table)
            .key_condition_expression("device_id = :device AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":device", s(device_id))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high))
    }

    /// Items of one Query page, and the key to go on from.
    async fn query_page(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let output = query.send().await.map_err(store_error)?;
        Ok((output.items.unwrap_or_default(), output.last_evaluated_key))
    }

    /// Every item of one Query, page after page (for answers bounded by their
    /// key range, such as a month of hourly rollups).
    async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self
                .query_page(query.clone().set_exclusive_start_key(start))
                .await?;
            items.extend(page);
            match next {
                Some(key) => start = Some(key),
                None => return Ok(items),
            }
        }
    }
}

impl FleetReader for DynamoFleet {
    async fn owner(&self, device_id: &str) -> Result<Option<String>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.devices_table)
            .key("device_id", s(device_id))
            .consistent_read(true)
            .projection_expression("customer_id")
            .send()
            .await
            .map_err(store_error)?;
        Ok(output
            .item
            .and_then(|item| item.get("customer_id")?.as_s().ok().cloned()))
    }

    async fn fleet(
        &self,
        customer_id: &str,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Page<(String, LatestState)>, StoreError> {
        let start = match after {
            Some(Position::Device(device)) => Some(HashMap::from([
                (stats_attr::FLEET_CUSTOMER.to_owned(), s(customer_id)),
                ("device_id".to_owned(), s(device.clone())),
                ("sk".to_owned(), s(LATEST_SORT_KEY)),
            ])),
            _ => None,
        };
        let (items, next) = self
            .query_page(
                self.client
                    .query()
                    .table_name(&self.device_stats_table)
                    .index_name(FLEET_INDEX)
                    .key_condition_expression("customer_id = :customer")
                    .expression_attribute_values(":customer", s(customer_id))
                    .limit(query_limit(limit))
                    .set_exclusive_start_key(start),
            )
            .await?;
        let mut listed = Vec::with_capacity(items.len());
        for item in &items {
            match listed_latest_from(item) {
                Some(entry) => listed.push(entry),
                None => tracing::error!(?item, "a FleetIndex item that does not parse; left out"),
            }
        }
        Ok(Page {
            items: listed,
            next: next
                .and_then(|key| Some(Position::Device(key.get("device_id")?.as_s().ok()?.clone()))),
        })
    }

    async fn latest(&self, device_id: &str) -> Result<Option<LatestState>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.device_stats_table)
            .key("device_id", s(device_id))
            .key("sk", s(LATEST_SORT_KEY))
            .send()
            .await
            .map_err(store_error)?;
        Ok(output
            .item
            .as_ref()
            .and_then(stats_item_from)
            .and_then(|item| match item.body {
                StatsBody::Latest(state) => Some(state),
                StatsBody::Rollup(..) => None,
            }))
    }

    async fn readings(
        &self,
        device_id: &str,
        owner: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Page<Reading>, StoreError> {
        let start = match after {
            Some(Position::Reading(key)) => Some(HashMap::from([
                (attr::DEVICE_ID.to_owned(), s(device_id)),
                (attr::SORT_KEY.to_owned(), s(key.clone())),
            ])),
            _ => None,
        };
        let (items, next) = self
            .query_page(
                self.device_range(
                    &self.telemetry_table,
                    device_id,
                    telemetry_key_range(from_ms, to_ms),
                )
                .filter_expression("customer_id = :owner")
                .expression_attribute_values(":owner", s(owner))
                .limit(query_limit(limit))
                .set_exclusive_start_key(start),
            )
            .await?;
        Ok(Page {
            items: items
                .iter()
                .filter_map(reading_from_item)
                // The filter is DynamoDB's; the stamp is checked here again,
                // because what reaches a caller must carry its id.
                .filter(|reading| {
                    reading.owner.as_deref() == Some(owner)
                        && (from_ms..to_ms).contains(&reading.ts_ms)
                })
                .collect(),
            next: next.and_then(|key| {
                Some(Position::Reading(
                    key.get(attr::SORT_KEY)?.as_s().ok()?.clone(),
                ))
            }),
        })
    }

    async fn rollups(
        &self,
        device_id: &str,
        period: Period,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(Bucket, Rollup)>, StoreError> {
        let items = self
            .query_all(self.device_range(
                &self.device_stats_table,
                device_id,
                (
                    period.bucket(from_ms).sort_key(),
                    period.bucket(to_ms.saturating_sub(1)).sort_key(),
                ),
            ))
            .await?;
        Ok(items
            .iter()
            .filter_map(stats_item_from)
            .filter_map(|item| match item.body {
                StatsBody::Rollup(bucket, rollup)
                    if bucket == period.bucket(bucket.start_ms())
                        && (from_ms..to_ms).contains(&bucket.start_ms()) =>
                {
                    Some((bucket, rollup))
                }
                _ => None,
            })
            .collect())
    }

    async fn hour_readings(
        &self,
        device_id: &str,
        hour_start_ms: i64,
    ) -> Result<Vec<Reading>, StoreError> {
        let hour_end = hour_start_ms + geotag::clock::HOUR_MS;
        let items = self
            .query_all(self.device_range(
                &self.telemetry_table,
                device_id,
                telemetry_key_range(hour_start_ms, hour_end),
            ))
            .await?;
        Ok(items
            .iter()
            .filter_map(reading_from_item)
            .filter(|reading| (hour_start_ms..hour_end).contains(&reading.ts_ms))
            .collect())
    }

    async fn alerts(
        &self,
        customer_id: &str,
        since_ms: i64,
        until_ms: i64,
        kind: Option<&str>,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Page<LoggedAlert>, StoreError> {
        let start = match after {
            Some(Position::Alert(at_ms, id)) => Some(HashMap::from([
                ("customer_id".to_owned(), s(customer_id)),
                ("alert_at".to_owned(), n(at_ms)),
                ("id".to_owned(), s(id.clone())),
            ])),
            _ => None,
        };
        let mut query = self
            .client
            .query()
            .table_name(&self.alerts_table)
            .index_name(CUSTOMER_ALERTS_INDEX)
            .key_condition_expression(
                "customer_id = :customer AND alert_at BETWEEN :since AND :until",
            )
            .expression_attribute_values(":customer", s(customer_id))
            .expression_attribute_values(":since", n(since_ms))
            .expression_attribute_values(":until", n(until_ms.saturating_sub(1)))
            .expression_attribute_values(":published", AttributeValue::Bool(true))
            .limit(query_limit(limit))
            .set_exclusive_start_key(start);
        query = match kind {
            Some(kind) => query
                .filter_expression("published = :published AND kind = :kind")
                .expression_attribute_values(":kind", s(kind)),
            None => query.filter_expression("published = :published"),
        };
        let (items, next) = self.query_page(query).await?;
        Ok(Page {
            items: items
                .iter()
                .filter_map(logged_alert_from)
                .filter(|alert| {
                    alert.customer_id == customer_id
                        && alert.published
                        && kind.is_none_or(|kind| alert.kind == kind)
                })
                .collect(),
            next: next.and_then(|key| {
                Some(Position::Alert(
                    key.get("alert_at")?.as_n().ok()?.parse().ok()?,
                    key.get("id")?.as_s().ok()?.clone(),
                ))
            }),
        })
    }

    async fn geofences(&self, scope: &str) -> Result<Vec<Geofence>, StoreError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .table_name(&self.geofences_table)
                    .key_condition_expression("#scope = :scope")
                    .expression_attribute_names("#scope", "scope")
                    .expression_attribute_values(":scope", s(scope)),
            )
            .await?;
        Ok(items.iter().filter_map(geofence_from).collect())
    }

    async fn put_geofence(
        &self,
        geofence: &Geofence,
        mode: WriteMode,
    ) -> Result<(), GeofenceWriteError> {
        let condition = match mode {
            WriteMode::Create => "attribute_not_exists(geofence_id)",
            WriteMode::Replace => "attribute_exists(geofence_id)",
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.geofences_table)
            .set_item(Some(geofence_item(geofence)))
            .condition_expression(condition)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(match mode {
                    WriteMode::Create => GeofenceWriteError::Exists,
                    WriteMode::Replace => GeofenceWriteError::Missing,
                })
            }
            Err(error) => Err(GeofenceWriteError::Store(store_error(error))),
        }
    }

    async fn delete_geofence(
        &self,
        customer_id: &str,
        geofence_id: &str,
    ) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.geofences_table)
            .key("scope", s(customer_id))
            .key("geofence_id", s(geofence_id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(store_error)?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }
}
