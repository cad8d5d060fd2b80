//! A bot's log sink: numbers each captured line (per-bot `seq`, strictly increasing, also
//! across agent restarts) and queues it in the outbox. Sequence numbers are reserved in blocks
//! in the state file, so the file is written once per block rather than once per line; a
//! restarted agent continues after the last reserved block (a gap, never a repeat).

use std::sync::{Arc, Mutex};

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
}

impl LogSink {
    /// `next` is the first number this sink may use (the state file's `log_seq`).
    pub fn new(bot_id: Uuid, next: u64, outbox: Arc<Outbox>, state: Arc<StateFile>) -> Self {
        let next = next.max(1);
        Self { bot_id, outbox, state, seq: Mutex::new(Seq { next, reserved: next }) }
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
        }
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
