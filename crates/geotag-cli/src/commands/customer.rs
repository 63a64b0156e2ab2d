//! `geotag customer add|list|remove`.

use anyhow::Result;
use geotag_operator::registry::{CustomerSpec, customer_filter_policy};

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
                customer_filter_policy(&id)
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
        CustomerAction::Remove { id } => {
            let (subscriptions, devices) = admin.remove_customer(&id).await?;
            println!(
                "customer {id} removed: {subscriptions} subscription(s), {devices} tag(s) unassigned"
            );
        }
    }
    Ok(())
}
