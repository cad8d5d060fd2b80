//! Secret ciphertexts. Encryption happens in `crate::secrets`; the store never sees a value.

use botmox_contract::{secrets::SecretMeta, Id, Timestamp};

use super::{from_ms, parse_id, to_ms, with_pool, Result, Store, StoreError};

/// One encrypted secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub tenant_id: Id,
    pub name: String,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    tenant_id: String,
    name: String,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl TryFrom<SealedRow> for SealedSecret {
    type Error = StoreError;

    fn try_from(row: SealedRow) -> Result<Self> {
        Ok(SealedSecret {
            tenant_id: parse_id(&row.tenant_id)?,
            name: row.name,
            key_id: row.key_id,
            nonce: row.nonce,
            ciphertext: row.ciphertext,
        })
    }
}

impl Store {
    /// Creates or replaces a secret; returns its metadata and whether it was new.
    pub async fn put_secret(&self, sealed: SealedSecret, now: Timestamp) -> Result<(SecretMeta, bool)> {
        let existed = self.secret_meta(sealed.tenant_id, &sealed.name).await.is_ok();
        with_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO secrets (tenant_id, name, key_id, nonce, ciphertext, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (tenant_id, name) DO UPDATE SET \
                 key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
                 updated_at = excluded.updated_at",
            )
            .bind(sealed.tenant_id.to_string())
            .bind(&sealed.name)
            .bind(&sealed.key_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(to_ms(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok((self.secret_meta(sealed.tenant_id, &sealed.name).await?, !existed))
    }

    pub async fn secret_meta(&self, tenant_id: Id, name: &str) -> Result<SecretMeta> {
        let row: Option<(String, i64, i64)> = with_pool!(self, read, |pool| {
            sqlx::query_as("SELECT name, created_at, updated_at FROM secrets WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id.to_string())
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        let (name, created_at, updated_at) = row.ok_or(StoreError::NotFound("secret"))?;
        Ok(SecretMeta { name, created_at: from_ms(created_at)?, updated_at: from_ms(updated_at)? })
    }

    pub async fn list_secrets(&self, tenant_id: Id) -> Result<Vec<SecretMeta>> {
        let rows: Vec<(String, i64, i64)> = with_pool!(self, read, |pool| {
            sqlx::query_as("SELECT name, created_at, updated_at FROM secrets WHERE tenant_id = $1 ORDER BY name")
                .bind(tenant_id.to_string())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(name, c, u)| Ok(SecretMeta { name, created_at: from_ms(c)?, updated_at: from_ms(u)? }))
            .collect()
    }

    pub async fn delete_secret(&self, tenant_id: Id, name: &str) -> Result<()> {
        let deleted = with_pool!(self, write, |pool| {
            sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id.to_string())
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(StoreError::NotFound("secret"));
        }
        Ok(())
    }

    /// The sealed secrets of one tenant with these names (for delivery to an agent).
    pub async fn sealed_secrets(&self, tenant_id: Id, names: &[String]) -> Result<Vec<SealedSecret>> {
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            let row: Option<SealedRow> = with_pool!(self, read, |pool| {
                sqlx::query_as(
                    "SELECT tenant_id, name, key_id, nonce, ciphertext FROM secrets WHERE tenant_id = $1 AND name = $2",
                )
                .bind(tenant_id.to_string())
                .bind(name)
                .fetch_optional(pool)
                .await?
            });
            if let Some(row) = row {
                found.push(row.try_into()?);
            }
        }
        Ok(found)
    }

    /// Every sealed secret of every tenant (key rotation, key checks at start).
    pub async fn all_sealed_secrets(&self) -> Result<Vec<SealedSecret>> {
        let rows: Vec<SealedRow> = with_pool!(self, read, |pool| {
            sqlx::query_as("SELECT tenant_id, name, key_id, nonce, ciphertext FROM secrets ORDER BY tenant_id, name")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Replaces the ciphertexts of many secrets in one transaction (key rotation: all or none).
    pub async fn reseal_secrets(&self, resealed: &[SealedSecret]) -> Result<()> {
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                for sealed in resealed {
                    sqlx::query(
                        "UPDATE secrets SET key_id = $1, nonce = $2, ciphertext = $3 WHERE tenant_id = $4 AND name = $5",
                    )
                    .bind(&sealed.key_id)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(sealed.tenant_id.to_string())
                    .bind(&sealed.name)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok::<_, StoreError>(())
            }
            .await
        })
    }
}
