//! The operator CLI (`botmox bots|agents|pair-code|incidents|commands`): the real `botmox`
//! binary against a real server (the app on a real socket) with a simulated agent that runs
//! what it is told. Checks the tables, the `--json` output (parsed as the contract's types),
//! the exit codes scripts rely on, and the refusal to ask for confirmation without a terminal.

use std::time::Duration;

use botmox_contract::{
    agents::{Agent, AgentDrain, PairingCode},
    bots::Bot,
    commands::{BulkAccepted, CommandAccepted, CommandList},
    incidents::IncidentList,
    logs::LogLine,
};
use botmox_e2e::{
    app::{send, TestApp},
    db::Backend,
    server::{botmox_bin, run_to_exit},
    sim::{log_line, AutoMode, SimAgent, SimConfig},
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// A server with one agent (`vm-cli`, simulated, running what it is told) and two bots.
struct Fleet {
    app: TestApp,
    token: String,
    agent: SimAgent,
    bots: [Uuid; 2],
}

impl Fleet {
    async fn start() -> anyhow::Result<Self> {
        let app = TestApp::spawn(Backend::Sqlite).await?;
        let (agent_id, agent_token) = app.pair_agent("vm-cli").await?;
        let agent = SimAgent::connect(
            SimConfig::new(app.base_url.clone(), agent_token).auto(AutoMode::Run).heartbeat(Duration::from_millis(500)),
        )
        .await?;
        let mut bots = [Uuid::nil(); 2];
        for (slot, name) in bots.iter_mut().zip(["farm-1", "farm-2"]) {
            let spec = json!({"name": name, "agent_id": agent_id, "exec": {"program": "python3"},
                              "desired_state": "stopped", "tags": ["eu"]});
            let (status, bot) = send(app.post("/api/v1/bots", &spec)).await?;
            anyhow::ensure!(status == 201, "{bot}");
            *slot = bot["id"].as_str().unwrap_or_default().parse()?;
        }
        let token = app.api_token(&["admin"]).await?;
        Ok(Self { app, token, agent, bots })
    }

    /// `botmox <args>` with this server and token: (exit code, stdout, stderr). No terminal.
    async fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        self.cli_with(args, &self.token).await
    }

    async fn cli_with(&self, args: &[&str], token: &str) -> anyhow::Result<(i32, String, String)> {
        let (code, stdout, stderr) =
            run_to_exit(args, &[("BOTMOX_URL", self.app.base_url.as_str()), ("BOTMOX_TOKEN", token)]).await?;
        Ok((code.unwrap_or(-1), stdout, stderr))
    }

    /// Runs and expects exit code 0; returns stdout.
    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let (code, stdout, stderr) = self.cli(args).await?;
        anyhow::ensure!(code == 0, "{args:?} exited {code}: {stderr}");
        Ok(stdout)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> anyhow::Result<T> {
        let stdout = self.ok(args).await?;
        serde_json::from_str(&stdout).map_err(|e| anyhow::anyhow!("{args:?}: not the API's JSON ({e}): {stdout}"))
    }

    /// Waits (bounded) until every bot has this state.
    async fn wait_bots(&self, state: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let bots: Vec<Bot> = self.json(&["bots", "ls", "--json"]).await?;
            if bots.iter().all(|b| b.state.as_str() == state) {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "bots not {state}: {bots:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        drop(self.agent);
        self.app.stop().await
    }
}

/// One line on stderr, `error: …`.
fn one_error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_ls_start_stop_with_tables_json_and_exit_codes() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let table = fleet.ok(&["bots", "ls"]).await?;
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "STATE", "DESIRED", "AGENT", "TAGS"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(table.lines().any(|l| l.contains("farm-1") && l.contains("vm-cli") && l.contains("stopped")), "{table}");
    let bots: Vec<Bot> = fleet.json(&["bots", "ls", "--json"]).await?;
    assert_eq!(bots.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["farm-1", "farm-2"]);
    let none: Vec<Bot> = fleet.json(&["bots", "ls", "--state", "running", "--json"]).await?;
    assert!(none.is_empty());
    let one: Vec<Bot> =
        fleet.json(&["bots", "ls", "--name", "FARM-2", "--agent", "vm-cli", "--tag", "eu", "--json"]).await?;
    assert_eq!(one.len(), 1);

    // By name: one command each.
    let started: Vec<CommandAccepted> = fleet.json(&["bots", "start", "farm-1", "--json"]).await?;
    assert_eq!(started[0].command.bot_id, Some(fleet.bots[0]));
    let said = fleet.ok(&["bots", "restart", &fleet.bots[0].to_string()]).await?;
    assert!(said.contains("restart queued"), "{said}");

    // A bulk action asks first; without a terminal it refuses unless --yes, and changes nothing.
    let (code, _, stderr) = fleet.cli(&["bots", "start", "--filter", "tag=eu"]).await?;
    assert_eq!(code, 2, "{stderr}");
    assert!(one_error_line(&stderr).contains("--yes"), "{stderr}");
    let dry: BulkAccepted = fleet.json(&["bots", "start", "--filter", "tag=eu", "--dry-run", "--json"]).await?;
    assert!(dry.dry_run && dry.matched == 2 && dry.accepted == 2, "{dry:?}");
    let done: BulkAccepted =
        fleet.json(&["bots", "start", "--filter", "agent=vm-cli", "--filter", "tag=eu", "--yes", "--json"]).await?;
    assert!(!done.dry_run && done.accepted == 2 && done.batch_id.is_some(), "{done:?}");
    fleet.wait_bots("running").await?;
    let said = fleet.ok(&["bots", "stop", "--all", "--yes"]).await?;
    assert!(said.contains("stop queued for 2 of 2"), "{said}");
    fleet.wait_bots("stopped").await?;

    // Exit codes: not found 3, usage 2, auth 5; each one line.
    let (code, _, stderr) = fleet.cli(&["bots", "start", "no-such-bot"]).await?;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("no bot named `no-such-bot`"), "{stderr}");
    let (code, _, stderr) = fleet.cli(&["bots", "start", &Uuid::now_v7().to_string()]).await?;
    assert_eq!(code, 3, "{stderr}");
    let (code, _, stderr) = fleet.cli(&["bots", "start", "--filter", "colour=red", "--yes"]).await?;
    assert_eq!(code, 2, "{stderr}");
    one_error_line(&stderr);
    let (code, _, stderr) = fleet.cli(&["bots", "start"]).await?;
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = fleet.cli_with(&["bots", "ls"], "bmx_not-a-real-token").await?;
    assert_eq!(code, 5, "{stderr}");
    assert!(one_error_line(&stderr).contains("unauthorized"), "{stderr}");
    let viewer = fleet.app.login_as(botmox_contract::auth::Role::Viewer).await?;
    let (code, _, stderr) = fleet.cli_with(&["bots", "start", "farm-1"], &viewer).await?;
    assert_eq!(code, 5, "a viewer may not start bots: {stderr}");
    let (code, _, stderr) = run_to_exit(&["bots", "ls"], &[("BOTMOX_TOKEN", "x")]).await?;
    assert_eq!(code, Some(2), "no URL: {stderr}");
    assert!(stderr.contains("BOTMOX_URL"), "{stderr}");
    fleet.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_drain_pair_code_incidents_commands_and_logs() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let table = fleet.ok(&["agents", "ls"]).await?;
    assert!(table.lines().any(|l| l.contains("vm-cli") && l.contains("online")), "{table}");
    let agents: Vec<Agent> = fleet.json(&["agents", "ls", "--json"]).await?;
    assert_eq!(agents[0].name, "vm-cli");

    // Drain: starts are refused with exit code 4 and the API's hint; undrain lifts it.
    fleet.ok(&["bots", "start", "farm-1"]).await?;
    let said = fleet.ok(&["agents", "drain", "vm-cli"]).await?;
    assert!(said.contains("draining") && said.contains("1 stop(s)"), "{said}");
    let (code, _, stderr) = fleet.cli(&["bots", "start", "farm-1"]).await?;
    assert_eq!(code, 4, "{stderr}");
    let line = one_error_line(&stderr);
    assert!(line.contains("agent_draining") && line.contains("vm-cli") && line.contains("hint: undrain"), "{line}");
    let skipped: BulkAccepted = fleet.json(&["bots", "start", "--all", "--dry-run", "--json"]).await?;
    assert_eq!((skipped.accepted, skipped.skipped[0].reason.as_str()), (0, "agent_draining"));
    let undrained: AgentDrain = fleet.json(&["agents", "undrain", &agents[0].id.to_string(), "--json"]).await?;
    assert_eq!(undrained.agent.status.as_str(), "online");
    assert_eq!(undrained.commands.len(), 1, "farm-1 should run: started again");
    let (code, _, stderr) = fleet.cli(&["agents", "drain", "vm-nowhere"]).await?;
    assert_eq!(code, 3, "{stderr}");

    let said = fleet.ok(&["pair-code", "--name", "vm-new", "--label", "region=eu"]).await?;
    assert!(said.contains("botmox-agent pair --server") && said.contains("--code"), "{said}");
    let code: PairingCode = fleet.json(&["pair-code", "--json"]).await?;
    assert!(code.command_line.contains(&code.code));

    let incidents: IncidentList = fleet.json(&["incidents", "ls", "--all", "--json"]).await?;
    assert!(incidents.items.iter().all(|i| i.resolved_at.is_some() || i.acknowledged_at.is_none()));
    fleet.ok(&["incidents", "ls"]).await?;
    let commands: CommandList = fleet.json(&["commands", "ls", "--agent", "vm-cli", "--json"]).await?;
    assert!(commands.items.iter().any(|c| c.kind.as_str() == "bot.stop"), "{commands:?}");
    let table = fleet.ok(&["commands", "ls", "--status", "succeeded"]).await?;
    assert!(table.lines().any(|l| l.contains("bot.start") && l.contains("vm-cli")), "{table}");

    // Logs: the last lines, then a follow that prints a line shipped after it began.
    fleet.agent.send_logs(fleet.bots[0], vec![log_line(1, "hello from farm-1"), log_line(2, "tick 1")]).await?;
    let logs = fleet.ok(&["bots", "logs", "farm-1"]).await?;
    assert_eq!(logs.lines().collect::<Vec<_>>(), ["hello from farm-1", "tick 1"]);
    let lines: Vec<LogLine> = fleet.json(&["bots", "logs", "farm-1", "-n", "1", "--json"]).await?;
    assert_eq!(lines.len(), 1);
    let mut follow = tokio::process::Command::new(botmox_bin()?)
        .args(["bots", "logs", "farm-1", "-f", "-n", "1"])
        .env("BOTMOX_URL", &fleet.app.base_url)
        .env("BOTMOX_TOKEN", &fleet.token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = BufReader::new(follow.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), out.next_line()).await??;
    assert_eq!(first.as_deref(), Some("tick 1"));
    fleet.agent.send_logs(fleet.bots[0], vec![log_line(3, "tick 2")]).await?;
    let next = tokio::time::timeout(Duration::from_secs(10), out.next_line()).await??;
    assert_eq!(next.as_deref(), Some("tick 2"), "followed live");
    follow.kill().await?;
    let (code, _, stderr) = fleet.cli(&["bots", "logs", "farm-1", "-n", "0"]).await?;
    assert_eq!(code, 2, "{stderr}");

    // The offline commands are still there.
    let (code, stdout, _) = run_to_exit(&["admin", "--help"], &[]).await?;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("reset-password"), "{stdout}");
    fleet.stop().await
}

/// The confirmation on a real terminal (a pseudo-terminal from util-linux's `script`): the
/// dry run's count is asked about; "n" changes nothing (exit 1), "y" goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_action_asks_on_a_terminal() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let command = format!("{} bots start --filter tag=eu", botmox_bin()?.display());
    let on_terminal = |answer: &'static str| {
        let mut script = tokio::process::Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env("BOTMOX_URL", &fleet.app.base_url)
            .env("BOTMOX_TOKEN", &fleet.token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        async move {
            let mut child = script.spawn()?;
            let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
            tokio::io::AsyncWriteExt::write_all(&mut stdin, answer.as_bytes()).await?;
            let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
            Ok::<_, anyhow::Error>((output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned()))
        }
    };
    let (code, shown) = on_terminal("n\n").await?;
    assert!(shown.contains("start 2 bot(s)? [y/N]"), "{shown}");
    assert!(shown.contains("cancelled: nothing was changed"), "{shown}");
    assert_eq!(code, Some(1), "{shown}");
    let bots: Vec<Bot> = fleet.json(&["bots", "ls", "--json"]).await?;
    assert!(bots.iter().all(|b| b.desired_state == botmox_contract::bots::DesiredState::Stopped), "{bots:?}");

    let (code, shown) = on_terminal("y\n").await?;
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("start queued for 2 of 2 matching bot(s)"), "{shown}");
    fleet.wait_bots("running").await?;
    fleet.stop().await
}
