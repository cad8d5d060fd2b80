//! The agent and its bots through faults: the agent killed with SIGKILL and started again
//! (same bots, same pids, nothing twice, output not lost), the server stopped for a while
//! (bots run and are supervised; logs and transitions arrive when it is back), revocation
//! (bots stopped, exit code 3 with the reason), token rotation.

use botmox_e2e::{
    agent::{agent_cli, bot_leaders, is_running, AgentProcess, TcpRelay},
    server::ServerProcess,
};

use super::*;

/// `tick N` numbers in `lines`, in order.
fn ticks(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| l.strip_prefix("tick ")?.parse().ok()).collect()
}

fn assert_contiguous(ticks: &[u64], what: &str) {
    assert!(!ticks.is_empty(), "{what}: no ticks");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{what}: lines were lost or repeated: {ticks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_readopts_the_same_bots_when_it_returns() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let python = script(
        bots.path(),
        "chatty.py",
        "import time\ni = 0\nwhile True:\n    i += 1\n    print(f'tick {i}', flush=True)\n    time.sleep(0.2)\n",
    )?;
    let sh_bot = create_bot(&app, &bot_spec("sh-bot", host.agent_id, &chatty, &[])).await?;
    let mut spec = bot_spec("py-bot", host.agent_id, std::path::Path::new("python3"), &[]);
    spec["exec"]["args"] = json!([python]);
    let py_bot = create_bot(&app, &spec).await?;
    let mut pids = Vec::new();
    for bot in [sh_bot, py_bot] {
        control(&app, bot, "start").await?;
        pids.push(wait_running(&app, bot).await?);
        wait_log(&app, bot, "tick 2").await?;
    }

    agent.kill().await?;
    // The server notices (three missed heartbeats); the bots write all the while.
    wait_until(&app, &format!("/api/v1/agents/{}", host.agent_id), "the agent offline", |a| a["status"] == "offline")
        .await?;
    for (bot, pid) in [sh_bot, py_bot].into_iter().zip(&pids) {
        assert!(is_running(*pid), "bot {bot} died with its agent");
        wait_bot(&app, bot, "unknown while its agent is away", |b| b["state"] == "unknown").await?;
    }

    let agent = host.run(&[]).await?;
    for (bot, pid) in [sh_bot, py_bot].into_iter().zip(&pids) {
        let back = wait_bot(&app, bot, "running again", |b| b["state"] == "running").await?;
        assert_eq!(back["pid"].as_u64(), Some(u64::from(*pid)), "the same process: {back}");
        assert_eq!(bot_leaders(&bot.to_string()), [*pid], "no duplicate of bot {bot}");
        let lines = wait_log(&app, bot, "re-adopted").await?;
        let before = ticks(&lines).last().copied().unwrap_or_default();
        let lines = wait_log(&app, bot, &format!("tick {}", before + 3)).await?;
        // What the bot wrote while no agent read waited in its output pipe and arrives now.
        // (Lines the killed agent had read but not yet sent died with it: a line or two.)
        let ticks = ticks(&lines);
        let holes: Vec<&[u64]> = ticks.windows(2).filter(|w| w[1] != w[0] + 1).collect();
        assert!(holes.len() <= 1 && holes.iter().all(|w| w[1] > w[0] && w[1] - w[0] <= 3), "bot {bot}: {ticks:?}");
    }
    for bot in [sh_bot, py_bot] {
        let stop = control(&app, bot, "stop").await?;
        wait_command(&app, stop, "succeeded").await?;
    }
    for pid in pids {
        wait_local("the re-adopted bot to stop", || !is_running(pid)).await?;
    }
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

/// The agent is killed while it waits out a stubborn bot's stop: the intent (`stopping`, with
/// the pid) was persisted before the signal, so the next agent finds the process, finishes the
/// stop, and answers the interrupted command instead of leaving it `running` until it times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_stop_finishes_it_when_it_returns() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let stubborn =
        script(bots.path(), "stubborn.sh", "#!/bin/sh\ntrap '' TERM\nwhile :; do echo alive; sleep 1; done\n")?;
    let mut spec = bot_spec("stubborn-stop", host.agent_id, &stubborn, &[]);
    spec["stop"]["timeout_seconds"] = json!(4);
    let bot = create_bot(&app, &spec).await?;
    control(&app, bot, "start").await?;
    let pid = wait_running(&app, bot).await?;

    let stop = control(&app, bot, "stop").await?;
    wait_bot(&app, bot, "stopping", |b| b["state"] == "stopping").await?;
    agent.kill().await?;
    assert!(is_running(pid), "SIGTERM is ignored: the bot outlives its killed agent");

    let agent = host.run(&[]).await?;
    let stopped = wait_bot(&app, bot, "stopped after the agent returned", |b| b["state"] == "stopped").await?;
    assert_eq!(stopped["desired_state"], "stopped");
    wait_local("the bot's process to be gone", || !is_running(pid)).await?;
    assert!(bot_leaders(&bot.to_string()).is_empty(), "no process left for the bot");
    // The interrupted command is answered by the returning agent, not left to time out.
    let answered = wait_command(&app, stop, "failed").await?;
    assert!(answered["error"].as_str().is_some_and(|e| e.contains("interrupted")), "{answered}");
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

/// The store cannot take the bot's state reports for a while (an injected fault): the server
/// says `unavailable` instead of a generic error and closes; the agent keeps every frame it
/// was not sure of, reconnects with backoff, and once the store is back the server shows the
/// truth — nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_store_refused_are_sent_again_until_applied() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let bot = create_bot(&app, &bot_spec("refused-news", host.agent_id, &chatty, &[])).await?;
    app.db()
        .execute(&["CREATE TRIGGER inject_fault BEFORE UPDATE OF state ON bots \
                    BEGIN SELECT RAISE(ABORT, 'injected fault'); END"])
        .await?;

    let start = control(&app, bot, "start").await?;
    // The agent runs the bot, but the server cannot record its state: the agent is told so.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, status, _) = agent_cli(host.path(), &["status"]).await?;
        if status.contains("database is unavailable") {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the agent never heard of the refusal: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leaders = bot_leaders(&bot.to_string());
    assert_eq!(leaders.len(), 1, "the bot runs on its host meanwhile");
    assert_ne!(get(&app, &format!("/api/v1/bots/{bot}")).await?["state"], "running", "not recorded yet");

    app.db().execute(&["DROP TRIGGER inject_fault"]).await?;
    let running = wait_bot(&app, bot, "running once the store is back", |b| b["state"] == "running").await?;
    assert_eq!(running["pid"].as_u64(), Some(u64::from(leaders[0])), "{running}");
    wait_command(&app, start, "succeeded").await?;
    wait_log(&app, bot, "tick 3").await?;
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_run_through_a_server_outage_and_their_news_arrives_after() -> anyhow::Result<()> {
    const PASSWORD: &str = "outage-admin-password";
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_str().unwrap_or_default().to_owned();
    let args = ["--data-dir", data_dir.as_str(), "--heartbeat-interval", "1"];
    let env = [("BOTMOX_ADMIN_PASSWORD", PASSWORD)];
    let server = ServerProcess::start(&args, &env).await?;
    // A fixed address in front of the server: the restarted server gets another port.
    let relay = TcpRelay::start(Some(server.base_url.trim_start_matches("http://").to_owned())).await?;
    let api = Api::login(&relay.url(), PASSWORD).await?;

    let dir = tempfile::tempdir()?;
    let (status, code) = api.send(reqwest::Method::POST, "/api/v1/agents/pairing-codes", Some(json!({}))).await?;
    anyhow::ensure!(status == 201, "{code}");
    botmox_e2e::agent::pair(dir.path(), &relay.url(), code["code"].as_str().unwrap_or_default()).await?;
    let credentials: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("agent.json"))?)?;
    let agent_id: Uuid = credentials["agent_id"].as_str().unwrap_or_default().parse()?;
    let host = Host { dir, agent_id };
    let agent = AgentProcess::start(host.path(), &[]).await?;

    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let mut ids = Vec::new();
    for name in ["steady", "victim"] {
        let (status, bot) =
            api.send(reqwest::Method::POST, "/api/v1/bots", Some(bot_spec(name, agent_id, &chatty, &[]))).await?;
        anyhow::ensure!(status == 201, "{bot}");
        let id: Uuid = bot["id"].as_str().unwrap_or_default().parse()?;
        api.send(reqwest::Method::POST, &format!("/api/v1/bots/{id}/start"), Some(json!({}))).await?;
        ids.push(id);
    }
    let (steady, victim) = (ids[0], ids[1]);
    let mut pids = Vec::new();
    for id in &ids {
        let bot = api.wait_bot(*id, |b| b["state"] == "running" && b["pid"].is_u64()).await?;
        pids.push(bot["pid"].as_u64().unwrap_or_default() as u32);
    }
    let last_tick_before = ticks(&api.logs(steady).await?).last().copied().unwrap_or_default();

    // The server goes away.
    relay.set_upstream(None);
    assert_eq!(server.terminate().await?, Some(0));
    agent.stderr.wait_for("disconnected from the server", WAIT).await?;
    // While it is away, a bot is killed: the agent restarts it on its own.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[1] as i32), nix::sys::signal::Signal::SIGKILL)?;
    wait_local("the agent to restart the killed bot", || {
        bot_leaders(&victim.to_string()).first().is_some_and(|p| *p != pids[1])
    })
    .await?;
    assert!(is_running(pids[0]), "the other bot keeps running");

    // The server comes back on the same data; the agent reconnects and catches it up.
    let server = ServerProcess::start(&args, &env).await?;
    relay.set_upstream(Some(server.base_url.trim_start_matches("http://").to_owned()));
    let api = Api::login(&relay.url(), PASSWORD).await?;
    let restarted = api.wait_bot(victim, |b| b["state"] == "running" && b["restart_count"] == 1).await?;
    assert_eq!(restarted["last_exit_signal"], 9, "the crash was reported: {restarted}");
    assert_ne!(restarted["pid"].as_u64(), Some(u64::from(pids[1])), "{restarted}");
    let steady_now = api.wait_bot(steady, |b| b["state"] == "running").await?;
    assert_eq!(steady_now["pid"].as_u64(), Some(u64::from(pids[0])), "never restarted: {steady_now}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let lines = loop {
        let lines = api.logs(steady).await?;
        if ticks(&lines).last().is_some_and(|t| *t > last_tick_before + 10) {
            break lines;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the outage's log lines did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_contiguous(&ticks(&lines), "the steady bot's log across the outage");
    let agent_row = api.get(&format!("/api/v1/agents/{agent_id}")).await?;
    assert_eq!(agent_row["status"], "online", "{agent_row}");

    for id in ids {
        api.send(reqwest::Method::POST, &format!("/api/v1/bots/{id}/stop"), Some(json!({}))).await?;
        api.wait_bot(id, |b| b["state"] == "stopped").await?;
    }
    assert_eq!(agent.terminate().await?, Some(0));
    server.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_stops_its_bots_and_exits_3_saying_why() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let mut agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let bot_id = create_bot(&app, &bot_spec("doomed", host.agent_id, &chatty, &[])).await?;
    control(&app, bot_id, "start").await?;
    let pid = wait_running(&app, bot_id).await?;

    let (status, body) = send(app.post(&format!("/api/v1/agents/{}/revoke", host.agent_id), &json!({}))).await?;
    anyhow::ensure!(status == 200, "revoke answered {status}: {body}");
    assert_eq!(agent.exit_code(WAIT).await?, Some(3), "exit code 3: revoked");
    let said = agent.stderr.snapshot().join("\n");
    assert!(said.contains("revoked"), "it says why: {said}");
    assert!(!is_running(pid), "a revoked agent leaves no bot running");

    // Started again, it is refused at once and says so.
    let mut again = AgentProcess::spawn(host.path(), &[])?;
    assert_eq!(again.exit_code(WAIT).await?, Some(3));
    let said = again.stderr.snapshot().join("\n");
    assert!(said.contains("refused the agent token"), "{said}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_rotates_on_demand_and_the_agent_keeps_working() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let read_token = || -> anyhow::Result<String> {
        let credentials: Value = serde_json::from_str(&std::fs::read_to_string(host.path().join("agent.json"))?)?;
        Ok(credentials["agent_token"].as_str().unwrap_or_default().to_owned())
    };
    let old = read_token()?;
    let agent = host.run(&["--rotate-token"]).await?;
    agent.stderr.wait_for("agent token rotated", WAIT).await?;
    let new = read_token()?;
    assert_ne!(new, old, "a new token is stored");
    // The agent reconnects with the new token and works.
    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let bot_id = create_bot(&app, &bot_spec("rotated", host.agent_id, &chatty, &[])).await?;
    control(&app, bot_id, "start").await?;
    wait_running(&app, bot_id).await?;
    let (status, _) = send(app.request_as(reqwest::Method::GET, "/api/v1/agent/self", Some(&new))).await?;
    assert_eq!(status, 200, "the new token works");
    let (status, _) = send(app.request_as(reqwest::Method::GET, "/api/v1/agent/self", Some(&old))).await?;
    assert_eq!(status, 401, "the old token stopped working once the new one was used");
    let stop = control(&app, bot_id, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

/// A logged-in API client of a server reached through `base` (the real binary, restarted).
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn login(base: &str, password: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let login = json!({ "username": "admin", "password": password });
            match send(client.post(format!("{base}/api/v1/auth/login")).json(&login)).await {
                Ok((200, body)) => {
                    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
                    return Ok(Self { base: base.to_owned(), token, client });
                }
                other => anyhow::ensure!(tokio::time::Instant::now() < deadline, "login failed: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
        Ok(body)
    }

    async fn wait_bot(&self, id: Uuid, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let bot = self.get(&format!("/api/v1/bots/{id}")).await?;
            if done(&bot) {
                return Ok(bot);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} on bot {id}: {bot}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn logs(&self, id: Uuid) -> anyhow::Result<Vec<String>> {
        let body = self.get(&format!("/api/v1/bots/{id}/logs?limit=5000")).await?;
        Ok(body.as_array().into_iter().flatten().filter_map(|l| l["text"].as_str().map(str::to_owned)).collect())
    }
}
