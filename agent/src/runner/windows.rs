//! Bot processes on Windows: not in this build yet. The API matches `unix.rs` so the rest of
//! the agent compiles unchanged; starting a bot fails with a clear reason (the bot goes
//! `failed`, never a restart loop). Next: a Job Object per bot with
//! `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` (`windows-sys`), CTRL_BREAK to the process group as
//! the polite stop, `TerminateJobObject` after the grace period, and process creation time
//! (`GetProcessTimes`) as the identity check for adoption.

use std::{path::Path, time::Duration};

use botmox_contract::logs::LogStream;
use uuid::Uuid;

use super::{capture::Output, SpawnError, SpawnRequest, Spawned};
use crate::supervise::Exit;

const NOT_YET: &str = "running bots on Windows is not available in this build of botmox-agent yet";

pub struct Process {
    pid: u32,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub async fn wait(&mut self) -> Exit {
        std::future::pending::<()>().await;
        Exit::Unknown
    }

    pub async fn terminate(&mut self, _grace: Duration) -> Exit {
        Exit::Unknown
    }

    pub fn kill_remains(&self) {}
}

pub fn spawn(request: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    // The checks that do not depend on the platform still run, so their errors match Unix.
    super::environment(request.exec, request.secrets)?;
    super::check_cwd(request.exec)?;
    let _ = (request.bot_id, request.run_dir);
    Err(SpawnError::Failed(NOT_YET.into()))
}

pub fn adopt(
    _pid: u32,
    _start_ticks: Option<u64>,
    _bot_id: Uuid,
    _run_dir: &Path,
) -> Option<(Process, Vec<(LogStream, Output)>)> {
    None
}

pub fn remove_outputs(_run_dir: &Path, _bot_id: Uuid) {}

pub fn kill_orphan_group(_pgid: u32) {}

pub fn is_alive(_pid: u32, _start_ticks: Option<u64>) -> bool {
    false
}
