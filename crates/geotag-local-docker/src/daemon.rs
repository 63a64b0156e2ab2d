//! A Docker daemon of our own: its socket, data and state in a folder we made,
//! no bridge and no iptables (only the host network, as on this machine), and
//! stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// dockerd answers within seconds; a first start on a new data root (its
/// storage driver probed, containerd started) took 4 s here.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Dockerd {
    child: Child,
    state: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Dockerd {
    /// Starts `dockerd` with its state under `state` (created afresh), and
    /// waits until the daemon on the socket reports `state`'s data root: the
    /// proof that the daemon answering is the one we started, not the
    /// machine's.
    pub fn start(state: &Path) -> Result<Dockerd> {
        if state.exists() {
            std::fs::remove_dir_all(state)
                .with_context(|| format!("clearing {}", state.display()))?;
        }
        std::fs::create_dir_all(state)?;
        let socket = state.join("docker.sock");
        let data_root = state.join("data");
        let log = state.join("dockerd.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new("dockerd")
            .arg(format!("--host={}", docker_host_of(&socket)))
            .arg(format!("--data-root={}", data_root.display()))
            .arg(format!("--exec-root={}", state.join("exec").display()))
            .arg(format!("--pidfile={}", state.join("dockerd.pid").display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting dockerd (Debian's docker.io package: scripts/setup installs it)")?;
        let mut daemon = Dockerd {
            child,
            state: state.to_path_buf(),
            socket,
            log,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "dockerd exited with {status} before answering; its log:\n{}",
                    daemon.log_tail()
                );
            }
            if let Ok(root) = daemon.docker(&["info", "--format", "{{.DockerRootDir}}"]) {
                if Path::new(root.trim()) != data_root {
                    bail!(
                        "the daemon at {} reports data root {root:?}, not ours ({})",
                        daemon.socket.display(),
                        data_root.display()
                    );
                }
                return Ok(daemon);
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "dockerd did not answer within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    daemon.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn docker_host(&self) -> String {
        docker_host_of(&self.socket)
    }

    /// Runs the docker CLI against this daemon; its stdout, or its stderr as the error.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        docker_cli(&self.docker_host(), args)
    }

    pub fn log_tail(&self) -> String {
        geotag_local_cloud::server_process::tail(&self.log, 20)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containers and containerd; a kill
        // would leave containerd-shim processes behind.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dockerd leaves its network namespace's bind mount behind (and, if
        // killed, overlay mounts): unmounted, then the state (the images
        // too, hundreds of MB) removed.
        for mount in mounts_under(&self.state) {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Mount points at or under `folder`, deepest first.
fn mounts_under(folder: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(folder))
        .collect();
    mounts.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    mounts
}

/// `DOCKER_HOST` (and dockerd's `--host`) for a daemon listening on `socket`.
pub fn docker_host_of(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// The docker CLI against the daemon at `docker_host`.
pub fn docker_cli(docker_host: &str, args: &[&str]) -> Result<String> {
    let output = Command::new("docker")
        .env("DOCKER_HOST", docker_host)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running the docker CLI")?;
    if !output.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
