//! The long-poll transport, for networks whose proxies break WebSockets: frames go up with
//! `POST /api/v1/agent/frames` (the answer confirms them, listing refusals), commands come
//! down from `GET /api/v1/agent/commands/next?wait=25`, held open by the server until there is
//! something to do. The same `hello` starts it; heartbeats are frames like any other.

use std::time::Duration;

use botmox_contract::protocol::{AgentFrame, FramesOutcome, PolledCommands};
use tokio::sync::watch;

use super::{problem_detail, Link, SessionEnd};

/// Seconds the server may hold a poll.
pub const WAIT_SECONDS: u64 = 25;

pub(super) async fn session(link: &Link, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
    match post(link, &[link.hello()]).await {
        Ok(outcome) => {
            if let Some(refusal) = outcome.refused.first() {
                return lost(false, format!("hello refused: {} ({})", refusal.detail, refusal.code));
            }
        }
        // Not connected yet, whatever the request said.
        Err(SessionEnd::Lost { reason, .. }) => return lost(false, reason),
        Err(end) => return end,
    }
    tracing::info!(server = %link.server(), "connected (HTTP long-poll)");
    link.set_status("connected", Some("poll"), None);
    let mut next = Box::pin(poll_next(link));
    let heartbeat = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(heartbeat);
    // Flush what was buffered while away, right after the hello.
    let mut pending = true;
    loop {
        if pending {
            pending = false;
            if let Err(end) = flush(link, Vec::new()).await {
                return end;
            }
        }
        tokio::select! {
            polled = &mut next => {
                match polled {
                    Ok(polled) => {
                        for envelope in polled.commands {
                            link.commands.handle(envelope);
                        }
                        for command_id in polled.cancel {
                            link.commands.cancel(command_id);
                        }
                    }
                    Err(end) => return end,
                }
                next = Box::pin(poll_next(link));
            }
            () = link.outbox.notified() => pending = true,
            () = &mut heartbeat => {
                if let Err(end) = flush(link, vec![link.heartbeat()]).await {
                    return end;
                }
                heartbeat.as_mut().reset(tokio::time::Instant::now() + link.heartbeat_delay());
            }
            () = link.reconnect.notified() => return SessionEnd::Reconnect,
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        }
    }
}

fn lost(greeted: bool, reason: String) -> SessionEnd {
    SessionEnd::Lost { greeted, reason }
}

/// Sends `extra` plus everything queued; frames that may not have arrived go back.
async fn flush(link: &Link, extra: Vec<AgentFrame>) -> Result<(), SessionEnd> {
    let mut frames = extra;
    loop {
        frames.extend(link.take_burst());
        if frames.is_empty() {
            return Ok(());
        }
        match post(link, &frames).await {
            Ok(outcome) => {
                link.confirmed(&frames);
                for refusal in outcome.refused {
                    tracing::warn!(code = %refusal.code, detail = %refusal.detail, "the server refused a frame");
                }
            }
            Err(end) => {
                link.outbox.requeue(frames);
                return Err(end);
            }
        }
        frames = Vec::new();
        if link.outbox.is_empty() {
            return Ok(());
        }
    }
}

async fn post(link: &Link, frames: &[AgentFrame]) -> Result<FramesOutcome, SessionEnd> {
    let response = link
        .http
        .post(link.url("/api/v1/agent/frames"))
        .bearer_auth(link.token())
        .json(frames)
        .send()
        .await
        .map_err(|e| lost(true, format!("sending frames failed: {e}")))?;
    match response.status().as_u16() {
        200 => response.json().await.map_err(|e| lost(true, format!("unexpected answer to frames: {e}"))),
        401 | 403 => {
            Err(SessionEnd::Revoked(format!("the server refused the agent token: {}", problem_detail(response).await)))
        }
        status => Err(lost(true, format!("frames answered {status}: {}", problem_detail(response).await))),
    }
}

async fn poll_next(link: &Link) -> Result<PolledCommands, SessionEnd> {
    let url = link.url(&format!("/api/v1/agent/commands/next?wait={WAIT_SECONDS}"));
    let response = link
        .poll_http
        .get(url)
        .bearer_auth(link.token())
        .send()
        .await
        .map_err(|e| lost(true, format!("polling failed: {e}")))?;
    match response.status().as_u16() {
        200 => response.json().await.map_err(|e| lost(true, format!("unexpected answer to a poll: {e}"))),
        401 | 403 => {
            Err(SessionEnd::Revoked(format!("the server refused the agent token: {}", problem_detail(response).await)))
        }
        // `hello_first`: the server forgot us (marked offline): say hello again.
        status => Err(lost(true, format!("a poll answered {status}: {}", problem_detail(response).await))),
    }
}
