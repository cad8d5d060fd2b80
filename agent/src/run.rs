//! `botmox-agent run`: the life of the headless agent. Lock the agent dir (one agent per dir:
//! two would start every bot twice), queue the bot-state transitions the previous run still
//! owed the server, stop bot processes no record tracks (Unix), recover the bots from the
//! state file (re-adopting those still running) *before* connecting, open the local status
//! endpoint, then stay connected until SIGTERM/SIGINT (bots keep running, to be re-adopted by
//! the next start; on Windows they end with the agent and the next start starts them again)
//! or revocation (bots are stopped — nobody may control them any more — and the exit code is
//! 3). [`run_until`] is the same life ended by the caller's stop signal instead of SIGTERM:
//! the tray runs it.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use botmox_contract::protocol::AgentFrame;
use tokio::sync::watch;

use crate::{
    bots::{Bots, Shared},
    commands::Commands,
    config::Credentials,
    connection::{
        self,
        buffer::{Limits, Outbox},
        Ending, Link, TransportMode,
    },
    journal::Journal,
    paths::AgentDir,
    state_file::StateFile,
    status::{self, Reporter},
    transitions::Transitions,
};

/// Exit code when the server revoked this agent (a service manager should not restart it).
pub const EXIT_REVOKED: u8 = 3;

#[derive(Clone)]
pub struct RunOptions {
    pub transport: TransportMode,
    pub allow_exec: bool,
    pub rotate_token: bool,
    pub status_listen: SocketAddr,
}

/// `botmox-agent run`: until SIGTERM/SIGINT or revocation.
pub async fn run(dir: AgentDir, options: RunOptions) -> anyhow::Result<ExitCode> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    run_until(dir, options, stopped, |_| {}).await
}

/// The agent until `stopped` turns `true` (the same clean stop as SIGTERM: bots keep
/// running) or revocation. `started` gets the [`Reporter`] once the agent is up: the tray
/// reads its status and pauses its link through it.
pub async fn run_until(
    dir: AgentDir,
    options: RunOptions,
    stopped: watch::Receiver<bool>,
    started: impl FnOnce(Arc<Reporter>),
) -> anyhow::Result<ExitCode> {
    let credentials = Credentials::load(&dir.credentials())?.with_context(|| {
        format!(
            "this host is not paired (no {}): run `botmox-agent pair --server URL --code CODE` first",
            dir.credentials().display()
        )
    })?;
    dir.create().with_context(|| format!("cannot create {}", dir.root().display()))?;
    let _lock = lock(&dir)?;
    init_logging(&dir)?;
    let tls = crate::tls::client_config(credentials.ca_file.as_deref())?;
    let state = Arc::new(StateFile::open(&dir.state())?);
    let journal = Journal::open(&dir.journal()).with_context(|| format!("cannot read {}", dir.journal().display()))?;
    let outbox = Arc::new(Outbox::new(Limits::default()));
    // What the previous run reported but the server never confirmed goes first, in order:
    // the transitions recovery reports next are newer.
    let transitions = Arc::new(Transitions::open(&dir.transitions()));
    let owed = transitions.pending();
    if !owed.is_empty() {
        tracing::info!(transitions = owed.len(), "sending again bot-state transitions the server had not confirmed");
    }
    for report in owed {
        outbox.push(AgentFrame::BotState(report));
    }
    // A bot the previous run started but never wrote down must not run beside the one
    // recovery may start for it.
    #[cfg(unix)]
    crate::bots::orphans::sweep(&state.snapshot(), &dir.run_dir()).await;
    let shared = Arc::new(Shared::new(outbox.clone(), transitions, state.clone(), dir.run_dir()));
    let bots = Bots::recover(shared);
    let commands = Commands::new(bots.clone(), outbox.clone(), journal, options.allow_exec);
    commands.resume_journal();
    let agent_id = credentials.agent_id;
    tracing::info!(
        %agent_id, server = %credentials.server, dir = %dir.root().display(), bots = bots.ids().len(),
        version = crate::host::VERSION, "botmox-agent starting"
    );
    let link = Link::new(dir.clone(), credentials, tls, outbox, commands.clone(), bots.clone())?;

    let listener = status::bind(&dir, options.status_listen).await?;
    let reporter =
        Arc::new(Reporter { link: link.clone(), bots: bots.clone(), commands, state: state.clone(), agent_id });
    let status_task = tokio::spawn(status::serve(listener, reporter.clone()));
    started(reporter);

    let ending = connection::run(link, options.transport, options.rotate_token, stopped).await;
    status_task.abort();
    let _ = std::fs::remove_file(dir.status_addr());
    match ending {
        Ending::Shutdown => {
            let running = bots.running_count();
            #[cfg(not(windows))]
            tracing::info!(
                bots_running = running,
                "botmox-agent stopping: bots keep running and are re-adopted at the next start"
            );
            // Each bot's Job Object is kill-on-close (runner/windows.rs): they end with us.
            #[cfg(windows)]
            tracing::info!(
                bots_running = running,
                "botmox-agent stopping: its bots stop with it (Job Objects) and the next start starts them again"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ending::Revoked(why) => {
            tracing::error!(%why, "this agent is revoked: stopping its bots");
            state.note_error(format!("revoked: {why}"));
            let stopped = bots.stop_all().await;
            eprintln!(
                "botmox-agent: revoked by the server ({why}); stopped {stopped} bot(s). \
                 Pair this host again to use it: botmox-agent unpair, then botmox-agent pair"
            );
            Ok(ExitCode::from(EXIT_REVOKED))
        }
    }
}

/// Logging is process-wide and set once: the tray runs the agent again after pairing again.
pub fn init_logging(dir: &AgentDir) -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_none() {
        crate::logging::init_run(&dir.logs())?;
        let _ = DONE.set(());
    }
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Held for the life of `run`.
#[cfg(unix)]
type DirLock = nix::fcntl::Flock<std::fs::File>;
#[cfg(not(unix))]
type DirLock = std::fs::File;

/// One agent per agent dir: a second one would start every bot again.
fn lock(dir: &AgentDir) -> anyhow::Result<DirLock> {
    let path = dir.lock();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::io::{Read as _, Seek as _, Write as _};
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                locked.set_len(0)?;
                locked.rewind()?;
                write!(locked, "{}", std::process::id())?;
                Ok(locked)
            }
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                anyhow::bail!(
                    "another botmox-agent (pid {}) is running with the agent dir {}",
                    holder.trim(),
                    dir.root().display()
                )
            }
        }
    }
    #[cfg(not(unix))]
    {
        use std::os::windows::fs::OpenOptionsExt as _;
        options.share_mode(0);
        options
            .open(&path)
            .map_err(|_| anyhow::anyhow!("another botmox-agent is running with the agent dir {}", dir.root().display()))
    }
}
