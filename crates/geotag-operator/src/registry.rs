//! The registry commands (`geotag customer`, `geotag device`, `geotag
//! geofence`): who owns which tag, each customer's thresholds and alert
//! subscriptions, and the zones, on the local stack or a deployed one.
//!
//! A customer's alerts reach it through an AlertsTopic subscription whose
//! filter policy accepts only its `customer_id` message attribute: SNS does
//! the per-customer fan-out, and no code of ours decides who may read what.
//! So a subscription is made here only with that filter, read back before
//! it counts, and [`RegistryAdmin::audit`] finds any whose filter admits
//! more (see `geotag::alert_filter`). The tables are those of template.yaml
//! (see `geotag_aws::registry`).

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use geotag::alert_filter::{Scope, Subscription, customer_filter};
use geotag::alerts::ThresholdField;
use geotag::geofence::Geofence;
use geotag::store::AlertSink as _;
use geotag_aws::SnsAlertSink;
use geotag_aws::alert_log::describe_subscription;
use geotag_aws::clients::SdkConfig;
use geotag_aws::registry::{
    GLOBAL_SCOPE, device_from, device_item, geofence_from, geofence_item, threshold_attributes,
};
use serde_json::json;

use geotag_local_cloud::provision::Stack;

/// The registry of one stack.
#[derive(Debug, Clone)]
pub struct RegistryAdmin {
    dynamodb: aws_sdk_dynamodb::Client,
    sns: aws_sdk_sns::Client,
    pub devices_table: String,
    pub customers_table: String,
    pub geofences_table: String,
    pub alerts_topic_arn: String,
    /// Where SNS puts what it could not deliver to a subscription.
    pub undelivered_queue_arn: String,
}

/// What `geotag customer audit` found: every AlertsTopic subscription, by
/// whose alerts it receives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audit {
    /// Scoped to one customer, with whether the registry knows that customer.
    pub one_customer: Vec<(Subscription, String, bool)>,
    /// The explicit every-customer filter (the operator's address).
    pub every_customer: Vec<Subscription>,
    /// Admitting more than one customer's alerts, with why.
    pub unscoped: Vec<(Subscription, String)>,
    /// Addresses yet to confirm: SNS delivers nothing to them until they do,
    /// and their filter can be read only then.
    pub pending: Vec<Subscription>,
}

/// A customer to add, or to update (thresholds left `None` are the defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerSpec {
    pub customer_id: String,
    /// Addresses subscribed to the customer's alerts (SNS asks each to confirm).
    pub emails: Vec<String>,
    /// SQS queues subscribed to the customer's alerts (integrations, tests).
    pub queue_arns: Vec<String>,
    pub battery_low_pct: Option<f64>,
    pub speed_limit_kmh: Option<f64>,
    pub speed_grace_seconds: Option<f64>,
    pub silence_minutes: Option<f64>,
}

/// A customer as the Customers table and AlertsTopic know it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRow {
    pub customer_id: String,
    pub emails: Vec<String>,
    pub thresholds: String,
    /// Subscriptions whose filter policy names this customer: (protocol, endpoint).
    pub subscriptions: Vec<(String, String)>,
}

/// Customer ids: what a device id may be, less the reserved names.
pub fn check_customer_id(id: &str) -> Result<()> {
    ensure!(
        geotag::reading::is_valid_device_id(id),
        "customer id {id:?}: 1 to 64 characters of A-Z a-z 0-9 . _ : -"
    );
    ensure!(
        geotag::tenancy::is_valid_customer_id(id),
        "customer id {id:?} is reserved"
    );
    Ok(())
}

/// A customer's id and thresholds, each threshold in its range (the same the
/// alerts function holds stored values to).
pub fn check_customer(customer: &CustomerSpec) -> Result<()> {
    check_customer_id(&customer.customer_id)?;
    for (field, value) in [
        (ThresholdField::BatteryLowPct, customer.battery_low_pct),
        (ThresholdField::SpeedLimitKmh, customer.speed_limit_kmh),
        (
            ThresholdField::SpeedGraceSeconds,
            customer.speed_grace_seconds,
        ),
        (ThresholdField::SilenceMinutes, customer.silence_minutes),
    ] {
        if let Some(value) = value {
            field
                .check(value)
                .with_context(|| format!("customer {}", customer.customer_id))?;
        }
    }
    Ok(())
}

impl RegistryAdmin {
    /// The registry of a local stack.
    pub fn for_local(stack: &Stack, sdk: &SdkConfig) -> Result<RegistryAdmin> {
        Ok(RegistryAdmin {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            devices_table: stack.reference("DevicesTable")?.to_owned(),
            customers_table: stack.reference("CustomersTable")?.to_owned(),
            geofences_table: stack.reference("GeofencesTable")?.to_owned(),
            alerts_topic_arn: stack.reference("AlertsTopic")?.to_owned(),
            undelivered_queue_arn: stack
                .attribute("UndeliveredNotifications", "Arn")?
                .to_owned(),
        })
    }

    /// The registry of a stack deployed by `sam deploy` as `stack_name`: the
    /// template names its tables `<stack>-devices` etc. and its topic
    /// `<stack>-alerts`, which is looked up among the account's topics.
    pub async fn for_deployed(sdk: &SdkConfig, stack_name: &str) -> Result<RegistryAdmin> {
        let sns = aws_sdk_sns::Client::new(sdk);
        let suffix = format!(":{stack_name}-alerts");
        let mut next = None;
        let topic = loop {
            let page = sns.list_topics().set_next_token(next).send().await?;
            if let Some(arn) = page
                .topics()
                .iter()
                .filter_map(|t| t.topic_arn())
                .find(|arn| arn.ends_with(&suffix))
            {
                break arn.to_owned();
            }
            next = page.next_token;
            if next.is_none() {
                bail!(
                    "no topic {stack_name}-alerts in this account and region: is the stack deployed?"
                );
            }
        };
        // The queue's ARN is the topic's, but for the service and the name.
        let undelivered_queue_arn = match topic.split(':').collect::<Vec<_>>().as_slice() {
            [arn, partition, _sns, region, account, _name] => format!(
                "{arn}:{partition}:sqs:{region}:{account}:{stack_name}-undelivered-notifications"
            ),
            _ => bail!("{topic} is not a topic ARN"),
        };
        Ok(RegistryAdmin {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sns,
            undelivered_queue_arn,
            devices_table: format!("{stack_name}-devices"),
            customers_table: format!("{stack_name}-customers"),
            geofences_table: format!("{stack_name}-geofences"),
            alerts_topic_arn: topic,
        })
    }

    /// Records the customer and subscribes its addresses and queues to its
    /// alerts. Returns the subscription ARNs (email ones stay "pending
    /// confirmation" until the recipient clicks the link SNS sends).
    pub async fn add_customer(&self, customer: &CustomerSpec) -> Result<Vec<String>> {
        check_customer(customer)?;
        let mut item = threshold_attributes(
            customer.battery_low_pct,
            customer.speed_limit_kmh.map(|kmh| kmh / 3.6),
            customer.speed_grace_seconds,
            customer.silence_minutes.map(|minutes| minutes * 60.0),
        );
        item.insert(
            "customer_id".into(),
            AttributeValue::S(customer.customer_id.clone()),
        );
        if !customer.emails.is_empty() {
            item.insert("emails".into(), AttributeValue::Ss(customer.emails.clone()));
        }
        self.dynamodb
            .put_item()
            .table_name(&self.customers_table)
            .set_item(Some(item))
            .send()
            .await
            .with_context(|| format!("writing customer {}", customer.customer_id))?;
        let endpoints = customer
            .emails
            .iter()
            .map(|email| ("email", email))
            .chain(customer.queue_arns.iter().map(|arn| ("sqs", arn)));
        let mut arns = Vec::new();
        for (protocol, endpoint) in endpoints {
            arns.push(
                self.subscribe_customer(&customer.customer_id, protocol, endpoint)
                    .await?,
            );
        }
        Ok(arns)
    }

    /// Subscribes `endpoint` to `customer_id`'s alerts: the filter and the
    /// redrive policy are set by the Subscribe call itself (never added
    /// after, so there is no moment without them), and read back. A
    /// subscription that does not come back scoped to the customer alone
    /// is removed again and the command fails.
    async fn subscribe_customer(
        &self,
        customer_id: &str,
        protocol: &str,
        endpoint: &str,
    ) -> Result<String> {
        let arn = self
            .sns
            .subscribe()
            .topic_arn(&self.alerts_topic_arn)
            .protocol(protocol)
            .endpoint(endpoint)
            .attributes("FilterPolicyScope", "MessageAttributes")
            .attributes("FilterPolicy", customer_filter(customer_id))
            .attributes(
                "RedrivePolicy",
                json!({"deadLetterTargetArn": self.undelivered_queue_arn}).to_string(),
            )
            .return_subscription_arn(true)
            .send()
            .await
            .with_context(|| format!("subscribing {endpoint} to the alerts topic"))?
            .subscription_arn
            .ok_or_else(|| anyhow!("SNS returned no subscription ARN for {endpoint}"))?;
        let subscription = describe_subscription(&self.sns, &arn, protocol, endpoint).await?;
        match subscription.scope() {
            // An address confirms later; until then SNS delivers nothing to it.
            None => Ok(arn),
            Some(Scope::Customer(id)) if id == customer_id => Ok(arn),
            Some(other) => {
                self.sns
                    .unsubscribe()
                    .subscription_arn(&arn)
                    .send()
                    .await
                    .with_context(|| format!("removing {arn} again"))?;
                bail!(
                    "{endpoint} was subscribed but its filter came back as {other:?}, not {customer_id}'s alone; the subscription was removed"
                )
            }
        }
    }

    /// AlertsTopic's subscriptions, every page.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        Ok(SnsAlertSink::new(self.sns.clone(), &self.alerts_topic_arn)
            .subscriptions()
            .await?)
    }

    /// Every AlertsTopic subscription, judged by its filter.
    pub async fn audit(&self) -> Result<Audit> {
        let customers: std::collections::BTreeSet<String> =
            crate::table_scan::scan_all(&self.dynamodb, &self.customers_table, false)
                .await?
                .iter()
                .filter_map(|item| Some(item.get("customer_id")?.as_s().ok()?.clone()))
                .collect();
        let mut audit = Audit::default();
        for subscription in self.subscriptions().await? {
            match subscription.scope() {
                None => audit.pending.push(subscription),
                Some(Scope::Customer(id)) => {
                    let known = customers.contains(&id);
                    audit.one_customer.push((subscription, id, known));
                }
                Some(Scope::EveryCustomer) => audit.every_customer.push(subscription),
                Some(Scope::Unscoped(why)) => audit.unscoped.push((subscription, why)),
            }
        }
        Ok(audit)
    }

    fn names_customer(subscription: &Subscription, customer_id: &str) -> bool {
        subscription.scope() == Some(Scope::Customer(customer_id.to_owned()))
    }

    pub async fn list_customers(&self) -> Result<Vec<CustomerRow>> {
        let subscriptions = self.subscriptions().await?;
        let mut rows = Vec::new();
        for item in
            crate::table_scan::scan_all(&self.dynamodb, &self.customers_table, false).await?
        {
            let Some(customer_id) = item.get("customer_id").and_then(|v| v.as_s().ok()) else {
                continue;
            };
            let thresholds = [
                "battery_low_pct",
                "speed_limit_mps",
                "speed_grace_s",
                "silence_after_s",
            ]
            .iter()
            .filter_map(|name| Some(format!("{name}={}", item.get(*name)?.as_n().ok()?)))
            .collect::<Vec<_>>()
            .join(" ");
            rows.push(CustomerRow {
                customer_id: customer_id.clone(),
                emails: item
                    .get("emails")
                    .and_then(|v| v.as_ss().ok())
                    .cloned()
                    .unwrap_or_default(),
                thresholds: if thresholds.is_empty() {
                    "defaults".into()
                } else {
                    thresholds
                },
                subscriptions: subscriptions
                    .iter()
                    .filter(|subscription| Self::names_customer(subscription, customer_id))
                    .map(|s| (s.protocol.clone(), s.endpoint.clone()))
                    .collect(),
            });
        }
        rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        Ok(rows)
    }

    /// Removes the customer, its subscriptions and its devices' assignments
    /// (they become unassigned: their alerts go to the operator only).
    /// Returns (subscriptions removed, devices unassigned).
    pub async fn remove_customer(&self, customer_id: &str) -> Result<(usize, usize)> {
        let mut removed = 0;
        for subscription in self.subscriptions().await? {
            if Self::names_customer(&subscription, customer_id) {
                self.sns
                    .unsubscribe()
                    .subscription_arn(&subscription.arn)
                    .send()
                    .await?;
                removed += 1;
            }
        }
        let devices: Vec<String> = self
            .list_devices()
            .await?
            .into_iter()
            .filter(|(_, customer)| customer == customer_id)
            .map(|(device, _)| device)
            .collect();
        self.unassign(&devices).await?;
        self.dynamodb
            .delete_item()
            .table_name(&self.customers_table)
            .key("customer_id", AttributeValue::S(customer_id.to_owned()))
            .send()
            .await?;
        Ok((removed, devices.len()))
    }

    /// Assigns tags to a customer that exists.
    pub async fn assign(&self, devices: &[String], customer_id: &str) -> Result<()> {
        let known = self
            .dynamodb
            .get_item()
            .table_name(&self.customers_table)
            .key("customer_id", AttributeValue::S(customer_id.to_owned()))
            .send()
            .await?
            .item
            .is_some();
        ensure!(
            known,
            "no customer {customer_id:?}; add it first with `geotag customer add {customer_id}`"
        );
        if let Some(bad) = devices
            .iter()
            .find(|d| !geotag::reading::is_valid_device_id(d))
        {
            bail!("device id {bad:?}: 1 to 64 characters of A-Z a-z 0-9 . _ : -");
        }
        let requests = devices
            .iter()
            .map(|device| {
                Ok(WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(device_item(device, customer_id)))
                            .build()?,
                    )
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        batch_write(&self.dynamodb, &self.devices_table, requests).await
    }

    pub async fn unassign(&self, devices: &[String]) -> Result<()> {
        let requests = devices
            .iter()
            .map(|device| {
                Ok(WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .key("device_id", AttributeValue::S(device.clone()))
                            .build()?,
                    )
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        batch_write(&self.dynamodb, &self.devices_table, requests).await
    }

    /// (device, customer), by device.
    pub async fn list_devices(&self) -> Result<Vec<(String, String)>> {
        let mut rows: Vec<(String, String)> =
            crate::table_scan::scan_all(&self.dynamodb, &self.devices_table, false)
                .await?
                .iter()
                .filter_map(device_from)
                .collect();
        rows.sort();
        Ok(rows)
    }

    pub async fn put_geofence(&self, geofence: &Geofence) -> Result<()> {
        if let Some(problem) = geofence.problem() {
            bail!("{problem}");
        }
        self.dynamodb
            .put_item()
            .table_name(&self.geofences_table)
            .set_item(Some(geofence_item(geofence)))
            .send()
            .await?;
        Ok(())
    }

    pub async fn list_geofences(&self) -> Result<Vec<Geofence>> {
        let mut zones: Vec<Geofence> =
            crate::table_scan::scan_all(&self.dynamodb, &self.geofences_table, false)
                .await?
                .iter()
                .filter_map(geofence_from)
                .collect();
        zones.sort_by(|a, b| (&a.customer_id, &a.id).cmp(&(&b.customer_id, &b.id)));
        Ok(zones)
    }

    /// Removes a zone; `false` if there was none.
    pub async fn remove_geofence(&self, customer_id: Option<&str>, id: &str) -> Result<bool> {
        let output = self
            .dynamodb
            .delete_item()
            .table_name(&self.geofences_table)
            .key(
                "scope",
                AttributeValue::S(customer_id.unwrap_or(GLOBAL_SCOPE).to_owned()),
            )
            .key("geofence_id", AttributeValue::S(id.to_owned()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }
}

/// Writes `requests`, 25 per BatchWriteItem, until none is left unprocessed.
async fn batch_write(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<()> {
    for chunk in requests.chunks(25) {
        let mut pending = chunk.to_vec();
        for attempt in 0..10u32 {
            if pending.is_empty() {
                break;
            }
            let output = dynamodb
                .batch_write_item()
                .request_items(table, std::mem::take(&mut pending))
                .send()
                .await
                .with_context(|| format!("writing to {table}"))?;
            pending = output
                .unprocessed_items
                .and_then(|mut tables| tables.remove(table))
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(geotag_aws::retry::Backoff::default().delay(attempt)).await;
            }
        }
        ensure!(
            pending.is_empty(),
            "{table} kept refusing writes (throttled)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_are_checked_and_the_reserved_ones_refused() {
        assert!(check_customer_id("acme-logistics.eu").is_ok());
        for bad in ["", "unassigned", "*", "has space", &"x".repeat(65)] {
            assert!(check_customer_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn thresholds_out_of_range_are_refused_before_anything_is_written() {
        let customer = |silence_minutes, battery_low_pct| CustomerSpec {
            customer_id: "acme".into(),
            silence_minutes,
            battery_low_pct,
            ..CustomerSpec::default()
        };
        assert!(check_customer(&customer(Some(45.0), Some(15.0))).is_ok());
        let error = check_customer(&customer(Some(-5.0), None)).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "customer acme: silence_minutes -5 is not in [1, 44640]"
        );
        assert!(check_customer(&customer(None, Some(150.0))).is_err());
        assert!(check_customer(&customer(Some(f64::NAN), None)).is_err());
    }

    #[test]
    fn a_subscription_names_a_customer_only_through_its_own_filter() {
        let subscription = |arn: &str, policy: Option<&str>| Subscription {
            arn: arn.into(),
            protocol: "sqs".into(),
            endpoint: "arn:aws:sqs:us-east-1:123456789012:q".into(),
            filter_policy: policy.map(str::to_owned),
            filter_policy_scope: None,
        };
        let acme = customer_filter("acme");
        let confirmed = "arn:aws:sns:us-east-1:123456789012:alerts:1";
        assert!(RegistryAdmin::names_customer(
            &subscription(confirmed, Some(&acme)),
            "acme"
        ));
        assert!(!RegistryAdmin::names_customer(
            &subscription(confirmed, Some(&acme)),
            "globex"
        ));
        assert!(!RegistryAdmin::names_customer(
            &subscription(confirmed, None),
            "acme"
        ));
        assert!(!RegistryAdmin::names_customer(
            &subscription("PendingConfirmation", Some(&acme)),
            "acme"
        ));
        assert_eq!(subscription("PendingConfirmation", None).scope(), None);
    }
}
