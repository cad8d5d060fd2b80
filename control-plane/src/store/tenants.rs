//! Tenants: the workspaces every other row belongs to.

use botmox_contract::{Id, Timestamp};

use super::{new_id, parse_id, to_ms, with_pool, Result, Store};

/// The tenant a fresh install starts with.
pub const DEFAULT_TENANT: &str = "default";

impl Store {
    /// Returns the id of the tenant called `name`, creating it if needed (safe to race).
    pub async fn ensure_tenant(&self, name: &str, now: Timestamp) -> Result<Id> {
        with_pool!(self, write, |pool| {
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                .bind(new_id().to_string())
                .bind(name)
                .bind(to_ms(now))
                .execute(pool)
                .await?
                .rows_affected()
        });
        let id: String = with_pool!(self, write, |pool| {
            sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1").bind(name).fetch_one(pool).await?
        });
        parse_id(&id)
    }
}
