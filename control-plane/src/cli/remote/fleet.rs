//! `botmox agents ls|drain|undrain`, `pair-code`, `incidents ls`, `commands ls`.

use std::collections::HashMap;

use botmox_contract::{
    agents::{Agent, AgentDrain, CreatePairingCode, PairingCode},
    commands::{CommandList, CommandStatus},
    incidents::IncidentList,
    Labels,
};
use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{find_agent, table, when, CliResult, Client, Exit, Failure};

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents: status, presence, host, load.
    Ls,
    /// Drain an agent (name or id): stop its bots gracefully, refuse new starts on it.
    Drain { agent: String },
    /// Undrain an agent: it takes starts again and its bots that should run are started.
    Undrain { agent: String },
}

#[derive(Debug, Args)]
pub struct PairCodeArgs {
    /// The name the agent gets (default: its hostname).
    #[arg(long)]
    name: Option<String>,
    /// A label for the agent, `key=value` (repeat for several).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// How long the code works (default 15 minutes).
    #[arg(long)]
    ttl_seconds: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Open incidents, newest first (`--all` includes resolved ones).
    Ls {
        #[arg(long)]
        all: bool,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum CommandsCommand {
    /// Commands, newest first.
    Ls {
        /// Only commands in this status (queued, dispatched, running, succeeded, failed, …).
        #[arg(long, value_parser = parse_status)]
        status: Option<CommandStatus>,
        /// Only commands for this agent (name or id).
        #[arg(long)]
        agent: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn parse_status(value: &str) -> Result<CommandStatus, String> {
    CommandStatus::parse(value).ok_or_else(|| {
        let all: Vec<&str> = CommandStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("`{value}` is not a command status ({})", all.join(", "))
    })
}

pub async fn agents(client: &Client, command: AgentsCommand) -> CliResult<()> {
    let (agent, drain) = match command {
        AgentsCommand::Ls => return list_agents(client).await,
        AgentsCommand::Drain { agent } => (agent, true),
        AgentsCommand::Undrain { agent } => (agent, false),
    };
    let agent = client.agent(&agent).await?;
    let action = if drain { "drain" } else { "undrain" };
    let changed: AgentDrain = client.post(&format!("/agents/{}/{action}", agent.id), &serde_json::json!({})).await?;
    if client.json {
        return Client::print_json(&changed);
    }
    let what = if drain { "stop(s)" } else { "start(s)" };
    println!(
        "agent {}: {} ({} {what} queued)",
        changed.agent.name,
        changed.agent.status.as_str(),
        changed.commands.len()
    );
    Ok(())
}

async fn list_agents(client: &Client) -> CliResult<()> {
    let agents = client.agents().await?;
    if client.json {
        return Client::print_json(&agents);
    }
    let rows = agents.iter().map(agent_row).collect();
    table::print(
        &["NAME", "STATUS", "CONNECTED", "LAST SEEN", "HOST", "OS", "CPU", "MEM", "BOTS", "LABELS", "ID"],
        rows,
        "no agents: `botmox pair-code` makes a pairing code",
    );
    Ok(())
}

fn agent_row(a: &Agent) -> Vec<String> {
    let metrics = a.metrics.as_ref();
    let mem = metrics
        .filter(|m| m.memory_total_bytes > 0)
        .map(|m| format!("{:.0}%", m.memory_used_bytes as f64 * 100.0 / m.memory_total_bytes as f64));
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        a.name.clone(),
        a.status.as_str().to_owned(),
        if a.connected_replica.is_some() { "yes" } else { "no" }.to_owned(),
        a.last_seen_at.map(when).unwrap_or_else(|| "never".into()),
        a.hostname.clone(),
        format!("{}/{}", a.os, a.arch),
        metrics.map(|m| format!("{:.0}%", m.cpu_percent)).unwrap_or_default(),
        mem.unwrap_or_default(),
        metrics.map(|m| m.bots_running.to_string()).unwrap_or_default(),
        labels.join(","),
        a.id.to_string(),
    ]
}

pub async fn pair_code(client: &Client, args: PairCodeArgs) -> CliResult<()> {
    let mut labels = Labels::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| Failure::new(Exit::Usage, format!("--label `{label}`: expected KEY=VALUE")))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    let body = CreatePairingCode { name: args.name, labels, ttl_seconds: args.ttl_seconds };
    let code: PairingCode = client.post("/agents/pairing-codes", &body).await?;
    if client.json {
        return Client::print_json(&code);
    }
    println!("pairing code: {} (single use, expires {} UTC)", code.code, when(code.expires_at));
    println!("on the host, run:");
    println!("  {}", code.command_line);
    Ok(())
}

pub async fn incidents(client: &Client, command: IncidentsCommand) -> CliResult<()> {
    let IncidentsCommand::Ls { all, limit } = command;
    let mut query = vec![("limit", limit.to_string())];
    if !all {
        query.push(("open", "true".into()));
    }
    let list: IncidentList = client.get("/incidents", &query).await?;
    if client.json {
        return Client::print_json(&list);
    }
    let rows = list
        .items
        .iter()
        .map(|i| {
            let status = match (i.resolved_at, i.acknowledged_at) {
                (Some(_), _) => "resolved",
                (None, Some(_)) => "acknowledged",
                (None, None) => "open",
            };
            vec![
                when(i.opened_at),
                i.severity.as_str().to_owned(),
                i.kind.as_str().to_owned(),
                status.to_owned(),
                i.count.to_string(),
                i.message.clone(),
                i.id.to_string(),
            ]
        })
        .collect();
    let empty = if all { "no incidents" } else { "no open incidents" };
    table::print(&["OPENED", "SEVERITY", "KIND", "STATUS", "COUNT", "MESSAGE", "ID"], rows, empty);
    Ok(())
}

pub async fn commands(client: &Client, command: CommandsCommand) -> CliResult<()> {
    let CommandsCommand::Ls { status, agent, limit } = command;
    let agents = client.agents().await?;
    let mut query = vec![("limit", limit.to_string())];
    if let Some(status) = status {
        query.push(("status", status.as_str().into()));
    }
    if let Some(agent) = agent {
        query.push(("agent_id", find_agent(&agents, &agent)?.id.to_string()));
    }
    let list: CommandList = client.get("/commands", &query).await?;
    if client.json {
        return Client::print_json(&list);
    }
    let names: HashMap<Uuid, &str> = agents.iter().map(|a| (a.id, a.name.as_str())).collect();
    let rows = list
        .items
        .iter()
        .map(|c| {
            vec![
                when(c.created_at),
                c.kind.as_str().to_owned(),
                c.status.as_str().to_owned(),
                names.get(&c.agent_id).map_or_else(|| c.agent_id.to_string(), |n| (*n).to_owned()),
                c.bot_id.map(|b| b.to_string()).unwrap_or_default(),
                c.created_by.kind.as_str().to_owned(),
                c.error.clone().unwrap_or_default(),
                c.id.to_string(),
            ]
        })
        .collect();
    table::print(&["CREATED", "KIND", "STATUS", "AGENT", "BOT", "BY", "ERROR", "ID"], rows, "no commands");
    Ok(())
}

/// The `data` of Server-Sent Events, from chunks as they arrive (only what a log follow
/// needs: events are separated by a blank line, `data:` lines joined; ids, names and
/// comments are ignored). Small enough not to need a crate.
#[derive(Default)]
pub struct SseData {
    buffer: String,
    data: Vec<String>,
}

impl SseData {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::SseData;

    #[test]
    fn data_of_events_split_across_chunks() {
        let mut sse = SseData::default();
        assert!(sse.push(b": keep-alive\n\nid: 1\nevent: log\nda").is_empty());
        assert_eq!(sse.push(b"ta: {\"a\":1}\r\n\r\ndata: x\ndata:y\n\n"), ["{\"a\":1}", "x\ny"]);
    }
}
