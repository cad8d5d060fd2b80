//! The connection task's side of a simulated agent, whatever the transport: what the test
//! asks it to send ([`Outgoing`]), the state it shares with the handle ([`Shared`]), its ends
//! of the channels ([`Link`]), and what it does with each server frame — including, in
//! [`AutoMode::Run`], answering commands like a healthy agent.

use std::{
    collections::{BTreeMap, HashMap},
    hash::BuildHasher,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use botmox_contract::{
    agents::{AgentMetrics, ServerSettings},
    bots::BotState,
    commands::CommandKind,
    protocol::{AgentFrame, BotSnapshot, BotStateReport, CommandEnvelope, CommandOutcome, FramesOutcome, ServerFrame},
};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{lock, state_report, AutoMode, FrameError, Observed};

/// What the test asks the connection task to do.
pub(super) enum Outgoing {
    /// Send frames in order; long-poll answers with the POST's outcome.
    Frames(Vec<AgentFrame>, oneshot::Sender<anyhow::Result<Option<FramesOutcome>>>),
    /// Send text as it is (malformed frames).
    Raw(String, oneshot::Sender<anyhow::Result<Option<FramesOutcome>>>),
    /// Close politely (WebSocket close frame).
    Close,
    /// Cut the connection without a close frame.
    Drop,
}

/// State shared by the handle and the connection task.
pub(super) struct Shared {
    pub(super) label: usize,
    pub(super) auto: AutoMode,
    pub(super) bots: Mutex<BTreeMap<Uuid, BotSnapshot>>,
    /// Results this agent sent, by command id (what the real agent journals).
    pub(super) journal: Mutex<HashMap<Uuid, CommandOutcome>>,
    pub(super) heartbeats_on: AtomicBool,
    pub(super) pings: AtomicU64,
    pub(super) next_pid: AtomicU32,
    pub(super) observer: Option<mpsc::UnboundedSender<Observed>>,
}

/// The connection task's ends of the channels.
pub(super) struct Link {
    pub(super) shared: Arc<Shared>,
    pub(super) out: mpsc::UnboundedReceiver<Outgoing>,
    pub(super) commands: mpsc::Sender<CommandEnvelope>,
    pub(super) cancels: mpsc::UnboundedSender<Uuid>,
    pub(super) errors: mpsc::UnboundedSender<FrameError>,
    pub(super) settings: watch::Sender<Option<ServerSettings>>,
    pub(super) heartbeat: Option<Duration>,
}

impl Shared {
    pub(super) fn heartbeat_frame(&self) -> AgentFrame {
        let running = lock(&self.bots).values().filter(|b| b.state == BotState::Running).count();
        AgentFrame::Heartbeat {
            metrics: AgentMetrics {
                cpu_percent: 1.5,
                memory_used_bytes: 512 << 20,
                memory_total_bytes: 4 << 30,
                disk_used_bytes: 10 << 30,
                disk_total_bytes: 40 << 30,
                load1: 0.1,
                bots_running: running as u32,
            },
        }
    }

    /// Keeps the snapshot in step with what the agent reported.
    pub(super) fn remember(&self, report: &BotStateReport, definition_hash: Option<&str>) {
        let mut bots = lock(&self.bots);
        let entry = bots.entry(report.bot_id).or_insert_with(|| BotSnapshot {
            bot_id: report.bot_id,
            state: report.state,
            pid: None,
            started_at: None,
            definition_hash: String::new(),
        });
        entry.state = report.state;
        entry.pid = report.pid;
        entry.started_at = report.started_at;
        if let Some(hash) = definition_hash {
            entry.definition_hash = hash.to_owned();
        }
    }

    /// Handles a frame from the server; returns the frames to answer with (in
    /// [`AutoMode::Run`]).
    pub(super) fn on_server_text(&self, link: &Link, text: &str) -> Vec<AgentFrame> {
        match serde_json::from_str::<ServerFrame>(text) {
            Ok(ServerFrame::Command(envelope)) => self.on_command(link, *envelope),
            Ok(ServerFrame::Cancel { command_id }) => {
                let _ = link.cancels.send(command_id);
                Vec::new()
            }
            Ok(ServerFrame::Settings(settings)) => {
                link.settings.send_replace(Some(settings));
                Vec::new()
            }
            Ok(ServerFrame::Ping { .. }) => {
                self.pings.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
            Ok(ServerFrame::Error { code, detail }) => {
                let _ = link.errors.send(FrameError { code, detail, index: None });
                Vec::new()
            }
            // A server bug; surface it where tests look for trouble.
            Err(e) => {
                let detail = format!("{e}: {}", text.chars().take(300).collect::<String>());
                let _ =
                    link.errors.send(FrameError { code: "sim_unreadable_server_frame".into(), detail, index: None });
                Vec::new()
            }
        }
    }

    pub(super) fn on_command(&self, link: &Link, envelope: CommandEnvelope) -> Vec<AgentFrame> {
        if let Some(observer) = &self.observer {
            let _ = observer.send(Observed {
                label: self.label,
                command_id: envelope.id,
                kind: envelope.kind,
                attempt: envelope.attempt,
                at: std::time::Instant::now(),
            });
        }
        let answer = match self.auto {
            AutoMode::Manual => Vec::new(),
            AutoMode::Run => self.execute(&envelope),
        };
        // Manual tests never leave 1024 commands unread; a busy Run fleet may drop the surplus.
        let _ = link.commands.try_send(envelope);
        answer
    }

    /// [`AutoMode::Run`]: what a healthy agent answers.
    pub(super) fn execute(&self, envelope: &CommandEnvelope) -> Vec<AgentFrame> {
        let ack = AgentFrame::Ack { command_id: envelope.id };
        if let Some(outcome) = lock(&self.journal).get(&envelope.id) {
            return vec![ack, AgentFrame::Result(outcome.clone())];
        }
        let bot_id = envelope
            .bot
            .as_ref()
            .map(|b| b.bot_id)
            .or_else(|| envelope.payload.get("bot_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok()));
        let mut frames = vec![ack];
        let mut result = serde_json::json!({});
        if let Some(bot_id) = bot_id {
            let report = match envelope.kind {
                CommandKind::BotStart | CommandKind::BotRestart => {
                    let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
                    result = serde_json::json!({ "pid": pid });
                    let mut report = state_report(bot_id, BotState::Running, Some(pid));
                    report.started_at = Some(report.at);
                    Some(report)
                }
                CommandKind::BotStop | CommandKind::BotRemove => Some(state_report(bot_id, BotState::Stopped, None)),
                _ => None,
            };
            if let Some(report) = report {
                self.remember(&report, envelope.bot.as_ref().map(|b| b.definition_hash.as_str()));
                if envelope.kind == CommandKind::BotRemove {
                    lock(&self.bots).remove(&bot_id);
                }
                frames.push(AgentFrame::BotState(report));
            }
        }
        let outcome = CommandOutcome { command_id: envelope.id, ok: true, result, error: None, superseded: false };
        lock(&self.journal).insert(envelope.id, outcome.clone());
        frames.push(AgentFrame::Result(outcome));
        frames
    }
}

impl Link {
    /// The heartbeat timer, its first tick after a random part of the period.
    pub(super) fn heartbeat_timer(&self) -> Option<tokio::time::Interval> {
        let every = self.heartbeat?;
        let random = std::collections::hash_map::RandomState::new().hash_one(self.shared.label);
        let first = every.mul_f64((random % 1000) as f64 / 1000.0);
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(timer)
    }

    pub(super) fn heartbeats_on(&self) -> bool {
        self.shared.heartbeats_on.load(Ordering::Relaxed)
    }
}

/// Ticks `timer`, or never when there is none.
pub(super) async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}
