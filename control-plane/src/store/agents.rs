//! Agents: the hosts. Pairing and tokens arrive with the identity work; this module holds the
//! registry rows.

use botmox_contract::{
    agents::{Agent, AgentMetrics, AgentStatus},
    Id, Labels, Timestamp,
};

use super::{from_ms, new_id, opt_from_ms, parse_id, parse_json, to_json, to_ms, with_pool, Result, Store, StoreError};

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

const AGENT_COLUMNS: &str = "id, name, hostname, os, arch, version, labels, status, last_seen_at, \
                             connected_replica, metrics, created_at, updated_at";

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
