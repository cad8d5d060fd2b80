//! The durable outbox of bot-state transitions (`transitions.jsonl` in the agent dir): every
//! `bot_state` report is written here *before* it is queued for sending, and stays until the
//! server confirmed the frame that carried it — the same confirmation that marks a result
//! `confirmed` in the journal (`Link::confirmed`: a pong on the WebSocket, the answer to a
//! long-poll POST). At start-up the agent queues what is still here, in order, before anything
//! new, so a transition is not lost to an agent kill: a `crashed` → `backoff` → `running` that
//! happened while the server was unreachable still reaches it (incident rules, restart count,
//! exit code, the bot's event history), not just the final state in the next `hello`. The
//! server applies reports in arrival order, so these older ones land after the `hello`: each
//! bot that had some owed reports its state once more after its start-up
//! (`Actor::reaffirm_after_startup`), and the last word the server gets is the state now.
//!
//! **Why not the journal.** The journal is the durable outbox of *results* because it must
//! remember every command's outcome anyway (a redelivered command is answered from it, and its
//! sequence marks refuse stale commands); its entries are keyed by command id, updated in
//! place, and outlive their confirmation. Transitions are a plain queue: nothing keys them,
//! nothing needs them once confirmed, and they are bounded differently. One file with both
//! would tie two retention rules into one compaction; two small files each say one thing.
//!
//! **Format.** JSON lines, appended: `{"kind":"report","n":7,"report":{…}}` for a transition
//! (`n` numbers it within this file), `{"kind":"confirmed","n":[7,8]}` once the server has it,
//! `{"kind":"dropped","n":[3]}` when the bound pushed it out. Written with the journal's
//! durability (a plain write, no fsync: the page cache survives a killed agent; a host crash
//! is what the `hello` snapshot covers). The file is truncated when nothing is owed and
//! rewritten (atomically) when it holds far more lines than transitions owed.
//!
//! **Bad files.** A torn last line (the agent was killed mid-append) is skipped; any other
//! line that does not parse makes the file *corrupt*: it is moved aside (`….corrupt`) with a
//! logged error, and the transitions that did parse are kept. Opening never fails and never
//! stops the agent: the worst case is the state the next `hello` carries, as before.

use std::{
    collections::VecDeque,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

use botmox_contract::protocol::BotStateReport;
use serde::{Deserialize, Serialize};

/// Transitions kept at most; past it the oldest go first, counted and logged. A transition is
/// ~300 bytes, so this is ~3 MB on disk and in memory at worst (SPEC §9 budgets the agent's
/// memory). It is reached only by a long outage with bots in a restart loop (four transitions
/// a restart; `always` with a high `max_restarts`): the oldest of those are the least useful —
/// the newest ones and the `hello` snapshot carry the current truth, and incident rules act on
/// recent crashes — while an unbounded file would grow with the length of the outage.
pub const MAX_PENDING: usize = 10_000;
/// Lines beyond twice the transitions owed that trigger a rewrite of the file.
const COMPACT_SLACK: usize = 1_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Report { n: u64, report: BotStateReport },
    Confirmed { n: Vec<u64> },
    Dropped { n: Vec<u64> },
}

struct Inner {
    /// Transitions owed to the server, oldest first, with their number in the file.
    pending: VecDeque<(u64, BotStateReport)>,
    next_n: u64,
    lines_in_file: usize,
    dropped: u64,
}

pub struct Transitions {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl Transitions {
    /// Reads what the previous run left owed. Never fails: an unreadable or corrupt file is
    /// moved aside with a logged error (see the module notes).
    pub fn open(path: &Path) -> Self {
        let (pending, lines_in_file) = load(path);
        let next_n = pending.back().map_or(0, |(n, _)| n + 1);
        let this =
            Self { path: path.to_path_buf(), inner: Mutex::new(Inner { pending, next_n, lines_in_file, dropped: 0 }) };
        // Start from a clean file: no torn fragment for the next append to join, no settled
        // lines carried along.
        let mut inner = this.inner();
        if inner.lines_in_file != inner.pending.len() {
            this.rewrite(&mut inner);
        }
        drop(inner);
        this
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a transition before it is queued for sending. A write that fails is logged; the
    /// transition is still owed (in memory, and in the outbox).
    pub fn record(&self, report: &BotStateReport) {
        let mut inner = self.inner();
        let mut lines = Vec::with_capacity(2);
        if inner.pending.len() >= MAX_PENDING {
            if let Some((old, _)) = inner.pending.pop_front() {
                inner.dropped += 1;
                tracing::warn!(
                    dropped_total = inner.dropped,
                    bound = MAX_PENDING,
                    "too many bot-state transitions wait for the server: the oldest is no longer kept on disk"
                );
                lines.push(Line::Dropped { n: vec![old] });
            }
        }
        let n = inner.next_n;
        inner.next_n += 1;
        inner.pending.push_back((n, report.clone()));
        lines.push(Line::Report { n, report: report.clone() });
        self.write(&mut inner, &lines);
    }

    /// The server confirmed the frames carrying these reports: they are no longer owed.
    /// Reports not owed (never recorded, dropped, or confirmed already) are skipped.
    pub fn confirmed<'a>(&self, reports: impl IntoIterator<Item = &'a BotStateReport>) {
        let mut inner = self.inner();
        let mut settled = Vec::new();
        for report in reports {
            // Sent in order, confirmed in order: the match is almost always at the front.
            if let Some(at) = inner.pending.iter().position(|(_, owed)| owed == report) {
                if let Some((n, _)) = inner.pending.remove(at) {
                    settled.push(n);
                }
            }
        }
        if !settled.is_empty() {
            self.write(&mut inner, &[Line::Confirmed { n: settled }]);
        }
    }

    /// What is owed, oldest first (at start-up: to be queued again).
    pub fn pending(&self) -> Vec<BotStateReport> {
        self.inner().pending.iter().map(|(_, report)| report.clone()).collect()
    }

    /// Transitions dropped by the bound since the agent started.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.inner().dropped
    }

    /// Appends `lines` — or, when nothing is owed or the file holds far more lines than
    /// transitions owed, rewrites it with what is owed instead (the same content, shorter).
    fn write(&self, inner: &mut Inner, lines: &[Line]) {
        if inner.pending.is_empty() || inner.lines_in_file + lines.len() > 2 * inner.pending.len() + COMPACT_SLACK {
            self.rewrite(inner);
        } else {
            self.append(inner, lines);
        }
    }

    fn append(&self, inner: &mut Inner, lines: &[Line]) {
        let mut text = String::new();
        for line in lines {
            match serde_json::to_string(line) {
                Ok(json) => {
                    text.push_str(&json);
                    text.push('\n');
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a bot-state transition"),
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&self.path).and_then(|mut file| file.write_all(text.as_bytes())) {
            Ok(()) => inner.lines_in_file += lines.len(),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the bot-state transitions")
            }
        }
    }

    /// Rewrites the file with the transitions owed (empty when none), atomically.
    fn rewrite(&self, inner: &mut Inner) {
        let mut text = String::new();
        for (n, report) in &inner.pending {
            let line = Line::Report { n: *n, report: report.clone() };
            if let Ok(json) = serde_json::to_string(&line) {
                text.push_str(&json);
                text.push('\n');
            }
        }
        match crate::config::write_private(&self.path, text.as_bytes()) {
            Ok(()) => inner.lines_in_file = inner.pending.len(),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the bot-state transitions")
            }
        }
    }
}

/// The transitions owed according to the file at `path`, and how many lines it holds.
fn load(path: &Path) -> (VecDeque<(u64, BotStateReport)>, usize) {
    let mut pending: VecDeque<(u64, BotStateReport)> = VecDeque::new();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (pending, 0),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the bot-state transitions");
            move_aside(path);
            return (pending, 0);
        }
    };
    let torn_tail = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let mut corrupt = 0usize;
    for (index, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Report { n, report }) => pending.push_back((n, report)),
            Ok(Line::Confirmed { n } | Line::Dropped { n }) => pending.retain(|(owed, _)| !n.contains(owed)),
            // The agent was killed while it appended this line: it was never owed.
            Err(_) if torn_tail && index + 1 == lines.len() => {
                tracing::info!(path = %path.display(), "skipping a torn last line of the bot-state transitions");
            }
            Err(_) => corrupt += 1,
        }
    }
    if corrupt > 0 {
        tracing::error!(
            path = %path.display(), corrupt_lines = corrupt, kept = pending.len(),
            "the bot-state transitions file is corrupt: moved aside, the readable transitions are kept"
        );
        move_aside(path);
        return (pending, 0);
    }
    (pending, lines.len())
}

/// Renames `path` to `path.corrupt` (replacing an older one), for a person to look at.
fn move_aside(path: &Path) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    if let Err(e) = std::fs::rename(path, &aside) {
        tracing::error!(path = %path.display(), error = %e, "cannot move the bad bot-state transitions aside");
    }
}

#[cfg(test)]
mod tests {
    use botmox_contract::bots::BotState;
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn report(bot_id: Uuid, state: BotState, restart_count: u32) -> BotStateReport {
        BotStateReport {
            bot_id,
            state,
            pid: None,
            started_at: None,
            exit_code: (state == BotState::Crashed).then_some(3),
            exit_signal: None,
            restart_count,
            error: None,
            at: Utc::now(),
        }
    }

    fn crash_and_restart(bot: Uuid) -> Vec<BotStateReport> {
        [BotState::Crashed, BotState::Backoff, BotState::Starting, BotState::Running]
            .into_iter()
            .map(|state| report(bot, state, 1))
            .collect()
    }

    /// A temp dir and where the transitions file goes in it.
    fn fresh() -> std::io::Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("transitions.jsonl");
        Ok((dir, path))
    }

    fn lines(path: &Path) -> std::io::Result<usize> {
        Ok(std::fs::read_to_string(path)?.lines().count())
    }

    #[test]
    fn transitions_survive_a_restart_in_order_until_confirmed() -> std::io::Result<()> {
        let (_dir, path) = fresh()?;
        let bot = Uuid::now_v7();
        let written = crash_and_restart(bot);
        {
            let transitions = Transitions::open(&path);
            for report in &written {
                transitions.record(report);
            }
        }
        let reopened = Transitions::open(&path);
        assert_eq!(reopened.pending(), written, "replayed in the order written, values intact");

        reopened.confirmed(&written[..2]);
        assert_eq!(Transitions::open(&path).pending(), written[2..], "confirmation survives a restart");
        // Confirming again, or something never recorded, changes nothing.
        let before = std::fs::read(&path)?;
        reopened.confirmed(&written[..1]);
        reopened.confirmed(&[report(bot, BotState::Stopped, 0)]);
        assert_eq!(std::fs::read(&path)?, before);

        reopened.confirmed(&written[2..]);
        assert!(reopened.pending().is_empty());
        assert_eq!(lines(&path)?, 0, "nothing owed: the file is emptied");
        assert!(Transitions::open(&path).pending().is_empty());
        Ok(())
    }

    #[test]
    fn confirmations_out_of_order_settle_exactly_those() -> std::io::Result<()> {
        let (_dir, path) = fresh()?;
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let transitions = Transitions::open(&path);
        let written: Vec<BotStateReport> = crash_and_restart(a).into_iter().chain(crash_and_restart(b)).collect();
        for report in &written {
            transitions.record(report);
        }
        transitions.confirmed([&written[5], &written[1]]);
        let left: Vec<BotStateReport> =
            written.iter().enumerate().filter(|(i, _)| ![1, 5].contains(i)).map(|(_, r)| r.clone()).collect();
        assert_eq!(transitions.pending(), left);
        assert_eq!(Transitions::open(&path).pending(), left);
        Ok(())
    }

    #[test]
    fn the_file_is_compacted_while_transitions_stay_owed() -> std::io::Result<()> {
        let (_dir, path) = fresh()?;
        let transitions = Transitions::open(&path);
        let bot = Uuid::now_v7();
        let owed = report(bot, BotState::Running, 0);
        transitions.record(&owed);
        // A long connected stretch: each transition confirmed soon after it was written, while
        // the first one stays owed (so the file is never simply emptied).
        for n in 0..3 * COMPACT_SLACK {
            let report = report(bot, BotState::Running, n as u32 + 1);
            transitions.record(&report);
            transitions.confirmed([&report]);
        }
        assert!(lines(&path)? <= 2 + COMPACT_SLACK + 1, "bounded: {} lines", lines(&path)?);
        assert_eq!(Transitions::open(&path).pending(), [owed]);
        Ok(())
    }

    #[test]
    fn the_oldest_are_dropped_past_the_bound_and_counted() -> std::io::Result<()> {
        let (_dir, path) = fresh()?;
        let transitions = Transitions::open(&path);
        let bot = Uuid::now_v7();
        let written: Vec<BotStateReport> =
            (0..MAX_PENDING + 5).map(|n| report(bot, BotState::Backoff, n as u32)).collect();
        for report in &written {
            transitions.record(report);
        }
        assert_eq!(transitions.dropped(), 5);
        let reopened = Transitions::open(&path).pending();
        assert_eq!(reopened.len(), MAX_PENDING);
        assert_eq!(reopened.first(), written.get(5), "the oldest went first");
        assert_eq!(reopened.last(), written.last());
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_not_joined_by_the_next_write() -> std::io::Result<()> {
        let (dir, path) = fresh()?;
        let bot = Uuid::now_v7();
        let first = report(bot, BotState::Crashed, 1);
        Transitions::open(&path).record(&first);
        std::fs::OpenOptions::new().append(true).open(&path)?.write_all(b"{\"kind\":\"report\",\"n\":1,\"rep")?;

        let reopened = Transitions::open(&path);
        assert_eq!(reopened.pending(), std::slice::from_ref(&first));
        let second = report(bot, BotState::Running, 1);
        reopened.record(&second);
        assert_eq!(Transitions::open(&path).pending(), [first, second], "the next line is whole");
        assert!(!dir.path().join("transitions.jsonl.corrupt").exists(), "a torn tail is not corruption");
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_its_readable_transitions_kept() -> std::io::Result<()> {
        let (dir, path) = fresh()?;
        let bot = Uuid::now_v7();
        let (first, second) = (report(bot, BotState::Crashed, 1), report(bot, BotState::Running, 1));
        {
            let transitions = Transitions::open(&path);
            transitions.record(&first);
        }
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"\xff\xfe not json at all\n{\"kind\":\"report\",\"n\":9}\n")?;
        drop(file);
        Transitions::open(&path).record(&second);

        let aside = dir.path().join("transitions.jsonl.corrupt");
        assert!(std::fs::read(&aside)?.windows(3).any(|w| w == b"not"), "the bad file is kept for a person");
        let reopened = Transitions::open(&path);
        assert_eq!(reopened.pending(), [first, second], "the readable ones are kept; the file is clean again");
        assert!(!std::fs::read_to_string(&path)?.contains("not json"));

        // A file that is not even text does not stop the agent, nor does a disk that refuses.
        std::fs::write(&path, [0u8, 159, 146, 150])?;
        assert!(Transitions::open(&path).pending().is_empty());
        let nowhere = Transitions::open(&dir.path().join("missing").join("transitions.jsonl"));
        nowhere.record(&report(bot, BotState::Running, 0));
        assert_eq!(nowhere.pending().len(), 1, "kept in memory when the disk refuses");
        Ok(())
    }
}
