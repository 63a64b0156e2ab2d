//! `geotag token`: a token for the local API, signed with the key the
//! running `geotag up` made (`target/geotag/api`), for `curl` and the map.

use std::time::Duration;

use anyhow::{Result, ensure};
use geotag_local_api::issuer::STATE_DIR;
use geotag_local_api::{LocalIssuer, Subject};

use crate::args::TokenArgs;

pub fn run(args: TokenArgs) -> Result<()> {
    let subject = match args.customer {
        Some(customer) => {
            ensure!(
                geotag::tenancy::is_valid_customer_id(&customer),
                "customer id {customer:?}: 1 to 64 characters of A-Z a-z 0-9 . _ : -, not a reserved name"
            );
            Subject::Customer(customer)
        }
        None => Subject::Operator,
    };
    ensure!(
        (1..=24 * 60).contains(&args.minutes),
        "--minutes {}: from 1 to 1440 (a day)",
        args.minutes
    );
    let root = geotag_local_cloud::project::root()?;
    let issuer = LocalIssuer::load(&root.join(STATE_DIR))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    println!(
        "{}",
        issuer.token(&subject, Duration::from_secs(args.minutes * 60), now)?
    );
    Ok(())
}
