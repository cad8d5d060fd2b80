//! A simulated agent that speaks the real agent protocol (SPEC §4) over the real transports:
//! a WebSocket to `/api/v1/agent/connect`, or the long-poll fallback
//! (`GET /agent/commands/next` + `POST /agent/frames`). Tests drive it frame by frame
//! ([`AutoMode::Manual`]); load tests and benchmarks let it answer by itself
//! ([`AutoMode::Run`]: ack, succeed, report `running`/`stopped`).
//!
//! Cheap enough for thousands in one process: one tokio task per agent owns the connection
//! (no thread, small WebSocket buffers), and the test talks to it through channels. Every
//! wait is event-driven and bounded; nothing here sleeps to synchronise.

mod link;
mod poll;
mod ws;

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use botmox_contract::{
    agents::ServerSettings,
    bots::BotState,
    commands::CommandKind,
    logs::{LogLine, LogStream},
    protocol::{
        AgentFrame, BotSnapshot, BotStateReport, CommandEnvelope, CommandOutcome, FramesOutcome, PROTOCOL_VERSION,
    },
};
use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use link::{Link, Outgoing, Shared};

/// How the agent reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// The HTTP fallback; `wait` is the long-poll's `wait` (whole seconds, 0..=30).
    LongPoll {
        wait: Duration,
    },
}

impl Transport {
    /// Long-poll with a 5 s wait: short enough that a test's idle polls stay cheap.
    pub const LONG_POLL: Transport = Transport::LongPoll { wait: Duration::from_secs(5) };
}

/// Who answers commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoMode {
    /// The test: commands queue up for [`SimAgent::next_command`].
    Manual,
    /// The agent itself: ack, then for start/restart report `running` (fake pid), for stop
    /// `stopped`, then a successful result. A redelivered command id is answered from the
    /// journal without running it again, like the real agent.
    Run,
}

/// A command the agent received, for load tests that watch a whole fleet through one channel.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Index given in [`SimConfig::label`].
    pub label: usize,
    pub command_id: Uuid,
    pub kind: CommandKind,
    pub attempt: u32,
    pub at: std::time::Instant,
}

#[derive(Clone)]
pub struct SimConfig {
    /// `http://127.0.0.1:port` (no trailing slash).
    pub base_url: String,
    /// The agent token.
    pub token: String,
    pub transport: Transport,
    /// The bots the agent says it runs in `hello` (its full snapshot).
    pub bots: Vec<BotSnapshot>,
    /// Send a heartbeat this often (the first one after a random part of it, like real agents'
    /// jitter); `None`: no heartbeats, the test sends them.
    pub heartbeat: Option<Duration>,
    pub auto: AutoMode,
    /// Send `hello` on connect and wait for the server's answer (`settings` on the WebSocket,
    /// an accepted frame on long-poll). Off for tests of what happens before hello.
    pub hello: bool,
    pub hostname: String,
    /// Reused by long-poll agents (a fleet shares one connection pool).
    pub client: Option<reqwest::Client>,
    pub label: usize,
    pub observer: Option<mpsc::UnboundedSender<Observed>>,
}

impl SimConfig {
    /// A manual WebSocket agent with no bots and no heartbeats.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: token.into(),
            transport: Transport::WebSocket,
            bots: Vec::new(),
            heartbeat: None,
            auto: AutoMode::Manual,
            hello: true,
            hostname: "sim.test".into(),
            client: None,
            label: 0,
            observer: None,
        }
    }

    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    pub fn bots(mut self, bots: Vec<BotSnapshot>) -> Self {
        self.bots = bots;
        self
    }

    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    pub fn auto(mut self, auto: AutoMode) -> Self {
        self.auto = auto;
        self
    }

    pub fn without_hello(mut self) -> Self {
        self.hello = false;
        self
    }

    pub fn observed(mut self, label: usize, observer: mpsc::UnboundedSender<Observed>) -> Self {
        self.label = label;
        self.observer = Some(observer);
        self
    }
}

/// Why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The server closed the WebSocket with this code (1005 when its close frame had none).
    Closed { code: u16, reason: String },
    /// The connection broke without a close frame.
    Lost(String),
    /// The long-poll transport was refused with this HTTP status.
    Refused(u16),
    /// The test dropped it ([`SimAgent::drop_connection`]) or the agent closed it.
    ByAgent,
}

/// An `error` frame from the server, or a refused frame of a long-poll POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: String,
    pub detail: String,
    /// Long-poll: the index of the refused frame in its POST.
    pub index: Option<u32>,
}

#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the connection: HTTP status of the WebSocket upgrade (or of the
    /// long-poll's first POST) and the body.
    Refused {
        status: u16,
        body: String,
    },
    /// The server answered `hello` with an error.
    Hello(FrameError),
    Other(anyhow::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused { status, body } => write!(f, "the server refused the agent: {status} {body}"),
            ConnectError::Hello(e) => write!(f, "hello refused: {} ({})", e.code, e.detail),
            ConnectError::Other(e) => write!(f, "cannot connect the agent: {e:#}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<anyhow::Error> for ConnectError {
    fn from(e: anyhow::Error) -> Self {
        ConnectError::Other(e)
    }
}

/// Unread commands kept for the test; in [`AutoMode::Run`] older ones are dropped beyond it.
const COMMAND_BUFFER: usize = 1024;

pub struct SimAgent {
    out: mpsc::UnboundedSender<Outgoing>,
    commands: mpsc::Receiver<CommandEnvelope>,
    cancels: mpsc::UnboundedReceiver<Uuid>,
    errors: mpsc::UnboundedReceiver<FrameError>,
    settings: watch::Receiver<Option<ServerSettings>>,
    closed: watch::Receiver<Option<Disconnect>>,
    shared: Arc<Shared>,
    hostname: String,
}

impl SimAgent {
    /// Connects, sends `hello` with the configured snapshot and waits (bounded) for the server
    /// to take it, unless [`SimConfig::without_hello`].
    pub async fn connect(config: SimConfig) -> Result<Self, ConnectError> {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands) = mpsc::channel(COMMAND_BUFFER);
        let (cancels_tx, cancels) = mpsc::unbounded_channel();
        let (errors_tx, errors) = mpsc::unbounded_channel();
        let (settings_tx, settings) = watch::channel(None);
        let (closed_tx, closed) = watch::channel(None);
        let shared = Arc::new(Shared {
            label: config.label,
            auto: config.auto,
            bots: Mutex::new(config.bots.iter().map(|b| (b.bot_id, b.clone())).collect()),
            journal: Mutex::default(),
            heartbeats_on: AtomicBool::new(true),
            pings: AtomicU64::new(0),
            next_pid: AtomicU32::new(10_000),
            observer: config.observer.clone(),
        });
        let link = Link {
            shared: shared.clone(),
            out: out_rx,
            commands: commands_tx,
            cancels: cancels_tx,
            errors: errors_tx,
            settings: settings_tx,
            heartbeat: config.heartbeat,
        };
        match config.transport {
            Transport::WebSocket => {
                let socket = ws::open(&config.base_url, &config.token).await?;
                tokio::spawn(ws::run(socket, link, closed_tx));
            }
            Transport::LongPoll { wait } => {
                let client = config.client.clone().unwrap_or_default();
                let endpoint =
                    poll::Endpoint { client, base_url: config.base_url.clone(), token: config.token.clone(), wait };
                tokio::spawn(poll::run(endpoint, link, closed_tx));
            }
        }
        let mut agent = Self {
            out: out_tx,
            commands,
            cancels,
            errors,
            settings,
            closed,
            shared,
            hostname: config.hostname.clone(),
        };
        if config.hello {
            agent.say_hello(config.transport).await?;
        }
        Ok(agent)
    }

    async fn say_hello(&mut self, transport: Transport) -> Result<(), ConnectError> {
        let outcome = match self.send_frames(vec![self.hello_frame()]).await {
            Ok(outcome) => outcome,
            Err(e) => {
                return Err(match self.disconnect() {
                    Some(Disconnect::Refused(status)) => ConnectError::Refused { status, body: format!("{e:#}") },
                    _ => ConnectError::Other(e),
                })
            }
        };
        if let Some(outcome) = outcome {
            if let Some(refused) = outcome.refused.into_iter().next() {
                // Already reported on the error channel too; take it back off.
                let _ = self.errors.try_recv();
                return Err(ConnectError::Hello(FrameError {
                    code: refused.code,
                    detail: refused.detail,
                    index: Some(refused.index),
                }));
            }
        }
        if transport == Transport::WebSocket {
            // The server answers hello with `settings`, or refuses it with `error`.
            let settings = tokio::time::timeout(Duration::from_secs(10), self.settings.wait_for(Option::is_some));
            tokio::select! {
                settings = settings => match settings {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => {
                        return Err(ConnectError::Other(anyhow::anyhow!(
                            "the connection ended ({:?}) before settings", self.closed.borrow().clone()
                        )))
                    }
                    Err(_) => return Err(ConnectError::Other(anyhow::anyhow!("no settings frame within 10 s of hello"))),
                },
                error = self.errors.recv() => {
                    return Err(match error {
                        Some(error) => ConnectError::Hello(error),
                        None => ConnectError::Other(anyhow::anyhow!("the connection ended before settings")),
                    });
                }
            }
        }
        Ok(())
    }

    /// The `hello` frame with the agent's current snapshot.
    pub fn hello_frame(&self) -> AgentFrame {
        AgentFrame::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "sim".into(),
            hostname: self.hostname.clone(),
            os: "linux".into(),
            arch: "x86_64".into(),
            bots: self.snapshot(),
        }
    }

    /// Sends `hello` now (for agents connected [`SimConfig::without_hello`]).
    pub async fn hello(&self) -> anyhow::Result<()> {
        self.send(self.hello_frame()).await
    }

    /// Sends frames in order; returns once they are written (WebSocket) or posted (long-poll:
    /// with the server's outcome; refused frames are also reported on [`SimAgent::next_error`]).
    pub async fn send_frames(&self, frames: Vec<AgentFrame>) -> anyhow::Result<Option<FramesOutcome>> {
        let (done, result) = oneshot::channel();
        self.out.send(Outgoing::Frames(frames, done)).map_err(|_| anyhow::anyhow!("the agent is disconnected"))?;
        result.await.map_err(|_| anyhow::anyhow!("the agent disconnected while sending"))?
    }

    pub async fn send(&self, frame: AgentFrame) -> anyhow::Result<()> {
        self.send_frames(vec![frame]).await.map(drop)
    }

    /// Sends text as it is: one WebSocket text message, or a long-poll POST body (then with the
    /// server's outcome when it answered 200; a refused body is reported on
    /// [`SimAgent::next_error`]).
    pub async fn send_raw(&self, text: impl Into<String>) -> anyhow::Result<Option<FramesOutcome>> {
        let (done, result) = oneshot::channel();
        self.out.send(Outgoing::Raw(text.into(), done)).map_err(|_| anyhow::anyhow!("the agent is disconnected"))?;
        result.await.map_err(|_| anyhow::anyhow!("the agent disconnected while sending"))?
    }

    pub async fn ack(&self, command_id: Uuid) -> anyhow::Result<()> {
        self.send(AgentFrame::Ack { command_id }).await
    }

    /// Sends a result and journals it (a real agent answers a redelivery from its journal).
    pub async fn result(&self, outcome: CommandOutcome) -> anyhow::Result<()> {
        lock(&self.shared.journal).insert(outcome.command_id, outcome.clone());
        self.send(AgentFrame::Result(outcome)).await
    }

    pub async fn succeed(&self, command_id: Uuid, result: serde_json::Value) -> anyhow::Result<()> {
        self.result(CommandOutcome { command_id, ok: true, result, error: None, superseded: false }).await
    }

    pub async fn fail(&self, command_id: Uuid, error: &str) -> anyhow::Result<()> {
        let outcome = CommandOutcome {
            command_id,
            ok: false,
            result: serde_json::Value::Null,
            error: Some(error.to_owned()),
            superseded: false,
        };
        self.result(outcome).await
    }

    /// The result this agent sent for a command, if any.
    pub fn journaled(&self, command_id: Uuid) -> Option<CommandOutcome> {
        lock(&self.shared.journal).get(&command_id).cloned()
    }

    /// Reports a transition and remembers it for the next `hello` snapshot.
    pub async fn report_state(&self, report: BotStateReport) -> anyhow::Result<()> {
        self.shared.remember(&report, None);
        self.send(AgentFrame::BotState(report)).await
    }

    /// Reports `state` (with `pid`) now.
    pub async fn report(&self, bot_id: Uuid, state: BotState, pid: Option<u32>) -> anyhow::Result<()> {
        self.report_state(state_report(bot_id, state, pid)).await
    }

    pub async fn send_logs(&self, bot_id: Uuid, lines: Vec<LogLine>) -> anyhow::Result<()> {
        self.send(AgentFrame::Logs { bot_id, lines }).await
    }

    pub async fn heartbeat(&self) -> anyhow::Result<()> {
        self.send(self.shared.heartbeat_frame()).await
    }

    /// Stops (or resumes) the automatic heartbeats while the connection stays open.
    pub fn set_heartbeats(&self, on: bool) {
        self.shared.heartbeats_on.store(on, Ordering::Relaxed);
    }

    /// The next command delivered to this agent.
    pub async fn next_command(&mut self, timeout: Duration) -> anyhow::Result<CommandEnvelope> {
        match tokio::time::timeout(timeout, self.commands.recv()).await {
            Ok(Some(command)) => Ok(command),
            Ok(None) => anyhow::bail!("the agent is disconnected ({:?}); no command", self.disconnect()),
            Err(_) => anyhow::bail!("no command within {timeout:?}"),
        }
    }

    /// A command already received and not yet taken, without waiting.
    pub fn try_next_command(&mut self) -> Option<CommandEnvelope> {
        self.commands.try_recv().ok()
    }

    /// The next `error` frame (or long-poll refusal).
    pub async fn next_error(&mut self, timeout: Duration) -> anyhow::Result<FrameError> {
        match tokio::time::timeout(timeout, self.errors.recv()).await {
            Ok(Some(error)) => Ok(error),
            Ok(None) => anyhow::bail!("the agent is disconnected ({:?}); no error frame", self.disconnect()),
            Err(_) => anyhow::bail!("no error frame within {timeout:?}"),
        }
    }

    /// An error already received and not yet taken, without waiting.
    pub fn try_next_error(&mut self) -> Option<FrameError> {
        self.errors.try_recv().ok()
    }

    /// The id of the next command the server tells the agent to stop.
    pub async fn next_cancel(&mut self, timeout: Duration) -> anyhow::Result<Uuid> {
        match tokio::time::timeout(timeout, self.cancels.recv()).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => anyhow::bail!("the agent is disconnected ({:?}); no cancel", self.disconnect()),
            Err(_) => anyhow::bail!("no cancel within {timeout:?}"),
        }
    }

    /// The latest `settings` from the server, waiting (bounded) for the first.
    pub async fn settings(&mut self, timeout: Duration) -> anyhow::Result<ServerSettings> {
        let waited = tokio::time::timeout(timeout, self.settings.wait_for(Option::is_some))
            .await
            .map_err(|_| anyhow::anyhow!("no settings frame within {timeout:?}"))?
            .map(|settings| settings.clone().unwrap_or_default());
        waited.map_err(|_| anyhow::anyhow!("the agent disconnected ({:?}) before settings", self.disconnect()))
    }

    /// Waits (bounded) until the connection ends and says how.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<Disconnect> {
        let end = tokio::time::timeout(timeout, self.closed.wait_for(Option::is_some))
            .await
            .map_err(|_| anyhow::anyhow!("the connection is still open after {timeout:?}"))?
            .map_err(|_| anyhow::anyhow!("the connection task vanished"))?;
        Ok(end.clone().unwrap_or(Disconnect::ByAgent))
    }

    /// How the connection ended, if it has.
    pub fn disconnect(&self) -> Option<Disconnect> {
        self.closed.borrow().clone()
    }

    /// Closes politely (a close frame) and waits for the end.
    pub async fn close(mut self) -> anyhow::Result<Disconnect> {
        let _ = self.out.send(Outgoing::Close);
        self.closed(Duration::from_secs(10)).await
    }

    /// Cuts the connection without a close frame (a crash, a pulled cable) and waits for it.
    pub async fn drop_connection(&mut self) -> anyhow::Result<()> {
        let _ = self.out.send(Outgoing::Drop);
        self.closed(Duration::from_secs(10)).await.map(drop)
    }

    /// `ping` frames received.
    pub fn pings(&self) -> u64 {
        self.shared.pings.load(Ordering::Relaxed)
    }

    /// What the agent runs now, as `hello` would say it.
    pub fn snapshot(&self) -> Vec<BotSnapshot> {
        lock(&self.shared.bots).values().cloned().collect()
    }
}

/// A transition of `bot_id` to `state`, now.
pub fn state_report(bot_id: Uuid, state: BotState, pid: Option<u32>) -> BotStateReport {
    BotStateReport {
        bot_id,
        state,
        pid,
        started_at: None,
        exit_code: None,
        exit_signal: None,
        restart_count: 0,
        error: None,
        at: Utc::now(),
    }
}

/// A bot as a snapshot entry says it runs.
pub fn snapshot_entry(bot_id: Uuid, state: BotState, pid: Option<u32>, definition_hash: &str) -> BotSnapshot {
    BotSnapshot { bot_id, state, pid, started_at: pid.map(|_| Utc::now()), definition_hash: definition_hash.to_owned() }
}

/// A stdout line with sequence number `seq`.
pub fn log_line(seq: u64, text: impl Into<String>) -> LogLine {
    LogLine { seq, stream: LogStream::Stdout, time: Utc::now(), text: text.into() }
}

/// Connects many agents, `concurrency` handshakes at a time; the result keeps `configs`' order.
pub async fn connect_fleet(configs: Vec<SimConfig>, concurrency: usize) -> Result<Vec<SimAgent>, ConnectError> {
    use futures::StreamExt as _;
    futures::stream::iter(configs.into_iter().map(SimAgent::connect))
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use botmox_contract::{
        bots::BotState,
        commands::CommandKind,
        protocol::{AgentFrame, CommandEnvelope, CommandOutcome, ServerFrame},
    };
    use serde_json::json;
    use uuid::Uuid;

    use super::{log_line, state_report};

    #[test]
    fn agent_frames_are_tagged_json() -> anyhow::Result<()> {
        let id = Uuid::now_v7();
        assert_eq!(
            serde_json::to_value(AgentFrame::Ack { command_id: id })?,
            json!({ "type": "ack", "command_id": id })
        );
        let outcome = CommandOutcome {
            command_id: id,
            ok: false,
            result: json!(null),
            error: Some("boom".into()),
            superseded: false,
        };
        assert_eq!(
            serde_json::to_value(AgentFrame::Result(outcome))?,
            json!({ "type": "result", "command_id": id, "ok": false, "result": null, "error": "boom" })
        );
        let report = serde_json::to_value(AgentFrame::BotState(state_report(id, BotState::Running, Some(7))))?;
        assert_eq!(
            (report["type"].as_str(), report["state"].as_str(), report["pid"].as_u64()),
            (Some("bot_state"), Some("running"), Some(7))
        );
        let logs = serde_json::to_value(AgentFrame::Logs { bot_id: id, lines: vec![log_line(3, "hi")] })?;
        assert_eq!((logs["type"].as_str(), logs["lines"][0]["seq"].as_u64()), (Some("logs"), Some(3)));
        assert_eq!(logs["lines"][0]["stream"], "stdout");
        Ok(())
    }

    #[test]
    fn server_frames_decode() -> anyhow::Result<()> {
        let id = Uuid::now_v7();
        let frame: ServerFrame = serde_json::from_value(json!({
            "type": "command", "id": id, "kind": "bot.start", "attempt": 2, "payload": {}, "bot": null,
            "secrets": { "PASSWORD": "s3cret" },
        }))?;
        let ServerFrame::Command(envelope) = frame else { anyhow::bail!("not a command: {frame:?}") };
        let CommandEnvelope { id: got, kind, attempt, secrets, .. } = *envelope;
        assert_eq!((got, kind, attempt), (id, CommandKind::BotStart, 2));
        assert_eq!(secrets["PASSWORD"], "s3cret");
        let frame: ServerFrame =
            serde_json::from_value(json!({ "type": "error", "code": "bad_frame", "detail": "x" }))?;
        assert_eq!(frame, ServerFrame::Error { code: "bad_frame".into(), detail: "x".into() });
        let frame: ServerFrame = serde_json::from_value(json!({ "type": "cancel", "command_id": id }))?;
        assert_eq!(frame, ServerFrame::Cancel { command_id: id });
        Ok(())
    }
}
