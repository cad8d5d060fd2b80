//! Dispatch: claim an agent's queued commands (leasing them) and turn each into the envelope
//! the agent needs — for bot commands the bot's definition, and for starts the values of the
//! secrets its `secret_env` names. A command that cannot be built (its bot or a secret is gone,
//! or the bot is no longer on the command's agent) fails here with the reason, instead of
//! reaching the agent half-formed — or reaching the wrong agent with another host's bot.

use std::collections::BTreeMap;

use botmox_contract::{
    commands::{Command, CommandKind},
    events::EventPayload,
    protocol::{BotRuntimeSpec, CommandEnvelope},
    Id,
};

use crate::{
    secrets::vault,
    state::AppState,
    store::{definition_hash, CommandOutcome, DispatchBot, StoreError},
};

/// At most this many commands are leased to one agent per claim.
pub const CLAIM_BATCH: u32 = 32;

/// What a claim produced: envelopes to send, then dispatched commands to announce.
pub struct Claimed {
    pub envelopes: Vec<CommandEnvelope>,
    /// The claim took a whole batch: more may be queued.
    pub full: bool,
    dispatched: Vec<Command>,
    tenant_id: Id,
}

impl Claimed {
    /// Publishes the `dispatched` events — after the envelopes are on their way, so announcing
    /// (a `NOTIFY` round trip on Postgres) never delays delivery.
    pub async fn announce(self, state: &AppState) {
        let events = self
            .dispatched
            .iter()
            .map(|command| (self.tenant_id, EventPayload::CommandStatus(command.into())))
            .collect();
        state.publish_many(events).await;
    }
}

/// Leases up to [`CLAIM_BATCH`] queued commands of the agent (in a group with the claims of
/// other connections: `state.claims`) and builds their envelopes from the group's one read of
/// their bots.
pub async fn claim(state: &AppState, tenant_id: Id, agent_id: Id) -> Result<Claimed, StoreError> {
    let now = state.clock.now();
    let crate::state::Claim { commands: claimed, bots } = state.claims.submit((agent_id, CLAIM_BATCH)).await?;
    let full = claimed.len() as u32 == CLAIM_BATCH;
    let mut envelopes = Vec::with_capacity(claimed.len());
    let mut dispatched = Vec::with_capacity(claimed.len());
    // A failed read leaves every claimed command to its lease (it comes back, nothing lost).
    let Some(bots) = bots else {
        return Ok(Claimed { envelopes, full, dispatched, tenant_id });
    };
    for command in claimed {
        let waited = (now - command.created_at).to_std().unwrap_or_default();
        metrics::histogram!("botmox_command_dispatch_latency_seconds").record(waited.as_secs_f64());
        let bot = command.bot_id.and_then(|id| bots.get(&id)).cloned();
        match envelope(state, tenant_id, &command, bot).await {
            Ok(envelope) => {
                envelopes.push(envelope);
                dispatched.push(command);
            }
            Err(Undeliverable::Retry(e)) => {
                tracing::warn!(command_id = %command.id, error = %e, "command not sent now: the store could not build it; its lease brings it back");
            }
            Err(Undeliverable::Never(reason)) => {
                tracing::warn!(command_id = %command.id, %reason, "command cannot be delivered");
                let outcome =
                    CommandOutcome { ok: false, result: serde_json::Value::Null, error: Some(reason), acked: false };
                let failed = state.store.complete_command(agent_id, command.id, outcome, state.clock.now()).await?;
                state.publish(tenant_id, EventPayload::CommandStatus((&failed).into())).await;
            }
        }
    }
    Ok(Claimed { envelopes, full, dispatched, tenant_id })
}

/// Why a claimed command has no envelope.
pub enum Undeliverable {
    /// It never will have one (its bot or a secret is gone): it fails with this reason.
    Never(String),
    /// The store could not answer just now: try again later.
    Retry(StoreError),
}

impl From<String> for Undeliverable {
    fn from(reason: String) -> Self {
        Self::Never(reason)
    }
}

impl From<&str> for Undeliverable {
    fn from(reason: &str) -> Self {
        Self::Never(reason.to_owned())
    }
}

/// The envelope of a claimed command, given its bot as read at claim time (`None`: the command
/// names no bot, or its bot no longer exists), or why it cannot be delivered.
pub async fn envelope(
    state: &AppState,
    tenant_id: Id,
    command: &Command,
    bot: Option<DispatchBot>,
) -> Result<CommandEnvelope, Undeliverable> {
    let mut envelope = CommandEnvelope {
        id: command.id,
        kind: command.kind,
        attempt: command.attempt,
        payload: command.payload.clone(),
        seq: command.seq,
        bot: None,
        secrets: BTreeMap::new(),
    };
    if command.bot_id.is_none() {
        return Ok(envelope);
    }
    let bot = match bot {
        Some(bot) => bot,
        // A removal still reaches the agent (it stops and forgets the bot) without a definition.
        None if command.kind == CommandKind::BotRemove => return Ok(envelope),
        None => return Err("the bot no longer exists".into()),
    };
    // Checked at claim time, for every kind: the bot may have moved since the command was
    // queued, and only its current agent may learn its definition and secrets. A removal
    // still tells the old agent to stop and forget it — by id, without the definition.
    if bot.agent_id != command.agent_id {
        return match command.kind {
            CommandKind::BotRemove => Ok(envelope),
            _ => Err("the bot has moved to another agent".into()),
        };
    }
    if matches!(command.kind, CommandKind::BotStart | CommandKind::BotRestart) && !bot.exec.secret_env.is_empty() {
        let names: Vec<String> = bot.exec.secret_env.values().cloned().collect();
        let Some(key) = &state.master_key else {
            return Err("the bot needs secrets but this server has no master key".into());
        };
        let sealed = state.store.sealed_secrets(tenant_id, &names).await.map_err(Undeliverable::Retry)?;
        for (variable, name) in &bot.exec.secret_env {
            let Some(secret) = sealed.iter().find(|s| &s.name == name) else {
                return Err(
                    format!("secret `{name}` (for {variable}) does not exist: create it, then start again").into()
                );
            };
            let value = vault::open(key, secret).map_err(|e| Undeliverable::Never(e.to_string()))?;
            envelope.secrets.insert(name.clone(), value);
        }
    }
    envelope.bot = Some(BotRuntimeSpec {
        bot_id: bot.id,
        name: bot.name.clone(),
        definition_hash: definition_hash(&bot.exec, &bot.restart, &bot.stop),
        exec: bot.exec,
        restart: bot.restart,
        stop: bot.stop,
    });
    Ok(envelope)
}
