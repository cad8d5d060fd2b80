//! The real Caddy (Debian's `caddy`) running `deploy/Caddyfile.stack` as shipped: the test sets
//! only the file's `{$…}` placeholders (ports, host name `localhost`, the replicas' addresses).
//! Its data and config dirs are a temp dir, so its internal CA (whose root the agents and the
//! test's client trust) is made fresh per run, and `skip_install_trust` in the file keeps it
//! out of the machine's trust store.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context as _;
use botmox_e2e::server::{free_port, Lines};
use tokio::process::{Child, Command};

use crate::{deploy_dir, TOPOLOGY, WAIT};

pub struct Caddy {
    child: Child,
    pub https_port: u16,
    pub stderr: Lines,
    home: tempfile::TempDir,
}

impl Caddy {
    /// Starts `caddy run` with `upstreams` as the replicas; returns once it runs (the
    /// certificate and readiness are [`Caddy::wait_ready`]'s).
    pub async fn start(upstreams: &[&str]) -> anyhow::Result<Self> {
        let caddy = std::env::var("CADDY").unwrap_or_else(|_| "caddy".into());
        let home = tempfile::tempdir()?;
        let https_port = free_port()?;
        let config = deploy_dir().join(TOPOLOGY.caddyfile);
        let mut command = Command::new(&caddy);
        command.args(["run", "--adapter", "caddyfile", "--config"]).arg(&config);
        command
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("BOTMOX_DOMAIN", "localhost")
            .env("CADDY_HTTP_PORT", free_port()?.to_string())
            .env("CADDY_HTTPS_PORT", https_port.to_string())
            .env("CADDY_ADMIN", format!("127.0.0.1:{}", free_port()?));
        for (i, upstream) in upstreams.iter().enumerate() {
            command.env(format!("BOTMOX_UPSTREAM_{}", i + 1), upstream);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().with_context(|| {
            format!("cannot run `{caddy}`: `cargo xtask test` installs Debian's caddy (or `apt-get install caddy`)")
        })?;
        let stderr = Lines::default();
        stderr.spawn_reader(child.stderr.take().context("no stderr")?);
        stderr.wait_for("serving initial configuration", WAIT).await.context("Caddy did not start")?;
        Ok(Self { child, https_port, stderr, home })
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }

    /// The root certificate of Caddy's internal CA (written on start).
    pub fn root_cert(&self) -> PathBuf {
        self.home.path().join("data/caddy/pki/authorities/local/root.crt")
    }

    /// An HTTPS client that trusts Caddy's internal CA (and nothing else needed).
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let pem = std::fs::read(self.root_cert()).context("Caddy wrote no root certificate")?;
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// Waits (bounded) until a replica answers `/readyz` through Caddy over HTTPS.
    pub async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let answer = client.get(self.url(TOPOLOGY.health_path)).send().await;
            match answer {
                Ok(response) if response.status() == 200 => return Ok(()),
                other if tokio::time::Instant::now() > deadline => {
                    anyhow::bail!(
                        "no ready replica through Caddy within {WAIT:?}: {other:?}; {:?}",
                        self.stderr.snapshot()
                    )
                }
                _ => tokio::time::sleep(crate::POLL).await,
            }
        }
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
