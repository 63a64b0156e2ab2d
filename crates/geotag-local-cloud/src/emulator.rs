//! The local AWS emulator: moto server, run from the project's own `.venv`.
//!
//! [`Emulator::start`] installs moto into `.venv` on first use (pinned in
//! `requirements/emulator.txt`; never into the system Python), starts it on
//! 127.0.0.1 on a port it binds itself and announces (proof that the server
//! we talk to is the one we started), and waits until it answers. It runs
//! moto's own application through `moto_server.py`, which applies each
//! DynamoDB request atomically, as DynamoDB does and moto does not. Dropping the
//! [`Emulator`] stops the server, so a test or a command that returns early,
//! or panics, still leaves nothing running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use geotag_aws::clients::SdkConfig;

use crate::server_process::{ServerProcess, werkzeug_announcement};

/// moto's default account and the region the local stack uses.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = geotag_aws::clients::LOCAL_REGION;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// moto's server with DynamoDB's per-request atomicity restored (see the script).
const MOTO_SERVER: &str = include_str!("moto_server.py");

/// Serialises first-run installs between tests of one process.
static INSTALL: Mutex<()> = Mutex::new(());

/// A running emulator (or one we were pointed at and do not own).
#[derive(Debug)]
pub struct Emulator {
    endpoint: String,
    server: Option<ServerProcess>,
}

impl Emulator {
    /// Installs moto into `<root>/.venv` if needed, and starts it.
    pub fn start(root: &Path) -> Result<Emulator> {
        let python = ensure_installed(root)?;
        // moto binds port 0 and announces the port the kernel gave it: see
        // `server_process` for why a probed port would race.
        let mut command = Command::new(python);
        command
            .args(["-c", MOTO_SERVER, "127.0.0.1", "0"])
            .env("PYTHONUNBUFFERED", "1");
        let log = root.join("target").join(format!(
            "moto-{}-{}.log",
            std::process::id(),
            next_instance()
        ));
        let mut server =
            ServerProcess::spawn("moto", command, log, werkzeug_announcement, STARTUP_TIMEOUT)?;
        wait_until_answering(&mut server)?;
        Ok(Emulator {
            endpoint: format!("http://{}", server.address()),
            server: Some(server),
        })
    }

    /// Uses an emulator that is already running (moto, LocalStack, ...).
    pub fn existing(endpoint: &str) -> Emulator {
        Emulator {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            server: None,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration for talking to this emulator.
    pub async fn sdk_config(&self) -> SdkConfig {
        geotag_aws::clients::for_emulator(&self.endpoint).await
    }

    /// Stops the server now (dropping does the same).
    pub fn stop(&mut self) {
        self.server.take();
    }
}

/// Each emulator of one process logs to a file of its own.
fn next_instance() -> u64 {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    INSTANCES.fetch_add(1, Ordering::Relaxed)
}

/// werkzeug announces the port between its bind and its first accept; the
/// first request proves the application is loaded and serving.
fn wait_until_answering(server: &mut ServerProcess) -> Result<()> {
    let started = Instant::now();
    loop {
        server.ensure_running()?;
        if answers(server.address()) {
            return Ok(());
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "moto announced {} but did not answer within {STARTUP_TIMEOUT:?}; its log:\n{}",
                server.address(),
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Python of `<root>/.venv`, with moto installed in it first if it is
/// not (its `moto_server` script is the mark of a finished install).
pub fn ensure_installed(root: &Path) -> Result<PathBuf> {
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = root.join(".venv");
    let python = venv.join("bin").join("python");
    let server = venv.join("bin").join("moto_server");
    if server.is_file() {
        return Ok(python);
    }
    let requirements = root.join("requirements").join("emulator.txt");
    eprintln!(
        "geotag: installing the AWS emulator (moto) into {} — first run only, about a minute",
        venv.display()
    );
    // A venv without pip is one whose creation was cut short (a full disk,
    // an interrupt): made again from scratch rather than used.
    if !venv.join("bin").join("pip").is_file() {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))
        .context("creating .venv (is Python 3 with the venv module installed?)")?;
    }
    run(Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "on",
            "-r",
        ])
        .arg(&requirements))
    .context("installing moto into .venv")?;
    if !server.is_file() {
        bail!(
            "{} is still missing after installing moto",
            server.display()
        );
    }
    Ok(python)
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Whether an HTTP server answers at `address` (any status line will do).
fn answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
