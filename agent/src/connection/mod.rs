//! The agent's link to the server (SPEC §4): one connection at a time over the WebSocket
//! ([`ws`]) or, where a proxy breaks WebSockets, HTTP long-poll ([`poll`]). Each connection
//! starts with `hello` and the full snapshot of the bots, then flushes what the [`buffer`]
//! collected while away, then heartbeats. A lost connection is retried with exponential
//! backoff and jitter (1 s → 30 s) while the bots keep running; a refused token (revoked:
//! close code 4001 or 401) ends the agent. The agent token is rotated weekly or on demand.
//! The tray can **pause** the link: the connection closes and stays closed (the server sends
//! no commands; bots keep running under local supervision, their reports wait in the outbox)
//! until it is resumed.

pub mod buffer;
mod poll;
mod ws;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use botmox_contract::{
    agents::{RotatedAgentToken, ServerSettings},
    problem::Problem,
    protocol::{AgentFrame, ServerFrame, PROTOCOL_VERSION},
};
use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::Serialize;
use tokio::{sync::watch, time::Instant};

use self::buffer::Outbox;
use crate::{bots::Bots, commands::Commands, config::Credentials, host::HostFacts, metrics::Metrics, paths::AgentDir};

/// Backoff of reconnections.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After the WebSocket was refused, stay on long-poll this long before trying it again.
const POLL_BEFORE_WS_RETRY: Duration = Duration::from_secs(600);
/// The agent token is replaced this often.
const ROTATE_EVERY: Duration = Duration::from_secs(7 * 86_400);
/// Frames taken from the outbox per write burst.
const BURST: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportMode {
    /// WebSocket, falling back to long-poll when the upgrade is refused.
    Auto,
    Ws,
    Poll,
}

/// How a connection ended.
#[derive(Debug)]
enum SessionEnd {
    /// The server refused the token: revoked (or never valid). The agent stops.
    Revoked(String),
    /// The WebSocket upgrade was refused in a way that says "not here" (a proxy).
    WsUnsupported(String),
    /// The connection failed or broke; `greeted`: it had been established.
    Lost {
        greeted: bool,
        reason: String,
    },
    /// Reconnect at once (the token was rotated).
    Reconnect,
    Shutdown,
}

/// Why [`run`] returned.
#[derive(Debug)]
pub enum Ending {
    Revoked(String),
    Shutdown,
}

/// The connection's state, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// `connecting`, `connected`, `disconnected`, `paused`, `revoked`.
    pub state: &'static str,
    pub transport: Option<&'static str>,
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Everything a connection needs.
pub struct Link {
    pub dir: AgentDir,
    credentials: Mutex<Credentials>,
    tls: Arc<rustls::ClientConfig>,
    /// Short requests (frames, rotation).
    http: reqwest::Client,
    /// Long-polls (up to 30 s of waiting, plus the trip).
    poll_http: reqwest::Client,
    pub outbox: Arc<Outbox>,
    pub commands: Arc<Commands>,
    pub bots: Arc<Bots>,
    host: HostFacts,
    metrics: Mutex<Metrics>,
    settings: Mutex<ServerSettings>,
    status: watch::Sender<LinkStatus>,
    /// Set by a token rotation: the open connection reconnects with the new token.
    reconnect: tokio::sync::Notify,
    /// `true` while paused (the tray's Pause): no connection.
    paused: watch::Sender<bool>,
}

impl Link {
    pub fn new(
        dir: AgentDir,
        credentials: Credentials,
        tls: Arc<rustls::ClientConfig>,
        outbox: Arc<Outbox>,
        commands: Arc<Commands>,
        bots: Arc<Bots>,
    ) -> anyhow::Result<Arc<Self>> {
        let settings = credentials.server_settings.clone().unwrap_or_default();
        let status = LinkStatus { state: "connecting", transport: None, since: Utc::now(), last_error: None };
        Ok(Arc::new(Self {
            http: crate::tls::http_client(&tls, Duration::from_secs(30))?,
            poll_http: crate::tls::http_client(&tls, Duration::from_secs(poll::WAIT_SECONDS + 30))?,
            metrics: Mutex::new(Metrics::new(dir.root())),
            dir,
            credentials: Mutex::new(credentials),
            tls,
            outbox,
            commands,
            bots,
            host: HostFacts::detect(),
            settings: Mutex::new(settings),
            status: watch::channel(status).0,
            reconnect: tokio::sync::Notify::new(),
            paused: watch::channel(false).0,
        }))
    }

    fn credentials(&self) -> std::sync::MutexGuard<'_, Credentials> {
        self.credentials.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn server(&self) -> String {
        self.credentials().server.clone()
    }

    fn token(&self) -> String {
        self.credentials().agent_token.clone()
    }

    fn url(&self, path: &str) -> String {
        self.credentials().url(path)
    }

    fn settings(&self) -> ServerSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_settings(&self, settings: ServerSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Pauses (closes the connection and keeps it closed) or resumes the link.
    #[cfg_attr(not(feature = "tray"), allow(dead_code))]
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_if_modified(|current| std::mem::replace(current, paused) != paused);
    }

    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    fn set_status(&self, state: &'static str, transport: Option<&'static str>, error: Option<String>) {
        self.status.send_modify(|status| {
            if status.state != state || status.transport != transport {
                status.since = Utc::now();
            }
            status.state = state;
            status.transport = transport;
            if error.is_some() {
                status.last_error = error;
            }
        });
    }

    /// The first frame of every connection: who we are and the truth about every bot.
    fn hello(&self) -> AgentFrame {
        AgentFrame::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: crate::host::VERSION.into(),
            hostname: self.host.hostname.clone(),
            os: self.host.os.clone(),
            arch: self.host.arch.clone(),
            bots: self.bots.snapshot(),
        }
    }

    fn heartbeat(&self) -> AgentFrame {
        let running = self.bots.running_count();
        let metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner()).sample(running);
        AgentFrame::Heartbeat { metrics }
    }

    /// The next heartbeat's delay: the server's interval ±10 % so a fleet does not beat in step.
    fn heartbeat_delay(&self) -> Duration {
        let interval = Duration::from_secs(self.settings().heartbeat_interval_s.max(1));
        interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
    }

    /// Frames to send now, bounded by the server's limits.
    fn take_burst(&self) -> Vec<AgentFrame> {
        let settings = self.settings();
        let max_lines = settings.max_log_batch.clamp(1, 1000) as usize;
        // Half the frame limit leaves room for JSON escaping of unusual text.
        let max_bytes = (settings.max_frame_bytes / 2).clamp(64 * 1024, 8 << 20) as usize;
        self.outbox.take(BURST, max_lines, max_bytes)
    }

    /// The server confirmed it applied (or refused for good) these frames: the results they
    /// carried are marked confirmed in the journal and their state reports leave the durable
    /// transitions, so neither is sent again after an agent restart. The one confirmation path
    /// of both transports (a pong after a WebSocket burst, the answer to a long-poll POST).
    fn confirmed(&self, frames: &[AgentFrame]) {
        self.commands.confirmed(frames);
        self.bots.transitions().confirmed(frames.iter().filter_map(|frame| match frame {
            AgentFrame::BotState(report) => Some(report),
            _ => None,
        }));
    }

    /// Applies one server frame. Returns the settings when it was a `settings` frame.
    fn on_server_frame(&self, frame: ServerFrame) -> Option<ServerSettings> {
        match frame {
            ServerFrame::Command(envelope) => self.commands.handle(*envelope),
            ServerFrame::Cancel { command_id } => self.commands.cancel(command_id),
            ServerFrame::Settings(settings) => {
                self.set_settings(settings.clone());
                return Some(settings);
            }
            ServerFrame::Ping { .. } => {}
            ServerFrame::Error { code, detail } => {
                tracing::warn!(%code, %detail, "the server refused a frame");
                self.set_status(self.status().state, self.status().transport, Some(format!("{code}: {detail}")));
            }
        }
        None
    }

    /// `POST /agent/token/rotate`, then store and use the new token.
    pub async fn rotate_token(&self) -> Result<(), RotateError> {
        let response = self
            .http
            .post(self.url("/api/v1/agent/token/rotate"))
            .bearer_auth(self.token())
            .send()
            .await
            .map_err(|e| RotateError::Other(format!("cannot reach the server: {e}")))?;
        match response.status().as_u16() {
            200 => {}
            401 => return Err(RotateError::Revoked(problem_detail(response).await)),
            status => {
                return Err(RotateError::Other(format!(
                    "the server answered {status}: {}",
                    problem_detail(response).await
                )))
            }
        }
        let rotated: RotatedAgentToken =
            response.json().await.map_err(|e| RotateError::Other(format!("unexpected answer: {e}")))?;
        let mut credentials = self.credentials();
        credentials.agent_token = rotated.agent_token;
        credentials.token_since = Utc::now();
        credentials.save(&self.dir.credentials()).map_err(|e| RotateError::Other(format!("{e:#}")))?;
        tracing::info!("agent token rotated");
        Ok(())
    }

    fn token_since(&self) -> DateTime<Utc> {
        self.credentials().token_since
    }
}

#[derive(Debug)]
pub enum RotateError {
    Revoked(String),
    Other(String),
}

/// The `detail` of a problem+json answer, or its status.
async fn problem_detail(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<Problem>().await {
        Ok(problem) => format!("{} ({})", problem.detail, problem.code),
        Err(_) => format!("HTTP {status}"),
    }
}

/// Exponential backoff with jitter: each delay is between half and all of the current step.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { step: BACKOFF_INITIAL }
    }

    fn reset(&mut self) {
        self.step = BACKOFF_INITIAL;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        self.step = (self.step * 2).min(BACKOFF_MAX);
        delay
    }
}

/// Keeps the agent connected until it is revoked or asked to shut down; while paused, not
/// connected at all.
pub async fn run(
    link: Arc<Link>,
    mode: TransportMode,
    rotate_now: bool,
    mut shutdown: watch::Receiver<bool>,
) -> Ending {
    let rotation = tokio::spawn(rotate_periodically(link.clone(), rotate_now));
    let mut paused = link.paused.subscribe();
    let mut backoff = Backoff::new();
    let mut poll_until: Option<Instant> = None;
    let ending = loop {
        if *paused.borrow_and_update() {
            tracing::info!("paused: disconnected from the server until resumed");
            link.set_status("paused", None, None);
            tokio::select! {
                _ = paused.wait_for(|paused| !*paused) => {}
                _ = shutdown.changed() => break Ending::Shutdown,
            }
            tracing::info!("resumed: connecting");
            backoff.reset();
            continue;
        }
        let use_poll = mode == TransportMode::Poll || poll_until.is_some_and(|until| Instant::now() < until);
        link.set_status("connecting", None, None);
        let end = match session(&link, use_poll, &mut shutdown, &mut paused).await {
            Ended::Session(end) => end,
            Ended::Shutdown => break Ending::Shutdown,
            Ended::Paused => continue,
        };
        let (greeted, reason) = match end {
            SessionEnd::Revoked(why) => {
                link.set_status("revoked", None, Some(why.clone()));
                break Ending::Revoked(why);
            }
            SessionEnd::Shutdown => break Ending::Shutdown,
            SessionEnd::Reconnect => {
                backoff.reset();
                continue;
            }
            SessionEnd::WsUnsupported(why) if mode == TransportMode::Auto => {
                tracing::warn!(reason = %why, "the WebSocket is refused on the way to the server: using HTTP long-poll");
                link.set_status("connecting", Some("poll"), Some(why));
                poll_until = Some(Instant::now() + POLL_BEFORE_WS_RETRY);
                backoff.reset();
                continue;
            }
            SessionEnd::WsUnsupported(reason) => (false, reason),
            SessionEnd::Lost { greeted, reason } => (greeted, reason),
        };
        // A connection that had been established restarts the backoff from its first step:
        // a server that restarted is found again within a second or two.
        if greeted {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::info!(%reason, retry_in_ms = delay.as_millis() as u64, "disconnected from the server");
        link.set_status("disconnected", None, Some(reason));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = paused.wait_for(|paused| *paused) => {}
            _ = shutdown.changed() => break Ending::Shutdown,
        }
    };
    rotation.abort();
    ending
}

/// How [`session`] ended.
enum Ended {
    Session(SessionEnd),
    Shutdown,
    Paused,
}

/// One connection over the chosen transport. A shutdown or a pause asks the session to
/// close (the same path as a shutdown, so the socket is closed politely and unconfirmed
/// frames go back to the outbox) rather than dropping it mid-write.
async fn session(
    link: &Link,
    use_poll: bool,
    shutdown: &mut watch::Receiver<bool>,
    paused: &mut watch::Receiver<bool>,
) -> Ended {
    let (close, mut closing) = watch::channel(false);
    let session = async {
        if use_poll {
            poll::session(link, &mut closing).await
        } else {
            ws::session(link, &mut closing).await
        }
    };
    tokio::pin!(session);
    let mut why: Option<Ended> = None;
    loop {
        tokio::select! {
            end = &mut session => {
                // Once asked to close, how the session ended does not matter (the shutdown
                // signal is consumed), unless the server revoked the agent meanwhile.
                return match (why, end) {
                    (_, SessionEnd::Revoked(why)) => Ended::Session(SessionEnd::Revoked(why)),
                    (Some(why), _) => why,
                    (None, end) => Ended::Session(end),
                };
            }
            _ = shutdown.changed(), if why.is_none() => {
                why = Some(Ended::Shutdown);
                close.send_replace(true);
            }
            _ = paused.wait_for(|paused| *paused), if why.is_none() => {
                why = Some(Ended::Paused);
                close.send_replace(true);
            }
        }
    }
}

/// Rotates the token when it is a week old (or at once when asked), then reconnects.
async fn rotate_periodically(link: Arc<Link>, mut now: bool) {
    loop {
        if !now {
            let age = (Utc::now() - link.token_since()).to_std().unwrap_or_default();
            tokio::time::sleep(ROTATE_EVERY.saturating_sub(age)).await;
        }
        match link.rotate_token().await {
            Ok(()) => {
                now = false;
                link.reconnect.notify_one();
            }
            Err(RotateError::Revoked(why)) => {
                // The connection sees the same refusal and ends the agent.
                tracing::warn!(%why, "token rotation refused");
                return;
            }
            Err(RotateError::Other(why)) => {
                tracing::warn!(%why, "token rotation failed: trying again in a minute");
                now = true;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// The WebSocket URL of the connect endpoint.
fn ws_url(server: &str) -> anyhow::Result<String> {
    let rest = server.strip_prefix("http").context("the server URL is not http(s)")?;
    Ok(format!("ws{rest}/api/v1/agent/connect"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_thirty_seconds_with_jitter() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[9] >= BACKOFF_MAX / 2, "it reaches the cap: {delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn websocket_urls_follow_the_scheme() -> anyhow::Result<()> {
        assert_eq!(ws_url("http://h:8080")?, "ws://h:8080/api/v1/agent/connect");
        assert_eq!(ws_url("https://h.example/base")?, "wss://h.example/base/api/v1/agent/connect");
        Ok(())
    }
}
