//! First start: the default tenant and its first admin.

use botmox_contract::{auth::Role, Id};

use super::password;
use crate::{
    clock::Clock,
    store::{NewUser, Store, StoreError, DEFAULT_TENANT},
};

pub enum Bootstrap {
    /// The tenant already had users: nothing was created.
    Existing { tenant_id: Id },
    /// An admin was created; `generated_password` is set when the password was generated
    /// (and must be shown to the operator, once).
    Created { tenant_id: Id, username: String, generated_password: Option<String> },
}

pub async fn ensure_admin(
    store: &Store,
    clock: &Clock,
    username: &str,
    password: Option<&str>,
) -> anyhow::Result<Bootstrap> {
    let tenant_id = store.ensure_tenant(DEFAULT_TENANT, clock.now()).await?;
    if store.count_users(tenant_id).await? > 0 {
        return Ok(Bootstrap::Existing { tenant_id });
    }
    if let Some(given) = password {
        anyhow::ensure!(
            (password::MIN_LENGTH..=password::MAX_LENGTH).contains(&given.len()),
            "BOTMOX_ADMIN_PASSWORD must be {} to {} characters long",
            password::MIN_LENGTH,
            password::MAX_LENGTH
        );
    }
    let generated = password.is_none().then(password::generate);
    let plain = password.map(str::to_owned).or_else(|| generated.clone()).unwrap_or_default();
    let new = NewUser {
        tenant_id,
        username: username.to_owned(),
        email: None,
        password_hash: password::hash(plain).await?,
        role: Role::Admin,
    };
    match store.create_user(new, clock.now()).await {
        Ok(_) => Ok(Bootstrap::Created { tenant_id, username: username.to_owned(), generated_password: generated }),
        // Another replica won the race: its admin stands.
        Err(StoreError::Conflict(_)) => Ok(Bootstrap::Existing { tenant_id }),
        Err(e) => Err(e.into()),
    }
}
