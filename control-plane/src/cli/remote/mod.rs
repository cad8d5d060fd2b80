//! The operator CLI (`botmox bots|agents|pair-code|incidents|commands …`): a thin client of the
//! REST API for people at a terminal and for scripts. It talks HTTP to `BOTMOX_URL` with the
//! API token in `BOTMOX_TOKEN` (or `--url`/`--token`), reads and writes the contract's types,
//! prints tables sized to the terminal, or the API's JSON with `--json`.
//!
//! Exit codes scripts can rely on ([`Exit`]): 0 ok, 1 any other failure (network, server),
//! 2 usage (bad arguments, a confirmation needed without a terminal, a 400/422 answer),
//! 3 not found, 4 conflict (e.g. the agent is draining or revoked), 5 authentication or
//! permission. An API error is one line on stderr: its `code`, `detail` and `hint`.

mod bots;
mod fleet;
mod table;

use std::{fmt, time::Duration};

use botmox_contract::{agents::Agent, problem::Problem};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

pub use bots::BotsCommand;
pub use fleet::{AgentsCommand, CommandsCommand, IncidentsCommand, PairCodeArgs};

/// Where the server is and who is asking; `--json` for scripts.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's base URL, e.g. `https://botmox.example.com`.
    #[arg(long, env = "BOTMOX_URL", global = true)]
    pub url: Option<String>,
    /// An API token (`bmx_…`; `botmox token create`, or the panel's API tokens page).
    #[arg(long, env = "BOTMOX_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client commands, each with the connection flags ([`ClientArgs`]).
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Bots: list, start/stop/restart (by name or id, or a filter), logs.
    Bots(Group<BotsCommand>),
    /// Agents (hosts): list, drain, undrain.
    Agents(Group<AgentsCommand>),
    /// Create a pairing code and print the command that pairs a host with it.
    PairCode {
        #[command(flatten)]
        args: PairCodeArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Incidents the supervisor opened.
    Incidents(Group<IncidentsCommand>),
    /// The command queue.
    Commands(Group<CommandsCommand>),
}

/// A group of client commands and the connection flags (given anywhere after the group).
#[derive(Debug, Args)]
pub struct Group<T: Subcommand> {
    #[command(subcommand)]
    command: T,
    #[command(flatten)]
    client: ClientArgs,
}

/// The process's exit code, by kind of outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    Error = 1,
    Usage = 2,
    NotFound = 3,
    Conflict = 4,
    Auth = 5,
}

/// A failure with its exit code; its message is the one line printed after `error: `.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into() }
    }

    /// The exit code of an answer's status.
    fn of_status(status: StatusCode) -> Exit {
        match status.as_u16() {
            401 | 403 => Exit::Auth,
            404 => Exit::NotFound,
            409 | 412 => Exit::Conflict,
            400 | 422 => Exit::Usage,
            _ => Exit::Error,
        }
    }

    /// An API error answer, as one line: `code: detail (field) — hint`.
    fn from_problem(status: StatusCode, problem: Option<Problem>) -> Self {
        let message = match problem {
            Some(p) => {
                let mut line = format!("{}: {}", p.code, p.detail);
                if let Some(field) = p.field {
                    line.push_str(&format!(" (field `{field}`)"));
                }
                if let Some(hint) = p.hint {
                    line.push_str(&format!(" — hint: {hint}"));
                }
                line
            }
            None => format!("the server answered {status}"),
        };
        Self::new(Self::of_status(status), message.replace(['\n', '\r'], " "))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub type CliResult<T> = Result<T, Failure>;

/// The API, as this CLI uses it.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    pub json: bool,
}

impl Client {
    pub fn new(args: &ClientArgs) -> CliResult<Self> {
        let url = args.url.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
            Failure::new(Exit::Usage, "no server: set BOTMOX_URL (or pass --url), e.g. https://botmox.example.com")
        })?;
        let token = args.token.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
            Failure::new(
                Exit::Usage,
                "no API token: set BOTMOX_TOKEN (or pass --token); `botmox token create` makes one",
            )
        })?;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Failure::new(Exit::Usage, format!("BOTMOX_URL `{url}` is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Failure::new(Exit::Usage, format!("BOTMOX_URL `{url}` must start with http:// or https://")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("botmox-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::new(Exit::Error, format!("cannot set up HTTP: {e}")))?;
        Ok(Self { http, base: url.trim_end_matches('/').to_owned(), token: token.to_owned(), json: args.json })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}/api/v1{path}", self.base)).bearer_auth(&self.token)
    }

    /// Sends, and turns any answer but a success into a [`Failure`].
    async fn send(&self, request: reqwest::RequestBuilder) -> CliResult<reqwest::Response> {
        let response = request.send().await.map_err(|e| {
            let what = if e.is_connect() { "cannot connect to" } else { "no answer from" };
            Failure::new(Exit::Error, format!("{what} {}: {}", self.base, crate::cli::one_line(&e.into())))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let problem = response.json::<Problem>().await.ok();
        Err(Failure::from_problem(status, problem))
    }

    async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> CliResult<T> {
        response.json().await.map_err(|e| Failure::new(Exit::Error, format!("unexpected answer from the server: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> CliResult<T> {
        Self::decode(self.send(self.request(Method::GET, path).query(query)).await?).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> CliResult<T> {
        Self::decode(self.send(self.request(Method::POST, path).json(body)).await?).await
    }

    /// A streaming GET (Server-Sent Events).
    pub async fn stream(&self, path: &str, query: &[(&str, String)]) -> CliResult<reqwest::Response> {
        self.send(self.request(Method::GET, path).query(query).header("accept", "text/event-stream")).await
    }

    /// Every agent of the tenant.
    pub async fn agents(&self) -> CliResult<Vec<Agent>> {
        self.get("/agents", &[]).await
    }

    /// The agent a name or id names.
    pub async fn agent(&self, name_or_id: &str) -> CliResult<Agent> {
        find_agent(&self.agents().await?, name_or_id).cloned()
    }

    /// Prints `value` as pretty JSON (the `--json` output).
    pub fn print_json(value: &impl Serialize) -> CliResult<()> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::new(Exit::Error, format!("cannot write JSON: {e}")))?;
        println!("{text}");
        Ok(())
    }
}

/// The agent of `agents` a name or id names.
pub fn find_agent<'a>(agents: &'a [Agent], name_or_id: &str) -> CliResult<&'a Agent> {
    let id = name_or_id.parse::<Uuid>().ok();
    agents
        .iter()
        .find(|a| Some(a.id) == id || a.name == name_or_id)
        .ok_or_else(|| Failure::new(Exit::NotFound, format!("no agent named `{name_or_id}`")))
}

/// Runs a client command.
pub async fn run(command: RemoteCommand) -> CliResult<()> {
    match command {
        RemoteCommand::Bots(Group { command, client }) => bots::run(&Client::new(&client)?, command).await,
        RemoteCommand::Agents(Group { command, client }) => fleet::agents(&Client::new(&client)?, command).await,
        RemoteCommand::PairCode { args, client } => fleet::pair_code(&Client::new(&client)?, args).await,
        RemoteCommand::Incidents(Group { command, client }) => fleet::incidents(&Client::new(&client)?, command).await,
        RemoteCommand::Commands(Group { command, client }) => fleet::commands(&Client::new(&client)?, command).await,
    }
}

/// A time as the tables show it.
pub fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}
