//! Agents: the hosts. Pairing and tokens arrive with the identity work; this module holds the
//! registry rows.

use botmox_contract::{
    agents::{Agent, AgentMetrics, AgentStatus},
    Id, Labels, Timestamp,
};

use super::{
    from_ms, json_rows, new_id, opt_from_ms, parse_id, parse_json, to_json, to_ms, with_pool, Elements, Result, Store,
    StoreError,
};

pub struct NewAgent {
    pub tenant_id: Id,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub version: String,
    pub labels: Labels,
    /// Hash of the agent's credential, when it has one.
    pub token_hash: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: String,
    name: String,
    hostname: String,
    os: String,
    arch: String,
    version: String,
    labels: String,
    status: String,
    last_seen_at: Option<i64>,
    connected_replica: Option<String>,
    metrics: Option<String>,
    created_at: i64,
    updated_at: i64,
}

/// The status an agent shows: `draining` while drained (the operator's decision, kept in
/// `drained_at` apart from presence so it survives disconnections), unless revoked; otherwise
/// its presence. Every status that is shown or acted on (the API's `Agent`, the counts, the
/// control transaction, a bulk action's dry run) goes through this expression; only presence
/// itself (connect, silence, `agent_present`) reads the raw column. A macro, so that
/// `concat!` can build the statements that use it at compile time.
macro_rules! agent_status_sql {
    () => {
        "CASE WHEN drained_at IS NOT NULL AND status <> 'revoked' THEN 'draining' ELSE status END"
    };
}
pub(crate) use agent_status_sql;

const AGENT_COLUMNS: &str = concat!(
    "id, name, hostname, os, arch, version, labels, ",
    agent_status_sql!(),
    " AS status, last_seen_at, connected_replica, metrics, created_at, updated_at"
);

impl TryFrom<AgentRow> for Agent {
    type Error = StoreError;

    fn try_from(row: AgentRow) -> Result<Self> {
        Ok(Agent {
            id: parse_id(&row.id)?,
            name: row.name,
            hostname: row.hostname,
            os: row.os,
            arch: row.arch,
            version: row.version,
            labels: parse_json("agent labels", &row.labels)?,
            status: AgentStatus::parse(&row.status)
                .ok_or_else(|| StoreError::Corrupt(format!("agent status `{}`", row.status)))?,
            last_seen_at: opt_from_ms(row.last_seen_at)?,
            connected_replica: row.connected_replica,
            metrics: row.metrics.as_deref().map(|m| parse_json::<AgentMetrics>("agent metrics", m)).transpose()?,
            created_at: from_ms(row.created_at)?,
            updated_at: from_ms(row.updated_at)?,
        })
    }
}

impl Store {
    pub async fn create_agent(&self, new: NewAgent, now: Timestamp) -> Result<Agent> {
        let id = new_id();
        with_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO agents (id, tenant_id, name, hostname, os, arch, version, labels, status, token_hash, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $10)",
            )
            .bind(id.to_string())
            .bind(new.tenant_id.to_string())
            .bind(&new.name)
            .bind(&new.hostname)
            .bind(&new.os)
            .bind(&new.arch)
            .bind(&new.version)
            .bind(to_json(&new.labels))
            .bind(&new.token_hash)
            .bind(to_ms(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.get_agent(new.tenant_id, id).await
    }

    pub async fn get_agent(&self, tenant_id: Id, id: Id) -> Result<Agent> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2");
        let row: Option<AgentRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(tenant_id.to_string()).bind(id.to_string()).fetch_optional(pool).await?
        });
        row.ok_or(StoreError::NotFound("agent"))?.try_into()
    }

    pub async fn list_agents(&self, tenant_id: Id) -> Result<Vec<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 ORDER BY name, id");
        let rows: Vec<AgentRow> =
            with_pool!(self, read, |pool| { sqlx::query_as(&sql).bind(tenant_id.to_string()).fetch_all(pool).await? });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Whether the agent is present (said `hello` and has not gone silent since), drained or not.
    pub async fn agent_present(&self, tenant_id: Id, id: Id) -> Result<bool> {
        let status: Option<String> = with_pool!(self, read, |pool| {
            sqlx::query_scalar("SELECT status FROM agents WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id.to_string())
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        Ok(matches!(status.ok_or(StoreError::NotFound("agent"))?.as_str(), "online" | "draining"))
    }

    /// Records a presence change (connect, disconnect, drain, revoke).
    pub async fn set_agent_status(&self, tenant_id: Id, id: Id, status: AgentStatus, now: Timestamp) -> Result<Agent> {
        let changed = with_pool!(self, write, |pool| {
            sqlx::query("UPDATE agents SET status = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4")
                .bind(status.as_str())
                .bind(to_ms(now))
                .bind(tenant_id.to_string())
                .bind(id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound("agent"));
        }
        self.get_agent(tenant_id, id).await
    }
}

/// An agent token presented on a request, with what is needed to judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAuth {
    pub agent_id: Id,
    pub tenant_id: Id,
    pub status: AgentStatus,
}

impl Store {
    /// The agent holding this token. A pending (rotated-to) token is promoted on its first use,
    /// which retires the previous one.
    pub async fn find_agent_by_token(&self, token_hash: &str) -> Result<Option<AgentAuth>> {
        let row: Option<(String, String, String, Option<String>)> = with_pool!(self, read, |pool| {
            sqlx::query_as(
                "SELECT id, tenant_id, status, pending_token_hash FROM agents \
                 WHERE token_hash = $1 OR pending_token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        let Some((id, tenant_id, status, pending)) = row else { return Ok(None) };
        if pending.as_deref() == Some(token_hash) {
            with_pool!(self, write, |pool| {
                sqlx::query(
                    "UPDATE agents SET token_hash = pending_token_hash, pending_token_hash = NULL \
                     WHERE id = $1 AND pending_token_hash = $2",
                )
                .bind(&id)
                .bind(token_hash)
                .execute(pool)
                .await?
                .rows_affected()
            });
        }
        Ok(Some(AgentAuth {
            agent_id: parse_id(&id)?,
            tenant_id: parse_id(&tenant_id)?,
            status: AgentStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("agent status `{status}`")))?,
        }))
    }

    /// The tenant an agent belongs to.
    pub async fn agent_tenant(&self, agent_id: Id) -> Result<Id> {
        let tenant: Option<String> = with_pool!(self, read, |pool| {
            sqlx::query_scalar("SELECT tenant_id FROM agents WHERE id = $1")
                .bind(agent_id.to_string())
                .fetch_optional(pool)
                .await?
        });
        parse_id(&tenant.ok_or(StoreError::NotFound("agent"))?)
    }

    /// Stages a new token for the agent; the current one works until the new one is used.
    pub async fn stage_agent_token(&self, agent_id: Id, token_hash: &str, now: Timestamp) -> Result<()> {
        let changed = with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE agents SET pending_token_hash = $1, updated_at = $2 WHERE id = $3 AND status <> 'revoked'",
            )
            .bind(token_hash)
            .bind(to_ms(now))
            .bind(agent_id.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound("agent"));
        }
        Ok(())
    }

    /// Revokes an agent: its tokens stop working at once and for good. The current token's
    /// hash stays, so that a later use of it is recognised (`token_revoked_agent_connected`).
    pub async fn revoke_agent(&self, tenant_id: Id, id: Id, now: Timestamp) -> Result<Agent> {
        let changed = with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE agents SET status = 'revoked', pending_token_hash = NULL, \
                 revoked_at = COALESCE(revoked_at, $1), connected_replica = NULL, updated_at = $1 \
                 WHERE tenant_id = $2 AND id = $3",
            )
            .bind(to_ms(now))
            .bind(tenant_id.to_string())
            .bind(id.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound("agent"));
        }
        self.get_agent(tenant_id, id).await
    }

    /// Drains an agent (`drain = true`: it takes no new starts from now on, whatever its
    /// presence) or ends its drain. Idempotent: draining a drained agent keeps the first time.
    /// `Conflict` for a revoked agent (nothing changes), `NotFound` for no agent of the tenant.
    pub async fn set_agent_drained(&self, tenant_id: Id, id: Id, drain: bool, now: Timestamp) -> Result<Agent> {
        let changed = with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE agents SET drained_at = CASE WHEN $1 THEN COALESCE(drained_at, $2) ELSE NULL END, \
                 updated_at = $2 WHERE tenant_id = $3 AND id = $4 AND status <> 'revoked'",
            )
            .bind(drain)
            .bind(to_ms(now))
            .bind(tenant_id.to_string())
            .bind(id.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        let agent = self.get_agent(tenant_id, id).await?;
        if changed == 0 && agent.status == AgentStatus::Revoked {
            return Err(StoreError::Conflict(format!("agent `{}` is revoked", agent.name)));
        }
        Ok(agent)
    }

    /// Renames an agent and/or replaces its labels.
    pub async fn update_agent(
        &self,
        tenant_id: Id,
        id: Id,
        name: Option<&str>,
        labels: Option<&Labels>,
        now: Timestamp,
    ) -> Result<Agent> {
        let changed = with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE agents SET name = COALESCE($1, name), labels = COALESCE($2, labels), updated_at = $3 \
                 WHERE tenant_id = $4 AND id = $5",
            )
            .bind(name)
            .bind(labels.map(to_json))
            .bind(to_ms(now))
            .bind(tenant_id.to_string())
            .bind(id.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound("agent"));
        }
        self.get_agent(tenant_id, id).await
    }

    /// Deletes an agent that hosts no bots (its commands go with it).
    pub async fn delete_agent(&self, tenant_id: Id, id: Id) -> Result<()> {
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let bots: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bots WHERE tenant_id = $1 AND agent_id = $2")
                    .bind(tenant_id.to_string())
                    .bind(id.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
                if bots > 0 {
                    return Err(StoreError::Conflict(format!(
                        "the agent hosts {bots} bot(s): move or delete them first"
                    )));
                }
                let deleted = sqlx::query("DELETE FROM agents WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant_id.to_string())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Err(StoreError::NotFound("agent"));
                }
                // After the agent's row: a transaction that placed a command for it held the
                // row (`FOR KEY SHARE`) until it committed, so this sees that command too.
                sqlx::query("DELETE FROM commands WHERE tenant_id = $1 AND agent_id = $2")
                    .bind(tenant_id.to_string())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            .await
        })
    }
}

/// What an agent says about its host when it connects.
#[derive(Debug, Clone)]
pub struct AgentHello {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub version: String,
}

/// One agent's coalesced heartbeat, written in a batch.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub agent_id: Id,
    pub at: Timestamp,
    pub metrics: AgentMetrics,
}

impl Store {
    /// An agent connected to `replica`: it is online (a drained one shows `draining`: the drain
    /// is kept apart from presence) and its host facts are refreshed.
    pub async fn agent_connected(
        &self,
        agent_id: Id,
        replica: &str,
        hello: &AgentHello,
        now: Timestamp,
    ) -> Result<Agent> {
        let tenant: Option<String> = with_pool!(self, write, |pool| {
            sqlx::query_scalar(
                "UPDATE agents SET status = 'online', connected_replica = $1, last_seen_at = $2, hostname = $3, \
                 os = $4, arch = $5, version = $6, \
                 updated_at = $2 WHERE id = $7 AND status <> 'revoked' RETURNING tenant_id",
            )
            .bind(replica)
            .bind(to_ms(now))
            .bind(&hello.hostname)
            .bind(&hello.os)
            .bind(&hello.arch)
            .bind(&hello.version)
            .bind(agent_id.to_string())
            .fetch_optional(pool)
            .await?
        });
        let tenant = tenant.ok_or(StoreError::NotFound("agent"))?;
        self.get_agent(parse_id(&tenant)?, agent_id).await
    }

    /// The agent's connection to `replica` closed (a newer connection elsewhere is left alone).
    pub async fn agent_disconnected(&self, agent_id: Id, replica: &str, now: Timestamp) -> Result<()> {
        with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE agents SET connected_replica = NULL, updated_at = $1 WHERE id = $2 AND connected_replica = $3",
            )
            .bind(to_ms(now))
            .bind(agent_id.to_string())
            .bind(replica)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Writes many heartbeats in one transaction (presence is coalesced, never a write per beat).
    pub async fn record_heartbeats(&self, beats: &[Heartbeat]) -> Result<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let values: Vec<_> = beats
            .iter()
            .map(|beat| {
                serde_json::json!({
                    "id": beat.agent_id.to_string(), "at": to_ms(beat.at), "metrics": to_json(&beat.metrics),
                })
            })
            .collect();
        // One statement for the whole batch (10,000 agents beating every 5 s are 1,000 beats
        // per half-second flush: one round trip, not a thousand).
        let sql = format!(
            "UPDATE agents SET last_seen_at = b.at, metrics = b.metrics \
             FROM (SELECT value ->> 'id' AS id, CAST(value ->> 'at' AS BIGINT) AS at, value ->> 'metrics' AS metrics \
                   FROM {}) AS b \
             WHERE agents.id = b.id AND agents.status <> 'revoked' \
             AND (agents.last_seen_at IS NULL OR agents.last_seen_at < b.at)",
            self.json_array_rows("$1", Elements::Json)
        );
        // Relaxed durability: a flush lost in a database crash is rewritten by the next one.
        with_pool!(self, relaxed, |pool| {
            sqlx::query(&sql).bind(json_rows(&values)).execute(pool).await?;
        });
        Ok(())
    }

    /// Agents online (or draining) but silent since `cutoff` become offline, and their bots
    /// `unknown`. Returns the agents that changed.
    pub async fn mark_silent_agents_offline(&self, cutoff: Timestamp, now: Timestamp) -> Result<Vec<Agent>> {
        let changed: Vec<(String, String)> = with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "UPDATE agents SET status = 'offline', connected_replica = NULL, updated_at = $1 \
                     WHERE status IN ('online', 'draining') AND (last_seen_at IS NULL OR last_seen_at < $2) \
                     RETURNING id, tenant_id",
                )
                .bind(to_ms(now))
                .bind(to_ms(cutoff))
                .fetch_all(&mut *tx)
                .await?;
                for (id, _) in &rows {
                    sqlx::query(
                        "UPDATE bots SET state = 'unknown', state_at = $1, updated_at = $1 WHERE agent_id = $2",
                    )
                    .bind(to_ms(now))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok::<_, StoreError>(rows)
            }
            .await
        })?;
        let mut agents = Vec::with_capacity(changed.len());
        for (id, tenant) in changed {
            agents.push(self.get_agent(parse_id(&tenant)?, parse_id(&id)?).await?);
        }
        Ok(agents)
    }
}
