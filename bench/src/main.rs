//! `geotag-bench report`: the performance table, after `cargo bench` has run
//! the criterion benches. `scripts/bench` runs the whole sequence.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "geotag's performance and cost table (run by scripts/bench)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Times the Python baseline, measures cold starts, memory and binaries,
    /// counts a local run's AWS requests, and prints the table beside the
    /// criterion results of `cargo bench -p geotag-bench`.
    Report {
        /// Readings of each local run that counts requests (0: skip the runs).
        #[arg(long, default_value_t = 2000)]
        readings: usize,
        /// Cold starts per function; the table gives the median.
        #[arg(long, default_value_t = 10)]
        cold_starts: usize,
        /// Where the report (Markdown) and the events are written.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// Concurrent clients against the local API over moto: errors and latencies.
    ApiLoad {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        requests: usize,
    },
    /// The three functions of each build side by side, in one run: cold
    /// starts, memory on their largest batches, binary sizes.
    Footprint {
        /// LABEL=DIR of a release build (holding ingest, stats and alerts; repeat to compare).
        #[arg(long = "build", value_parser = labelled_path, required = true)]
        builds: Vec<(String, PathBuf)>,
        #[arg(long, default_value_t = 5)]
        cold_starts: usize,
    },
    /// Starts builds of a function side by side, cold, with and without an
    /// X-Ray daemon, and tables init, first answer, RSS and size.
    Cold {
        /// LABEL=PATH of a function binary (repeat to compare builds).
        #[arg(long = "binary", value_parser = labelled_path, required = true)]
        binaries: Vec<(String, PathBuf)>,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
}

fn labelled_path(text: &str) -> Result<(String, PathBuf), String> {
    let (label, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not LABEL=PATH"))?;
    Ok((label.to_owned(), PathBuf::from(path)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        "warn,aws_smithy_runtime::client::http::connection_poisoning=off".into()
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let Cli { command } = Cli::parse();
    match command {
        Command::Report {
            readings,
            cold_starts,
            out,
        } => {
            let root = geotag_local_cloud::project::root()?;
            std::env::set_current_dir(&root).context("entering the project root")?;
            let report = geotag_bench::report::run(&geotag_bench::report::Options {
                root,
                out: out.clone(),
                readings,
                cold_starts,
            })
            .await?;
            std::fs::create_dir_all(&out)?;
            let path = out.join("report.md");
            std::fs::write(&path, &report)?;
            println!("{report}\nwritten to {}", path.display());
            Ok(())
        }
        Command::ApiLoad { clients, requests } => {
            std::env::set_current_dir(geotag_local_cloud::project::root()?)?;
            println!(
                "{}",
                geotag_bench::report::api_load(clients, requests).await?
            );
            Ok(())
        }
        Command::Footprint {
            builds,
            cold_starts,
        } => {
            let root = geotag_local_cloud::project::root()?;
            let table = geotag_bench::report::compare_builds(&root, &builds, cold_starts).await?;
            println!("{table}");
            Ok(())
        }
        Command::Cold { binaries, runs } => {
            println!("{}", geotag_bench::cold::compare(&binaries, runs).await?);
            Ok(())
        }
    }
}
