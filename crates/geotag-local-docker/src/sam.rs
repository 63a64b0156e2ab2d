//! `sam local` as the local stack runs it: `start-lambda` as a child on a
//! loopback port it binds itself, and single `invoke`s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use geotag_local_cloud::server_process::{ServerProcess, werkzeug_announcement};

/// SAM imports its whole CLI and checks Docker before it binds: seconds.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// How SAM is run: which binary, from where, with which environment file and
/// Docker.
#[derive(Debug, Clone)]
pub struct Sam {
    /// The `sam` executable (the project's `.venv-sam/bin/sam` if present).
    pub program: PathBuf,
    /// The project root: SAM finds `.aws-sam/build/template.yaml` from here.
    pub project: PathBuf,
    /// The `--env-vars` file `geotag up` writes.
    pub env_vars: PathBuf,
    pub docker_host: String,
}

impl Sam {
    /// The project's SAM if scripts/setup installed it, else `sam` on the PATH.
    pub fn program_in(project: &Path) -> PathBuf {
        let own = project.join(".venv-sam/bin/sam");
        if own.exists() {
            own
        } else {
            PathBuf::from("sam")
        }
    }

    /// A `sam local` command with SAM's region and credentials, which it takes
    /// from its own environment, never from the env-vars file.
    fn command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(&self.program);
        command
            .current_dir(&self.project)
            .args(["local", subcommand])
            .arg("--env-vars")
            .arg(&self.env_vars)
            // The base image is local (Lambda's, or the stand-in); no registry is asked.
            .arg("--skip-pull-image")
            .env("DOCKER_HOST", &self.docker_host)
            .env("AWS_REGION", geotag_local_cloud::emulator::REGION)
            .env("AWS_DEFAULT_REGION", geotag_local_cloud::emulator::REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("SAM_CLI_TELEMETRY", "0")
            .env("PYTHONUNBUFFERED", "1");
        command
    }

    /// `sam local invoke FUNCTION --event EVENT`: the function's answer (SAM's
    /// stdout) and SAM's own log (its stderr). SAM exits 0 even when the
    /// container never answered, so callers judge the answer, not the status.
    pub fn invoke(&self, logical_id: &str, event: &Path) -> Result<Invocation> {
        let output = self
            .command("invoke")
            .arg(logical_id)
            .arg("--event")
            .arg(event)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.program.display()))?;
        Ok(Invocation {
            answer: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            log: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `sam local start-lambda` on a loopback port of its own, containers kept
    /// warm (one per function, reused, as Lambda reuses its environments).
    pub fn start_lambda(&self, log: PathBuf) -> Result<StartLambda> {
        let mut command = self.command("start-lambda");
        command.args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--warm-containers",
            "EAGER",
        ]);
        let mut server = ServerProcess::spawn(
            "sam local start-lambda",
            command,
            log,
            werkzeug_announcement,
            STARTUP_TIMEOUT,
        )?;
        // SAM's log says what each container did: kept for after the run.
        server.keep_log();
        Ok(StartLambda { server })
    }
}

/// One `sam local invoke`.
#[derive(Debug)]
pub struct Invocation {
    /// The function's answer: SAM prints it as the last line of its stdout.
    pub answer: String,
    pub log: String,
}

impl Invocation {
    /// The answer as JSON, or an error with SAM's log.
    pub fn json(&self) -> Result<serde_json::Value> {
        let last = self.answer.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| {
            format!(
                "sam local invoke answered {:?}; its log:\n{}",
                self.answer, self.log
            )
        })
    }
}

/// A running `sam local start-lambda`, stopped when dropped.
pub struct StartLambda {
    server: ServerProcess,
}

impl StartLambda {
    /// Its Lambda Invoke API, for `--invoke-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.address())
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        self.server.ensure_running()
    }

    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}

impl Drop for StartLambda {
    /// SIGINT, as Ctrl-C: SAM then stops and removes its warm containers,
    /// which a kill would leave running in the daemon.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.server.pid().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.server.ensure_running().is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
