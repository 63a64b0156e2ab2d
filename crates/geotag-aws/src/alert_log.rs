//! The Alerts table, the alerts topic, and the silence index: the alerts
//! function's ports on DynamoDB and SNS.
//!
//! # Published once
//!
//! Every alert has a deterministic id (see `geotag::alerts`). Before it is
//! published, the id is *claimed* in the Alerts table with one conditional
//! UpdateItem: it succeeds if the id is new, or if it was claimed, never
//! published, and its claimer's lease (that invocation's deadline) has run
//! out. After the publish the item is marked `published`. So:
//!
//! - a duplicate stream record, a retried batch or an EventBridge double
//!   delivery finds the id published and publishes nothing;
//! - a concurrent invocation finds it leased: it waits for the mark (or for
//!   the lease of a claimer that died to run out), and gives its record back
//!   for a retry only if its own time runs short;
//! - a failed publish releases the lease and fails the record; the retry
//!   claims the id again and publishes it. Nothing is lost.
//!
//! The one window left is a crash between SNS accepting the message and the
//! mark: the retry publishes again. A standard topic cannot deduplicate that
//! (email cannot subscribe to a FIFO topic); the message carries the alert id
//! so that a consumer can.
//!
//! Alert items expire (TTL, `ALERT_RETENTION_DAYS`) long after any stream
//! record or schedule that could raise them again (a stream keeps 24 hours).
//! The same table holds each device's speeding episode, under
//! `watch#speeding#<device>`.

use std::collections::HashMap;

use geotag::alert_filter::Subscription;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sns::types::MessageAttributeValue;
use geotag::alerts::{Alert, SpeedWatch};
use geotag::clock::{DAY_MS, now_ms};
use geotag::store::{AlertLog, AlertSink, Claim, SilenceIndex, StoreError};
use serde_json::json;

use crate::batch_get::{batch_get, string_key};
use crate::device_stats::SILENCE_SHARDS;
use crate::registry::UNASSIGNED;
use crate::telemetry::store_error;

const WATCH_PREFIX: &str = "watch#speeding#";

#[derive(Debug, Clone)]
pub struct DynamoAlertLog {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention_ms: i64,
}

impl DynamoAlertLog {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        retention_days: u32,
    ) -> Self {
        DynamoAlertLog {
            client,
            table: table.into(),
            retention_ms: i64::from(retention_days) * DAY_MS,
        }
    }

    /// What a claim that failed its condition found: published, or leased.
    async fn claimed(&self, alert_id: &str) -> Result<Claim, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(alert_id.to_owned()))
            .consistent_read(true)
            .projection_expression("published, lease_until")
            .send()
            .await
            .map_err(store_error)?;
        let item = output.item.unwrap_or_default();
        if item
            .get("published")
            .and_then(|v| v.as_bool().ok().copied())
            .unwrap_or(false)
        {
            return Ok(Claim::Published);
        }
        Ok(Claim::Busy {
            until_ms: item
                .get("lease_until")
                .and_then(|v| v.as_n().ok()?.parse().ok())
                .unwrap_or(0),
        })
    }
}

pub use geotag::read::LoggedAlert;

/// Reads an Alerts item back; `None` for what is not an alert (the table
/// also holds the devices' speeding watches, which have no kind).
pub fn logged_alert_from(item: &HashMap<String, AttributeValue>) -> Option<LoggedAlert> {
    let string = |name: &str| item.get(name)?.as_s().ok().cloned();
    Some(LoggedAlert {
        id: string("id")?,
        kind: string("kind")?,
        device_id: string("device_id")?,
        customer_id: string("customer_id").unwrap_or_else(|| UNASSIGNED.to_owned()),
        at_ms: item.get("alert_at")?.as_n().ok()?.parse().ok()?,
        subject: string("subject").unwrap_or_default(),
        published: item
            .get("published")
            .and_then(|value| value.as_bool().ok())
            .copied()
            .unwrap_or(false),
        geofence_id: string("geofence_id"),
        geofence_name: string("geofence_name"),
    })
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl AlertLog for DynamoAlertLog {
    async fn claim(&self, alert: &Alert, lease_until_ms: i64) -> Result<Claim, StoreError> {
        let now = now_ms();
        let mut update = String::from(
            "SET kind = :kind, device_id = :device, customer_id = :customer, alert_at = :at, \
             subject = :subject, published = :false, lease_until = :lease, \
             raised_at = if_not_exists(raised_at, :now), expires_at = :expires, \
             attempts = if_not_exists(attempts, :zero) + :one",
        );
        if alert.geofence.is_some() {
            update.push_str(", geofence_id = :geofence, geofence_name = :geofence_name");
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(&alert.id))
            .update_expression(update)
            .condition_expression(
                "attribute_not_exists(id) OR (published = :false AND lease_until < :now)",
            )
            .expression_attribute_values(":kind", s(alert.kind.code()))
            .expression_attribute_values(":device", s(&alert.device_id))
            .expression_attribute_values(
                ":customer",
                s(alert.customer_id.as_deref().unwrap_or(UNASSIGNED)),
            )
            .expression_attribute_values(":at", n(alert.at_ms))
            .expression_attribute_values(":subject", s(&alert.subject))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires", n((now + self.retention_ms) / 1000))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        if let Some((id, name)) = &alert.geofence {
            request = request
                .expression_attribute_values(":geofence", s(id))
                .expression_attribute_values(":geofence_name", s(name));
        }
        let result = request
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(if output.attributes.is_some_and(|old| !old.is_empty()) {
                Claim::Unpublished
            } else {
                Claim::New
            }),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                self.claimed(&alert.id).await
            }
            Err(error) => Err(store_error(error)),
        }
    }

    async fn mark_published(&self, alert_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", s(alert_id))
            .update_expression("SET published = :true, published_at = :now REMOVE lease_until")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn release(&self, alert_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(alert_id))
            .update_expression("SET lease_until = :zero")
            .condition_expression("published = :false")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Published meanwhile by someone else: nothing to release.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(store_error(error)),
        }
    }

    async fn speed_watches(
        &self,
        devices: &[String],
    ) -> Result<HashMap<String, SpeedWatch>, StoreError> {
        let keys = devices
            .iter()
            .map(|device| string_key("id", format!("{WATCH_PREFIX}{device}")))
            .collect();
        let mut watches = HashMap::new();
        for item in batch_get(&self.client, &self.table, keys).await? {
            let Some(device) = item
                .get("id")
                .and_then(|id| id.as_s().ok())
                .and_then(|id| id.strip_prefix(WATCH_PREFIX))
            else {
                continue;
            };
            watches.insert(
                device.to_owned(),
                SpeedWatch {
                    since_ms: item.get("since").and_then(|v| v.as_n().ok()?.parse().ok()),
                    alerted: item
                        .get("alerted")
                        .and_then(|v| v.as_bool().ok().copied())
                        .unwrap_or(false),
                    observed: item
                        .get("observed_ts")
                        .and_then(|v| v.as_n().ok()?.parse().ok())
                        .map(|ts| {
                            let seq = item
                                .get("observed_seq")
                                .and_then(|v| v.as_n().ok()?.parse().ok());
                            (ts, seq)
                        }),
                },
            );
        }
        Ok(watches)
    }

    async fn save_speed_watch(
        &self,
        device_id: &str,
        watch: &SpeedWatch,
    ) -> Result<(), StoreError> {
        let mut item = HashMap::from([
            ("id".to_owned(), s(format!("{WATCH_PREFIX}{device_id}"))),
            ("alerted".to_owned(), AttributeValue::Bool(watch.alerted)),
            (
                "expires_at".to_owned(),
                n((now_ms() + self.retention_ms) / 1000),
            ),
        ]);
        if let Some(since) = watch.since_ms {
            item.insert("since".to_owned(), n(since));
        }
        if let Some((ts, seq)) = watch.observed {
            item.insert("observed_ts".to_owned(), n(ts));
            if let Some(seq) = seq {
                item.insert("observed_seq".to_owned(), n(seq));
            }
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

/// Publishes alerts to the alerts topic.
///
/// One message, two readers: an email subscriber gets the subject and a few
/// lines of text; SQS, Lambda and HTTP subscribers get a JSON document
/// (`MessageStructure: json`). Message attributes (`type`, `severity`,
/// `device_id`, `customer_id`) let subscription filter policies choose, which
/// is how each customer receives its own tags' alerts and nothing else.
#[derive(Debug, Clone)]
pub struct SnsAlertSink {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsAlertSink {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsAlertSink {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

/// The JSON document machine subscribers receive.
pub fn alert_document(alert: &Alert) -> serde_json::Value {
    let mut at = String::new();
    geotag::reading::write_rfc3339_millis(&mut at, alert.at_ms);
    json!({
        "id": alert.id,
        "type": alert.kind.code(),
        "severity": alert.kind.severity().to_string(),
        "device_id": alert.device_id,
        "customer_id": alert.customer_id.as_deref().unwrap_or(UNASSIGNED),
        "at": at,
        "geofence": alert.geofence.as_ref().map(|(id, name)| json!({"id": id, "name": name})),
        "subject": alert.subject,
        "text": alert.text,
    })
}

/// An SNS subject: ASCII, one line, at most 100 characters.
pub fn email_subject(subject: &str) -> String {
    let ascii: String = subject
        .chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\r' => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .take(100)
        .collect();
    let ascii = ascii.trim();
    if ascii.is_empty() {
        "geotag alert".to_owned()
    } else {
        ascii.to_owned()
    }
}

fn attribute(value: &str) -> Result<MessageAttributeValue, StoreError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|error| StoreError::Service {
            code: "BuildError".into(),
            message: error.to_string(),
        })
}

impl AlertSink for SnsAlertSink {
    async fn publish(&self, alert: &Alert) -> Result<(), StoreError> {
        let text = format!(
            "{}\n\nalert {} ({}, {})\n",
            alert.text,
            alert.id,
            alert.kind.code(),
            alert.kind.severity()
        );
        let document = alert_document(alert).to_string();
        let message = json!({
            "default": text,
            "email": text,
            "sqs": document,
            "lambda": document,
            "http": document,
            "https": document,
        });
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(email_subject(&alert.subject))
            .message(message.to_string())
            .message_structure("json")
            .message_attributes("type", attribute(alert.kind.code())?)
            .message_attributes("severity", attribute(&alert.kind.severity().to_string())?)
            .message_attributes("device_id", attribute(&alert.device_id)?)
            .message_attributes(
                "customer_id",
                attribute(alert.customer_id.as_deref().unwrap_or(UNASSIGNED))?,
            )
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut all = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .client
                .list_subscriptions_by_topic()
                .topic_arn(&self.topic_arn)
                .set_next_token(next)
                .send()
                .await
                .map_err(store_error)?;
            for listed in page.subscriptions() {
                all.push(
                    describe_subscription(
                        &self.client,
                        listed.subscription_arn().unwrap_or_default(),
                        listed.protocol().unwrap_or_default(),
                        listed.endpoint().unwrap_or_default(),
                    )
                    .await?,
                );
            }
            next = page.next_token;
            if next.is_none() {
                return Ok(all);
            }
        }
    }
}

/// The subscription `arn` with the attributes that say whose alerts it
/// receives (none while it is pending confirmation: it has no ARN yet).
pub async fn describe_subscription(
    client: &aws_sdk_sns::Client,
    arn: &str,
    protocol: &str,
    endpoint: &str,
) -> Result<Subscription, StoreError> {
    let mut subscription = Subscription {
        arn: arn.to_owned(),
        protocol: protocol.to_owned(),
        endpoint: endpoint.to_owned(),
        filter_policy: None,
        filter_policy_scope: None,
    };
    if subscription.confirmed() {
        let mut attributes = client
            .get_subscription_attributes()
            .subscription_arn(arn)
            .send()
            .await
            .map_err(store_error)?
            .attributes
            .unwrap_or_default();
        subscription.filter_policy = attributes.remove("FilterPolicy");
        subscription.filter_policy_scope = attributes.remove("FilterPolicyScope");
    }
    Ok(subscription)
}

/// The DeviceStats `SilenceIndex` (see [`crate::device_stats::silence_shard`]).
#[derive(Debug, Clone)]
pub struct DynamoSilenceIndex {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoSilenceIndex {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoSilenceIndex {
            client,
            table: table.into(),
        }
    }
}

impl SilenceIndex for DynamoSilenceIndex {
    async fn last_seen_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let queries = (0..SILENCE_SHARDS).map(|shard| async move {
            let mut found = Vec::new();
            let mut start = None;
            loop {
                let output = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name("SilenceIndex")
                    .key_condition_expression(
                        "silence_shard = :shard AND last_seen BETWEEN :from AND :to",
                    )
                    .expression_attribute_values(":shard", n(shard))
                    .expression_attribute_values(":from", n(from_ms))
                    // BETWEEN is inclusive; the window is not.
                    .expression_attribute_values(":to", n(to_ms - 1))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(store_error)?;
                for item in output.items() {
                    if let (Some(device), Some(seen)) = (
                        item.get("device_id").and_then(|v| v.as_s().ok()),
                        item.get("last_seen")
                            .and_then(|v| v.as_n().ok()?.parse::<i64>().ok()),
                    ) {
                        found.push((device.clone(), seen));
                    }
                }
                start = output.last_evaluated_key;
                if start.is_none() {
                    return Ok::<_, StoreError>(found);
                }
            }
        });
        let mut all = Vec::new();
        for shard in futures::future::join_all(queries).await {
            all.extend(shard?);
        }
        all.sort();
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geotag::alerts::AlertKind;

    #[test]
    fn subjects_are_one_ascii_line_of_at_most_100_characters() {
        assert_eq!(
            email_subject("tag-1 entered Dépôt\nnord"),
            "tag-1 entered D?p?t nord"
        );
        assert_eq!(email_subject(&"x".repeat(300)).len(), 100);
        assert_eq!(email_subject("\n"), "geotag alert");
    }

    #[test]
    fn the_document_names_the_unassigned() {
        let alert = Alert {
            id: "battery_low#tag-9#1".into(),
            kind: AlertKind::BatteryLow,
            device_id: "tag-9".into(),
            customer_id: None,
            at_ms: 1_795_161_600_000,
            geofence: None,
            subject: "s".into(),
            text: "t".into(),
        };
        let document = alert_document(&alert);
        assert_eq!(document["customer_id"], "unassigned");
        assert_eq!(document["at"], "2026-11-20T08:00:00.000Z");
        assert_eq!(document["severity"], "warning");
    }
}
