//! One bot's task: it owns the bot's [`Supervisor`], its process and its in-memory secrets,
//! executes the requests sent to it one at a time in arrival order (start, stop, restart,
//! sync, remove), watches the process, restarts it when the supervisor says so, and reports
//! every transition (written to the durable [`crate::transitions`], then queued in the outbox
//! as `bot_state`), keeping the state file and the shared view (snapshots, `status`) current.
//!
//! Bots run independently: a stop waiting out one bot's grace period never delays another.

use std::{collections::BTreeMap, sync::Arc};

use botmox_contract::{
    bots::{BotState, DesiredState},
    protocol::{AgentFrame, BotRuntimeSpec, BotStateReport},
};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use uuid::Uuid;

use super::{logs::LogSink, BotView, Shared};
use crate::{
    runner::{self, capture, Process, SpawnError, SpawnRequest},
    state_file::ProcessRecord,
    supervise::{Exit, Supervisor, Transition},
};

/// What a request answers: the command's result, or why it failed.
pub type Reply = Result<serde_json::Value, String>;

#[derive(Debug)]
pub enum Request {
    Start {
        spec: Box<BotRuntimeSpec>,
        secrets: BTreeMap<String, String>,
    },
    Restart {
        spec: Box<BotRuntimeSpec>,
        secrets: BTreeMap<String, String>,
    },
    Stop,
    Sync {
        spec: Box<BotRuntimeSpec>,
    },
    /// Stop and forget; nothing more is reported about the bot.
    Remove,
}

pub struct Msg {
    pub request: Request,
    /// Set when the command was cancelled before the bot got to it.
    pub cancel: Option<watch::Receiver<bool>>,
    pub reply: oneshot::Sender<Reply>,
}

/// What the actor does first, from what the previous agent left (see `Bots::recover`).
pub enum Startup {
    Nothing,
    /// A process of ours still runs and was adopted; restart it if its definition changed.
    Adopted {
        definition_changed: bool,
    },
    /// The bot should run but its process is gone: it died while the agent was away.
    DiedWhileAway,
    /// The bot was starting (or running, its process not recorded) when the agent went away.
    Resume,
    /// The bot had exited (`crashed`, `exited`) or waited in `backoff` when the agent went
    /// away, and should run: its restart policy takes up where it was (backoff, then start).
    ResumePolicy,
    /// A stop (or the stop half of a restart) was under way when the agent went away, or a
    /// process runs that the bot's intent says must not: finish stopping it (the process, if
    /// adopted, is signalled again), then the desired state decides.
    FinishStop,
}

struct Running {
    process: Process,
    pid: u32,
    started_at: DateTime<Utc>,
    start_ticks: Option<u64>,
    definition_hash: String,
}

pub struct Actor {
    id: Uuid,
    spec: BotRuntimeSpec,
    /// Secret name → value: in memory only, never on disk or in a log.
    secrets: BTreeMap<String, String>,
    desired: DesiredState,
    sup: Supervisor,
    running: Option<Running>,
    last_exit: Option<Exit>,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
    /// Report the state once more after the start-up (see [`Actor::reaffirm_after_startup`]).
    reaffirm: bool,
    /// The time of this bot's last report: the next one is later (see [`Actor::report_with`]).
    last_at: Option<DateTime<Utc>>,
}

impl Actor {
    pub fn new(
        spec: BotRuntimeSpec,
        desired: DesiredState,
        sup: Supervisor,
        shared: Arc<Shared>,
        logs: Arc<LogSink>,
    ) -> Self {
        Self {
            id: spec.bot_id,
            spec,
            secrets: BTreeMap::new(),
            desired,
            sup,
            running: None,
            last_exit: None,
            shared,
            logs,
            reaffirm: false,
            last_at: None,
        }
    }

    /// The previous run left transitions of this bot that the server never confirmed; they are
    /// sent before anything this run reports. If the last of them is not the state the bot is
    /// recovered in and the start-up reports nothing new (an agent killed after writing a
    /// transition down but before the state file), the server would be left on it: so, once
    /// started up, the bot reports its state once more, and the last word is the truth.
    /// `newest` is the time of the newest of them: whatever this run reports is later.
    pub fn reaffirm_after_startup(&mut self, newest: DateTime<Utc>) {
        self.reaffirm = true;
        self.last_at = self.last_at.max(Some(newest));
    }

    /// Whatever this run reports is later than `at` (the previous run's newest report, from
    /// the state file), even if the host's clock stepped back across the restart.
    pub fn report_after(&mut self, at: Option<DateTime<Utc>>) {
        self.last_at = self.last_at.max(at);
    }

    /// Takes over a process a previous agent left running (already checked to be ours).
    pub fn adopt(
        &mut self,
        process: Process,
        outputs: Vec<(botmox_contract::logs::LogStream, capture::Output)>,
        record: &ProcessRecord,
    ) {
        let captured = !outputs.is_empty();
        self.pump(outputs);
        self.running = Some(Running {
            pid: process.pid(),
            process,
            started_at: record.started_at,
            start_ticks: record.start_ticks,
            definition_hash: record.definition_hash.clone(),
        });
        let note = if captured {
            format!("the agent restarted and re-adopted this bot (pid {}); its output is captured again", record.pid)
        } else {
            format!(
                "the agent restarted and re-adopted this bot (pid {}); its output cannot be captured until it restarts",
                record.pid
            )
        };
        self.logs.note(&note);
        self.publish_view();
    }

    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Msg>, startup: Startup) {
        self.startup(startup).await;
        if std::mem::take(&mut self.reaffirm) {
            self.report(self.sup.current());
        }
        loop {
            let deadline = self.sup.deadline();
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(msg) => {
                        if self.handle(msg).await {
                            break;
                        }
                    }
                    // The agent is exiting: the process keeps running, to be re-adopted.
                    None => break,
                },
                exit = wait_running(&mut self.running) => self.on_exit(exit),
                () = sleep_until(deadline) => self.on_tick().await,
            }
        }
    }

    async fn startup(&mut self, startup: Startup) {
        match startup {
            Startup::Nothing => {}
            Startup::Adopted { definition_changed: false } => {}
            Startup::Adopted { definition_changed: true } => {
                self.logs.note("its definition changed while the agent was away: restarting it with the new one");
                self.stop_process().await;
                if self.desired == DesiredState::Running {
                    let _ = self.start_fresh().await;
                }
            }
            Startup::DiedWhileAway => {
                self.logs.note("the bot's process ended while the agent was away");
                for transition in self.sup.exited(Exit::Unknown, Instant::now()) {
                    self.report(transition);
                }
            }
            Startup::Resume => {
                let _ = self.start_fresh().await;
            }
            Startup::ResumePolicy => self.resume_policy(),
            Startup::FinishStop => {
                self.logs.note("a stop was under way when the agent went away: finishing it");
                if self.running.is_some() {
                    self.stop_process().await;
                } else {
                    let transition = self.sup.stopped(None);
                    self.report(transition);
                }
                if self.desired == DesiredState::Running {
                    let _ = self.start_fresh().await;
                }
            }
        }
    }

    /// Takes the restart policy up where the previous run left it (`Startup::ResumePolicy`).
    /// Secret values lived in that run's memory only: a bot that needs them cannot be started
    /// by the agent alone, so it waits `crashed` for a start from the server (which sends them).
    fn resume_policy(&mut self) {
        if let Err(missing @ SpawnError::MissingSecret(_)) = runner::environment(&self.spec.exec, &self.secrets) {
            if self.sup.state() != BotState::Crashed {
                let transition = self.sup.blocked(missing.to_string());
                self.report(transition);
            }
            return;
        }
        if let Some(transition) = self.sup.resume_policy(Instant::now()) {
            self.logs.note(
                "the agent restarted between an exit of this bot and its restart: restarting it as its policy says",
            );
            self.report(transition);
        } else if self.sup.state() == BotState::Backoff {
            self.logs
                .note("the agent restarted while this bot waited to be restarted: restarting it after its backoff");
        }
    }

    /// Executes one request; `true` when the bot is removed (the task ends).
    async fn handle(&mut self, msg: Msg) -> bool {
        if msg.cancel.as_ref().is_some_and(|c| *c.borrow()) {
            let _ = msg.reply.send(Err("cancelled before it ran".into()));
            return false;
        }
        let removed = matches!(msg.request, Request::Remove);
        let reply = match msg.request {
            Request::Start { spec, secrets } => self.start(*spec, secrets).await,
            Request::Restart { spec, secrets } => self.restart(*spec, secrets).await,
            Request::Stop => Ok(self.stop().await),
            Request::Sync { spec } => self.sync(*spec).await,
            Request::Remove => Ok(self.remove().await),
        };
        let _ = msg.reply.send(reply);
        removed
    }

    async fn start(&mut self, spec: BotRuntimeSpec, secrets: BTreeMap<String, String>) -> Reply {
        crate::logging::register_secrets(secrets.values());
        self.logs.set_secrets(secrets.values());
        self.secrets = secrets;
        self.set_spec(spec);
        self.set_desired(DesiredState::Running);
        if let Some(running) = &self.running {
            if running.definition_hash == self.spec.definition_hash {
                let pid = running.pid;
                // The server may believe otherwise (a report it lost): say the truth again.
                self.report(self.sup.current());
                return Ok(json!({ "pid": pid, "already_running": true }));
            }
            self.logs.note("started with a changed definition: restarting it with the new one");
            self.stop_process().await;
        }
        self.start_fresh().await
    }

    async fn restart(&mut self, spec: BotRuntimeSpec, secrets: BTreeMap<String, String>) -> Reply {
        crate::logging::register_secrets(secrets.values());
        self.logs.set_secrets(secrets.values());
        self.secrets = secrets;
        self.set_spec(spec);
        self.set_desired(DesiredState::Running);
        if self.running.is_some() {
            self.stop_process().await;
        }
        self.start_fresh().await
    }

    async fn stop(&mut self) -> serde_json::Value {
        self.set_desired(DesiredState::Stopped);
        if self.running.is_some() {
            let exit = self.stop_process().await;
            return json!({ "stopped": true, "exit_code": exit.code(), "exit_signal": exit.signal() });
        }
        if matches!(self.sup.state(), BotState::Stopped | BotState::Pending) {
            self.report(self.sup.current());
            return json!({ "stopped": true, "already_stopped": true });
        }
        let transition = self.sup.stopped(None);
        self.report(transition);
        json!({ "stopped": true })
    }

    async fn sync(&mut self, spec: BotRuntimeSpec) -> Reply {
        let hash = spec.definition_hash.clone();
        let needs_restart = self.running.as_ref().is_some_and(|r| r.definition_hash != hash);
        if needs_restart {
            if let Err(SpawnError::MissingSecret(var)) = runner::environment(&spec.exec, &self.secrets) {
                self.set_spec(spec);
                return Err(format!(
                    "the new definition needs secret env {var}, which this agent does not hold: restart the bot \
                     to deliver it (the old definition keeps running)"
                ));
            }
        }
        self.set_spec(spec);
        if !needs_restart {
            return Ok(json!({ "definition_hash": hash, "restarted": false }));
        }
        self.logs.note("its definition changed: restarting it with the new one");
        self.stop_process().await;
        let started = self.start_fresh().await?;
        Ok(json!({ "definition_hash": hash, "restarted": true, "pid": started["pid"] }))
    }

    async fn remove(&mut self) -> serde_json::Value {
        if let Some(mut running) = self.running.take() {
            running.process.terminate(self.grace()).await;
        }
        runner::remove_outputs(&self.shared.run_dir, self.id);
        self.shared.state.update(|doc| {
            doc.bots.remove(&self.id);
        });
        self.shared.views().remove(&self.id);
        tracing::info!(bot_id = %self.id, "bot removed");
        json!({ "removed": true })
    }

    /// An operator-level start: fresh restart budget, then spawn.
    async fn start_fresh(&mut self) -> Reply {
        let transition = self.sup.start();
        self.report(transition);
        self.spawn_now().map(|pid| json!({ "pid": pid }))
    }

    /// Starts the process now (the supervisor is in `starting`).
    fn spawn_now(&mut self) -> Result<u32, String> {
        let request = SpawnRequest {
            bot_id: self.id,
            exec: &self.spec.exec,
            secrets: &self.secrets,
            run_dir: &self.shared.run_dir,
        };
        match runner::spawn(&request) {
            Ok(spawned) => {
                tracing::info!(
                    bot_id = %self.id, pid = spawned.pid, program = %self.spec.exec.program,
                    env_keys = ?self.spec.exec.env.keys().chain(self.spec.exec.secret_env.keys()).collect::<Vec<_>>(),
                    "bot started"
                );
                self.pump(spawned.outputs);
                let pid = spawned.pid;
                self.running = Some(Running {
                    process: spawned.process,
                    pid,
                    started_at: spawned.started_at,
                    start_ticks: spawned.start_ticks,
                    definition_hash: self.spec.definition_hash.clone(),
                });
                let transition = self.sup.spawned(Instant::now());
                self.report(transition);
                Ok(pid)
            }
            Err(err) => {
                let reason = err.to_string();
                tracing::warn!(bot_id = %self.id, program = %self.spec.exec.program, %reason, "bot could not start");
                self.logs.note(&format!("could not start: {reason}"));
                let transition = match err {
                    SpawnError::MissingSecret(_) => self.sup.blocked(reason.clone()),
                    SpawnError::Failed(_) => self.sup.spawn_failed(reason.clone()),
                };
                self.report(transition);
                Err(reason)
            }
        }
    }

    /// SIGTERM, grace, SIGKILL; reports `stopping` then `stopped`. The intent is persisted
    /// first — `stopping` *with* the process — so an agent killed before or during the signal
    /// finds the process at its next start and finishes the stop (`Startup::FinishStop`).
    async fn stop_process(&mut self) -> Exit {
        if self.running.is_none() {
            return Exit::Unknown;
        }
        let stopping = self.sup.stopping();
        self.report(stopping);
        let Some(mut running) = self.running.take() else { return Exit::Unknown };
        let pid = running.pid;
        let exit = running.process.terminate(self.grace()).await;
        tracing::info!(bot_id = %self.id, pid, %exit, "bot stopped");
        self.last_exit = Some(exit);
        let transition = self.sup.stopped(Some(exit));
        self.report(transition);
        exit
    }

    fn on_exit(&mut self, exit: Exit) {
        if let Some(running) = self.running.take() {
            running.process.kill_remains();
            tracing::info!(bot_id = %self.id, pid = running.pid, %exit, "bot process ended");
        }
        self.last_exit = Some(exit);
        for transition in self.sup.exited(exit, Instant::now()) {
            self.report(transition);
        }
    }

    async fn on_tick(&mut self) {
        if let Some(transition) = self.sup.tick(Instant::now()) {
            let starting = transition.state == BotState::Starting;
            self.report(transition);
            if starting {
                let _ = self.spawn_now();
            }
        }
    }

    fn pump(&self, outputs: Vec<(botmox_contract::logs::LogStream, capture::Output)>) {
        for (stream, output) in outputs {
            let sink: Arc<dyn capture::LineSink> = self.logs.clone();
            tokio::spawn(capture::pump(output, stream, sink));
        }
    }

    fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.spec.stop.timeout_seconds)
    }

    fn set_spec(&mut self, spec: BotRuntimeSpec) {
        self.sup.set_spec(spec.restart.clone());
        self.spec = spec;
        self.persist();
    }

    fn set_desired(&mut self, desired: DesiredState) {
        self.desired = desired;
        self.persist();
    }

    fn report(&mut self, transition: Transition) {
        let process = self.running.as_ref().map(|r| (r.pid, r.started_at));
        self.report_with(transition, process);
    }

    /// Queues the transition as a `bot_state` frame and records it everywhere.
    fn report_with(&mut self, transition: Transition, process: Option<(u32, DateTime<Utc>)>) {
        let exit = transition.exit.or(self.last_exit);
        // The server orders a bot's reports by `at` and takes one not later than the newest it
        // applied for a repeat: each report is strictly later than the one before, even when
        // two come from one decision (`crashed`, `backoff`) or the clock is coarse.
        let now = Utc::now();
        let at = match self.last_at {
            Some(last) if now <= last => last + chrono::Duration::microseconds(1),
            _ => now,
        };
        self.last_at = Some(at);
        let report = BotStateReport {
            bot_id: self.id,
            state: transition.state,
            pid: process.map(|(pid, _)| pid),
            started_at: process.map(|(_, at)| at),
            exit_code: transition.exit.and_then(Exit::code),
            exit_signal: transition.exit.and_then(Exit::signal),
            restart_count: transition.restart_count,
            error: transition.error.clone(),
            at,
        };
        tracing::debug!(bot_id = %self.id, state = transition.state.as_str(), "bot state");
        // On disk first: a transition queued but lost with the agent would never reach the server.
        self.shared.transitions.record(&report);
        self.shared.outbox.push(AgentFrame::BotState(report));
        if let Some(exit) = exit {
            self.last_exit = Some(exit);
        }
        self.persist();
        self.publish_view();
    }

    /// Writes this bot's record (log sequence numbers are the sink's business).
    fn persist(&self) {
        let process = self.running.as_ref().map(|r| ProcessRecord {
            pid: r.pid,
            start_ticks: r.start_ticks,
            started_at: r.started_at,
            definition_hash: r.definition_hash.clone(),
        });
        let (spec, desired, state) = (self.spec.clone(), self.desired, self.sup.state());
        let (restart_count, last_error) = (self.sup.restart_count(), self.sup.last_error().map(str::to_owned));
        let exit = self.last_exit;
        let last_report_at = self.last_at;
        self.shared.state.update_bot(self.id, move |record| {
            record.last_report_at = last_report_at.max(record.last_report_at);
            record.spec = spec;
            record.desired = desired;
            record.state = state;
            record.process = process;
            record.restart_count = restart_count;
            record.last_error = last_error;
            record.exit_code = exit.and_then(Exit::code);
            record.exit_signal = exit.and_then(Exit::signal);
        });
    }

    pub fn publish_view(&self) {
        let view = BotView {
            name: self.spec.name.clone(),
            state: self.sup.state(),
            desired: self.desired,
            pid: self.running.as_ref().map(|r| r.pid),
            started_at: self.running.as_ref().map(|r| r.started_at),
            definition_hash: self
                .running
                .as_ref()
                .map_or_else(|| self.spec.definition_hash.clone(), |r| r.definition_hash.clone()),
            restart_count: self.sup.restart_count(),
            last_error: self.sup.last_error().map(str::to_owned),
        };
        self.shared.views().insert(self.id, view);
    }
}

async fn wait_running(running: &mut Option<Running>) -> Exit {
    match running {
        Some(running) => running.process.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
