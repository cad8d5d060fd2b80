//! The outbox: every frame the agent owes the server (acks, results, bot states, log lines)
//! waits here, in order, until a transport takes it — at once while connected, after the next
//! `hello` while the server is unreachable (SPEC §4, offline autonomy).
//!
//! Bounded where it can be: log lines are capped by count and bytes and the *oldest* lines
//! go first when the cap is hit; acks, results and state transitions are never dropped (they
//! are few: a crash loop ends in `failed`). Frames a transport could not confirm come back to
//! the front with [`Outbox::requeue`], so nothing is lost on a broken connection. The server
//! treats repeats as no-ops: log lines by their `(bot, seq)` key, results by the command's
//! status (a terminal command takes the same outcome again unchanged), and state transitions
//! by their time — each bot's row remembers the agent's `at` of the newest report it applied
//! (`reported_at_us`), and a report not later than that, repeated or older, changes nothing
//! and raises no event or incident (`Store::report_bot_states`). So every report's `at` must
//! be this agent's clock at the transition, strictly increasing per bot
//! (`bots::actor`). This queue lives in memory; results and state transitions also have a
//! durable half that survives an agent restart (`journal`, `transitions`), log lines do not.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use botmox_contract::{logs::LogLine, protocol::AgentFrame};
use tokio::sync::Notify;
use uuid::Uuid;

/// Per-line overhead of the JSON encoding, for the frame size estimate.
const LINE_OVERHEAD: usize = 96;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_log_lines: usize,
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // 4 MiB of text keeps a long outage inside the agent's memory budget (SPEC §9).
        Self { max_log_lines: 20_000, max_log_bytes: 4 << 20 }
    }
}

#[derive(Debug)]
enum Item {
    Frame(AgentFrame),
    Log(Uuid, LogLine),
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Item>,
    log_lines: usize,
    log_bytes: usize,
}

pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    limits: Limits,
    dropped: AtomicU64,
}

impl Outbox {
    pub fn new(limits: Limits) -> Self {
        Self { inner: Mutex::default(), notify: Notify::new(), limits, dropped: AtomicU64::new(0) }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an ack, result or state (a `logs` frame is split into its lines).
    pub fn push(&self, frame: AgentFrame) {
        {
            let mut inner = self.inner();
            match frame {
                AgentFrame::Logs { bot_id, lines } => {
                    for line in lines {
                        self.push_log_locked(&mut inner, bot_id, line, false);
                    }
                }
                frame => inner.queue.push_back(Item::Frame(frame)),
            }
        }
        self.notify.notify_one();
    }

    /// Queues one log line of a bot.
    pub fn push_log(&self, bot_id: Uuid, line: LogLine) {
        {
            let mut inner = self.inner();
            self.push_log_locked(&mut inner, bot_id, line, false);
        }
        self.notify.notify_one();
    }

    fn push_log_locked(&self, inner: &mut Inner, bot_id: Uuid, line: LogLine, front: bool) {
        inner.log_lines += 1;
        inner.log_bytes += line.text.len();
        if front {
            inner.queue.push_front(Item::Log(bot_id, line));
        } else {
            inner.queue.push_back(Item::Log(bot_id, line));
        }
        while inner.log_lines > self.limits.max_log_lines || inner.log_bytes > self.limits.max_log_bytes {
            let Some(oldest) = inner.queue.iter().position(|item| matches!(item, Item::Log(..))) else { break };
            if let Some(Item::Log(_, line)) = inner.queue.remove(oldest) {
                inner.log_lines -= 1;
                inner.log_bytes -= line.text.len();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes up to `max_frames` frames to send, oldest first. Consecutive lines of one bot
    /// become one `logs` frame of at most `max_lines` lines and about `max_bytes` bytes.
    pub fn take(&self, max_frames: usize, max_lines: usize, max_bytes: usize) -> Vec<AgentFrame> {
        let mut inner = self.inner();
        let mut frames = Vec::new();
        while frames.len() < max_frames {
            match inner.queue.pop_front() {
                None => break,
                Some(Item::Frame(frame)) => frames.push(frame),
                Some(Item::Log(bot_id, line)) => {
                    let mut bytes = line.text.len() + LINE_OVERHEAD;
                    let mut lines = vec![line];
                    while lines.len() < max_lines.max(1) {
                        let same_bot = matches!(inner.queue.front(), Some(Item::Log(id, next))
                            if *id == bot_id && bytes + next.text.len() + LINE_OVERHEAD <= max_bytes);
                        if !same_bot {
                            break;
                        }
                        if let Some(Item::Log(_, next)) = inner.queue.pop_front() {
                            bytes += next.text.len() + LINE_OVERHEAD;
                            lines.push(next);
                        }
                    }
                    inner.log_lines -= lines.len();
                    inner.log_bytes -= lines.iter().map(|l| l.text.len()).sum::<usize>();
                    frames.push(AgentFrame::Logs { bot_id, lines });
                }
            }
        }
        frames
    }

    /// Puts frames that may not have reached the server back in front, in their order.
    pub fn requeue(&self, frames: Vec<AgentFrame>) {
        {
            let mut inner = self.inner();
            for frame in frames.into_iter().rev() {
                match frame {
                    AgentFrame::Logs { bot_id, lines } => {
                        for line in lines.into_iter().rev() {
                            self.push_log_locked(&mut inner, bot_id, line, true);
                        }
                    }
                    // Heartbeats and hellos are never worth resending.
                    AgentFrame::Heartbeat { .. } | AgentFrame::Hello { .. } => {}
                    frame => inner.queue.push_front(Item::Frame(frame)),
                }
            }
        }
        self.notify.notify_one();
    }

    pub fn is_empty(&self) -> bool {
        self.inner().queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.inner().queue.len()
    }

    /// Log lines dropped so far because the buffer was full.
    pub fn dropped_logs(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Resolves when something was queued since the last wait (a permit is kept, so a push
    /// between a `take` and the next wait is not missed).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use botmox_contract::{
        bots::BotState,
        logs::LogStream,
        protocol::{BotStateReport, CommandOutcome},
    };
    use chrono::Utc;

    use super::*;

    fn line(seq: u64, text: &str) -> LogLine {
        LogLine { seq, stream: LogStream::Stdout, time: Utc::now(), text: text.into() }
    }

    fn state(bot_id: Uuid, state: BotState) -> AgentFrame {
        AgentFrame::BotState(BotStateReport {
            bot_id,
            state,
            pid: None,
            started_at: None,
            exit_code: None,
            exit_signal: None,
            restart_count: 0,
            error: None,
            at: Utc::now(),
        })
    }

    fn seqs(frame: &AgentFrame) -> Vec<u64> {
        match frame {
            AgentFrame::Logs { lines, .. } => lines.iter().map(|l| l.seq).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn keeps_order_and_batches_lines_of_one_bot() {
        let outbox = Outbox::new(Limits::default());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        outbox.push_log(a, line(1, "a1"));
        outbox.push_log(a, line(2, "a2"));
        outbox.push(state(a, BotState::Crashed));
        outbox.push_log(a, line(3, "a3"));
        outbox.push_log(b, line(1, "b1"));
        let frames = outbox.take(100, 500, 1 << 20);
        assert_eq!(frames.len(), 4);
        assert_eq!(seqs(&frames[0]), [1, 2]);
        assert!(matches!(&frames[1], AgentFrame::BotState(r) if r.state == BotState::Crashed));
        assert_eq!(seqs(&frames[2]), [3]);
        assert!(matches!(&frames[3], AgentFrame::Logs { bot_id, .. } if *bot_id == b));
        assert!(outbox.is_empty());
    }

    #[test]
    fn batches_respect_line_and_byte_limits() {
        let outbox = Outbox::new(Limits::default());
        let bot = Uuid::now_v7();
        for seq in 1..=10 {
            outbox.push_log(bot, line(seq, &"x".repeat(100)));
        }
        let frames = outbox.take(100, 4, 1 << 20);
        assert_eq!(frames.iter().map(|f| seqs(f).len()).collect::<Vec<_>>(), [4, 4, 2]);
        for seq in 1..=10 {
            outbox.push_log(bot, line(seq, &"x".repeat(100)));
        }
        let frames = outbox.take(100, 500, 3 * (100 + LINE_OVERHEAD));
        assert!(frames.iter().all(|f| seqs(f).len() <= 3), "byte cap per frame");
        assert_eq!(frames.iter().map(|f| seqs(f).len()).sum::<usize>(), 10);
    }

    #[test]
    fn drops_the_oldest_lines_and_never_a_state() {
        let outbox = Outbox::new(Limits { max_log_lines: 3, max_log_bytes: 1 << 20 });
        let bot = Uuid::now_v7();
        outbox.push(state(bot, BotState::Running));
        for seq in 1..=5 {
            outbox.push_log(bot, line(seq, "l"));
        }
        outbox.push(state(bot, BotState::Crashed));
        assert_eq!(outbox.dropped_logs(), 2);
        let frames = outbox.take(100, 500, 1 << 20);
        assert!(matches!(&frames[0], AgentFrame::BotState(r) if r.state == BotState::Running));
        assert_eq!(seqs(&frames[1]), [3, 4, 5], "the newest lines survive");
        assert!(matches!(&frames[2], AgentFrame::BotState(r) if r.state == BotState::Crashed));
    }

    #[test]
    fn drops_by_bytes_too() {
        let outbox = Outbox::new(Limits { max_log_lines: 1000, max_log_bytes: 250 });
        let bot = Uuid::now_v7();
        for seq in 1..=5 {
            outbox.push_log(bot, line(seq, &"y".repeat(100)));
        }
        let frames = outbox.take(100, 500, 1 << 20);
        assert_eq!(seqs(&frames[0]), [4, 5]);
        assert_eq!(outbox.dropped_logs(), 3);
    }

    #[test]
    fn requeued_frames_go_first_in_their_order() {
        let outbox = Outbox::new(Limits::default());
        let bot = Uuid::now_v7();
        let command_id = Uuid::now_v7();
        outbox.push_log(bot, line(1, "one"));
        outbox.push(AgentFrame::Ack { command_id });
        let sent = outbox.take(100, 500, 1 << 20);
        outbox.push_log(bot, line(2, "two"));
        let result =
            CommandOutcome { command_id, ok: true, result: serde_json::Value::Null, error: None, superseded: false };
        outbox.push(AgentFrame::Result(result));
        outbox.requeue(sent);
        let frames = outbox.take(100, 500, 1 << 20);
        assert_eq!(frames.len(), 4);
        assert_eq!(seqs(&frames[0]), [1], "the requeued frames first");
        assert!(matches!(frames[1], AgentFrame::Ack { .. }));
        assert_eq!(seqs(&frames[2]), [2], "then what was queued meanwhile");
        assert!(matches!(frames[3], AgentFrame::Result(_)));
    }

    #[tokio::test]
    async fn a_push_before_the_wait_is_not_missed() {
        let outbox = Outbox::new(Limits::default());
        outbox.push(AgentFrame::Ack { command_id: Uuid::now_v7() });
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.notified()).await.ok();
        assert_eq!(outbox.len(), 1);
    }
}
