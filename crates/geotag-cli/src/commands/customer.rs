//! `geotag customer add|list|remove|audit`.

use anyhow::{Result, bail};
use geotag::alert_filter::{Subscription, customer_filter};
use geotag_operator::registry::{Audit, CustomerSpec};

use crate::args::{CustomerAction, TargetArgs};

pub async fn run(action: CustomerAction, target: TargetArgs) -> Result<()> {
    let admin = target.admin().await?;
    match action {
        CustomerAction::Add {
            id,
            email,
            queue_arn,
            battery_low_pct,
            speed_limit_kmh,
            speed_grace_seconds,
            silence_minutes,
        } => {
            let subscriptions = admin
                .add_customer(&CustomerSpec {
                    customer_id: id.clone(),
                    emails: email,
                    queue_arns: queue_arn,
                    battery_low_pct,
                    speed_limit_kmh,
                    speed_grace_seconds,
                    silence_minutes,
                })
                .await?;
            println!(
                "customer {id}: {} subscription(s) to {} with filter policy {}",
                subscriptions.len(),
                admin.alerts_topic_arn,
                customer_filter(&id)
            );
            for arn in subscriptions {
                println!("  {arn}");
            }
        }
        CustomerAction::List => {
            for row in admin.list_customers().await? {
                let subscriptions: Vec<String> = row
                    .subscriptions
                    .iter()
                    .map(|(protocol, endpoint)| format!("{protocol}:{endpoint}"))
                    .collect();
                println!(
                    "{:<20} thresholds: {:<40} subscriptions: {}",
                    row.customer_id,
                    row.thresholds,
                    subscriptions.join(", ")
                );
            }
        }
        CustomerAction::Audit => {
            let audit = admin.audit().await?;
            print_audit(&admin.alerts_topic_arn, &audit);
            if !audit.unscoped.is_empty() {
                bail!(
                    "{} subscription(s) to {} receive more than one customer's alerts; fix each filter (or unsubscribe it) as an admin",
                    audit.unscoped.len(),
                    admin.alerts_topic_arn
                );
            }
        }
        CustomerAction::Remove { id } => {
            let (subscriptions, devices) = admin.remove_customer(&id).await?;
            println!(
                "customer {id} removed: {subscriptions} subscription(s), {devices} tag(s) unassigned"
            );
        }
    }
    Ok(())
}

fn print_audit(topic_arn: &str, audit: &Audit) {
    let line = |subscription: &Subscription, verdict: &str| {
        println!(
            "  {} {}:{}\n    {verdict}",
            subscription.arn, subscription.protocol, subscription.endpoint
        );
    };
    println!(
        "{topic_arn}: {} subscription(s) scoped to one customer, {} to every customer on purpose, {} unscoped, {} pending confirmation",
        audit.one_customer.len(),
        audit.every_customer.len(),
        audit.unscoped.len(),
        audit.pending.len()
    );
    if !audit.unscoped.is_empty() {
        println!("unscoped (every one receives other customers' alerts):");
        for (subscription, why) in &audit.unscoped {
            line(subscription, why);
        }
    }
    if !audit.every_customer.is_empty() {
        println!("every customer, by the explicit filter (the operator's AlertEmail):");
        for subscription in &audit.every_customer {
            line(subscription, geotag::alert_filter::EVERY_CUSTOMER_FILTER);
        }
    }
    if !audit.pending.is_empty() {
        println!("pending confirmation (SNS delivers nothing until confirmed; audit again after):");
        for subscription in &audit.pending {
            line(subscription, "filter readable once confirmed");
        }
    }
    for (subscription, customer, known) in &audit.one_customer {
        if !known {
            line(
                subscription,
                &format!(
                    "names customer {customer}, which the registry does not have (its alerts would go here if it were added)"
                ),
            );
        }
    }
}
