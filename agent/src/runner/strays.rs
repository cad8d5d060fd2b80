//! Finding bot processes by their environment (Unix, through `/proc`): every bot carries
//! [`BOT_ID_ENV`] and [`AGENT_DIR_ENV`] (`super::mark`), and so does everything it starts.
//! The agent's start-up sweep (`bots::orphans`) uses this to find the processes a killed
//! agent started but never wrote down. A process of another user (its `environ` unreadable)
//! or of another agent dir is never ours. Where there is no `/proc`, nothing is found.

use std::path::Path;

use uuid::Uuid;

use super::{unix::read_stat, AGENT_DIR_ENV, BOT_ID_ENV};

/// A live process marked as a bot of this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotProcess {
    pub pid: u32,
    /// Its process group: the bot's own pid for the bot and what stayed in its group.
    pub pgrp: u32,
    pub bot_id: Uuid,
    /// Clock ticks since boot (`/proc/<pid>/stat` field 22): its identity with the pid.
    pub start_ticks: u64,
}

/// Every live (not zombie) process marked as a bot of the agent whose dir is `agent_dir`,
/// in one pass over `/proc`.
pub fn bot_processes(agent_dir: &Path) -> Vec<BotProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok().filter(|pid| *pid != me)?;
            let bot_id = marked_bot(&std::fs::read(format!("/proc/{pid}/environ")).ok()?, agent_dir)?;
            let stat = read_stat(pid).filter(|stat| !stat.is_dead())?;
            Some(BotProcess { pid, pgrp: u32::try_from(stat.pgrp).ok()?, bot_id, start_ticks: stat.start_ticks })
        })
        .collect()
}

/// The bot a process environment (`/proc/<pid>/environ`: `KEY=value`, NUL-separated) marks,
/// if it is marked as a bot of `agent_dir`. The first of repeated keys counts, as `getenv`.
fn marked_bot(environ: &[u8], agent_dir: &Path) -> Option<Uuid> {
    use std::os::unix::ffi::OsStrExt as _;
    let value =
        |key: &str| environ.split(|b| *b == 0).find_map(|var| var.strip_prefix(key.as_bytes())?.strip_prefix(b"="));
    if value(AGENT_DIR_ENV)? != agent_dir.as_os_str().as_bytes() {
        return None;
    }
    std::str::from_utf8(value(BOT_ID_ENV)?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use botmox_contract::bots::ExecSpec;

    use super::*;
    use crate::runner::{spawn, SpawnRequest};

    #[test]
    fn only_bots_of_this_agent_dir_are_ours() {
        let bot = Uuid::now_v7();
        let environ = |dir: &str| format!("PATH=/bin\0BOTMOX_BOT_ID={bot}\0BOTMOX_BOT_AGENT_DIR={dir}\0").into_bytes();
        let ours = Path::new("/srv/agent");
        assert_eq!(marked_bot(&environ("/srv/agent"), ours), Some(bot));
        assert_eq!(marked_bot(&environ("/srv/agent2"), ours), None, "another agent's bot");
        assert_eq!(marked_bot(&environ("/srv"), ours), None);
        let unmarked = format!("BOTMOX_BOT_ID={bot}\0").into_bytes();
        assert_eq!(marked_bot(&unmarked, ours), None, "a bot of an agent before the mark: not provably ours");
        let not_a_uuid = b"BOTMOX_BOT_ID=x\0BOTMOX_BOT_AGENT_DIR=/srv/agent\0";
        assert_eq!(marked_bot(not_a_uuid, ours), None);
        assert_eq!(marked_bot(b"\xff\0\0=", ours), None);
        // A longer key that starts like ours is another variable.
        let lookalike = format!("BOTMOX_BOT_ID_OLD={bot}\0BOTMOX_BOT_AGENT_DIR=/srv/agent\0").into_bytes();
        assert_eq!(marked_bot(&lookalike, ours), None);
    }

    #[tokio::test]
    async fn finds_a_spawned_bot_and_its_children_by_their_environment() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let run_dir = dir.path().join("run");
        let exec = ExecSpec {
            program: "sh".into(),
            args: vec!["-c".into(), "sleep 30 & echo $!; wait".into()],
            cwd: None,
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
        };
        let bot_id = Uuid::now_v7();
        let request = SpawnRequest { bot_id, exec: &exec, secrets: &BTreeMap::new(), run_dir: &run_dir };
        let mut spawned = spawn(&request).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (_, mut stdout) = spawned.outputs.remove(0);
        let mut buf = [0u8; 32];
        let n = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut stdout, &mut buf))
            .await??;
        let child: u32 = std::str::from_utf8(&buf[..n])?.trim().parse()?;
        // `$!` names the child once forked, before it has exec'd `sleep`; while it execs, its
        // `environ` reads empty. Wait until it is `sleep` (a condition, checked every 5 ms).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|cmdline| cmdline.starts_with(b"sleep")) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "the child never became `sleep`");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let mut found: Vec<(u32, u32, Uuid)> =
            bot_processes(dir.path()).into_iter().map(|p| (p.pid, p.pgrp, p.bot_id)).collect();
        found.sort();
        let mut expected = vec![(spawned.pid, spawned.pid, bot_id), (child, spawned.pid, bot_id)];
        expected.sort();
        assert_eq!(found, expected, "the bot and its child, in the bot's group");
        assert!(bot_processes(&run_dir).is_empty(), "another dir finds nothing");
        spawned.process.terminate(Duration::from_secs(5)).await;
        assert!(bot_processes(dir.path()).is_empty(), "gone once stopped");
        Ok(())
    }
}
