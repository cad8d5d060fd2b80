//! The `botmox` command line: `serve` and `migrate`, the offline administration straight on
//! the database (`admin`, `token`, `secrets`), and the operator client of the REST API
//! (`bots`, `agents`, `pair-code`, `incidents`, `commands`: [`remote`]). Errors end the
//! process with one line on stderr and a non-zero exit code (1, or the client's documented
//! codes: [`remote::Exit`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use botmox_contract::auth::{Role, Scope};

use crate::{
    config::{DatabaseArgs, KeyArgs, LogFormat, ServeArgs},
    server, telemetry,
};

mod admin;
pub mod remote;

#[derive(Debug, Parser)]
#[command(name = "botmox", version, about = "botmox control plane: registry, command queue, supervisor, panel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Users, straight in the database (for the first admin, or a lost password).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// API tokens, straight in the database.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The secrets vault's master key.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    #[command(flatten)]
    Remote(remote::RemoteCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user. The password comes from `BOTMOX_PASSWORD`, or is generated and printed.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = parse_role, default_value = "admin")]
        role: Role,
        /// Tenant name (created if it does not exist).
        #[arg(long, default_value = crate::store::DEFAULT_TENANT)]
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set a new password (from `BOTMOX_PASSWORD`, or generated and printed) and end the user's sessions.
    ResetPassword {
        #[arg(long)]
        username: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print its secret (once).
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        name: String,
        /// Repeat for several scopes, e.g. `--scope bots:read --scope bots:control`.
        #[arg(long = "scope", value_parser = parse_scope, required = true)]
        scopes: Vec<Scope>,
        #[arg(long)]
        ttl_seconds: Option<u64>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every secret under a new master key, in one transaction.
    RotateKey {
        /// Where to write the new key. Default (key in the data dir): replace `<data-dir>/master.key`,
        /// keeping the old one as `master.key.previous`.
        #[arg(long)]
        new_key_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    Role::parse(value).ok_or_else(|| format!("`{value}` is not a role (viewer, operator, admin)"))
}

fn parse_scope(value: &str) -> Result<Scope, String> {
    Scope::parse(value).ok_or_else(|| {
        let all: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        format!("`{value}` is not a scope ({})", all.join(", "))
    })
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<remote::Failure>() {
            Some(failure) => {
                // An empty message: the command already printed what went wrong.
                if !failure.message.is_empty() {
                    eprintln!("error: {failure}");
                }
                ExitCode::from(failure.exit as u8)
            }
            None => {
                eprintln!("error: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// The error and its causes on one line, skipping a cause whose text its parent already
/// includes (sqlx and io errors often repeat their source in their own message).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            server::run(args).await
        }
        Command::Migrate { database } => {
            telemetry::init(LogFormat::Text);
            let url = database.resolve()?;
            let store = server::open_store(&url).await?;
            println!("migrations applied ({} store)", store.backend_name());
            store.close().await;
            Ok(())
        }
        Command::Admin(command) => {
            telemetry::init(LogFormat::Text);
            admin::admin(command).await
        }
        Command::Token(command) => {
            telemetry::init(LogFormat::Text);
            admin::token(command).await
        }
        Command::Secrets(command) => {
            telemetry::init(LogFormat::Text);
            admin::secrets(command).await
        }
        Command::Remote(command) => Ok(remote::run(command).await?),
    }
}
