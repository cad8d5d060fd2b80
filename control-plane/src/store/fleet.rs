//! Aggregates over a tenant's fleet, for the guide, the dashboard and `/metrics`.

use std::collections::BTreeMap;

use botmox_contract::{agents::AgentStatus, bots::BotState, incidents::Severity, Id};

use super::{with_pool, Result, Store, StoreError};

/// Counts by a text column, every known value present (zeros included).
fn tally<K: Ord + Copy>(
    rows: Vec<(String, i64)>,
    all: &[K],
    parse: impl Fn(&str) -> Option<K>,
) -> Result<BTreeMap<K, u64>> {
    let mut counts: BTreeMap<K, u64> = all.iter().map(|k| (*k, 0)).collect();
    for (value, n) in rows {
        let key = parse(&value).ok_or_else(|| StoreError::Corrupt(format!("unexpected value `{value}`")))?;
        counts.insert(key, n as u64);
    }
    Ok(counts)
}

impl Store {
    /// Agents by status; `None` = every tenant (for `/metrics`).
    pub async fn agent_counts(&self, tenant_id: Option<Id>) -> Result<BTreeMap<AgentStatus, u64>> {
        let rows: Vec<(String, i64)> = with_pool!(self, read, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                super::agents::agent_status_sql!(),
                " AS shown, COUNT(*) FROM agents WHERE ($1 IS NULL OR tenant_id = $1) GROUP BY shown"
            ))
            .bind(tenant_id.map(|t| t.to_string()))
            .fetch_all(pool)
            .await?
        });
        tally(rows, &AgentStatus::ALL, AgentStatus::parse)
    }

    /// Bots by observed state, of one tenant (`None` = every tenant, for `/metrics`) and
    /// optionally one agent: read from `bot_counts`, which triggers keep (migrations 0006, 0013).
    pub async fn bot_counts(&self, tenant_id: Option<Id>, agent_id: Option<Id>) -> Result<BTreeMap<BotState, u64>> {
        let rows: Vec<(String, i64)> = with_pool!(self, read, |pool| {
            sqlx::query_as(
                "SELECT state, CAST(SUM(n) AS BIGINT) FROM bot_counts \
                 WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR agent_id = $2) GROUP BY state",
            )
            .bind(tenant_id.map(|t| t.to_string()))
            .bind(agent_id.map(|a| a.to_string()))
            .fetch_all(pool)
            .await?
        });
        tally(rows, &BotState::ALL, BotState::parse)
    }

    /// Open incidents by severity.
    pub async fn open_incident_counts(&self, tenant_id: Id) -> Result<BTreeMap<Severity, u64>> {
        let rows: Vec<(String, i64)> = with_pool!(self, read, |pool| {
            sqlx::query_as(
                "SELECT severity, COUNT(*) FROM incidents WHERE tenant_id = $1 AND resolved_at IS NULL GROUP BY severity",
            )
            .bind(tenant_id.to_string())
            .fetch_all(pool)
            .await?
        });
        tally(rows, &[Severity::Info, Severity::Warning, Severity::Critical], Severity::parse)
    }
}
