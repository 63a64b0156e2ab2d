//! `geotag redrive`: the messages ingest refused and failed on (or, with
//! `--quarantine`, parked over their tag's budget) sent back through ingest
//! (`geotag_operator::redrive`), on a local or a deployed stack.

use std::time::Duration;

use anyhow::Result;
use geotag_operator::redrive::{Redrive, RedriveOptions, Sources};

use super::target::Target;
use crate::args::RedriveArgs;

pub async fn run(args: RedriveArgs) -> Result<()> {
    let sources = if args.quarantine {
        Sources::Quarantine
    } else {
        Sources::RefusedAndFailed
    };
    let redrive = match args.target.target().await? {
        Target::Local(local) => Redrive::for_local(&local.stack, &local.sdk, sources)?,
        Target::Deployed { sdk, stack_name } => {
            Redrive::for_deployed(&sdk, &stack_name, sources).await?
        }
    };
    let report = redrive
        .run(&RedriveOptions {
            wait_for_returns: Duration::from_secs(args.wait),
            ..RedriveOptions::default()
        })
        .await?;
    println!(
        "redriven {} messages ({} duplicate dead letters deleted)",
        report.redriven, report.duplicates
    );
    if report.returned.is_empty() {
        println!("none came back refused");
    } else {
        for (reason, count) in &report.returned {
            println!("came back refused: {count} × {reason} (left in IngestRejections)");
        }
    }
    if !report.ingest_drained {
        println!(
            "the ingest queue was not empty after {} s: more may come back; run it again later",
            args.wait
        );
    }
    Ok(())
}
