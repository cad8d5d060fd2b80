//! `botmox bots ls|start|stop|restart|logs`.

use std::{
    collections::HashMap,
    io::{BufRead, IsTerminal, Write},
};

use botmox_contract::{
    bots::{Bot, BotList, BotState, DesiredState},
    commands::{BotAction, BotSelector, BulkAccepted, BulkAction, CommandAccepted},
    logs::LogLine,
};
use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{find_agent, table, CliResult, Client, Exit, Failure};

#[derive(Debug, Subcommand)]
pub enum BotsCommand {
    /// List bots (every page), by name.
    Ls(ListArgs),
    /// Start bots (they should run from now on).
    Start(ActionArgs),
    /// Stop bots (they should stay stopped).
    Stop(ActionArgs),
    /// Restart bots.
    Restart(ActionArgs),
    /// A bot's log (the last lines), or with `-f` its live log.
    Logs(LogsArgs),
}

/// Which bots: the same filters as `GET /bots`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only bots in this observed state (running, stopped, crashed, failed, …).
    #[arg(long, value_parser = parse_state)]
    state: Option<BotState>,
    /// Only bots on this agent (name or id).
    #[arg(long)]
    agent: Option<String>,
    /// Only bots with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only bots whose name contains this (case-insensitive).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Bots by name or id (each gets its own command).
    #[arg(conflicts_with_all = ["filter", "all"])]
    bots: Vec<String>,
    /// Every bot matching these, as one bulk action: `state=crashed`, `agent=vm-1`, `tag=eu`,
    /// `name=farm` (repeat to combine).
    #[arg(long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Every bot of the tenant, as one bulk action.
    #[arg(long)]
    all: bool,
    /// Do not ask for confirmation (needed for a bulk action without a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Only count what the bulk action would do.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The bot (name or id).
    bot: String,
    /// Keep following new lines until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// How many of the last lines (1 to 5000).
    #[arg(long, short = 'n', default_value_t = 200)]
    lines: u32,
}

fn parse_state(value: &str) -> Result<BotState, String> {
    BotState::parse(value).ok_or_else(|| {
        let all: Vec<&str> = BotState::ALL.iter().map(|s| s.as_str()).collect();
        format!("`{value}` is not a bot state ({})", all.join(", "))
    })
}

pub async fn run(client: &Client, command: BotsCommand) -> CliResult<()> {
    match command {
        BotsCommand::Ls(args) => list(client, args).await,
        BotsCommand::Start(args) => act(client, BotAction::Start, args).await,
        BotsCommand::Stop(args) => act(client, BotAction::Stop, args).await,
        BotsCommand::Restart(args) => act(client, BotAction::Restart, args).await,
        BotsCommand::Logs(args) => logs(client, args).await,
    }
}

/// Every page of `GET /bots` with these filters.
async fn all_bots(client: &Client, filters: &[(&str, String)]) -> CliResult<Vec<Bot>> {
    let mut bots = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = filters.to_vec();
        query.push(("limit", "500".into()));
        if let Some(cursor) = cursor.take() {
            query.push(("cursor", cursor));
        }
        let page: BotList = client.get("/bots", &query).await?;
        bots.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(bots),
        }
    }
}

async fn list(client: &Client, args: ListArgs) -> CliResult<()> {
    let agents = client.agents().await?;
    let mut filters = Vec::new();
    if let Some(state) = args.state {
        filters.push(("state", state.as_str().to_owned()));
    }
    if let Some(agent) = &args.agent {
        filters.push(("agent_id", find_agent(&agents, agent)?.id.to_string()));
    }
    if let Some(tag) = args.tag {
        filters.push(("tag", tag));
    }
    if let Some(name) = args.name {
        filters.push(("name", name));
    }
    let bots = all_bots(client, &filters).await?;
    if client.json {
        return Client::print_json(&bots);
    }
    let names: HashMap<Uuid, &str> = agents.iter().map(|a| (a.id, a.name.as_str())).collect();
    let rows = bots
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.state.as_str().to_owned(),
                desired(b.desired_state).to_owned(),
                names.get(&b.agent_id).map_or_else(|| b.agent_id.to_string(), |n| (*n).to_owned()),
                b.pid.map(|p| p.to_string()).unwrap_or_default(),
                b.restart_count.to_string(),
                b.tags.join(","),
                b.id.to_string(),
            ]
        })
        .collect();
    table::print(&["NAME", "STATE", "DESIRED", "AGENT", "PID", "RESTARTS", "TAGS", "ID"], rows, "no bots");
    Ok(())
}

/// The bot a name or id names (an exact name: `GET /bots?name=` matches substrings).
async fn resolve(client: &Client, name_or_id: &str) -> CliResult<Uuid> {
    if let Ok(id) = name_or_id.parse::<Uuid>() {
        return Ok(id);
    }
    let matches = all_bots(client, &[("name", name_or_id.to_owned())]).await?;
    matches
        .into_iter()
        .find(|b| b.name == name_or_id)
        .map(|b| b.id)
        .ok_or_else(|| Failure::new(Exit::NotFound, format!("no bot named `{name_or_id}`")))
}

fn desired(state: DesiredState) -> &'static str {
    match state {
        DesiredState::Running => "running",
        DesiredState::Stopped => "stopped",
    }
}

fn verb(action: BotAction) -> &'static str {
    match action {
        BotAction::Start => "start",
        BotAction::Stop => "stop",
        BotAction::Restart => "restart",
    }
}

async fn act(client: &Client, action: BotAction, args: ActionArgs) -> CliResult<()> {
    if !args.bots.is_empty() {
        if args.dry_run {
            return Err(Failure::new(Exit::Usage, "--dry-run counts a bulk action: use it with --filter or --all"));
        }
        return each(client, action, &args.bots).await;
    }
    if args.filter.is_empty() && !args.all {
        return Err(Failure::new(Exit::Usage, "name the bots, or select them with --filter KEY=VALUE or --all"));
    }
    bulk(client, action, args).await
}

/// One command per named bot; goes on after a failure and exits with the first one's code.
async fn each(client: &Client, action: BotAction, names: &[String]) -> CliResult<()> {
    let mut first_failure: Option<Failure> = None;
    let mut answers = Vec::new();
    for name in names {
        let outcome = match resolve(client, name).await {
            Ok(id) => {
                client.post::<CommandAccepted>(&format!("/bots/{id}/{}", verb(action)), &serde_json::json!({})).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(accepted) if client.json => answers.push(accepted),
            Ok(accepted) => println!("{name}: {} queued ({})", verb(action), accepted.message),
            Err(e) => {
                eprintln!("error: {name}: {e}");
                first_failure.get_or_insert(e);
            }
        }
    }
    if client.json {
        Client::print_json(&answers)?;
    }
    match first_failure {
        // Already printed: the caller prints nothing more, the exit code tells.
        Some(e) => Err(Failure::new(e.exit, String::new())),
        None => Ok(()),
    }
}

fn selector(client_filters: &[String], agents: &[botmox_contract::agents::Agent]) -> CliResult<BotSelector> {
    let mut selector = BotSelector::default();
    for filter in client_filters {
        let (key, value) = filter
            .split_once('=')
            .ok_or_else(|| Failure::new(Exit::Usage, format!("--filter `{filter}`: expected KEY=VALUE")))?;
        match key {
            "state" => selector.state = Some(parse_state(value).map_err(|e| Failure::new(Exit::Usage, e))?),
            "agent" => selector.agent_id = Some(find_agent(agents, value)?.id),
            "tag" => selector.tag = Some(value.to_owned()),
            "name" => selector.name = Some(value.to_owned()),
            other => {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("--filter key `{other}`: expected state, agent, tag or name"),
                ))
            }
        }
    }
    Ok(selector)
}

async fn bulk(client: &Client, action: BotAction, args: ActionArgs) -> CliResult<()> {
    let agents = if args.filter.iter().any(|f| f.starts_with("agent=")) { client.agents().await? } else { Vec::new() };
    let filter = selector(&args.filter, &agents)?;
    let body = |dry_run| BulkAction { action, ids: None, filter: Some(filter.clone()), dry_run };
    let dry: BulkAccepted = client.post("/bots/actions", &body(true)).await?;
    if args.dry_run || dry.accepted == 0 {
        return report(client, &dry);
    }
    if !args.yes {
        confirm(&format!("{} {} bot(s)?", verb(action), dry.accepted))?;
    }
    let done: BulkAccepted = client.post("/bots/actions", &body(false)).await?;
    report(client, &done)
}

/// What a bulk action did (or would do): the API's JSON, or a few lines.
fn report(client: &Client, outcome: &BulkAccepted) -> CliResult<()> {
    if client.json {
        return Client::print_json(outcome);
    }
    summary(outcome);
    Ok(())
}

/// What a bulk action did (or would do), in a few lines.
fn summary(outcome: &BulkAccepted) {
    let verb = verb(outcome.action);
    if outcome.dry_run {
        println!("would {verb} {} of {} matching bot(s)", outcome.accepted, outcome.matched);
    } else {
        let batch = outcome.batch_id.map(|b| format!(" (batch {b})")).unwrap_or_default();
        println!("{verb} queued for {} of {} matching bot(s){batch}", outcome.accepted, outcome.matched);
    }
    for skipped in &outcome.skipped {
        println!("  skipped {}: {} ({})", skipped.count, skipped.detail, skipped.reason);
    }
}

/// Asks on the terminal; without one, refuses (a script must say `--yes`).
fn confirm(question: &str) -> CliResult<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            Exit::Usage,
            format!("{question} — refusing to ask without a terminal: pass --yes to go ahead"),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(Exit::Error, format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new(Exit::Error, "cancelled: nothing was changed"))
    }
}

async fn logs(client: &Client, args: LogsArgs) -> CliResult<()> {
    if !(1..=5000).contains(&args.lines) {
        return Err(Failure::new(Exit::Usage, "--lines must be 1 to 5000"));
    }
    let id = resolve(client, &args.bot).await?;
    let path = format!("/bots/{id}/logs");
    let limit = ("limit", args.lines.to_string());
    if !args.follow {
        let lines: Vec<LogLine> = client.get(&path, &[limit]).await?;
        if client.json {
            return Client::print_json(&lines);
        }
        for line in &lines {
            print_line(line, false);
        }
        return Ok(());
    }
    let mut response = client.stream(&path, &[limit, ("follow", "true".into())]).await?;
    let mut parser = super::fleet::SseData::default();
    loop {
        let chunk =
            response.chunk().await.map_err(|e| Failure::new(Exit::Error, format!("the log stream broke: {e}")))?;
        let Some(chunk) = chunk else {
            return Err(Failure::new(
                Exit::Error,
                "the server ended the log stream (restarting, or the bot was deleted)",
            ));
        };
        for data in parser.push(&chunk) {
            match serde_json::from_str::<LogLine>(&data) {
                Ok(line) => print_line(&line, client.json),
                Err(e) => tracing::debug!(error = %e, "not a log line"),
            }
        }
    }
}

fn print_line(line: &LogLine, json: bool) {
    if json {
        println!("{}", serde_json::to_string(line).unwrap_or_default());
    } else {
        println!("{}", line.text);
    }
}
