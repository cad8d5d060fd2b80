//! Pairing codes: single-use, expiring, stored as hashes. Redeeming one creates the agent and
//! marks the code used in the same transaction, so a code can never pair twice.

use botmox_contract::{agents::Agent, Id, Labels, Timestamp};

use super::{new_id, parse_id, parse_json, to_json, to_ms, with_pool, Result, Store, StoreError};

pub struct NewPairingCode {
    pub tenant_id: Id,
    pub code_hash: String,
    pub name: Option<String>,
    pub labels: Labels,
    pub created_by: Option<Id>,
    pub expires_at: Timestamp,
}

/// What the agent says about itself when it pairs.
pub struct PairingHost {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub version: String,
    pub labels: Labels,
    /// Hash of the agent token the server is about to hand out.
    pub token_hash: String,
}

#[derive(Debug)]
pub enum Redeemed {
    Paired { tenant_id: Id, agent: Box<Agent> },
    Unknown,
    Expired,
    AlreadyUsed,
}

#[derive(sqlx::FromRow)]
struct CodeRow {
    id: String,
    tenant_id: String,
    name: Option<String>,
    labels: String,
    expires_at: i64,
    used_at: Option<i64>,
}

impl Store {
    pub async fn create_pairing_code(&self, new: NewPairingCode, now: Timestamp) -> Result<Id> {
        let id = new_id();
        with_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO pairing_codes (id, tenant_id, code_hash, name, labels, created_by, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id.to_string())
            .bind(new.tenant_id.to_string())
            .bind(&new.code_hash)
            .bind(&new.name)
            .bind(to_json(&new.labels))
            .bind(new.created_by.map(|u| u.to_string()))
            .bind(to_ms(new.expires_at))
            .bind(to_ms(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(id)
    }

    /// Exchanges a code for a new agent. The code's name and labels win over the host's.
    pub async fn redeem_pairing_code(&self, code_hash: &str, host: PairingHost, now: Timestamp) -> Result<Redeemed> {
        let redeemed: Result<Option<(Id, Id)>, Redeemed> = with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let row: Option<CodeRow> = sqlx::query_as(
                    "SELECT id, tenant_id, name, labels, expires_at, used_at FROM pairing_codes WHERE code_hash = $1",
                )
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(CodeRow { id: code_id, tenant_id, name, labels, expires_at, used_at }) = row else {
                    return Ok::<_, StoreError>(Err(Redeemed::Unknown));
                };
                if used_at.is_some() {
                    return Ok(Err(Redeemed::AlreadyUsed));
                }
                if expires_at <= to_ms(now) {
                    return Ok(Err(Redeemed::Expired));
                }
                let mut all_labels = host.labels.clone();
                all_labels.extend(parse_json::<Labels>("pairing labels", &labels)?);
                let agent_id = new_id();
                sqlx::query(
                    "INSERT INTO agents (id, tenant_id, name, hostname, os, arch, version, labels, status, token_hash, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $10)",
                )
                .bind(agent_id.to_string())
                .bind(&tenant_id)
                .bind(name.unwrap_or_else(|| host.hostname.clone()))
                .bind(&host.hostname)
                .bind(&host.os)
                .bind(&host.arch)
                .bind(&host.version)
                .bind(to_json(&all_labels))
                .bind(&host.token_hash)
                .bind(to_ms(now))
                .execute(&mut *tx)
                .await?;
                // `used_at IS NULL` again: of two racing redemptions only one changes the row.
                let claimed = sqlx::query(
                    "UPDATE pairing_codes SET used_at = $1, agent_id = $2 WHERE id = $3 AND used_at IS NULL",
                )
                .bind(to_ms(now))
                .bind(agent_id.to_string())
                .bind(&code_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    return Ok(Err(Redeemed::AlreadyUsed));
                }
                tx.commit().await?;
                Ok(Ok(Some((parse_id(&tenant_id)?, agent_id))))
            }
            .await
        })?;
        match redeemed {
            Ok(Some((tenant_id, agent_id))) => {
                Ok(Redeemed::Paired { tenant_id, agent: Box::new(self.get_agent(tenant_id, agent_id).await?) })
            }
            Ok(None) => Ok(Redeemed::Unknown),
            Err(outcome) => Ok(outcome),
        }
    }
}
