//! The offline administration commands: they open the database directly (no server needed),
//! for bootstrapping and for recovering from a lost password or a compromised key.

use anyhow::Context as _;

use super::{AdminCommand, SecretsCommand, TokenCommand};
use crate::{
    auth::{credentials, min_role, password},
    clock::Clock,
    secrets::{self, vault},
    server::open_store,
    store::{NewApiToken, NewUser, Store, UserChanges, UserRecord},
};

/// The password from `BOTMOX_PASSWORD`, or a generated one (then `true`: print it).
fn password_from_env() -> anyhow::Result<(String, bool)> {
    match std::env::var("BOTMOX_PASSWORD") {
        Ok(given) => {
            anyhow::ensure!(
                (password::MIN_LENGTH..=password::MAX_LENGTH).contains(&given.chars().count()),
                "BOTMOX_PASSWORD must be {} to {} characters long",
                password::MIN_LENGTH,
                password::MAX_LENGTH
            );
            Ok((given, false))
        }
        Err(_) => Ok((password::generate(), true)),
    }
}

async fn user_named(store: &Store, username: &str) -> anyhow::Result<UserRecord> {
    store.find_user_by_username(username).await?.with_context(|| format!("there is no user `{username}`"))
}

pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    let clock = Clock::System;
    match command {
        AdminCommand::Create { username, role, tenant, database } => {
            let store = open_store(&database.resolve()?).await?;
            let tenant_id = store.ensure_tenant(&tenant, clock.now()).await?;
            let (plain, generated) = password_from_env()?;
            let new = NewUser {
                tenant_id,
                username: username.clone(),
                email: None,
                password_hash: password::hash(plain.clone()).await?,
                role,
            };
            store.create_user(new, clock.now()).await?;
            println!("created {} `{username}` in tenant `{tenant}`", role.as_str());
            if generated {
                println!("password: {plain}");
            }
            store.close().await;
        }
        AdminCommand::ResetPassword { username, database } => {
            let store = open_store(&database.resolve()?).await?;
            let record = user_named(&store, &username).await?;
            let (plain, generated) = password_from_env()?;
            let changes =
                UserChanges { password_hash: Some(password::hash(plain.clone()).await?), ..Default::default() };
            store.update_user(record.tenant_id, record.user.id, changes, clock.now()).await?;
            let ended = store.revoke_user_sessions(record.user.id, "password reset", clock.now()).await?;
            println!("password of `{username}` reset; {ended} session(s) ended");
            if generated {
                println!("password: {plain}");
            }
            store.close().await;
        }
    }
    Ok(())
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create { username, name, scopes, ttl_seconds, database } = command;
    let clock = Clock::System;
    let store = open_store(&database.resolve()?).await?;
    let record = user_named(&store, &username).await?;
    if let Some(scope) = scopes.iter().find(|s| min_role(**s) > record.user.role) {
        anyhow::bail!(
            "`{}` needs the {} role and `{username}` is a {}",
            scope.as_str(),
            min_role(*scope).as_str(),
            record.user.role.as_str()
        );
    }
    let secret = credentials::new_api_token();
    let now = clock.now();
    let token = store
        .create_api_token(
            NewApiToken {
                tenant_id: record.tenant_id,
                user_id: record.user.id,
                name,
                scopes,
                expires_at: ttl_seconds.map(|ttl| now + chrono::Duration::seconds(ttl as i64)),
                token_hash: credentials::hash(&secret),
            },
            now,
        )
        .await?;
    println!("created API token {} for `{username}`", token.id);
    println!("{secret}");
    store.close().await;
    Ok(())
}

pub async fn secrets(command: SecretsCommand) -> anyhow::Result<()> {
    let SecretsCommand::RotateKey { new_key_file, database, keys } = command;
    let url = database.resolve()?;
    let store = open_store(&url).await?;
    let source = keys
        .source(&database.data_dir, &url)
        .context("no master key is configured: pass --master-key-file (or set BOTMOX_MASTER_KEY)")?;
    let current = vault::load(Some(&source), &store).await?.context("no master key")?;
    let new = vault::MasterKey::generate();
    let in_data_dir = matches!(source, vault::KeySource::DataDir(_));
    let target = match (&new_key_file, in_data_dir) {
        (Some(path), _) => path.clone(),
        (None, true) => database.data_dir.join("master.key.next"),
        (None, false) => anyhow::bail!("the master key is configured outside the data dir: pass --new-key-file"),
    };
    new.write_new_file(&target)?;
    let count = secrets::rotate_key(&store, &current, &new).await?;
    store.close().await;
    if in_data_dir && new_key_file.is_none() {
        let live = database.data_dir.join("master.key");
        std::fs::rename(&live, database.data_dir.join("master.key.previous"))?;
        std::fs::rename(&target, &live)?;
        println!("re-encrypted {count} secret(s) under key {}; it is now {}", new.id, live.display());
    } else {
        println!(
            "re-encrypted {count} secret(s) under key {} written to {}: point --master-key-file (or \
             BOTMOX_MASTER_KEY_FILE) at it before the next start",
            new.id,
            target.display()
        );
    }
    Ok(())
}
