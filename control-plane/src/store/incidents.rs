//! Incidents: opened (or counted again, while open: one open incident per tenant, kind and
//! subject), resolved, acknowledged, listed.

use botmox_contract::{
    incidents::{Incident, IncidentKind, Severity},
    Id, Timestamp,
};

use super::{from_ms, new_id, opt_from_ms, parse_id, parse_json, to_json, to_ms, with_pool, Result, Store, StoreError};

pub struct NewIncident {
    pub tenant_id: Id,
    pub kind: IncidentKind,
    pub severity: Severity,
    /// `bot:<id>`, `agent:<id>`, …
    pub subject: String,
    pub message: String,
    pub data: serde_json::Value,
}

/// Filters of `GET /incidents`, newest first.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// `Some(true)`: open only; `Some(false)`: resolved only.
    pub open: Option<bool>,
    pub kind: Option<IncidentKind>,
    pub severity: Option<Severity>,
    pub subject: Option<String>,
    pub before_id: Option<Id>,
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct IncidentRow {
    id: String,
    kind: String,
    severity: String,
    subject: String,
    message: String,
    data: String,
    count: i64,
    opened_at: i64,
    resolved_at: Option<i64>,
    acknowledged_at: Option<i64>,
    acknowledged_by: Option<String>,
}

const COLUMNS: &str =
    "id, kind, severity, subject, message, data, count, opened_at, resolved_at, acknowledged_at, acknowledged_by";

impl TryFrom<IncidentRow> for Incident {
    type Error = StoreError;

    fn try_from(row: IncidentRow) -> Result<Self> {
        Ok(Incident {
            id: parse_id(&row.id)?,
            kind: IncidentKind::parse(&row.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("incident kind `{}`", row.kind)))?,
            severity: Severity::parse(&row.severity)
                .ok_or_else(|| StoreError::Corrupt(format!("severity `{}`", row.severity)))?,
            subject: row.subject,
            message: row.message,
            data: parse_json("incident data", &row.data)?,
            count: row.count as u32,
            opened_at: from_ms(row.opened_at)?,
            resolved_at: opt_from_ms(row.resolved_at)?,
            acknowledged_at: opt_from_ms(row.acknowledged_at)?,
            acknowledged_by: row.acknowledged_by.as_deref().map(parse_id).transpose()?,
        })
    }
}

impl Store {
    /// Opens an incident, or — if one of that kind is open for that subject — counts it again
    /// (with the newest message and data). Returns it and whether it is new.
    pub async fn open_incident(&self, new: NewIncident, now: Timestamp) -> Result<(Incident, bool)> {
        let id = new_id();
        let sql = format!(
            "INSERT INTO incidents (id, tenant_id, kind, severity, subject, message, data, count, opened_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8) \
             ON CONFLICT (tenant_id, kind, subject) WHERE resolved_at IS NULL DO UPDATE SET \
             count = incidents.count + 1, message = excluded.message, data = excluded.data, \
             severity = excluded.severity, updated_at = excluded.updated_at \
             RETURNING {COLUMNS}"
        );
        let incident = self.insert_incident(&sql, id, &new, now).await?;
        let created = incident.id == id;
        Ok((incident, created))
    }

    /// Records an incident that is over as it happens (e.g. `agent_online`): opened and resolved.
    pub async fn record_resolved_incident(&self, new: NewIncident, now: Timestamp) -> Result<Incident> {
        let id = new_id();
        let sql = format!(
            "INSERT INTO incidents (id, tenant_id, kind, severity, subject, message, data, count, opened_at, updated_at, \
             resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8, $8) RETURNING {COLUMNS}"
        );
        self.insert_incident(&sql, id, &new, now).await
    }

    /// Runs one of the incident INSERTs above: they bind the same eight values, in this order.
    async fn insert_incident(&self, sql: &str, id: Id, new: &NewIncident, now: Timestamp) -> Result<Incident> {
        let row: IncidentRow = with_pool!(self, write, |pool| {
            sqlx::query_as(sql)
                .bind(id.to_string())
                .bind(new.tenant_id.to_string())
                .bind(new.kind.as_str())
                .bind(new.severity.as_str())
                .bind(&new.subject)
                .bind(&new.message)
                .bind(to_json(&new.data))
                .bind(to_ms(now))
                .fetch_one(pool)
                .await?
        });
        row.try_into()
    }

    /// Resolves the open incidents of these kinds about `subject`; returns them.
    pub async fn resolve_incidents(
        &self,
        tenant_id: Id,
        kinds: &[IncidentKind],
        subject: &str,
        now: Timestamp,
    ) -> Result<Vec<Incident>> {
        let mut resolved = Vec::new();
        for kind in kinds {
            let sql = format!(
                "UPDATE incidents SET resolved_at = $1, updated_at = $1 \
                 WHERE tenant_id = $2 AND kind = $3 AND subject = $4 AND resolved_at IS NULL RETURNING {COLUMNS}"
            );
            let rows: Vec<IncidentRow> = with_pool!(self, write, |pool| {
                sqlx::query_as(&sql)
                    .bind(to_ms(now))
                    .bind(tenant_id.to_string())
                    .bind(kind.as_str())
                    .bind(subject)
                    .fetch_all(pool)
                    .await?
            });
            for row in rows {
                resolved.push(row.try_into()?);
            }
        }
        Ok(resolved)
    }

    pub async fn get_incident(&self, tenant_id: Id, id: Id) -> Result<Incident> {
        let sql = format!("SELECT {COLUMNS} FROM incidents WHERE tenant_id = $1 AND id = $2");
        let row: Option<IncidentRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(tenant_id.to_string()).bind(id.to_string()).fetch_optional(pool).await?
        });
        row.ok_or(StoreError::NotFound("incident"))?.try_into()
    }

    /// Acknowledges an incident (idempotent: the first acknowledgement stands).
    pub async fn ack_incident(&self, tenant_id: Id, id: Id, by: Id, now: Timestamp) -> Result<Incident> {
        with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE incidents SET acknowledged_at = $1, acknowledged_by = $2, updated_at = $1 \
                 WHERE tenant_id = $3 AND id = $4 AND acknowledged_at IS NULL",
            )
            .bind(to_ms(now))
            .bind(by.to_string())
            .bind(tenant_id.to_string())
            .bind(id.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.get_incident(tenant_id, id).await
    }

    pub async fn list_incidents(&self, tenant_id: Id, filter: &IncidentFilter) -> Result<(Vec<Incident>, bool)> {
        let limit = i64::from(filter.limit.max(1));
        let sql = format!(
            "SELECT {COLUMNS} FROM incidents WHERE tenant_id = $1 \
             AND ($2 IS NULL OR ($2 = 1 AND resolved_at IS NULL) OR ($2 = 0 AND resolved_at IS NOT NULL)) \
             AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR severity = $4) AND ($5 IS NULL OR subject = $5) \
             AND ($6 IS NULL OR id < $6) ORDER BY id DESC LIMIT $7"
        );
        let rows: Vec<IncidentRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql)
                .bind(tenant_id.to_string())
                .bind(filter.open.map(i64::from))
                .bind(filter.kind.map(IncidentKind::as_str))
                .bind(filter.severity.map(Severity::as_str))
                .bind(&filter.subject)
                .bind(filter.before_id.map(|b| b.to_string()))
                .bind(limit + 1)
                .fetch_all(pool)
                .await?
        });
        let mut items = rows.into_iter().map(Incident::try_from).collect::<Result<Vec<_>>>()?;
        let has_more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        Ok((items, has_more))
    }
}
