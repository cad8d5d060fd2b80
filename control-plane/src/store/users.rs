//! Users and their password hashes. Hashing itself happens in `auth`; the store only keeps
//! the PHC string.

use botmox_contract::{
    auth::{Role, User},
    Id, Timestamp,
};

use super::{from_ms, is_unique_violation, new_id, opt_from_ms, parse_id, to_ms, with_pool, Result, Store, StoreError};

pub struct NewUser {
    pub tenant_id: Id,
    pub username: String,
    pub email: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
}

/// A user as the server sees it (the wire [`User`] plus what must never leave the server).
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub tenant_id: Id,
    pub user: User,
    pub password_hash: String,
    pub disabled_at: Option<Timestamp>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    tenant_id: String,
    username: String,
    email: Option<String>,
    password_hash: String,
    role: String,
    disabled_at: Option<i64>,
    created_at: i64,
}

const USER_COLUMNS: &str = "id, tenant_id, username, email, password_hash, role, disabled_at, created_at";

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self> {
        Ok(UserRecord {
            tenant_id: parse_id(&row.tenant_id)?,
            user: User {
                id: parse_id(&row.id)?,
                username: row.username,
                email: row.email,
                role: Role::parse(&row.role).ok_or_else(|| StoreError::Corrupt(format!("role `{}`", row.role)))?,
                disabled: row.disabled_at.is_some(),
                created_at: from_ms(row.created_at)?,
            },
            password_hash: row.password_hash,
            disabled_at: opt_from_ms(row.disabled_at)?,
        })
    }
}

impl Store {
    pub async fn create_user(&self, new: NewUser, now: Timestamp) -> Result<UserRecord> {
        let id = new_id();
        let inserted = with_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO users (id, tenant_id, username, email, password_hash, role, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(id.to_string())
            .bind(new.tenant_id.to_string())
            .bind(&new.username)
            .bind(&new.email)
            .bind(&new.password_hash)
            .bind(new.role.as_str())
            .bind(to_ms(now))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match inserted {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(USERNAME_UNAVAILABLE.into())),
            Err(e) => Err(e.into()),
            Ok(_) => self.get_user(new.tenant_id, id).await,
        }
    }

    pub async fn get_user(&self, tenant_id: Id, id: Id) -> Result<UserRecord> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2");
        let row: Option<UserRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(tenant_id.to_string()).bind(id.to_string()).fetch_optional(pool).await?
        });
        row.ok_or(StoreError::NotFound("user"))?.try_into()
    }

    /// Login looks users up by name across tenants: usernames are unique server-wide, and
    /// regardless of case.
    pub async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1)");
        let row: Option<UserRow> =
            with_pool!(self, read, |pool| { sqlx::query_as(&sql).bind(username).fetch_optional(pool).await? });
        row.map(TryInto::try_into).transpose()
    }

    pub async fn count_users(&self, tenant_id: Id) -> Result<u64> {
        let n: i64 = with_pool!(self, read, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
                .bind(tenant_id.to_string())
                .fetch_one(pool)
                .await?
        });
        Ok(n as u64)
    }
}

/// The conflict message of a username already in use, in this tenant or another, in any case.
/// Usernames are unique server-wide (login names no tenant), so the refusal is the same
/// whoever holds the name: it never tells a tenant's admin that another tenant has that user.
pub const USERNAME_UNAVAILABLE: &str = "this username cannot be used: choose another";

/// The conflict message of a change that would leave a tenant without an enabled admin.
pub const LAST_ADMIN: &str = "the tenant must keep at least one enabled admin";

/// Changes to a user; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub email: Option<Option<String>>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
}

impl Store {
    pub async fn list_users(&self, tenant_id: Id) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY username");
        let rows: Vec<UserRow> =
            with_pool!(self, read, |pool| { sqlx::query_as(&sql).bind(tenant_id.to_string()).fetch_all(pool).await? });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Applies `changes`; refuses (`Conflict`, "last admin") if they would leave the tenant
    /// without an enabled admin. The check and the change are one transaction, and on Postgres
    /// the tenant's admin rows are locked, so two racing demotions cannot both pass.
    pub async fn update_user(&self, tenant_id: Id, id: Id, changes: UserChanges, now: Timestamp) -> Result<UserRecord> {
        let disabled_at = changes.disabled.map(|d| if d { Some(to_ms(now)) } else { None });
        let removes_admin = changes.role.is_some_and(|r| r != Role::Admin) || changes.disabled == Some(true);
        let lock = self.admin_lock_clause();
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let admins: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM users WHERE tenant_id = $1 AND role = 'admin' AND disabled_at IS NULL{lock}"
                ))
                .bind(tenant_id.to_string())
                .fetch_all(&mut *tx)
                .await?;
                if removes_admin && admins.len() <= 1 && admins.contains(&id.to_string()) {
                    return Err(StoreError::Conflict(LAST_ADMIN.into()));
                }
                let changed = sqlx::query(
                    "UPDATE users SET \
                     email = CASE WHEN $1 THEN $2 ELSE email END, \
                     role = COALESCE($3, role), \
                     password_hash = COALESCE($4, password_hash), \
                     disabled_at = CASE WHEN $5 THEN $6 ELSE disabled_at END, \
                     updated_at = $7 \
                     WHERE tenant_id = $8 AND id = $9",
                )
                .bind(changes.email.is_some())
                .bind(changes.email.clone().flatten())
                .bind(changes.role.map(Role::as_str))
                .bind(&changes.password_hash)
                .bind(disabled_at.is_some())
                .bind(disabled_at.flatten())
                .bind(to_ms(now))
                .bind(tenant_id.to_string())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Err(StoreError::NotFound("user"));
                }
                tx.commit().await?;
                Ok(())
            }
            .await
        })?;
        self.get_user(tenant_id, id).await
    }

    /// Deletes a user; refuses to delete the tenant's last enabled admin (same guarantee as
    /// [`Store::update_user`]).
    pub async fn delete_user(&self, tenant_id: Id, id: Id) -> Result<()> {
        let lock = self.admin_lock_clause();
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let admins: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM users WHERE tenant_id = $1 AND role = 'admin' AND disabled_at IS NULL{lock}"
                ))
                .bind(tenant_id.to_string())
                .fetch_all(&mut *tx)
                .await?;
                if admins.len() <= 1 && admins.contains(&id.to_string()) {
                    return Err(StoreError::Conflict(LAST_ADMIN.into()));
                }
                let deleted = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant_id.to_string())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Err(StoreError::NotFound("user"));
                }
                tx.commit().await?;
                Ok(())
            }
            .await
        })
    }

    /// Postgres locks the rows it counts; SQLite's single writer already serialises.
    fn admin_lock_clause(&self) -> &'static str {
        match self.backend {
            super::Backend::Postgres { .. } => " FOR UPDATE",
            super::Backend::Sqlite { .. } => "",
        }
    }

    /// Enabled admins of a tenant (the last one may not be demoted, disabled or deleted).
    pub async fn count_active_admins(&self, tenant_id: Id) -> Result<u64> {
        let n: i64 = with_pool!(self, read, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = 'admin' AND disabled_at IS NULL",
            )
            .bind(tenant_id.to_string())
            .fetch_one(pool)
            .await?
        });
        Ok(n as u64)
    }
}
