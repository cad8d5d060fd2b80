//! A small fleet in one process: 200 simulated agents (WebSocket and long-poll, answering by
//! themselves) on one server; one bulk start reaches every one of them exactly once and every
//! bot is seen running.

use std::{collections::HashMap, time::Duration};

use botmox_contract::commands::CommandStatus;
use botmox_control_plane::{auth::credentials, store::NewAgent};
use botmox_e2e::{
    app::send,
    both_backends,
    db::Backend,
    sim::{connect_fleet, AutoMode, SimConfig, Transport},
};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::*;

both_backends!(a_bulk_start_reaches_a_whole_fleet_once);

const AGENTS: usize = 200;
const LONG_POLLING: usize = 50;

async fn a_bulk_start_reaches_a_whole_fleet_once(backend: Backend) -> anyhow::Result<()> {
    // Default timings: a 1 s lease would send commands round again on a busy 2-core machine.
    let app = botmox_e2e::app::TestApp::spawn(backend).await?;
    let (observer, mut observed) = mpsc::unbounded_channel();
    let mut configs = Vec::with_capacity(AGENTS);
    let mut bots = Vec::with_capacity(AGENTS);
    let client = reqwest::Client::new();
    for i in 0..AGENTS {
        // Registered straight in the store: pairing 200 hosts would trip its rate limit.
        let token = credentials::new_agent_token();
        let new = NewAgent {
            tenant_id: app.tenant_id,
            name: format!("fleet-{i:03}"),
            hostname: format!("fleet-{i:03}.test"),
            os: "linux".into(),
            arch: "x86_64".into(),
            version: "sim".into(),
            labels: Default::default(),
            token_hash: Some(credentials::hash(&token)),
        };
        let agent = app.store.create_agent(new, app.clock.now()).await?;
        bots.push(create_bot(&app, &format!("fleet-bot-{i:03}"), agent.id).await?);
        let transport =
            if i < LONG_POLLING { Transport::LongPoll { wait: Duration::from_secs(10) } } else { Transport::WebSocket };
        let mut config = SimConfig::new(app.base_url.clone(), token)
            .transport(transport)
            .auto(AutoMode::Run)
            .heartbeat(Duration::from_secs(2))
            .observed(i, observer.clone());
        config.client = Some(client.clone());
        configs.push(config);
    }
    drop(observer);
    let fleet = connect_fleet(configs, 32).await?;
    let mut events = events(&app).await?;

    let (status, accepted) = send(app.post("/api/v1/bots/actions", &json!({ "action": "start", "ids": bots }))).await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(
        (accepted["accepted"].as_u64(), accepted["skipped"].as_array().map(Vec::len)),
        (Some(AGENTS as u64), Some(0))
    );
    let batch: Uuid = accepted["batch_id"].as_str().unwrap_or_default().parse()?;
    let commands: Vec<Uuid> =
        batch_commands(&app, batch).await?.iter().filter_map(|c| c["id"].as_str()?.parse().ok()).collect();
    assert_eq!(commands.len(), AGENTS, "every command of the batch is listed");
    if let Err(e) = wait_commands_status(&mut events, &commands, CommandStatus::Succeeded).await {
        let mut unfinished = Vec::new();
        for id in &commands {
            let command = command(&app, *id).await?;
            if command["status"] != "succeeded" {
                unfinished.push(command);
            }
        }
        anyhow::bail!("{e:#}; commands not succeeded per the API: {unfinished:?}");
    }

    // Each agent got exactly its one command.
    let mut per_agent: HashMap<usize, Vec<Uuid>> = HashMap::new();
    while let Ok(seen) = observed.try_recv() {
        per_agent.entry(seen.label).or_default().push(seen.command_id);
    }
    assert_eq!(per_agent.len(), AGENTS, "every agent got a command");
    assert!(per_agent.values().all(|ids| ids.len() == 1), "and only one: {per_agent:?}");
    let running = get(&app, "/api/v1/bots?state=running&limit=1").await?;
    assert_eq!(running["total"], AGENTS, "{running}");
    // Open event streams and polls would hold the graceful shutdown.
    drop((events, fleet));
    app.stop().await
}
