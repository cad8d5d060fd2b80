//! Bot processes on Windows.
//!
//! - **A Job Object per bot, kill-on-close.** The bot starts suspended, goes into its own job
//!   (`JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`), then runs, so everything it ever starts is in the
//!   job: `TerminateJobObject` takes the whole tree, and closing the job's last handle (the
//!   [`Process`] dropped, or the agent gone) kills whatever is left.
//! - **Polite stop = CTRL_BREAK.** The bot leads a new console process group
//!   (`CREATE_NEW_PROCESS_GROUP`) on the agent's console, so `GenerateConsoleCtrlEvent
//!   (CTRL_BREAK_EVENT, pid)` reaches the bot's group and nothing else; after the grace period
//!   the job is terminated. An agent without a console (started detached) cannot send the
//!   break: its bots get a console of their own without a window (`CREATE_NO_WINDOW`, so no
//!   window pops up per bot) and a stop terminates the job at once.
//! - **Output through named pipes read asynchronously.** Unix needs FIFOs so a bot outlives
//!   its agent without `EPIPE`; here no bot outlives its agent (below), so a pipe per stream is
//!   right — but not tokio's `Stdio::piped()`, whose reads on Windows each hold a thread of
//!   the blocking pool for as long as the bot runs (the agent's pool is small: a few chatty
//!   bots would starve it). Each stream is a local named pipe: the agent reads its server end
//!   with overlapped I/O (no thread), the bot writes to the client end. EOF (or broken pipe)
//!   comes when the whole tree has closed it; lines are split and bounded by
//!   [`super::capture`].
//! - **Identity.** A pid can be reused; a process is ours when its pid *and* its creation time
//!   (`GetProcessTimes`, 100 ns units since 1601) match what was recorded — the `start_ticks`
//!   of the state file.
//! - **No adoption: bots die with the agent.** Kill-on-close is the point of the job: when the
//!   agent exits or crashes, the OS closes its handles and kills every bot tree, so nothing is
//!   ever orphaned. A restarted agent finds its bots gone and starts again those whose desired
//!   state is `running` (the same path as a bot that died while a Unix agent was away).
//!   [`adopt`] therefore adopts nothing; if it ever finds a recorded bot still alive (pid and
//!   creation time match: kill-on-close did not happen), it kills it so the restart cannot run
//!   a duplicate.

use std::{path::Path, process::Stdio, time::Duration};

use botmox_contract::logs::LogStream;
use chrono::Utc;
use tokio::time::Instant;
use uuid::Uuid;
use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW};

use super::{capture::Output, check_cwd, describe_spawn_error, environment, SpawnError, SpawnRequest, Spawned};
use crate::{
    supervise::Exit,
    win32::{self, Job, ProcessState},
};

/// The exit code of processes the agent kills (`TerminateJobObject`), as `taskkill /F` uses.
pub const KILLED_EXIT_CODE: u32 = 1;
/// How often a stopping job is checked for processes left.
const JOB_POLL: Duration = Duration::from_millis(50);

pub struct Process {
    pid: u32,
    child: tokio::process::Child,
    /// Kill-on-close: dropping the `Process` kills what is left of the tree.
    job: Job,
    /// Whether the bot shares the agent's console, so CTRL_BREAK can reach it.
    polite: bool,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The ids of the processes in the bot's job (the bot and everything it started).
    #[cfg(test)]
    pub fn tree(&self) -> Vec<u32> {
        self.job.process_ids().unwrap_or_default()
    }

    /// Waits until the bot's process ends. Cancel-safe.
    pub async fn wait(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(status) => status.code().map_or(Exit::Unknown, Exit::Code),
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "waiting for a bot process failed");
                Exit::Unknown
            }
        }
    }

    /// CTRL_BREAK to the bot's process group, up to `grace` for the whole job to leave, then
    /// `TerminateJobObject`. Without a console there is no polite signal: the job is
    /// terminated at once. Returns how the bot's own process ended.
    pub async fn terminate(&mut self, grace: Duration) -> Exit {
        let deadline = Instant::now() + grace;
        let polite = self.polite
            && match win32::send_ctrl_break(self.pid) {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(pid = self.pid, error = %e, "cannot send CTRL_BREAK to a bot: terminating its job");
                    false
                }
            };
        let mut exit = None;
        if polite {
            exit = tokio::time::timeout_at(deadline, self.wait()).await.ok();
            while exit.is_some() && self.has_members() && Instant::now() < deadline {
                tokio::time::sleep(JOB_POLL).await;
            }
        }
        if exit.is_none() || self.has_members() {
            if polite {
                tracing::info!(pid = self.pid, "the bot's job outlived its grace period: TerminateJobObject");
            }
            self.kill_tree();
        }
        let exit = match exit {
            Some(exit) => exit,
            None => tokio::time::timeout(Duration::from_secs(5), self.wait()).await.unwrap_or(Exit::Unknown),
        };
        let gone = Instant::now() + Duration::from_secs(2);
        while self.has_members() && Instant::now() < gone {
            tokio::time::sleep(JOB_POLL).await;
        }
        exit
    }

    /// After the bot's process ended by itself: whatever it left in its job is killed, so a
    /// crashed bot leaves no orphans.
    pub fn kill_remains(&self) {
        if self.has_members() {
            self.kill_tree();
        }
    }

    fn kill_tree(&self) {
        if let Err(e) = self.job.terminate(KILLED_EXIT_CODE) {
            tracing::warn!(pid = self.pid, error = %e, "cannot terminate a bot's job");
        }
    }

    /// Whether any process of the job runs (an unanswerable query counts as yes: terminating
    /// an empty job is harmless, leaving a tree running is not).
    fn has_members(&self) -> bool {
        self.job.active_processes().map_or(true, |n| n > 0)
    }
}

/// Starts a bot (see the module notes on jobs, consoles and pipes).
pub fn spawn(request: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    let exec = request.exec;
    let env = environment(exec, request.secrets)?;
    check_cwd(exec)?;
    let mut command = tokio::process::Command::new(&exec.program);
    command.args(&exec.args).envs(env);
    // Nothing sweeps by it here (no bot outlives its agent: module notes), but a bot's
    // environment is the same on both systems.
    super::mark(&mut command, request.bot_id, request.run_dir);
    if let Some(cwd) = &exec.cwd {
        command.current_dir(cwd);
    }
    let fail = |what: &str, e: std::io::Error| SpawnError::Failed(format!("cannot set up the bot's {what}: {e}"));
    let (stdout, stdout_reader) = output_pipe(request.bot_id, LogStream::Stdout).map_err(|e| fail("output pipe", e))?;
    let (stderr, stderr_reader) = output_pipe(request.bot_id, LogStream::Stderr).map_err(|e| fail("output pipe", e))?;
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr).kill_on_drop(false);
    let polite = win32::has_console();
    let flags = if polite { CREATE_NEW_PROCESS_GROUP } else { CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW };
    let (child, job) = win32::spawn_in_job(&mut command, flags).map_err(|e| describe_spawn_error(&exec.program, &e))?;
    // Dropping `command` closes the agent's copies of the client ends: EOF then means the
    // bot's whole tree closed its output.
    drop(command);
    let pid = child.id().ok_or_else(|| SpawnError::Failed("the process exited before it had a pid".into()))?;
    let outputs = vec![(LogStream::Stdout, stdout_reader), (LogStream::Stderr, stderr_reader)];
    let start_ticks = match win32::process_state(pid) {
        ProcessState::Running { created } => Some(created),
        ProcessState::Foreign | ProcessState::Gone => None,
    };
    let started_at = Utc::now();
    Ok(Spawned { process: Process { pid, child, job, polite }, pid, start_ticks, started_at, outputs })
}

/// A fresh local named pipe for one output stream: the bot's (client, write-only) end as a
/// `Stdio`, and the agent's (server, read-only, overlapped) end as an [`Output`].
fn output_pipe(bot_id: Uuid, stream: LogStream) -> std::io::Result<(Stdio, Output)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::net::windows::named_pipe::ServerOptions;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        r"\\.\pipe\botmox-agent-{}-{bot_id}-{}-{stream:?}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let server = ServerOptions::new()
        .first_pipe_instance(true)
        .reject_remote_clients(true)
        .access_inbound(true)
        .access_outbound(false)
        .in_buffer_size(64 * 1024)
        .create(&name)?;
    let client = std::fs::OpenOptions::new().write(true).open(&name)?;
    // The client is connected, so `connect` completes at its first poll; it must still be
    // called, as it is what starts the server end's reads.
    match futures::FutureExt::now_or_never(server.connect()) {
        Some(Ok(())) => Ok((Stdio::from(client), Box::pin(server))),
        Some(Err(e)) => Err(e),
        None => Err(std::io::Error::other("the output pipe did not connect")),
    }
}

/// Adopts nothing: a bot dies with the agent that started it (module notes). A recorded bot
/// found alive all the same is killed, so the restart that follows cannot make a duplicate.
pub fn adopt(
    pid: u32,
    start_ticks: Option<u64>,
    bot_id: Uuid,
    _run_dir: &Path,
) -> Option<(Process, Vec<(LogStream, Output)>)> {
    if let Some(created) = start_ticks {
        if win32::process_state(pid) == (ProcessState::Running { created }) {
            tracing::warn!(%bot_id, pid, "a bot outlived its agent's job: killing it before it is started again");
            if let Err(e) = win32::terminate_process(pid, created, KILLED_EXIT_CODE) {
                tracing::warn!(%bot_id, pid, error = %e, "cannot kill a bot left by a previous agent");
            }
        }
    }
    None
}

/// Nothing to remove: output goes through pipes, not files.
pub fn remove_outputs(_run_dir: &Path, _bot_id: Uuid) {}

/// Nothing can be orphaned: the tree of a bot whose process is gone was in its job, which
/// died with its last handle.
pub fn kill_orphan_group(_pgid: u32) {}

/// Whether `pid` is a running process created at `expected` (any creation time when `None`).
pub fn is_alive(pid: u32, expected: Option<u64>) -> bool {
    match win32::process_state(pid) {
        ProcessState::Running { created } => expected.is_none_or(|t| t == created),
        ProcessState::Foreign => expected.is_none(),
        ProcessState::Gone => false,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use botmox_contract::bots::ExecSpec;

    use super::*;
    use crate::runner::capture::{self, LineSink};

    const WAIT: Duration = Duration::from_secs(20);

    fn cmd(script: &str) -> ExecSpec {
        ExecSpec {
            program: "cmd".into(),
            args: vec!["/C".into(), script.into()],
            cwd: None,
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
        }
    }

    fn start(spec: &ExecSpec) -> anyhow::Result<Spawned> {
        let dir = std::env::temp_dir();
        let request = SpawnRequest { bot_id: Uuid::now_v7(), exec: spec, secrets: &BTreeMap::new(), run_dir: &dir };
        spawn(&request).map_err(|e| anyhow::anyhow!("{e}"))
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<(LogStream, String)>>);

    impl LineSink for Collect {
        fn line(&self, stream: LogStream, text: String) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push((stream, text));
        }
    }

    /// Waits (bounded) until the bot's job holds at least `count` processes; their ids and
    /// creation times.
    async fn tree_of(process: &Process, count: usize) -> anyhow::Result<Vec<(u32, u64)>> {
        let deadline = Instant::now() + WAIT;
        // The same set on two polls in a row: a transient process (cmd's helper for `start`)
        // seen once must not count, or it is gone by the time the test looks at it.
        let mut previous = Vec::new();
        loop {
            let mut tree: Vec<(u32, u64)> = process
                .tree()
                .into_iter()
                .filter_map(|pid| match win32::process_state(pid) {
                    ProcessState::Running { created } => Some((pid, created)),
                    _ => None,
                })
                .collect();
            tree.sort_unstable();
            if tree.len() >= count && tree == previous {
                return Ok(tree);
            }
            previous = tree.clone();
            // What the job itself says (an empty tree may be a failed query, not an empty job).
            anyhow::ensure!(
                Instant::now() < deadline,
                "the job never held {count} processes: running {tree:?}; the job's process list: {:?}",
                process.job.process_ids()
            );
            tokio::time::sleep(JOB_POLL).await;
        }
    }

    /// Waits (bounded) until no process of `tree` runs any more. `terminate` already waits a
    /// little for that; Wine on a loaded machine can take longer to reap.
    async fn gone(tree: &[(u32, u64)]) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while let Some((pid, _)) = tree.iter().find(|(pid, created)| is_alive(*pid, Some(*created))) {
            anyhow::ensure!(Instant::now() < deadline, "process {pid} of the tree outlived the stop: {tree:?}");
            tokio::time::sleep(JOB_POLL).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn captures_output_lines_and_the_exit_code() -> anyhow::Result<()> {
        let spec = cmd("echo out& echo err>&2& echo second& exit 3");
        let mut spawned = start(&spec)?;
        assert!(spawned.start_ticks.is_some(), "the creation time is recorded");
        let sink = Arc::new(Collect::default());
        let pumps: Vec<_> = spawned
            .outputs
            .drain(..)
            .map(|(stream, output)| tokio::spawn(capture::pump(output, stream, sink.clone())))
            .collect();
        for pump in pumps {
            tokio::time::timeout(WAIT, pump).await??;
        }
        let lines = sink.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let of = |stream| lines.iter().filter(|(s, _)| *s == stream).map(|(_, t)| t.as_str()).collect::<Vec<_>>();
        assert_eq!(of(LogStream::Stdout), ["out", "second"], "CRLF line ends are cut");
        assert_eq!(of(LogStream::Stderr), ["err"]);
        assert_eq!(tokio::time::timeout(WAIT, spawned.process.wait()).await?, Exit::Code(3));
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_failure() -> anyhow::Result<()> {
        for program in [r"C:\nonexistent\bot-binary.exe", "no-such-bot-program"] {
            let mut spec = cmd("");
            spec.program = program.into();
            match start(&spec) {
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains("not found") && text.contains(program), "{text}");
                }
                Ok(_) => anyhow::bail!("{program} must not start"),
            }
        }
        Ok(())
    }

    /// cmd starts a background ping and runs another: three processes, all in the job, all
    /// gone after the stop, checked one by one by pid and creation time.
    #[tokio::test]
    async fn terminate_takes_the_whole_tree() -> anyhow::Result<()> {
        let spec = cmd("start /B ping -n 1000 127.0.0.1 >NUL & ping -n 1000 127.0.0.1");
        let mut spawned = start(&spec)?;
        let tree = tree_of(&spawned.process, 3).await?;
        assert!(tree.iter().any(|(pid, _)| *pid == spawned.pid), "the bot itself is in its job: {tree:?}");
        for (pid, created) in &tree {
            assert!(is_alive(*pid, Some(*created)));
        }
        let exit = tokio::time::timeout(WAIT, spawned.process.terminate(Duration::from_secs(5))).await?;
        assert_ne!(exit, Exit::Unknown, "the bot's own exit status is known");
        gone(&tree).await?;
        assert_eq!(spawned.process.job.active_processes()?, 0);
        Ok(())
    }

    /// Windows' ping answers CTRL_BREAK by printing statistics and going on: a bot that
    /// ignores the polite signal. With a console, the stop waits the grace period, then
    /// terminates the job; without one (CI under Wine, where also `GenerateConsoleCtrlEvent`
    /// fails even with a console), no polite signal is possible and the job is terminated at
    /// once instead of waiting for nothing.
    #[tokio::test]
    async fn a_bot_ignoring_the_break_is_killed_after_the_grace_or_at_once_without_a_console() -> anyhow::Result<()> {
        let mut spawned = start(&cmd("ping -n 1000 127.0.0.1"))?;
        let tree = tree_of(&spawned.process, 2).await?;
        // Long enough that "at once" cannot be confused with "after the grace" even when Wine
        // is slow on a loaded machine.
        let grace = Duration::from_secs(10);
        let started = Instant::now();
        let exit = tokio::time::timeout(WAIT, spawned.process.terminate(grace)).await?;
        let took = started.elapsed();
        if spawned.process.polite && win32::has_console() {
            assert!(took >= grace, "the grace period is waited: {took:?}");
        } else {
            assert!(took < grace, "no polite signal to wait for: {took:?}");
        }
        assert_eq!(exit, Exit::Code(KILLED_EXIT_CODE as i32), "killed, by the job's termination");
        gone(&tree).await?;
        Ok(())
    }

    #[tokio::test]
    async fn killing_remains_after_the_leader_exits() -> anyhow::Result<()> {
        // The leader exits at once; the background ping it started stays in the job.
        let spec = cmd("start /B ping -n 1000 127.0.0.1 >NUL");
        let mut spawned = start(&spec)?;
        let exit = tokio::time::timeout(WAIT, spawned.process.wait()).await?;
        assert_eq!(exit, Exit::Code(0));
        let left = tree_of(&spawned.process, 1).await?;
        spawned.process.kill_remains();
        gone(&left).await
    }

    #[tokio::test]
    async fn identity_is_pid_and_creation_time_and_nothing_is_adopted() -> anyhow::Result<()> {
        let spec = cmd("ping -n 1000 127.0.0.1");
        let mut spawned = start(&spec)?;
        let created = spawned.start_ticks.ok_or_else(|| anyhow::anyhow!("no creation time"))?;
        assert!(is_alive(spawned.pid, Some(created)) && is_alive(spawned.pid, None));
        assert!(!is_alive(spawned.pid, Some(created + 1)), "another creation time: another process");
        let bot_id = Uuid::now_v7();
        let dir = std::env::temp_dir();
        assert!(adopt(spawned.pid, Some(created + 1), bot_id, &dir).is_none());
        assert!(is_alive(spawned.pid, Some(created)), "a process that is not ours is left alone");
        // Ours and alive, which kill-on-close should have prevented: killed, never adopted.
        assert!(adopt(spawned.pid, Some(created), bot_id, &dir).is_none());
        assert_eq!(tokio::time::timeout(WAIT, spawned.process.wait()).await?, Exit::Code(KILLED_EXIT_CODE as i32));
        Ok(())
    }

    #[tokio::test]
    async fn dropping_the_process_kills_its_tree() -> anyhow::Result<()> {
        let spec = cmd("start /B ping -n 1000 127.0.0.1 >NUL & ping -n 1000 127.0.0.1");
        let spawned = start(&spec)?;
        let tree = tree_of(&spawned.process, 3).await?;
        // What the agent's exit or crash does: the job's last handle closes.
        drop(spawned);
        gone(&tree).await
    }
}
