//! `geotag-bench cold`: builds of a function side by side, in one run, each
//! started cold with and without an X-Ray daemon to send its trace to.
//!
//! It answers what tracing costs a cold start: without a daemon the
//! OpenTelemetry layer is not installed; with one (a UDP socket here, as
//! Lambda's is) every span is exported as the invocation runs.

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::events::ingest_event;
use crate::lambda_api::{ColdRun, Function, Sandbox};
use crate::report::{FUNCTION_ENV, check_answer, mb, ms};

/// Starts each `(label, binary)` `runs` times on a 10-record ingest event,
/// without then with a daemon, and tables the medians.
pub async fn compare(binaries: &[(String, PathBuf)], runs: usize) -> Result<String> {
    let root = geotag_local_cloud::project::root()?;
    let event = ingest_event(10, 1, 3).0;
    let daemon = UdpSocket::bind("127.0.0.1:0").context("binding the daemon's UDP port")?;
    daemon.set_nonblocking(true)?;
    let daemon_address = daemon.local_addr()?.to_string();
    let sandbox = Sandbox::start().await?;
    let mut table = String::new();
    writeln!(
        table,
        "| build | binary | X-Ray daemon | init (median) | first answer (median / min) | peak RSS | segment datagrams per run |\n\
         |---|---:|---|---:|---:|---:|---:|"
    )?;
    for (label, program) in binaries {
        let size = std::fs::metadata(program)
            .with_context(|| format!("{} is not built", program.display()))?
            .len();
        for with_daemon in [false, true] {
            let mut env = FUNCTION_ENV.to_vec();
            if with_daemon {
                env.push((
                    geotag_runtime::observability::DAEMON_ADDRESS,
                    &daemon_address,
                ));
            }
            let function = Function {
                program,
                args: &[],
                dir: &root,
                env: &env,
            };
            let mut runs_done: Vec<ColdRun> = Vec::new();
            let mut datagrams = 0usize;
            for _ in 0..runs.max(1) {
                let run = sandbox.invoke_cold(&function, &event).await?;
                check_answer(label, &run)?;
                runs_done.push(run);
                // The last spans leave as the invocation answers.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut buffer = [0u8; 65_536];
                while daemon.recv(&mut buffer).is_ok() {
                    datagrams += 1;
                }
            }
            let mut init: Vec<Duration> = runs_done.iter().map(|r| r.init).collect();
            let mut answer: Vec<Duration> = runs_done.iter().map(|r| r.first_answer).collect();
            let mut rss: Vec<u64> = runs_done.iter().map(|r| r.peak_rss).collect();
            init.sort();
            answer.sort();
            rss.sort();
            writeln!(
                table,
                "| {label} | {:.1} MB | {} | {:.1} ms | {:.1} / {:.1} ms | {:.1} MB | {:.1} |",
                mb(size),
                if with_daemon { "yes" } else { "no" },
                ms(init[init.len() / 2]),
                ms(answer[answer.len() / 2]),
                ms(answer[0]),
                mb(rss[rss.len() / 2]),
                datagrams as f64 / runs_done.len() as f64,
            )?;
        }
    }
    Ok(table)
}
