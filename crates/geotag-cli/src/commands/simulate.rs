//! `geotag simulate`: a simulated fleet published to a running local stack,
//! over MQTT through its broker (the tags provisioned first, with the CA that
//! `geotag up` saved), or to SNS directly (`--via sns`).

use anyhow::{Context as _, Result};
use geotag_local_iot::ca::LocalCa;
use geotag_local_iot::local::STATE_DIR;
use geotag_local_iot::provision::{Signer, provision_device};
use geotag_simulation::edge::Via;
use geotag_simulation::mqtt::Fleet;
use geotag_simulation::simulate;

use geotag_local_cloud::stack::LocalStack;
use geotag_operator::registry::{CustomerSpec, RegistryAdmin};

use crate::args::SimulateArgs;
use crate::commands::device::BROKER_FILE;

pub async fn run(args: SimulateArgs) -> Result<()> {
    let local = args.emulator.running_stack().await?;
    let plan = simulate::plan(&args.fleet.config());
    if !args.customers.is_empty() {
        give_to_customers(&local, &plan, &args.customers).await?;
    }
    match args.via {
        Via::Sns => {
            let topic = local.stack.reference("TelemetryTopic")?.to_owned();
            let sns = aws_sdk_sns::Client::new(&local.sdk);
            simulate::publish(&sns, &topic, &plan.messages, true, None).await?;
        }
        Via::Mqtt => {
            let state = local.root.join(STATE_DIR);
            let ca = LocalCa::load(&state)?;
            let broker = std::fs::read_to_string(state.join(BROKER_FILE))
                .context("no broker address: is `geotag up` running?")?;
            let port: u16 = broker
                .trim()
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .context("the broker address does not parse")?;
            let iot = aws_sdk_iot::Client::new(&local.sdk);
            let policy = geotag_local_iot::local::device_policy(&local.stack)?;
            let devices = state.join("devices");
            let things: Vec<&str> = plan
                .expected
                .behaviours
                .keys()
                .map(String::as_str)
                .collect();
            for thing in &things {
                provision_device(&iot, Signer::Local(&ca), &policy, thing, &devices).await?;
            }
            let fleet =
                Fleet::connect(port, ca.certificate_pem(), &devices, things.iter().copied())?;
            fleet.publish(&plan.messages, true, None).await?;
            fleet.disconnect().await;
        }
    }
    println!(
        "published {} messages: {} readings, {} malformed, {} duplicates",
        plan.messages.len(),
        plan.expected.unique_readings(),
        plan.expected.rejected(),
        plan.expected.duplicates
    );
    Ok(())
}

/// Assigns the plan's tags to `customers` in turn, adding the customers the
/// registry does not know yet (with the default thresholds, no subscriptions).
async fn give_to_customers(
    local: &LocalStack,
    plan: &simulate::Plan,
    customers: &[String],
) -> Result<()> {
    let admin = RegistryAdmin::for_local(&local.stack, &local.sdk)?;
    let known: Vec<String> = admin
        .list_customers()
        .await?
        .into_iter()
        .map(|row| row.customer_id)
        .collect();
    for customer in customers {
        if !known.contains(customer) {
            admin
                .add_customer(&CustomerSpec {
                    customer_id: customer.clone(),
                    ..CustomerSpec::default()
                })
                .await?;
        }
    }
    let tags: Vec<&String> = plan.expected.behaviours.keys().collect();
    for (index, customer) in customers.iter().enumerate() {
        let theirs: Vec<String> = tags
            .iter()
            .skip(index)
            .step_by(customers.len())
            .map(|tag| (*tag).clone())
            .collect();
        admin.assign(&theirs, customer).await?;
        println!("{} tag(s) given to {customer}", theirs.len());
    }
    Ok(())
}
