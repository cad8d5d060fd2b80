//! The tray's tokio side: decides whose agent the tray shows, runs its own agent when no
//! other one runs, turns menu actions into effects, and sends a fresh [`View`] to the GUI
//! thread whenever what it shows changes.
//!
//! - **A service instance runs** (`status.addr` answers `GET /status`): the tray polls it
//!   every 2 s and never starts a second agent. Pause and Pair again are disabled: the status
//!   endpoint is read-only and open to every local user, so it is no control channel.
//! - **Otherwise** the tray runs the agent in-process ([`run::run_until`]) and reads its
//!   [`Reporter`] every second. Quit (or SIGTERM) stops it like SIGTERM stops `run`: bots
//!   keep running, to be re-adopted by the next agent.

use std::{process::ExitCode, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use super::{
    pair_again,
    view::{Light, Source, View},
    Action, UserEvent,
};
use crate::{
    config::Credentials,
    paths::AgentDir,
    run::{self, RunOptions},
    status::{self, Reporter, StatusReport},
};

const OWN_EVERY: Duration = Duration::from_secs(1);
const SERVICE_EVERY: Duration = Duration::from_secs(2);
/// Bound on a clean stop of the own agent (it closes its connection and returns).
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// The agent the tray runs.
struct Own {
    stop: watch::Sender<bool>,
    started: oneshot::Receiver<Arc<Reporter>>,
    reporter: Option<Arc<Reporter>>,
    task: JoinHandle<anyhow::Result<ExitCode>>,
}

enum State {
    Service,
    Own(Own),
    /// The own agent ended (revoked, or failed to start): why, and the connection word.
    Ended {
        connection: &'static str,
        why: String,
    },
    NotPaired,
}

pub struct Controller {
    dir: AgentDir,
    /// How the own agent is started (again, after pairing again).
    options: RunOptions,
    gui: tao::event_loop::EventLoopProxy<UserEvent>,
    actions: mpsc::UnboundedSender<Action>,
    state: State,
    /// The tray's own message (outcome of the last action).
    note: Option<String>,
    shown: Option<View>,
    light: Light,
    /// The last report of a service instance, refreshed every [`SERVICE_EVERY`].
    service_report: Option<(Instant, Option<StatusReport>)>,
    /// The Pair again dialogs are open.
    asking: bool,
}

impl Controller {
    pub fn new(
        dir: AgentDir,
        options: RunOptions,
        gui: tao::event_loop::EventLoopProxy<UserEvent>,
        actions: mpsc::UnboundedSender<Action>,
    ) -> Self {
        Self {
            dir,
            options,
            gui,
            actions,
            state: State::NotPaired,
            note: None,
            shown: None,
            light: Light::Idle,
            service_report: None,
            asking: false,
        }
    }

    /// Until Quit or SIGTERM/SIGINT; returns the tray's exit code.
    pub async fn run(mut self, mut actions: mpsc::UnboundedReceiver<Action>) -> ExitCode {
        self.state = self.choose().await;
        let signal = run::wait_for_signal();
        tokio::pin!(signal);
        let mut tick = tokio::time::interval(OWN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                action = actions.recv() => match action {
                    Some(Action::Quit) | None => break,
                    Some(action) => self.act(action).await,
                },
                () = &mut signal => break,
                _ = tick.tick() => {}
            }
            self.settle().await;
            if !self.publish().await {
                // The GUI is gone.
                break;
            }
        }
        self.stop_own().await;
        let _ = self.gui.send_event(UserEvent::Exit);
        ExitCode::SUCCESS
    }

    /// A live agent for this dir means a service instance; else run our own if paired.
    async fn choose(&mut self) -> State {
        if status::fetch(&self.dir).await.is_some_and(|report| report.live) {
            tracing::info!(dir = %self.dir.root().display(), "an agent already runs for this dir: showing its status");
            return State::Service;
        }
        self.start_own()
    }

    fn start_own(&self) -> State {
        match Credentials::load(&self.dir.credentials()) {
            Ok(Some(_)) => {}
            Ok(None) => return State::NotPaired,
            Err(e) => return State::Ended { connection: "error", why: format!("{e:#}") },
        }
        let (stop, stopped) = watch::channel(false);
        let (report_to, started) = oneshot::channel();
        let task = tokio::spawn(run::run_until(self.dir.clone(), self.options.clone(), stopped, move |reporter| {
            let _ = report_to.send(reporter);
        }));
        State::Own(Own { stop, started, reporter: None, task })
    }

    /// Picks up the own agent's reporter once it is up, and its end when it ends; starts the
    /// agent once an unpaired host was paired (`botmox-agent pair` in a terminal).
    async fn settle(&mut self) {
        if matches!(self.state, State::NotPaired) && self.dir.credentials().is_file() {
            self.note = None;
            self.state = self.start_own();
        }
        let State::Own(own) = &mut self.state else { return };
        if own.reporter.is_none() {
            if let Ok(reporter) = own.started.try_recv() {
                // `--rotate-token` applies to the first start only.
                self.options.rotate_token = false;
                own.reporter = Some(reporter);
            }
        }
        if !own.task.is_finished() {
            return;
        }
        let State::Own(own) = std::mem::replace(&mut self.state, State::NotPaired) else { return };
        self.state = match own.task.await {
            Ok(Ok(code)) if code == ExitCode::from(run::EXIT_REVOKED) => {
                State::Ended { connection: "revoked", why: "revoked by the server".into() }
            }
            Ok(Ok(_)) => State::Ended { connection: "not running", why: "the agent stopped".into() },
            Ok(Err(e)) => State::Ended { connection: "error", why: format!("the agent stopped: {e:#}") },
            Err(e) => State::Ended { connection: "error", why: format!("the agent crashed: {e}") },
        };
        if let State::Ended { why, .. } = &self.state {
            tracing::warn!(%why, "the tray's agent ended");
        }
        // It may have found the dir locked by an agent started meanwhile (a service): show that one.
        if status::fetch(&self.dir).await.is_some_and(|report| report.live) {
            tracing::info!("another agent runs for this dir: showing its status");
            self.state = State::Service;
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Quit => {}
            Action::Pause | Action::Resume => {
                let pause = matches!(action, Action::Pause);
                match &self.state {
                    State::Own(Own { reporter: Some(reporter), .. }) => {
                        reporter.link.set_paused(pause);
                        self.note = None;
                    }
                    _ => self.note = Some("Pause needs the agent this tray runs".into()),
                }
            }
            Action::OpenPanel => {
                let server = self.report().await.server;
                self.note = match server {
                    Some(server) => open_detached(&format!("{server}/"), "the control panel"),
                    None => Some("Not paired: no control panel to open".into()),
                };
            }
            Action::OpenLogs => {
                let logs = self.dir.logs();
                self.note = if logs.is_dir() {
                    open_detached(&logs.to_string_lossy(), "the logs folder")
                } else {
                    Some(format!("No logs yet ({} does not exist)", logs.display()))
                };
            }
            Action::PairAgain => {
                if matches!(self.state, State::Service) {
                    self.note = Some("The service's agent is paired with `botmox-agent pair` in a terminal".into());
                    return;
                }
                if self.asking {
                    return;
                }
                self.asking = true;
                let report = self.report().await;
                let ask = pair_again::Ask {
                    dir: self.dir.clone(),
                    server: report.server.clone(),
                    paired: report.agent_id.is_some()
                        && !matches!(self.state, State::Ended { connection: "revoked", .. }),
                    bots: report.bots.len(),
                };
                self.note = Some("Pairing: answer the dialogs…".into());
                let actions = self.actions.clone();
                tokio::spawn(async move {
                    let outcome = pair_again::ask_and_stage(ask).await;
                    let _ = actions.send(Action::Staged(outcome));
                });
            }
            Action::Staged(outcome) => {
                self.asking = false;
                match outcome {
                    pair_again::Outcome::Staged(staged) => {
                        self.stop_own().await;
                        self.note = Some(match pair_again::swap(&self.dir, staged).await {
                            Ok(done) => done,
                            Err(e) => format!("Pairing again failed: {e}"),
                        });
                        self.light = Light::Idle;
                        self.state = self.start_own();
                    }
                    pair_again::Outcome::Told(message) => self.note = Some(message),
                    pair_again::Outcome::Cancelled => self.note = None,
                }
            }
        }
    }

    /// Stops the own agent cleanly (bounded); nothing to do otherwise.
    async fn stop_own(&mut self) {
        if !matches!(self.state, State::Own(_)) {
            return;
        }
        let stopped = State::Ended { connection: "not running", why: "the agent stopped".into() };
        let State::Own(own) = std::mem::replace(&mut self.state, stopped) else { return };
        let _ = own.stop.send(true);
        let mut task = own.task;
        match tokio::time::timeout(STOP_WITHIN, &mut task).await {
            Ok(Ok(Ok(_))) => tracing::info!("the tray's agent stopped; bots keep running"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %format!("{e:#}"), "the tray's agent ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the tray's agent crashed"),
            Err(_) => {
                tracing::warn!("the tray's agent did not stop within {STOP_WITHIN:?}");
                task.abort();
            }
        }
    }

    /// The status to show now.
    async fn report(&mut self) -> StatusReport {
        let from_files = |dir: &AgentDir, connection: &str, why: Option<String>| {
            let mut report = status::from_files(dir).unwrap_or_else(|e| empty(format!("{e:#}")));
            report.connection = connection.into();
            report.last_connection_error = why.or(report.last_connection_error);
            report
        };
        match &self.state {
            State::Own(Own { reporter: Some(reporter), .. }) => reporter.report(),
            State::Own(Own { reporter: None, .. }) => from_files(&self.dir, "starting", None),
            State::Ended { connection, why } => from_files(&self.dir, connection, Some(why.clone())),
            State::NotPaired => from_files(&self.dir, "not running", None),
            State::Service => {
                let fresh = self.service_report.as_ref().is_some_and(|(at, _)| at.elapsed() < SERVICE_EVERY);
                if !fresh {
                    self.service_report = Some((Instant::now(), status::fetch(&self.dir).await));
                }
                match self.service_report.as_ref().and_then(|(_, report)| report.clone()) {
                    Some(report) => report,
                    None => from_files(&self.dir, "not running", Some("the service's agent does not answer".into())),
                }
            }
        }
    }

    /// Sends the view when it changed; `false` when the GUI is gone.
    async fn publish(&mut self) -> bool {
        let report = self.report().await;
        let source = match self.state {
            State::Service => Source::Service,
            State::NotPaired => Source::NotPaired,
            State::Own(_) | State::Ended { .. } => Source::Own,
        };
        let view = View::build(&report, source, self.note.as_deref(), self.light);
        self.light = view.light;
        if self.shown.as_ref() == Some(&view) {
            return true;
        }
        self.shown = Some(view.clone());
        self.gui.send_event(UserEvent::View(Box::new(view))).is_ok()
    }
}

fn empty(error: String) -> StatusReport {
    StatusReport {
        live: false,
        agent_id: None,
        server: None,
        connection: "error".into(),
        transport: None,
        since: None,
        last_connection_error: Some(error),
        agent_pid: None,
        draining: false,
        frames_buffered: 0,
        log_lines_dropped: 0,
        bots: Vec::new(),
        last_errors: Vec::new(),
    }
}

/// Opens a URL or folder with the desktop's handler; a note when that fails.
fn open_detached(target: &str, what: &str) -> Option<String> {
    match open::that_detached(target) {
        Ok(()) => None,
        Err(e) => Some(format!("Cannot open {what} ({target}): {e}")),
    }
}
