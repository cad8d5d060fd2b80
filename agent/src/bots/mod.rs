//! The bots of this host: one task per bot ([`actor`]), found by id here. [`Bots::recover`]
//! rebuilds them from the state file when the agent starts — re-adopting processes that still
//! run (same pid *and* same start time), cleaning up what a dead bot left in its process
//! group, restarting bots whose definition changed — before any command is taken, so that
//! no bot is ever started twice (on Unix, [`orphans::sweep`] first stops bot processes no
//! record tracks). [`Bots::snapshot`] is the truth sent in every `hello`.

pub mod actor;
pub mod logs;
#[cfg(unix)]
pub mod orphans;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use botmox_contract::{
    bots::{BotState, DesiredState},
    protocol::{BotRuntimeSpec, BotSnapshot},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use self::{
    actor::{Actor, Msg, Reply, Request, Startup},
    logs::LogSink,
};
use crate::{
    connection::buffer::Outbox,
    runner,
    state_file::{BotRecord, StateFile},
    supervise::Supervisor,
    transitions::Transitions,
};

/// What the rest of the agent may know about a bot without asking its task.
#[derive(Debug, Clone, Serialize)]
pub struct BotView {
    pub name: String,
    pub state: BotState,
    pub desired: DesiredState,
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub definition_hash: String,
    pub restart_count: u32,
    pub last_error: Option<String>,
}

/// What every bot task shares.
pub struct Shared {
    pub outbox: Arc<Outbox>,
    /// The durable half of the outbox for state reports: written before each is queued.
    pub transitions: Arc<Transitions>,
    pub state: Arc<StateFile>,
    pub run_dir: PathBuf,
    views: Mutex<HashMap<Uuid, BotView>>,
}

impl Shared {
    pub fn new(outbox: Arc<Outbox>, transitions: Arc<Transitions>, state: Arc<StateFile>, run_dir: PathBuf) -> Self {
        Self { outbox, transitions, state, run_dir, views: Mutex::default() }
    }

    pub fn views(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, BotView>> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Bots {
    shared: Arc<Shared>,
    inboxes: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Msg>>>,
}

impl Bots {
    /// Rebuilds the bots from the state file and starts their tasks.
    pub fn recover(shared: Arc<Shared>) -> Arc<Self> {
        let bots = Arc::new(Self { shared: shared.clone(), inboxes: Mutex::default() });
        // Nothing has reported yet: what is owed is what the previous run left.
        let mut owed: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        for report in shared.transitions.pending() {
            let newest = owed.entry(report.bot_id).or_insert(report.at);
            *newest = (*newest).max(report.at);
        }
        for (id, record) in shared.state.snapshot().bots {
            let (mut actor, startup) = bots.recover_one(&record);
            actor.report_after(record.last_report_at);
            if let Some(&newest) = owed.get(&id) {
                actor.reaffirm_after_startup(newest);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            bots.inboxes().insert(id, tx);
            // The view exists before the task runs, so the first `hello` has this bot.
            actor.publish_view();
            tokio::spawn(actor.run(rx, startup));
        }
        bots
    }

    fn recover_one(&self, record: &BotRecord) -> (Actor, Startup) {
        let id = record.spec.bot_id;
        let now = tokio::time::Instant::now();
        let logs = Arc::new(LogSink::new(id, record.log_seq, self.shared.outbox.clone(), self.shared.state.clone()));
        let sup = Supervisor::resume(record.spec.restart.clone(), record.state, record.restart_count, now);
        let mut actor = Actor::new(record.spec.clone(), record.desired, sup, self.shared.clone(), logs);
        // A stop was under way: finish it, whether or not the process is still there.
        let stopping = record.state == BotState::Stopping;
        let Some(process) = &record.process else {
            let should_run = record.desired == DesiredState::Running;
            let startup = match record.state {
                _ if stopping => Startup::FinishStop,
                BotState::Starting | BotState::Running if should_run => Startup::Resume,
                // Between an exit and its restart: the restart policy decides (a `crashed`
                // left so by a policy that restarts nothing stays so).
                BotState::Crashed | BotState::Exited | BotState::Backoff if should_run => Startup::ResumePolicy,
                _ => Startup::Nothing,
            };
            return (actor, startup);
        };
        if let Some((adopted, outputs)) = runner::adopt(process.pid, process.start_ticks, id, &self.shared.run_dir) {
            tracing::info!(bot_id = %id, pid = process.pid, "re-adopted a running bot");
            actor.adopt(adopted, outputs, process);
            // A live process of a bot whose intent is `stopped` is stopped.
            if stopping || record.desired == DesiredState::Stopped {
                return (actor, Startup::FinishStop);
            }
            let definition_changed = process.definition_hash != record.spec.definition_hash;
            return (actor, Startup::Adopted { definition_changed });
        }
        if stopping {
            if !runner::is_alive(process.pid, None) {
                runner::kill_orphan_group(process.pid);
            }
            return (actor, Startup::FinishStop);
        }
        // Gone (or its pid now belongs to another process, which is left alone). Whatever
        // the dead bot left in its group goes with it — unless the pid lives on as someone
        // else's process, whose group that would be.
        if !runner::is_alive(process.pid, None) {
            runner::kill_orphan_group(process.pid);
        }
        tracing::info!(bot_id = %id, pid = process.pid, "a bot's process ended while the agent was away");
        let startup = if record.desired == DesiredState::Running { Startup::DiedWhileAway } else { Startup::Nothing };
        (actor, startup)
    }

    fn inboxes(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::UnboundedSender<Msg>>> {
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `request` to the bot's task (creating the bot from `spec` if it is new here) and
    /// returns where its reply will come. Requests to one bot run in the order sent.
    pub fn request(
        &self,
        bot_id: Uuid,
        spec: Option<&BotRuntimeSpec>,
        request: Request,
        cancel: Option<watch::Receiver<bool>>,
    ) -> Result<oneshot::Receiver<Reply>, String> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg { request, cancel, reply };
        let mut inboxes = self.inboxes();
        let msg = match inboxes.get(&bot_id) {
            Some(inbox) => match inbox.send(msg) {
                Ok(()) => return Ok(answer),
                // Its task ended (the bot was removed): a new bot of the same id starts anew.
                Err(mpsc::error::SendError(msg)) => msg,
            },
            None => msg,
        };
        let Some(spec) = spec else {
            return Err(format!("bot {bot_id} is not on this agent"));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.state.update(|doc| {
            let log_seq = doc.bots.get(&bot_id).map_or(1, |r| r.log_seq);
            doc.bots.insert(
                bot_id,
                BotRecord {
                    spec: spec.clone(),
                    desired: DesiredState::Stopped,
                    state: BotState::Pending,
                    process: None,
                    restart_count: 0,
                    last_error: None,
                    exit_code: None,
                    exit_signal: None,
                    log_seq,
                    last_report_at: None,
                },
            );
        });
        let log_seq = self.shared.state.bot(bot_id).map_or(1, |r| r.log_seq);
        let logs = Arc::new(LogSink::new(bot_id, log_seq, self.shared.outbox.clone(), self.shared.state.clone()));
        let sup = Supervisor::new(spec.restart.clone());
        let actor = Actor::new(spec.clone(), DesiredState::Stopped, sup, self.shared.clone(), logs);
        tokio::spawn(actor.run(rx, Startup::Nothing));
        let _ = tx.send(msg);
        inboxes.insert(bot_id, tx);
        Ok(answer)
    }

    /// The durable transitions the bots' reports go through.
    pub fn transitions(&self) -> &Transitions {
        &self.shared.transitions
    }

    /// Whether the bot is known here.
    pub fn contains(&self, bot_id: Uuid) -> bool {
        self.inboxes().get(&bot_id).is_some_and(|inbox| !inbox.is_closed())
    }

    pub fn ids(&self) -> Vec<Uuid> {
        self.inboxes().iter().filter(|(_, inbox)| !inbox.is_closed()).map(|(id, _)| *id).collect()
    }

    /// The full truth about every bot, for `hello`.
    pub fn snapshot(&self) -> Vec<BotSnapshot> {
        self.shared
            .views()
            .iter()
            .map(|(id, view)| BotSnapshot {
                bot_id: *id,
                state: view.state,
                pid: view.pid,
                started_at: view.started_at,
                definition_hash: view.definition_hash.clone(),
            })
            .collect()
    }

    pub fn views(&self) -> Vec<(Uuid, BotView)> {
        let mut views: Vec<(Uuid, BotView)> = self.shared.views().iter().map(|(id, v)| (*id, v.clone())).collect();
        views.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        views
    }

    pub fn running_count(&self) -> u32 {
        self.shared.views().values().filter(|v| v.pid.is_some()).count() as u32
    }

    /// Stops every bot (the agent was revoked: nobody may control them any more).
    pub async fn stop_all(&self) -> usize {
        let mut answers = Vec::new();
        for id in self.ids() {
            if let Ok(answer) = self.request(id, None, Request::Stop, None) {
                answers.push(answer);
            }
        }
        let count = answers.len();
        for answer in answers {
            let _ = answer.await;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use botmox_contract::protocol::{AgentFrame, BotStateReport};
    use chrono::Utc;

    use super::*;
    use crate::{connection::buffer::Limits, state_file::tests_support::spec};

    /// A bot left `crashed` with nothing to do at start-up (its state file says so).
    fn crashed(id: Uuid) -> BotRecord {
        BotRecord {
            spec: spec(id),
            desired: DesiredState::Running,
            state: BotState::Crashed,
            process: None,
            restart_count: 1,
            last_error: None,
            exit_code: Some(3),
            exit_signal: None,
            log_seq: 1,
            last_report_at: None,
        }
    }

    /// The previous run wrote `backoff` down and died before its state file said so: the bot is
    /// recovered `crashed`, and says so after the replayed `backoff`, so the server does not
    /// stay on it — at a later time than the replayed one even if the clock stepped back (the
    /// server takes a report not later than the newest applied for a repeat). A bot with
    /// nothing owed reports nothing.
    #[tokio::test]
    async fn a_bot_with_owed_transitions_reports_its_state_after_them() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (owing, quiet) = (Uuid::now_v7(), Uuid::now_v7());
        let state = Arc::new(StateFile::open(&dir.path().join("state.json"))?);
        state.update(|doc| {
            doc.bots.extend([(owing, crashed(owing)), (quiet, crashed(quiet))]);
        });
        let transitions = Arc::new(Transitions::open(&dir.path().join("transitions.jsonl")));
        let backoff = BotStateReport {
            bot_id: owing,
            state: BotState::Backoff,
            pid: None,
            started_at: None,
            exit_code: None,
            exit_signal: None,
            restart_count: 1,
            error: None,
            // Written down an hour "later" than now: this run's clock is behind the last one's.
            at: Utc::now() + chrono::Duration::hours(1),
        };
        transitions.record(&backoff);
        let outbox = Arc::new(Outbox::new(Limits::default()));
        let shared = Arc::new(Shared::new(outbox.clone(), transitions.clone(), state, dir.path().join("run")));
        let bots = Bots::recover(shared);
        // A request is taken after the start-up: once answered, both bots have started up.
        for id in [owing, quiet] {
            let answer =
                bots.request(id, None, Request::Sync { spec: Box::new(spec(id)) }, None).map_err(anyhow::Error::msg)?;
            tokio::time::timeout(Duration::from_secs(10), answer).await??.map_err(anyhow::Error::msg)?;
        }
        let reported: Vec<BotStateReport> = outbox
            .take(100, 100, 1 << 20)
            .into_iter()
            .filter_map(|frame| match frame {
                AgentFrame::BotState(report) => Some(report),
                _ => None,
            })
            .collect();
        let states: Vec<(Uuid, BotState)> = reported.iter().map(|r| (r.bot_id, r.state)).collect();
        assert_eq!(states, [(owing, BotState::Crashed)]);
        assert!(reported[0].at > backoff.at, "later than the replayed transition: {reported:?}");
        let owed: Vec<BotState> = transitions.pending().iter().map(|r| r.state).collect();
        assert_eq!(owed, [BotState::Backoff, BotState::Crashed], "written down like any transition");
        Ok(())
    }

    /// Every `bot_state` the bots reported until one satisfies `done` (bounded).
    #[cfg(unix)]
    async fn reports_until(outbox: &Outbox, done: impl Fn(&BotStateReport) -> bool) -> Vec<BotStateReport> {
        let mut reported = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !reported.iter().any(&done) {
            let frames = outbox.take(100, 100, 1 << 20);
            if frames.is_empty() {
                let waited = tokio::time::timeout_at(deadline, outbox.notified()).await;
                assert!(waited.is_ok(), "not reported in time; so far: {reported:?}");
            }
            reported.extend(frames.into_iter().filter_map(|frame| match frame {
                AgentFrame::BotState(report) => Some(report),
                _ => None,
            }));
        }
        reported
    }

    /// An agent killed between a crash and the restart its policy asks for: the bot recovered
    /// `crashed` (no process) goes through backoff and runs again, counting the restart; one
    /// recovered in `backoff` that needs secret values (gone with the previous run) waits
    /// `crashed` for the server's start instead.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_bot_recovered_between_a_crash_and_its_restart_is_restarted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (plain, secretive) = (Uuid::now_v7(), Uuid::now_v7());
        let mut sleeper = spec(plain);
        sleeper.exec.program = "sleep".into();
        sleeper.exec.args = vec!["30".into()];
        sleeper.exec.secret_env.clear();
        sleeper.restart.backoff_initial_ms = 10;
        let state = Arc::new(StateFile::open(&dir.path().join("state.json"))?);
        state.update(|doc| {
            // Its last report was an hour "later" than now: this run's clock stepped back.
            let last_report_at = Some(Utc::now() + chrono::Duration::hours(1));
            doc.bots.insert(plain, BotRecord { spec: sleeper.clone(), last_report_at, ..crashed(plain) });
            doc.bots.insert(secretive, BotRecord { state: BotState::Backoff, ..crashed(secretive) });
        });
        let transitions = Arc::new(Transitions::open(&dir.path().join("transitions.jsonl")));
        let outbox = Arc::new(Outbox::new(Limits::default()));
        let shared = Arc::new(Shared::new(outbox.clone(), transitions, state, dir.path().join("run")));
        let bots = Bots::recover(shared);

        let reported = reports_until(&outbox, |r| r.bot_id == plain && r.state == BotState::Running).await;
        let of = |id: Uuid| -> Vec<(BotState, u32)> {
            reported.iter().filter(|r| r.bot_id == id).map(|r| (r.state, r.restart_count)).collect()
        };
        assert_eq!(of(plain), [(BotState::Backoff, 2), (BotState::Starting, 2), (BotState::Running, 2)]);
        let ahead = Utc::now() + chrono::Duration::minutes(59);
        assert!(
            reported.iter().filter(|r| r.bot_id == plain).all(|r| r.at > ahead),
            "every report is later than the previous run's newest, whatever the clock says: {reported:?}"
        );
        let waiting = reported.iter().find(|r| r.bot_id == secretive).expect("the secretive bot reports");
        assert_eq!((waiting.state, waiting.restart_count), (BotState::Crashed, 1), "{waiting:?}");
        assert!(waiting.error.as_deref().is_some_and(|e| e.contains("waiting for a start from the server")));
        let view = bots.views().into_iter().find(|(id, _)| *id == secretive).map(|(_, view)| view);
        assert_eq!(view.map(|v| (v.state, v.pid)), Some((BotState::Crashed, None)), "not started without its secrets");

        let stop = bots.request(plain, None, Request::Stop, None).map_err(anyhow::Error::msg)?;
        tokio::time::timeout(Duration::from_secs(10), stop).await??.map_err(anyhow::Error::msg)?;
        Ok(())
    }
}
