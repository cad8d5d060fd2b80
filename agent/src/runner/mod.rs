//! Running bot processes (SPEC §5, Runner): start `exec.program` with its args, cwd and env
//! (plus secret values, which only ever exist in memory and in the child's environment), each
//! bot in its own process group (Unix) or Job Object (Windows) so a stop or crash cleanup
//! takes the whole tree, its output captured line by line ([`capture`]); stop = polite
//! signal, grace period, kill.
//!
//! The platform code lives in `unix.rs` and `windows.rs` behind one API: [`spawn`], [`adopt`]
//! (a process left running by a previous agent), [`Process`] (`wait`, `terminate`,
//! `kill_remains`). Every bot process carries [`BOT_ID_ENV`] and [`AGENT_DIR_ENV`] in its
//! environment (its children inherit them): on Unix `strays.rs` finds by them the processes a
//! killed agent started but never recorded.

pub mod capture;
#[cfg(unix)]
mod strays;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

use std::{collections::BTreeMap, path::Path};

use botmox_contract::{bots::ExecSpec, logs::LogStream};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use self::capture::Output;
#[cfg(unix)]
pub use self::strays::{bot_processes, BotProcess};
#[cfg(unix)]
pub use self::unix::{adopt, is_alive, kill_orphan_group, remove_outputs, spawn, stray, Process};
#[cfg(windows)]
pub use self::windows::{adopt, is_alive, kill_orphan_group, remove_outputs, spawn, Process};

/// Why a bot could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// The definition names a secret the agent does not hold (they are never on disk, so after
    /// an agent restart only the server's next start brings them).
    MissingSecret(String),
    /// The program, its cwd or the OS refused: starting again would fail the same way.
    Failed(String),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::MissingSecret(var) => write!(
                f,
                "the value of secret env {var} is not on this agent (secrets are kept in memory only); \
                 waiting for a start from the server"
            ),
            SpawnError::Failed(reason) => f.write_str(reason),
        }
    }
}

/// What to start.
pub struct SpawnRequest<'a> {
    pub bot_id: Uuid,
    pub exec: &'a ExecSpec,
    /// Secret name → value, for `exec.secret_env`.
    pub secrets: &'a BTreeMap<String, String>,
    /// Where per-bot output FIFOs live (Unix).
    pub run_dir: &'a Path,
}

/// A started (or adopted) bot process.
pub struct Spawned {
    pub process: Process,
    pub pid: u32,
    /// Process start time, to recognise it later: clock ticks since boot (Linux), creation
    /// time in 100 ns units since 1601 (Windows).
    pub start_ticks: Option<u64>,
    pub started_at: DateTime<Utc>,
    /// Its output streams, to be pumped into the bot's log.
    pub outputs: Vec<(LogStream, Output)>,
}

/// Which bot a process is (or descends from).
pub const BOT_ID_ENV: &str = "BOTMOX_BOT_ID";
/// The agent dir of the agent that started the bot. Two agents on one host have two dirs, so
/// the start-up sweep of one never touches the other's bots. Not `BOTMOX_AGENT_DIR`: that one
/// tells a `botmox-agent` which dir to use, and a bot that runs `botmox-agent status` must not
/// be pointed at ours by it.
pub const AGENT_DIR_ENV: &str = "BOTMOX_BOT_AGENT_DIR";

/// Marks the process `command` starts as bot `bot_id` of the agent whose run dir is `run_dir`.
fn mark(command: &mut tokio::process::Command, bot_id: Uuid, run_dir: &Path) {
    command.env(BOT_ID_ENV, bot_id.to_string()).env(AGENT_DIR_ENV, agent_dir_of(run_dir));
}

/// The agent dir a run dir belongs to: it is `<agent dir>/run` (`paths.rs`).
pub fn agent_dir_of(run_dir: &Path) -> &Path {
    run_dir.parent().unwrap_or(run_dir)
}

/// The child's extra environment: the definition's `env`, then each `secret_env` variable
/// with its secret's value.
pub fn environment(exec: &ExecSpec, secrets: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, SpawnError> {
    let mut env: Vec<(String, String)> = exec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (variable, secret) in &exec.secret_env {
        let value = secrets.get(secret).ok_or_else(|| SpawnError::MissingSecret(variable.clone()))?;
        env.push((variable.clone(), value.clone()));
    }
    Ok(env)
}

/// A working directory that does not exist gets its own message (the OS would say "not
/// found", which reads like a missing program).
pub fn check_cwd(exec: &ExecSpec) -> Result<(), SpawnError> {
    match &exec.cwd {
        Some(cwd) if !Path::new(cwd).is_dir() => {
            Err(SpawnError::Failed(format!("working directory `{cwd}` does not exist or is not a directory")))
        }
        _ => Ok(()),
    }
}

/// The OS's refusal to start `program`, said for a person.
pub fn describe_spawn_error(program: &str, err: &std::io::Error) -> SpawnError {
    let reason = match err.kind() {
        std::io::ErrorKind::NotFound => format!("program `{program}` not found (not a path, and not on the PATH)"),
        std::io::ErrorKind::PermissionDenied => format!("program `{program}` cannot be executed: permission denied"),
        _ => format!("program `{program}` cannot be started: {err}"),
    };
    SpawnError::Failed(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> ExecSpec {
        ExecSpec {
            program: "sh".into(),
            args: vec![],
            cwd: None,
            env: BTreeMap::from([("MODE".into(), "farm".into())]),
            secret_env: BTreeMap::from([("PASSWORD".into(), "farmer-password".into())]),
        }
    }

    #[test]
    fn secrets_become_env_vars_by_their_variable_name() {
        let secrets = BTreeMap::from([("farmer-password".to_owned(), "hunter2".to_owned())]);
        let env = environment(&exec(), &secrets);
        assert_eq!(env, Ok(vec![("MODE".into(), "farm".into()), ("PASSWORD".into(), "hunter2".into())]),);
        assert_eq!(environment(&exec(), &BTreeMap::new()), Err(SpawnError::MissingSecret("PASSWORD".into())));
    }

    #[test]
    fn a_missing_cwd_is_named() {
        let mut spec = exec();
        spec.cwd = Some("/definitely/not/here".into());
        assert!(matches!(check_cwd(&spec), Err(SpawnError::Failed(m)) if m.contains("/definitely/not/here")));
    }
}
