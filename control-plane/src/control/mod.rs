//! The command service: the one path by which anything — a handler, a bulk action, the
//! supervisor's reconciliation — puts commands on the queue. It knows nothing of HTTP:
//!
//! ```text
//! handler / supervisor ──Order──▶ control::submit ──▶ group commit ──▶ store::place_orders_direct
//!                                                    (one transaction: desired state, sequence,
//!                                                     insert, supersede; RETURNING)
//!        ◀──Submitted── hand over or wake each agent once ◀── publish events ◀──┘
//! ```
//!
//! A command for an agent whose connection is here and ready is placed already `dispatched`
//! and handed to that connection once committed (`hub.deliver`): no claim, no wake-up. Any
//! other agent is woken and claims its queued commands (see the store's `control` module).
//!
//! Single orders go through [`crate::group::GroupCommit`]: orders that arrive while a transaction is
//! committing share the next one (one statement set, one durable commit), so concurrent
//! clicks cost one commit between them, never a weaker one. A bulk action ([`bulk`]) is one
//! transaction of its own, and so are many orders given at once ([`submit_many`]: the starts
//! of an import).

pub mod bulk;

use std::collections::{BTreeMap, BTreeSet};

use botmox_contract::{
    agents::AgentStatus,
    audit::Actor,
    bots::DesiredState,
    commands::{BotAction, Command, CommandKind},
    events::EventPayload,
    protocol::CommandEnvelope,
    Id,
};

use crate::{
    link::dispatch,
    state::AppState,
    store::{Order, Placed, QueueTimes, StoreError, Target},
};

/// Why an order was not placed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The agent exists but takes no commands (revoked).
    #[error("{0}")]
    AgentRevoked(String),
    /// A start or restart for a bot on a draining agent.
    #[error("{0}")]
    AgentDraining(String),
    /// The order names an agent the tenant does not have.
    #[error("{0}")]
    NoSuchAgent(String),
    /// A concurrent request held the same Idempotency-Key.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ControlError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ControlError::NotFound(what),
            StoreError::Conflict(detail) if detail.contains("revoked") => ControlError::AgentRevoked(detail),
            StoreError::Conflict(detail) => ControlError::Busy(detail),
            StoreError::Reference(detail) => ControlError::NoSuchAgent(detail),
            StoreError::AgentDraining(detail) => ControlError::AgentDraining(detail),
            other => ControlError::Store(other),
        }
    }
}

/// What a placed order came to.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub command: Command,
    /// False when the Idempotency-Key's first command came back (nothing changed).
    pub created: bool,
    pub agent_name: String,
    pub agent_status: AgentStatus,
    /// Whether the agent is connected (a draining agent may or may not be).
    pub agent_present: bool,
}

impl Submitted {
    /// Whether the agent takes commands now (they reach it at once).
    pub fn agent_online(&self) -> bool {
        self.agent_present
    }
}

/// The command kind and desired state of a bot action.
pub fn action_order(action: BotAction) -> (CommandKind, DesiredState) {
    match action {
        BotAction::Start => (CommandKind::BotStart, DesiredState::Running),
        BotAction::Stop => (CommandKind::BotStop, DesiredState::Stopped),
        BotAction::Restart => (CommandKind::BotRestart, DesiredState::Running),
    }
}

/// An order for a bot action (start, stop, restart), setting its desired state.
pub fn bot_action(tenant_id: Id, bot_id: Id, action: BotAction, key: Option<String>, by: Actor) -> Order {
    let (kind, desired) = action_order(action);
    Order {
        tenant_id,
        target: Target::Bot(bot_id),
        kind,
        desired: Some(desired),
        payload: serde_json::json!({}),
        idempotency_key: key,
        created_by: by,
        batch_id: None,
    }
}

/// The queue's timing for new commands, from the settings.
pub fn queue_times(s: &crate::state::Settings) -> QueueTimes {
    QueueTimes {
        ttl: s.command_ttl,
        lease: s.command_lease,
        run_timeout: s.command_run_timeout,
        max_attempts: s.command_max_attempts,
    }
}

/// Places one order (sharing a commit with concurrent ones), then wakes the agent and
/// publishes what changed.
pub async fn submit(state: &AppState, order: Order) -> Result<Submitted, ControlError> {
    let tenant_id = order.tenant_id;
    let placed = state.orders.submit(order).await;
    let mut submitted = announce(state, vec![(tenant_id, placed)]).await;
    submitted.pop().unwrap_or(Err(ControlError::Store(StoreError::Corrupt("no answer for an order".into()))))
}

/// Places many orders in one transaction of their own (not a group commit: it may be
/// thousands, e.g. the starts of an import), then wakes each agent once and publishes what
/// changed. One answer per order, in order; the outer error is the store's (nothing placed).
pub async fn submit_many(
    state: &AppState,
    orders: Vec<Order>,
) -> Result<Vec<Result<Submitted, ControlError>>, ControlError> {
    let direct = |agent| state.hub.takes_deliveries(agent);
    let placement =
        state.store.place_orders_direct(&orders, queue_times(&state.settings), state.clock.now(), &direct).await?;
    let answers = orders.iter().map(|order| order.tenant_id).zip(placement).collect();
    Ok(announce(state, answers).await)
}

/// Tells whoever must know about what a committed transaction did: the commands placed
/// already dispatched go to their agents' connections here (one hand-over per agent), every
/// other agent that got a command is woken once, then the new and superseded commands' events
/// and the bots' changed desired states. Each answer comes with its order's tenant (events
/// are per tenant).
pub(crate) async fn announce(
    state: &AppState,
    mut answers: Vec<(Id, crate::store::Result<Placed>)>,
) -> Vec<Result<Submitted, ControlError>> {
    let mut agents = BTreeSet::new();
    // Per agent: its tenant, and the envelopes of the commands placed dispatched to it. Handed
    // over before the events and answers are assembled: the agents start while this goes on.
    let mut deliveries: BTreeMap<Id, (Id, Vec<CommandEnvelope>)> = BTreeMap::new();
    for (tenant_id, answer) in &mut answers {
        let Ok(placed) = answer else { continue };
        if !placed.created {
            continue;
        }
        match placed.deliver.take() {
            // No secrets to read (the store places none such dispatched): this only
            // assembles the envelope, or says why it cannot be.
            Some(bot) => match dispatch::envelope(state, *tenant_id, &placed.command, Some(bot)).await {
                Ok(envelope) => deliveries
                    .entry(placed.command.agent_id)
                    .or_insert_with(|| (*tenant_id, Vec::new()))
                    .1
                    .push(envelope),
                Err(_) => {
                    // Unreachable in practice; the lease brings it back to the queue and the
                    // claim fails it with the reason.
                    tracing::warn!(command_id = %placed.command.id, "a command placed dispatched has no envelope");
                }
            },
            None => {
                agents.insert(placed.command.agent_id);
            }
        }
    }
    // Commands returned to the queue: their events go after the ones saying they were placed.
    let mut requeued_events: Vec<(Id, EventPayload)> = Vec::new();
    for (agent_id, (tenant_id, envelopes)) in deliveries {
        metrics::histogram!("botmox_command_dispatch_latency_seconds").record_many(0.0, envelopes.len());
        if let Err(returned) = state.hub.deliver(agent_id, envelopes) {
            // The connection went away since the transaction: back to the queue, for the
            // agent's next connection (here or on another replica) to claim.
            let ids: Vec<Id> = returned.iter().map(|envelope| envelope.id).collect();
            match state.store.return_undelivered(agent_id, &ids, state.clock.now()).await {
                Ok(requeued) => {
                    requeued_events.extend(requeued.iter().map(|c| (tenant_id, EventPayload::CommandStatus(c.into()))));
                }
                Err(e) => tracing::warn!(%agent_id, error = %e, "undelivered commands wait for their lease"),
            }
            agents.insert(agent_id);
        }
    }
    for agent_id in agents {
        state.wake_agent(agent_id).await;
    }
    let mut events: Vec<(Id, EventPayload)> = Vec::with_capacity(answers.len() * 2 + requeued_events.len());
    let mut results = Vec::with_capacity(answers.len());
    for (tenant_id, answer) in answers {
        results.push(match answer {
            Ok(Placed { command, created, agent, bot, superseded, deliver: _ }) => {
                if created {
                    events.push((tenant_id, EventPayload::CommandStatus((&command).into())));
                    if let Some(bot) = bot {
                        events.push((tenant_id, EventPayload::BotState(bot)));
                    }
                }
                for older in &superseded {
                    tracing::debug!(command_id = %older.id, by = %command.id, "command superseded");
                    events.push((tenant_id, EventPayload::CommandStatus(older.into())));
                }
                Ok(Submitted {
                    command,
                    created,
                    agent_name: agent.name,
                    agent_status: agent.status,
                    agent_present: agent.present,
                })
            }
            Err(e) => Err(e.into()),
        });
    }
    events.extend(requeued_events);
    state.publish_many(events).await;
    results
}
