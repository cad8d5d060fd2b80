//! The command journal: which command ids this agent has started and how each ended, kept on
//! disk (JSON lines, bounded to the newest [`KEEP`] ids) so that a redelivered command — the
//! queue is at-least-once — is answered with its recorded result instead of running twice,
//! even across an agent restart (SPEC §4, "effectively once").
//!
//! It also keeps, per bot, the highest command sequence number started here: a command
//! for the bot with a lower one is older than one already run, and is refused as superseded
//! (the server's `seq`; see `Commands::handle`).
//!
//! It is also the durable half of the outbox for results: an outcome is journalled before it
//! is sent, and marked `confirmed` once the server confirmed the frame that carried it. At
//! start-up the agent sends again every outcome not confirmed, and answers every command
//! found started but never finished (the agent died while it ran) as interrupted — so a
//! result is never lost to an agent kill, and the server never waits out a timeout for it.
//!
//! Appending a line per event keeps each write small; the file is rewritten (atomically)
//! when it holds twice as many lines as ids kept.

use std::{
    collections::{HashMap, VecDeque},
    io::Write as _,
    path::{Path, PathBuf},
};

use botmox_contract::{commands::CommandKind, protocol::CommandOutcome};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Command ids remembered.
pub const KEEP: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: Uuid,
    pub kind: CommandKind,
    pub at: DateTime<Utc>,
    /// `None` while the command runs (or if the agent died while it ran).
    pub outcome: Option<Recorded>,
    /// The bot a bot command was for, and its sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The server confirmed it received the outcome.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}

/// Which bot a command is for, and its sequence number (bot commands from a server that
/// numbers them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BotSeq {
    pub bot: Option<Uuid>,
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub ok: bool,
    pub result: serde_json::Value,
    pub error: Option<String>,
    /// Not run: a newer command for the same bot had run already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
}

impl Recorded {
    pub fn outcome(&self, command_id: Uuid) -> CommandOutcome {
        CommandOutcome {
            command_id,
            ok: self.ok,
            result: self.result.clone(),
            error: self.error.clone(),
            superseded: self.superseded,
        }
    }
}

pub struct Journal {
    path: PathBuf,
    entries: HashMap<Uuid, Entry>,
    /// Ids oldest first, for eviction.
    order: VecDeque<Uuid>,
    lines_in_file: usize,
    /// Per bot, the highest sequence number of a command started for it.
    bot_seqs: HashMap<Uuid, u64>,
}

impl Journal {
    /// Reads the journal (a missing file is an empty journal; a torn last line, or any line
    /// that does not parse, is skipped — and then the file is rewritten without it, so the
    /// next line appended is not glued to a torn one and lost at the next start).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut journal = Self {
            path: path.to_path_buf(),
            entries: HashMap::new(),
            order: VecDeque::new(),
            lines_in_file: 0,
            bot_seqs: HashMap::new(),
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(journal),
            Err(e) => return Err(e),
        };
        let mut skipped = !bytes.is_empty() && !bytes.ends_with(b"\n");
        for line in bytes.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            journal.lines_in_file += 1;
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => journal.remember(entry),
                Err(_) => skipped = true,
            }
        }
        if skipped {
            journal.compact()?;
        }
        Ok(journal)
    }

    pub fn get(&self, id: Uuid) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// The highest sequence number of a command started for `bot`.
    pub fn bot_seq(&self, bot: Uuid) -> Option<u64> {
        self.bot_seqs.get(&bot).copied()
    }

    /// Records that `id` starts executing (before it does anything).
    pub fn started(&mut self, id: Uuid, kind: CommandKind, of: BotSeq) -> std::io::Result<()> {
        self.write(Entry { id, kind, at: Utc::now(), outcome: None, bot: of.bot, seq: of.seq, confirmed: false })
    }

    /// Records how `id` ended (before the result is sent).
    pub fn finished(&mut self, id: Uuid, kind: CommandKind, of: BotSeq, outcome: Recorded) -> std::io::Result<()> {
        let entry =
            Entry { id, kind, at: Utc::now(), outcome: Some(outcome), bot: of.bot, seq: of.seq, confirmed: false };
        self.write(entry)
    }

    /// Records that the server received the outcomes of `ids` (ids unknown or without an
    /// outcome, or already confirmed, are skipped).
    pub fn confirmed(&mut self, ids: &[Uuid]) -> std::io::Result<()> {
        for id in ids {
            let Some(entry) = self.entries.get(id) else { continue };
            if entry.confirmed || entry.outcome.is_none() {
                continue;
            }
            let entry = Entry { confirmed: true, ..entry.clone() };
            self.write(entry)?;
        }
        Ok(())
    }

    /// Commands started here whose outcome is not journalled, oldest first.
    pub fn unfinished(&self) -> Vec<Entry> {
        self.in_order().filter(|e| e.outcome.is_none()).cloned().collect()
    }

    /// Outcomes the server has not confirmed, oldest first.
    pub fn unconfirmed(&self) -> Vec<(Uuid, Recorded)> {
        self.in_order()
            .filter(|e| !e.confirmed)
            .filter_map(|e| e.outcome.clone().map(|outcome| (e.id, outcome)))
            .collect()
    }

    fn in_order(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().filter_map(|id| self.entries.get(id))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn remember(&mut self, entry: Entry) {
        let id = entry.id;
        let ran = !entry.outcome.as_ref().is_some_and(|o| o.superseded);
        if let (Some(bot), Some(seq), true) = (entry.bot, entry.seq, ran) {
            let high = self.bot_seqs.entry(bot).or_insert(seq);
            *high = (*high).max(seq);
        }
        if self.entries.insert(id, entry).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > KEEP {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    fn write(&mut self, entry: Entry) -> std::io::Result<()> {
        let line = serde_json::to_string(&entry).map_err(std::io::Error::other)?;
        self.remember(entry);
        if self.lines_in_file + 1 > 2 * KEEP {
            return self.compact();
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        self.lines_in_file += 1;
        Ok(())
    }

    /// Rewrites the file with one line per remembered id, oldest first.
    fn compact(&mut self) -> std::io::Result<()> {
        let mut text = String::new();
        for id in &self.order {
            if let Some(entry) = self.entries.get(id) {
                text.push_str(&serde_json::to_string(entry).map_err(std::io::Error::other)?);
                text.push('\n');
            }
        }
        crate::config::write_private(&self.path, text.as_bytes())?;
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(n: u64) -> Recorded {
        Recorded { ok: true, result: serde_json::json!({ "n": n }), error: None, superseded: false }
    }

    #[test]
    fn remembers_results_across_a_reopen() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("journal.jsonl");
        let (done, running) = (Uuid::now_v7(), Uuid::now_v7());
        {
            let mut journal = Journal::open(&path)?;
            journal.started(done, CommandKind::BotStart, BotSeq::default())?;
            journal.finished(done, CommandKind::BotStart, BotSeq::default(), ok(1))?;
            journal.started(running, CommandKind::AgentExec, BotSeq::default())?;
        }
        let journal = Journal::open(&path)?;
        assert_eq!(journal.get(done).and_then(|e| e.outcome.clone()), Some(ok(1)));
        let unfinished = journal.get(running).map(|e| (e.kind, e.outcome.is_none()));
        assert_eq!(unfinished, Some((CommandKind::AgentExec, true)), "started, never finished");
        assert!(journal.get(Uuid::now_v7()).is_none());
        Ok(())
    }

    #[test]
    fn keeps_only_the_newest_ids_and_compacts_the_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("journal.jsonl");
        let mut journal = Journal::open(&path)?;
        let ids: Vec<Uuid> = (0..KEEP + 500).map(|_| Uuid::now_v7()).collect();
        for (n, id) in ids.iter().enumerate() {
            journal.started(*id, CommandKind::BotStop, BotSeq::default())?;
            journal.finished(*id, CommandKind::BotStop, BotSeq::default(), ok(n as u64))?;
        }
        assert_eq!(journal.len(), KEEP);
        assert!(journal.get(ids[0]).is_none(), "the oldest are forgotten");
        assert!(journal.get(ids[KEEP + 499]).is_some());
        let lines = std::fs::read_to_string(&path)?.lines().count();
        assert!(lines <= 2 * KEEP, "the file stays bounded: {lines} lines");
        let reopened = Journal::open(&path)?;
        assert_eq!(reopened.len(), KEEP);
        assert_eq!(reopened.get(ids[KEEP + 499]).and_then(|e| e.outcome.clone()), Some(ok((KEEP + 499) as u64)));
        Ok(())
    }

    #[test]
    fn keeps_the_highest_sequence_per_bot_across_a_reopen() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("journal.jsonl");
        let (bot, other) = (Uuid::now_v7(), Uuid::now_v7());
        {
            let mut journal = Journal::open(&path)?;
            for seq in [3, 7, 5] {
                let of = BotSeq { bot: Some(bot), seq: Some(seq) };
                let id = Uuid::now_v7();
                journal.started(id, CommandKind::BotStart, of)?;
                journal.finished(id, CommandKind::BotStart, of, ok(seq))?;
            }
            // A refused (superseded) command does not raise the mark.
            let of = BotSeq { bot: Some(other), seq: Some(9) };
            let refused = Recorded { superseded: true, ..ok(0) };
            journal.finished(Uuid::now_v7(), CommandKind::BotStop, of, refused)?;
            assert_eq!(journal.bot_seq(bot), Some(7));
        }
        let journal = Journal::open(&path)?;
        assert_eq!(journal.bot_seq(bot), Some(7), "the highest, not the last");
        assert_eq!(journal.bot_seq(other), None);
        Ok(())
    }

    #[test]
    fn outcomes_stay_unconfirmed_until_confirmed_across_a_reopen() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("journal.jsonl");
        let (sent, unsent, running) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        {
            let mut journal = Journal::open(&path)?;
            for (n, id) in [sent, unsent].into_iter().enumerate() {
                journal.started(id, CommandKind::BotStart, BotSeq::default())?;
                journal.finished(id, CommandKind::BotStart, BotSeq::default(), ok(n as u64))?;
            }
            journal.started(running, CommandKind::BotStop, BotSeq::default())?;
            journal.confirmed(&[sent, running, Uuid::now_v7()])?;
            assert_eq!(journal.unconfirmed(), [(unsent, ok(1))]);
        }
        let mut journal = Journal::open(&path)?;
        assert_eq!(journal.unconfirmed(), [(unsent, ok(1))], "confirmation survives a restart");
        assert_eq!(journal.unfinished().iter().map(|e| e.id).collect::<Vec<_>>(), [running]);
        let lines = std::fs::read_to_string(&path)?.lines().count();
        journal.confirmed(&[sent])?;
        assert_eq!(std::fs::read_to_string(&path)?.lines().count(), lines, "confirming twice writes nothing");
        journal.confirmed(&[unsent])?;
        assert!(Journal::open(&path)?.unconfirmed().is_empty());
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_not_joined_by_the_next_write() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("journal.jsonl");
        let id = Uuid::now_v7();
        {
            let mut journal = Journal::open(&path)?;
            journal.started(id, CommandKind::BotStart, BotSeq::default())?;
            journal.finished(id, CommandKind::BotStart, BotSeq::default(), ok(7))?;
        }
        {
            // Closed before the reopen: Windows refuses to replace a file another handle holds.
            let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
            file.write_all(b"{\"id\":\"0190")?;
        }
        let mut journal = Journal::open(&path)?;
        assert_eq!(journal.get(id).and_then(|e| e.outcome.clone()), Some(ok(7)));
        // The next line is not glued to the torn one (it would be unreadable at the next start:
        // a result lost, or a command run twice).
        let next = Uuid::now_v7();
        journal.started(next, CommandKind::BotStop, BotSeq::default())?;
        assert!(Journal::open(&path)?.get(next).is_some(), "the line written after a torn one is read back");
        Ok(())
    }
}
