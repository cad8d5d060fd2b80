//! Benchmarks against the real release `botmox` binary with simulated agents (`crate::sim`)
//! speaking the real protocol over WebSockets (SPEC §9):
//!
//! - `dispatch`: API start → command frame at the agent, with `--dispatch-agents` connected
//!   (target p50 ≤ 2 ms, p99 ≤ 10 ms);
//! - `fleet`: server CPU (% of one core) and RSS with `--fleet-agents` connected, each
//!   heartbeating every 5 s (target ≤ 50 %, ≤ 512 MB);
//! - `registry`: `GET /bots?limit=100` and `GET /dashboard` with `--registry-bots` bots
//!   (target p99 ≤ 20 ms and ≤ 50 ms).
//!
//! Agents and bots are registered straight in the store (pairing is rate limited, as it
//! should be); everything measured goes through the server's HTTP and WebSocket interfaces.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use botmox_contract::{bots::BotSpec, Id};
use botmox_control_plane::{
    auth::credentials,
    store::{NewAgent, NewBot, PoolOptions, Store, DEFAULT_TENANT},
};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Report, Samples};
use crate::{
    db::{Backend, TestDb},
    server::ServerProcess,
    sim::{connect_fleet, AutoMode, SimConfig},
};

#[derive(Debug, Clone, clap::Args)]
pub struct FleetOptions {
    /// Agents connected while dispatch latency is measured.
    #[arg(long = "dispatch-agents", default_value_t = 1000)]
    pub dispatch_agents: usize,
    /// Starts timed, one at a time.
    #[arg(long = "dispatch-starts", default_value_t = 2000)]
    pub dispatch_starts: usize,
    /// Agents connected for the CPU/RSS measurement.
    #[arg(long = "fleet-agents", default_value_t = 10_000)]
    pub fleet_agents: usize,
    /// How long CPU is measured once the fleet is connected.
    #[arg(long = "fleet-seconds", default_value_t = 30)]
    pub fleet_seconds: u64,
    /// Bots in the registry for the registry benchmark.
    #[arg(long = "registry-bots", default_value_t = 100_000)]
    pub registry_bots: usize,
    /// Requests timed per registry endpoint.
    #[arg(long = "registry-requests", default_value_t = 300)]
    pub registry_requests: usize,
}

pub(super) const PASSWORD: &str = "bench-admin-password";

/// A release server on a fresh database, logged in.
pub(super) struct Served {
    pub(super) server: ServerProcess,
    pub(super) db: TestDb,
    _data: Option<tempfile::TempDir>,
    pub(super) client: reqwest::Client,
    pub(super) token: String,
}

/// A fresh database, filled before the server starts (SQLite has one writer: filling it while
/// the server runs would only measure lock waits).
pub(super) struct Prepared {
    db: TestDb,
    data: Option<tempfile::TempDir>,
}

impl Prepared {
    pub(super) async fn new(backend: Backend) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let data = tempfile::tempdir()?;
                let db = TestDb::from_url(&format!("sqlite://{}", data.path().join("botmox.db").display()))?;
                Ok(Self { db, data: Some(data) })
            }
            Backend::Postgres => Ok(Self { db: TestDb::new(Backend::Postgres).await?, data: None }),
        }
    }

    pub(super) async fn store(&self) -> anyhow::Result<Store> {
        let store = Store::connect(&self.db.url, &PoolOptions::default()).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub(super) async fn serve(self) -> anyhow::Result<Served> {
        let log = std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into());
        let env = [("BOTMOX_ADMIN_PASSWORD", PASSWORD), ("RUST_LOG", log.as_str())];
        let server = match &self.data {
            Some(data) => ServerProcess::start(&["--data-dir", data.path().to_str().unwrap_or_default()], &env).await?,
            None => ServerProcess::start(&["--database-url", &self.db.url_string()], &env).await?,
        };
        let client = reqwest::Client::builder().pool_max_idle_per_host(8).build()?;
        let login = json!({ "username": "admin", "password": PASSWORD });
        let response: serde_json::Value =
            client.post(server.url("/api/v1/auth/login")).json(&login).send().await?.json().await?;
        let token = response["access_token"].as_str().context("no access token")?.to_owned();
        Ok(Served { server, db: self.db, _data: self.data, client, token })
    }

    /// `n` agents with tokens, each hosting one bot: (agent token, bot id).
    async fn register(&self, n: usize) -> anyhow::Result<Vec<(String, Id)>> {
        let agents = self.register_with_bots(n, 1).await?;
        Ok(agents.into_iter().filter_map(|(token, bots)| bots.first().map(|bot| (token, *bot))).collect())
    }

    /// `n` agents with tokens, each hosting `bots` bots: (agent token, its bot ids), written
    /// straight to the store by 8 workers.
    pub(super) async fn register_with_bots(&self, n: usize, bots: usize) -> anyhow::Result<Vec<(String, Vec<Id>)>> {
        let store = self.store().await?;
        let tenant_id = store.ensure_tenant(DEFAULT_TENANT, chrono::Utc::now()).await?;
        let workers = (0..8).map(|worker| {
            let store = store.clone();
            async move {
                let mut out = Vec::new();
                for i in (worker..n).step_by(8) {
                    let (token, agent_id) = register_agent(&store, tenant_id, i).await?;
                    let mut ids = Vec::with_capacity(bots);
                    for j in 0..bots {
                        // One bot per agent keeps the historical name; more get a suffix.
                        let name =
                            if bots == 1 { format!("bench-bot-{i:05}") } else { format!("bench-bot-{i:05}-{j:04}") };
                        let spec: BotSpec = serde_json::from_value(json!({
                            "name": name, "agent_id": agent_id, "exec": {"program": "true"}, "desired_state": "stopped",
                        }))?;
                        ids.push(store.create_bot(NewBot { tenant_id, spec }, chrono::Utc::now()).await?.id);
                    }
                    out.push((i, token, ids));
                }
                anyhow::Ok(out)
            }
        });
        let mut registered: Vec<_> = futures::future::try_join_all(workers).await?.into_iter().flatten().collect();
        registered.sort_by_key(|(i, ..)| *i);
        store.close().await;
        Ok(registered.into_iter().map(|(_, token, ids)| (token, ids)).collect())
    }
}

/// The `i`-th bench agent, with a fresh token: (token, agent id).
pub(super) async fn register_agent(store: &Store, tenant_id: Id, i: usize) -> anyhow::Result<(String, Id)> {
    let token = credentials::new_agent_token();
    let agent = store
        .create_agent(
            NewAgent {
                tenant_id,
                name: format!("bench-vm-{i:05}"),
                hostname: format!("bench-vm-{i:05}"),
                os: "linux".into(),
                arch: "x86_64".into(),
                version: "bench".into(),
                labels: Default::default(),
                token_hash: Some(credentials::hash(&token)),
            },
            chrono::Utc::now(),
        )
        .await?;
    Ok((token, agent.id))
}

impl Served {
    /// Stops the server (writing its output to `BENCH_SERVER_LOG_FILE`, if set: with
    /// `BENCH_SERVER_LOG=warn,sqlx::query=debug`, every statement with its duration).
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        if let Ok(path) = std::env::var("BENCH_SERVER_LOG_FILE") {
            let mut lines = self.server.stdout.snapshot();
            lines.extend(self.server.stderr.snapshot());
            std::fs::write(path, lines.join("\n"))?;
        }
        self.server.kill().await?;
        self.db.cleanup().await
    }
}

/// (utime + stime) clock ticks and resident KiB of a process (Linux `/proc`).
pub(super) fn process_usage(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).context("bad /proc stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the `)`.
    let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((ticks, kib("VmRSS:"), kib("VmHWM:")))
}

pub(super) fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

pub async fn dispatch(options: &FleetOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let prepared = Prepared::new(backend).await?;
    let agents = prepared.register(options.dispatch_agents).await?;
    let served = prepared.serve().await?;
    let (observed_tx, mut observed) = mpsc::unbounded_channel();
    let configs = agents
        .iter()
        .enumerate()
        .map(|(i, (token, _))| {
            SimConfig::new(served.server.base_url.clone(), token.clone())
                .auto(AutoMode::Run)
                .heartbeat(Duration::from_secs(5))
                .observed(i, observed_tx.clone())
        })
        .collect();
    let connecting = Instant::now();
    let sims = connect_fleet(configs, 64).await.map_err(|e| anyhow::anyhow!("connecting the fleet: {e:?}"))?;
    let connected_in = connecting.elapsed();

    let (mut to_agent, mut api) = (Samples::default(), Samples::default());
    for i in 0..options.dispatch_starts {
        let (_, bot_id) = &agents[(i * 7919) % agents.len()];
        let started = Instant::now();
        let response = served
            .client
            .post(served.server.url(&format!("/api/v1/bots/{bot_id}/start")))
            .bearer_auth(&served.token)
            .send()
            .await?;
        api.record(started.elapsed());
        anyhow::ensure!(response.status() == 202, "start answered {}", response.status());
        let accepted: serde_json::Value = response.json().await?;
        let command_id = accepted["command"]["id"].as_str().unwrap_or_default().to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = tokio::time::timeout_at(deadline, observed.recv())
                .await
                .context("a command did not reach its agent within 10 s")?
                .context("the fleet stopped")?;
            if seen.command_id.to_string() == command_id {
                to_agent.record(seen.at.duration_since(started));
                break;
            }
        }
    }
    drop(sims);
    served.stop().await?;
    Ok(vec![Report {
        bench: "dispatch",
        backend,
        about: format!(
            "POST /bots/{{id}}/start → command frame at a simulated agent, {} agents connected (WebSocket)",
            agents.len()
        ),
        figures: vec![
            ("agents connected".into(), format!("{} in {:.1} s", agents.len(), connected_in.as_secs_f64())),
            ("starts".into(), options.dispatch_starts.to_string()),
            ("target".into(), "p50 ≤ 2 ms, p99 ≤ 10 ms".into()),
        ],
        latencies: vec![("API start → frame".into(), to_agent), ("API response".into(), api)],
    }])
}

pub async fn fleet(options: &FleetOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let prepared = Prepared::new(backend).await?;
    let agents = prepared.register(options.fleet_agents).await?;
    let served = prepared.serve().await?;
    let pid = served.server.pid().context("the server has no pid")?;
    let client = reqwest::Client::new();
    let configs = agents
        .iter()
        .map(|(token, _)| {
            let mut config = SimConfig::new(served.server.base_url.clone(), token.clone())
                .auto(AutoMode::Run)
                .heartbeat(Duration::from_secs(5));
            config.client = Some(client.clone());
            config
        })
        .collect();
    let connecting = Instant::now();
    let sims = connect_fleet(configs, 32).await.map_err(|e| anyhow::anyhow!("connecting the fleet: {e:?}"))?;
    let connected_in = connecting.elapsed();
    // Let the connection burst settle, then measure a steady state of heartbeats.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (ticks_before, _, _) = process_usage(pid)?;
    let measuring = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.fleet_seconds)).await;
    let (ticks_after, rss_kib, peak_kib) = process_usage(pid)?;
    let seconds = measuring.elapsed().as_secs_f64();
    let cpu = (ticks_after - ticks_before) as f64 / clock_ticks_per_second() / seconds * 100.0;
    let (_, online) =
        crate::app::send(served.client.get(served.server.url("/api/v1/guide/status")).bearer_auth(&served.token))
            .await?;
    let online = online["counts"]["agents_by_status"]["online"].as_u64().unwrap_or(0);
    drop(sims);
    served.stop().await?;
    Ok(vec![Report {
        bench: "fleet",
        backend,
        about: format!(
            "{} simulated agents on WebSockets, heartbeat every 5 s, server measured over {seconds:.0} s",
            agents.len()
        ),
        figures: vec![
            ("agents connected".into(), format!("{} in {:.1} s", agents.len(), connected_in.as_secs_f64())),
            ("online per the API".into(), online.to_string()),
            ("server CPU".into(), format!("{cpu:.1} % of one core")),
            (
                "server RSS".into(),
                format!("{:.0} MB (peak {:.0} MB)", rss_kib as f64 / 1024.0, peak_kib as f64 / 1024.0),
            ),
            ("target".into(), "CPU ≤ 50 % of one core, RSS ≤ 512 MB".into()),
        ],
        latencies: vec![],
    }])
}

pub async fn registry(options: &FleetOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let prepared = Prepared::new(backend).await?;
    let filling = Instant::now();
    fill_registry(&prepared.store().await?, options.registry_bots).await?;
    let filled_in = filling.elapsed();
    let served = prepared.serve().await?;
    let mut latencies = Vec::new();
    for (label, path) in [
        ("GET /bots?limit=100", "/api/v1/bots?limit=100".to_owned()),
        ("GET /bots?state&name", "/api/v1/bots?limit=100&state=pending&name=bot-4".to_owned()),
        ("GET /dashboard", "/api/v1/dashboard".to_owned()),
    ] {
        let mut samples = Samples::default();
        for _ in 0..options.registry_requests {
            let started = Instant::now();
            let response = served.client.get(served.server.url(&path)).bearer_auth(&served.token).send().await?;
            anyhow::ensure!(response.status() == 200, "{path} answered {}", response.status());
            response.bytes().await?;
            samples.record(started.elapsed());
        }
        latencies.push((label.to_owned(), samples));
    }
    served.stop().await?;
    Ok(vec![Report {
        bench: "registry",
        backend,
        about: format!(
            "{} bots on 100 agents; requests one at a time, with the admin's session",
            options.registry_bots
        ),
        figures: vec![
            ("registry filled in".into(), format!("{:.1} s", filled_in.as_secs_f64())),
            ("target".into(), "GET /bots?limit=100 p99 ≤ 20 ms, GET /dashboard p99 ≤ 50 ms".into()),
        ],
        latencies,
    }])
}

/// `bots` bots spread over 100 agents, inserted with a few writers.
async fn fill_registry(store: &Store, bots: usize) -> anyhow::Result<()> {
    let tenant_id = store.ensure_tenant(DEFAULT_TENANT, chrono::Utc::now()).await?;
    let mut agents = Vec::new();
    for i in 0..100 {
        let new = NewAgent {
            tenant_id,
            name: format!("registry-vm-{i:03}"),
            hostname: format!("registry-vm-{i:03}"),
            os: "linux".into(),
            arch: "x86_64".into(),
            version: "bench".into(),
            labels: Default::default(),
            token_hash: None,
        };
        agents.push(store.create_agent(new, chrono::Utc::now()).await?.id);
    }
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, agents) = (store.clone(), agents.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..bots).step_by(writers) {
                let spec: BotSpec = serde_json::from_value(json!({
                    "name": format!("bot-{i:06}"), "agent_id": agents[i % agents.len()],
                    "exec": {"program": "python3", "args": ["bot.py"]}, "tags": [format!("shard-{}", i % 10)],
                }))?;
                store.create_bot(NewBot { tenant_id, spec }, chrono::Utc::now()).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    store.close().await;
    Ok(())
}
