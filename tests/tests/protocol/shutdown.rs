//! The real `botmox` stopping with SIGTERM while agents and browsers are connected: it tells
//! WebSocket agents to reconnect (close code 4002), answers long-polls, ends event streams, and
//! exits cleanly instead of waiting forever for connections that never end on their own; and
//! the audit entries of the last requests it answered (written after their responses) are
//! committed before it exits.

use std::time::Duration;

use anyhow::Context as _;

use botmox_e2e::{
    app::send,
    server::ServerProcess,
    sim::{Disconnect, SimAgent, SimConfig, Transport},
    sse::SseStream,
};
use serde_json::json;

const PASSWORD: &str = "shutdown-admin-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_agents_away_ends_streams_and_exits() -> anyhow::Result<()> {
    botmox_e2e::init_test_logging();
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_str().unwrap_or_default();
    let server = ServerProcess::start(&["--data-dir", data_dir], &[("BOTMOX_ADMIN_PASSWORD", PASSWORD)]).await?;
    let client = reqwest::Client::new();
    let login = json!({ "username": "admin", "password": PASSWORD });
    let (status, body) = send(client.post(server.url("/api/v1/auth/login")).json(&login)).await?;
    anyhow::ensure!(status == 200, "login answered {status}: {body}");
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
    let mut agents = Vec::new();
    for name in ["vm-ws", "vm-poll"] {
        let create = client.post(server.url("/api/v1/agents/pairing-codes")).bearer_auth(&token);
        let (_, code) = send(create.json(&json!({ "name": name }))).await?;
        let pair = json!({ "code": code["code"], "hostname": name, "os": "linux", "arch": "x86_64", "version": "t" });
        let (status, paired) = send(client.post(server.url("/api/v1/agents/pair")).json(&pair)).await?;
        anyhow::ensure!(status == 201, "pairing answered {status}: {paired}");
        agents.push(paired["agent_token"].as_str().unwrap_or_default().to_owned());
    }

    let mut ws = SimAgent::connect(SimConfig::new(server.base_url.clone(), &agents[0])).await?;
    let poll_config = SimConfig::new(server.base_url.clone(), &agents[1])
        .transport(Transport::LongPoll { wait: Duration::from_secs(30) });
    let mut poll = SimAgent::connect(poll_config).await?;
    let mut events = SseStream::open(client.get(server.url("/api/v1/events")).bearer_auth(&token)).await?;

    let code = server.terminate().await.context(
        "SIGTERM while a WebSocket agent, a long-polling agent (30 s polls) and an event stream are connected",
    )?;
    assert_eq!(code, Some(0), "a clean exit");
    match ws.closed(Duration::from_secs(5)).await? {
        Disconnect::Closed { code, .. } => assert_eq!(code, 4002, "the reconnect hint"),
        other => anyhow::bail!("the agent's socket should be closed with 4002, got {other:?}"),
    }
    assert!(poll.closed(Duration::from_secs(5)).await.is_ok(), "the long-poller is cut off");
    assert!(events.next_event(Duration::from_secs(5)).await.is_err(), "the event stream ended");
    Ok(())
}

/// Audit entries are committed just after their responses (`audit::AuditLog`): a SIGTERM the
/// moment a burst of requests was answered must still leave every one of them in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_a_burst_keeps_every_audit_entry() -> anyhow::Result<()> {
    botmox_e2e::init_test_logging();
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_str().unwrap_or_default();
    let env = [("BOTMOX_ADMIN_PASSWORD", PASSWORD)];
    // No grace period: the drain starts the moment the signal arrives.
    let server = ServerProcess::start(&["--data-dir", data_dir, "--shutdown-grace", "0"], &env).await?;
    let client = reqwest::Client::new();
    let login = json!({ "username": "admin", "password": PASSWORD });
    let (status, body) = send(client.post(server.url("/api/v1/auth/login")).json(&login)).await?;
    anyhow::ensure!(status == 200, "login answered {status}: {body}");
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();

    let answered = futures::future::try_join_all((0..200).map(|i| {
        let request = client.post(server.url("/api/v1/agents/pairing-codes")).bearer_auth(&token);
        async move {
            let response = request.json(&json!({ "name": format!("vm-{i}") })).send().await?;
            anyhow::ensure!(response.status() == 201, "pairing code {i} answered {}", response.status());
            Ok::<_, anyhow::Error>(response.headers()["x-request-id"].to_str()?.to_owned())
        }
    }))
    .await?;
    let code = server.terminate().await.context("SIGTERM right after 200 answered requests")?;
    assert_eq!(code, Some(0), "a clean exit");

    let server = ServerProcess::start(&["--data-dir", data_dir], &env).await?;
    let (_, body) = send(client.post(server.url("/api/v1/auth/login")).json(&login)).await?;
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
    let path = "/api/v1/audit?action=create_pairing_code&limit=500";
    let (status, page) = send(client.get(server.url(path)).bearer_auth(&token)).await?;
    anyhow::ensure!(status == 200, "audit answered {status}: {page}");
    let logged: std::collections::HashSet<&str> =
        page["items"].as_array().into_iter().flatten().filter_map(|e| e["request_id"].as_str()).collect();
    assert_eq!(logged.len(), 200, "one entry per answered request");
    assert!(answered.iter().all(|id| logged.contains(id.as_str())), "every answered request is in the log");
    server.terminate().await?;
    Ok(())
}
