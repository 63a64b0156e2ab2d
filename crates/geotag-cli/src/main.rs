//! `geotag`: the whole template on one machine, and the operator's tools for
//! local and deployed stacks (see `geotag --help`).
//!
//! # Layout
//!
//! - [`args`]: the command line as clap reads it, shared options declared once;
//! - [`commands`]: one file per subcommand, each a `run` of its arguments;
//! - [`signals`]: Ctrl-C and SIGTERM, which end a command the way an error does.
//!
//! This file sets up logging, parses, and dispatches.

mod args;
mod commands;
mod signals;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;

use args::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GEOTAG_LOG")
                // The SDK complains of a connection it cannot close after the
                // chaos run's injected errors, which never had one. The local
                // broker's refusals (warnings) are what `geotag up` is watched for.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "error,geotag_local_iot=warn,aws_smithy_runtime::client::http::connection_poisoning=off",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Ctrl-C ends the command through the same path as an error would, so the
    // emulator (owned by the stack) is stopped when it is dropped.
    let result = tokio::select! {
        result = run(cli.command) => result,
        () = signals::interrupted() => {
            eprintln!("\ngeotag: interrupted; stopping the emulator");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes, not a backtrace: these are users' errors.
            eprintln!("geotag: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Chaos(args) => commands::chaos::run(args).await,
        Command::Up(args) => commands::up::run(args).await,
        Command::Invoke(args) => commands::invoke::run(args).await,
        Command::Token(args) => commands::token::run(args),
        Command::Customer { action, target } => commands::customer::run(action, target).await,
        Command::Device { action, target } => commands::device::run(action, target).await,
        Command::Geofence { action, target } => commands::geofence::run(action, target).await,
        Command::Simulate(args) => commands::simulate::run(args).await,
        Command::Report(args) => commands::report::run(args).await,
        Command::RebuildStats(args) => commands::rebuild_stats::run(args).await,
        Command::Redrive(args) => commands::redrive::run(args).await,
        Command::SamDocker(args) => commands::sam_docker::run(args).await,
    }
}
