//! Making sure the Postgres that tests and benchmarks use is up: read `BOTMOX_TEST_PG_URL`,
//! probe the server (`pg_isready` when installed, else a TCP connect), start a local Debian
//! cluster with `pg_ctlcluster` when it is down, and wait (bounded) until it accepts
//! connections. Nothing here speaks the Postgres protocol; that is the tests' job.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

pub const URL_VAR: &str = "BOTMOX_TEST_PG_URL";
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long to wait for a just-started (or still starting) server.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where Debian's postgresql-common keeps one directory per installed major version.
const DEBIAN_CLUSTERS: &str = "/etc/postgresql";

/// Ensures the test Postgres is reachable, starting a local cluster if needed, and returns
/// the URL that children should get in `BOTMOX_TEST_PG_URL`.
pub fn ensure_running() -> Result<String> {
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => DEFAULT_URL.to_owned(),
    };
    let endpoint = Endpoint::parse(&url).with_context(|| format!("{URL_VAR}={} is not usable", redact(&url)))?;

    if endpoint.is_ready() {
        println!("Postgres is up at {endpoint} ({URL_VAR}={})", redact(&url));
        return Ok(url);
    }

    if !endpoint.is_local() {
        bail!(
            "Postgres is not reachable at {endpoint} ({URL_VAR}={}); \
             start that server or point {URL_VAR} at one that runs",
            redact(&url)
        );
    }
    let Some(pg_ctlcluster) = cmd::find_on_path("pg_ctlcluster") else {
        bail!(
            "Postgres is not running at {endpoint} and pg_ctlcluster is not installed to start it; \
             start Postgres yourself or set {URL_VAR} to a running server"
        );
    };

    println!("Postgres is not running at {endpoint}; starting the local cluster");
    // A failed start is not fatal yet: "cluster is already running" also fails while the
    // server is still coming up, so the readiness poll below has the last word.
    let start_error = start_local_cluster(&pg_ctlcluster).err();
    if let Some(err) = &start_error {
        println!("warning: {err:#}");
    }

    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if endpoint.is_ready() {
            println!("Postgres is up at {endpoint}");
            return Ok(url);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let cause = start_error.map_or(String::new(), |e| format!(" (start attempt: {e:#})"));
    bail!(
        "Postgres did not become ready at {endpoint} within {}s{cause}; \
         check `pg_lsclusters` and the server log under /var/log/postgresql",
        READY_TIMEOUT.as_secs()
    )
}

/// Starts the `main` cluster of the newest installed major version, as
/// `pg_ctlcluster --skip-systemctl-redirect <version> main start` (no systemd in
/// containers), retrying through `sudo -n` when we are not allowed to do it directly.
fn start_local_cluster(pg_ctlcluster: &Path) -> Result<()> {
    let version = newest_cluster_version(Path::new(DEBIAN_CLUSTERS))?;
    let args = ["--skip-systemctl-redirect", version.as_str(), "main", "start"];

    let mut direct = Command::new(pg_ctlcluster);
    direct.args(args);
    let direct_result = cmd::run(&mut direct);
    if direct_result.is_ok() {
        return Ok(());
    }
    if cmd::find_on_path("sudo").is_some() {
        let mut via_sudo = Command::new("sudo");
        via_sudo.arg("-n").arg(pg_ctlcluster).args(args);
        if cmd::run(&mut via_sudo).is_ok() {
            return Ok(());
        }
    }
    direct_result
}

/// The highest version directory under `/etc/postgresql` that has a `main` cluster.
fn newest_cluster_version(root: &Path) -> Result<String> {
    let entries = std::fs::read_dir(root).with_context(|| format!("no Postgres clusters in {}", root.display()))?;
    let mut versions: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("main").is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    versions.sort_by_key(|v| version_key(v));
    versions.pop().with_context(|| format!("no `main` Postgres cluster under {}", root.display()))
}

/// "9.6" < "15" < "16": compare numerically, part by part.
fn version_key(version: &str) -> Vec<u32> {
    version.split('.').map(|part| part.parse().unwrap_or(0)).collect()
}

/// Host and port of a `postgres://` URL: all we need to probe it.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .context("expected a URL starting with postgres:// or postgresql://")?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);

        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            // IPv6 literal: [::1]:5432
            let (host, after) = bracketed.split_once(']').context("unterminated [ in the host")?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() => p.parse().with_context(|| format!("bad port `{p}`"))?,
            _ => 5432,
        };
        // No host means a Unix socket to libpq; for probing, the loopback TCP port will do.
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok(Self { host: host.to_owned(), port })
    }

    fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "127.0.0.1" | "localhost" | "::1")
    }

    /// `pg_isready` knows the difference between "starting up" and "accepting
    /// connections"; a bare TCP connect is the fallback where it is not installed.
    fn is_ready(&self) -> bool {
        if cmd::find_on_path("pg_isready").is_some() {
            let mut probe = Command::new("pg_isready");
            probe
                .args(["-h", &self.host, "-p", &self.port.to_string()])
                .args(["-t", &CONNECT_TIMEOUT.as_secs().to_string()]);
            return cmd::succeeds_quietly(&mut probe);
        }
        let Ok(addrs) = (self.host.as_str(), self.port).to_socket_addrs() else {
            return false;
        };
        addrs.into_iter().any(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The URL with any password replaced by `***`, fit for printing.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, port: u16) -> Endpoint {
        Endpoint { host: host.to_owned(), port }
    }

    #[test]
    fn parses_the_default_url() {
        assert_eq!(Endpoint::parse(DEFAULT_URL).ok(), Some(endpoint("127.0.0.1", 5432)));
    }

    #[test]
    fn parses_password_port_and_query() {
        let parsed = Endpoint::parse("postgresql://u:p@w@db.example:6543/x?sslmode=disable");
        assert_eq!(parsed.ok(), Some(endpoint("db.example", 6543)));
    }

    #[test]
    fn parses_ipv6_and_missing_port() {
        assert_eq!(Endpoint::parse("postgres://[::1]:5433/db").ok(), Some(endpoint("::1", 5433)));
        assert_eq!(Endpoint::parse("postgres://localhost").ok(), Some(endpoint("localhost", 5432)));
        assert_eq!(Endpoint::parse("postgres:///db").ok(), Some(endpoint("127.0.0.1", 5432)));
    }

    #[test]
    fn rejects_other_schemes_and_bad_ports() {
        assert!(Endpoint::parse("mysql://localhost/db").is_err());
        assert!(Endpoint::parse("postgres://localhost:abc/db").is_err());
    }

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(redact("postgres://u:secret@h:1/db"), "postgres://u:***@h:1/db");
        assert_eq!(redact(DEFAULT_URL), DEFAULT_URL);
    }

    #[test]
    fn orders_versions_numerically() {
        let mut versions = vec!["15", "9.6", "16", "10"];
        versions.sort_by_key(|v| version_key(v));
        assert_eq!(versions, ["9.6", "10", "15", "16"]);
    }
}
