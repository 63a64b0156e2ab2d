//! Whole-table reads, for the operator's tools and the demo's audit: every
//! item of a table, page after page. The report reads whole tables on
//! purpose (a fleet's map); the functions never do this on Telemetry or
//! DeviceStats.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

/// Every item of `table`; `consistent` reads see every write acknowledged
/// before the scan began (the audit's need).
pub async fn scan_all(
    dynamodb: &Client,
    table: &str,
    consistent: bool,
) -> Result<Vec<HashMap<String, AttributeValue>>> {
    geotag_aws::batch_get::scan_all(dynamodb, table, consistent)
        .await
        .with_context(|| format!("scanning {table}"))
}
