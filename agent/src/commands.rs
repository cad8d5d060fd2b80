//! Executing the server's commands: `ack` at once, execute, `result` — with the journal in
//! front, so a redelivered command (the queue is at-least-once) is answered from its record
//! and never executed twice, also across an agent restart.
//!
//! Bot commands go to their bot's task in arrival order ([`Commands::handle`] is called by the
//! connection for each command in the order received, and hands it over before returning);
//! they are idempotent in effect (start of a running bot, stop of a stopped one), so a command
//! whose agent died mid-way is simply executed again. `agent.exec` is not: one found started
//! but unfinished in the journal is answered as failed rather than run a second time.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use botmox_contract::{
    commands::CommandKind,
    protocol::{AgentFrame, CommandEnvelope},
};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    bots::{
        actor::{Reply, Request},
        Bots,
    },
    connection::buffer::Outbox,
    journal::{BotSeq, Journal, Recorded},
};

type Execution = Pin<Box<dyn Future<Output = Reply> + Send>>;

pub struct Commands {
    bots: Arc<Bots>,
    outbox: Arc<Outbox>,
    journal: Mutex<Journal>,
    /// Commands executing now, with the switch that cancels them.
    running: Mutex<HashMap<Uuid, watch::Sender<bool>>>,
    draining: AtomicBool,
    allow_exec: bool,
}

impl Commands {
    pub fn new(bots: Arc<Bots>, outbox: Arc<Outbox>, journal: Journal, allow_exec: bool) -> Arc<Self> {
        Arc::new(Self {
            bots,
            outbox,
            journal: Mutex::new(journal),
            running: Mutex::default(),
            draining: AtomicBool::new(false),
            allow_exec,
        })
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<bool>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Takes one command from the server. Must be called in the order commands arrive.
    ///
    /// A bot command carries the bot's sequence number: one lower than a command already
    /// started here for the bot is older than it (it was delayed, e.g. redelivered after a lost
    /// connection, while a newer one ran) and is not run — it is answered as superseded, so
    /// the last command the server accepted is the one whose effect remains.
    pub fn handle(self: &Arc<Self>, envelope: CommandEnvelope) {
        let (id, kind) = (envelope.id, envelope.kind);
        let of = BotSeq { bot: bot_of(&envelope), seq: envelope.seq };
        if self.running().contains_key(&id) {
            // Redelivered while it runs here (our ack was lost): ack again, the result follows.
            self.outbox.push(AgentFrame::Ack { command_id: id });
            return;
        }
        let recorded = self.journal().get(id).cloned();
        if let Some(entry) = recorded {
            if let Some(outcome) = entry.outcome {
                tracing::info!(command_id = %id, attempt = envelope.attempt, "redelivered command: answering from the journal");
                self.outbox.push(AgentFrame::Ack { command_id: id });
                self.outbox.push(AgentFrame::Result(outcome.outcome(id)));
                return;
            }
            if kind == CommandKind::AgentExec {
                self.outbox.push(AgentFrame::Ack { command_id: id });
                self.finish(
                    id,
                    kind,
                    of,
                    Err("the agent restarted while this command ran; it is not run twice".into()),
                );
                return;
            }
        }
        if let (Some(bot), Some(seq)) = (of.bot, of.seq) {
            let newest = self.journal().bot_seq(bot);
            if let Some(newest) = newest.filter(|newest| seq < *newest) {
                tracing::info!(command_id = %id, %bot, seq, newest, "older than a command already run for the bot: superseded");
                self.outbox.push(AgentFrame::Ack { command_id: id });
                let error = format!("superseded: a newer command for this bot (sequence {newest}) already ran here");
                let recorded =
                    Recorded { ok: false, result: json!({ "superseded": true }), error: Some(error), superseded: true };
                self.record(id, kind, of, recorded);
                return;
            }
        }
        if let Err(e) = self.journal().started(id, kind, of) {
            tracing::error!(command_id = %id, error = %e, "cannot write the command journal");
        }
        self.outbox.push(AgentFrame::Ack { command_id: id });
        let (cancel, cancelled) = watch::channel(false);
        self.running().insert(id, cancel);
        tracing::info!(command_id = %id, kind = kind.as_str(), attempt = envelope.attempt, "command");
        let execution = self.execution(envelope, cancelled);
        let this = self.clone();
        tokio::spawn(async move {
            let reply = execution.await;
            this.finish(id, kind, of, reply);
        });
    }

    /// The server cancelled a command: stop it where that makes sense (`agent.exec` is
    /// killed; a bot command not yet started by its bot is skipped).
    pub fn cancel(&self, command_id: Uuid) {
        if let Some(cancel) = self.running().get(&command_id) {
            tracing::info!(%command_id, "command cancelled by the server");
            cancel.send_replace(true);
        }
    }

    /// Starts executing (bot requests are handed to their bot before this returns).
    fn execution(self: &Arc<Self>, envelope: CommandEnvelope, cancelled: watch::Receiver<bool>) -> Execution {
        let kind = envelope.kind;
        let refuse = |reason: String| -> Execution { Box::pin(async move { Err(reason) }) };
        match kind {
            CommandKind::AgentExec => {
                if !self.allow_exec {
                    return refuse(
                        "agent.exec is refused: this agent was not started with `botmox-agent run --allow-exec`".into(),
                    );
                }
                Box::pin(async move { crate::exec::run(&envelope.payload, cancelled).await })
            }
            CommandKind::AgentDrain => {
                let drain = envelope.payload.get("drain").and_then(serde_json::Value::as_bool).unwrap_or(true);
                self.draining.store(drain, Ordering::Relaxed);
                tracing::info!(drain, "drain");
                Box::pin(async move { Ok(json!({ "draining": drain })) })
            }
            CommandKind::BotStart | CommandKind::BotRestart if self.is_draining() => {
                refuse("this agent is draining: it takes no new starts".into())
            }
            _ => match self.bot_request(envelope, cancelled) {
                Ok(answer) => Box::pin(async move {
                    answer.await.unwrap_or_else(|_| Err("the bot's task ended before answering".into()))
                }),
                Err(reason) => refuse(reason),
            },
        }
    }

    fn bot_request(
        &self,
        envelope: CommandEnvelope,
        cancelled: watch::Receiver<bool>,
    ) -> Result<tokio::sync::oneshot::Receiver<Reply>, String> {
        let bot_id = bot_of(&envelope)
            .ok_or_else(|| format!("{} without a bot: the command names no bot id", envelope.kind.as_str()))?;
        let spec = envelope.bot;
        let needs_spec = || {
            spec.clone().map(Box::new).ok_or_else(|| format!("{} without the bot's definition", envelope.kind.as_str()))
        };
        let request = match envelope.kind {
            CommandKind::BotStart => Request::Start { spec: needs_spec()?, secrets: envelope.secrets },
            CommandKind::BotRestart => Request::Restart { spec: needs_spec()?, secrets: envelope.secrets },
            CommandKind::BotSync => Request::Sync { spec: needs_spec()? },
            CommandKind::BotStop => Request::Stop,
            CommandKind::BotRemove => {
                if !self.bots.contains(bot_id) {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = tx.send(Ok(json!({ "removed": true, "was_known": false })));
                    return Ok(rx);
                }
                Request::Remove
            }
            other => return Err(format!("{} is not a bot command", other.as_str())),
        };
        if matches!(request, Request::Stop) && !self.bots.contains(bot_id) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Ok(json!({ "stopped": true, "already_stopped": true })));
            return Ok(rx);
        }
        self.bots.request(bot_id, spec.as_ref(), request, Some(cancelled))
    }

    /// At start-up: sends again every outcome the server did not confirm, and answers each
    /// command the previous run started but never finished (it died meanwhile) as
    /// interrupted. A bot's own intent (desired state, a stop under way) was persisted before
    /// acting and is resumed by the bot's task; the command itself is not run again.
    pub fn resume_journal(&self) {
        let (unconfirmed, unfinished) = {
            let journal = self.journal();
            (journal.unconfirmed(), journal.unfinished())
        };
        for (id, recorded) in unconfirmed {
            tracing::info!(command_id = %id, "sending again a result the server had not confirmed");
            self.outbox.push(AgentFrame::Result(recorded.outcome(id)));
        }
        for entry in unfinished {
            let of = BotSeq { bot: entry.bot, seq: entry.seq };
            let error = match entry.bot {
                Some(_) => "interrupted: the agent stopped while this command ran; the bot resumes its desired \
                            state and reports its state"
                    .to_string(),
                None => "interrupted: the agent stopped while this command ran; it is not run twice".to_string(),
            };
            self.finish(entry.id, entry.kind, of, Err(error));
        }
    }

    /// The server confirmed the frames carrying these results: they need not be sent again.
    pub fn confirmed(&self, frames: &[AgentFrame]) {
        let ids: Vec<Uuid> = frames
            .iter()
            .filter_map(|f| match f {
                AgentFrame::Result(outcome) => Some(outcome.command_id),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.journal().confirmed(&ids) {
            tracing::error!(error = %e, "cannot write the command journal");
        }
    }

    /// Records the outcome, then sends it.
    fn finish(&self, id: Uuid, kind: CommandKind, of: BotSeq, reply: Reply) {
        let recorded = match reply {
            Ok(result) => Recorded { ok: true, result, error: None, superseded: false },
            Err(error) => {
                Recorded { ok: false, result: serde_json::Value::Null, error: Some(error), superseded: false }
            }
        };
        self.running().remove(&id);
        match &recorded.error {
            Some(error) => tracing::warn!(command_id = %id, kind = kind.as_str(), %error, "command failed"),
            None => tracing::info!(command_id = %id, kind = kind.as_str(), "command done"),
        }
        self.record(id, kind, of, recorded);
    }

    /// Journals how a command ended, then sends that.
    fn record(&self, id: Uuid, kind: CommandKind, of: BotSeq, recorded: Recorded) {
        if let Err(e) = self.journal().finished(id, kind, of, recorded.clone()) {
            tracing::error!(command_id = %id, error = %e, "cannot write the command journal");
        }
        self.outbox.push(AgentFrame::Result(recorded.outcome(id)));
    }
}

/// The bot a command is for: the envelope names it through its definition; a removal of a
/// deleted bot may come without one, so `payload.bot_id` is accepted too.
fn bot_of(envelope: &CommandEnvelope) -> Option<Uuid> {
    envelope
        .bot
        .as_ref()
        .map(|s| s.bot_id)
        .or_else(|| envelope.payload.get("bot_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use botmox_contract::protocol::{AgentFrame, CommandOutcome};

    use super::*;
    use crate::{
        bots::Shared,
        connection::buffer::Limits,
        state_file::{tests_support::spec, StateFile},
        transitions::Transitions,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        outbox: Arc<Outbox>,
    }

    impl Fixture {
        fn new() -> anyhow::Result<Self> {
            Ok(Self { dir: tempfile::tempdir()?, outbox: Arc::new(Outbox::new(Limits::default())) })
        }

        /// A fresh agent over the same files (what a restarted agent sees).
        fn commands(&self, allow_exec: bool) -> anyhow::Result<Arc<Commands>> {
            let state = Arc::new(StateFile::open(&self.dir.path().join("state.json"))?);
            let transitions = Arc::new(Transitions::open(&self.dir.path().join("transitions.jsonl")));
            let shared = Arc::new(Shared::new(self.outbox.clone(), transitions, state, self.dir.path().join("run")));
            let journal = Journal::open(&self.dir.path().join("journal.jsonl"))?;
            Ok(Commands::new(Bots::recover(shared), self.outbox.clone(), journal, allow_exec))
        }

        /// Frames until the result of `id` (bounded).
        async fn until_result(&self, id: Uuid) -> anyhow::Result<Vec<AgentFrame>> {
            let mut frames = Vec::new();
            let found = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    frames.extend(self.outbox.take(100, 1000, 1 << 20));
                    if frames.iter().any(|f| matches!(f, AgentFrame::Result(r) if r.command_id == id)) {
                        return;
                    }
                    self.outbox.notified().await;
                }
            })
            .await;
            anyhow::ensure!(found.is_ok(), "no result for {id}; frames: {frames:?}");
            Ok(frames)
        }
    }

    fn envelope(kind: CommandKind, payload: serde_json::Value, attempt: u32) -> CommandEnvelope {
        CommandEnvelope {
            id: Uuid::now_v7(),
            kind,
            attempt,
            payload,
            seq: None,
            bot: None,
            secrets: Default::default(),
        }
    }

    fn outcome(frames: &[AgentFrame], id: Uuid) -> Option<CommandOutcome> {
        frames.iter().find_map(|f| match f {
            AgentFrame::Result(r) if r.command_id == id => Some(r.clone()),
            _ => None,
        })
    }

    #[tokio::test]
    async fn a_redelivered_command_is_answered_from_the_journal_and_not_run_again() -> anyhow::Result<()> {
        let fixture = Fixture::new()?;
        let marker = fixture.dir.path().join("runs.txt");
        #[cfg(unix)]
        let payload =
            json!({ "program": "sh", "args": ["-c", format!("echo ran >> '{}'; echo done", marker.display())] });
        #[cfg(windows)]
        let payload = json!({ "program": "cmd", "args": ["/C", format!("echo ran>>{}& echo done", marker.display())] });
        let mut exec = envelope(CommandKind::AgentExec, payload, 1);
        let commands = fixture.commands(true)?;
        commands.handle(exec.clone());
        let frames = fixture.until_result(exec.id).await?;
        assert!(matches!(frames[0], AgentFrame::Ack { command_id } if command_id == exec.id), "ack first");
        let first = outcome(&frames, exec.id).ok_or_else(|| anyhow::anyhow!("a result"))?;
        assert!(first.ok, "{first:?}");

        exec.attempt = 2;
        commands.handle(exec.clone());
        let again = fixture.until_result(exec.id).await?;
        assert_eq!(outcome(&again, exec.id).map(|o| o.result), Some(first.result.clone()), "the recorded result");

        // And after an agent restart, from the journal on disk.
        drop(commands);
        exec.attempt = 3;
        fixture.commands(true)?.handle(exec.clone());
        let after_restart = fixture.until_result(exec.id).await?;
        assert_eq!(outcome(&after_restart, exec.id).map(|o| o.result), Some(first.result));
        assert_eq!(std::fs::read_to_string(&marker)?.lines().collect::<Vec<_>>(), ["ran"], "executed exactly once");
        Ok(())
    }

    #[tokio::test]
    async fn a_restarted_agent_sends_unconfirmed_results_again_and_answers_interrupted_commands() -> anyhow::Result<()>
    {
        let fixture = Fixture::new()?;
        let commands = fixture.commands(false)?;
        let (unsent, sent) = (
            envelope(CommandKind::BotStop, json!({ "bot_id": Uuid::now_v7() }), 1),
            envelope(CommandKind::BotStop, json!({ "bot_id": Uuid::now_v7() }), 1),
        );
        commands.handle(unsent.clone());
        let unsent_result = outcome(&fixture.until_result(unsent.id).await?, unsent.id);
        commands.handle(sent.clone());
        let frames = fixture.until_result(sent.id).await?;
        commands.confirmed(&frames);
        drop(commands);
        // The previous run died while this one ran: started in the journal, never finished.
        let interrupted = Uuid::now_v7();
        Journal::open(&fixture.dir.path().join("journal.jsonl"))?.started(
            interrupted,
            CommandKind::BotRestart,
            BotSeq { bot: Some(Uuid::now_v7()), seq: Some(4) },
        )?;

        let restarted = fixture.commands(false)?;
        restarted.resume_journal();
        let frames = fixture.outbox.take(100, 1000, 1 << 20);
        let results: Vec<Uuid> = frames
            .iter()
            .filter_map(|f| match f {
                AgentFrame::Result(r) => Some(r.command_id),
                _ => None,
            })
            .collect();
        assert_eq!(results, [unsent.id, interrupted], "the unconfirmed one again, the interrupted one answered");
        assert_eq!(outcome(&frames, unsent.id), unsent_result, "the same result as before");
        let answer = outcome(&frames, interrupted);
        assert!(answer.is_some_and(|o| !o.ok && o.error.is_some_and(|e| e.contains("interrupted"))));

        // Once confirmed, a further restart sends nothing.
        restarted.confirmed(&frames);
        drop(restarted);
        fixture.commands(false)?.resume_journal();
        assert!(fixture.outbox.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn exec_is_refused_unless_allowed_and_drain_refuses_starts() -> anyhow::Result<()> {
        let fixture = Fixture::new()?;
        let commands = fixture.commands(false)?;
        let exec = envelope(CommandKind::AgentExec, json!({ "program": "true" }), 1);
        commands.handle(exec.clone());
        let refused = outcome(&fixture.until_result(exec.id).await?, exec.id);
        assert!(refused.is_some_and(|o| !o.ok && o.error.is_some_and(|e| e.contains("--allow-exec"))));

        let drain = envelope(CommandKind::AgentDrain, json!({}), 1);
        commands.handle(drain.clone());
        assert!(outcome(&fixture.until_result(drain.id).await?, drain.id).is_some_and(|o| o.ok));
        assert!(commands.is_draining());
        let mut start = envelope(CommandKind::BotStart, json!({}), 1);
        start.bot = Some(spec(Uuid::now_v7()));
        commands.handle(start.clone());
        let refused = outcome(&fixture.until_result(start.id).await?, start.id);
        assert!(refused.is_some_and(|o| !o.ok && o.error.is_some_and(|e| e.contains("draining"))));
        Ok(())
    }

    #[tokio::test]
    async fn commands_for_unknown_bots_are_harmless() -> anyhow::Result<()> {
        let fixture = Fixture::new()?;
        let commands = fixture.commands(false)?;
        let bot_id = Uuid::now_v7();
        let stop = envelope(CommandKind::BotStop, json!({ "bot_id": bot_id }), 1);
        commands.handle(stop.clone());
        assert!(outcome(&fixture.until_result(stop.id).await?, stop.id).is_some_and(|o| o.ok));
        let nameless = envelope(CommandKind::BotRemove, json!({}), 1);
        commands.handle(nameless.clone());
        let refused = outcome(&fixture.until_result(nameless.id).await?, nameless.id);
        assert!(refused.is_some_and(|o| !o.ok && o.error.is_some_and(|e| e.contains("no bot id"))));
        Ok(())
    }

    #[tokio::test]
    async fn a_command_older_than_one_already_run_for_its_bot_is_superseded_not_run() -> anyhow::Result<()> {
        let fixture = Fixture::new()?;
        let commands = fixture.commands(false)?;
        let bot_id = Uuid::now_v7();
        // The newer stop (sequence 6) ran; the older start (5) arrives late, e.g. redelivered.
        let mut stop = envelope(CommandKind::BotStop, json!({ "bot_id": bot_id }), 1);
        stop.seq = Some(6);
        commands.handle(stop.clone());
        assert!(outcome(&fixture.until_result(stop.id).await?, stop.id).is_some_and(|o| o.ok && !o.superseded));
        let mut late_start = envelope(CommandKind::BotStart, json!({}), 2);
        late_start.bot = Some(spec(bot_id));
        late_start.seq = Some(5);
        commands.handle(late_start.clone());
        let refused = outcome(&fixture.until_result(late_start.id).await?, late_start.id);
        assert!(refused.as_ref().is_some_and(|o| o.superseded && !o.ok), "{refused:?}");
        assert!(!commands.bots.contains(bot_id), "the refused start started nothing");

        // Across a restart too, and a redelivery of the refused one gets the same answer.
        drop(commands);
        let commands = fixture.commands(false)?;
        commands.handle(late_start.clone());
        let again = outcome(&fixture.until_result(late_start.id).await?, late_start.id);
        assert!(again.is_some_and(|o| o.superseded));
        // A sync with the current sequence (it orders nothing) still runs.
        let mut sync = envelope(CommandKind::BotSync, json!({}), 1);
        sync.bot = Some(spec(bot_id));
        sync.seq = Some(6);
        commands.handle(sync.clone());
        assert!(outcome(&fixture.until_result(sync.id).await?, sync.id).is_some_and(|o| !o.superseded));
        Ok(())
    }
}
