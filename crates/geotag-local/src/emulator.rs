//! The local AWS emulator: moto server, run from the project's own `.venv`.
//!
//! [`Emulator::start`] installs moto into `.venv` on first use (pinned in
//! `requirements/emulator.txt`; never into the system Python), starts it on
//! 127.0.0.1 and a free port, and waits until it answers. Dropping the
//! [`Emulator`] stops the server, so a test or a command that returns early,
//! or panics, still leaves nothing running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aws_sdk_dynamodb::config::{Credentials, Region};
use geotag_aws::clients::SdkConfig;

/// moto's default account and the region the local stack uses.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serialises first-run installs between tests of one process.
static INSTALL: Mutex<()> = Mutex::new(());

/// A running emulator (or one we were pointed at and do not own).
#[derive(Debug)]
pub struct Emulator {
    endpoint: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Emulator {
    /// Installs moto into `<root>/.venv` if needed, and starts it.
    pub fn start(root: &Path) -> Result<Emulator> {
        let server = ensure_installed(root)?;
        let mut last_error = None;
        // A free port can be taken between our probe and moto's bind; try again then.
        for _ in 0..3 {
            match Self::spawn(&server, root) {
                Ok(emulator) => return Ok(emulator),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    /// Uses an emulator that is already running (moto, LocalStack, ...).
    pub fn existing(endpoint: &str) -> Emulator {
        Emulator {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            child: None,
            log: None,
        }
    }

    fn spawn(server: &Path, root: &Path) -> Result<Emulator> {
        let port = free_port()?;
        let log = root.join("target").join(format!("moto-{port}.log"));
        std::fs::create_dir_all(log.parent().unwrap_or(root))?;
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let mut emulator = Emulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            log: Some(log),
        };
        emulator.wait_until_healthy(port)?;
        Ok(emulator)
    }

    fn wait_until_healthy(&mut self, port: u16) -> Result<()> {
        let started = Instant::now();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "moto exited with {status} before answering; its log:\n{}",
                    self.log_tail()
                );
            }
            if answers(address) {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "moto did not answer on {address} within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<_> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration for talking to this emulator.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }

    /// Stops the server now (dropping does the same).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(log) = self.log.take() {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SDK configuration for an emulator at `endpoint`, with dummy credentials.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "geotag-local",
        ))
        .load()
        .await
}

/// Path of `moto_server` in `<root>/.venv`, installing it first if missing.
pub fn ensure_installed(root: &Path) -> Result<PathBuf> {
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = root.join(".venv");
    let server = venv.join("bin").join("moto_server");
    if server.is_file() {
        return Ok(server);
    }
    let requirements = root.join("requirements").join("emulator.txt");
    eprintln!(
        "geotag: installing the AWS emulator (moto) into {} — first run only, about a minute",
        venv.display()
    );
    if !venv.join("bin").join("python").is_file() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
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
    Ok(server)
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

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
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
