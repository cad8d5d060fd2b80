//! Control orders: the one transaction behind every command a person, a script or the
//! supervisor asks for — one order, the orders of concurrent requests grouped into one commit,
//! or a bulk action over thousands of bots. For each order, in one transaction:
//!
//! 1. an `Idempotency-Key` already used in the tenant answers with the first command and
//!    changes nothing (not the desired state, not the sequence, not the queue);
//! 2. the bot is locked and checked (it exists in the tenant, its agent is not revoked, and
//!    not draining if the order is a start or restart);
//! 3. a start, stop or restart takes the bot's next **command sequence number** and sets its
//!    desired state; a sync carries the current number (it orders nothing, it only delivers
//!    the definition);
//! 4. the command is inserted;
//! 5. older still-`queued` commands of the bot that the new one makes pointless are
//!    **superseded** (`cancelled`, "superseded by <id>"): a control command supersedes older
//!    starts, stops, restarts and syncs (its envelope carries the current definition), a sync
//!    supersedes older syncs. Commands already dispatched are the agent's to refuse: it never
//!    runs a command whose sequence number is below one it already ran for the bot.
//!
//! A command for a bot whose agent is connected to this replica and ready (the caller says
//! which agents are: [`Direct`]) skips the queue: it is inserted `dispatched` (attempt 1, its
//! lease running) and its answer carries the bot as the transaction read it, for the caller
//! to build the envelope and hand it to the connection once committed — no claim, no second
//! write. Not for a bot whose start needs secret values (the claim reads them), nor for two
//! orders of a kind for one bot in one transaction (the older stays queued, to be superseded).
//! A delivery that finds the connection gone is returned to the queue by the caller
//! ([`Store::return_undelivered`]); one lost later comes back when its lease expires, like any
//! claimed command.
//!
//! Everything the caller is told comes from this transaction (`RETURNING` and the rows it
//! locked), never from a read after it. If a concurrent transaction takes one of the keys
//! between the check and the insert, the whole transaction is rolled back and run again (the
//! check then finds the key's command).

use std::collections::{BTreeMap, HashMap, HashSet};

use botmox_contract::{
    agents::AgentStatus,
    audit::Actor,
    bots::DesiredState,
    commands::{BotAction, Command, CommandKind, CommandStatus, SkippedBots},
    events::BotStatus,
    Id, Timestamp,
};
use serde::Serialize;

use super::{
    duration_ms,
    rows::{CommandRow, COMMAND_COLUMNS},
};
use crate::store::{
    bots::{desired_str, BotBrief, DispatchBot, StatusRow, STATUS_COLUMNS},
    from_ms, json_rows, new_id, parse_id, to_json, to_ms, with_pool, Backend, Elements, Result, Store, StoreError,
};

/// What an order is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A bot: its agent is the bot's, and a control kind takes its sequence number.
    Bot(Id),
    /// An agent (`agent.exec`, `agent.drain`, the `bot.remove` of a deleted or moved bot).
    Agent { agent_id: Id, bot_id: Option<Id> },
}

/// One command to queue, with what it changes.
#[derive(Debug, Clone)]
pub struct Order {
    pub tenant_id: Id,
    pub target: Target,
    pub kind: CommandKind,
    /// The bot's desired state from now on (start/restart: running, stop: stopped; the
    /// supervisor's reconciliation leaves it as is).
    pub desired: Option<DesiredState>,
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub created_by: Actor,
    pub batch_id: Option<Id>,
}

/// The queue's timing for new commands (the server's settings).
#[derive(Debug, Clone, Copy)]
pub struct QueueTimes {
    pub ttl: std::time::Duration,
    pub lease: std::time::Duration,
    /// Added to a bot command's own stop timeout.
    pub run_timeout: std::time::Duration,
    pub max_attempts: u32,
}

/// The agent an order went to, as the transaction saw it.
#[derive(Debug, Clone)]
pub struct AgentBrief {
    pub id: Id,
    pub name: String,
    pub status: AgentStatus,
    /// Connected (said hello and not silent since), drained or not.
    pub present: bool,
}

/// Which agents take commands straight from the transaction that places them (connected to
/// this replica, their dispatcher running): see the module's doc.
pub type Direct<'a> = &'a (dyn Fn(Id) -> bool + Send + Sync);

/// What became of one order.
#[derive(Debug, Clone)]
pub struct Placed {
    pub command: Command,
    /// False when an earlier command with the same key was returned instead.
    pub created: bool,
    pub agent: AgentBrief,
    /// The bot after the order, when the order changed its desired state.
    pub bot: Option<BotStatus>,
    /// The older commands this one superseded (now `cancelled`).
    pub superseded: Vec<Command>,
    /// The command was placed `dispatched` (see [`Direct`]): its bot as the transaction read
    /// it, to build the envelope from. The caller hands it to the agent's connection.
    pub deliver: Option<DispatchBot>,
}

/// What one transaction did: an answer per order, in order.
pub type Placement = Vec<Result<Placed>>;

/// A bulk action's record: its orders all carry `id` as their `batch_id`.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: Id,
    pub tenant_id: Id,
    pub idempotency_key: Option<String>,
    pub action: BotAction,
    /// Bots the selection named (found or not).
    pub matched: u64,
    pub created_by: Actor,
}

/// A bulk action as recorded.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub id: Id,
    pub action: BotAction,
    pub matched: u64,
    pub accepted: u64,
    pub skipped: Vec<SkippedBots>,
}

/// What placing a batch came to.
#[derive(Debug)]
pub enum BatchPlaced {
    Created(BatchRecord, Placement),
    /// The Idempotency-Key's first batch (nothing changed).
    Existing(BatchRecord),
}

/// How one attempt at the transaction ended.
enum Attempt {
    /// A key was taken by a concurrent transaction: everything was rolled back.
    Raced,
    BatchExists,
    Done(Placement, Option<BatchRecord>),
}

/// Orders per statement: keeps each bound JSON array a few MB at most.
const CHUNK: usize = 2000;

/// Kinds a draining agent refuses.
fn is_start(kind: CommandKind) -> bool {
    matches!(kind, CommandKind::BotStart | CommandKind::BotRestart)
}

/// Kinds that take a new sequence number and set the desired state.
fn is_control(kind: CommandKind) -> bool {
    matches!(kind, CommandKind::BotStart | CommandKind::BotStop | CommandKind::BotRestart)
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    key_tenant: String,
    #[sqlx(flatten)]
    command: CommandRow,
}

#[derive(sqlx::FromRow)]
struct LockedBot {
    bot_tenant: String,
    command_seq: i64,
    /// The definition's JSON, parsed only for a command placed `dispatched`.
    exec: String,
    restart: String,
    /// Whether the bot had queued commands (only then can an order supersede any).
    queued_before: bool,
    #[sqlx(flatten)]
    bot: StatusRow,
    /// The bot's agent, read with it (not locked).
    #[sqlx(flatten)]
    agent: AgentRow,
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    id: String,
    action: String,
    matched: i64,
    accepted: i64,
    skipped: String,
}

impl TryFrom<BatchRow> for BatchRecord {
    type Error = StoreError;

    fn try_from(row: BatchRow) -> Result<Self> {
        Ok(BatchRecord {
            id: parse_id(&row.id)?,
            action: crate::store::parse_json("batch action", &format!("\"{}\"", row.action))?,
            matched: row.matched.max(0) as u64,
            accepted: row.accepted.max(0) as u64,
            skipped: crate::store::parse_json("batch skipped", &row.skipped)?,
        })
    }
}

fn raced() -> StoreError {
    StoreError::Conflict("an Idempotency-Key was being used concurrently: send the request again".into())
}

/// An agent as an order's answer needs it (its columns aliased `agent_*`, so it reads from a
/// join with the bots as well as alone).
#[derive(sqlx::FromRow)]
struct AgentRow {
    agent_ref: String,
    agent_tenant: String,
    agent_name: String,
    agent_status: String,
    agent_present: bool,
}

/// [`AgentRow`]'s columns, from `agents`.
const AGENT_BRIEF: &str = concat!(
    "agents.id AS agent_ref, agents.tenant_id AS agent_tenant, agents.name AS agent_name, ",
    "CASE WHEN agents.drained_at IS NOT NULL AND agents.status <> 'revoked' THEN 'draining' ",
    "ELSE agents.status END AS agent_status, ",
    "agents.status IN ('online', 'draining') AS agent_present"
);

/// The statements, built once per call (they differ between the backends only in the JSON
/// table function and Postgres's row locks).
struct Statements {
    keys: String,
    bots: String,
    agents: String,
    update_bots: String,
    insert: String,
    /// Postgres: the bots' update riding on the insert (a data-modifying `WITH`), so that
    /// both take one round trip; SQLite (in-process, no such `WITH`) runs them apart.
    update_and_insert: Option<String>,
    supersede: String,
    batch: String,
}

impl Store {
    /// Places the orders in one transaction (see the module's doc). The outer error is the
    /// database's (nothing was placed); an order that cannot be placed gets its own error:
    /// `NotFound("bot")`, `Reference` (no such agent), `Conflict` (the agent is revoked).
    pub async fn place_orders(&self, orders: &[Order], times: QueueTimes, now: Timestamp) -> Result<Placement> {
        self.place_orders_direct(orders, times, now, &|_| false).await
    }

    /// [`Store::place_orders`], placing `dispatched` the commands for bots of the agents
    /// `direct` names (see the module's doc).
    pub async fn place_orders_direct(
        &self,
        orders: &[Order],
        times: QueueTimes,
        now: Timestamp,
        direct: Direct<'_>,
    ) -> Result<Placement> {
        if orders.is_empty() {
            return Ok(Placement::new());
        }
        match self.place(orders, None, times, now, direct).await? {
            Attempt::Done(placement, _) => Ok(placement),
            Attempt::Raced | Attempt::BatchExists => Err(raced()),
        }
    }

    /// Places a bulk action's orders and its record in one transaction; with a key already
    /// used for a batch, nothing is placed and the first batch comes back.
    pub async fn place_batch(
        &self,
        batch: &NewBatch,
        orders: &[Order],
        times: QueueTimes,
        now: Timestamp,
    ) -> Result<BatchPlaced> {
        self.place_batch_direct(batch, orders, times, now, &|_| false).await
    }

    /// [`Store::place_batch`], placing `dispatched` the commands for bots of the agents
    /// `direct` names (see the module's doc).
    pub async fn place_batch_direct(
        &self,
        batch: &NewBatch,
        orders: &[Order],
        times: QueueTimes,
        now: Timestamp,
        direct: Direct<'_>,
    ) -> Result<BatchPlaced> {
        if let Some(existing) = self.batch_by_key(batch).await? {
            return Ok(BatchPlaced::Existing(existing));
        }
        match self.place(orders, Some(batch), times, now, direct).await? {
            Attempt::Done(placement, Some(record)) => Ok(BatchPlaced::Created(record, placement)),
            Attempt::BatchExists => self.batch_by_key(batch).await?.map(BatchPlaced::Existing).ok_or_else(raced),
            Attempt::Done(_, None) | Attempt::Raced => Err(raced()),
        }
    }

    async fn place(
        &self,
        orders: &[Order],
        batch: Option<&NewBatch>,
        times: QueueTimes,
        now: Timestamp,
        direct: Direct<'_>,
    ) -> Result<Attempt> {
        let statements = self.control_statements();
        // A key taken by a concurrent transaction between our check and our insert: run again
        // (the check then sees it). Two rounds suffice unless keys keep racing.
        for _ in 0..4 {
            match self.try_place(&statements, orders, batch, times, now, direct).await? {
                Attempt::Raced => continue,
                other => return Ok(other),
            }
        }
        Ok(Attempt::Raced)
    }

    /// The batch recorded under `batch`'s idempotency key, if any.
    async fn batch_by_key(&self, batch: &NewBatch) -> Result<Option<BatchRecord>> {
        let Some(key) = &batch.idempotency_key else { return Ok(None) };
        let row: Option<BatchRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(
                "SELECT id, action, matched, accepted, skipped FROM command_batches \
                 WHERE tenant_id = $1 AND idempotency_key = $2",
            )
            .bind(batch.tenant_id.to_string())
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        row.map(BatchRecord::try_from).transpose()
    }

    /// A batch of the tenant, by id.
    pub async fn get_batch(&self, tenant_id: Id, id: Id) -> Result<BatchRecord> {
        let row: Option<BatchRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(
                "SELECT id, action, matched, accepted, skipped FROM command_batches WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id.to_string())
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?
        });
        row.ok_or(StoreError::NotFound("batch"))?.try_into()
    }

    fn control_statements(&self) -> Statements {
        let lock = match self.backend {
            Backend::Sqlite { .. } => "",
            Backend::Postgres { .. } => "FOR UPDATE",
        };
        let text = |p| self.json_array_rows(p, Elements::Text);
        let json = |p| self.json_array_rows(p, Elements::Json);
        let update_bots = |p| {
            format!(
                "UPDATE bots SET command_seq = v_seq, desired_state = v_desired, updated_at = v_updated \
                 FROM (SELECT value ->> 'id' AS v_id, CAST(value ->> 'seq' AS BIGINT) AS v_seq, \
                              value ->> 'desired' AS v_desired, CAST(value ->> 'updated' AS BIGINT) AS v_updated \
                       FROM {}) AS v \
                 WHERE id = v_id",
                json(p)
            )
        };
        let insert = format!(
            "INSERT INTO commands (id, tenant_id, agent_id, bot_id, kind, status, payload, idempotency_key, \
             created_by_kind, created_by_id, attempt, max_attempts, lease_ms, run_timeout_ms, expires_at, \
             created_at, updated_at, batch_id, bot_seq, dispatched_at, lease_expires_at) \
             SELECT v_id, v_tenant, v_agent, v_bot, v_kind, v_status, v_payload, v_key, v_by_kind, v_by_id, \
                    v_attempt, v_max_attempts, v_lease_ms, v_run_timeout_ms, v_expires_at, $1, $1, v_batch, v_seq, \
                    v_dispatched_at, v_lease_expires_at \
             FROM (SELECT value ->> 'id' AS v_id, value ->> 'tenant' AS v_tenant, value ->> 'agent' AS v_agent, \
                          value ->> 'bot' AS v_bot, value ->> 'kind' AS v_kind, value ->> 'payload' AS v_payload, \
                          value ->> 'key' AS v_key, value ->> 'by_kind' AS v_by_kind, value ->> 'by_id' AS v_by_id, \
                          CAST(value ->> 'max_attempts' AS BIGINT) AS v_max_attempts, \
                          CAST(value ->> 'lease_ms' AS BIGINT) AS v_lease_ms, \
                          CAST(value ->> 'run_timeout_ms' AS BIGINT) AS v_run_timeout_ms, \
                          CAST(value ->> 'expires_at' AS BIGINT) AS v_expires_at, \
                          value ->> 'batch' AS v_batch, CAST(value ->> 'seq' AS BIGINT) AS v_seq, \
                          value ->> 'status' AS v_status, CAST(value ->> 'attempt' AS BIGINT) AS v_attempt, \
                          CAST(value ->> 'dispatched_at' AS BIGINT) AS v_dispatched_at, \
                          CAST(value ->> 'lease_expires_at' AS BIGINT) AS v_lease_expires_at \
                   FROM {}) AS v \
             ORDER BY v_id ON CONFLICT DO NOTHING RETURNING id",
            json("$2")
        );
        let update_and_insert = match self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { .. } => Some(format!("WITH updated_bots AS ({}) {insert}", update_bots("$3"))),
        };
        Statements {
            keys: format!(
                "SELECT tenant_id AS key_tenant, {COMMAND_COLUMNS} FROM commands \
                 WHERE idempotency_key IN (SELECT value FROM {})",
                text("$1")
            ),
            // Locked in id order, so concurrent transactions never wait on each other in a cycle;
            // each with its agent (read, not locked).
            bots: format!(
                "SELECT x.*, {AGENT_BRIEF} FROM \
                     (SELECT tenant_id AS bot_tenant, command_seq, exec, restart, {STATUS_COLUMNS}, \
                             EXISTS (SELECT 1 FROM commands WHERE commands.bot_id = bots.id \
                                     AND commands.status = 'queued') AS queued_before \
                      FROM bots WHERE id IN (SELECT value FROM {}) ORDER BY id {lock}) AS x \
                 JOIN agents ON agents.id = x.agent_id ORDER BY x.id",
                text("$1")
            ),
            // Kept until the commit (no foreign key does it: migration 0014); a bot's agent is
            // kept by the bot's own key while the bot is locked.
            agents: format!(
                "SELECT {AGENT_BRIEF} FROM agents WHERE id IN (SELECT value FROM {}) {}",
                text("$1"),
                self.key_share()
            ),
            update_bots: update_bots("$1"),
            insert,
            update_and_insert,
            supersede: format!(
                "UPDATE commands SET status = 'cancelled', error = 'superseded by ' || v_id, finished_at = $1, \
                 lease_expires_at = NULL, updated_at = $1 \
                 FROM (SELECT value ->> 'id' AS v_id, value ->> 'tenant' AS v_tenant, value ->> 'bot' AS v_bot, \
                              value ->> 'kind' AS v_kind, CAST(value ->> 'seq' AS BIGINT) AS v_seq FROM {}) AS v \
                 WHERE bot_id = v_bot AND tenant_id = v_tenant AND status = 'queued' AND id <> v_id \
                   AND ((v_kind <> 'bot.sync' AND kind IN ('bot.start', 'bot.stop', 'bot.restart', 'bot.sync') \
                         AND COALESCE(bot_seq, 0) < v_seq) \
                     OR (v_kind = 'bot.sync' AND kind = 'bot.sync' AND id < v_id)) \
                 RETURNING {COMMAND_COLUMNS}",
                json("$2")
            ),
            batch: "INSERT INTO command_batches (id, tenant_id, idempotency_key, action, matched, accepted, skipped, \
                    created_by_kind, created_by_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                    ON CONFLICT DO NOTHING RETURNING id"
                .into(),
        }
    }

    /// One attempt at the transaction.
    async fn try_place(
        &self,
        sql: &Statements,
        orders: &[Order],
        batch: Option<&NewBatch>,
        times: QueueTimes,
        now: Timestamp,
        direct: Direct<'_>,
    ) -> Result<Attempt> {
        let now_ms = to_ms(now);
        let keys: Vec<String> = orders.iter().filter_map(|o| o.idempotency_key.clone()).collect();
        let bot_ids: Vec<String> = orders
            .iter()
            .filter_map(|o| match o.target {
                Target::Bot(id) => Some(id.to_string()),
                Target::Agent { .. } => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let outcome: Attempt2 = with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let mut existing = Vec::new();
                for chunk in keys.chunks(CHUNK) {
                    let rows: Vec<KeyRow> =
                        sqlx::query_as(&sql.keys).bind(json_rows(&chunk)).fetch_all(&mut *tx).await?;
                    existing.extend(rows);
                }
                let mut bots = Vec::new();
                for chunk in bot_ids.chunks(CHUNK) {
                    let rows: Vec<LockedBot> =
                        sqlx::query_as(&sql.bots).bind(json_rows(&chunk)).fetch_all(&mut *tx).await?;
                    bots.extend(rows);
                }
                let agent_ids = agents_to_read(orders, &bots, &existing);
                let mut agents = Vec::new();
                for chunk in agent_ids.chunks(CHUNK) {
                    let rows: Vec<AgentRow> =
                        sqlx::query_as(&sql.agents).bind(json_rows(&chunk)).fetch_all(&mut *tx).await?;
                    agents.extend(rows);
                }
                let plan = Plan::make(orders, times, now_ms, existing, bots, agents, direct)?;
                // Only the ids come back: the rest of each row is what the plan wrote (see
                // `NewRow::queued`); returning whole rows was ~30% of the insert's time on SQLite.
                let mut inserted: Vec<String> = Vec::new();
                if let Some(both) = &sql.update_and_insert {
                    let rounds = plan.bot_updates.len().max(plan.inserts.len()).div_ceil(CHUNK);
                    for round in 0..rounds {
                        let ids: Vec<String> = sqlx::query_scalar(both)
                            .bind(now_ms)
                            .bind(json_rows(&nth_chunk(&plan.inserts, round)))
                            .bind(json_rows(&nth_chunk(&plan.bot_updates, round)))
                            .fetch_all(&mut *tx)
                            .await?;
                        inserted.extend(ids);
                    }
                } else {
                    for chunk in plan.bot_updates.chunks(CHUNK) {
                        sqlx::query(&sql.update_bots).bind(json_rows(&chunk)).execute(&mut *tx).await?;
                    }
                    for chunk in plan.inserts.chunks(CHUNK) {
                        let ids: Vec<String> = sqlx::query_scalar(&sql.insert)
                            .bind(now_ms)
                            .bind(json_rows(&chunk))
                            .fetch_all(&mut *tx)
                            .await?;
                        inserted.extend(ids);
                    }
                }
                if inserted.len() != plan.inserts.len() {
                    // A key was taken after our check: start over.
                    tx.rollback().await?;
                    return Ok::<_, StoreError>(Attempt2::Raced);
                }
                let record = match batch {
                    Some(batch) => {
                        let record = plan.batch_record(batch, orders);
                        let created: Option<String> = sqlx::query_scalar(&sql.batch)
                            .bind(batch.id.to_string())
                            .bind(batch.tenant_id.to_string())
                            .bind(&batch.idempotency_key)
                            .bind(action_str(batch.action))
                            .bind(record.matched as i64)
                            .bind(record.accepted as i64)
                            .bind(to_json(&record.skipped))
                            .bind(batch.created_by.kind.as_str())
                            .bind(batch.created_by.id.map(|id| id.to_string()))
                            .bind(now_ms)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if created.is_none() {
                            tx.rollback().await?;
                            return Ok(Attempt2::BatchExists);
                        }
                        Some(record)
                    }
                    None => None,
                };
                let mut superseded = Vec::new();
                for chunk in plan.supersedes.chunks(CHUNK) {
                    let rows: Vec<CommandRow> =
                        sqlx::query_as(&sql.supersede).bind(now_ms).bind(json_rows(&chunk)).fetch_all(&mut *tx).await?;
                    superseded.extend(rows);
                }
                tx.commit().await?;
                Ok(Attempt2::Done(Box::new(plan), inserted, superseded, record))
            }
            .await?
        });
        Ok(match outcome {
            Attempt2::Raced => Attempt::Raced,
            Attempt2::BatchExists => Attempt::BatchExists,
            Attempt2::Done(plan, inserted, superseded, record) => {
                Attempt::Done(plan.answer(inserted, superseded)?, record)
            }
        })
    }
}

/// The `n`th chunk of `items` (empty past the end).
fn nth_chunk<T>(items: &[T], n: usize) -> &[T] {
    items.chunks(CHUNK).nth(n).unwrap_or(&[])
}

/// [`Attempt`] before the answers are made.
enum Attempt2 {
    Raced,
    BatchExists,
    Done(Box<Plan>, Vec<String>, Vec<CommandRow>, Option<BatchRecord>),
}

fn action_str(action: BotAction) -> &'static str {
    match action {
        BotAction::Start => "start",
        BotAction::Stop => "stop",
        BotAction::Restart => "restart",
    }
}

/// The agents the answers need that the bots' read did not bring: the agent targets', the
/// existing commands'.
fn agents_to_read(orders: &[Order], bots: &[LockedBot], existing: &[KeyRow]) -> Vec<String> {
    let known: HashSet<&str> = bots.iter().map(|b| b.agent.agent_ref.as_str()).collect();
    let mut ids: HashSet<String> = HashSet::new();
    for order in orders {
        if let Target::Agent { agent_id, .. } = order.target {
            ids.insert(agent_id.to_string());
        }
    }
    for row in existing {
        ids.insert(row.command.agent_id().to_owned());
    }
    ids.retain(|id| !known.contains(id.as_str()));
    ids.into_iter().collect()
}

/// What the transaction writes, decided from what it read (pure: no database here).
struct Plan {
    /// Per order: where its answer comes from.
    slots: Vec<Slot>,
    agents: HashMap<Id, AgentBrief>,
    /// Bots whose desired state changed, as they are after the transaction.
    changed_bots: HashMap<Id, BotStatus>,
    bot_updates: Vec<BotUpdate>,
    inserts: Vec<NewRow>,
    supersedes: Vec<Supersede>,
    /// Commands placed `dispatched`, with their bots.
    deliveries: HashMap<Id, DispatchBot>,
}

// The rows the statements read from their bound JSON arrays (typed, serialised straight to
// the array's text: no `serde_json::Value` per row). Ids serialise as their hyphenated text.

/// A command to insert.
#[derive(Serialize)]
struct NewRow {
    /// The command as the insert stores it (the statement returns only the ids it inserted).
    #[serde(skip)]
    queued: Command,
    id: Id,
    tenant: Id,
    agent: Id,
    bot: Option<Id>,
    kind: &'static str,
    payload: String,
    key: Option<String>,
    by_kind: &'static str,
    by_id: Option<Id>,
    max_attempts: i64,
    lease_ms: i64,
    run_timeout_ms: i64,
    expires_at: i64,
    batch: Option<Id>,
    seq: Option<i64>,
    status: &'static str,
    attempt: i64,
    dispatched_at: Option<i64>,
    lease_expires_at: Option<i64>,
}

impl NewRow {
    /// Placed already dispatched (see [`Direct`]): attempt 1, its lease running from `now_ms`.
    fn dispatch(&mut self, now_ms: i64) {
        let lease_expires_at = now_ms.saturating_add(self.lease_ms);
        (self.status, self.attempt) = (CommandStatus::Dispatched.as_str(), 1);
        (self.dispatched_at, self.lease_expires_at) = (Some(now_ms), Some(lease_expires_at));
        self.queued.status = CommandStatus::Dispatched;
        self.queued.attempt = 1;
        self.queued.dispatched_at = from_ms(now_ms).ok();
        self.queued.lease_expires_at = from_ms(lease_expires_at).ok();
    }

    /// Back to a plain queued command (a newer order of its bot in the same transaction
    /// supersedes it).
    fn queue(&mut self) {
        (self.status, self.attempt, self.dispatched_at, self.lease_expires_at) =
            (CommandStatus::Queued.as_str(), 0, None, None);
        self.queued.status = CommandStatus::Queued;
        self.queued.attempt = 0;
        self.queued.dispatched_at = None;
        self.queued.lease_expires_at = None;
    }
}

/// A bot's new sequence number and desired state.
#[derive(Serialize)]
struct BotUpdate {
    id: Id,
    seq: i64,
    desired: &'static str,
    updated: i64,
}

/// The newest order of a bot, which supersedes its older queued ones.
#[derive(Serialize, Clone)]
struct Supersede {
    id: Id,
    tenant: Id,
    bot: Id,
    kind: &'static str,
    seq: i64,
}

enum Slot {
    Refused(StoreError),
    /// An earlier command with the order's key (or a duplicate key within these orders).
    Existing(ExistingRef),
    /// The command this transaction inserts with this id.
    New {
        id: Id,
        bot: Option<Id>,
    },
}

enum ExistingRef {
    Row(Box<Command>),
    /// The key of an earlier order in this same transaction.
    Inserted(Id),
}

impl Plan {
    fn make(
        orders: &[Order],
        times: QueueTimes,
        now_ms: i64,
        existing: Vec<KeyRow>,
        locked: Vec<LockedBot>,
        agent_rows: Vec<AgentRow>,
        direct: Direct<'_>,
    ) -> Result<Self> {
        let mut by_key: HashMap<(Id, String), Command> = HashMap::new();
        for row in existing {
            let tenant = parse_id(&row.key_tenant)?;
            let command = Command::try_from(row.command)?;
            if let Some(key) = command.idempotency_key.clone() {
                by_key.insert((tenant, key), command);
            }
        }
        let mut agents: HashMap<Id, (Id, AgentBrief)> = HashMap::new();
        let mut add_agent = |row: AgentRow| -> Result<()> {
            let id = parse_id(&row.agent_ref)?;
            if agents.contains_key(&id) {
                return Ok(());
            }
            let status = AgentStatus::parse(&row.agent_status)
                .ok_or_else(|| StoreError::Corrupt(format!("agent status `{}`", row.agent_status)))?;
            let brief = AgentBrief { id, name: row.agent_name, status, present: row.agent_present };
            agents.insert(id, (parse_id(&row.agent_tenant)?, brief));
            Ok(())
        };
        // The locked bots, with the sequence number as it grows through these orders.
        let mut bots: HashMap<Id, (Id, i64, BotBrief)> = HashMap::with_capacity(locked.len());
        // Bots whose queued commands an order of these may supersede: those that had some,
        // and those given two orders of a kind here (the second supersedes the first).
        let mut may_supersede: HashSet<(Id, bool)> = HashSet::new();
        // The definitions' JSON (exec, restart), parsed only for commands placed `dispatched`.
        let mut definitions: HashMap<Id, (String, String)> = HashMap::with_capacity(locked.len());
        for row in locked {
            let tenant = parse_id(&row.bot_tenant)?;
            let bot = BotBrief::try_from(row.bot)?;
            definitions.insert(bot.status.id, (row.exec, row.restart));
            if row.queued_before {
                may_supersede.extend([(bot.status.id, true), (bot.status.id, false)]);
            }
            add_agent(row.agent)?;
            bots.insert(bot.status.id, (tenant, row.command_seq, bot));
        }
        for row in agent_rows {
            add_agent(row)?;
        }

        let mut slots = Vec::with_capacity(orders.len());
        // Sized up front: a bulk action's 10,000 rows would otherwise be copied at every growth.
        let mut inserts = Vec::with_capacity(orders.len());
        let mut keys_here: HashMap<(Id, String), Id> = HashMap::new();
        // Per bot: (seq, desired) after these orders, and the newest control and sync orders.
        let mut touched: BTreeMap<Id, (i64, i64, Option<DesiredState>)> = BTreeMap::new();
        let mut newest: HashMap<(Id, bool), Supersede> = HashMap::with_capacity(orders.len());
        let mut deliveries: HashMap<Id, DispatchBot> = HashMap::with_capacity(orders.len());
        // Per bot and kind of order: the index in `inserts` of the newest one.
        let mut newest_insert: HashMap<(Id, bool), usize> = HashMap::with_capacity(orders.len());
        for order in orders {
            if let Some(key) = &order.idempotency_key {
                let tk = (order.tenant_id, key.clone());
                if let Some(command) = by_key.get(&tk) {
                    slots.push(Slot::Existing(ExistingRef::Row(Box::new(command.clone()))));
                    continue;
                }
                if let Some(id) = keys_here.get(&tk) {
                    slots.push(Slot::Existing(ExistingRef::Inserted(*id)));
                    continue;
                }
            }
            let (agent_id, bot_id, seq, stop_timeout_ms) = match order.target {
                Target::Bot(bot_id) => {
                    let Some((tenant, seq, bot)) = bots.get_mut(&bot_id).filter(|(t, ..)| *t == order.tenant_id) else {
                        slots.push(Slot::Refused(StoreError::NotFound("bot")));
                        continue;
                    };
                    debug_assert_eq!(*tenant, order.tenant_id);
                    match agents.get(&bot.status.agent_id) {
                        Some((_, agent)) if agent.status == AgentStatus::Revoked => {
                            slots.push(Slot::Refused(revoked(&agent.name)));
                            continue;
                        }
                        Some((_, agent)) if agent.status == AgentStatus::Draining && is_start(order.kind) => {
                            slots.push(Slot::Refused(draining(&agent.name)));
                            continue;
                        }
                        Some(_) => {}
                        None => return Err(StoreError::Corrupt(format!("bot {bot_id} has no agent"))),
                    }
                    let entry = touched.entry(bot_id).or_insert((*seq, *seq, None));
                    if is_control(order.kind) {
                        *seq += 1;
                        entry.1 = *seq;
                        if let Some(desired) = order.desired {
                            entry.2 = Some(desired);
                        }
                    }
                    let stop_ms = i64::try_from(bot.stop.timeout_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
                    (bot.status.agent_id, Some(bot_id), Some(*seq), stop_ms)
                }
                Target::Agent { agent_id, bot_id } => {
                    match agents.get(&agent_id) {
                        Some((tenant, agent)) if *tenant == order.tenant_id => {
                            if agent.status == AgentStatus::Revoked {
                                slots.push(Slot::Refused(revoked(&agent.name)));
                                continue;
                            }
                        }
                        _ => {
                            slots
                                .push(Slot::Refused(StoreError::Reference(format!("agent {agent_id} does not exist"))));
                            continue;
                        }
                    }
                    (agent_id, bot_id, None, 0)
                }
            };
            let id = new_id();
            if let Some(key) = &order.idempotency_key {
                keys_here.insert((order.tenant_id, key.clone()), id);
            }
            let expires_at = now_ms.saturating_add(duration_ms(times.ttl));
            let mut row = NewRow {
                queued: Command {
                    id,
                    agent_id,
                    bot_id,
                    kind: order.kind,
                    status: CommandStatus::Queued,
                    payload: order.payload.clone(),
                    idempotency_key: order.idempotency_key.clone(),
                    created_by: order.created_by.clone(),
                    attempt: 0,
                    max_attempts: times.max_attempts,
                    lease_expires_at: None,
                    expires_at: from_ms(expires_at)?,
                    created_at: from_ms(now_ms)?,
                    dispatched_at: None,
                    acked_at: None,
                    finished_at: None,
                    result: None,
                    error: None,
                    batch_id: order.batch_id,
                    seq: seq.map(|s| s.max(0) as u64),
                },
                id,
                tenant: order.tenant_id,
                agent: agent_id,
                bot: bot_id,
                kind: order.kind.as_str(),
                payload: to_json(&order.payload),
                key: order.idempotency_key.clone(),
                by_kind: order.created_by.kind.as_str(),
                by_id: order.created_by.id,
                max_attempts: i64::from(times.max_attempts),
                lease_ms: duration_ms(times.lease),
                run_timeout_ms: duration_ms(times.run_timeout).saturating_add(stop_timeout_ms),
                expires_at,
                batch: order.batch_id,
                seq,
                status: CommandStatus::Queued.as_str(),
                attempt: 0,
                dispatched_at: None,
                lease_expires_at: None,
            };
            if let (Target::Bot(bot_id), Some(seq)) = (order.target, seq) {
                let control = is_control(order.kind);
                if control || order.kind == CommandKind::BotSync {
                    let older = newest.insert(
                        (bot_id, control),
                        Supersede { id, tenant: order.tenant_id, bot: bot_id, kind: order.kind.as_str(), seq },
                    );
                    if older.is_some() {
                        may_supersede.insert((bot_id, control));
                    }
                    // The older order of the kind stays queued, for this one to supersede.
                    if let Some(older) = newest_insert.insert((bot_id, control), inserts.len()) {
                        let older: &mut NewRow = &mut inserts[older];
                        if deliveries.remove(&older.id).is_some() {
                            older.queue();
                        }
                    }
                    if direct(agent_id) {
                        if let Some(bot) = bots
                            .get(&bot_id)
                            .and_then(|(_, _, bot)| deliverable(bot, definitions.get(&bot_id)?, order.kind))
                        {
                            row.dispatch(now_ms);
                            deliveries.insert(id, bot);
                        }
                    }
                }
            }
            inserts.push(row);
            slots.push(Slot::New { id, bot: bot_id.filter(|_| matches!(order.target, Target::Bot(_))) });
        }

        let mut bot_updates = Vec::new();
        let mut changed_bots = HashMap::new();
        for (bot_id, (seq_before, seq, desired)) in touched {
            let Some((_, _, BotBrief { status: bot, .. })) = bots.get_mut(&bot_id) else { continue };
            let desired_changes = desired.is_some_and(|d| d != bot.desired_state);
            if !desired_changes && seq == seq_before {
                continue;
            }
            let new_desired = desired.unwrap_or(bot.desired_state);
            let updated = if desired_changes { now_ms } else { to_ms(bot.updated_at) };
            bot_updates.push(BotUpdate { id: bot_id, seq, desired: desired_str(new_desired), updated });
            if desired_changes {
                bot.desired_state = new_desired;
                bot.updated_at = from_ms(now_ms)?;
                changed_bots.insert(bot_id, bot.clone());
            }
        }
        let mut supersedes: Vec<Supersede> =
            newest.into_iter().filter(|(key, _)| may_supersede.contains(key)).map(|(_, s)| s).collect();
        supersedes.sort_by_key(|s| s.id);
        let agents = agents.into_iter().map(|(id, (_, brief))| (id, brief)).collect();
        Ok(Plan { slots, agents, changed_bots, bot_updates, inserts, supersedes, deliveries })
    }

    /// A batch's counts: the orders placed, and the refused ones grouped by why.
    fn batch_record(&self, batch: &NewBatch, orders: &[Order]) -> BatchRecord {
        let mut accepted = 0;
        let mut skipped: BTreeMap<&'static str, SkippedBots> = BTreeMap::new();
        for (slot, order) in self.slots.iter().zip(orders) {
            let (reason, detail) = match slot {
                Slot::New { .. } | Slot::Existing(_) => {
                    accepted += 1;
                    continue;
                }
                Slot::Refused(StoreError::NotFound(_)) => ("not_found", "no such bot (deleted, or never existed)"),
                Slot::Refused(StoreError::Conflict(_)) => ("agent_revoked", "the bot's agent is revoked"),
                Slot::Refused(StoreError::AgentDraining(_)) => {
                    ("agent_draining", "the bot's agent is draining: it takes no new starts")
                }
                Slot::Refused(_) => ("refused", "the command could not be queued"),
            };
            let group = skipped.entry(reason).or_insert_with(|| SkippedBots {
                reason: reason.into(),
                count: 0,
                detail: detail.into(),
                bot_ids: Vec::new(),
            });
            group.count += 1;
            if let (Target::Bot(id), true) = (order.target, group.bot_ids.len() < 100) {
                group.bot_ids.push(id);
            }
        }
        let skipped_count: u64 = skipped.values().map(|g| g.count).sum();
        BatchRecord {
            id: batch.id,
            action: batch.action,
            matched: batch.matched.max(accepted + skipped_count),
            accepted,
            skipped: skipped.into_values().collect(),
        }
    }

    /// Answers in the orders' order, from the inserted rows (with what superseding did to them).
    fn answer(self, inserted: Vec<String>, superseded: Vec<CommandRow>) -> Result<Placement> {
        let mut ids = HashSet::with_capacity(inserted.len());
        for id in &inserted {
            ids.insert(parse_id(id)?);
        }
        let mut commands: HashMap<Id, Command> = HashMap::with_capacity(ids.len());
        commands.extend(self.inserts.into_iter().filter(|row| ids.contains(&row.id)).map(|row| (row.id, row.queued)));
        // Each superseded command goes with the order that superseded it (its error names it);
        // one of these orders superseded by a later one is answered as it ended.
        let mut superseded_by: HashMap<Id, Vec<Command>> = HashMap::new();
        for row in superseded {
            let command = Command::try_from(row)?;
            if let Some(new) = commands.get_mut(&command.id) {
                *new = command.clone();
            }
            let by = command.error.as_deref().and_then(|e| e.strip_prefix("superseded by ")).map(parse_id);
            if let Some(by) = by {
                superseded_by.entry(by?).or_default().push(command);
            }
        }
        let agent = |command: &Command, agents: &HashMap<Id, AgentBrief>| {
            agents
                .get(&command.agent_id)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("command {} names an agent that is gone", command.id)))
        };
        let mut answers = Vec::with_capacity(self.slots.len());
        let mut changed_bots = self.changed_bots;
        let mut deliveries = self.deliveries;
        for slot in self.slots {
            answers.push(match slot {
                Slot::Refused(e) => Err(e),
                Slot::Existing(ExistingRef::Row(command)) => agent(&command, &self.agents).map(|agent| Placed {
                    command: *command,
                    created: false,
                    agent,
                    bot: None,
                    superseded: Vec::new(),
                    deliver: None,
                }),
                Slot::Existing(ExistingRef::Inserted(id)) => match commands.get(&id) {
                    Some(command) => agent(command, &self.agents).map(|agent| Placed {
                        command: command.clone(),
                        created: false,
                        agent,
                        bot: None,
                        superseded: Vec::new(),
                        deliver: None,
                    }),
                    None => Err(StoreError::Corrupt(format!("command {id} was not inserted"))),
                },
                Slot::New { id, bot } => match commands.get(&id) {
                    Some(command) => agent(command, &self.agents).map(|agent| Placed {
                        command: command.clone(),
                        created: true,
                        agent,
                        // The bot's event goes with the first order that changed it.
                        bot: bot.and_then(|b| changed_bots.remove(&b)),
                        superseded: {
                            let mut older = superseded_by.remove(&id).unwrap_or_default();
                            older.sort_by_key(|c| c.id);
                            older
                        },
                        deliver: deliveries.remove(&id),
                    }),
                    None => Err(StoreError::Corrupt(format!("command {id} was not inserted"))),
                },
            });
        }
        Ok(answers)
    }
}

/// The bot as the envelope of a command placed `dispatched` needs it, if the command may be:
/// not a start needing secret values (the claim reads them), nor a definition that does not
/// parse (the claim fails the command with the reason).
fn deliverable(bot: &BotBrief, (exec, restart): &(String, String), kind: CommandKind) -> Option<DispatchBot> {
    let exec: botmox_contract::bots::ExecSpec = crate::store::parse_json("bot exec", exec).ok()?;
    if is_start(kind) && !exec.secret_env.is_empty() {
        return None;
    }
    Some(DispatchBot {
        id: bot.status.id,
        agent_id: bot.status.agent_id,
        name: bot.status.name.clone(),
        exec,
        restart: crate::store::parse_json("bot restart", restart).ok()?,
        stop: bot.stop.clone(),
    })
}

fn revoked(name: &str) -> StoreError {
    StoreError::Conflict(format!("agent `{name}` is revoked"))
}

fn draining(name: &str) -> StoreError {
    StoreError::AgentDraining(format!("agent `{name}` is draining: it takes no new starts until it is undrained"))
}
