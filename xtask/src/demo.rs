//! The demo part of `cargo xtask run`: once the server answers, a local agent (its own agent
//! dir `<data dir>/agent`, paired automatically with a fresh code the first time) and a demo
//! bot that prints a line every two seconds, started through the API. A newcomer sees a
//! running bot and its log within seconds; later runs reuse the agent and the bot.
//!
//! It talks to the server like any client: log in as the admin, create a pairing code, create
//! and start the bot. `ureq` (blocking, small, no TLS needed on loopback) keeps xtask free of
//! an async runtime.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::children::Supervisor;

/// The demo bot's name (kept across runs: the bot is created once).
pub const BOT_NAME: &str = "demo-bot";
const AGENT_NAME: &str = "local-demo";
/// How long the server gets to answer `/readyz` (a first start migrates a new database).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the demo set up, to be printed.
pub struct Demo {
    pub bot_id: String,
    pub agent_dir: PathBuf,
}

pub struct Api {
    url: String,
    token: String,
}

impl Api {
    pub fn login(url: &str, username: &str, password: &str) -> Result<Self> {
        let body = json!({ "username": username, "password": password });
        let response = ureq::post(&format!("{url}/api/v1/auth/login")).send_json(body);
        let session: Value = answer(response, "logging in as the admin")?;
        let token = session["access_token"].as_str().context("the login answer has no access token")?;
        Ok(Self { url: url.to_owned(), token: token.to_owned() })
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        answer(self.request("GET", path).call(), &format!("GET {path}"))
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        answer(self.request("POST", path).send_json(body), &format!("POST {path}"))
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.url)).set("Authorization", &format!("Bearer {}", self.token))
    }
}

/// The JSON of a successful answer, or an error with the server's problem text.
fn answer(response: Result<ureq::Response, ureq::Error>, what: &str) -> Result<Value> {
    match response {
        Ok(response) => response.into_json().with_context(|| format!("{what}: the answer is not JSON")),
        Err(ureq::Error::Status(status, response)) => {
            let detail = response.into_string().unwrap_or_default();
            bail!("{what}: the server answered {status}: {detail}")
        }
        Err(err) => Err(err).with_context(|| what.to_owned()),
    }
}

/// Waits until the server is ready (bounded).
pub fn wait_ready(url: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(response) = ureq::get(&format!("{url}/readyz")).timeout(Duration::from_secs(2)).call() {
            if response.status() == 200 {
                return Ok(());
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("the server did not become ready within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pairs the local agent if needed, starts it under `supervisor`, and makes sure the demo bot
/// exists and runs.
pub fn start(
    supervisor: &mut Supervisor,
    agent_bin: &Path,
    url: &str,
    (username, password): (&str, &str),
    data_dir: &Path,
) -> Result<Demo> {
    let api = Api::login(url, username, password)?;
    let agent_dir = data_dir.join("agent");
    let agent_id = paired_agent(&api, agent_bin, &agent_dir)?;

    let mut run = Command::new(agent_bin);
    run.arg("--config-dir").arg(&agent_dir).arg("run");
    supervisor.spawn("botmox-agent", &mut run)?;

    let (bot_id, created) = demo_bot(&api, &agent_id, &agent_dir)?;
    if !created {
        // A new bot starts by itself (it is created with `desired_state: running`).
        api.post(&format!("/api/v1/bots/{bot_id}/start"), json!({}))?;
    }
    Ok(Demo { bot_id, agent_dir })
}

/// Stops the demo bot and waits (bounded) until its agent says it stopped. Best effort: the
/// demo is ending either way.
pub fn stop(url: &str, (username, password): (&str, &str), bot_id: &str) {
    let stopped = Api::login(url, username, password).and_then(|api| {
        api.post(&format!("/api/v1/bots/{bot_id}/stop"), json!({}))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while api.get(&format!("/api/v1/bots/{bot_id}"))?["state"] != "stopped" {
            if Instant::now() > deadline {
                bail!("it did not stop within 15 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    match stopped {
        Ok(()) => println!("    {BOT_NAME} stopped"),
        Err(err) => println!("    {BOT_NAME} could not be stopped: {err:#}"),
    }
}

/// The local agent's id: from its credentials when the server still knows it, else paired
/// anew (a deleted database or a revoked agent leaves credentials the server refuses).
fn paired_agent(api: &Api, agent_bin: &Path, agent_dir: &Path) -> Result<String> {
    let credentials = agent_dir.join("agent.json");
    if let Ok(text) = std::fs::read_to_string(&credentials) {
        let known: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(id) = known["agent_id"].as_str() {
            match api.get(&format!("/api/v1/agents/{id}")) {
                Ok(agent) if agent["status"] != "revoked" => return Ok(id.to_owned()),
                _ => println!(
                    "xtask: the demo agent in {} is unknown to this server; pairing again",
                    agent_dir.display()
                ),
            }
        }
        std::fs::remove_dir_all(agent_dir).with_context(|| format!("could not reset {}", agent_dir.display()))?;
    }
    let code = api.post("/api/v1/agents/pairing-codes", json!({ "name": AGENT_NAME }))?;
    let code = code["code"].as_str().context("the pairing code answer has no code")?;
    let status = Command::new(agent_bin)
        .arg("--config-dir")
        .arg(agent_dir)
        .args(["pair", "--server", &api.url, "--code", code, "--name", AGENT_NAME])
        .status()
        .context("could not run botmox-agent pair")?;
    if !status.success() {
        bail!("botmox-agent pair failed ({status}); its message is above");
    }
    let text =
        std::fs::read_to_string(&credentials).with_context(|| format!("{} after pairing", credentials.display()))?;
    let paired: Value = serde_json::from_str(&text)?;
    Ok(paired["agent_id"].as_str().context("no agent_id in the credentials")?.to_owned())
}

/// The demo bot's id (and whether it was created now), created on the agent the first time
/// (or moved to it, when the agent was paired anew).
fn demo_bot(api: &Api, agent_id: &str, agent_dir: &Path) -> Result<(String, bool)> {
    let found = api.get(&format!("/api/v1/bots?name={BOT_NAME}&limit=10"))?;
    let existing = found["items"].as_array().into_iter().flatten().find(|b| b["name"] == BOT_NAME);
    match existing {
        Some(bot) if bot["agent_id"] == agent_id => Ok((bot["id"].as_str().unwrap_or_default().to_owned(), false)),
        Some(bot) => {
            let id = bot["id"].as_str().unwrap_or_default();
            let request = api.request("PATCH", &format!("/api/v1/bots/{id}"));
            answer(request.send_json(json!({ "agent_id": agent_id })), "moving the demo bot to the new agent")?;
            Ok((id.to_owned(), false))
        }
        None => {
            let bot = api.post("/api/v1/bots", bot_spec(agent_id, agent_dir))?;
            Ok((bot["id"].as_str().context("the new bot has no id")?.to_owned(), true))
        }
    }
}

/// A bot that says hello every two seconds, in the platform's own shell.
fn bot_spec(agent_id: &str, agent_dir: &Path) -> Value {
    let (program, args) = if cfg!(windows) {
        ("cmd", vec!["/C", "for /L %i in (1,1,1000000) do @(echo demo bot: tick %i & ping -n 3 127.0.0.1 >nul)"])
    } else {
        ("sh", vec!["-c", "i=0; while :; do i=$((i+1)); echo \"demo bot: tick $i\"; sleep 2; done"])
    };
    json!({
        "name": BOT_NAME,
        "agent_id": agent_id,
        "exec": { "program": program, "args": args, "cwd": agent_dir },
        "restart": { "policy": "always" },
        "tags": ["demo"],
        "desired_state": "running",
    })
}
