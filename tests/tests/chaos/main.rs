//! Chaos: the real `botmox` and three real agents with twenty real bots, a stream of
//! start/stop/restart commands (some with an `Idempotency-Key`, some of those sent twice), and
//! faults injected at random while it runs — kill -9 of the server and of agents, agent
//! connections reset or stalled (each agent reaches the server through a relay the test
//! controls), and on Postgres `pg_terminate_backend` on the server's connections and database
//! outages (the server reaches Postgres through a relay too). Then a last burst of commands
//! with a fault inside it, and no more commands.
//!
//! It checks what SPEC §10 promises: every accepted command ends (terminal status); no command
//! is executed twice (each agent's journal starts a command id at most once); a bot never has
//! two processes (sampled all along); and within 30 s of the last fault every bot converges —
//! the server shows its desired state, and the host agrees (a running bot has exactly the
//! process the server names, a stopped one none). The figures are printed at the end.
//!
//! `CHAOS_SECONDS` (default 40) sets the length of the fault phase; `CHAOS_SEED` replays a run.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use botmox_e2e::{
    agent::{all_bot_leaders, pair, reap_bots, script, AgentProcess, TcpRelay},
    both_backends,
    db::{pg_url, Backend, TestDb},
    server::ServerProcess,
};
use serde_json::{json, Value};
use uuid::Uuid;

both_backends!(bots_converge_after_random_faults);

const PASSWORD: &str = "chaos-admin-password";
const AGENTS: usize = 3;
const BOTS: usize = 20;
/// The promise: every bot converges within this long after the last fault.
const CONVERGENCE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillServer,
    KillAgent,
    ResetAgent,
    StallAgent,
    TerminateDbConnections,
    DbOutage,
}

struct Host {
    dir: tempfile::TempDir,
    relay: TcpRelay,
    agent: Option<AgentProcess>,
}

impl Drop for Host {
    fn drop(&mut self) {
        // Pass or fail, no bot outlives the test.
        reap_bots(self.dir.path());
    }
}

/// Everything the test runs, and the doors it breaks.
struct World {
    backend: Backend,
    db: TestDb,
    /// Postgres only: the server reaches its database through this relay.
    db_relay: Option<TcpRelay>,
    data: tempfile::TempDir,
    server: Option<ServerProcess>,
    /// The API clients' way in.
    api_relay: TcpRelay,
    hosts: Vec<Host>,
}

impl World {
    async fn start(backend: Backend) -> anyhow::Result<Self> {
        let db = TestDb::new(backend).await?;
        let db_relay = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TcpRelay::start(Some(pg_host_port(&pg_url())?)).await?),
        };
        let mut world = Self {
            backend,
            db,
            db_relay,
            data: tempfile::tempdir()?,
            server: None,
            api_relay: TcpRelay::start(None).await?,
            hosts: Vec::new(),
        };
        world.start_server().await?;
        Ok(world)
    }

    fn server_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--heartbeat-interval", "1", "--command-lease", "3", "--data-dir"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.push(self.data.path().display().to_string());
        if let Some(relay) = &self.db_relay {
            let url =
                self.db.url_string().replacen(&pg_host_port(&pg_url()).unwrap_or_default(), &relay.addr.to_string(), 1);
            args.extend(["--database-url".to_owned(), url]);
        }
        args
    }

    async fn start_server(&mut self) -> anyhow::Result<()> {
        let args = self.server_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = ServerProcess::start(&args, &[("BOTMOX_ADMIN_PASSWORD", PASSWORD)]).await?;
        let upstream = server.base_url.trim_start_matches("http://").to_owned();
        self.api_relay.set_upstream(Some(upstream.clone()));
        for host in &self.hosts {
            host.relay.set_upstream(Some(upstream.clone()));
        }
        self.server = Some(server);
        Ok(())
    }

    fn set_server_reachable(&self, reachable: bool) {
        let upstream = reachable
            .then(|| self.server.as_ref().map(|s| s.base_url.trim_start_matches("http://").to_owned()))
            .flatten();
        self.api_relay.set_upstream(upstream.clone());
        for host in &self.hosts {
            host.relay.set_upstream(upstream.clone());
        }
    }

    async fn add_host(&mut self, api: &Api) -> anyhow::Result<Uuid> {
        let upstream = self.server.as_ref().map(|s| s.base_url.trim_start_matches("http://").to_owned());
        let relay = TcpRelay::start(upstream).await?;
        let dir = tempfile::tempdir()?;
        let (status, code) = api.send(reqwest::Method::POST, "/api/v1/agents/pairing-codes", Some(json!({}))).await?;
        anyhow::ensure!(status == 201, "{code}");
        pair(dir.path(), &relay.url(), code["code"].as_str().unwrap_or_default()).await?;
        let credentials: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("agent.json"))?)?;
        let agent_id = credentials["agent_id"].as_str().unwrap_or_default().parse()?;
        let agent = AgentProcess::start(dir.path(), &[]).await?;
        self.hosts.push(Host { dir, relay, agent: Some(agent) });
        Ok(agent_id)
    }

    /// Injects `fault` and heals it (a fault is over when this returns).
    async fn inject(&mut self, fault: Fault, rng: &mut Rng) -> anyhow::Result<()> {
        match fault {
            Fault::KillServer => {
                self.set_server_reachable(false);
                if let Some(server) = self.server.take() {
                    server.kill().await?;
                }
                tokio::time::sleep(rng.millis(200, 1500)).await;
                self.start_server().await?;
            }
            Fault::KillAgent => {
                let host = rng.below(self.hosts.len() as u64) as usize;
                if let Some(agent) = self.hosts[host].agent.take() {
                    agent.kill().await?;
                }
                tokio::time::sleep(rng.millis(200, 2000)).await;
                self.hosts[host].agent = Some(AgentProcess::start(self.hosts[host].dir.path(), &[]).await?);
            }
            Fault::ResetAgent => {
                let host = rng.below(self.hosts.len() as u64) as usize;
                self.hosts[host].relay.reset();
            }
            Fault::StallAgent => {
                let host = rng.below(self.hosts.len() as u64) as usize;
                self.hosts[host].relay.stall(true);
                tokio::time::sleep(rng.millis(1000, 4000)).await;
                self.hosts[host].relay.stall(false);
            }
            Fault::TerminateDbConnections => {
                let name = self.db.url_string().rsplit('/').next().unwrap_or_default().to_owned();
                let admin = TestDb::from_url(&pg_url())?;
                let sql = format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                );
                admin.execute(&[&sql]).await?;
            }
            Fault::DbOutage => {
                if let Some(relay) = &self.db_relay {
                    let upstream = pg_host_port(&pg_url())?;
                    relay.set_upstream(None);
                    relay.reset();
                    tokio::time::sleep(rng.millis(2000, 8000)).await;
                    relay.set_upstream(Some(upstream));
                }
            }
        }
        Ok(())
    }

    fn faults(&self) -> Vec<Fault> {
        let mut faults = vec![Fault::KillServer, Fault::KillAgent, Fault::ResetAgent, Fault::StallAgent];
        if self.backend == Backend::Postgres {
            faults.extend([Fault::TerminateDbConnections, Fault::DbOutage]);
        }
        faults
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        for host in &mut self.hosts {
            if let Some(agent) = host.agent.take() {
                agent.kill().await?;
            }
        }
        self.hosts.clear();
        if let Some(server) = self.server.take() {
            server.kill().await?;
        }
        drop(self.db_relay.take());
        self.db.cleanup().await
    }
}

/// `host:port` of a Postgres URL.
fn pg_host_port(url: &str) -> anyhow::Result<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    anyhow::ensure!(!host.is_empty(), "no host in {url}");
    Ok(if host.contains(':') { host.to_owned() } else { format!("{host}:5432") })
}

/// An API client that logs in again whenever the server does not know its token (never
/// needed in practice: session keys live in the database) and never waits more than
/// [`REQUEST_TIMEOUT`].
struct Api {
    base: String,
    token: Mutex<String>,
    client: reqwest::Client,
}

impl Api {
    async fn login(base: &str) -> anyhow::Result<Self> {
        let api = Self { base: base.to_owned(), token: Mutex::new(String::new()), client: reqwest::Client::new() };
        api.relogin().await?;
        Ok(api)
    }

    async fn relogin(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let login = json!({ "username": "admin", "password": PASSWORD });
            let sent = self.client.post(format!("{}/api/v1/auth/login", self.base)).json(&login);
            if let Ok((200, body)) = botmox_e2e::app::send(sent.timeout(REQUEST_TIMEOUT)).await {
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) =
                    body["access_token"].as_str().unwrap_or_default().to_owned();
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "cannot log in");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token).timeout(REQUEST_TIMEOUT)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        botmox_e2e::app::send(request).await
    }

    /// GET that retries through faults (bounded).
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.send(reqwest::Method::GET, path, None).await {
                Ok((200, body)) => return Ok(body),
                Ok((401, _)) => self.relogin().await?,
                other => anyhow::ensure!(tokio::time::Instant::now() < deadline, "GET {path}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the command stream did.
#[derive(Default)]
struct Ledger {
    sent: u64,
    accepted: Vec<Uuid>,
    /// 503 (the store away) and requests without an answer (the server away).
    refused: u64,
    unanswered: u64,
    /// Keyed requests sent again, and how many of those got the first command back.
    replays: u64,
    replays_same: u64,
    /// Sent (path, key) with the command the first answer named.
    keyed: Vec<(String, String, Option<Uuid>)>,
}

async fn command_stream(
    api: Arc<Api>,
    bots: Vec<Uuid>,
    seed: u64,
    count: Option<u64>,
    until: Arc<tokio::sync::Notify>,
) -> Ledger {
    let mut rng = Rng(seed | 1);
    let mut ledger = Ledger::default();
    let stop = until.notified();
    tokio::pin!(stop);
    loop {
        if count.is_some_and(|n| ledger.sent >= n) {
            break;
        }
        let replay = !ledger.keyed.is_empty() && rng.below(10) == 0;
        let (path, key) = if replay {
            let (path, key, _) = ledger.keyed[rng.below(ledger.keyed.len() as u64) as usize].clone();
            (path, Some(key))
        } else {
            let bot = bots[rng.below(bots.len() as u64) as usize];
            let action = ["start", "stop", "restart"][rng.below(3) as usize];
            let key = (rng.below(4) == 0).then(|| Uuid::now_v7().to_string());
            (format!("/api/v1/bots/{bot}/{action}"), key)
        };
        let mut request = api.request(reqwest::Method::POST, &path).json(&json!({}));
        if let Some(key) = &key {
            request = request.header("Idempotency-Key", key);
        }
        ledger.sent += 1;
        let command = match botmox_e2e::app::send(request).await {
            Ok((202, body)) => {
                let id = body["command"]["id"].as_str().and_then(|s| s.parse::<Uuid>().ok());
                if let Some(id) = id {
                    ledger.accepted.push(id);
                }
                id
            }
            Ok((503, _)) => {
                ledger.refused += 1;
                None
            }
            Ok((401, _)) => {
                let _ = api.relogin().await;
                ledger.refused += 1;
                None
            }
            Ok((status, body)) => panic!("POST {path} answered {status}: {body}"),
            Err(_) => {
                ledger.unanswered += 1;
                None
            }
        };
        if let Some(key) = key {
            if replay {
                ledger.replays += 1;
                let first = ledger.keyed.iter().find(|(p, k, _)| *p == path && *k == key).and_then(|(_, _, id)| *id);
                match (first, command) {
                    (Some(first), Some(again)) => {
                        assert_eq!(first, again, "a replayed Idempotency-Key answered another command");
                        ledger.replays_same += 1;
                    }
                    (None, Some(again)) => {
                        if let Some(entry) = ledger.keyed.iter_mut().find(|(p, k, _)| *p == path && *k == key) {
                            entry.2 = Some(again);
                        }
                    }
                    _ => {}
                }
            } else {
                ledger.keyed.push((path, key, command));
            }
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(rng.millis(20, 150)) => {}
        }
    }
    ledger
}

/// Samples the bot processes on this machine until told to stop: the most processes any bot
/// had at once, and the number of samples.
async fn sampler(bots: Vec<Uuid>, until: Arc<tokio::sync::Notify>) -> (usize, u64, Vec<String>) {
    let (mut worst, mut samples, mut doubles) = (0, 0, Vec::new());
    let ids: Vec<String> = bots.iter().map(Uuid::to_string).collect();
    let stop = until.notified();
    tokio::pin!(stop);
    loop {
        let leaders = tokio::task::spawn_blocking(all_bot_leaders).await.unwrap_or_default();
        samples += 1;
        for id in &ids {
            let n = leaders.get(id).map_or(0, Vec::len);
            worst = worst.max(n);
            if n > 1 {
                doubles.push(format!("bot {id}: pids {:?}", leaders.get(id)));
            }
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    (worst, samples, doubles)
}

/// Command ids each agent's journal shows started more than once.
fn started_twice(dirs: &[&Path]) -> anyhow::Result<Vec<String>> {
    let mut twice = Vec::new();
    for dir in dirs {
        let mut starts: HashMap<String, u32> = HashMap::new();
        let journal = dir.join("journal.jsonl");
        let Ok(text) = std::fs::read_to_string(&journal) else { continue };
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
            if entry["outcome"].is_null() {
                *starts.entry(entry["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
            }
        }
        twice.extend(starts.into_iter().filter(|(_, n)| *n > 1).map(|(id, n)| format!("{id} started {n} times")));
    }
    Ok(twice)
}

/// Bots whose observed state is not their desired one (each described), and the commands
/// not yet terminal (also described in `wrong`, so a failure says which and where). A bot
/// that should be stopped is converged when it is `stopped` with no process — or `pending`
/// (the product's "never ran", which it does not count as drift) if its program never
/// started, as its starts file (`ran`) says.
async fn divergence(api: &Api, bots: &[Uuid], ran: impl Fn(usize) -> bool) -> anyhow::Result<(Vec<String>, u64)> {
    let leaders = tokio::task::spawn_blocking(all_bot_leaders).await?;
    let mut wrong = Vec::new();
    for (n, bot) in bots.iter().enumerate() {
        let view = api.get(&format!("/api/v1/bots/{bot}")).await?;
        let pids = leaders.get(&bot.to_string()).cloned().unwrap_or_default();
        let ok = match view["desired_state"].as_str() {
            Some("running") => {
                view["state"] == "running" && pids.len() == 1 && view["pid"].as_u64() == Some(u64::from(pids[0]))
            }
            _ => pids.is_empty() && (view["state"] == "stopped" || (view["state"] == "pending" && !ran(n))),
        };
        if !ok {
            wrong.push(format!(
                "bot {bot}: desired {} state {} pid {} on host {pids:?}, its program {}",
                view["desired_state"],
                view["state"],
                view["pid"],
                if ran(n) { "ran" } else { "never ran" }
            ));
        }
    }
    let mut pending = 0;
    for status in ["queued", "dispatched", "running"] {
        let page = api.get(&format!("/api/v1/commands?status={status}&limit=500")).await?;
        for command in page["items"].as_array().into_iter().flatten() {
            pending += 1;
            wrong.push(format!(
                "command {} {} for bot {}: {status}, attempt {}, created {}, dispatched {}, acked {}",
                command["id"],
                command["kind"],
                command["bot_id"],
                command["attempt"],
                command["created_at"],
                command["dispatched_at"],
                command["acked_at"]
            ));
        }
    }
    Ok((wrong, pending))
}

/// Where bot `n`'s program writes its pid each time it starts.
fn starts_file(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("bot-{n}.starts"))
}

async fn bots_converge_after_random_faults(backend: Backend) -> anyhow::Result<()> {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let seconds = std::env::var("CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40u64);
    println!("chaos on {backend:?}: seed {seed} (CHAOS_SEED replays it), {seconds} s of faults");
    let mut rng = Rng(seed | 1);
    let mut world = World::start(backend).await?;
    let api = Arc::new(Api::login(&world.api_relay.url()).await?);
    let mut agents = Vec::new();
    for _ in 0..AGENTS {
        agents.push(world.add_host(&api).await?);
    }
    let scripts = tempfile::tempdir()?;
    let mut bots = Vec::new();
    for n in 0..BOTS {
        let starts = starts_file(scripts.path(), n);
        let program = script(
            scripts.path(),
            &format!("bot-{n}.sh"),
            &format!("#!/bin/sh\necho \"$$\" >> '{}'\nwhile :; do sleep 1; done\n", starts.display()),
        )?;
        let spec = json!({
            "name": format!("chaos-{n}"), "agent_id": agents[n % AGENTS], "desired_state": "stopped",
            "exec": { "program": program }, "stop": { "timeout_seconds": 2 },
        });
        let (status, bot) = api.send(reqwest::Method::POST, "/api/v1/bots", Some(spec)).await?;
        anyhow::ensure!(status == 201, "{bot}");
        bots.push(bot["id"].as_str().unwrap_or_default().parse::<Uuid>()?);
    }

    // The fault phase: commands all along, a fault every 1.5 to 4 s.
    let stop_sampling = Arc::new(tokio::sync::Notify::new());
    let sampling = tokio::spawn(sampler(bots.clone(), stop_sampling.clone()));
    let stop_stream = Arc::new(tokio::sync::Notify::new());
    let stream = tokio::spawn(command_stream(api.clone(), bots.clone(), rng.next(), None, stop_stream.clone()));
    let mut faults: BTreeMap<Fault, u32> = BTreeMap::new();
    let kinds = world.faults();
    let phase_end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < phase_end {
        tokio::time::sleep(rng.millis(1500, 4000)).await;
        let fault = kinds[rng.below(kinds.len() as u64) as usize];
        world.inject(fault, &mut rng).await?;
        *faults.entry(fault).or_default() += 1;
    }
    stop_stream.notify_one();
    let mut ledger = stream.await?;

    // The last burst, with a fault inside it; then no more commands.
    let burst = tokio::spawn(command_stream(
        api.clone(),
        bots.clone(),
        rng.next(),
        Some(60),
        Arc::new(tokio::sync::Notify::new()),
    ));
    tokio::time::sleep(rng.millis(300, 1500)).await;
    let last = [Fault::KillServer, Fault::KillAgent][rng.below(2) as usize];
    world.inject(last, &mut rng).await?;
    let last_fault = Instant::now();
    *faults.entry(last).or_default() += 1;
    let burst = burst.await?;
    let burst_ended = last_fault.elapsed();
    ledger.sent += burst.sent;
    ledger.accepted.extend(burst.accepted);
    ledger.refused += burst.refused;
    ledger.unanswered += burst.unanswered;
    ledger.replays += burst.replays;
    ledger.replays_same += burst.replays_same;

    // Convergence.
    let converged = loop {
        let ran = |n: usize| starts_file(scripts.path(), n).exists();
        let (wrong, pending) = divergence(&api, &bots, ran).await?;
        if wrong.is_empty() && pending == 0 {
            break last_fault.elapsed();
        }
        anyhow::ensure!(
            last_fault.elapsed() < CONVERGENCE,
            "not converged {CONVERGENCE:?} after the last fault ({pending} commands not terminal): {wrong:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop_sampling.notify_one();
    let (worst, samples, doubles) = sampling.await?;
    let dirs: Vec<&Path> = world.hosts.iter().map(|h| h.dir.path()).collect();
    let twice = started_twice(&dirs)?;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for id in &ledger.accepted {
        let command = api.get(&format!("/api/v1/commands/{id}")).await?;
        *statuses.entry(command["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    let starts: usize = (0..BOTS)
        .map(|n| std::fs::read_to_string(starts_file(scripts.path(), n)).map_or(0, |t| t.lines().count()))
        .sum();
    println!(
        "chaos on {backend:?}: {} commands sent, {} accepted ({statuses:?}), {} refused (503/401), {} unanswered; \
         {} idempotent replays, {} answered with the first command; faults {faults:?}; {starts} bot process starts; \
         converged {converged:.1?} after the last fault (the burst's last command {burst_ended:.1?} after it); {samples} process samples, at most {worst} process per bot",
        ledger.sent,
        ledger.accepted.len(),
        ledger.refused,
        ledger.unanswered,
        ledger.replays,
        ledger.replays_same,
    );
    assert!(doubles.is_empty(), "a bot had two processes at once: {doubles:?}");
    assert!(twice.is_empty(), "commands executed twice: {twice:?}");
    assert!(!ledger.accepted.is_empty(), "the stream got commands through");
    assert_eq!(
        statuses
            .keys()
            .filter(|s| !["succeeded", "failed", "cancelled", "timed_out", "expired", "dead_lettered"]
                .contains(&s.as_str()))
            .count(),
        0,
        "every accepted command is terminal: {statuses:?}"
    );
    world.stop().await
}
