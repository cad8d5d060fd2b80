//! A bot's log sink: numbers each captured line (per-bot `seq`, strictly increasing, also
//! across agent restarts) and queues it in the outbox. Sequence numbers are reserved in blocks
//! in the state file, so the file is written once per block rather than once per line; a
//! restarted agent continues after the last reserved block (a gap, never a repeat).
//!
//! **A bot's secrets never leave the host in its log.** The sink knows the secret values the
//! bot was started with and replaces each in every captured line with `***` before the line
//! is queued: a bot that prints its password shows `***` to whoever reads its log. (A value
//! split across two lines, or printed transformed, cannot be recognised; and a bot re-adopted
//! after an agent restart has no values in memory until its next start.)

use std::sync::{Arc, Mutex, RwLock};

use botmox_contract::logs::{LogLine, LogStream};
use chrono::Utc;
use uuid::Uuid;

use crate::{connection::buffer::Outbox, runner::capture::LineSink, state_file::StateFile};

/// Sequence numbers reserved per state file write.
const RESERVE: u64 = 1000;
/// Lines the agent itself writes into a bot's log start with this.
pub const AGENT_PREFIX: &str = "[botmox-agent] ";

struct Seq {
    next: u64,
    reserved: u64,
}

pub struct LogSink {
    bot_id: Uuid,
    outbox: Arc<Outbox>,
    state: Arc<StateFile>,
    seq: Mutex<Seq>,
    /// The bot's secret values (longest first), replaced in its lines.
    secrets: RwLock<Vec<String>>,
}

/// What a secret value becomes in a bot's log line.
pub const MASK: &str = "***";

impl LogSink {
    /// `next` is the first number this sink may use (the state file's `log_seq`).
    pub fn new(bot_id: Uuid, next: u64, outbox: Arc<Outbox>, state: Arc<StateFile>) -> Self {
        let next = next.max(1);
        Self { bot_id, outbox, state, seq: Mutex::new(Seq { next, reserved: next }), secrets: RwLock::default() }
    }

    /// The secret values the bot now runs with (each start brings them again).
    pub fn set_secrets<'a>(&self, values: impl IntoIterator<Item = &'a String>) {
        let mut known: Vec<String> =
            values.into_iter().filter(|v| v.len() >= crate::logging::MIN_SECRET_LEN).cloned().collect();
        // Longest first, so a secret containing another is replaced whole.
        known.sort_by_key(|v| std::cmp::Reverse(v.len()));
        known.dedup();
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = known;
    }

    /// A line from the agent about the bot (adoption, output that cannot be captured, …).
    pub fn note(&self, text: &str) {
        self.line(LogStream::Stderr, format!("{AGENT_PREFIX}{text}"));
    }

    fn next_seq(&self) -> u64 {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        if seq.next >= seq.reserved {
            seq.reserved = seq.next + RESERVE;
            let reserved = seq.reserved;
            // Written while holding the lock, so no number is used before it is reserved.
            self.state.update_bot(self.bot_id, |record| record.log_seq = record.log_seq.max(reserved));
        }
        let n = seq.next;
        seq.next += 1;
        n
    }
}

impl LineSink for LogSink {
    fn line(&self, stream: LogStream, text: String) {
        let text = {
            let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
            match crate::logging::replace_secrets(&text, &secrets, MASK) {
                std::borrow::Cow::Borrowed(_) => text,
                std::borrow::Cow::Owned(redacted) => redacted,
            }
        };
        let seq = self.next_seq();
        self.outbox.push_log(self.bot_id, LogLine { seq, stream, time: Utc::now(), text });
    }
}

#[cfg(test)]
mod tests {
    use botmox_contract::protocol::AgentFrame;

    use super::*;
    use crate::{connection::buffer::Limits, state_file::BotRecord};

    fn record(id: Uuid, log_seq: u64) -> BotRecord {
        BotRecord {
            spec: crate::state_file::tests_support::spec(id),
            desired: botmox_contract::bots::DesiredState::Stopped,
            state: botmox_contract::bots::BotState::Pending,
            process: None,
            restart_count: 0,
            last_error: None,
            exit_code: None,
            exit_signal: None,
            log_seq,
            last_report_at: None,
        }
    }

    #[test]
    fn a_bots_secret_values_are_masked_in_its_lines() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = Arc::new(StateFile::open(&dir.path().join("state.json"))?);
        let id = Uuid::now_v7();
        state.update(|doc| {
            doc.bots.insert(id, record(id, 0));
        });
        let outbox = Arc::new(Outbox::new(Limits::default()));
        let sink = LogSink::new(id, 1, outbox.clone(), state);
        sink.set_secrets([&"hunter2-farm".to_owned(), &"hunter2".to_owned(), &"ab".to_owned()]);
        sink.line(LogStream::Stdout, "password=hunter2-farm, old=hunter2".into());
        sink.line(LogStream::Stderr, "ab: too short to be masked".into());
        let texts: Vec<String> = outbox
            .take(100, 1000, 1 << 20)
            .into_iter()
            .flat_map(|frame| match frame {
                AgentFrame::Logs { lines, .. } => lines.into_iter().map(|l| l.text).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(texts, vec!["password=***, old=***", "ab: too short to be masked"]);
        Ok(())
    }

    #[test]
    fn sequence_numbers_increase_across_restarts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        let id = Uuid::now_v7();
        let outbox = Arc::new(Outbox::new(Limits::default()));
        let mut seen = Vec::new();
        for _life in 0..2 {
            let state = Arc::new(StateFile::open(&path)?);
            if state.bot(id).is_none() {
                state.update(|doc| {
                    doc.bots.insert(id, record(id, 0));
                });
            }
            let next = state.bot(id).map_or(1, |r| r.log_seq);
            let sink = LogSink::new(id, next, outbox.clone(), state);
            for n in 0..5 {
                sink.line(LogStream::Stdout, format!("line {n}"));
            }
            sink.note("restarting");
            for frame in outbox.take(100, 1000, 1 << 20) {
                if let AgentFrame::Logs { lines, .. } = frame {
                    seen.extend(lines.iter().map(|l| l.seq));
                }
            }
        }
        assert_eq!(seen.len(), 12);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {seen:?}");
        assert_eq!(seen[0], 1);
        Ok(())
    }
}
