//! The long-poll transport, for networks whose proxies break WebSockets: the agent sends its
//! frames with `POST /agent/frames` and waits for commands with `GET /agent/commands/next`.
//! The same [`AgentSession`] and dispatch code run behind it as behind the WebSocket.

use std::time::Duration;

use axum::extract::State;
use botmox_contract::{
    problem::Problem,
    protocol::{FramesOutcome, PolledCommands, RefusedFrame},
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{dispatch, hub::Control, session::AgentSession};
use crate::{
    auth::Principal,
    http::{
        error::{ApiError, ApiResult},
        extract::{AgentJson, Query},
    },
    state::AppState,
};

/// The longest a poll may wait.
pub const MAX_WAIT_SECONDS: u64 = 30;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// Seconds to wait for a command when none is queued (0 to 30, default 25).
    wait: Option<u64>,
}

fn agent_of(principal: &Principal) -> ApiResult<uuid::Uuid> {
    principal.agent_id().ok_or_else(|| ApiError::Forbidden("only agents poll".into()))
}

/// A long-polling agent must have said `hello` (through `POST /agent/frames`) first.
async fn greeted_session(state: &AppState, principal: &Principal) -> ApiResult<AgentSession> {
    let agent_id = agent_of(principal)?;
    let present = state.store.agent_present(principal.tenant_id, agent_id).await?;
    let mut session = AgentSession::new(state.clone(), principal.tenant_id, agent_id);
    if present {
        session.mark_greeted();
    }
    Ok(session)
}

/// Wait for commands (long-poll transport).
#[utoipa::path(
    get, path = "/agent/commands/next", tag = "agent",
    security(("agent" = [])),
    params(NextQuery),
    responses(
        (status = 200, description = "Commands now leased to the agent (empty after `wait` with nothing to do), and commands to cancel", body = PolledCommands),
        (status = 409, description = "`hello` was not sent yet", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn next(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<NextQuery>,
) -> ApiResult<axum::Json<PolledCommands>> {
    let wait = query.wait.unwrap_or(25);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::bad_request("invalid_query", format!("`wait` is at most {MAX_WAIT_SECONDS} seconds")));
    }
    let session = greeted_session(&state, &principal).await?;
    if !session.greeted() {
        return Err(ApiError::Conflict {
            code: "hello_first",
            detail: "send a `hello` frame with POST /api/v1/agent/frames before polling".into(),
        });
    }
    let agent_id = session.agent_id;
    if state.shutdown.is_cancelled() {
        // Going away: answer at once so the agent reconnects elsewhere (or to us, restarted).
        return Ok(axum::Json(PolledCommands { commands: Vec::new(), cancel: Vec::new() }));
    }
    let mut registration = state.hub.register(agent_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut cancel = state.hub.take_pending_cancels(agent_id);
    let outcome = loop {
        let mut claimed = match dispatch::claim(&state, principal.tenant_id, agent_id).await {
            Ok(claimed) => claimed,
            Err(e) => break Err(ApiError::from(e)),
        };
        let commands = std::mem::take(&mut claimed.envelopes);
        claimed.announce(&state).await;
        if !commands.is_empty() || !cancel.is_empty() {
            break Ok(PolledCommands { commands, cancel });
        }
        tokio::select! {
            () = registration.wake.notified() => {}
            control = registration.control.recv() => match control {
                Some(Control::Cancel(id)) => cancel.push(id),
                // Replaced by a newer poll, revoked, or shutting down: answer now.
                _ => break Ok(PolledCommands { commands: Vec::new(), cancel }),
            },
            () = tokio::time::sleep_until(deadline) => break Ok(PolledCommands { commands: Vec::new(), cancel }),
            () = state.shutdown.cancelled() => break Ok(PolledCommands { commands: Vec::new(), cancel }),
        }
    };
    state.hub.unregister(agent_id, registration.conn_id);
    outcome.map(axum::Json)
}

/// Send agent frames (long-poll transport), applied in order.
#[utoipa::path(
    post, path = "/agent/frames", tag = "agent",
    security(("agent" = [])),
    request_body = Vec<botmox_contract::protocol::AgentFrame>,
    responses(
        (status = 200, description = "Which frames were refused, and why; refused frames changed nothing", body = FramesOutcome),
        (status = 409, description = "`hello` was not sent yet (or the agent was marked offline since) and the frames do not start with one: nothing was applied; send `hello`, then the frames again", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn frames(
    State(state): State<AppState>,
    principal: Principal,
    AgentJson(frames): AgentJson<Vec<serde_json::Value>>,
) -> ApiResult<axum::Json<FramesOutcome>> {
    let mut session = greeted_session(&state, &principal).await?;
    // Not greeted (never, or marked offline since: a stalled network): the request is
    // refused as a whole, so the agent keeps its frames, says `hello` and sends them again.
    // Refused one by one, they would be answered — and a result dropped by the agent for good.
    let starts_with_hello = frames.first().is_some_and(|f| f.get("type").and_then(|t| t.as_str()) == Some("hello"));
    if !session.greeted() && !starts_with_hello {
        return Err(ApiError::Conflict {
            code: "hello_first",
            detail: "send a `hello` frame first (this agent is not connected now): nothing was applied".into(),
        });
    }
    let mut outcome = FramesOutcome { accepted: 0, refused: Vec::new() };
    let frames = frames
        .into_iter()
        .map(|frame| {
            serde_json::from_value(frame)
                .map_err(|e| super::session::FrameError::new("malformed_frame", format!("not an agent frame: {e}")))
        })
        .collect();
    let answers = session.handle_batch(frames).await;
    // A frame the store could not take now: the whole request is refused as retryable (the
    // agent sends every frame again; what did apply is a no-op the second time).
    if let Some(refusal) = answers.iter().find_map(|a| a.as_ref().err().filter(|r| r.is_retryable())) {
        return Err(ApiError::Unavailable(refusal.detail.clone()));
    }
    for (index, result) in answers.into_iter().enumerate() {
        match result {
            Ok(()) => outcome.accepted += 1,
            Err(refusal) => outcome.refused.push(RefusedFrame {
                index: index as u32,
                code: refusal.code.into(),
                detail: refusal.detail,
            }),
        }
    }
    Ok(axum::Json(outcome))
}
