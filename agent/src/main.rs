//! `botmox-agent`: the small program that runs on every host of a botmox fleet (SPEC §5).
//!
//! What it will be: one binary for Windows and Linux that pairs with the control plane
//! (`pair`), keeps one WebSocket open to it (HTTP long-poll where proxies break WebSockets),
//! receives start/stop commands, runs each bot as a local process in its own process group /
//! Job Object, supervises it locally (restart policy, backoff, crash-loop `failed`) even while
//! the server is unreachable, re-adopts its bots after its own restart, and reports states,
//! exit codes, logs and host metrics back. `run` is the headless mode a service uses, `tray`
//! the desktop icon, `service install|uninstall` registers it with systemd or Windows.
//! Credentials live in the OS config dir with owner-only permissions.
//!
//! This build is the skeleton: the command line is final, `status` knows whether the host
//! is paired, and every other command says plainly that it is not available yet.

mod paths;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "botmox-agent",
    version,
    about = "The botmox host agent: runs and supervises bots for a botmox server."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Pair this host with a botmox server using a one-time pairing code.
    Pair(PairArgs),
    /// Run headless: connect to the server and run this host's bots (what a service runs).
    Run,
    /// Run with a tray icon on the desktop.
    Tray,
    /// Show whether this host is paired, the connection, and its bots.
    Status,
    /// Register or remove the agent as an OS service (systemd / Windows service).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Forget this host's credentials.
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
    /// Name for this agent (defaults to the hostname)
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// Label for this agent as key=value; repeat for more
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
enum ServiceCmd {
    /// Install and start the agent as a service (`botmox-agent run` at boot).
    Install,
    /// Stop and remove the service.
    Uninstall,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Pair(_) => not_available("pair"),
        Cmd::Run => not_available("run"),
        Cmd::Tray => not_available("tray"),
        Cmd::Status => status(),
        Cmd::Service(ServiceCmd::Install) => not_available("service install"),
        Cmd::Service(ServiceCmd::Uninstall) => not_available("service uninstall"),
        Cmd::Unpair => not_available("unpair"),
    }
}

/// Exit code 2 tells scripts "this command does not exist here" rather than "it failed".
fn not_available(command: &str) -> ExitCode {
    eprintln!("botmox-agent {command}: not available in this build yet");
    ExitCode::from(2)
}

fn status() -> ExitCode {
    let path = match paths::credentials_file() {
        Ok(path) => path,
        Err(err) => {
            eprintln!("botmox-agent status: {err}");
            return ExitCode::FAILURE;
        }
    };
    if path.exists() {
        // Paired, but reading the credentials and asking the running agent comes later.
        not_available("status")
    } else {
        println!("not paired");
        ExitCode::SUCCESS
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
        let Ok(Cli { command: Cmd::Pair(args) }) = cli else {
            panic!("pair did not parse: {cli:?}");
        };
        assert_eq!(args.server, "https://h.example");
        assert_eq!(args.labels, [("region".into(), "eu".into()), ("tier".into(), "gold".into())]);
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
