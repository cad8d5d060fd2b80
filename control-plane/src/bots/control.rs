//! Bot control: start, stop, restart (one bot, or many by ids or filter): the HTTP side of
//! the command service (`control`), which sets the desired state and queues the command in
//! one transaction; the agent receives it at once if connected.

use axum::{extract::State, http::StatusCode};
use botmox_contract::{
    commands::{BotAction, BulkAccepted, BulkAction, CommandAccepted},
    problem::Problem,
};
use uuid::Uuid;

use crate::{
    auth::Principal,
    commands::{accepted, IdempotencyKey},
    control::{
        self,
        bulk::{bulk, BulkRequest, Selection, MAX_IDS},
    },
    http::{
        error::{ApiError, ApiResult},
        extract::{Json, Path},
    },
    state::AppState,
    store::BotFilter,
};

async fn single(
    state: AppState,
    principal: Principal,
    id: Uuid,
    action: BotAction,
    key: Option<String>,
) -> ApiResult<(StatusCode, axum::Json<CommandAccepted>)> {
    let order = control::bot_action(principal.tenant_id, id, action, key, principal.actor());
    let submitted = control::submit(&state, order).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted(submitted))))
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

/// Start, stop or restart many bots — by `ids` (up to 10,000), or every bot matching `filter`,
/// however many — in one transaction. `dry_run` only counts. The answer has the counts, the
/// batch id and its first commands; `GET /commands?batch=<batch_id>` lists the rest.
#[utoipa::path(
    post, path = "/bots/actions", tag = "bots",
    security(("bearer" = ["bots:control"])),
    request_body = BulkAction,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat returns the first batch and changes nothing")),
    responses(
        (status = 202, description = "The batch: counts, skipped bots by reason, first commands", body = BulkAccepted),
        (status = 200, description = "Dry run: what the action would do", body = BulkAccepted),
        (status = 422, description = "Neither or both of ids and filter, or too many ids", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bulk_action(
    State(state): State<AppState>,
    principal: Principal,
    IdempotencyKey(key): IdempotencyKey,
    Json(body): Json<BulkAction>,
) -> ApiResult<(StatusCode, axum::Json<BulkAccepted>)> {
    let selection = match (body.ids, body.filter) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(ApiError::invalid_field(
                    "ids",
                    format!("1 to {MAX_IDS} bot ids (for more, use a `filter`)"),
                ));
            }
            Selection::Ids(ids)
        }
        (None, Some(selector)) => Selection::Filter(BotFilter {
            state: selector.state,
            agent_id: selector.agent_id,
            tag: selector.tag,
            name: selector.name.filter(|n| !n.is_empty()),
            after_name: None,
            limit: 0,
        }),
        _ => return Err(ApiError::invalid_field("ids", "give exactly one of `ids` and `filter`")),
    };
    let dry_run = body.dry_run;
    let outcome = bulk(
        &state,
        BulkRequest {
            tenant_id: principal.tenant_id,
            action: body.action,
            selection,
            dry_run,
            idempotency_key: key,
            created_by: principal.actor(),
        },
    )
    .await?;
    let status = if dry_run { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, axum::Json(outcome)))
}
