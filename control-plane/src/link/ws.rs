//! The agent's WebSocket (`GET /agent/connect`): one reader loop applying frames through
//! [`AgentSession`], one writer task, and after `hello` a dispatcher that pushes commands the
//! moment they are queued (woken by the [`Hub`](super::hub::Hub), never by a polling interval).

use std::time::Duration;

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket, WebSocketUpgrade},
        State,
    },
    response::Response,
};
use botmox_contract::{
    agents::ServerSettings,
    protocol::{AgentFrame, CommandEnvelope, ServerFrame},
    Id,
};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::{
    dispatch,
    hub::{Control, CLOSE_RETRY, CLOSE_SHUTDOWN},
    session::{AgentSession, FrameError},
};
use crate::{
    auth::Principal,
    http::error::{ApiError, ApiResult},
    state::AppState,
};

/// Frames larger than this are refused (with an error frame); the transport cuts the
/// connection at twice this size.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// A dispatcher re-checks its queue this often (plus jitter) even without a wake-up: a safety
/// net for a wake-up lost between replicas, not the delivery path. Rare, because with 10,000
/// agents every re-check is a claim statement.
const SAFETY_RECHECK: Duration = Duration::from_secs(60);
const PING_EVERY: Duration = Duration::from_secs(20);
/// A failed claim is tried again after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Frames applied together at most (one read batch).
const MAX_READ_BATCH: usize = 256;
/// Frames written together at most (one flush).
const MAX_WRITE_BATCH: usize = 64;

/// What the writer sends.
enum Outbound {
    Frame(ServerFrame),
    Ping,
    Close(u16, &'static str),
}

/// The agent's persistent connection.
#[utoipa::path(
    get, path = "/agent/connect", tag = "agent",
    security(("agent" = [])),
    responses(
        (status = 101, description = "WebSocket: JSON `AgentFrame`s up, `ServerFrame`s down; the first frame must be `hello`"),
        (status = 401, description = "Not a valid agent token"),
    )
)]
pub async fn connect(
    State(state): State<AppState>,
    principal: Principal,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let agent_id = principal.agent_id().ok_or_else(|| ApiError::Forbidden("only agents connect".into()))?;
    let ws = ws.map_err(|rejection| ApiError::Request {
        status: axum::http::StatusCode::UPGRADE_REQUIRED,
        code: "websocket_required",
        detail: format!("this endpoint is a WebSocket: {}", rejection.body_text()),
        field: None,
        hint: Some(
            "where WebSockets are blocked, use GET /api/v1/agent/commands/next and POST /api/v1/agent/frames".into(),
        ),
    })?;
    let tenant_id = principal.tenant_id;
    // Small buffers: tungstenite's defaults (128 KiB to read, 128 KiB to write) would cost
    // over 1 GB at 10,000 agents; frames are small and a large one just takes more reads.
    Ok(ws
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(2 * MAX_FRAME_BYTES)
        .max_frame_size(2 * MAX_FRAME_BYTES)
        .on_upgrade(move |socket| run(state, tenant_id, agent_id, socket)))
}

pub fn server_settings(state: &AppState) -> ServerSettings {
    ServerSettings {
        heartbeat_interval_s: state.settings.heartbeat_interval.as_secs().max(1),
        max_frame_bytes: MAX_FRAME_BYTES as u64,
        max_log_batch: super::session::MAX_LOG_LINES as u32,
    }
}

fn encode(frame: &ServerFrame) -> Message {
    Message::Text(serde_json::to_string(frame).unwrap_or_default().into())
}

async fn run(state: AppState, tenant_id: Id, agent_id: Id, socket: WebSocket) {
    let mut registration = state.hub.register(agent_id);
    let (mut sink, mut stream) = socket.split();
    let (out, mut outbound) = mpsc::channel::<Outbound>(256);

    // Held by the reader while it applies a read batch, by the writer for each burst it sends.
    let write_gate = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let writer_gate = write_gate.clone();
    // Every frame already queued goes out in one write (one flush, not one per frame).
    let writer = tokio::spawn(async move {
        let mut items = Vec::with_capacity(MAX_WRITE_BATCH);
        'write: while outbound.recv_many(&mut items, MAX_WRITE_BATCH).await > 0 {
            let _gate = writer_gate.lock().await;
            for item in items.drain(..) {
                let message = match item {
                    Outbound::Frame(frame) => encode(&frame),
                    Outbound::Ping => Message::Ping(Vec::new().into()),
                    Outbound::Close(code, reason) => {
                        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        break 'write;
                    }
                };
                if sink.feed(message).await.is_err() {
                    break 'write;
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
    });

    let mut session = AgentSession::new(state.clone(), tenant_id, agent_id);
    let mut dispatcher: Option<tokio::task::JoinHandle<()>> = None;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                // A read batch: this message and every text frame already received after it,
                // applied together (acks and results in one statement each). While it is
                // applied the writer waits at the gate: a ping read here must not be answered
                // (the agent's confirmation of everything before it) until all is applied.
                let mut batch = Vec::new();
                let mut after = None;
                match message {
                    Some(Ok(Message::Text(text))) => batch.push(parse_frame(&text)),
                    other => after = Some(other),
                }
                let gate = if batch.is_empty() { None } else { Some(write_gate.lock().await) };
                while after.is_none() && !batch.is_empty() && batch.len() < MAX_READ_BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(Ok(Message::Text(text)))) => batch.push(parse_frame(&text)),
                        Some(other) => after = Some(other),
                        None => break,
                    }
                }
                let first = !session.greeted();
                let refusals: Vec<FrameError> =
                    session.handle_batch(batch).await.into_iter().filter_map(Result::err).collect();
                drop(gate);
                if first && session.greeted() {
                    let _ = out.send(Outbound::Frame(ServerFrame::Settings(server_settings(&state)))).await;
                    let deliveries = state.hub.open_deliveries(agent_id, registration.conn_id);
                    dispatcher = Some(tokio::spawn(dispatch_loop(
                        state.clone(), tenant_id, agent_id, registration.wake.clone(), deliveries, out.clone(),
                    )));
                }
                // A frame the store could not take now: say so (the agent then treats every
                // unconfirmed burst as unsent, even if the pong that follows would confirm
                // it), and close, so the agent reconnects with backoff and sends it again.
                let retry = refusals.iter().any(FrameError::is_retryable);
                for refusal in refusals {
                    let _ = out.send(error_frame(refusal)).await;
                }
                if retry {
                    let _ = out.send(Outbound::Close(CLOSE_RETRY, "the server's database is unavailable: reconnect and send again")).await;
                    break;
                }
                match after {
                    None | Some(Some(Ok(Message::Text(_)))) => {}
                    Some(Some(Ok(Message::Binary(_)))) => {
                        let _ = out.send(error_frame(FrameError::new("malformed_frame", "frames are JSON text"))).await;
                    }
                    Some(Some(Ok(Message::Close(_))) | None) => break,
                    Some(Some(Ok(_))) => {}
                    Some(Some(Err(e))) => {
                        tracing::info!(%agent_id, error = %e, "agent connection failed");
                        break;
                    }
                }
            }
            control = registration.control.recv() => match control {
                Some(Control::Close { code, reason }) => {
                    tracing::info!(%agent_id, code, reason, "closing agent connection");
                    let _ = out.send(Outbound::Close(code, reason)).await;
                    break;
                }
                Some(Control::Cancel(command_id)) => {
                    let _ = out.send(Outbound::Frame(ServerFrame::Cancel { command_id })).await;
                }
                None => break,
            },
            _ = ping.tick() => {
                let _ = out.send(Outbound::Ping).await;
            }
        }
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher.abort();
    }
    drop(out);
    let _ = writer.await;
    let was_current = state.hub.unregister(agent_id, registration.conn_id);
    // A replaced connection leaves the agent's state to the one that replaced it.
    if session.greeted() && was_current {
        session.close().await;
    }
}

/// Parses one text frame (refusing one over the size limit).
fn parse_frame(text: &str) -> Result<AgentFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::new("frame_too_large", format!("frames are at most {MAX_FRAME_BYTES} bytes")));
    }
    let malformed = |e: serde_json::Error| FrameError::new("malformed_frame", format!("not an agent frame: {e}"));
    if !crate::http::extract::may_hold_nul(text.as_bytes()) {
        return serde_json::from_str(text).map_err(malformed);
    }
    // Text with NUL characters (which the store cannot keep) has them replaced, as on long-poll.
    let mut document: serde_json::Value = serde_json::from_str(text).map_err(malformed)?;
    crate::http::extract::replace_nul(&mut document);
    serde_json::from_value(document).map_err(malformed)
}

fn error_frame(refusal: FrameError) -> Outbound {
    Outbound::Frame(ServerFrame::Error { code: refusal.code.into(), detail: refusal.detail })
}

/// Pushes the agent's commands: those handed over already dispatched (`deliveries`, see
/// `control::announce`) as they come, and the queued ones it claims (claim, send, wait for a
/// wake-up).
async fn dispatch_loop(
    state: AppState,
    tenant_id: Id,
    agent_id: Id,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut deliveries: Option<mpsc::UnboundedReceiver<Vec<CommandEnvelope>>>,
    out: mpsc::Sender<Outbound>,
) {
    let send = |envelopes: Vec<CommandEnvelope>| {
        let out = out.clone();
        async move {
            for envelope in envelopes {
                // The connection is gone: the lease brings the command back to the queue.
                out.send(Outbound::Frame(ServerFrame::Command(Box::new(envelope)))).await.map_err(|_| ())?;
            }
            Ok::<_, ()>(())
        }
    };
    // After a failed claim (the store busy or away), try again soon rather than waiting for
    // the next wake-up: the commands that woke us are still queued, and nothing else may come.
    let mut retry = RETRY_FIRST;
    loop {
        match dispatch::claim(&state, tenant_id, agent_id).await {
            Ok(mut claimed) => {
                retry = RETRY_FIRST;
                let full = claimed.full;
                if send(std::mem::take(&mut claimed.envelopes)).await.is_err() {
                    return;
                }
                claimed.announce(&state).await;
                if full {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(%agent_id, error = %e, retry_ms = retry.as_millis() as u64, "dispatch failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = out.closed() => return,
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        }
        let recheck = tokio::time::sleep(SAFETY_RECHECK + Duration::from_millis(rand::random::<u64>() % 10_000));
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                () = wake.notified() => break,
                () = &mut recheck => break,
                () = out.closed() => return,
                Some(envelopes) = async { deliveries.as_mut()?.recv().await } => {
                    if send(envelopes).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Asks every agent connected here to reconnect (graceful shutdown).
pub fn close_all(state: &AppState) {
    state.hub.close_all(CLOSE_SHUTDOWN, "server shutting down: reconnect");
}
