//! `botmox-agent status`, and the local status endpoint it reads.
//!
//! The running agent answers `GET /status` on a loopback port (its address is written to
//! `status.addr` in the agent dir) with a [`StatusReport`]: connection, server, bots, last
//! errors. `status` asks it; when no agent runs, it prints the same from the state file. The
//! tray reads the same endpoint when a service instance runs, instead of starting a second
//! agent. Loopback only,
//! read-only, and nothing secret in it; a hand-written HTTP/1.1 answer because one GET does not
//! justify an HTTP server dependency.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use uuid::Uuid;

use crate::{
    bots::Bots,
    commands::Commands,
    config::Credentials,
    connection::Link,
    paths::AgentDir,
    state_file::{ErrorNote, StateFile},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// `true` when this came from the running agent, `false` from the files it left.
    pub live: bool,
    pub agent_id: Option<Uuid>,
    pub server: Option<String>,
    /// `connecting`, `connected`, `disconnected`, `paused`, `revoked`, or `not running`.
    pub connection: String,
    pub transport: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub last_connection_error: Option<String>,
    pub agent_pid: Option<u32>,
    pub draining: bool,
    pub frames_buffered: usize,
    pub log_lines_dropped: u64,
    pub bots: Vec<BotStatus>,
    pub last_errors: Vec<ErrorNote>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotStatus {
    pub id: Uuid,
    pub name: String,
    pub state: String,
    pub desired: String,
    pub pid: Option<u32>,
    pub restart_count: u32,
    pub last_error: Option<String>,
}

/// What the running agent reports.
pub struct Reporter {
    pub link: Arc<Link>,
    pub bots: Arc<Bots>,
    pub commands: Arc<Commands>,
    pub state: Arc<StateFile>,
    pub agent_id: Uuid,
}

impl Reporter {
    pub fn report(&self) -> StatusReport {
        let link = self.link.status();
        let bots = self
            .bots
            .views()
            .into_iter()
            .map(|(id, view)| BotStatus {
                id,
                name: view.name,
                state: view.state.as_str().into(),
                desired: desired_str(view.desired).into(),
                pid: view.pid,
                restart_count: view.restart_count,
                last_error: view.last_error,
            })
            .collect();
        StatusReport {
            live: true,
            agent_id: Some(self.agent_id),
            server: Some(self.link.server()),
            connection: link.state.into(),
            transport: link.transport.map(Into::into),
            since: Some(link.since),
            last_connection_error: link.last_error,
            agent_pid: Some(std::process::id()),
            draining: self.commands.is_draining(),
            frames_buffered: self.link.outbox.len(),
            log_lines_dropped: self.link.outbox.dropped_logs(),
            bots,
            last_errors: self.state.snapshot().last_errors,
        }
    }
}

fn desired_str(desired: botmox_contract::bots::DesiredState) -> &'static str {
    match desired {
        botmox_contract::bots::DesiredState::Running => "running",
        botmox_contract::bots::DesiredState::Stopped => "stopped",
    }
}

/// Binds the endpoint and records its address in the agent dir.
pub async fn bind(dir: &AgentDir, listen: SocketAddr) -> anyhow::Result<TcpListener> {
    anyhow::ensure!(listen.ip().is_loopback(), "the status endpoint listens on loopback only, not {listen}");
    let listener = TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    crate::config::write_private(&dir.status_addr(), addr.to_string().as_bytes())?;
    Ok(listener)
}

/// Answers status requests until the task is dropped.
pub async fn serve(listener: TcpListener, reporter: Arc<Reporter>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let reporter = reporter.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &reporter)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, reporter: &Reporter) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let (status, body) = if head.starts_with("GET /status ") {
        ("200 OK", serde_json::to_string(&reporter.report()).unwrap_or_default())
    } else {
        ("404 Not Found", "{\"error\":\"only GET /status\"}".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Asks the running agent of `dir`, if one answers.
pub async fn fetch(dir: &AgentDir) -> Option<StatusReport> {
    let addr = std::fs::read_to_string(dir.status_addr()).ok()?;
    let addr: SocketAddr = addr.trim().parse().ok()?;
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(3), exchange).await.ok().flatten()
}

/// The status from the files a stopped agent left.
pub fn from_files(dir: &AgentDir) -> anyhow::Result<StatusReport> {
    let credentials = Credentials::load(&dir.credentials())?;
    let doc = StateFile::read(&dir.state())?;
    let bots = doc
        .bots
        .iter()
        .map(|(id, record)| BotStatus {
            id: *id,
            name: record.spec.name.clone(),
            state: record.state.as_str().into(),
            desired: desired_str(record.desired).into(),
            pid: record.process.as_ref().map(|p| p.pid),
            restart_count: record.restart_count,
            last_error: record.last_error.clone(),
        })
        .collect();
    Ok(StatusReport {
        live: false,
        agent_id: credentials.as_ref().map(|c| c.agent_id),
        server: credentials.map(|c| c.server),
        connection: "not running".into(),
        transport: None,
        since: None,
        last_connection_error: None,
        agent_pid: None,
        draining: false,
        frames_buffered: 0,
        log_lines_dropped: 0,
        bots,
        last_errors: doc.last_errors,
    })
}

/// The report for a person.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let server = report.server.as_deref().unwrap_or("(not paired)");
    match report.agent_id {
        Some(id) => out.push_str(&format!("agent       {id}\nserver      {server}\n")),
        None => out.push_str("agent       not paired\n"),
    }
    let mut connection = report.connection.clone();
    if let Some(transport) = &report.transport {
        connection.push_str(&format!(" ({transport})"));
    }
    if let Some(since) = report.since {
        connection.push_str(&format!(" since {}", since.format("%Y-%m-%d %H:%M:%S UTC")));
    }
    if let Some(pid) = report.agent_pid {
        connection.push_str(&format!(", agent pid {pid}"));
    }
    out.push_str(&format!("connection  {connection}\n"));
    if let Some(error) = &report.last_connection_error {
        out.push_str(&format!("            last: {error}\n"));
    }
    if report.draining {
        out.push_str("draining    yes: no new starts\n");
    }
    if report.frames_buffered > 0 || report.log_lines_dropped > 0 {
        out.push_str(&format!(
            "buffered    {} frames waiting for the server, {} log lines dropped\n",
            report.frames_buffered, report.log_lines_dropped
        ));
    }
    let running = report.bots.iter().filter(|b| b.pid.is_some()).count();
    out.push_str(&format!("bots        {} ({running} running)\n", report.bots.len()));
    for bot in &report.bots {
        let pid = bot.pid.map(|p| format!("pid {p}")).unwrap_or_default();
        out.push_str(&format!("  {:<24} {:<9} {:<10} restarts {}", bot.name, bot.state, pid, bot.restart_count));
        if let Some(error) = &bot.last_error {
            out.push_str(&format!("  error: {error}"));
        }
        out.push('\n');
    }
    if !report.last_errors.is_empty() {
        out.push_str("last errors\n");
        for note in report.last_errors.iter().rev().take(5) {
            out.push_str(&format!("  {} {}\n", note.at.format("%Y-%m-%d %H:%M:%S"), note.message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bots_and_errors() {
        let report = StatusReport {
            live: true,
            agent_id: Some(Uuid::nil()),
            server: Some("https://botmox.example".into()),
            connection: "connected".into(),
            transport: Some("websocket".into()),
            since: Some(Utc::now()),
            last_connection_error: None,
            agent_pid: Some(7),
            draining: false,
            frames_buffered: 0,
            log_lines_dropped: 0,
            bots: vec![BotStatus {
                id: Uuid::nil(),
                name: "farmer-eu-01".into(),
                state: "failed".into(),
                desired: "running".into(),
                pid: None,
                restart_count: 5,
                last_error: Some("crash loop".into()),
            }],
            last_errors: vec![ErrorNote { at: Utc::now(), message: "revoked".into() }],
        };
        let text = render(&report);
        assert!(text.contains("connection  connected (websocket)"), "{text}");
        assert!(text.contains("farmer-eu-01") && text.contains("error: crash loop"), "{text}");
        assert!(text.contains("last errors") && text.contains("revoked"), "{text}");
    }
}
