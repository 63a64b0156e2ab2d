//! `geotag device assign|unassign|list`.

use anyhow::Result;

use crate::args::{DeviceAction, TargetArgs};

pub async fn run(action: DeviceAction, target: TargetArgs) -> Result<()> {
    let admin = target.admin().await?;
    match action {
        DeviceAction::Assign { devices, customer } => {
            admin.assign(&devices, &customer).await?;
            println!("{} tag(s) assigned to {customer}", devices.len());
        }
        DeviceAction::Unassign { devices } => {
            admin.unassign(&devices).await?;
            println!("{} tag(s) unassigned", devices.len());
        }
        DeviceAction::List => {
            for (device, customer) in admin.list_devices().await? {
                println!("{device:<24} {customer}");
            }
        }
    }
    Ok(())
}
