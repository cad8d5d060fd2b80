//! Dispatch: claim an agent's queued commands (leasing them) and turn each into the envelope
//! the agent needs — for bot commands the bot's definition, and for starts the values of the
//! secrets its `secret_env` names. A command that cannot be built (its bot or a secret is gone)
//! fails here with the reason, instead of reaching the agent half-formed.

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
    store::{definition_hash, CommandOutcome, StoreError},
};

/// At most this many commands are leased to one agent per claim.
pub const CLAIM_BATCH: u32 = 32;

/// What a claim produced: envelopes to send, then dispatched commands to announce.
pub struct Claimed {
    pub envelopes: Vec<CommandEnvelope>,
    dispatched: Vec<Command>,
    tenant_id: Id,
}

impl Claimed {
    /// Publishes the `dispatched` events — after the envelopes are on their way, so announcing
    /// (a `NOTIFY` round trip on Postgres) never delays delivery.
    pub async fn announce(self, state: &AppState) {
        for command in &self.dispatched {
            state.publish(self.tenant_id, EventPayload::CommandStatus(command.into())).await;
        }
    }
}

/// Leases up to [`CLAIM_BATCH`] queued commands of the agent and builds their envelopes.
pub async fn claim(state: &AppState, tenant_id: Id, agent_id: Id) -> Result<Claimed, StoreError> {
    let now = state.clock.now();
    let claimed = state.store.claim_commands(agent_id, CLAIM_BATCH, now).await?;
    let mut envelopes = Vec::with_capacity(claimed.len());
    let mut dispatched = Vec::with_capacity(claimed.len());
    for command in claimed {
        let waited = (now - command.created_at).to_std().unwrap_or_default();
        metrics::histogram!("botmox_command_dispatch_latency_seconds").record(waited.as_secs_f64());
        match envelope(state, tenant_id, &command).await {
            Ok(envelope) => {
                envelopes.push(envelope);
                dispatched.push(command);
            }
            Err(Undeliverable::Retry(e)) => {
                tracing::warn!(command_id = %command.id, error = %e, "command not sent now: the store could not build it; its lease brings it back");
            }
            Err(Undeliverable::Never(reason)) => {
                tracing::warn!(command_id = %command.id, %reason, "command cannot be delivered");
                let outcome = CommandOutcome { ok: false, result: serde_json::Value::Null, error: Some(reason) };
                let failed = state.store.complete_command(agent_id, command.id, outcome, state.clock.now()).await?;
                state.publish(tenant_id, EventPayload::CommandStatus((&failed).into())).await;
            }
        }
    }
    Ok(Claimed { envelopes, dispatched, tenant_id })
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

/// The envelope of a claimed command, or why it cannot be delivered.
pub async fn envelope(state: &AppState, tenant_id: Id, command: &Command) -> Result<CommandEnvelope, Undeliverable> {
    let mut envelope = CommandEnvelope {
        id: command.id,
        kind: command.kind,
        attempt: command.attempt,
        payload: command.payload.clone(),
        seq: command.seq,
        bot: None,
        secrets: BTreeMap::new(),
    };
    let Some(bot_id) = command.bot_id else { return Ok(envelope) };
    let bot = match state.store.get_bot(tenant_id, bot_id).await {
        Ok(bot) => bot,
        // A removal still reaches the agent (it stops and forgets the bot) without a definition.
        Err(StoreError::NotFound(_)) if command.kind == CommandKind::BotRemove => return Ok(envelope),
        Err(StoreError::NotFound(_)) => return Err("the bot no longer exists".to_string().into()),
        Err(e) => return Err(Undeliverable::Retry(e)),
    };
    if matches!(command.kind, CommandKind::BotStart | CommandKind::BotRestart) && !bot.exec.secret_env.is_empty() {
        let names: Vec<String> = bot.exec.secret_env.values().cloned().collect();
        let Some(key) = &state.master_key else {
            return Err("the bot needs secrets but this server has no master key".to_string().into());
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
