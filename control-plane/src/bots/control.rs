//! Bot control: start, stop, restart (one bot, or many by ids or filter). Each sets the bot's
//! desired state and queues the command for its agent, which receives it at once if connected.

use std::time::Duration;

use axum::{extract::State, http::StatusCode};
use botmox_contract::{
    bots::{Bot, DesiredState},
    commands::{BotAction, BulkAccepted, BulkAction, CommandAccepted, CommandKind, SkippedBot},
    events::EventPayload,
    problem::Problem,
};
use uuid::Uuid;

use crate::{
    auth::Principal,
    commands::{submit, IdempotencyKey, Submission},
    http::{
        error::{ApiError, ApiResult},
        extract::{Json, Path},
    },
    state::AppState,
    store::BotFilter,
};

/// The most bots one bulk action may touch.
pub const MAX_BULK: usize = 1000;

async fn act(
    state: &AppState,
    principal: &Principal,
    bot: Bot,
    action: BotAction,
    idempotency_key: Option<String>,
) -> ApiResult<CommandAccepted> {
    let (desired, kind) = match action {
        BotAction::Start => (DesiredState::Running, CommandKind::BotStart),
        BotAction::Stop => (DesiredState::Stopped, CommandKind::BotStop),
        BotAction::Restart => (DesiredState::Running, CommandKind::BotRestart),
    };
    let accepted = submit(
        state,
        Submission {
            tenant_id: principal.tenant_id,
            agent_id: bot.agent_id,
            bot_id: Some(bot.id),
            kind,
            payload: serde_json::json!({}),
            idempotency_key,
            created_by: principal.actor(),
            extra_run_time: Duration::from_secs(bot.stop.timeout_seconds),
        },
    )
    .await?;
    if bot.desired_state != desired {
        let bot = state.store.set_desired_state(principal.tenant_id, bot.id, desired, state.clock.now()).await?;
        state.publish(principal.tenant_id, EventPayload::BotState((&bot).into())).await;
    }
    Ok(accepted)
}

async fn single(
    state: AppState,
    principal: Principal,
    id: Uuid,
    action: BotAction,
    key: Option<String>,
) -> ApiResult<(StatusCode, axum::Json<CommandAccepted>)> {
    let bot = state.store.get_bot(principal.tenant_id, id).await?;
    let accepted = act(&state, &principal, bot, action, key).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)))
}

/// Start a bot (it should run from now on).
#[utoipa::path(
    post, path = "/bots/{id}/start", tag = "bots",
    security(("bearer" = ["bots:control"])),
    params(("id" = Uuid, Path, description = "Bot id"), ("Idempotency-Key" = Option<String>, Header, description = "A repeat returns the first command")),
    responses(
        (status = 202, description = "Queued (and sent, if the agent is connected)", body = CommandAccepted),
        (status = 404, description = "No such bot", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_bot(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
) -> ApiResult<(StatusCode, axum::Json<CommandAccepted>)> {
    single(state, principal, id, BotAction::Start, key).await
}

/// Stop a bot (it should stay stopped).
#[utoipa::path(
    post, path = "/bots/{id}/stop", tag = "bots",
    security(("bearer" = ["bots:control"])),
    params(("id" = Uuid, Path, description = "Bot id"), ("Idempotency-Key" = Option<String>, Header, description = "A repeat returns the first command")),
    responses(
        (status = 202, description = "Queued (and sent, if the agent is connected)", body = CommandAccepted),
        (status = 404, description = "No such bot", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stop_bot(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
) -> ApiResult<(StatusCode, axum::Json<CommandAccepted>)> {
    single(state, principal, id, BotAction::Stop, key).await
}

/// Restart a bot (stop, then start; it should run afterwards).
#[utoipa::path(
    post, path = "/bots/{id}/restart", tag = "bots",
    security(("bearer" = ["bots:control"])),
    params(("id" = Uuid, Path, description = "Bot id"), ("Idempotency-Key" = Option<String>, Header, description = "A repeat returns the first command")),
    responses(
        (status = 202, description = "Queued (and sent, if the agent is connected)", body = CommandAccepted),
        (status = 404, description = "No such bot", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn restart_bot(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
) -> ApiResult<(StatusCode, axum::Json<CommandAccepted>)> {
    single(state, principal, id, BotAction::Restart, key).await
}

/// Start, stop or restart many bots: by `ids`, or by `filter` (at most 1000 bots).
#[utoipa::path(
    post, path = "/bots/actions", tag = "bots",
    security(("bearer" = ["bots:control"])),
    request_body = BulkAction,
    responses(
        (status = 202, description = "The commands queued, and the bots skipped with why", body = BulkAccepted),
        (status = 422, description = "Neither or both of ids and filter, or too many bots", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bulk_action(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<BulkAction>,
) -> ApiResult<(StatusCode, axum::Json<BulkAccepted>)> {
    let bots: Vec<Result<Bot, (Uuid, String)>> = match (body.ids, body.filter) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_BULK {
                return Err(ApiError::invalid_field("ids", format!("1 to {MAX_BULK} bot ids")));
            }
            let mut bots = Vec::with_capacity(ids.len());
            for id in ids {
                bots.push(
                    state.store.get_bot(principal.tenant_id, id).await.map_err(|_| (id, "no such bot".to_owned())),
                );
            }
            bots
        }
        (None, Some(selector)) => {
            let filter = BotFilter {
                state: selector.state,
                agent_id: selector.agent_id,
                tag: selector.tag,
                name: selector.name.filter(|n| !n.is_empty()),
                after_name: None,
                limit: MAX_BULK as u32,
            };
            let page = state.store.list_bots(principal.tenant_id, &filter).await?;
            if page.has_more {
                return Err(ApiError::invalid_field(
                    "filter",
                    format!("matches {} bots; a bulk action takes at most {MAX_BULK}: narrow the filter", page.total),
                ));
            }
            page.items.into_iter().map(Ok).collect()
        }
        _ => return Err(ApiError::invalid_field("ids", "give exactly one of `ids` and `filter`")),
    };
    let mut accepted = BulkAccepted { commands: Vec::new(), skipped: Vec::new() };
    for bot in bots {
        match bot {
            Ok(bot) => {
                let bot_id = bot.id;
                match act(&state, &principal, bot, body.action, None).await {
                    Ok(done) => accepted.commands.push(done.command),
                    Err(e) => accepted.skipped.push(SkippedBot { bot_id, reason: e.to_string() }),
                }
            }
            Err((bot_id, reason)) => accepted.skipped.push(SkippedBot { bot_id, reason }),
        }
    }
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)))
}
