//! A server the local stack runs as a child process, and the proof that the
//! address we talk to is that child's.
//!
//! Why this exists: probing a free port and handing it to a child races. The
//! port is free when we probe it and let it go; seconds later, while the
//! child is still importing, another test's probe can be handed the same
//! port. One of the two children then fails to bind, and a health check that
//! only asks "does something answer there?" is satisfied by the *other*
//! test's server: two tests share one moto and each finds the other's data.
//!
//! So the child binds port 0 itself, the kernel picks a port no one holds,
//! and the child announces it on its own stderr (werkzeug's ` * Running on
//! http://127.0.0.1:PORT`, printed after the bind). A line read from our
//! child's pipe names a socket our child holds, and a listening socket on
//! 127.0.0.1 cannot be held by two processes (no `SO_REUSEPORT`): the address
//! is proven ours before anyone uses it, and a neighbour can never answer in
//! its place.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// A child server whose announced address has been read from its stderr.
#[derive(Debug)]
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    address: SocketAddr,
    log: PathBuf,
    keep_log: bool,
}

/// How to recognise a server's announcement of its bound address.
pub type Announcement = fn(&str) -> Option<SocketAddr>;

impl ServerProcess {
    /// Spawns `command`, copies its stdout and stderr to `log`, and waits
    /// until a stderr line that `announced` recognises names the address it
    /// bound. Fails, with the log's tail, if the child exits first or says
    /// nothing within `timeout`.
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        log: PathBuf,
        announced: Announcement,
        timeout: Duration,
    ) -> Result<ServerProcess> {
        if let Some(folder) = log.parent() {
            std::fs::create_dir_all(folder)?;
        }
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stderr = child.stderr.take().context("the child's stderr pipe")?;
        let (tell, heard) = mpsc::channel();
        // The pipe is drained for the child's whole life (a full pipe would
        // block its logging), into the same log as its stdout.
        std::thread::spawn(move || copy_watching(stderr, log_file, announced, tell));

        let mut server = ServerProcess {
            name,
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            keep_log: false,
        };
        let started = Instant::now();
        loop {
            match heard.recv_timeout(Duration::from_millis(100)) {
                Ok(address) => {
                    if !address.ip().is_loopback() {
                        bail!("{name} announced {address}, which is not a loopback address");
                    }
                    server.address = address;
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait()?;
                    bail!(
                        "{name} exited with {status} before announcing its address; its log:\n{}",
                        server.log_tail()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited with {status} before announcing its address; its log:\n{}",
                    server.log_tail()
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{name} did not announce its address within {timeout:?}; its log:\n{}",
                    server.log_tail()
                );
            }
        }
    }

    /// The address the child announced (and holds).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The child's process id, for a signal of the caller's choosing.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child is no longer running.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status}; its log:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Leaves the log in place when the child is stopped, for whoever reads
    /// it afterwards.
    pub fn keep_log(&mut self) {
        self.keep_log = true;
    }

    /// The last lines the child wrote, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 20)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn copy_watching(
    stderr: ChildStderr,
    mut log: std::fs::File,
    announced: Announcement,
    tell: mpsc::Sender<SocketAddr>,
) {
    let mut tell = Some(tell);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        if let Some(address) = announced(&line)
            && let Some(sender) = tell.take()
        {
            let _ = sender.send(address);
        }
    }
}

/// werkzeug's startup line (moto server runs on werkzeug):
/// ` * Running on http://127.0.0.1:39005`.
pub fn werkzeug_announcement(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("Running on http://")?;
    let authority = rest.split(|c: char| c == '/' || c.is_whitespace()).next()?;
    authority.parse().ok()
}

/// The last `lines` lines of the log file at `path` (none if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<_> = text.lines().rev().take(lines).collect();
    kept.into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_werkzeugs_startup_line() {
        assert_eq!(
            werkzeug_announcement(" * Running on http://127.0.0.1:39005"),
            Some(SocketAddr::from(([127, 0, 0, 1], 39005)))
        );
        assert_eq!(
            werkzeug_announcement("\u{1b}[33m * Running on http://127.0.0.1:5000/\u{1b}[0m"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5000)))
        );
        assert_eq!(werkzeug_announcement("Press CTRL+C to quit"), None);
        assert_eq!(werkzeug_announcement(" * Running on http://"), None);
    }

    #[test]
    fn a_child_that_exits_without_announcing_fails_loudly() {
        let log = std::env::temp_dir().join(format!("geotag-exits-{}.log", std::process::id()));
        let mut command = Command::new("sh");
        command.args(["-c", "echo cannot bind >&2; exit 3"]);
        let error = ServerProcess::spawn(
            "sh",
            command,
            log,
            werkzeug_announcement,
            Duration::from_secs(10),
        )
        .expect_err("the child never announced an address");
        let message = format!("{error:#}");
        assert!(message.contains("exited"), "{message}");
        assert!(message.contains("cannot bind"), "{message}");
    }

    #[test]
    fn the_address_is_the_one_the_child_announced() {
        let log = std::env::temp_dir().join(format!("geotag-announce-{}.log", std::process::id()));
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo ' * Running on http://127.0.0.1:4567' >&2; sleep 30",
        ]);
        let mut server = ServerProcess::spawn(
            "sh",
            command,
            log,
            werkzeug_announcement,
            Duration::from_secs(10),
        )
        .expect("the child announced");
        assert_eq!(server.address(), SocketAddr::from(([127, 0, 0, 1], 4567)));
        server.ensure_running().expect("still running");
    }
}
