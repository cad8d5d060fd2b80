//! The state file (`state.json`): what this agent must remember across its own restarts —
//! each bot's definition, desired state, last observed state, and the process it runs (pid
//! plus the process's start time, so that a recycled pid is never mistaken for our bot) —
//! plus the log sequence numbers handed out and the last errors for `status`.
//!
//! Never holds a secret value: definitions name secrets, values live in memory only.
//! Written atomically on every change that matters (transitions, not log lines).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use botmox_contract::{
    bots::{BotState, DesiredState},
    protocol::BotRuntimeSpec,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Errors kept for `status`.
const KEEP_ERRORS: usize = 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateDoc {
    #[serde(default)]
    pub bots: BTreeMap<Uuid, BotRecord>,
    /// Newest last.
    #[serde(default)]
    pub last_errors: Vec<ErrorNote>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotRecord {
    /// The newest definition the server sent.
    pub spec: BotRuntimeSpec,
    pub desired: DesiredState,
    pub state: BotState,
    /// The process running now, if any.
    pub process: Option<ProcessRecord>,
    pub restart_count: u32,
    pub last_error: Option<String>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// Log sequence numbers below this may have been used: a restarted agent continues here.
    pub log_seq: u64,
    /// The `at` of the bot's newest state report: a restarted agent reports later than this
    /// even if the host's clock stepped back meanwhile (the server ignores a report not later
    /// than the newest it applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), where known.
    pub start_ticks: Option<u64>,
    pub started_at: DateTime<Utc>,
    /// The definition the process was started with.
    pub definition_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNote {
    pub at: DateTime<Utc>,
    pub message: String,
}

pub struct StateFile {
    path: PathBuf,
    doc: Mutex<StateDoc>,
}

impl StateFile {
    /// Reads the state file; a missing one is an empty state.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self { path: path.to_path_buf(), doc: Mutex::new(Self::read(path)?) })
    }

    /// The state as last written (for `status` when no agent runs).
    pub fn read(path: &Path) -> anyhow::Result<StateDoc> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{} is corrupt ({e}); move it away to start with no bots", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateDoc::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    fn doc(&self) -> std::sync::MutexGuard<'_, StateDoc> {
        self.doc.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> StateDoc {
        self.doc().clone()
    }

    pub fn bot(&self, id: Uuid) -> Option<BotRecord> {
        self.doc().bots.get(&id).cloned()
    }

    /// Changes the state and writes it, under one lock so writes land in change order.
    pub fn update(&self, change: impl FnOnce(&mut StateDoc)) {
        let mut doc = self.doc();
        change(&mut doc);
        let written = serde_json::to_vec_pretty(&*doc)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::config::write_private(&self.path, &json));
        if let Err(e) = written {
            // The agent keeps working from memory; a restart would lose only what changed since.
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the state file");
        }
    }

    /// Changes one bot's record, if it is known.
    pub fn update_bot(&self, id: Uuid, change: impl FnOnce(&mut BotRecord)) {
        self.update(|doc| {
            if let Some(record) = doc.bots.get_mut(&id) {
                change(record);
            }
        });
    }

    pub fn note_error(&self, message: String) {
        self.update(|doc| {
            doc.last_errors.push(ErrorNote { at: Utc::now(), message });
            let excess = doc.last_errors.len().saturating_sub(KEEP_ERRORS);
            doc.last_errors.drain(..excess);
        });
    }
}

/// Sample definitions for tests across the crate.
#[cfg(test)]
pub mod tests_support {
    use std::collections::BTreeMap;

    use botmox_contract::{
        bots::{ExecSpec, RestartSpec, StopSpec},
        protocol::BotRuntimeSpec,
    };
    use uuid::Uuid;

    pub fn spec(id: Uuid) -> BotRuntimeSpec {
        BotRuntimeSpec {
            bot_id: id,
            name: "farmer".into(),
            exec: ExecSpec {
                program: "python3".into(),
                args: vec!["bot.py".into()],
                cwd: None,
                env: BTreeMap::new(),
                secret_env: BTreeMap::from([("PASSWORD".into(), "farmer-password".into())]),
            },
            restart: RestartSpec::default(),
            stop: StopSpec::default(),
            definition_hash: "abc123".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{tests_support::spec, *};

    #[test]
    fn round_trips_bots_and_bounds_errors() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        let id = Uuid::now_v7();
        {
            let state = StateFile::open(&path)?;
            state.update(|doc| {
                doc.bots.insert(
                    id,
                    BotRecord {
                        spec: spec(id),
                        desired: DesiredState::Running,
                        state: BotState::Running,
                        process: Some(ProcessRecord {
                            pid: 4242,
                            start_ticks: Some(99),
                            started_at: Utc::now(),
                            definition_hash: "abc123".into(),
                        }),
                        restart_count: 1,
                        last_error: None,
                        exit_code: None,
                        exit_signal: None,
                        log_seq: 1000,
                        last_report_at: None,
                    },
                );
            });
            for n in 0..30 {
                state.note_error(format!("error {n}"));
            }
            state.update_bot(id, |record| record.log_seq = 2000);
        }
        let state = StateFile::open(&path)?;
        let record = state.bot(id).ok_or_else(|| anyhow::anyhow!("the bot is remembered"))?;
        assert_eq!(record.process.map(|p| (p.pid, p.start_ticks)), Some((4242, Some(99))));
        assert_eq!(record.log_seq, 2000);
        let errors = state.snapshot().last_errors;
        assert_eq!(errors.len(), KEEP_ERRORS);
        assert_eq!(errors.last().map(|e| e.message.as_str()), Some("error 29"));
        Ok(())
    }

    #[test]
    fn a_missing_file_is_empty_and_a_corrupt_one_says_what_to_do() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        assert!(StateFile::read(&path)?.bots.is_empty());
        std::fs::write(&path, "[")?;
        let err = StateFile::read(&path).err().ok_or_else(|| anyhow::anyhow!("must fail"))?;
        assert!(err.to_string().contains("move it away"), "{err}");
        Ok(())
    }
}
