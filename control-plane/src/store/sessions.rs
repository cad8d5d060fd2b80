//! Login sessions and their rotating refresh tokens (stored as SHA-256 hashes only).

use botmox_contract::{auth::Role, Id, Timestamp};

use std::collections::HashMap;

use super::{from_ms, json_rows, new_id, parse_id, to_ms, with_pool, Elements, Result, Store, StoreError};

pub struct NewSession {
    pub tenant_id: Id,
    pub user_id: Id,
    pub expires_at: Timestamp,
    /// Hash of the first refresh token of the family.
    pub refresh_hash: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The token was current: it is now used, and `new_hash` is the family's current token.
    Rotated { session_id: Id, tenant_id: Id, user_id: Id },
    /// The token had already been rotated away: someone replayed it, so the family is revoked.
    Reused { session_id: Id },
    /// Unknown, expired, or its session is revoked.
    Invalid,
}

/// The live facts a request's credentials are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveUser {
    pub tenant_id: Id,
    pub role: Role,
}

/// A presented refresh token with its session and user.
#[derive(sqlx::FromRow)]
struct RefreshRow {
    used_at: Option<i64>,
    session_id: String,
    revoked_at: Option<i64>,
    expires_at: i64,
    tenant_id: String,
    user_id: String,
    disabled_at: Option<i64>,
}

impl Store {
    pub async fn create_session(&self, new: NewSession, now: Timestamp) -> Result<Id> {
        let id = new_id();
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO sessions (id, tenant_id, user_id, created_at, expires_at, source_ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id.to_string())
                .bind(new.tenant_id.to_string())
                .bind(new.user_id.to_string())
                .bind(to_ms(now))
                .bind(to_ms(new.expires_at))
                .bind(&new.source_ip)
                .bind(&new.user_agent)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
                    .bind(&new.refresh_hash)
                    .bind(id.to_string())
                    .bind(to_ms(now))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(())
            }
            .await
        })?;
        Ok(id)
    }

    /// Exchanges the refresh token `presented_hash` for `new_hash`, in one transaction.
    pub async fn rotate_refresh_token(&self, presented_hash: &str, new_hash: &str, now: Timestamp) -> Result<Refresh> {
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let row: Option<RefreshRow> = sqlx::query_as(
                    "SELECT rt.used_at, s.id AS session_id, s.revoked_at, s.expires_at, s.tenant_id, s.user_id, \
                     u.disabled_at \
                     FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id JOIN users u ON u.id = s.user_id \
                     WHERE rt.token_hash = $1",
                )
                .bind(presented_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(RefreshRow { used_at, session_id, revoked_at, expires_at, tenant_id, user_id, disabled_at }) =
                    row
                else {
                    return Ok(Refresh::Invalid);
                };
                if revoked_at.is_some() || expires_at <= to_ms(now) || disabled_at.is_some() {
                    return Ok(Refresh::Invalid);
                }
                // `used_at IS NULL` again: of two racing refreshes with one token (Postgres runs
                // them concurrently) only one claims it; the other is a reuse like any other.
                let claimed = used_at.is_none()
                    && sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
                        .bind(to_ms(now))
                        .bind(presented_hash)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                if !claimed {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'refresh token reused' WHERE id = $2",
                    )
                    .bind(to_ms(now))
                    .bind(&session_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok(Refresh::Reused { session_id: parse_id(&session_id)? });
                }
                sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
                    .bind(new_hash)
                    .bind(&session_id)
                    .bind(to_ms(now))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Refresh::Rotated {
                    session_id: parse_id(&session_id)?,
                    tenant_id: parse_id(&tenant_id)?,
                    user_id: parse_id(&user_id)?,
                })
            }
            .await
        })
    }

    /// Revokes one session (logout). Returns false when it was unknown or already revoked.
    pub async fn revoke_session(&self, session_id: Id, reason: &str, now: Timestamp) -> Result<bool> {
        let changed = with_pool!(self, write, |pool| {
            sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
                .bind(to_ms(now))
                .bind(reason)
                .bind(session_id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed > 0)
    }

    /// Revokes every session of a user (password change, disable, role change).
    pub async fn revoke_user_sessions(&self, user_id: Id, reason: &str, now: Timestamp) -> Result<u64> {
        Ok(with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL",
            )
            .bind(to_ms(now))
            .bind(reason)
            .bind(user_id.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Whether each `(user, session)` is live (the session neither revoked nor expired, the
    /// user not disabled), and if so the user's tenant and role: one statement for all of
    /// them (the check every request with a session token makes, grouped across requests by
    /// `AppState::session_checks`). Answers in the order asked.
    pub async fn live_session_users(&self, checks: &[(Id, Id)], now: Timestamp) -> Result<Vec<Option<LiveUser>>> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let sessions: Vec<String> = checks.iter().map(|(_, session)| session.to_string()).collect();
        let sql = format!(
            "SELECT s.id, s.user_id, u.tenant_id, u.role FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id IN (SELECT value FROM {}) AND s.revoked_at IS NULL AND s.expires_at > $2 \
             AND u.disabled_at IS NULL",
            self.json_array_rows("$1", Elements::Text)
        );
        let rows: Vec<(String, String, String, String)> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(json_rows(&sessions)).bind(to_ms(now)).fetch_all(pool).await?
        });
        let mut live: HashMap<(Id, Id), LiveUser> = HashMap::with_capacity(rows.len());
        for (session, user, tenant_id, role) in rows {
            let key = (parse_id(&user)?, parse_id(&session)?);
            let role = Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role `{role}`")))?;
            live.insert(key, LiveUser { tenant_id: parse_id(&tenant_id)?, role });
        }
        Ok(checks.iter().map(|key| live.get(key).cloned()).collect())
    }

    /// The session a refresh token (current or used) belongs to.
    pub async fn session_of_refresh_token(&self, token_hash: &str) -> Result<Option<Id>> {
        let id: Option<String> = with_pool!(self, read, |pool| {
            sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(pool)
                .await?
        });
        id.as_deref().map(parse_id).transpose()
    }

    /// (tenant, user) of a session.
    pub async fn session_owner(&self, session_id: Id) -> Result<Option<(Id, Id)>> {
        let row: Option<(String, String)> = with_pool!(self, read, |pool| {
            sqlx::query_as("SELECT tenant_id, user_id FROM sessions WHERE id = $1")
                .bind(session_id.to_string())
                .fetch_optional(pool)
                .await?
        });
        row.map(|(t, u)| Ok((parse_id(&t)?, parse_id(&u)?))).transpose()
    }

    /// When a session expires (for cookie lifetimes).
    pub async fn session_expiry(&self, session_id: Id) -> Result<Timestamp> {
        let ms: Option<i64> = with_pool!(self, read, |pool| {
            sqlx::query_scalar("SELECT expires_at FROM sessions WHERE id = $1")
                .bind(session_id.to_string())
                .fetch_optional(pool)
                .await?
        });
        from_ms(ms.ok_or(StoreError::NotFound("session"))?)
    }
}
