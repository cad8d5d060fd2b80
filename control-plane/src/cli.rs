//! The `botmox` command line: `serve` and `migrate` (admin, token and client commands follow
//! with the identity work). Errors end the process with one line on stderr and exit code 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{
    config::{DatabaseArgs, LogFormat, ServeArgs},
    server, telemetry,
};

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
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
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
    }
}
