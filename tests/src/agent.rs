//! The real `botmox-agent` binary for end-to-end tests: each agent gets its own agent dir (a
//! temp dir: credentials, state, journal, logs), is paired with a real code through the real
//! `pair` command, runs as a child process watched through its output, and is stopped with
//! SIGTERM or killed with SIGKILL like a crash. Helpers to look at processes (alive, zombie,
//! gone) check what the agent did to real bot processes.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::server::{bin_dir, Lines};

/// Writes an executable script (a bot) into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, body)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}

pub fn agent_bin() -> anyhow::Result<PathBuf> {
    Ok(bin_dir()?.join(format!("botmox-agent{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `botmox-agent --config-dir <dir> <args>` to completion (bounded): (exit code, stdout, stderr).
pub async fn agent_cli(dir: &Path, args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let mut command = Command::new(agent_bin()?);
    command.arg("--config-dir").arg(dir).args(args).env_remove("BOTMOX_AGENT_DIR");
    command.stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("botmox-agent did not exit within 60 s")??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// `botmox-agent pair` into `dir`; fails the test unless it succeeds.
pub async fn pair(dir: &Path, server: &str, code: &str) -> anyhow::Result<()> {
    let (status, stdout, stderr) = agent_cli(dir, &["pair", "--server", server, "--code", code]).await?;
    anyhow::ensure!(status == Some(0), "pair failed ({status:?}): {stdout} {stderr}");
    Ok(())
}

/// A host's agent dir once `pair` has written its credentials, and the agent id it got.
/// Dropping it kills whatever bots its agent left running.
pub struct PairedHost {
    pub dir: tempfile::TempDir,
    pub agent_id: uuid::Uuid,
}

impl PairedHost {
    /// Reads the agent id from the credentials `pair` wrote into `dir`.
    pub fn from_dir(dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let credentials: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("agent.json"))?)?;
        let agent_id = credentials["agent_id"].as_str().unwrap_or_default().parse()?;
        Ok(Self { dir, agent_id })
    }
}

impl Drop for PairedHost {
    fn drop(&mut self) {
        reap_bots(self.dir.path());
    }
}

/// A running `botmox-agent run`.
pub struct AgentProcess {
    child: Child,
    pub dir: PathBuf,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl AgentProcess {
    /// Starts `botmox-agent run <args>` on `dir` and waits until it is connected.
    pub async fn start(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let agent = Self::spawn(dir, args)?;
        agent.stderr.wait_for("connected (", Duration::from_secs(30)).await.context("the agent did not connect")?;
        Ok(agent)
    }

    /// Starts `botmox-agent run <args>` without waiting for anything.
    pub fn spawn(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(agent_bin()?);
        command.arg("--config-dir").arg(dir).arg("run").args(args);
        command.env_remove("BOTMOX_AGENT_DIR").env("BOTMOX_AGENT_STATUS_LISTEN", "127.0.0.1:0");
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().context("cannot start botmox-agent")?;
        let (stdout, stderr) = (Lines::default(), Lines::default());
        stdout.spawn_reader(child.stdout.take().context("no stdout")?);
        stderr.spawn_reader(child.stderr.take().context("no stderr")?);
        Ok(Self { child, dir: dir.to_path_buf(), stdout, stderr })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: the agent crashes; its bots are on their own.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, then the exit code (bounded).
    pub async fn terminate(mut self) -> anyhow::Result<Option<i32>> {
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            use nix::{sys::signal, unistd::Pid};
            signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGTERM)?;
        }
        #[cfg(not(unix))]
        self.child.start_kill()?;
        self.exit_code(Duration::from_secs(30)).await
    }

    /// Waits (bounded) for the agent to exit by itself; its exit code.
    pub async fn exit_code(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait()).await.with_context(|| {
            format!("botmox-agent did not exit within {timeout:?}; stderr: {:?}", self.stderr.snapshot())
        })??;
        Ok(status.code())
    }
}

/// What a pid is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    /// Exited, not reaped (orphans in containers whose pid 1 does not reap).
    Zombie,
    Gone,
}

/// Reads `/proc/<pid>/stat` (Linux).
pub fn proc_state(pid: u32) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return ProcState::Gone };
    let state = stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().next().map(str::to_owned));
    match state.as_deref() {
        Some("Z" | "X") => ProcState::Zombie,
        Some(_) => ProcState::Running,
        None => ProcState::Gone,
    }
}

/// Alive means running, not a zombie.
pub fn is_running(pid: u32) -> bool {
    proc_state(pid) == ProcState::Running
}

/// Live processes whose environment has `BOTMOX_BOT_ID=<bot_id>` and that lead their process
/// group: the bot processes the agent started for that bot (children are not leaders).
pub fn bot_leaders(bot_id: &str) -> Vec<u32> {
    all_bot_leaders().remove(bot_id).unwrap_or_default()
}

/// Every bot process on this machine (one pass over `/proc`), by the `BOTMOX_BOT_ID` in its
/// environment: live processes that lead their process group.
pub fn all_bot_leaders() -> std::collections::HashMap<String, Vec<u32>> {
    const KEY: &[u8] = b"BOTMOX_BOT_ID=";
    let mut leaders: std::collections::HashMap<String, Vec<u32>> = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return leaders };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let Some(bot_id) = environ.split(|b| *b == 0).find_map(|var| var.strip_prefix(KEY)) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let mut fields = stat.rfind(')').map(|at| stat[at + 1..].split_whitespace()).into_iter().flatten();
        let (state, pgrp) = (fields.next(), fields.nth(1));
        if matches!(state, Some("Z" | "X") | None) || pgrp != Some(pid.to_string().as_str()) {
            continue;
        }
        leaders.entry(String::from_utf8_lossy(bot_id).into_owned()).or_default().push(pid);
    }
    leaders
}

/// Every file under `dir`, recursively (to search the agent's files for secrets).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

/// A TCP relay with a fixed address in front of a server whose address changes (a restarted
/// `botmox` gets a new port): what a load balancer does in production. While no upstream is
/// set, or it refuses, incoming connections are dropped — the server looks down. It is also
/// the tests' faulty network: [`TcpRelay::reset`] cuts every open connection, and
/// [`TcpRelay::stall`] makes open connections pass no bytes (a hung link) until released.
pub struct TcpRelay {
    pub addr: std::net::SocketAddr,
    upstream: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    generation: tokio::sync::watch::Sender<u64>,
    stalled: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpRelay {
    pub async fn start(upstream: Option<String>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(upstream));
        let generation = tokio::sync::watch::channel(0u64).0;
        let stalled = tokio::sync::watch::channel(false).0;
        let target = upstream.clone();
        let (cuts, stalls) = (generation.clone(), stalled.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let to = target.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let mut cut = cuts.subscribe();
                cut.borrow_and_update();
                let stalled = stalls.subscribe();
                tokio::spawn(async move {
                    let Some(to) = to else { return };
                    let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else { return };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    let both = async {
                        tokio::join!(
                            pump(from_client, to_server, stalled.clone()),
                            pump(from_server, to_client, stalled)
                        )
                    };
                    // Dropping the halves closes both sockets.
                    tokio::select! {
                        _ = both => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Self { addr, upstream, generation, stalled, task })
    }

    /// `http://<relay address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where new connections go (`host:port`), or nowhere.
    pub fn set_upstream(&self, upstream: Option<String>) {
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) = upstream;
    }

    /// Cuts every connection open now (new ones are relayed as before).
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// While `true`, open connections pass no bytes in either direction.
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

/// Copies one direction until it ends, holding each chunk while the relay is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
        self.reset();
    }
}

/// Kills every bot process the agent of `dir` started (found by their `BOTMOX_BOT_ID`), with
/// their process groups: a test that fails half-way leaves no bot running behind it.
pub fn reap_bots(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("state.json")) else { return };
    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else { return };
    for bot_id in state["bots"].as_object().into_iter().flat_map(|bots| bots.keys()) {
        for pid in bot_leaders(bot_id) {
            #[cfg(unix)]
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
