//! The WebSocket transport: `GET /api/v1/agent/connect` with the agent token, `hello`, then
//! server frames in and agent frames out over one socket.
//!
//! **Confirmed delivery.** A frame written to a socket is not a frame applied: if the
//! connection breaks, whatever sat in buffers is lost. After each burst of frames the agent
//! sends a WebSocket ping carrying a burst number; the server reads (and applies) frames in
//! order and answers the ping only after the frames before it, so a pong confirms the whole
//! burst. Unconfirmed bursts go back to the outbox when the connection ends and are sent
//! again after the next `hello` (the server treats repeats as no-ops).

use std::collections::VecDeque;

use botmox_contract::{
    problem::Problem,
    protocol::{AgentFrame, ServerFrame},
};
use futures::{SinkExt as _, StreamExt as _};
use tokio::{net::TcpStream, sync::watch};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest as _, protocol::WebSocketConfig, Message},
    Connector, MaybeTlsStream, WebSocketStream,
};

use super::{ws_url, Link, SessionEnd};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Close codes of the server (`link/hub.rs`).
const CLOSE_REPLACED: u16 = 4000;
const CLOSE_REVOKED: u16 = 4001;
const CLOSE_SHUTDOWN: u16 = 4002;
const CLOSE_RETRY: u16 = 4004;
/// The error code of a frame the server could not apply just now (its database away).
const UNAVAILABLE: &str = "unavailable";

pub(super) async fn session(link: &Link, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
    let mut socket = match open(link).await {
        Ok(socket) => socket,
        Err(end) => return end,
    };
    let hello = link.hello();
    if let Err(e) = send(&mut socket, &hello).await {
        return lost(false, format!("sending hello failed: {e}"));
    }
    let mut bursts: VecDeque<(u64, Vec<AgentFrame>)> = VecDeque::new();
    let end = exchange(link, &mut socket, &mut bursts, shutdown).await;
    // Whatever the server did not confirm is sent again after the next hello.
    for (_, frames) in bursts.into_iter().rev() {
        link.outbox.requeue(frames);
    }
    end
}

async fn open(link: &Link) -> Result<Socket, SessionEnd> {
    let url = ws_url(&link.server()).map_err(|e| lost(false, e.to_string()))?;
    let mut request = url.into_client_request().map_err(|e| lost(false, format!("bad server URL: {e}")))?;
    let bearer = format!("Bearer {}", link.token())
        .parse()
        .map_err(|_| lost(false, "the token is not a valid header".into()))?;
    request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, bearer);
    let max = (link.settings().max_frame_bytes as usize).clamp(1 << 20, 64 << 20);
    let config = WebSocketConfig::default().max_message_size(Some(2 * max)).max_frame_size(Some(2 * max));
    let connector = Connector::Rustls(link.tls.clone());
    let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector));
    match tokio::time::timeout(std::time::Duration::from_secs(15), connecting).await {
        Err(_) => Err(lost(false, "the WebSocket handshake did not finish within 15 s".into())),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            let detail = match serde_json::from_slice::<Problem>(body) {
                Ok(problem) => format!("{} ({})", problem.detail, problem.code),
                Err(_) => format!("HTTP {status}"),
            };
            Err(match status {
                401 => SessionEnd::Revoked(format!("the server refused the agent token: {detail}")),
                403 => SessionEnd::Revoked(format!("the server refused this credential: {detail}")),
                // What proxies that do not pass WebSockets answer (426 is the server's own
                // "use long-poll" hint).
                400 | 404 | 405 | 426 => SessionEnd::WsUnsupported(format!("WebSocket upgrade refused: {detail}")),
                _ => lost(false, format!("the server answered {detail}")),
            })
        }
        Ok(Err(tungstenite::Error::Protocol(e))) => {
            Err(SessionEnd::WsUnsupported(format!("WebSocket handshake failed: {e}")))
        }
        Ok(Err(e)) => Err(lost(false, format!("cannot connect: {e}"))),
    }
}

fn lost(greeted: bool, reason: String) -> SessionEnd {
    SessionEnd::Lost { greeted, reason }
}

async fn send(socket: &mut Socket, frame: &AgentFrame) -> Result<(), tungstenite::Error> {
    let text = serde_json::to_string(frame).unwrap_or_default();
    socket.send(Message::text(text)).await
}

async fn exchange(
    link: &Link,
    socket: &mut Socket,
    bursts: &mut VecDeque<(u64, Vec<AgentFrame>)>,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut greeted = false;
    let mut next_burst: u64 = 0;
    let heartbeat = tokio::time::sleep(link.heartbeat_delay());
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let frame = match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(frame) => frame,
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring a server frame this agent does not understand");
                            continue;
                        }
                    };
                    if let ServerFrame::Error { code, detail } = &frame {
                        if !greeted {
                            return lost(false, format!("hello refused: {detail} ({code})"));
                        }
                        // Not applied, and the pong that may follow would wrongly confirm
                        // the burst: end here, so every unconfirmed burst is sent again after
                        // the next hello (repeats are no-ops on the server).
                        if code == UNAVAILABLE {
                            return lost(true, format!("the server could not apply a frame: {detail}"));
                        }
                    }
                    if link.on_server_frame(frame).is_some() && !greeted {
                        // `settings` follows an accepted hello: connected.
                        greeted = true;
                        tracing::info!(server = %link.server(), "connected (WebSocket)");
                        link.set_status("connected", Some("websocket"), None);
                        if let Err(e) = flush(link, socket, bursts, &mut next_burst).await {
                            return lost(true, format!("sending failed: {e}"));
                        }
                        heartbeat.as_mut().reset(tokio::time::Instant::now());
                    }
                }
                Some(Ok(Message::Pong(payload))) => {
                    if let Ok(bytes) = <[u8; 8]>::try_from(payload.as_ref()) {
                        let confirmed = u64::from_be_bytes(bytes);
                        while bursts.front().is_some_and(|(n, _)| *n <= confirmed) {
                            if let Some((_, frames)) = bursts.pop_front() {
                                link.confirmed(&frames);
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    return match code {
                        CLOSE_REVOKED => SessionEnd::Revoked(format!("the server revoked this agent (close code {code}: {reason})")),
                        CLOSE_REPLACED => {
                            tracing::warn!("another connection with this agent's token replaced this one (is a second agent running with the same credentials?)");
                            lost(greeted, format!("replaced by another connection (close code {code})"))
                        }
                        CLOSE_SHUTDOWN => lost(greeted, format!("the server is shutting down (close code {code}): reconnecting")),
                        CLOSE_RETRY => lost(greeted, format!("the server could not apply a frame (close code {code}): sending it again")),
                        _ => lost(greeted, format!("the server closed the connection (close code {code}: {reason})")),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return lost(greeted, format!("connection lost: {e}")),
                None => return lost(greeted, "the server ended the connection".into()),
            },
            () = link.outbox.notified(), if greeted => {
                if let Err(e) = flush(link, socket, bursts, &mut next_burst).await {
                    return lost(true, format!("sending failed: {e}"));
                }
            }
            () = &mut heartbeat, if greeted => {
                if let Err(e) = send(socket, &link.heartbeat()).await {
                    return lost(true, format!("sending a heartbeat failed: {e}"));
                }
                heartbeat.as_mut().reset(tokio::time::Instant::now() + link.heartbeat_delay());
            }
            () = link.reconnect.notified() => {
                let _ = socket.close(None).await;
                return SessionEnd::Reconnect;
            }
            _ = shutdown.changed() => {
                let _ = socket.close(None).await;
                return SessionEnd::Shutdown;
            }
        }
    }
}

/// Sends everything queued, in bursts, each followed by its confirming ping.
async fn flush(
    link: &Link,
    socket: &mut Socket,
    bursts: &mut VecDeque<(u64, Vec<AgentFrame>)>,
    next_burst: &mut u64,
) -> Result<(), tungstenite::Error> {
    loop {
        let frames = link.take_burst();
        if frames.is_empty() {
            return Ok(());
        }
        *next_burst += 1;
        let n = *next_burst;
        bursts.push_back((n, frames));
        let Some((_, frames)) = bursts.back() else { return Ok(()) };
        for frame in frames {
            let text = serde_json::to_string(frame).unwrap_or_default();
            socket.feed(Message::text(text)).await?;
        }
        socket.feed(Message::Ping(n.to_be_bytes().to_vec().into())).await?;
        socket.flush().await?;
    }
}
