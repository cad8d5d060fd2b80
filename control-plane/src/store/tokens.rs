//! API tokens (`bmx_…`): stored as SHA-256 hashes of the secret; looked up by that hash.

use botmox_contract::{
    auth::{ApiToken, Role, Scope},
    Id, Timestamp,
};

use super::{from_ms, new_id, opt_from_ms, parse_id, parse_json, to_json, to_ms, with_pool, Result, Store, StoreError};

pub struct NewApiToken {
    pub tenant_id: Id,
    pub user_id: Id,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<Timestamp>,
    pub token_hash: String,
}

/// An API token presented on a request, with what is needed to judge it.
#[derive(Debug, Clone)]
pub struct ApiTokenAuth {
    pub token: ApiToken,
    pub tenant_id: Id,
    /// The creator's current role: the token never grants more.
    pub user_role: Role,
    pub user_disabled: bool,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    user_id: String,
    name: String,
    scopes: String,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    created_at: i64,
}

const TOKEN_COLUMNS: &str =
    "t.id, t.user_id, t.name, t.scopes, t.expires_at, t.last_used_at, t.revoked_at, t.created_at";

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<Self> {
        Ok(ApiToken {
            id: parse_id(&row.id)?,
            user_id: parse_id(&row.user_id)?,
            name: row.name,
            scopes: parse_json("token scopes", &row.scopes)?,
            expires_at: opt_from_ms(row.expires_at)?,
            last_used_at: opt_from_ms(row.last_used_at)?,
            revoked_at: opt_from_ms(row.revoked_at)?,
            created_at: from_ms(row.created_at)?,
        })
    }
}

impl Store {
    pub async fn create_api_token(&self, new: NewApiToken, now: Timestamp) -> Result<ApiToken> {
        let id = new_id();
        with_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO api_tokens (id, tenant_id, user_id, name, token_hash, scopes, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id.to_string())
            .bind(new.tenant_id.to_string())
            .bind(new.user_id.to_string())
            .bind(&new.name)
            .bind(&new.token_hash)
            .bind(to_json(&new.scopes))
            .bind(new.expires_at.map(to_ms))
            .bind(to_ms(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.get_api_token(new.tenant_id, id).await
    }

    pub async fn get_api_token(&self, tenant_id: Id, id: Id) -> Result<ApiToken> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.tenant_id = $1 AND t.id = $2");
        let row: Option<TokenRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(tenant_id.to_string()).bind(id.to_string()).fetch_optional(pool).await?
        });
        row.ok_or(StoreError::NotFound("token"))?.try_into()
    }

    /// Tokens of the tenant, or of one user, newest first.
    pub async fn list_api_tokens(&self, tenant_id: Id, user_id: Option<Id>) -> Result<Vec<ApiToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.tenant_id = $1 AND ($2 IS NULL OR t.user_id = $2) \
             ORDER BY t.id DESC"
        );
        let rows: Vec<TokenRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql)
                .bind(tenant_id.to_string())
                .bind(user_id.map(|u| u.to_string()))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Revokes a token; revoking a revoked token is a no-op that returns it.
    pub async fn revoke_api_token(&self, tenant_id: Id, id: Id, now: Timestamp) -> Result<ApiToken> {
        with_pool!(self, write, |pool| {
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
                .bind(to_ms(now))
                .bind(tenant_id.to_string())
                .bind(id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.get_api_token(tenant_id, id).await
    }

    /// The token with this hash, whatever its state (the caller judges expiry and revocation).
    pub async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiTokenAuth>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, t.tenant_id, u.role, u.disabled_at FROM api_tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1"
        );
        #[derive(sqlx::FromRow)]
        struct AuthRow {
            #[sqlx(flatten)]
            token: TokenRow,
            tenant_id: String,
            role: String,
            disabled_at: Option<i64>,
        }
        let row: Option<AuthRow> =
            with_pool!(self, read, |pool| { sqlx::query_as(&sql).bind(token_hash).fetch_optional(pool).await? });
        row.map(|row| {
            Ok(ApiTokenAuth {
                token: row.token.try_into()?,
                tenant_id: parse_id(&row.tenant_id)?,
                user_role: Role::parse(&row.role).ok_or_else(|| StoreError::Corrupt(format!("role `{}`", row.role)))?,
                user_disabled: row.disabled_at.is_some(),
            })
        })
        .transpose()
    }

    /// Records a use, at most once a minute per token (no write on every request).
    pub async fn touch_api_token(&self, id: Id, now: Timestamp) -> Result<()> {
        with_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(to_ms(now))
            .bind(id.to_string())
            .bind(to_ms(now) - 60_000)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}
