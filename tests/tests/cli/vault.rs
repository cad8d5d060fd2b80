//! The secrets vault through the real binary: values never reach logs or disk in clear, the
//! master key is 0600, a missing or wrong key stops the server, and key rotation works.

use botmox_control_plane::{
    secrets::vault::{self, MasterKey},
    store::{DatabaseUrl, PoolOptions, Store},
};
use botmox_e2e::{
    app::send,
    server::{run_to_exit, ServerProcess},
};
use reqwest::Method;
use serde_json::json;

use crate::login;

const VALUE: &str = "S3cr3t-V4lue-never-logged";

async fn sealed_opens_with(data_dir: &std::path::Path, key: &MasterKey) -> anyhow::Result<String> {
    let store = Store::connect(&DatabaseUrl::Sqlite(data_dir.join("botmox.db")), &PoolOptions::default()).await?;
    let sealed = store.all_sealed_secrets().await?;
    store.close().await;
    anyhow::ensure!(sealed.len() == 1, "one secret expected, found {}", sealed.len());
    vault::open(key, &sealed[0])
}

#[tokio::test]
async fn secret_values_stay_out_of_logs_and_disk_and_the_key_guards_the_vault() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dir = data.path().to_str().unwrap_or_default().to_owned();
    let env = [("BOTMOX_ADMIN_PASSWORD", "vault-admin-password"), ("RUST_LOG", "debug")];
    let server = ServerProcess::start(&["--data-dir", &dir], &env).await?;
    let client = reqwest::Client::new();
    let token = login(&client, &server, "vault-admin-password").await?;
    let put = client.request(Method::PUT, server.url("/api/v1/secrets/db-password")).bearer_auth(&token);
    let (status, meta) = send(put.json(&json!({ "value": VALUE }))).await?;
    assert_eq!(status, 201, "{meta}");
    assert_eq!(meta["name"], "db-password");
    let (_, list) = send(client.get(server.url("/api/v1/secrets")).bearer_auth(&token)).await?;
    assert!(!list.to_string().contains(VALUE));
    let (stdout, stderr) = (server.stdout.clone(), server.stderr.clone());
    assert_eq!(server.terminate().await?, Some(0));
    let logs = [stdout.snapshot(), stderr.snapshot()].concat().join("\n");
    assert!(logs.contains("secret stored"), "debug logs were captured");
    assert!(!logs.contains(VALUE), "the value is in the server's logs");

    // On disk: the key is owner-only, and the database holds no clear value.
    let key_path = data.path().join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key_path)?.permissions().mode() & 0o777, 0o600);
    }
    for file in ["botmox.db", "botmox.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.path().join(file)) {
            assert!(!bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()), "{file} holds the value in clear");
        }
    }
    let original = MasterKey::read_file(&key_path)?;
    assert_eq!(sealed_opens_with(data.path(), &original).await?, VALUE);

    // Missing key: refuse to start, one clear line.
    let moved = data.path().join("master.key.saved");
    std::fs::rename(&key_path, &moved)?;
    let (code, _, stderr) = run_to_exit(&["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"], &[]).await?;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("secret(s) exist but the master key file") && stderr.lines().count() == 1, "{stderr}");
    assert!(!key_path.exists(), "no new key was generated over existing secrets");

    // Wrong key: refuse to start.
    MasterKey::generate().write_new_file(&key_path)?;
    let (code, _, stderr) = run_to_exit(&["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"], &[]).await?;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is not the one the secrets were sealed with"), "{stderr}");
    std::fs::remove_file(&key_path)?;
    std::fs::rename(&moved, &key_path)?;

    // Rotation: re-encrypted under a new key that replaces the old file; the old one is kept.
    let (code, stdout, stderr) = run_to_exit(&["secrets", "rotate-key", "--data-dir", &dir], &[]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("re-encrypted 1 secret(s)"), "{stdout}");
    let rotated = MasterKey::read_file(&key_path)?;
    assert_ne!(rotated.id, original.id);
    assert_eq!(MasterKey::read_file(&data.path().join("master.key.previous"))?.id, original.id);
    assert_eq!(sealed_opens_with(data.path(), &rotated).await?, VALUE);
    assert!(sealed_opens_with(data.path(), &original).await.is_err(), "the old key no longer opens it");
    let server = ServerProcess::start(&["--data-dir", &dir], &[]).await?;
    assert_eq!(server.terminate().await?, Some(0), "the server starts with the rotated key");
    Ok(())
}

#[tokio::test]
async fn postgres_without_a_master_key_runs_with_the_vault_off() -> anyhow::Result<()> {
    let db = botmox_e2e::db::TestDb::new(botmox_e2e::db::Backend::Postgres).await?;
    let url = db.url_string();
    let env = [("BOTMOX_ADMIN_PASSWORD", "pg-vault-password")];
    let server = ServerProcess::start(&["--database-url", &url], &env).await?;
    let client = reqwest::Client::new();
    let token = login(&client, &server, "pg-vault-password").await?;
    let put = client.request(Method::PUT, server.url("/api/v1/secrets/x")).bearer_auth(&token);
    let (status, problem) = send(put.json(&json!({ "value": "v" }))).await?;
    assert_eq!((status, problem["code"].as_str()), (503, Some("vault_not_configured")), "{problem}");
    assert!(problem["hint"].as_str().unwrap_or_default().contains("--master-key-file"));
    assert_eq!(server.terminate().await?, Some(0));

    // With a key file it works, and every replica with the same key reads the same vault.
    let keys = tempfile::tempdir()?;
    let key_file = keys.path().join("master.key");
    MasterKey::generate().write_new_file(&key_file)?;
    let key_arg = key_file.to_str().unwrap_or_default();
    let server = ServerProcess::start(&["--database-url", &url, "--master-key-file", key_arg], &env).await?;
    let token = login(&client, &server, "pg-vault-password").await?;
    let put = client.request(Method::PUT, server.url("/api/v1/secrets/x")).bearer_auth(&token);
    let (status, _) = send(put.json(&json!({ "value": "v" }))).await?;
    assert_eq!(status, 201);
    assert_eq!(server.terminate().await?, Some(0));
    // Now that a secret exists, starting without the key is refused.
    let (code, _, stderr) = run_to_exit(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"], &[]).await?;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no master key is configured"), "{stderr}");
    db.cleanup().await
}
