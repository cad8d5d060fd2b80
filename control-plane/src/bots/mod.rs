//! Bots API: create, read, list (filters, cursor pagination, counts by state), update with
//! optimistic concurrency (`If-Match` / `ETag` carry the bot's `version`), delete.
//! Starting and stopping bots goes through the command queue (`commands`); many definitions
//! at once through `POST /bots/import` ([`import`]).

mod control;
mod import;
mod logs;
pub mod validate;

use axum::{
    extract::{DefaultBodyLimit, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use botmox_contract::{
    bots::{Bot, BotList, BotPatch, BotSpec, BotState},
    commands::CommandKind,
    events::EventPayload,
    problem::Problem,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt as _},
    routes,
};
use uuid::Uuid;

use crate::{
    auth::Principal,
    http::{
        error::{ApiError, ApiResult},
        extract::{etag, IfMatch, Json, Path, Query},
        page,
    },
    state::AppState,
    store::{definition_hash, BotFilter, NewBot, Order, StoreError, Target, UpdateBot},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bots, create_bot))
        // Its own body limit: thousands of definitions are far more than the server's default.
        .routes(routes!(import::import_bots).layer(DefaultBodyLimit::max(import::MAX_BODY_BYTES)))
        .routes(routes!(get_bot, update_bot, delete_bot))
        .routes(routes!(control::start_bot))
        .routes(routes!(control::stop_bot))
        .routes(routes!(control::restart_bot))
        .routes(routes!(control::bulk_action))
        .routes(routes!(logs::bot_logs))
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only bots in this observed state.
    state: Option<BotState>,
    /// Only bots placed on this agent.
    agent_id: Option<Uuid>,
    /// Only bots carrying this tag.
    tag: Option<String>,
    /// Case-insensitive substring of the name.
    name: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
}

/// Queues a bookkeeping command (the start of a new bot, a sync, a remove) for an agent;
/// failing to is logged, not fatal: the agent's next hello snapshot and reconciliation
/// converge anyway. A removal goes to the agent (the bot may be gone or moved away); the
/// others go to the bot, on whatever agent it is now.
async fn tell_agent(state: &AppState, principal: &Principal, agent_id: Uuid, bot_id: Uuid, kind: CommandKind) {
    let order = bookkeeping_order(principal, agent_id, bot_id, kind);
    if let Err(e) = crate::control::submit(state, order).await {
        tracing::warn!(%bot_id, %agent_id, kind = kind.as_str(), error = %e, "could not queue the command for the agent");
    }
}

/// The order behind [`tell_agent`] (an import places many of them at once).
fn bookkeeping_order(principal: &Principal, agent_id: Uuid, bot_id: Uuid, kind: CommandKind) -> Order {
    let target = match kind {
        CommandKind::BotRemove => Target::Agent { agent_id, bot_id: Some(bot_id) },
        _ => Target::Bot(bot_id),
    };
    Order {
        tenant_id: principal.tenant_id,
        target,
        kind,
        desired: None,
        // The bot's id rides in the payload too: after a delete, the envelope has no definition.
        payload: serde_json::json!({ "bot_id": bot_id }),
        idempotency_key: None,
        created_by: principal.actor(),
        batch_id: None,
    }
}

fn with_etag(status: StatusCode, bot: Bot) -> Response {
    (status, [(header::ETAG, etag(bot.version))], axum::Json(bot)).into_response()
}

fn validate_spec(spec: &BotSpec) -> ApiResult<()> {
    validate::name("name", &spec.name)?;
    validate::exec(&spec.exec)?;
    validate::restart(&spec.restart)?;
    validate::stop(&spec.stop)?;
    validate::tags(&spec.tags)
}

/// A definition the store refused: its name is taken (409), or its agent is no agent of the
/// tenant (422 naming `agent_id`).
fn definition_refused(err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict(detail) => ApiError::Conflict { code: "bot_name_taken", detail },
        StoreError::Reference(detail) => ApiError::unknown_reference(detail, Some("agent_id")),
        other => other.into(),
    }
}

/// List bots, filtered, one page at a time, with counts by state.
#[utoipa::path(
    get, path = "/bots", tag = "bots",
    security(("bearer" = ["bots:read"])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of bots", body = BotList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_bots(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<BotList>> {
    let limit = page::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let filter = BotFilter {
        state: query.state,
        agent_id: query.agent_id,
        tag: query.tag,
        name: query.name.filter(|n| !n.is_empty()),
        after_name: query.cursor.as_deref().filter(|c| !c.is_empty()).map(page::decode_cursor).transpose()?,
        limit,
    };
    let page = state.store.list_bots(principal.tenant_id, &filter).await?;
    let next_cursor = if page.has_more { page.items.last().map(|bot| page::encode_cursor(&bot.name)) } else { None };
    Ok(axum::Json(BotList { items: page.items, next_cursor, counts: page.counts, total: page.total }))
}

/// Create a bot definition on an agent.
#[utoipa::path(
    post, path = "/bots", tag = "bots",
    security(("bearer" = ["bots:write"])),
    request_body = BotSpec,
    responses(
        (status = 201, description = "Created", body = Bot),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `bots:write`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definition, or an agent the tenant does not have (`field` names it)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_bot(
    State(state): State<AppState>,
    principal: Principal,
    Json(spec): Json<BotSpec>,
) -> ApiResult<Response> {
    validate_spec(&spec)?;
    let bot = state
        .store
        .create_bot(NewBot { tenant_id: principal.tenant_id, spec }, state.clock.now())
        .await
        .map_err(definition_refused)?;
    tracing::info!(bot_id = %bot.id, name = %bot.name, "bot created");
    state.publish(principal.tenant_id, EventPayload::BotState((&bot).into())).await;
    if bot.desired_state == botmox_contract::bots::DesiredState::Running {
        tell_agent(&state, &principal, bot.agent_id, bot.id, CommandKind::BotStart).await;
    }
    let location = format!("/api/v1/bots/{}", bot.id);
    let mut response = with_etag(StatusCode::CREATED, bot);
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// One bot, with its `ETag`.
#[utoipa::path(
    get, path = "/bots/{id}", tag = "bots",
    security(("bearer" = ["bots:read"])),
    params(("id" = Uuid, Path, description = "Bot id")),
    responses(
        (status = 200, description = "The bot", body = Bot),
        (status = 404, description = "No such bot", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_bot(State(state): State<AppState>, principal: Principal, Path(id): Path<Uuid>) -> ApiResult<Response> {
    let bot = state.store.get_bot(principal.tenant_id, id).await?;
    Ok(with_etag(StatusCode::OK, bot))
}

/// Change a bot's definition. With `If-Match`, only if its version still matches.
#[utoipa::path(
    patch, path = "/bots/{id}", tag = "bots",
    security(("bearer" = ["bots:write"])),
    params(
        ("id" = Uuid, Path, description = "Bot id"),
        ("If-Match" = Option<String>, Header, description = "The version the change is based on, e.g. \"3\""),
    ),
    request_body = BotPatch,
    responses(
        (status = 200, description = "Updated", body = Bot),
        (status = 404, description = "No such bot", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Version mismatch", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definition", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_bot(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    IfMatch(if_match): IfMatch,
    Json(patch): Json<BotPatch>,
) -> ApiResult<Response> {
    // Without If-Match the caller asked for last-writer-wins: re-read and re-apply on a race.
    let attempts = if if_match.is_some() { 1 } else { 3 };
    for attempt in 1..=attempts {
        let current = state.store.get_bot(principal.tenant_id, id).await?;
        let current_agent = current.agent_id;
        let current_hash = definition_hash(&current.exec, &current.restart, &current.stop);
        if let Some(expected) = if_match {
            if expected != current.version {
                return Err(ApiError::VersionMismatch { current: current.version });
            }
        }
        let spec = BotSpec {
            name: patch.name.clone().unwrap_or(current.name),
            agent_id: patch.agent_id.unwrap_or(current.agent_id),
            exec: patch.exec.clone().unwrap_or(current.exec),
            restart: patch.restart.clone().unwrap_or(current.restart),
            stop: patch.stop.clone().unwrap_or(current.stop),
            desired_state: current.desired_state,
            tags: patch.tags.clone().unwrap_or(current.tags),
        };
        validate_spec(&spec)?;
        let update = UpdateBot {
            name: spec.name,
            agent_id: spec.agent_id,
            exec: spec.exec,
            restart: spec.restart,
            stop: spec.stop,
            tags: spec.tags,
        };
        match state.store.update_bot(principal.tenant_id, id, current.version, update, state.clock.now()).await {
            Ok(bot) => {
                tracing::info!(bot_id = %bot.id, version = bot.version, "bot updated");
                state.publish(principal.tenant_id, EventPayload::BotState((&bot).into())).await;
                if bot.agent_id != current_agent {
                    tell_agent(&state, &principal, current_agent, bot.id, CommandKind::BotRemove).await;
                }
                if bot.agent_id != current_agent || definition_hash(&bot.exec, &bot.restart, &bot.stop) != current_hash
                {
                    tell_agent(&state, &principal, bot.agent_id, bot.id, CommandKind::BotSync).await;
                }
                return Ok(with_etag(StatusCode::OK, bot));
            }
            Err(StoreError::VersionMismatch { .. }) if attempt < attempts => continue,
            Err(err) => return Err(definition_refused(err)),
        }
    }
    Err(ApiError::Conflict { code: "concurrent_update", detail: "the bot kept changing; try again".into() })
}

/// Delete a bot (and its log lines). With `If-Match`, only if its version still matches.
#[utoipa::path(
    delete, path = "/bots/{id}", tag = "bots",
    security(("bearer" = ["bots:write"])),
    params(
        ("id" = Uuid, Path, description = "Bot id"),
        ("If-Match" = Option<String>, Header, description = "The version the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such bot", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Version mismatch", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_bot(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    let bot = state.store.get_bot(principal.tenant_id, id).await?;
    state.store.delete_bot(principal.tenant_id, id, if_match).await?;
    tracing::info!(bot_id = %id, "bot deleted");
    state.publish(principal.tenant_id, EventPayload::BotRemoved { bot_id: id }).await;
    // The agent stops the bot (if it runs) and forgets it.
    tell_agent(&state, &principal, bot.agent_id, id, CommandKind::BotRemove).await;
    Ok(StatusCode::NO_CONTENT)
}
