//! One scenario over one stack (starting it is the expensive part): everything a user does goes
//! through Caddy over HTTPS; the test reaches a replica directly only to choose which replica
//! enqueues a command. Figures (reconnect time after a replica kill, requests made and failed
//! during the rolling restart) are printed for the record.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use botmox_contract::{
    agents::AgentStatus,
    bots::BotState,
    events::{Event, EventPayload},
};
use botmox_e2e::{
    agent::{agent_cli, script, AgentProcess, PairedHost},
    app::send,
    sse::SseStream,
};
use reqwest::{header, Method};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Api, Stack, POLL, WAIT};

/// SPEC: a replica's agents are back, through Caddy, on another replica within this.
const RECONNECT_WITHIN: Duration = Duration::from_secs(10);

/// A bot that records each start in `$STARTS` (so a second run of one command shows) and
/// runs until stopped.
const BOT: &str = "#!/bin/sh\necho \"start $$\" >> \"$STARTS\"\necho \"started $$\"\nwhile :; do sleep 0.2; done\n";

/// Pairs a host through Caddy, trusting Caddy's CA with `--ca-file`.
async fn pair_host(stack: &Stack, name: &str) -> anyhow::Result<PairedHost> {
    let code = stack.api.post("/api/v1/agents/pairing-codes", json!({ "name": name }), 201).await?;
    let dir = tempfile::tempdir()?;
    let ca = stack.caddy.root_cert();
    let ca = ca.to_str().unwrap_or_default();
    let server = stack.caddy.url("");
    let code = code["code"].as_str().unwrap_or_default();
    let (status, stdout, stderr) =
        agent_cli(dir.path(), &["pair", "--server", &server, "--code", code, "--ca-file", ca]).await?;
    anyhow::ensure!(status == Some(0), "pairing through Caddy failed ({status:?}): {stdout} {stderr}");
    PairedHost::from_dir(dir)
}

/// `botmox-agent run --transport ws`: only a WebSocket through Caddy will do.
async fn run(host: &PairedHost) -> anyhow::Result<AgentProcess> {
    AgentProcess::start(host.dir.path(), &["--transport", "ws"]).await
}

/// A bot on `agent_id` that counts its starts in `starts`, stopped until started.
async fn create_bot(stack: &Stack, name: &str, agent_id: Uuid, program: &Path, starts: &Path) -> anyhow::Result<Uuid> {
    let spec = json!({
        "name": name,
        "agent_id": agent_id,
        "exec": { "program": program, "env": { "STARTS": starts } },
        "restart": { "policy": "never" },
        "stop": { "timeout_seconds": 2 },
        "desired_state": "stopped",
    });
    let bot = stack.api.post("/api/v1/bots", spec, 201).await?;
    Ok(bot["id"].as_str().unwrap_or_default().parse()?)
}

fn starts(file: &Path) -> usize {
    std::fs::read_to_string(file).map(|text| text.lines().count()).unwrap_or(0)
}

async fn wait_bot_state(events: &mut SseStream, bot_id: Uuid, state: BotState) -> anyhow::Result<()> {
    events
        .wait_for_json::<Event>(
            |e| matches!(&e.payload, EventPayload::BotState(bot) if bot.id == bot_id && bot.state == state),
            WAIT,
        )
        .await?;
    Ok(())
}

async fn wait_command_succeeded(api: &Api, id: &str) -> anyhow::Result<Value> {
    let path = format!("/api/v1/commands/{id}");
    api.wait_until(&path, "the command to succeed", |c| c["status"] == "succeeded").await
}

/// `POST /bots/{id}/start` through Caddy right after a replica died, as a careful client sends
/// it: with an `Idempotency-Key`, and again with the same key after a 502. Until its next
/// health check (within a second) Caddy still picks the dead replica now and then; it retries
/// a refused connection on the other, but Debian's Caddy 2.6 cannot replay a request body it
/// already handed to the failed attempt, and answers 502. With the key a retry cannot make a
/// second command. Returns the accepted command and the number of retries.
async fn start_retrying(api: &Api, bot_id: Uuid) -> anyhow::Result<(Value, u32)> {
    let key = Uuid::now_v7().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut retries = 0;
    loop {
        let start = api
            .request(Method::POST, &format!("/api/v1/bots/{bot_id}/start"))
            .header("idempotency-key", &key)
            .json(&json!({}));
        let (status, answer) = send(start).await?;
        if status == 202 {
            return Ok((answer, retries));
        }
        anyhow::ensure!(status == 502 && tokio::time::Instant::now() < deadline, "start answered {status}: {answer}");
        retries += 1;
        // Pacing the retries, not waiting for anything in particular.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replica holding the agent's connection, once it has one.
async fn wait_holder(stack: &Stack, agent_id: Uuid) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(holder) = stack.holder(&agent_id.to_string()).await? {
            return Ok(holder);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "agent {agent_id} has no replica after {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's caddy: `cargo xtask test` installs it and runs this test"]
async fn the_stack_works_through_caddy_and_survives_replica_faults() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let outcome = scenario(&mut stack).await;
    if outcome.is_err() {
        let log = stack.caddy.stderr.snapshot();
        let problems: Vec<&String> = log.iter().filter(|l| !l.contains("\"level\":\"info\"")).collect();
        for line in &problems[problems.len().saturating_sub(30)..] {
            eprintln!("caddy: {line}");
        }
    }
    outcome?;
    stack.stop().await
}

async fn scenario(stack: &mut Stack) -> anyhow::Result<()> {
    proxy_paths(stack).await?;
    let mut events = SseStream::open(stack.api.request(Method::GET, "/api/v1/events")).await?;

    // Two hosts pair and connect through Caddy over HTTPS (WebSocket only).
    let hosts = [pair_host(stack, "host-1").await?, pair_host(stack, "host-2").await?];
    let mut agents = vec![run(&hosts[0]).await?, run(&hosts[1]).await?];
    for host in &hosts {
        let id = host.agent_id;
        events
            .wait_for_json::<Event>(
                |e| matches!(&e.payload, EventPayload::AgentPresence { agent_id, status: AgentStatus::Online, .. } if *agent_id == id),
                WAIT,
            )
            .await?;
    }

    // A command enqueued on either replica reaches an agent held by the other; the state it
    // reports shows on the event stream read through Caddy.
    let files = tempfile::tempdir()?;
    let program = script(files.path(), "bot.sh", BOT)?;
    let count_file = |name: &str| -> PathBuf { files.path().join(format!("{name}.starts")) };
    let mut workers = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let name = format!("worker-{i}");
        let bot_id = create_bot(stack, &name, host.agent_id, &program, &count_file(&name)).await?;
        let holder = wait_holder(stack, host.agent_id).await?;
        let other = 1 - holder;
        let (status, accepted) =
            send(stack.direct(other, Method::POST, &format!("/api/v1/bots/{bot_id}/start"))?.json(&json!({}))).await?;
        anyhow::ensure!(status == 202, "start on {} answered {status}: {accepted}", stack.replicas[other].name);
        wait_bot_state(&mut events, bot_id, BotState::Running).await?;
        println!("{name}: enqueued on {}, delivered by {}", stack.replicas[other].name, stack.replicas[holder].name);
        workers.push(bot_id);
    }

    // kill -9 the replica holding host-1's agent; a command sent during the outage, through
    // Caddy, is delivered once the agent is back (on the other replica) — and only once.
    let victim = wait_holder(stack, hosts[0].agent_id).await?;
    let survivor = 1 - victim;
    let outage_bot = create_bot(stack, "outage", hosts[0].agent_id, &program, &count_file("outage")).await?;
    let connections = agents[0].stderr.count("connected (");
    let killed = Instant::now();
    stack.replicas[victim].process.take().map(|p| p.kill()).ok_or_else(|| anyhow::anyhow!("no victim"))?.await?;
    let (accepted, retries) = start_retrying(&stack.api, outage_bot).await?;
    agents[0].stderr.wait_for_nth("connected (", connections + 1, RECONNECT_WITHIN).await?;
    let reconnect = killed.elapsed();
    println!(
        "kill -9 {}: host-1's agent reconnected through Caddy in {reconnect:?}; the start sent meanwhile \
         was retried {retries} time(s)",
        stack.replicas[victim].name
    );
    let command = wait_command_succeeded(&stack.api, accepted["command"]["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(command["attempt"], 1, "delivered once: {command}");
    let path = format!("/api/v1/agents/{}", hosts[0].agent_id);
    let survivor_name = format!("{}-", stack.replicas[survivor].name);
    stack
        .api
        .wait_until(&path, "the agent held by the survivor", |a| {
            a["connected_replica"].as_str().is_some_and(|r| r.starts_with(&survivor_name))
        })
        .await?;
    // The survivor leads the supervisor (it took over if the victim led).
    stack.replica(survivor)?.stderr.wait_for("running the supervisor", WAIT).await?;
    stack.start_replica(victim).await?;

    // Rolling restart, the leader first so the supervisor fails over to the other: a client
    // polling through Caddy and a stream of commands see nothing of it.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll(stack.api.clone(), stop.clone()));
    let commander = tokio::spawn(command_stream(stack.api.clone(), workers[1], stop.clone()));
    for i in [survivor, victim] {
        let process = stack.replicas[i].process.take().ok_or_else(|| anyhow::anyhow!("replica {i} is down"))?;
        assert_eq!(process.terminate().await?, Some(0), "{} exits cleanly on SIGTERM", stack.replicas[i].name);
        // The other replica's process was started after the last leader change: it leads now
        // only if it took over.
        let other = stack.replica(1 - i)?;
        other.stderr.wait_for("running the supervisor", WAIT).await?;
        println!("SIGTERM {}: the supervisor failed over to {}", stack.replicas[i].name, stack.replicas[1 - i].name);
        stack.start_replica(i).await?;
    }
    // Both agents are served after the restarts: a command reaches each.
    let accepted = stack.api.post(&format!("/api/v1/bots/{}/restart", workers[0]), json!({}), 202).await?;
    wait_command_succeeded(&stack.api, accepted["command"]["id"].as_str().unwrap_or_default()).await?;
    stop.store(true, Ordering::SeqCst);
    let polled = poller.await??;
    let commands = commander.await??;
    println!(
        "rolling restart: {} API requests through Caddy, {} failed; {} commands, {} lost",
        polled.made, polled.failed, commands.sent, commands.lost
    );
    assert_eq!(polled.failed, 0, "failed requests during the rolling restart: {:?}", polled.errors);
    assert_eq!(commands.lost, 0, "lost commands: {:?}", commands.errors);
    assert!(commands.sent >= 1, "no command ran during the rolling restart");

    // Every command ran exactly once: one start per command, no more.
    assert_eq!(starts(&count_file("outage")), 1, "the outage's start ran once");
    assert_eq!(starts(&count_file("worker-0")), 2, "a start and a restart");
    assert_eq!(starts(&count_file("worker-1")), 1 + commands.sent as usize, "one start per restart");

    for agent in agents.drain(..) {
        agent.terminate().await?;
    }
    Ok(())
}

/// What a client saw.
#[derive(Debug, Default)]
struct Tally {
    made: u64,
    failed: u64,
    errors: Vec<String>,
}

impl Tally {
    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.errors.len() < 20 {
            self.errors.push(error);
        }
    }
}

/// A client polling `GET /bots` through Caddy until `stop`; every answer but a 200 is a failure.
async fn poll(api: Api, stop: Arc<AtomicBool>) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    while !stop.load(Ordering::SeqCst) {
        tally.made += 1;
        match api.request(Method::GET, "/api/v1/bots?limit=5").send().await {
            Ok(response) if response.status() == 200 => {
                if let Err(e) = response.bytes().await {
                    tally.fail(format!("body: {e}"));
                }
            }
            Ok(response) => tally.fail(format!("status {}", response.status())),
            Err(e) => tally.fail(format!("{e:?}")),
        }
        // Pacing, not synchronisation: a steady client, not a flood on two shared cores.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tally)
}

/// What the stream of commands came to.
#[derive(Debug, Default)]
struct Commands {
    sent: u64,
    lost: u64,
    errors: Vec<String>,
}

/// Restarts `bot_id` through Caddy, one command at a time, each followed to its end, until
/// `stop`: a command is lost unless it succeeds.
async fn command_stream(api: Api, bot_id: Uuid, stop: Arc<AtomicBool>) -> anyhow::Result<Commands> {
    let mut commands = Commands::default();
    while !stop.load(Ordering::SeqCst) {
        let restart = api
            .request(Method::POST, &format!("/api/v1/bots/{bot_id}/restart"))
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&json!({}));
        let (status, accepted) = match send(restart).await {
            Ok(answer) => answer,
            Err(e) => {
                commands.lost += 1;
                commands.errors.push(format!("restart: {e:#}"));
                continue;
            }
        };
        if status != 202 {
            commands.lost += 1;
            commands.errors.push(format!("restart answered {status}: {accepted}"));
            continue;
        }
        let id = accepted["command"]["id"].as_str().unwrap_or_default().to_owned();
        match wait_command_succeeded(&api, &id).await {
            Ok(_) => commands.sent += 1,
            Err(e) => {
                commands.lost += 1;
                commands.errors.push(format!("{id}: {e:#}"));
            }
        }
    }
    Ok(commands)
}

/// Panel, assets, API and event stream through Caddy: answered, with Caddy's security headers,
/// compressed where it helps and never for the event stream.
async fn proxy_paths(stack: &Stack) -> anyhow::Result<()> {
    let client = &stack.api.client;
    let page = client.get(stack.caddy.url("/")).header(header::ACCEPT_ENCODING, "gzip").send().await?;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(headers.get(header::STRICT_TRANSPORT_SECURITY).is_some(), "HSTS from Caddy: {headers:?}");
    assert!(headers.get(header::SERVER).is_none(), "no Server header: {headers:?}");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.starts_with("text/html")),
        Some(true)
    );
    let index = client.get(stack.caddy.url("/")).send().await?.text().await?;
    let asset =
        index.split('"').find(|part| part.starts_with("/assets/") && part.ends_with(".js")).ok_or_else(|| {
            anyhow::anyhow!(
                "no script in the panel's index.html (is the panel built? `cargo xtask test` builds it): {index}"
            )
        })?;
    let script = client.get(stack.caddy.url(asset)).header(header::ACCEPT_ENCODING, "gzip").send().await?;
    assert_eq!(script.status(), 200, "{asset}");
    assert!(script.headers().get(header::CONTENT_ENCODING).is_some(), "{asset} compressed: {:?}", script.headers());

    let openapi =
        stack.api.request(Method::GET, "/api/v1/openapi.json").header(header::ACCEPT_ENCODING, "gzip").send().await?;
    assert_eq!(openapi.status(), 200);
    assert_eq!(
        openapi.headers().get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "JSON compressed"
    );

    let stream =
        stack.api.request(Method::GET, "/api/v1/events").header(header::ACCEPT_ENCODING, "gzip, zstd").send().await?;
    assert_eq!(stream.status(), 200);
    let content_type = stream.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    assert!(stream.headers().get(header::CONTENT_ENCODING).is_none(), "an event stream is never compressed");
    drop(stream);

    // The client address is the one Caddy saw, not what the client wrote into the header.
    let forged = stack
        .api
        .request(Method::POST, "/api/v1/agents/pairing-codes")
        .header("x-forwarded-for", "203.0.113.50")
        .json(&json!({ "name": "forged" }))
        .send()
        .await?;
    assert_eq!(forged.status(), 201);
    let request_id = forged.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    // The entry is written just after the response, by the replica that answered; another
    // replica sees it once it is committed (milliseconds later).
    let has_entry = |audit: &Value| {
        audit["items"].as_array().is_some_and(|items| items.iter().any(|e| e["request_id"] == request_id.as_str()))
    };
    let audit = stack.api.wait_until("/api/v1/audit?limit=20", "the request's audit entry", has_entry).await?;
    let entries = audit["items"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|e| e["request_id"] == request_id.as_str())
        .ok_or_else(|| anyhow::anyhow!("no audit entry for request {request_id}: {audit}"))?;
    let ip = entry["source_ip"].as_str().unwrap_or_default();
    assert!(ip == "127.0.0.1" || ip == "::1", "the audited address is the real client's: {entry}");
    Ok(())
}
