//! Session access tokens: short-lived HS256 JWTs (`jsonwebtoken`). The signing key is
//! generated once and kept in the store (`server_kv`), so every replica verifies every token.
//! Expiry is checked against the app's [`Clock`], not the system clock, so tests control it.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use botmox_contract::{auth::Role, Id};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{clock::Clock, store::Store};

const KEY_NAME: &str = "session_signing_key_v1";
/// Access tokens live 15 minutes.
pub const ACCESS_TTL_SECONDS: u64 = 15 * 60;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: Id,
    /// Tenant id.
    pub tid: Id,
    /// Session (refresh family) id: revoking the session ends this token too.
    pub sid: Id,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl SessionKeys {
    /// Loads the shared signing key, creating it on the first start of the first replica.
    pub async fn load_or_create(store: &Store) -> anyhow::Result<Self> {
        let fresh: [u8; 32] = rand::random();
        let stored = store.init_server_value(KEY_NAME, &STANDARD.encode(fresh)).await?;
        let key = STANDARD.decode(stored.as_bytes())?;
        anyhow::ensure!(key.len() >= 32, "the stored session signing key is too short");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        Ok(Self { encoding: EncodingKey::from_secret(&key), decoding: DecodingKey::from_secret(&key), validation })
    }

    pub fn issue(
        &self,
        user_id: Id,
        tenant_id: Id,
        session_id: Id,
        role: Role,
        clock: &Clock,
    ) -> anyhow::Result<String> {
        let now = clock.now().timestamp();
        let claims = Claims {
            sub: user_id,
            tid: tenant_id,
            sid: session_id,
            role,
            iat: now,
            exp: now + ACCESS_TTL_SECONDS as i64,
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// The token's claims if its signature is ours and it has not expired.
    pub fn verify(&self, token: &str, clock: &Clock) -> Option<Claims> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?.claims;
        (claims.exp > clock.now().timestamp()).then_some(claims)
    }
}
