//! `botmox-agent`: the small program that runs on every host of a botmox fleet (SPEC §5).
//!
//! It pairs with the control plane (`pair`), keeps one WebSocket open to it (HTTP long-poll
//! where proxies break WebSockets), receives commands, runs each bot as a local process in its
//! own process group, supervises it locally (restart policy, backoff, crash-loop `failed`)
//! even while the server is unreachable, re-adopts its bots after its own restart, and reports
//! states, exit codes, logs and host metrics back. `run` is the headless mode a service uses.
//!
//! Module map: [`paths`] (the agent dir), [`config`] (credentials, private atomic writes),
//! [`pair`], [`run`] (the life of `run`), [`connection`] (WebSocket, long-poll, the outbox),
//! [`commands`] (ack/execute/result with the [`journal`]), [`bots`] (one task per bot;
//! [`transitions`], the durable outbox of their state reports),
//! [`supervise`] (the restart state machine), [`runner`] (processes, groups, output capture),
//! [`state_file`], [`status`], [`metrics`], [`logging`], [`tls`], [`exec`], [`host`],
//! [`service`] (systemd unit / Windows logon task), `tray` (feature `tray`: the desktop icon).
//!
//! Exit codes: 0 done, 1 failed (one line on stderr says why), 2 not available in this
//! build, 3 revoked by the server.

mod bots;
mod commands;
mod config;
mod connection;
mod exec;
mod host;
mod journal;
mod logging;
mod metrics;
mod pair;
mod paths;
mod run;
mod runner;
mod service;
mod state_file;
mod status;
mod supervise;
mod tls;
mod transitions;
#[cfg(feature = "tray")]
mod tray;
#[cfg(windows)]
mod win32;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::{connection::TransportMode, paths::AgentDir};

#[derive(Debug, Parser)]
#[command(
    name = "botmox-agent",
    version,
    about = "The botmox host agent: runs and supervises bots for a botmox server."
)]
struct Cli {
    /// Directory for credentials, state, journal and logs [default: ~/.config/botmox, %APPDATA%\botmox]
    #[arg(long, global = true, env = "BOTMOX_AGENT_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Pair this host with a botmox server using a one-time pairing code.
    Pair(PairArgs),
    /// Run headless: connect to the server and run this host's bots (what a service runs).
    Run(RunArgs),
    /// Run with a tray icon on the desktop (shows a service instance's status if one runs).
    Tray(RunArgs),
    /// Show the connection, the server, the bots and the last errors.
    Status,
    /// Register or remove the agent as an OS service (systemd unit / Windows logon task).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Forget this host's credentials (and stop the bots nobody could control any more).
    Unpair,
}

#[derive(Debug, Args)]
struct PairArgs {
    /// Server URL, e.g. https://botmox.example.com
    #[arg(long, value_name = "URL", value_parser = parse_server_url)]
    server: String,
    /// Pairing code shown in the control panel, e.g. K7QX-M2PD-9HFA
    #[arg(long, value_name = "CODE")]
    code: String,
    /// Name for this agent (defaults to the name on the pairing code, then the hostname)
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// Label for this agent as key=value; repeat for more
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// An extra CA certificate (PEM) to trust for this server, besides the system's
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// How to reach the server: WebSocket with long-poll fallback, or one of them only
    #[arg(long, value_enum, default_value = "auto", env = "BOTMOX_AGENT_TRANSPORT")]
    transport: TransportMode,
    /// Accept `agent.exec` commands (run one-off programs from the server)
    #[arg(long)]
    allow_exec: bool,
    /// Replace the agent token now (it is also replaced weekly)
    #[arg(long)]
    rotate_token: bool,
    /// Loopback address of the local status endpoint (`botmox-agent status` reads it)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", env = "BOTMOX_AGENT_STATUS_LISTEN")]
    status_listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
enum ServiceCmd {
    /// Install and start the agent as a service (`botmox-agent run` at boot).
    Install(InstallArgs),
    /// Stop and remove the service.
    Uninstall(UninstallArgs),
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// Write and print the systemd unit only; do not call systemctl (Linux)
    #[arg(long)]
    no_start: bool,
    /// Write the unit into DIR instead of systemd's directory; needs --no-start (Linux)
    #[arg(long, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct UninstallArgs {
    /// Remove the systemd unit file only; do not call systemctl (Linux)
    #[arg(long)]
    no_stop: bool,
    /// The directory the unit was written to with --unit-dir (Linux)
    #[arg(long, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = match AgentDir::resolve(cli.config_dir) {
        Ok(dir) => dir,
        Err(err) => return fail("botmox-agent", err),
    };
    match cli.command {
        Cmd::Pair(args) => with_runtime(false, pair(dir, args)),
        Cmd::Run(args) => with_runtime(true, run(dir, args)),
        Cmd::Status => with_runtime(false, status(dir)),
        Cmd::Unpair => with_runtime(false, unpair(dir)),
        Cmd::Tray(args) => tray(dir, args),
        Cmd::Service(ServiceCmd::Install(args)) => {
            let options = service::Options { no_systemctl: args.no_start, unit_dir: args.unit_dir };
            report("botmox-agent service install", service::install(&dir, &options))
        }
        Cmd::Service(ServiceCmd::Uninstall(args)) => {
            let options = service::Options { no_systemctl: args.no_stop, unit_dir: args.unit_dir };
            report("botmox-agent service uninstall", service::uninstall(&dir, &options))
        }
    }
}

/// Prints what a short command did, or its error in one line.
fn report(what: &str, done: anyhow::Result<String>) -> ExitCode {
    match done {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(what, format!("{err:#}")),
    }
}

#[cfg(feature = "tray")]
fn tray(dir: AgentDir, args: RunArgs) -> ExitCode {
    tray::tray(dir, run_options(args))
}

#[cfg(not(feature = "tray"))]
fn tray(_dir: AgentDir, _args: RunArgs) -> ExitCode {
    not_available("tray", "it is built with `cargo build -p botmox-agent --features tray`")
}

/// `run` gets two worker threads (a stop waiting out a grace period never blocks a command);
/// the short commands one thread.
fn with_runtime(multi_thread: bool, work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(8).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(work),
        Err(err) => fail("botmox-agent", err),
    }
}

fn fail(what: &str, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("{what}: {err}");
    ExitCode::FAILURE
}

/// Exit code 2 tells scripts "this command does not exist here" rather than "it failed".
#[cfg(not(feature = "tray"))]
fn not_available(command: &str, how: &str) -> ExitCode {
    eprintln!("botmox-agent {command}: not available in this build ({how})");
    ExitCode::from(2)
}

async fn pair(dir: AgentDir, args: PairArgs) -> ExitCode {
    logging::init_cli();
    let options = pair::PairOptions {
        server: args.server,
        code: args.code,
        name: args.name,
        labels: args.labels,
        ca_file: args.ca_file,
    };
    match pair::pair(&dir, options).await {
        Ok(credentials) => {
            println!(
                "paired with {} as agent {}; credentials in {}\nnext: botmox-agent run",
                credentials.server,
                credentials.agent_id,
                dir.credentials().display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => fail("botmox-agent pair", err),
    }
}

fn run_options(args: RunArgs) -> run::RunOptions {
    run::RunOptions {
        transport: args.transport,
        allow_exec: args.allow_exec,
        rotate_token: args.rotate_token,
        status_listen: args.status_listen,
    }
}

async fn run(dir: AgentDir, args: RunArgs) -> ExitCode {
    match run::run(dir, run_options(args)).await {
        Ok(code) => code,
        Err(err) => fail("botmox-agent run", format!("{err:#}")),
    }
}

async fn status(dir: AgentDir) -> ExitCode {
    logging::init_cli();
    if let Some(report) = status::fetch(&dir).await {
        print!("{}", status::render(&report));
        return ExitCode::SUCCESS;
    }
    match status::from_files(&dir) {
        Ok(report) if report.agent_id.is_none() && report.bots.is_empty() => {
            println!("not paired");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", status::render(&report));
            ExitCode::SUCCESS
        }
        Err(err) => fail("botmox-agent status", format!("{err:#}")),
    }
}

async fn unpair(dir: AgentDir) -> ExitCode {
    logging::init_cli();
    match pair::unpair(&dir).await {
        Ok(pair::Unpaired { server: None, bots_stopped: 0 }) => {
            println!("not paired");
            ExitCode::SUCCESS
        }
        Ok(done) => {
            let server = done.server.unwrap_or_else(|| "the server".into());
            println!("unpaired from {server}; stopped {} bot(s)", done.bots_stopped);
            ExitCode::SUCCESS
        }
        Err(err) => fail("botmox-agent unpair", err),
    }
}

fn parse_server_url(value: &str) -> Result<String, String> {
    let value = value.trim_end_matches('/');
    match value.split_once("://") {
        Some(("http" | "https", host)) if !host.is_empty() => Ok(value.to_owned()),
        _ => Err("expected an http:// or https:// URL, e.g. https://botmox.example.com".to_owned()),
    }
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, val)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), val.to_owned())),
        _ => Err("expected key=value, e.g. region=eu".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pair_takes_repeated_labels() {
        let cli = Cli::try_parse_from([
            "botmox-agent",
            "pair",
            "--server",
            "https://h.example/",
            "--code",
            "K7QX-M2PD-9HFA",
            "--label",
            "region=eu",
            "--label",
            "tier=gold",
        ]);
        let Ok(Cli { command: Cmd::Pair(args), .. }) = cli else {
            panic!("pair did not parse: {cli:?}");
        };
        assert_eq!(args.server, "https://h.example");
        assert_eq!(args.labels, [("region".into(), "eu".into()), ("tier".into(), "gold".into())]);
    }

    #[test]
    fn run_options_parse() {
        let cli = Cli::try_parse_from([
            "botmox-agent",
            "--config-dir",
            "/tmp/a",
            "run",
            "--transport",
            "poll",
            "--allow-exec",
        ]);
        let Ok(Cli { command: Cmd::Run(args), config_dir, .. }) = cli else {
            panic!("run did not parse: {cli:?}");
        };
        assert_eq!((args.transport, args.allow_exec, args.rotate_token), (TransportMode::Poll, true, false));
        assert_eq!(config_dir, Some(PathBuf::from("/tmp/a")));
    }

    #[test]
    fn rejects_bad_urls_and_labels() {
        assert!(parse_server_url("botmox.example.com").is_err());
        assert!(parse_server_url("ftp://x").is_err());
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
        assert_eq!(parse_label("k=a=b"), Ok(("k".into(), "a=b".into())));
    }
}
