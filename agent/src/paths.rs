//! Where the agent keeps its files: one directory (the *agent dir*) holding the credentials
//! (`agent.json`), the state file, the command journal, the bot-state transitions owed to the
//! server, the agent's own logs, the FIFOs that carry bot output, the lock of the running
//! instance and the port of its status endpoint.
//!
//! The directory is `--config-dir` / `BOTMOX_AGENT_DIR` when given, else
//! `%APPDATA%\botmox` on Windows and `$XDG_CONFIG_HOME/botmox` or `~/.config/botmox`
//! elsewhere. Plain std instead of the `dirs` crate: these two rules are all we need, and they
//! stay visible here.

use std::path::{Path, PathBuf};

const APP_DIR: &str = "botmox";

/// The agent dir and the names of the files in it.
#[derive(Debug, Clone)]
pub struct AgentDir {
    root: PathBuf,
}

impl AgentDir {
    /// `explicit` (from `--config-dir` / `BOTMOX_AGENT_DIR`) or the OS default.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self, String> {
        let root = match explicit {
            Some(dir) if dir.as_os_str().is_empty() => return Err("the agent dir must not be empty".into()),
            Some(dir) => std::path::absolute(&dir).map_err(|e| format!("agent dir {}: {e}", dir.display()))?,
            None => config_dir(|name| std::env::var_os(name).map(PathBuf::from))?.join(APP_DIR),
        };
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory (owner-only on Unix) if it does not exist.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        restrict_dir(&self.root)
    }

    /// Server URL, agent id and token.
    pub fn credentials(&self) -> PathBuf {
        self.root.join("agent.json")
    }

    /// The bots this agent runs (definitions, pids, desired states).
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Command ids executed and their results.
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal.jsonl")
    }

    /// Bot-state transitions not yet confirmed by the server.
    pub fn transitions(&self) -> PathBuf {
        self.root.join("transitions.jsonl")
    }

    /// The agent's own rotating JSON log files.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// FIFOs carrying bot output (Unix).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// Held (locked) by the running `botmox-agent run`.
    pub fn lock(&self) -> PathBuf {
        self.root.join("agent.lock")
    }

    /// The address of the running agent's local status endpoint.
    pub fn status_addr(&self) -> PathBuf {
        self.root.join("status.addr")
    }
}

#[cfg(unix)]
fn restrict_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_dir(_path: &Path) -> std::io::Result<()> {
    // %APPDATA% is already per-user; DPAPI protection of the token comes with Windows support.
    Ok(())
}

/// The per-user config directory, from the environment as given by `var`.
fn config_dir(var: impl Fn(&str) -> Option<PathBuf>) -> Result<PathBuf, String> {
    // Empty or relative values are ignored, as the XDG spec requires.
    let absolute = |name: &str| var(name).filter(|p| p.is_absolute());
    if cfg!(windows) {
        return absolute("APPDATA").ok_or_else(|| "APPDATA is not set".to_owned());
    }
    absolute("XDG_CONFIG_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".config")))
        .ok_or_else(|| "neither XDG_CONFIG_HOME nor HOME is set".to_owned())
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<PathBuf> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| PathBuf::from(v))
    }

    #[test]
    fn prefers_xdg_config_home() {
        let dir = config_dir(env(&[("XDG_CONFIG_HOME", "/x/cfg"), ("HOME", "/home/u")]));
        assert_eq!(dir, Ok(PathBuf::from("/x/cfg")));
    }

    #[test]
    fn falls_back_to_home_dot_config() {
        assert_eq!(config_dir(env(&[("HOME", "/home/u")])), Ok(PathBuf::from("/home/u/.config")));
        let relative_xdg = env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(config_dir(relative_xdg), Ok(PathBuf::from("/home/u/.config")));
    }

    #[test]
    fn errors_without_any_home() {
        assert!(config_dir(env(&[])).is_err());
    }

    #[test]
    fn an_explicit_dir_wins_and_holds_every_file() -> Result<(), String> {
        let dir = AgentDir::resolve(Some(PathBuf::from("/srv/agent")))?;
        assert_eq!(dir.credentials(), PathBuf::from("/srv/agent/agent.json"));
        assert_eq!(dir.state(), PathBuf::from("/srv/agent/state.json"));
        assert!(AgentDir::resolve(Some(PathBuf::new())).is_err());
        Ok(())
    }
}
