//! Bot processes on Unix.
//!
//! - **Process groups.** Each bot is started as the leader of a new process group
//!   (`process_group(0)`), so a signal to the group (`killpg`) reaches everything it started.
//! - **Output through FIFOs, not anonymous pipes.** The child's stdout and stderr are named
//!   FIFOs in the agent's `run/` dir that the child holds open *read-write*. With a plain pipe,
//!   a bot writing while the agent is down (killed, upgraded) gets `SIGPIPE`/`EPIPE` and dies,
//!   which would make re-adoption a fiction for any chatty bot. Through the FIFO the bot keeps
//!   writing into the kernel's buffer (raised to 1 MiB) while no agent reads, and a restarted
//!   agent reopens the FIFO by name and carries on reading — even the lines written meanwhile.
//!   EOF still comes when the bot's whole tree has exited (the agent's own end is read-only).
//! - **Identity.** A pid alone can be recycled; a process is ours when its pid *and* its start
//!   time (`/proc/<pid>/stat` field 22, clock ticks since boot) match what was recorded.
//! - **Zombies are dead.** A process that has exited but is not reaped yet (common for
//!   orphans in containers whose pid 1 never reaps) counts as gone.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use botmox_contract::logs::LogStream;
use chrono::Utc;
use nix::{
    sys::signal::{self, Signal},
    unistd::Pid,
};
use tokio::time::Instant;
use uuid::Uuid;

use super::{capture::Output, check_cwd, describe_spawn_error, environment, SpawnError, SpawnRequest, Spawned};
use crate::supervise::Exit;

/// How often an adopted process (not our child: no exit notification) is checked.
const ADOPTED_POLL: Duration = Duration::from_secs(1);
/// How often a stopping process group is checked for members left.
const GROUP_POLL: Duration = Duration::from_millis(50);
/// Kernel buffer of each output FIFO: what a bot may write while no agent reads.
const FIFO_BYTES: i32 = 1 << 20;

pub struct Process {
    pid: u32,
    kind: Kind,
}

enum Kind {
    Child(tokio::process::Child),
    /// Left running by a previous agent: only its pid and start time are known.
    Adopted {
        start_ticks: Option<u64>,
    },
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    #[cfg(test)]
    pub fn is_adopted(&self) -> bool {
        matches!(self.kind, Kind::Adopted { .. })
    }

    /// Waits until the process ends. Cancel-safe.
    pub async fn wait(&mut self) -> Exit {
        match &mut self.kind {
            Kind::Child(child) => match child.wait().await {
                Ok(status) => exit_of(status),
                Err(e) => {
                    tracing::warn!(pid = self.pid, error = %e, "waiting for a bot process failed");
                    Exit::Unknown
                }
            },
            Kind::Adopted { start_ticks } => {
                let start_ticks = *start_ticks;
                while is_alive(self.pid, start_ticks) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                Exit::Unknown
            }
        }
    }

    /// SIGTERM to the group, up to `grace` for the whole group to leave, then SIGKILL to
    /// whatever is left. Returns how the leader ended.
    pub async fn terminate(&mut self, grace: Duration) -> Exit {
        let deadline = Instant::now() + grace;
        let leader_ours = match self.kind {
            Kind::Child(_) => true,
            // Never signal a recycled pid: check the start time first.
            Kind::Adopted { start_ticks } => is_alive(self.pid, start_ticks),
        };
        if leader_ours || group_has_members(self.pid) {
            send_group(self.pid, Signal::SIGTERM);
        }
        let mut exit = if leader_ours { tokio::time::timeout_at(deadline, self.wait()).await.ok() } else { None };
        if !leader_ours {
            exit = Some(Exit::Unknown);
        }
        while group_has_members(self.pid) && Instant::now() < deadline {
            tokio::time::sleep(GROUP_POLL).await;
        }
        if exit.is_none() || group_has_members(self.pid) {
            tracing::info!(pid = self.pid, "the bot's process group outlived its grace period: SIGKILL");
            send_group(self.pid, Signal::SIGKILL);
        }
        let exit = match exit {
            Some(exit) => exit,
            None => tokio::time::timeout(Duration::from_secs(5), self.wait()).await.unwrap_or(Exit::Unknown),
        };
        let gone = Instant::now() + Duration::from_secs(2);
        while group_has_members(self.pid) && Instant::now() < gone {
            tokio::time::sleep(GROUP_POLL).await;
        }
        exit
    }

    /// After the leader ended by itself: whatever it left in its group is killed, so a
    /// crashed bot leaves no orphans.
    pub fn kill_remains(&self) {
        kill_orphan_group(self.pid);
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Unknown,
    }
}

fn send_group(pgid: u32, signal: Signal) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    if let Err(e) = signal::killpg(Pid::from_raw(pgid), signal) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pgid, ?signal, error = %e, "cannot signal a bot's process group");
        }
    }
}

/// Kills what is left of a process group whose leader is gone. Linux keeps a pid number
/// reserved while a group of that id has members, so the group cannot be someone else's.
pub fn kill_orphan_group(pgid: u32) {
    if group_has_members(pgid) {
        send_group(pgid, Signal::SIGKILL);
    }
}

/// Starts a bot (see the module notes on groups and FIFOs).
pub fn spawn(request: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    let exec = request.exec;
    let env = environment(exec, request.secrets)?;
    check_cwd(exec)?;
    let fail = |what: &str, e: std::io::Error| SpawnError::Failed(format!("cannot set up the bot's {what}: {e}"));
    std::fs::create_dir_all(request.run_dir).map_err(|e| fail("run directory", e))?;
    let mut outputs = Vec::new();
    let mut child_ends = Vec::new();
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let path = fifo_path(request.run_dir, request.bot_id, stream);
        let (child_end, reader) = make_fifo(&path).map_err(|e| fail("output pipe", e))?;
        child_ends.push(child_end);
        outputs.push((stream, reader));
    }
    let mut command = tokio::process::Command::new(&exec.program);
    command.args(&exec.args).envs(env);
    super::mark(&mut command, request.bot_id, request.run_dir);
    if let Some(cwd) = &exec.cwd {
        command.current_dir(cwd);
    }
    let mut child_ends = child_ends.into_iter();
    let (Some(stdout), Some(stderr)) = (child_ends.next(), child_ends.next()) else {
        return Err(SpawnError::Failed("cannot set up the bot's output pipes".into()));
    };
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr).process_group(0).kill_on_drop(false);
    let child = command.spawn().map_err(|e| describe_spawn_error(&exec.program, &e))?;
    // Dropping `command` closes the agent's copies of the child's write ends: EOF then means
    // the bot's whole tree closed its output.
    drop(command);
    let pid = child.id().ok_or_else(|| SpawnError::Failed("the process exited before it had a pid".into()))?;
    let start_ticks = start_ticks(pid);
    let started_at = Utc::now();
    Ok(Spawned { process: Process { pid, kind: Kind::Child(child) }, pid, start_ticks, started_at, outputs })
}

/// Takes over a process left running by a previous agent, if it is still the same process.
/// Its output FIFOs are reopened when they still exist.
pub fn adopt(
    pid: u32,
    start_ticks: Option<u64>,
    bot_id: Uuid,
    run_dir: &Path,
) -> Option<(Process, Vec<(LogStream, Output)>)> {
    if !is_alive(pid, start_ticks) {
        return None;
    }
    let mut outputs = Vec::new();
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let path = fifo_path(run_dir, bot_id, stream);
        match tokio::net::unix::pipe::OpenOptions::new().open_receiver(&path) {
            Ok(reader) => outputs.push((stream, Box::pin(reader) as Output)),
            Err(e) => tracing::warn!(%bot_id, path = %path.display(), error = %e, "cannot reopen a bot's output"),
        }
    }
    Some((Process { pid, kind: Kind::Adopted { start_ticks } }, outputs))
}

/// A bot process no record tracks (found by [`super::bot_processes`]: a previous agent
/// started it and died before it wrote the pid down), to be stopped as an adopted one is:
/// [`Process::terminate`] signals its group, waits out the grace, then kills the group.
pub fn stray(pid: u32, start_ticks: Option<u64>) -> Process {
    Process { pid, kind: Kind::Adopted { start_ticks } }
}

/// Removes a bot's output FIFOs (after it is gone for good).
pub fn remove_outputs(run_dir: &Path, bot_id: Uuid) {
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let _ = std::fs::remove_file(fifo_path(run_dir, bot_id, stream));
    }
}

fn fifo_path(run_dir: &Path, bot_id: Uuid, stream: LogStream) -> PathBuf {
    let suffix = match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    };
    run_dir.join(format!("{bot_id}.{suffix}"))
}

/// A fresh FIFO at `path`: the child's read-write end (a `Stdio`) and the agent's reader.
fn make_fifo(path: &Path) -> std::io::Result<(Stdio, Output)> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)?;
    // Read-write: opening does not block, and the child itself always counts as a reader,
    // so its writes never fail with EPIPE while no agent reads.
    let child_end = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = nix::fcntl::fcntl(&child_end, nix::fcntl::FcntlArg::F_SETPIPE_SZ(FIFO_BYTES)) {
        // Over the per-user pipe quota: the default 64 KiB still works.
        tracing::debug!(error = %e, "cannot enlarge a bot's output pipe");
    }
    let reader = tokio::net::unix::pipe::OpenOptions::new().open_receiver(path)?;
    Ok((Stdio::from(child_end), Box::pin(reader)))
}

/// `/proc/<pid>/stat` fields after the command name: state (field 3), pgrp (5), start time (22).
pub(super) struct Stat {
    pub(super) state: char,
    pub(super) pgrp: i64,
    pub(super) start_ticks: u64,
}

impl Stat {
    /// Exited: a zombie (not reaped yet) or dead.
    pub(super) fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub(super) fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The start time of `pid` in clock ticks since boot, where the OS tells it (Linux).
fn start_ticks(pid: u32) -> Option<u64> {
    read_stat(pid).map(|stat| stat.start_ticks)
}

fn proc_available() -> bool {
    Path::new("/proc/self/stat").exists()
}

/// Whether `pid` is a live (not zombie) process with the given start time.
pub fn is_alive(pid: u32, expected_ticks: Option<u64>) -> bool {
    if proc_available() {
        return match read_stat(pid) {
            Some(stat) => !stat.is_dead() && expected_ticks.is_none_or(|t| t == stat.start_ticks),
            None => false,
        };
    }
    i32::try_from(pid).is_ok_and(|pid| signal::kill(Pid::from_raw(pid), None).is_ok())
}

/// Whether any live (not zombie) process is in the group `pgid`.
pub fn group_has_members(pgid: u32) -> bool {
    if !proc_available() {
        return i32::try_from(pgid).is_ok_and(|pgid| signal::killpg(Pid::from_raw(pgid), None).is_ok());
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { return false };
        read_stat(pid).is_some_and(|stat| stat.pgrp == i64::from(pgid) && !stat.is_dead())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use botmox_contract::bots::ExecSpec;
    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn exec(script: &str) -> ExecSpec {
        ExecSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: None,
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
        }
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (my bot) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        let stat = parse_stat(line).expect("parses");
        assert_eq!((stat.state, stat.pgrp, stat.start_ticks), ('S', 4242, 123456));
        assert!(parse_stat("garbage").is_none());
    }

    #[tokio::test]
    async fn spawns_in_its_own_group_and_captures_output() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let spec = exec("echo out; echo err >&2; exit 3");
        let request =
            SpawnRequest { bot_id: Uuid::now_v7(), exec: &spec, secrets: &BTreeMap::new(), run_dir: dir.path() };
        let mut spawned = spawn(&request).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(spawned.start_ticks.is_some() || !proc_available());
        let mut texts = Vec::new();
        for (_, mut output) in spawned.outputs.drain(..) {
            let mut text = String::new();
            tokio::time::timeout(Duration::from_secs(10), output.read_to_string(&mut text)).await??;
            texts.push(text);
        }
        assert_eq!(texts, ["out\n", "err\n"]);
        assert_eq!(spawned.process.wait().await, Exit::Code(3));
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_failure() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut spec = exec("");
        spec.program = "/nonexistent/bot-binary".into();
        let request =
            SpawnRequest { bot_id: Uuid::now_v7(), exec: &spec, secrets: &BTreeMap::new(), run_dir: dir.path() };
        match spawn(&request) {
            Err(SpawnError::Failed(reason)) => assert!(reason.contains("not found"), "{reason}"),
            Err(other) => anyhow::bail!("unexpected error {other:?}"),
            Ok(_) => anyhow::bail!("a missing program must not start"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn terminate_takes_the_tree_even_when_it_ignores_sigterm() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // The leader and a grandchild both ignore SIGTERM.
        let spec = exec(
            "trap '' TERM; sh -c 'trap \"\" TERM; echo $$; while :; do sleep 1; done' & while :; do sleep 1; done",
        );
        let request =
            SpawnRequest { bot_id: Uuid::now_v7(), exec: &spec, secrets: &BTreeMap::new(), run_dir: dir.path() };
        let mut spawned = spawn(&request).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (_, mut stdout) = spawned.outputs.remove(0);
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf)).await??;
        let grandchild: u32 = std::str::from_utf8(&buf[..n])?.trim().parse()?;
        assert!(is_alive(grandchild, None));
        let started = Instant::now();
        let exit = spawned.process.terminate(Duration::from_millis(500)).await;
        assert_eq!(exit, Exit::Signal(9), "it ignored SIGTERM, so it was killed");
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert!(!is_alive(spawned.pid, None) && !is_alive(grandchild, None), "the whole tree is gone");
        assert!(!group_has_members(spawned.pid));
        Ok(())
    }

    #[tokio::test]
    async fn adoption_needs_the_same_start_time() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let spec = exec("while :; do sleep 1; done");
        let bot_id = Uuid::now_v7();
        let request = SpawnRequest { bot_id, exec: &spec, secrets: &BTreeMap::new(), run_dir: dir.path() };
        let mut spawned = spawn(&request).map_err(|e| anyhow::anyhow!("{e}"))?;
        if proc_available() {
            let wrong = spawned.start_ticks.map(|t| t + 1);
            assert!(adopt(spawned.pid, wrong, bot_id, dir.path()).is_none(), "another start time: not ours");
        }
        let (mut adopted, outputs) =
            adopt(spawned.pid, spawned.start_ticks, bot_id, dir.path()).expect("the same process is adopted");
        assert_eq!(outputs.len(), 2, "its output FIFOs are reopened");
        assert!(adopted.is_adopted());
        let exit = adopted.terminate(Duration::from_secs(5)).await;
        assert_eq!(exit, Exit::Unknown, "an adopted process's status is not knowable");
        assert_eq!(spawned.process.wait().await, Exit::Signal(15));
        Ok(())
    }
}
