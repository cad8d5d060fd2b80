//! The durable command queue: enqueue (idempotent), claim with a lease, ack, complete, cancel,
//! TTL expiry, lease re-queue and dead-lettering. The lifecycle is SPEC §3's:
//!
//! ```text
//! queued ──claim──▶ dispatched ──ack──▶ running ──complete──▶ succeeded | failed
//!   │  ▲               │   │                 │
//!   │  └─lease expired─┘   └──complete──▶    └─deadline passed──▶ timed_out
//!   │     (attempt < max)   (result without ack)
//!   ├─TTL passed──▶ expired          dispatched, lease expired, attempt = max ──▶ dead_lettered
//!   └─cancel (also from dispatched, running)──▶ cancelled
//! ```
//!
//! Any other transition is refused with [`StoreError::InvalidTransition`] and changes nothing:
//! every transition is one guarded `UPDATE … WHERE status IN (…) RETURNING …` (the sweep is
//! one transaction), and only when it matched no row is the row read, to say why. A few
//! choices the diagram does not show:
//!
//! - An ack or result for a `dispatched` command is taken even after its lease passed, until
//!   a sweep has re-queued it (the agent did get it).
//! - A re-queued command keeps its TTL: once that passed, it is expired rather than delivered
//!   late (a stale `bot.start` must not run minutes after the operator clicked).
//! - Repeats an agent may send (ack of a `running` command, the same result again) return the
//!   command unchanged.
//!
//! `batch.rs` holds the bulk forms (bulk enqueue, coalesced acks and results), `reads.rs`
//! the queries, `rows.rs` the row type.

mod batch;
mod control;
mod reads;
mod rows;

use std::{collections::HashMap, time::Duration};

use botmox_contract::{
    agents::AgentStatus,
    audit::Actor,
    commands::{Command, CommandKind, CommandStatus},
    Id, Timestamp,
};

pub use self::control::{
    AgentBrief, BatchPlaced, BatchRecord, Direct, NewBatch, Order, Placed, Placement, QueueTimes, Target,
};
use self::rows::{into_commands, CommandRow, COMMAND_COLUMNS};
use super::{json_rows, new_id, to_json, to_ms, with_pool, Backend, Elements, Result, Store, StoreError};

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub tenant_id: Id,
    pub agent_id: Id,
    pub bot_id: Option<Id>,
    pub kind: CommandKind,
    pub payload: serde_json::Value,
    /// Unique per tenant: a repeat returns the first command.
    pub idempotency_key: Option<String>,
    pub created_by: Actor,
    /// Not dispatched within this → `expired`.
    pub ttl: Duration,
    /// Dispatched and not acked within this → back to `queued` (or dead-lettered).
    pub lease: Duration,
    /// Acked and no result within this → `timed_out`.
    pub run_timeout: Duration,
    /// Dispatches allowed before dead-lettering.
    pub max_attempts: u32,
}

/// The result of an enqueue: a new command, or the first one with the same idempotency key.
#[derive(Debug, Clone)]
pub enum Enqueued {
    Created(Command),
    Existing(Command),
}

/// How an agent says a command ended.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    pub ok: bool,
    pub result: serde_json::Value,
    pub error: Option<String>,
    /// The agent's ack of the command came with this result (in one read batch) and was
    /// folded into it: the write stamps `acked_at` as the ack would have, if it is not set.
    pub acked: bool,
}

/// What one pass of lease/deadline hygiene changed.
#[derive(Debug, Clone, Default)]
pub struct LeaseSweep {
    pub requeued: Vec<Command>,
    pub dead_lettered: Vec<Command>,
    pub timed_out: Vec<Command>,
}

/// Filters of `GET /commands`, newest first.
#[derive(Debug, Clone, Default)]
pub struct CommandFilter {
    /// Kinds left out (those the reader may not see).
    pub hidden_kinds: Vec<CommandKind>,
    pub status: Option<CommandStatus>,
    pub agent_id: Option<Id>,
    pub bot_id: Option<Id>,
    /// Only the commands of this bulk action.
    pub batch_id: Option<Id>,
    /// Only commands older than this id (the API's cursor).
    pub before_id: Option<Id>,
    pub limit: u32,
}

impl Enqueued {
    /// The command, whichever way it came.
    pub fn command(&self) -> &Command {
        match self {
            Enqueued::Created(c) | Enqueued::Existing(c) => c,
        }
    }

    pub fn into_command(self) -> Command {
        match self {
            Enqueued::Created(c) | Enqueued::Existing(c) => c,
        }
    }

    pub fn is_created(&self) -> bool {
        matches!(self, Enqueued::Created(_))
    }
}

/// The longest TTL, lease or run timeout the queue stores: far beyond any sane setting, and
/// small enough that `now + duration` stays a representable time.
const MAX_DURATION_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(MAX_DURATION_MS)
}

/// The condition of the `commands_inflight_lease` partial index, word for word: SQLite uses a
/// partial index only when the query states its condition (it does not infer
/// `status IN ('dispatched', 'running')` from `status = 'dispatched'`; Postgres does).
const IN_FLIGHT: &str = "status IN ('dispatched', 'running')";

/// Why a guarded `UPDATE … WHERE status IN (…)` matched nothing. `current` is the row read
/// afterwards: gone (or not the caller's) → `NotFound`; already where the caller wanted it and
/// `repeat_ok` → that row, unchanged (an idempotent repeat); otherwise the refused transition.
fn refused(id: Id, current: Option<CommandRow>, to: CommandStatus, repeat_ok: bool) -> Result<Command> {
    let row = current.ok_or(StoreError::NotFound("command"))?;
    let from = row.status()?;
    if repeat_ok && from == to {
        return row.try_into();
    }
    Err(StoreError::InvalidTransition { id, from: from.as_str(), to: to.as_str() })
}

impl Store {
    /// Queues a command for `new.agent_id`, which must be an agent of `new.tenant_id`. With an
    /// idempotency key already used in the tenant, nothing is inserted and the first command
    /// comes back as [`Enqueued::Existing`]; concurrent repeats agree on one command (the
    /// unique index decides, not a prior read).
    pub async fn enqueue_command(&self, new: NewCommand, now: Timestamp) -> Result<Enqueued> {
        let now_ms = to_ms(now);
        let tenant = new.tenant_id.to_string();
        // One statement: the agent check (it exists in the tenant and is not revoked, and is
        // kept until the command is committed) is the SELECT, the idempotency check is the conflict.
        let sql = format!(
            "INSERT INTO commands (id, tenant_id, agent_id, bot_id, kind, status, payload, idempotency_key, \
             created_by_kind, created_by_id, attempt, max_attempts, lease_ms, run_timeout_ms, expires_at, \
             created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, 0, $10, $11, $12, $13, $14, $14 \
             FROM agents WHERE tenant_id = $2 AND id = $3 AND status <> 'revoked' {} \
             ON CONFLICT DO NOTHING RETURNING {COMMAND_COLUMNS}",
            self.key_share()
        );
        let inserted: Option<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql)
                .bind(new_id().to_string())
                .bind(&tenant)
                .bind(new.agent_id.to_string())
                .bind(new.bot_id.map(|id| id.to_string()))
                .bind(new.kind.as_str())
                .bind(to_json(&new.payload))
                .bind(&new.idempotency_key)
                .bind(new.created_by.kind.as_str())
                .bind(new.created_by.id.map(|id| id.to_string()))
                .bind(i64::from(new.max_attempts))
                .bind(duration_ms(new.lease))
                .bind(duration_ms(new.run_timeout))
                .bind(now_ms.saturating_add(duration_ms(new.ttl)))
                .bind(now_ms)
                .fetch_optional(pool)
                .await?
        });
        match inserted {
            Some(row) => Ok(Enqueued::Created(row.try_into()?)),
            None => self.not_inserted(&new).await,
        }
    }

    /// Why an enqueue inserted nothing: the key was taken (the first command is committed by
    /// now: Postgres waited for it, SQLite's single writer ran it before us), or the agent is
    /// not the tenant's, or it is revoked (`Conflict`).
    async fn not_inserted(&self, new: &NewCommand) -> Result<Enqueued> {
        if let Some(key) = &new.idempotency_key {
            let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE tenant_id = $1 AND idempotency_key = $2");
            let existing: Option<CommandRow> = with_pool!(self, read, |pool| {
                sqlx::query_as(&sql).bind(new.tenant_id.to_string()).bind(key).fetch_optional(pool).await?
            });
            if let Some(row) = existing {
                return Ok(Enqueued::Existing(row.try_into()?));
            }
        }
        match self.get_agent(new.tenant_id, new.agent_id).await {
            Ok(agent) if agent.status == AgentStatus::Revoked => {
                Err(StoreError::Conflict(format!("agent `{}` is revoked", agent.name)))
            }
            Ok(_) | Err(StoreError::NotFound(_)) => {
                Err(StoreError::Reference(format!("agent {} does not exist", new.agent_id)))
            }
            Err(e) => Err(e),
        }
    }

    /// Claims the oldest dispatchable command of an agent (see [`Store::claim_commands`]).
    pub async fn claim_next_command(&self, agent_id: Id, now: Timestamp) -> Result<Option<Command>> {
        Ok(self.claim_commands(agent_id, 1, now).await?.pop())
    }

    /// Claims up to `limit` of the agent's oldest `queued` commands whose TTL has not passed:
    /// each becomes `dispatched` with attempt + 1 and a lease of its `lease`, in one statement.
    /// Returned oldest first. Concurrent claimers never get the same command: Postgres skips
    /// rows another claimer holds (`SKIP LOCKED`, so a claim racing another one for the same
    /// agent may come back short), SQLite's single writer runs one claim at a time.
    pub async fn claim_commands(&self, agent_id: Id, limit: u32, now: Timestamp) -> Result<Vec<Command>> {
        Ok(self.claim_agents_commands(&[(agent_id, limit)], now).await?.pop().unwrap_or_default())
    }

    /// [`Store::claim_commands`] for several agents (`(agent, limit)`) at once: what the
    /// dispatchers woken together claim. Answers in the order of `claims`; an agent named
    /// twice has its claims served in turn from one pick of their summed limits.
    ///
    /// On Postgres it is one statement (a `LATERAL` pick per agent). SQLite has no `LATERAL`:
    /// there it is one transaction on the writer with the single-agent statement per agent,
    /// which still saves a commit per agent.
    pub async fn claim_agents_commands(&self, claims: &[(Id, u32)], now: Timestamp) -> Result<Vec<Vec<Command>>> {
        let mut limits: Vec<(Id, u32)> = Vec::new();
        for (agent, limit) in claims {
            match limits.iter_mut().find(|(a, _)| a == agent) {
                Some((_, total)) => *total = total.saturating_add(*limit),
                None => limits.push((*agent, *limit)),
            }
        }
        let set = "UPDATE commands SET status = 'dispatched', attempt = attempt + 1, dispatched_at = $2, \
                   lease_expires_at = $2 + lease_ms, updated_at = $2 \
                   FROM picked WHERE id = picked_id AND status = 'queued'";
        // MATERIALIZED: the picking subquery runs exactly once, whatever plan is chosen.
        // Relaxed durability: a claim lost in a database crash is only a redelivery.
        let rows: Vec<CommandRow> = match &self.backend {
            Backend::Sqlite { write, .. } => {
                let sql = format!(
                    "WITH picked AS MATERIALIZED (\
                         SELECT id AS picked_id FROM commands \
                         WHERE agent_id = $1 AND status = 'queued' AND expires_at > $2 ORDER BY id LIMIT $3) \
                     {set} RETURNING {COMMAND_COLUMNS}"
                );
                let claim = |(agent, limit): &(Id, u32)| {
                    sqlx::query_as::<_, CommandRow>(&sql)
                        .bind(agent.to_string())
                        .bind(to_ms(now))
                        .bind(i64::from(*limit))
                };
                if let [one] = limits.as_slice() {
                    claim(one).fetch_all(write).await?
                } else {
                    let mut tx = write.begin().await?;
                    let mut rows = Vec::new();
                    for each in &limits {
                        rows.extend(claim(each).fetch_all(&mut *tx).await?);
                    }
                    tx.commit().await?;
                    rows
                }
            }
            Backend::Postgres { relaxed, .. } => {
                let sql = format!(
                    "WITH picked AS MATERIALIZED (\
                         SELECT c.id AS picked_id \
                         FROM (SELECT value ->> 'agent' AS v_agent, CAST(value ->> 'limit' AS BIGINT) AS v_limit \
                               FROM {}) AS a \
                         CROSS JOIN LATERAL (SELECT id FROM commands \
                             WHERE agent_id = a.v_agent AND status = 'queued' AND expires_at > $2 \
                             ORDER BY id LIMIT a.v_limit FOR UPDATE SKIP LOCKED) AS c) \
                     {set} RETURNING {COMMAND_COLUMNS}",
                    self.json_array_rows("$1", Elements::Json)
                );
                let values: Vec<serde_json::Value> =
                    limits.iter().map(|(agent, limit)| serde_json::json!({ "agent": agent, "limit": limit })).collect();
                sqlx::query_as(&sql).bind(json_rows(&values)).bind(to_ms(now)).fetch_all(relaxed).await?
            }
        };
        // Oldest first, per agent; each claim takes its share in turn.
        let mut by_agent: HashMap<Id, std::collections::VecDeque<Command>> = HashMap::new();
        for command in into_commands(rows)? {
            by_agent.entry(command.agent_id).or_default().push_back(command);
        }
        Ok(claims
            .iter()
            .map(|(agent, limit)| {
                let queue = by_agent.entry(*agent).or_default();
                let take = (*limit as usize).min(queue.len());
                queue.drain(..take).collect()
            })
            .collect())
    }

    /// The agent received `command_id`: `dispatched → running`, and the lease becomes the
    /// execution deadline (`now + run_timeout`). Acking a `running` command again returns it
    /// unchanged; a command of another agent is `NotFound`.
    pub async fn ack_command(&self, agent_id: Id, command_id: Id, now: Timestamp) -> Result<Command> {
        let sql = format!(
            "UPDATE commands SET status = 'running', acked_at = $1, lease_expires_at = $1 + run_timeout_ms, \
             updated_at = $1 WHERE id = $2 AND agent_id = $3 AND status = 'dispatched' RETURNING {COMMAND_COLUMNS}"
        );
        // Relaxed durability: an ack lost in a database crash leaves the command `dispatched`;
        // its lease brings it back and the agent answers the redelivery from its journal.
        let row: Option<CommandRow> = with_pool!(self, relaxed, |pool| {
            sqlx::query_as(&sql)
                .bind(to_ms(now))
                .bind(command_id.to_string())
                .bind(agent_id.to_string())
                .fetch_optional(pool)
                .await?
        });
        match row {
            Some(row) => row.try_into(),
            None => {
                refused(command_id, self.agent_command_row(agent_id, command_id).await?, CommandStatus::Running, true)
            }
        }
    }

    /// The agent's answer: `dispatched | running → succeeded | failed`, with the result, and
    /// the lease cleared. The same answer again (a redelivery answered from the agent's
    /// journal) returns the finished command unchanged; any other terminal status refuses.
    pub async fn complete_command(
        &self,
        agent_id: Id,
        command_id: Id,
        outcome: CommandOutcome,
        now: Timestamp,
    ) -> Result<Command> {
        let to = if outcome.ok { CommandStatus::Succeeded } else { CommandStatus::Failed };
        let result = (!outcome.result.is_null()).then(|| to_json(&outcome.result));
        self.finish_command(agent_id, command_id, to, result, outcome.error, outcome.acked, now).await
    }

    /// The agent did not run the command: it had run a newer one for the same bot already.
    /// `dispatched | running → cancelled` with the agent's reason; a repeat returns the
    /// command unchanged.
    pub async fn supersede_command(
        &self,
        agent_id: Id,
        command_id: Id,
        reason: &str,
        now: Timestamp,
    ) -> Result<Command> {
        self.finish_command(agent_id, command_id, CommandStatus::Cancelled, None, Some(reason.to_owned()), false, now)
            .await
    }

    /// An agent's last word on a command it holds: `dispatched | running → to`, the lease
    /// cleared (and `acked_at` stamped, unless set, when the agent's ack came with it); the
    /// same word again returns the command unchanged.
    #[allow(clippy::too_many_arguments)]
    async fn finish_command(
        &self,
        agent_id: Id,
        command_id: Id,
        to: CommandStatus,
        result: Option<String>,
        error: Option<String>,
        acked: bool,
        now: Timestamp,
    ) -> Result<Command> {
        let sql = format!(
            "UPDATE commands SET status = $1, result = $2, error = $3, finished_at = $4, \
             acked_at = CASE WHEN $7 THEN COALESCE(acked_at, $4) ELSE acked_at END, lease_expires_at = NULL, \
             updated_at = $4 WHERE id = $5 AND agent_id = $6 AND status IN ('dispatched', 'running') \
             RETURNING {COMMAND_COLUMNS}"
        );
        let row: Option<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql)
                .bind(to.as_str())
                .bind(&result)
                .bind(&error)
                .bind(to_ms(now))
                .bind(command_id.to_string())
                .bind(agent_id.to_string())
                .bind(acked)
                .fetch_optional(pool)
                .await?
        });
        match row {
            Some(row) => row.try_into(),
            None => refused(command_id, self.agent_command_row(agent_id, command_id).await?, to, true),
        }
    }

    /// Someone with the right to do so gave up on a command that has not ended.
    #[tracing::instrument(skip(self), fields(tenant_id = %tenant_id, command_id = %command_id))]
    pub async fn cancel_command(&self, tenant_id: Id, command_id: Id, now: Timestamp) -> Result<Command> {
        let sql = format!(
            "UPDATE commands SET status = 'cancelled', finished_at = $1, lease_expires_at = NULL, updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND status IN ('queued', 'dispatched', 'running') \
             RETURNING {COMMAND_COLUMNS}"
        );
        let row: Option<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql)
                .bind(to_ms(now))
                .bind(tenant_id.to_string())
                .bind(command_id.to_string())
                .fetch_optional(pool)
                .await?
        });
        match row {
            Some(row) => row.try_into(),
            None => refused(
                command_id,
                self.tenant_command_row(tenant_id, command_id).await?,
                CommandStatus::Cancelled,
                false,
            ),
        }
    }

    /// A bot moved away from `agent_id`: its commands still queued for that agent are
    /// `cancelled` (they would carry its definition to a host that no longer runs it).
    /// Returns them.
    pub async fn cancel_moved_bot_commands(
        &self,
        tenant_id: Id,
        bot_id: Id,
        agent_id: Id,
        now: Timestamp,
    ) -> Result<Vec<Command>> {
        let sql = format!(
            "UPDATE commands SET status = 'cancelled', finished_at = $1, updated_at = $1, \
             error = 'the bot moved to another agent' \
             WHERE tenant_id = $2 AND bot_id = $3 AND agent_id = $4 AND status = 'queued' RETURNING {COMMAND_COLUMNS}"
        );
        let rows: Vec<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql)
                .bind(to_ms(now))
                .bind(tenant_id.to_string())
                .bind(bot_id.to_string())
                .bind(agent_id.to_string())
                .fetch_all(pool)
                .await?
        });
        into_commands(rows)
    }

    /// Commands placed `dispatched` for a connection that was gone when they were handed to it
    /// (see [`Store::place_orders_direct`]): back to `queued` at once (no agent saw them: the
    /// attempt is not counted, the lease is cleared) rather than after their lease, for the
    /// agent's next connection to claim. Only the agent's own, still `dispatched`; returns them.
    pub async fn return_undelivered(&self, agent_id: Id, ids: &[Id], now: Timestamp) -> Result<Vec<Command>> {
        let sql = format!(
            "UPDATE commands SET status = 'queued', attempt = attempt - 1, dispatched_at = NULL, \
             lease_expires_at = NULL, updated_at = $1 \
             WHERE agent_id = $2 AND status = 'dispatched' AND attempt > 0 AND id IN (SELECT value FROM {}) \
             RETURNING {COMMAND_COLUMNS}",
            self.json_array_rows("$3", Elements::Text)
        );
        let ids: Vec<String> = ids.iter().map(Id::to_string).collect();
        let rows: Vec<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql)
                .bind(to_ms(now))
                .bind(agent_id.to_string())
                .bind(json_rows(&ids))
                .fetch_all(pool)
                .await?
        });
        into_commands(rows)
    }

    /// Every `queued` command whose TTL has passed becomes `expired` (all tenants; the
    /// supervisor's hygiene). Returns them oldest first.
    #[tracing::instrument(skip(self))]
    pub async fn expire_commands(&self, now: Timestamp) -> Result<Vec<Command>> {
        let sql = format!(
            "UPDATE commands SET status = 'expired', finished_at = $1, updated_at = $1 \
             WHERE status = 'queued' AND expires_at <= $1 RETURNING {COMMAND_COLUMNS}"
        );
        let rows: Vec<CommandRow> =
            with_pool!(self, write, |pool| { sqlx::query_as(&sql).bind(to_ms(now)).fetch_all(pool).await? });
        into_commands(rows)
    }

    /// Lease hygiene, in one transaction: a `dispatched` command whose lease has passed goes
    /// back to `queued` (lease cleared) while it has attempts left, else `dead_lettered`; a
    /// `running` command past its execution deadline is `timed_out`. Each statement repeats the
    /// condition of the in-flight index ([`IN_FLIGHT`]), so SQLite uses it instead of reading
    /// every command ever kept at every supervisor tick.
    #[tracing::instrument(skip(self))]
    pub async fn sweep_leases(&self, now: Timestamp) -> Result<LeaseSweep> {
        let requeue = format!(
            "UPDATE commands SET status = 'queued', lease_expires_at = NULL, updated_at = $1 \
             WHERE {IN_FLIGHT} AND status = 'dispatched' AND lease_expires_at <= $1 AND attempt < max_attempts \
             RETURNING {COMMAND_COLUMNS}"
        );
        let dead_letter = format!(
            "UPDATE commands SET status = 'dead_lettered', lease_expires_at = NULL, finished_at = $1, updated_at = $1 \
             WHERE {IN_FLIGHT} AND status = 'dispatched' AND lease_expires_at <= $1 AND attempt >= max_attempts \
             RETURNING {COMMAND_COLUMNS}"
        );
        let time_out = format!(
            "UPDATE commands SET status = 'timed_out', lease_expires_at = NULL, finished_at = $1, updated_at = $1 \
             WHERE {IN_FLIGHT} AND status = 'running' AND lease_expires_at <= $1 RETURNING {COMMAND_COLUMNS}"
        );
        let now_ms = to_ms(now);
        let (requeued, dead_lettered, timed_out): (Vec<CommandRow>, Vec<CommandRow>, Vec<CommandRow>) =
            with_pool!(self, write, |pool| {
                async {
                    let mut tx = pool.begin().await?;
                    let requeued = sqlx::query_as(&requeue).bind(now_ms).fetch_all(&mut *tx).await?;
                    let dead_lettered = sqlx::query_as(&dead_letter).bind(now_ms).fetch_all(&mut *tx).await?;
                    let timed_out = sqlx::query_as(&time_out).bind(now_ms).fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>((requeued, dead_lettered, timed_out))
                }
                .await?
            });
        Ok(LeaseSweep {
            requeued: into_commands(requeued)?,
            dead_lettered: into_commands(dead_lettered)?,
            timed_out: into_commands(timed_out)?,
        })
    }
}
