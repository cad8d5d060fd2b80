//! `AppState`: what every handler may reach. Cheap to clone (pools and `Arc`s inside).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use botmox_contract::Id;

use crate::{
    auth::{rate_limit::RateLimits, session::SessionKeys},
    clock::Clock,
    events::EventBus,
    group::GroupCommit,
    link::{
        cluster::{Cluster, Message},
        hub::{Control, Hub},
        logs::LogBus,
        presence::Presence,
    },
    secrets::vault::MasterKey,
    store::{CommandOutcome, Order, Placed, Store},
};

use botmox_contract::commands::Command;

/// Events kept for `Last-Event-ID` resumption.
pub const EVENT_BACKLOG: usize = 10_000;

/// Everything a handler or task needs, behind one `Arc`: a clone (axum clones the state for
/// every extractor and middleware of every request) is one atomic increment, not one per
/// field (the per-field clones and drops were ~2% of the server's CPU samples in a profile
/// of `api-queue`).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// [`AppState`]'s fields.
pub struct AppStateInner {
    pub store: Store,
    pub clock: Clock,
    pub sessions: Arc<SessionKeys>,
    pub settings: Arc<Settings>,
    pub limits: Arc<RateLimits>,
    /// `None` when no master key is configured (Postgres without one): the vault is off.
    pub master_key: Option<Arc<MasterKey>>,
    /// Agents connected to this replica.
    pub hub: Arc<Hub>,
    /// Live events of every tenant, with a bounded backlog for `Last-Event-ID`.
    pub events: Arc<EventBus>,
    /// Wake-ups for log followers.
    pub log_bus: Arc<LogBus>,
    /// Heartbeats waiting to be written in the next batch.
    pub presence: Arc<Presence>,
    /// Signals to the other replicas (Postgres `NOTIFY`).
    pub cluster: Arc<Cluster>,
    /// Single control orders, committed in groups (see `group`).
    pub orders: Arc<GroupCommit<Order, Placed>>,
    /// Agents' acks (`agent, commands`), applied in groups across connections.
    pub acks: Arc<AckGroup>,
    /// Agents' results (`agent, [(command, outcome)]`), applied in groups across connections.
    pub results: Arc<ResultGroup>,
    /// Agents' bot state reports (`agent, reports`), applied in groups across connections.
    pub states: Arc<StateGroup>,
    /// Dispatchers' claims (`agent, limit`), taken in groups across connections.
    pub claims: Arc<ClaimGroup>,
    /// The session check of every request made with a session token (`user, session`): a
    /// read, grouped like the writes, so concurrent requests share one statement.
    pub session_checks: Arc<GroupCommit<(Id, Id), Option<crate::store::LiveUser>>>,
    /// The audit entries of state-changing requests, committed in groups after the response.
    pub audit_log: crate::audit::AuditLog,
    /// Cancelled when the server begins to shut down: long-lived responses (event streams, log
    /// follows, long polls) end so the graceful drain can finish.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Attempts of revoked agents already recorded (one incident write per agent per minute).
    pub revoked_attempts: Arc<crate::auth::Cooldown>,
    /// Cancelled when a shutdown begins: `/readyz` answers 503 from then on, so a load
    /// balancer's health check moves new requests away during the grace period (`--shutdown-grace`)
    /// while everything here still works.
    pub draining: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// The state of a server over `store`: loads (or creates) the shared session key.
    pub async fn new(
        store: Store,
        clock: Clock,
        settings: Settings,
        master_key: Option<MasterKey>,
    ) -> anyhow::Result<Self> {
        let sessions = SessionKeys::load_or_create(&store).await?;
        let times = crate::control::queue_times(&settings);
        let cluster = Arc::new(Cluster::start(settings.replica_id.clone(), &store));
        let hub = Arc::new(Hub::default());
        Ok(Self(Arc::new(AppStateInner {
            cluster,
            orders: Arc::new(order_group(store.clone(), clock.clone(), times, hub.clone())),
            audit_log: crate::audit::AuditLog::start(store.clone()),
            session_checks: Arc::new(session_check_group(store.clone(), clock.clone())),
            acks: Arc::new(ack_group(store.clone(), clock.clone())),
            results: Arc::new(result_group(store.clone(), clock.clone())),
            states: Arc::new(state_group(store.clone())),
            claims: Arc::new(claim_group(store.clone(), clock.clone())),
            store,
            clock,
            sessions: Arc::new(sessions),
            limits: Arc::new(RateLimits::new(settings.limits)),
            settings: Arc::new(settings),
            master_key: master_key.map(Arc::new),
            hub,
            events: Arc::new(EventBus::new(EVENT_BACKLOG)),
            log_bus: Arc::default(),
            presence: Arc::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            revoked_attempts: Arc::default(),
            draining: tokio_util::sync::CancellationToken::new(),
        })))
    }
}

/// Orders placed together at most (a bound on one transaction's size).
const MAX_ORDER_GROUP: usize = 512;

/// Commands for agents connected here are placed already dispatched (`hub.takes_deliveries`).
fn order_group(
    store: Store,
    clock: Clock,
    times: crate::store::QueueTimes,
    hub: Arc<Hub>,
) -> GroupCommit<Order, Placed> {
    GroupCommit::start("orders", MAX_ORDER_GROUP, move |orders| {
        let (store, now, hub) = (store.clone(), clock.now(), hub.clone());
        async move { store.place_orders_direct(&orders, times, now, &|agent| hub.takes_deliveries(agent)).await }
    })
}

/// Session checks made together at most.
const MAX_SESSION_CHECKS: usize = 512;

fn session_check_group(store: Store, clock: Clock) -> GroupCommit<(Id, Id), Option<crate::store::LiveUser>> {
    GroupCommit::start("session_checks", MAX_SESSION_CHECKS, move |checks| {
        let (store, now) = (store.clone(), clock.now());
        async move { Ok(store.live_session_users(&checks, now).await?.into_iter().map(Ok).collect()) }
    })
}

/// Connections' frame batches applied together at most (each holds up to a read batch).
const MAX_FRAME_GROUP: usize = 64;
/// Groups of each kind of frame applied side by side (their order across agents does not
/// matter; each connection waits for its own before it sends more). One: every connection's
/// frames that arrive while a group is written wait for the next, so groups are as large as
/// the load makes them. With 4 at once the groups were smaller and the statements more: the
/// api-queue single case ran 6–11% faster on Postgres and 5–15% on SQLite with 1, and
/// dispatch latency did not move (issue 10's closing notes).
const FRAME_GROUPS_AT_ONCE: usize = 1;

/// One answer per frame of a connection's batch: the command as its event carries it.
pub type Answers = Vec<crate::store::Result<botmox_contract::events::CommandSummary>>;
/// A connection's acks: `(agent, commands)`.
pub type AckInput = (Id, Vec<Id>);
/// A connection's results: `(agent, [(command, outcome)])`.
pub type ResultInput = (Id, Vec<(Id, CommandOutcome)>);
/// A connection's bot state reports, in the order sent: `(agent, reports)`.
pub type StateInput = (Id, Vec<botmox_contract::protocol::BotStateReport>);
pub type AckGroup = GroupCommit<AckInput, Answers>;
pub type ResultGroup = GroupCommit<ResultInput, Answers>;
pub type StateGroup = GroupCommit<StateInput, crate::store::StateReports>;
pub type ClaimGroup = GroupCommit<(Id, u32), Claim>;

/// What one dispatcher's claim came to: its commands (leased), and the bots they name — read
/// once for the whole group; `None` if that read failed (the commands then wait for their lease).
pub struct Claim {
    pub commands: Vec<Command>,
    pub bots: Option<Arc<HashMap<Id, crate::store::DispatchBot>>>,
}

/// The acks of every connection that arrived while the previous statement ran: one statement.
fn ack_group(store: Store, clock: Clock) -> AckGroup {
    GroupCommit::start_parallel("acks", MAX_FRAME_GROUP, FRAME_GROUPS_AT_ONCE, move |inputs: Arc<Vec<AckInput>>| {
        let (store, now) = (store.clone(), clock.now());
        async move {
            let acks: Vec<(Id, Id)> =
                inputs.iter().flat_map(|(agent, ids)| ids.iter().map(move |id| (*agent, *id))).collect();
            let answers = store.ack_agents_commands(&acks, now).await?;
            Ok(split(answers, inputs.iter().map(|(_, ids)| ids.len())))
        }
    })
}

/// The results of every connection that arrived while the previous statement ran.
fn result_group(store: Store, clock: Clock) -> ResultGroup {
    GroupCommit::start_parallel(
        "results",
        MAX_FRAME_GROUP,
        FRAME_GROUPS_AT_ONCE,
        move |inputs: Arc<Vec<ResultInput>>| {
            let (store, now) = (store.clone(), clock.now());
            async move {
                let outcomes: Vec<(Id, Id, CommandOutcome)> = inputs
                    .iter()
                    .flat_map(|(agent, outcomes)| outcomes.iter().map(move |(id, o)| (*agent, *id, o.clone())))
                    .collect();
                let answers = store.complete_agents_commands(&outcomes, now).await?;
                Ok(split(answers, inputs.iter().map(|(_, outcomes)| outcomes.len())))
            }
        },
    )
}

/// The bot state reports of every connection that arrived while the previous statement ran:
/// one read and one statement (a bot's reports keep their order: each connection waits for
/// its batch before it reads more, and the statement never lets an older report overtake).
fn state_group(store: Store) -> StateGroup {
    GroupCommit::start_parallel("states", MAX_FRAME_GROUP, FRAME_GROUPS_AT_ONCE, move |inputs: Arc<Vec<StateInput>>| {
        let store = store.clone();
        async move { Ok(store.report_agents_bot_states(&inputs).await?.into_iter().map(Ok).collect()) }
    })
}

/// The claims of every dispatcher woken while the previous statement ran: one statement
/// (Postgres; one transaction on SQLite), then one read of every bot the commands name.
fn claim_group(store: Store, clock: Clock) -> ClaimGroup {
    GroupCommit::start_parallel("claims", MAX_FRAME_GROUP, FRAME_GROUPS_AT_ONCE, move |inputs: Arc<Vec<(Id, u32)>>| {
        let (store, now) = (store.clone(), clock.now());
        async move {
            let claimed = store.claim_agents_commands(&inputs, now).await?;
            let bot_ids: Vec<Id> =
                claimed.iter().flatten().filter_map(|c| c.bot_id).collect::<BTreeSet<_>>().into_iter().collect();
            let bots = match store.dispatch_bots(&bot_ids).await {
                Ok(bots) => Some(Arc::new(bots.into_iter().map(|bot| (bot.id, bot)).collect())),
                Err(e) => {
                    let commands: usize = claimed.iter().map(Vec::len).sum();
                    tracing::warn!(error = %e, commands, "commands not sent now: their bots could not be read; their leases bring them back");
                    None
                }
            };
            Ok(claimed.into_iter().map(|commands| Ok(Claim { commands, bots: bots.clone() })).collect())
        }
    })
}

/// Flat answers back to their inputs, by the inputs' sizes.
fn split<T>(answers: Vec<T>, sizes: impl Iterator<Item = usize>) -> Vec<crate::store::Result<Vec<T>>> {
    let mut answers = answers.into_iter();
    sizes.map(|n| Ok(answers.by_ref().take(n).collect())).collect()
}

/// Telling whoever must know — here and, through `link::cluster`, on the other replicas.
impl AppState {
    async fn broadcast(&self, message: Message) {
        self.cluster.send(message);
    }

    /// Tells the agent's dispatcher, wherever it runs, that commands may be waiting.
    pub async fn wake_agent(&self, agent_id: Id) {
        self.hub.wake(agent_id);
        self.broadcast(Message::Wake { agent: agent_id }).await;
    }

    /// Closes the agent's connection wherever it is (revocation).
    pub async fn close_agent(&self, agent_id: Id, code: u16, reason: &'static str) {
        self.hub.control(agent_id, Control::Close { code, reason });
        self.broadcast(Message::Close { agent: agent_id, code }).await;
    }

    /// Tells the agent, wherever it is connected, to stop executing a command.
    pub async fn cancel_on_agent(&self, agent_id: Id, command_id: Id) {
        self.hub.control(agent_id, Control::Cancel(command_id));
        self.broadcast(Message::Cancel { agent: agent_id, command: command_id }).await;
    }

    /// Publishes an event to the tenant's event streams on every replica.
    pub async fn publish(&self, tenant_id: Id, payload: botmox_contract::events::EventPayload) {
        self.publish_many(vec![(tenant_id, payload)]).await;
    }

    /// Publishes many events (a bulk action's): each to this replica's streams, and to the
    /// other replicas packed into as few signals as fit.
    pub async fn publish_many(&self, events: Vec<(Id, botmox_contract::events::EventPayload)>) {
        let now = self.clock.now();
        // A copy for the other replicas only while there are any (a lone server made one per
        // event, for nobody).
        let peers = self.cluster.has_peers();
        for (tenant, payload) in events {
            let event = EventBus::event(payload, now);
            let copy = peers.then(|| event.clone());
            self.events.publish(tenant, event);
            if let Some(event) = copy {
                self.broadcast(Message::Event { tenant, event: Box::new(event) }).await;
            }
        }
    }

    /// Wakes the followers of a bot's log on every replica.
    pub async fn logs_arrived(&self, bot_id: Id) {
        self.log_bus.notify(bot_id);
        self.broadcast(Message::Logs { bot: bot_id }).await;
    }
}

/// Server settings handlers need at run time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How people and agents reach this server (used in generated command lines and links).
    pub public_url: String,
    /// Proxies whose `X-Forwarded-For` is believed; empty = the socket peer is the client.
    pub trusted_proxies: crate::http::TrustedProxies,
    pub limits: crate::auth::rate_limit::Limits,
    /// Origins allowed to call the API from a browser; empty = CORS off.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// This process among the replicas (recorded as an agent's `connected_replica`).
    pub replica_id: String,
    /// Agents heartbeat this often; three missed → offline.
    pub heartbeat_interval: Duration,
    /// A dispatched command not acked within this goes back to the queue.
    pub command_lease: Duration,
    /// A command not dispatched within this expires.
    pub command_ttl: Duration,
    /// An acked command without a result within this times out.
    pub command_run_timeout: Duration,
    /// Dispatches before a command is dead-lettered.
    pub command_max_attempts: u32,
    /// How often the supervisor ticks (presence, leases, TTLs; reconciliation every 4th tick).
    pub hygiene_interval: Duration,
    /// Log lines kept per bot.
    pub log_keep_lines: u64,
    /// How long logs, finished commands, resolved incidents and audit entries are kept.
    pub retention: crate::supervisor::Retention,
    /// Open streams (events, log follows) re-check their credential this often.
    pub stream_recheck: Duration,
    /// SHA-256 of the server-level `/metrics` token, if one is configured.
    pub metrics_token_hash: Option<String>,
}

impl Settings {
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into(),
            trusted_proxies: Default::default(),
            limits: Default::default(),
            cors_origins: Vec::new(),
            replica_id: format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple()),
            heartbeat_interval: Duration::from_secs(5),
            command_lease: Duration::from_secs(30),
            command_ttl: Duration::from_secs(15 * 60),
            command_run_timeout: Duration::from_secs(5 * 60),
            command_max_attempts: 5,
            hygiene_interval: Duration::from_millis(500),
            log_keep_lines: 10_000,
            retention: Default::default(),
            stream_recheck: Duration::from_secs(5),
            metrics_token_hash: None,
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "botmox".into())
}
