//! The audit log: append-only. There is deliberately no update or delete here (retention, when
//! it comes, deletes by age only).

use botmox_contract::{
    audit::{Actor, ActorKind, AuditEntry, Outcome},
    Id, Timestamp,
};

use super::{
    from_ms, json_rows, new_id, parse_id, parse_json, to_json, to_ms, with_pool, Elements, Result, Store, StoreError,
};

#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub tenant_id: Id,
    pub actor: Actor,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub outcome: Outcome,
    pub data: serde_json::Value,
}

/// Filters of `GET /audit`, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_kind: Option<ActorKind>,
    pub actor_id: Option<Id>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    pub before_id: Option<Id>,
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    actor_kind: String,
    actor_id: Option<String>,
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    source_ip: Option<String>,
    outcome: String,
    data: String,
    at: i64,
}

fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    }
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self> {
        Ok(AuditEntry {
            id: parse_id(&row.id)?,
            actor: Actor {
                kind: ActorKind::parse(&row.actor_kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("actor kind `{}`", row.actor_kind)))?,
                id: row.actor_id.as_deref().map(parse_id).transpose()?,
            },
            action: row.action,
            target: row.target,
            request_id: row.request_id,
            source_ip: row.source_ip,
            outcome: if row.outcome == "success" { Outcome::Success } else { Outcome::Failure },
            data: parse_json("audit data", &row.data)?,
            at: from_ms(row.at)?,
        })
    }
}

impl Store {
    pub async fn append_audit(&self, entry: NewAuditEntry, now: Timestamp) -> Result<Id> {
        let ids = self.append_audits(&[(entry, now)]).await?;
        ids.into_iter().next().ok_or_else(|| StoreError::Corrupt("no id for an audit entry".into()))
    }

    /// Appends entries (each with its own time) in one statement; their ids, in order.
    pub async fn append_audits(&self, entries: &[(NewAuditEntry, Timestamp)]) -> Result<Vec<Id>> {
        let ids: Vec<Id> = entries.iter().map(|_| new_id()).collect();
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .zip(&ids)
            .map(|((entry, at), id)| {
                serde_json::json!({
                    "id": id.to_string(),
                    "tenant": entry.tenant_id.to_string(),
                    "actor_kind": entry.actor.kind.as_str(),
                    "actor_id": entry.actor.id.map(|a| a.to_string()),
                    "action": entry.action,
                    "target": entry.target,
                    "request_id": entry.request_id,
                    "source_ip": entry.source_ip,
                    "outcome": outcome_str(entry.outcome),
                    "data": to_json(&entry.data),
                    "at": to_ms(*at),
                })
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_log (id, tenant_id, actor_kind, actor_id, action, target, request_id, source_ip, \
             outcome, data, at) \
             SELECT value ->> 'id', value ->> 'tenant', value ->> 'actor_kind', value ->> 'actor_id', \
                    value ->> 'action', value ->> 'target', value ->> 'request_id', value ->> 'source_ip', \
                    value ->> 'outcome', value ->> 'data', CAST(value ->> 'at' AS BIGINT) \
             FROM {}",
            self.json_array_rows("$1", Elements::Json)
        );
        with_pool!(self, write, |pool| {
            sqlx::query(&sql).bind(json_rows(&rows)).execute(pool).await?.rows_affected()
        });
        Ok(ids)
    }

    /// One page of the tenant's audit log, newest first; `has_more` when older entries follow.
    pub async fn list_audit(&self, tenant_id: Id, filter: &AuditFilter) -> Result<(Vec<AuditEntry>, bool)> {
        let limit = i64::from(filter.limit.max(1));
        let rows: Vec<AuditRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(
                "SELECT id, actor_kind, actor_id, action, target, request_id, source_ip, outcome, data, at \
                 FROM audit_log WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR actor_kind = $2) AND ($3 IS NULL OR actor_id = $3) \
                 AND ($4 IS NULL OR action = $4) AND ($5 IS NULL OR target = $5) \
                 AND ($6 IS NULL OR outcome = $6) AND ($7 IS NULL OR id < $7) \
                 ORDER BY id DESC LIMIT $8",
            )
            .bind(tenant_id.to_string())
            .bind(filter.actor_kind.map(ActorKind::as_str))
            .bind(filter.actor_id.map(|a| a.to_string()))
            .bind(&filter.action)
            .bind(&filter.target)
            .bind(filter.outcome.map(outcome_str))
            .bind(filter.before_id.map(|b| b.to_string()))
            .bind(limit + 1)
            .fetch_all(pool)
            .await?
        });
        let mut entries = rows.into_iter().map(AuditEntry::try_from).collect::<Result<Vec<_>>>()?;
        let has_more = entries.len() as i64 > limit;
        entries.truncate(limit as usize);
        Ok((entries, has_more))
    }
}
