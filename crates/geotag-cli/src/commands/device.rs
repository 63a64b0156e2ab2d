//! `geotag device provision|revoke|assign|unassign|list`.

use std::path::Path;

use anyhow::{Context as _, Result};
use geotag_local_iot::ca::LocalCa;
use geotag_local_iot::local::{STATE_DIR, device_policy};
use geotag_local_iot::provision::{Provisioned, Signer, provision_device, revoke_device};

use crate::args::{DeviceAction, TargetArgs};
use crate::commands::target::Target;

/// Where `geotag up` writes its broker's address, for the hint below.
pub const BROKER_FILE: &str = "broker";

pub async fn run(action: DeviceAction, target: TargetArgs) -> Result<()> {
    match action {
        DeviceAction::Provision {
            device,
            customer,
            out,
        } => provision(&target.target().await?, &device, customer.as_deref(), &out).await,
        DeviceAction::Revoke { device } => {
            let target = target.target().await?;
            let revoked = revoke_device(&aws_sdk_iot::Client::new(target.sdk()), &device).await?;
            println!(
                "{device}: {} certificate(s) deactivated ({}); it can no longer connect",
                revoked.len(),
                revoked.join(", ")
            );
            Ok(())
        }
        DeviceAction::Assign { devices, customer } => {
            target.admin().await?.assign(&devices, &customer).await?;
            println!("{} tag(s) assigned to {customer}", devices.len());
            Ok(())
        }
        DeviceAction::Unassign { devices } => {
            target.admin().await?.unassign(&devices).await?;
            println!("{} tag(s) unassigned", devices.len());
            Ok(())
        }
        DeviceAction::List => {
            for (device, customer) in target.admin().await?.list_devices().await? {
                println!("{device:<24} {customer}");
            }
            Ok(())
        }
    }
}

async fn provision(
    target: &Target,
    device: &str,
    customer: Option<&str>,
    out: &Path,
) -> Result<()> {
    let iot = aws_sdk_iot::Client::new(target.sdk());
    let (provisioned, broker, policy) = match target {
        Target::Local(local) => {
            let state = local.root.join(STATE_DIR);
            let ca = LocalCa::load(&state)?;
            let policy = device_policy(&local.stack)?;
            let provisioned = provision_device(
                &iot,
                Signer::Local(&ca),
                &policy,
                device,
                &local.root.join(out),
            )
            .await?;
            let broker = std::fs::read_to_string(state.join(BROKER_FILE))
                .ok()
                .map(|address| address.trim().to_owned());
            (provisioned, broker, policy)
        }
        Target::Deployed { stack_name, .. } => {
            // template.yaml names the device policy after the stack.
            let policy = format!("{stack_name}-device");
            let provisioned = provision_device(&iot, Signer::IotCore, &policy, device, out).await?;
            let endpoint = iot
                .describe_endpoint()
                .endpoint_type("iot:Data-ATS")
                .send()
                .await
                .context("DescribeEndpoint iot:Data-ATS")?
                .endpoint_address
                .map(|host| format!("{host}:8883"));
            (provisioned, endpoint, policy)
        }
    };
    if let Some(customer) = customer {
        target
            .admin()
            .await?
            .assign(&[device.to_owned()], customer)
            .await?;
    }
    print_provisioned(&provisioned, &policy, customer, broker.as_deref());
    Ok(())
}

fn print_provisioned(
    tag: &Provisioned,
    policy: &str,
    customer: Option<&str>,
    broker: Option<&str>,
) {
    println!(
        "{}: thing created, certificate {} ACTIVE, policy {policy} attached",
        tag.thing, tag.certificate_id
    );
    println!(
        "  certificate  {} (mode 0600)",
        tag.certificate_file.display()
    );
    println!(
        "  private key  {} (mode 0600)",
        tag.private_key_file.display()
    );
    let ca = match &tag.ca_file {
        Some(ca) => {
            println!("  broker's CA  {}", ca.display());
            ca.display().to_string()
        }
        None => {
            println!(
                "  broker's CA  Amazon Root CA 1: https://www.amazontrust.com/repository/AmazonRootCA1.pem"
            );
            "AmazonRootCA1.pem".to_owned()
        }
    };
    match customer {
        Some(customer) => println!("  assigned to  {customer}"),
        None => println!(
            "  unassigned   (`geotag device assign {} --customer C`)",
            tag.thing
        ),
    }
    let Some((host, port)) = broker.and_then(|address| address.rsplit_once(':')) else {
        return;
    };
    println!("\n  publish a reading as {}:", tag.thing);
    println!(
        "    mosquitto_pub -h {host} -p {port} --cafile {ca} --cert {} --key {} -i {thing} -t geotag/{thing}/telemetry -q 1 \\\n      -m '{{\"ts\":'$(date +%s000)',\"lat\":48.8566,\"lon\":2.3522}}'",
        tag.certificate_file.display(),
        tag.private_key_file.display(),
        thing = tag.thing,
    );
}
