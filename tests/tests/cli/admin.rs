//! The offline administration commands against a real data dir, with a running server.

use botmox_e2e::{
    app::send,
    server::{run_to_exit, ServerProcess},
};

#[tokio::test]
async fn admin_cli_creates_users_resets_passwords_and_makes_tokens() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dir = data.path().to_str().unwrap_or_default().to_owned();
    let d = ["--data-dir", dir.as_str()];

    let (code, stdout, stderr) = run_to_exit(
        &[&["admin", "create", "--username", "ops", "--role", "operator"][..], &d].concat(),
        &[("BOTMOX_PASSWORD", "ops-password-1")],
    )
    .await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("created operator `ops`") && !stdout.contains("password:"), "{stdout}");
    let (code, _, stderr) = run_to_exit(
        &[&["admin", "create", "--username", "ops"][..], &d].concat(),
        &[("BOTMOX_PASSWORD", "x-password")],
    )
    .await?;
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("error: ") && stderr.contains("cannot be used"), "{stderr}");

    let (code, stdout, stderr) = run_to_exit(
        &[&["token", "create", "--username", "ops", "--name", "ci", "--scope", "bots:read"][..], &d].concat(),
        &[],
    )
    .await?;
    assert_eq!(code, Some(0), "{stderr}");
    let secret = stdout.lines().find(|l| l.starts_with("bmx_")).unwrap_or_default().to_owned();
    assert!(!secret.is_empty(), "{stdout}");
    let (code, _, stderr) = run_to_exit(
        &[&["token", "create", "--username", "ops", "--name", "x", "--scope", "admin"][..], &d].concat(),
        &[],
    )
    .await?;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("needs the admin role"), "{stderr}");
    let (code, _, stderr) = run_to_exit(
        &[&["token", "create", "--username", "ops", "--name", "x", "--scope", "bots:fly"][..], &d].concat(),
        &[],
    )
    .await?;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("is not a scope"), "{stderr}");

    let server = ServerProcess::start(&d, &[]).await?;
    let client = reqwest::Client::new();
    let session = login_as(&client, &server, "ops", "ops-password-1").await?;
    let (status, _) = send(client.get(server.url("/api/v1/bots")).bearer_auth(&secret)).await?;
    assert_eq!(status, 200, "the CLI-made token works");

    // Reset while the server runs: the old session ends, the new password works.
    let (code, stdout, stderr) =
        run_to_exit(&[&["admin", "reset-password", "--username", "ops"][..], &d].concat(), &[]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("1 session(s) ended"), "{stdout}");
    let new_password = stdout.lines().find_map(|l| l.strip_prefix("password: ")).unwrap_or_default().to_owned();
    assert_eq!(new_password.len(), 20);
    let (status, _) = send(client.get(server.url("/api/v1/auth/me")).bearer_auth(&session)).await?;
    assert_eq!(status, 401, "the old session is over");
    login_as(&client, &server, "ops", &new_password).await?;
    assert!(login_as(&client, &server, "ops", "ops-password-1").await.is_err());
    assert_eq!(server.terminate().await?, Some(0));
    Ok(())
}

async fn login_as(
    client: &reqwest::Client,
    server: &ServerProcess,
    user: &str,
    password: &str,
) -> anyhow::Result<String> {
    let body = serde_json::json!({ "username": user, "password": password });
    let (status, body) = send(client.post(server.url("/api/v1/auth/login")).json(&body)).await?;
    anyhow::ensure!(status == 200, "login of {user}: {status} {body}");
    Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
}
