//! The production stack of `deploy/compose.stack.yml`, run natively (no container runtime):
//! the real Caddy with the shipped `deploy/Caddyfile.stack` (only its `{$…}` placeholders set:
//! ports, host name, the replicas' addresses), two real `botmox` replicas on a fresh Postgres
//! database, and real `botmox-agent`s that pair and connect through Caddy over HTTPS, trusting
//! Caddy's internal CA through `--ca-file`.
//!
//! `scenario.rs` is the proof (proxy paths, cross-replica delivery, a replica killed, a rolling
//! restart, supervisor failover); `compose.rs` checks that the compose file describes the same
//! topology as [`TOPOLOGY`], which is what this test starts; `drain.rs` checks the replica's
//! side of a restart without a load balancer (`--shutdown-grace`). The scenario needs Debian's
//! `caddy`, so, like the panel's browser test, it is left out of the plain `cargo nextest run`
//! and run by `cargo xtask test` (`--run-ignored only`), which installs it.

mod caddy;
mod compose;
mod drain;
mod scenario;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use botmox_e2e::{
    app::send,
    db::{Backend, TestDb},
    server::{free_port, ServerProcess},
};
use serde_json::{json, Value};

use crate::caddy::Caddy;

/// What the compose file and this test agree on.
pub struct Topology {
    /// The proxy's service.
    pub proxy: &'static str,
    /// The replicas' services; each replica's id (`connected_replica`) starts with its name.
    pub replicas: [&'static str; 2],
    pub database: &'static str,
    /// The port a replica listens on in the compose stack (`BOTMOX_LISTEN`).
    pub replica_port: u16,
    /// The ports Caddy publishes (HTTP for the redirect and ACME, HTTPS).
    pub proxy_ports: [u16; 2],
    /// What health checks probe, in Caddy and in compose.
    pub health_path: &'static str,
    /// The Caddyfile both run, relative to `deploy/`.
    pub caddyfile: &'static str,
}

pub const TOPOLOGY: Topology = Topology {
    proxy: "caddy",
    replicas: ["botmox-1", "botmox-2"],
    database: "postgres",
    replica_port: 8080,
    proxy_ports: [80, 443],
    health_path: "/readyz",
    caddyfile: "Caddyfile.stack",
};

/// The bound of every wait for something that should happen within seconds.
pub const WAIT: Duration = Duration::from_secs(30);
pub const POLL: Duration = Duration::from_millis(50);
pub const PASSWORD: &str = "stack-admin-password";
/// Seconds a replica keeps serving after SIGTERM with `/readyz` at 503 (compose's value).
pub const SHUTDOWN_GRACE: &str = "2";

pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// One replica: its fixed address (Caddy knows it) and, while it runs, its process.
pub struct Replica {
    pub name: &'static str,
    pub addr: String,
    pub process: Option<ServerProcess>,
}

impl Replica {
    pub fn process(&self) -> anyhow::Result<&ServerProcess> {
        self.process.as_ref().with_context(|| format!("{} is not running", self.name))
    }
}

/// The whole stack: database, two replicas, Caddy, and an HTTPS client that trusts Caddy's CA.
pub struct Stack {
    pub db: TestDb,
    pub replicas: [Replica; 2],
    pub caddy: Caddy,
    /// The admin, through Caddy.
    pub api: Api,
    args: Vec<String>,
    _keys: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        botmox_e2e::init_test_logging();
        let db = TestDb::new(Backend::Postgres).await?;
        let keys = tempfile::tempdir()?;
        let key_file = keys.path().join("master.key");
        botmox_control_plane::secrets::vault::MasterKey::generate().write_new_file(&key_file)?;
        let replicas = TOPOLOGY.replicas.map(|name| Replica { name, addr: String::new(), process: None });
        let mut replicas = replicas;
        for replica in &mut replicas {
            replica.addr = format!("127.0.0.1:{}", free_port()?);
        }
        let caddy = Caddy::start(&replicas.iter().map(|r| r.addr.as_str()).collect::<Vec<_>>()).await?;
        let args = vec![
            "--database-url".into(),
            db.url_string(),
            "--master-key-file".into(),
            key_file.to_str().context("temp path")?.into(),
            "--public-url".into(),
            caddy.url(""),
            // Caddy connects from loopback; the client address is the hop it appends.
            "--trusted-proxies".into(),
            "127.0.0.1,::1".into(),
            "--heartbeat-interval".into(),
            "1".into(),
            // A command sent on a connection that closed before the agent read it comes back
            // when its lease ends: 5 s instead of 30 keeps the test short.
            "--command-lease".into(),
            "5".into(),
            // As in compose: SIGTERM → /readyz 503 for longer than Caddy's check interval.
            "--shutdown-grace".into(),
            SHUTDOWN_GRACE.into(),
        ];
        let api = Api { client: caddy.client()?, base: caddy.url(""), token: String::new() };
        let mut stack = Self { db, replicas, caddy, api, args, _keys: keys };
        // The first replica creates the schema and the admin (compose: botmox-2 waits for
        // botmox-1 to be healthy), and leads the supervisor.
        stack.start_replica(0).await?;
        stack.replica(0)?.stderr.wait_for("running the supervisor", WAIT).await?;
        stack.start_replica(1).await?;
        stack.caddy.wait_ready(&stack.api.client).await?;
        stack.api.token = stack.api.login().await?;
        Ok(stack)
    }

    pub fn replica(&self, i: usize) -> anyhow::Result<&ServerProcess> {
        self.replicas[i].process()
    }

    /// Starts replica `i` on its fixed address and waits until it is ready.
    pub async fn start_replica(&mut self, i: usize) -> anyhow::Result<()> {
        let replica = &mut self.replicas[i];
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env = [
            ("BOTMOX_ADMIN_PASSWORD", PASSWORD),
            ("HOSTNAME", replica.name),
            // Requests logged with their path and status: how the test sees Caddy's checks.
            ("RUST_LOG", "botmox_control_plane=info,botmox_control_plane::http::request_id=debug"),
        ];
        let process = ServerProcess::start_on(&replica.addr, &args, &env).await?;
        // Nobody but Caddy's health checker asks a replica for /readyz: once one answered
        // 200, Caddy sends it requests again. (An operator waits for "healthy" likewise
        // before restarting the next replica; with none healthy, Caddy 2.6 answers a POST
        // 503 at once instead of waiting for one.)
        let checked = format!("path={} status=200", TOPOLOGY.health_path);
        process
            .stderr
            .wait_for(&checked, WAIT)
            .await
            .with_context(|| format!("Caddy never found {} ready", replica.name))?;
        replica.process = Some(process);
        Ok(())
    }

    /// Which replica (index) holds the agent's connection, from `connected_replica`.
    pub async fn holder(&self, agent_id: &str) -> anyhow::Result<Option<usize>> {
        let agent = self.api.get(&format!("/api/v1/agents/{agent_id}")).await?;
        let replica = agent["connected_replica"].as_str().unwrap_or_default();
        Ok(TOPOLOGY.replicas.iter().position(|name| replica.starts_with(&format!("{name}-"))))
    }

    /// The same request straight to replica `i`, bypassing Caddy.
    pub fn direct(&self, i: usize, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(self.api.client.request(method, self.replica(i)?.url(path)).bearer_auth(&self.api.token))
    }

    /// Stops everything still running and drops the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        for replica in self.replicas {
            if let Some(process) = replica.process {
                process.terminate().await?;
            }
        }
        self.caddy.stop().await?;
        self.db.cleanup().await
    }
}

/// The admin's API through Caddy (cheap to clone into a task).
#[derive(Clone)]
pub struct Api {
    /// Trusts Caddy's internal CA; no cookie store.
    pub client: reqwest::Client,
    /// `https://localhost:<port>`.
    pub base: String,
    /// The admin's access token.
    pub token: String,
}

impl Api {
    async fn login(&self) -> anyhow::Result<String> {
        let login = json!({ "username": "admin", "password": PASSWORD });
        let (status, body) = send(self.client.post(format!("{}/api/v1/auth/login", self.base)).json(&login)).await?;
        anyhow::ensure!(status == 200, "login through Caddy answered {status}: {body}");
        Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// `GET path`, expecting 200.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = send(self.request(reqwest::Method::GET, path)).await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
        Ok(body)
    }

    /// `POST path`, expecting `expected`.
    pub async fn post(&self, path: &str, body: Value, expected: u16) -> anyhow::Result<Value> {
        let (status, answer) = send(self.request(reqwest::Method::POST, path).json(&body)).await?;
        anyhow::ensure!(status == expected, "POST {path} answered {status}, not {expected}: {answer}");
        Ok(answer)
    }

    /// Polls `GET path` (bounded) until `done` accepts the body.
    pub async fn wait_until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body = self.get(path).await?;
            if done(&body) {
                return Ok(body);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}; last: {body}");
            tokio::time::sleep(POLL).await;
        }
    }
}
