//! One agent's side of the protocol, whatever the transport: each `AgentFrame` is checked and
//! applied here (WebSocket and long-poll both call [`AgentSession::handle`]). A refused frame
//! changes nothing and comes back as a [`FrameError`] naming the problem.

use botmox_contract::{
    events::{BotStatus, CommandSummary, EventPayload},
    logs::LogLine,
    protocol::{AgentFrame, CommandOutcome as WireOutcome, PROTOCOL_VERSION},
    Id,
};

use crate::{
    state::AppState,
    store::{AgentHello, CommandOutcome, StoreError},
};

/// Largest batch of log lines in one frame, and longest line (longer ones are cut).
pub const MAX_LOG_LINES: usize = 1000;
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub detail: String,
}

/// The one answer of a group submission of one frame.
fn one(answers: crate::store::Result<crate::state::Answers>) -> crate::store::Result<CommandSummary> {
    answers?.pop().unwrap_or_else(|| Err(StoreError::Corrupt("no answer for a frame".into())))
}

/// The code of a refusal that says "not now": the frame was fine, the store could not take it.
pub const UNAVAILABLE: &str = "unavailable";

impl FrameError {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into() }
    }

    /// The agent must send this frame again (after reconnecting), not drop it.
    pub fn is_retryable(&self) -> bool {
        self.code == UNAVAILABLE
    }
}

impl From<StoreError> for FrameError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => FrameError::new("not_found", format!("{what} not found (or not yours)")),
            StoreError::InvalidTransition { .. } => FrameError::new("invalid_transition", err.to_string()),
            // A lost connection, a restart, a full pool: the transaction rolled back, and the
            // same frame will apply once the database answers again.
            StoreError::Unavailable(_) | StoreError::Db(_) => {
                tracing::warn!(error = %err, "the store could not apply an agent frame: the agent sends it again");
                FrameError::new(UNAVAILABLE, "the server's database is unavailable just now: send this frame again")
            }
            other => {
                tracing::error!(error = %other, "applying an agent frame failed");
                FrameError::new("internal", "the server could not apply this frame; send it again")
            }
        }
    }
}

pub struct AgentSession {
    state: AppState,
    pub agent_id: Id,
    pub tenant_id: Id,
    greeted: bool,
}

impl AgentSession {
    pub fn new(state: AppState, tenant_id: Id, agent_id: Id) -> Self {
        Self { state, agent_id, tenant_id, greeted: false }
    }

    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// For the long-poll transport: the agent said `hello` in an earlier request.
    pub fn mark_greeted(&mut self) {
        self.greeted = true;
    }

    pub async fn handle(&mut self, frame: AgentFrame) -> Result<(), FrameError> {
        let state = self.state.clone();
        let now = state.clock.now();
        if !self.greeted && !matches!(frame, AgentFrame::Hello { .. }) {
            return Err(FrameError::new("hello_first", "the first frame of a connection must be `hello`"));
        }
        match frame {
            AgentFrame::Hello { protocol, agent_version, hostname, os, arch, bots } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(FrameError::new(
                        "unsupported_protocol",
                        format!(
                            "this server speaks protocol {PROTOCOL_VERSION}, the agent {protocol}: upgrade the agent"
                        ),
                    ));
                }
                let hello = AgentHello { hostname, os, arch, version: agent_version };
                for (field, value) in [
                    ("hostname", &hello.hostname),
                    ("os", &hello.os),
                    ("arch", &hello.arch),
                    ("agent_version", &hello.version),
                ] {
                    if value.is_empty() || value.len() > 253 || value.chars().any(char::is_control) {
                        return Err(FrameError::new(
                            "invalid_frame",
                            format!("`{field}` must be 1 to 253 printable characters"),
                        ));
                    }
                }
                let agent = state.store.agent_connected(self.agent_id, &state.settings.replica_id, &hello, now).await?;
                let changed = state.store.apply_snapshot(self.agent_id, &bots, now).await?;
                self.greeted = true;
                tracing::info!(agent_id = %self.agent_id, bots = bots.len(), "agent connected");
                state
                    .publish(
                        self.tenant_id,
                        EventPayload::AgentPresence {
                            agent_id: agent.id,
                            name: agent.name.clone(),
                            status: agent.status,
                        },
                    )
                    .await;
                for bot in &changed {
                    state.publish(self.tenant_id, EventPayload::BotState(bot.into())).await;
                }
                if let Err(e) = crate::incidents::rules::agent_online(&state, self.tenant_id, &agent).await {
                    tracing::error!(error = %e, "could not resolve the agent's offline incident");
                }
            }
            AgentFrame::Heartbeat { metrics } => {
                check_metrics(&metrics)?;
                state.presence.beat(self.agent_id, metrics, now)
            }
            AgentFrame::Ack { command_id } => {
                let command = one(state.acks.submit((self.agent_id, vec![command_id])).await)?;
                state.publish(self.tenant_id, EventPayload::CommandStatus(command)).await;
            }
            AgentFrame::Result(WireOutcome { command_id, ok, result, error, superseded }) => {
                let error: Option<String> = error.map(|e| e.chars().take(4096).collect());
                let command = if superseded {
                    let reason = error.unwrap_or_else(|| "superseded by a newer command for the bot".into());
                    (&state.store.supersede_command(self.agent_id, command_id, &reason, now).await?).into()
                } else {
                    let outcome = CommandOutcome { ok, result, error, acked: false };
                    one(state.results.submit((self.agent_id, vec![(command_id, outcome)])).await)?
                };
                state.publish(self.tenant_id, EventPayload::CommandStatus(command)).await;
            }
            // An agent may only report about the bots placed on it *now*: the store statements
            // check that as they write (nothing is remembered per connection, so a bot moved
            // away is refused to its old agent at once).
            AgentFrame::BotState(report) => {
                let mut answer = [None];
                self.apply_states(&mut answer, vec![(0, report)]).await;
                let [answer] = answer;
                answer.unwrap_or(Ok(()))?;
            }
            AgentFrame::Logs { bot_id, lines } => {
                if lines.len() > MAX_LOG_LINES {
                    return Err(FrameError::new("invalid_frame", format!("at most {MAX_LOG_LINES} lines per frame")));
                }
                let lines: Vec<LogLine> = lines.into_iter().map(truncate_line).collect();
                state.store.append_logs(self.agent_id, bot_id, &lines, state.settings.log_keep_lines).await?;
                state.logs_arrived(bot_id).await;
            }
        }
        Ok(())
    }

    /// Applies frames that arrived together (a WebSocket read batch, a long-poll POST) with
    /// their acks applied in one statement and their results in another, instead of one
    /// statement each; answers per frame, in order. Acks go first (an agent never sends a
    /// command's result before its ack; an ack with its result in the batch goes with the
    /// result), then every other frame in order, then the results (an agent reports a bot's
    /// state before the command's result). A batch with a `hello`,
    /// or of one frame, is applied frame by frame.
    pub async fn handle_batch(&mut self, frames: Vec<Result<AgentFrame, FrameError>>) -> Vec<Result<(), FrameError>> {
        let sequential =
            frames.len() < 2 || !self.greeted || frames.iter().any(|f| matches!(f, Ok(AgentFrame::Hello { .. })));
        if sequential {
            let mut answers = Vec::with_capacity(frames.len());
            for frame in frames {
                answers.push(match frame {
                    Ok(frame) => self.handle(frame).await,
                    Err(refusal) => Err(refusal),
                });
            }
            return answers;
        }
        let mut answers: Vec<Option<Result<(), FrameError>>> = (0..frames.len()).map(|_| None).collect();
        let (mut acks, mut states, mut results, mut others) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (index, frame) in frames.into_iter().enumerate() {
            match frame {
                Ok(AgentFrame::Ack { command_id }) => acks.push((index, command_id)),
                Ok(AgentFrame::BotState(report)) => states.push((index, report)),
                Ok(AgentFrame::Result(outcome)) if !outcome.superseded => results.push((index, outcome)),
                Ok(frame) => others.push((index, frame)),
                Err(refusal) => answers[index] = Some(Err(refusal)),
            }
        }
        // An ack whose result came in the same batch is folded into the result: the result's
        // statement moves `dispatched → succeeded` and stamps `acked_at` itself, so the
        // command costs one write, not two; the ack is answered as its result is.
        let finishing: std::collections::HashMap<Id, usize> = results.iter().map(|(i, o)| (o.command_id, *i)).collect();
        let (folded, acks): (Vec<_>, Vec<_>) = acks.into_iter().partition(|(_, id)| finishing.contains_key(id));
        let folded_ids: std::collections::HashSet<Id> = folded.iter().map(|(_, id)| *id).collect();
        let state = self.state.clone();
        if !acks.is_empty() {
            let ids: Vec<Id> = acks.iter().map(|(_, id)| *id).collect();
            let applied = state.acks.submit((self.agent_id, ids)).await;
            self.answer_batch(&mut answers, acks.iter().map(|(i, _)| *i), applied).await;
        }
        for (index, frame) in others {
            answers[index] = Some(self.handle(frame).await);
        }
        if !states.is_empty() {
            self.apply_states(&mut answers, states).await;
        }
        if !results.is_empty() {
            let outcomes: Vec<(Id, CommandOutcome)> = results
                .iter()
                .map(|(_, o)| {
                    let error = o.error.as_ref().map(|e| e.chars().take(4096).collect());
                    let acked = folded_ids.contains(&o.command_id);
                    (o.command_id, CommandOutcome { ok: o.ok, result: o.result.clone(), error, acked })
                })
                .collect();
            let applied = state.results.submit((self.agent_id, outcomes)).await;
            self.answer_batch(&mut answers, results.iter().map(|(i, _)| *i), applied).await;
        }
        for (index, command_id) in folded {
            answers[index] = finishing.get(&command_id).and_then(|result| answers[*result].clone());
        }
        answers.into_iter().map(|a| a.unwrap_or(Ok(()))).collect()
    }

    /// Bot state reports, in the order sent: one statement writes each bot's newest news (a
    /// report later, on the agent's clock, than everything applied for the bot before it —
    /// [`crate::store::Store::report_agents_bot_states`], in a group with other connections'
    /// reports: `state.states`); the events and incident rules then follow
    /// every news in order (a `crashed` between two reports of a batch still opens its
    /// incident), replayed in memory from the row as it was before, exactly as the statement
    /// changes it. A report that is no news (a repeat, a replay of something older) is
    /// answered as applied and changes nothing: no event, no incident count.
    async fn apply_states(
        &self,
        answers: &mut [Option<Result<(), FrameError>>],
        reports: Vec<(usize, botmox_contract::protocol::BotStateReport)>,
    ) {
        let state = self.state.clone();
        let (indexes, reports): (Vec<usize>, Vec<botmox_contract::protocol::BotStateReport>) =
            reports.into_iter().unzip();
        let applied = match state.states.submit((self.agent_id, reports.clone())).await {
            Ok(applied) => applied,
            Err(e) => {
                let refusal = FrameError::from(e);
                for index in indexes {
                    answers[index] = Some(Err(refusal.clone()));
                }
                return;
            }
        };
        // Per bot, the index of its newest news in the batch.
        let last: std::collections::HashMap<Id, usize> = indexes
            .iter()
            .zip(&reports)
            .zip(&applied.news)
            .filter(|(_, news)| **news)
            .map(|((i, r), _)| (r.bot_id, *i))
            .collect();
        let open_incidents: std::collections::HashSet<Id> =
            applied.before.iter().filter(|b| b.open_incident).map(|b| b.bot.id).collect();
        let mut current: std::collections::HashMap<Id, BotStatus> =
            applied.before.into_iter().map(|b| (b.bot.id, b.bot)).collect();
        let after: std::collections::HashMap<Id, BotStatus> = applied.after.into_iter().map(|b| (b.id, b)).collect();
        let mut events = Vec::with_capacity(reports.len());
        let mut transitions = Vec::new();
        for ((index, report), news) in indexes.iter().zip(&reports).zip(applied.news) {
            let Some(bot) = current.get_mut(&report.bot_id) else {
                answers[*index] = Some(Err(FrameError::new("not_found", "bot not found (or not yours)")));
                continue;
            };
            answers[*index] = Some(Ok(()));
            // No news, or news the statement did not write after all (a newer report of
            // the bot landed between the read and the write): the row did not take it.
            let Some(stored) = after.get(&report.bot_id).filter(|_| news) else { continue };
            let previous = bot.state;
            apply_report(bot, report);
            // After its newest report the bot is the row as stored (other columns as they are now).
            if last.get(&report.bot_id) == Some(index) {
                *bot = stored.clone();
            }
            events.push((self.tenant_id, EventPayload::BotState(bot.clone().for_event())));
            transitions.push((previous, bot.clone()));
        }
        state.publish_many(events).await;
        if let Err(e) =
            crate::incidents::rules::bots_reported(&state, self.tenant_id, transitions, open_incidents).await
        {
            tracing::error!(error = %e, "could not update the bots' incidents");
        }
    }

    /// Records the answers of a coalesced statement and publishes what it changed.
    async fn answer_batch(
        &self,
        answers: &mut [Option<Result<(), FrameError>>],
        indexes: impl Iterator<Item = usize>,
        applied: crate::store::Result<crate::state::Answers>,
    ) {
        let indexes: Vec<usize> = indexes.collect();
        match applied {
            Ok(each) => {
                let mut events = Vec::new();
                for (index, answer) in indexes.into_iter().zip(each) {
                    answers[index] = Some(match answer {
                        Ok(command) => {
                            events.push((self.tenant_id, EventPayload::CommandStatus(command)));
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    });
                }
                self.state.publish_many(events).await;
            }
            Err(e) => {
                let refusal = FrameError::from(e);
                for index in indexes {
                    answers[index] = Some(Err(refusal.clone()));
                }
            }
        }
    }

    /// The connection ended: forget which replica held it (presence decides `offline`).
    pub async fn close(&self) {
        if let Err(e) = self
            .state
            .store
            .agent_disconnected(self.agent_id, &self.state.settings.replica_id, self.state.clock.now())
            .await
        {
            tracing::warn!(error = %e, "could not record the disconnection");
        }
    }
}

/// The largest byte count a metric may claim (2^62: far past any disk, and a BIGINT).
const MAX_BYTES: u64 = 1 << 62;

/// A heartbeat's numbers must be what a host can measure: finite, in range. Anything else is
/// refused at the door, never stored (a non-finite number would be unreadable afterwards).
/// What `report_agents_bot_states` writes for one report, applied to a bot in memory.
fn apply_report(bot: &mut BotStatus, report: &botmox_contract::protocol::BotStateReport) {
    bot.state = report.state;
    bot.pid = report.pid;
    bot.started_at = report.started_at;
    bot.last_exit_code = report.exit_code.or(bot.last_exit_code);
    bot.last_exit_signal = report.exit_signal.or(bot.last_exit_signal);
    bot.restart_count = report.restart_count;
    bot.last_error = report.error.clone();
    bot.updated_at = report.at;
}

fn check_metrics(m: &botmox_contract::agents::AgentMetrics) -> Result<(), FrameError> {
    let refuse = |field: &str, what: &str| {
        Err(FrameError::new("invalid_frame", format!("heartbeat `metrics.{field}` must be {what}")))
    };
    if !(m.cpu_percent.is_finite() && (0.0..=100_000.0).contains(&m.cpu_percent)) {
        return refuse("cpu_percent", "a finite number from 0 to 100,000 (100 per core)");
    }
    if !(m.load1.is_finite() && (0.0..=1_000_000.0).contains(&m.load1)) {
        return refuse("load1", "a finite number from 0 to 1,000,000");
    }
    for (field, value) in [
        ("memory_used_bytes", m.memory_used_bytes),
        ("memory_total_bytes", m.memory_total_bytes),
        ("disk_used_bytes", m.disk_used_bytes),
        ("disk_total_bytes", m.disk_total_bytes),
    ] {
        if value > MAX_BYTES {
            return refuse(field, "at most 2^62 bytes");
        }
    }
    if m.bots_running > 10_000_000 {
        return refuse("bots_running", "at most 10,000,000");
    }
    Ok(())
}

fn truncate_line(mut line: LogLine) -> LogLine {
    if line.text.len() > MAX_LOG_LINE_BYTES {
        let mut cut = MAX_LOG_LINE_BYTES;
        while !line.text.is_char_boundary(cut) {
            cut -= 1;
        }
        line.text.truncate(cut);
        line.text.push('…');
    }
    line
}
