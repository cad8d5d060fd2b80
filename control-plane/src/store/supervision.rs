//! The supervisor's queries: which bots need a nudge, leadership among replicas, retention.

use botmox_contract::{
    bots::{BotState, DesiredState},
    Id, Timestamp,
};
use sqlx::{pool::PoolConnection, Postgres};

use super::{from_ms, parse_id, to_ms, with_pool, Backend, Result, Store, StoreError};

/// The drift: desired and observed state disagree (`d` = the desired state, `s` the state).
macro_rules! drift {
    ($d:literal, $s:literal) => {
        concat!(
            "((",
            $d,
            " = 'running' AND ",
            $s,
            " IN ('pending', 'stopped', 'starting', 'stopping')) \
              OR (",
            $d,
            " = 'stopped' AND ",
            $s,
            " IN ('starting', 'running', 'backoff', 'stopping')))"
        )
    };
}

/// The reconciliation's read ([`Store::drifting_bots`]; public for the test that reads its
/// plan). `$1`: commands created after it count as recent; `$2`: at most this many bots. No
/// index covers the states (migration 0013): the counts name the agents that have a drifting
/// bot, and only their bots are read (through `bots_agent`).
pub const DRIFTING_BOTS: &str = concat!(
    "SELECT b.tenant_id, b.id, b.agent_id, b.desired_state, b.state, b.stop, b.updated_at FROM bots b \
         JOIN agents a ON a.id = b.agent_id \
         WHERE a.status = 'online' AND a.drained_at IS NULL \
         AND b.agent_id IN (SELECT agent_id FROM bot_counts WHERE n > 0 AND ",
    drift!("desired_state", "state"),
    ") AND ",
    drift!("b.desired_state", "b.state"),
    " AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.bot_id = b.id \
           AND (c.status IN ('queued', 'dispatched', 'running') OR c.created_at > $1)) \
         ORDER BY b.id LIMIT $2"
);

/// A bot whose observed state disagrees with what the operator wants, on an online agent,
/// with no command for it pending or recent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub tenant_id: Id,
    pub bot_id: Id,
    pub agent_id: Id,
    pub desired: DesiredState,
    pub state: BotState,
    pub stop_timeout_seconds: u64,
    /// When the bot's row last changed (for a bot in a passing state, when it entered it).
    pub changed_at: Timestamp,
}

impl Drift {
    /// For a bot in a passing state (`starting`, `stopping`): when it counts as stuck — its
    /// stop timeout plus a margin after it entered the state. `None` for settled states.
    pub fn stuck_since(&self) -> Option<Timestamp> {
        let passing = matches!(self.state, BotState::Starting | BotState::Stopping);
        let margin = chrono::Duration::seconds(self.stop_timeout_seconds.min(86_400) as i64 + 30);
        passing.then(|| self.changed_at + margin)
    }
}

/// How much retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub log_lines: u64,
    pub commands: u64,
    pub incidents: u64,
    pub audit_entries: u64,
}

/// Held while this replica runs the supervisor. On Postgres it owns a connection holding a
/// session advisory lock: if the process dies, the connection closes and another replica's
/// attempt succeeds. On SQLite there is one process, so it is always the leader.
pub struct Leadership {
    connection: Option<PoolConnection<Postgres>>,
}

/// An arbitrary constant naming the supervisor's advisory lock.
const SUPERVISOR_LOCK: i64 = 0x626f_746d_6f78_5375; // "botmoxSu"

impl Leadership {
    /// Whether the lock is still held (its connection answers).
    pub async fn holds(&mut self) -> bool {
        match &mut self.connection {
            None => true,
            Some(connection) => sqlx::query("SELECT 1").execute(&mut **connection).await.is_ok(),
        }
    }
}

impl Store {
    /// Tries to become the supervisor; `None` if another replica is.
    pub async fn try_lead(&self) -> Result<Option<Leadership>> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(Some(Leadership { connection: None })),
            Backend::Postgres { pool, .. } => {
                let mut connection = pool.acquire().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(SUPERVISOR_LOCK)
                    .fetch_one(&mut *connection)
                    .await?;
                // Detached from the pool: the lock lives exactly as long as this connection.
                Ok(got.then(|| Leadership { connection: Some(connection) }))
            }
        }
    }

    /// Bots to reconcile: desired `running` but `pending`/`stopped`, or desired `stopped` but
    /// `starting`/`running`/`backoff`; on an online, undrained agent; with no command pending and none
    /// created since `quiet_since` (so a failing start is not retried in a tight loop).
    /// `exited`, `crashed` and `failed` are the agent's own restart policy at work: left alone.
    /// A bot in `starting` or `stopping` is a candidate too (a report lost, an agent killed
    /// mid-stop); the caller keeps only those stuck there past their stop timeout
    /// ([`Drift::stuck_since`]).
    pub async fn drifting_bots(&self, quiet_since: Timestamp, limit: u32) -> Result<Vec<Drift>> {
        let rows: Vec<(String, String, String, String, String, String, i64)> = with_pool!(self, read, |pool| {
            sqlx::query_as(DRIFTING_BOTS).bind(to_ms(quiet_since)).bind(i64::from(limit)).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(tenant, bot, agent, desired, state, stop, updated_at)| {
                Ok(Drift {
                    tenant_id: parse_id(&tenant)?,
                    bot_id: parse_id(&bot)?,
                    agent_id: parse_id(&agent)?,
                    desired: if desired == "running" { DesiredState::Running } else { DesiredState::Stopped },
                    state: BotState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("bot state `{state}`")))?,
                    stop_timeout_seconds: serde_json::from_str::<botmox_contract::bots::StopSpec>(&stop)
                        .map(|s| s.timeout_seconds)
                        .unwrap_or(10),
                    changed_at: from_ms(updated_at)?,
                })
            })
            .collect()
    }

    /// Deletes what is older than each cutoff, in bounded batches per call.
    pub async fn prune(
        &self,
        logs_before: Timestamp,
        commands_before: Timestamp,
        incidents_before: Timestamp,
        audit_before: Timestamp,
    ) -> Result<Pruned> {
        const BATCH: i64 = 10_000;
        let run = |sql: &'static str, cutoff: Timestamp| async move {
            Ok::<u64, StoreError>(with_pool!(self, write, |pool| {
                sqlx::query(sql).bind(to_ms(cutoff)).bind(BATCH).execute(pool).await?.rows_affected()
            }))
        };
        Ok(Pruned {
            log_lines: run(
                "DELETE FROM log_lines WHERE (bot_id, seq) IN \
                 (SELECT bot_id, seq FROM log_lines WHERE at < $1 LIMIT $2)",
                logs_before,
            )
            .await?,
            commands: run(
                "DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE finished_at IS NOT NULL \
                 AND finished_at < $1 LIMIT $2)",
                commands_before,
            )
            .await?,
            incidents: run(
                "DELETE FROM incidents WHERE id IN (SELECT id FROM incidents WHERE resolved_at IS NOT NULL \
                 AND resolved_at < $1 LIMIT $2)",
                incidents_before,
            )
            .await?,
            audit_entries: run(
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 LIMIT $2)",
                audit_before,
            )
            .await?,
        })
    }

    /// Open incidents about bots, across tenants: (tenant, incident id, kind, subject).
    pub async fn open_bot_incidents(&self) -> Result<Vec<(Id, String, Id)>> {
        let rows: Vec<(String, String, String)> = with_pool!(self, read, |pool| {
            sqlx::query_as(
                "SELECT tenant_id, kind, subject FROM incidents WHERE resolved_at IS NULL \
                 AND kind IN ('bot_crash_loop', 'bot_crashed', 'bot_failed')",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .filter_map(|(tenant, kind, subject)| {
                let bot = subject.strip_prefix("bot:").and_then(|id| parse_id(id).ok())?;
                Some(parse_id(&tenant).map(|t| (t, kind, bot)))
            })
            .collect()
    }
}
