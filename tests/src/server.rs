//! The real `botmox` binary as a child process: started with a data dir or database URL,
//! watched through its stdout (it prints `botmox listening on http://…` when ready), stopped
//! with SIGTERM like a service manager would, or killed.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
};

/// Builds the workspace binaries once per test process (a no-op when fresh), so end-to-end
/// tests never run a stale binary, and returns the directory that holds them.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = std::process::Command::new(cargo);
            command.current_dir(&workspace).args(["build", "--quiet", "-p", "botmox-control-plane", "--bin", "botmox"]);
            command.args(["-p", "botmox-agent", "--bin", "botmox-agent"]);
            let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
            if profile == "release" {
                command.arg("--release");
            }
            let status = command.status().map_err(|e| format!("cannot run cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build of the botmox binaries failed: {status}"));
            }
            let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(workspace.join("target"));
            Ok(target.join(profile))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

pub fn botmox_bin() -> anyhow::Result<PathBuf> {
    Ok(bin_dir()?.join(format!("botmox{}", std::env::consts::EXE_SUFFIX)))
}

/// Output lines of a child, collected as they arrive; waiters are woken on every line.
#[derive(Clone, Default)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    changed: watch::Sender<usize>,
}

impl Lines {
    fn new() -> Self {
        Self { lines: Arc::default(), changed: watch::channel(0).0 }
    }

    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(line);
        self.changed.send_replace(lines.len());
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (bounded) for the first line that contains `needle` and returns it.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_nth(needle, 1, timeout).await
    }

    /// Lines so far that contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.snapshot().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits (bounded) for the `n`th line that contains `needle` (1 = the first) and returns it.
    pub async fn wait_for_nth(&self, needle: &str, n: usize, timeout: Duration) -> anyhow::Result<String> {
        let mut changed = self.changed.subscribe();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(line) = self.snapshot().into_iter().filter(|l| l.contains(needle)).nth(n.max(1) - 1) {
                    return Some(line);
                }
                if changed.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(line)) => Ok(line),
            _ => anyhow::bail!("no line #{n} containing `{needle}` within {timeout:?}; got: {:?}", self.snapshot()),
        }
    }

    pub fn spawn_reader(&self, stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        let lines = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.push(line);
            }
        });
    }
}

pub struct ServerProcess {
    child: Child,
    pub base_url: String,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl ServerProcess {
    /// Starts `botmox serve --listen 127.0.0.1:0 <args>` and waits until it listens.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0", args, env).await
    }

    /// Starts `botmox serve --listen <listen> <args>` and waits until it listens: a fixed
    /// address (from [`free_port`]) for a replica a load balancer knows and that restarts.
    pub async fn start_on(listen: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut command = Command::new(botmox_bin()?);
        command.arg("serve").args(["--listen", listen]).args(args);
        command.env_remove("DATABASE_URL").env_remove("BOTMOX_ADMIN_PASSWORD").env_remove("BOTMOX_DATA_DIR");
        command.envs(env.iter().copied());
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().context("cannot start botmox")?;
        let (stdout, stderr) = (Lines::new(), Lines::new());
        stdout.spawn_reader(child.stdout.take().context("no stdout")?);
        stderr.spawn_reader(child.stderr.take().context("no stderr")?);
        let line = stdout
            .wait_for("botmox listening on http://", Duration::from_secs(30))
            .await
            .with_context(|| format!("botmox did not start; stderr: {:?}", stderr.snapshot()))?;
        let base_url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .map(str::to_owned)
            .context("no URL in the listening line")?;
        Ok(Self { child, base_url, stdout, stderr })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit (bounded); returns the exit code.
    pub async fn terminate(mut self) -> anyhow::Result<Option<i32>> {
        self.sigterm()?;
        self.wait_exit().await
    }

    /// Sends SIGTERM and returns at once, so a test can watch the drain.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            use nix::{sys::signal, unistd::Pid};
            signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGTERM)?;
        }
        #[cfg(not(unix))]
        self.child.start_kill()?;
        Ok(())
    }

    /// Waits (bounded) for the exit after [`ServerProcess::sigterm`]; returns the exit code.
    pub async fn wait_exit(mut self) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .context("botmox did not exit within 20 s of SIGTERM")??;
        Ok(status.code())
    }

    /// SIGKILL: the crash case.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// A port that was free a moment ago on 127.0.0.1 (the OS picked it for a listener that is
/// closed again), for a child that must listen on a port known before it starts.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `botmox <args>` to completion (bounded) and returns (exit code, stdout, stderr).
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String, String)> {
    let mut command = Command::new(botmox_bin()?);
    command.args(args).env_remove("DATABASE_URL").env_remove("BOTMOX_ADMIN_PASSWORD").env_remove("BOTMOX_DATA_DIR");
    command.envs(env.iter().copied()).stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("botmox did not exit within 60 s")??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}
