//! Bots API: create, read, list (filters, cursor pagination, counts by state), update with
//! optimistic concurrency (`If-Match` / `ETag` carry the bot's `version`), delete.
//! Starting and stopping bots goes through the command queue (`commands`).

pub mod validate;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use botmox_contract::{
    bots::{Bot, BotList, BotPatch, BotSpec, BotState},
    problem::Problem,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Principal,
    http::{
        error::{ApiError, ApiResult},
        extract::{etag, IfMatch, Json, Path, Query},
    },
    state::AppState,
    store::{BotFilter, NewBot, StoreError, UpdateBot},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_bots, create_bot)).routes(routes!(get_bot, update_bot, delete_bot))
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

fn encode_cursor(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name.as_bytes())
}

fn decode_cursor(cursor: &str) -> ApiResult<String> {
    URL_SAFE_NO_PAD.decode(cursor).ok().and_then(|bytes| String::from_utf8(bytes).ok()).ok_or_else(|| {
        ApiError::bad_request("invalid_cursor", "`cursor` is not one this server handed out")
            .with_hint("pass the `next_cursor` of the previous page unchanged")
    })
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

fn name_conflict(err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict(detail) => ApiError::Conflict { code: "bot_name_taken", detail },
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
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("`limit` must be between 1 and {MAX_LIMIT}")));
    }
    let filter = BotFilter {
        state: query.state,
        agent_id: query.agent_id,
        tag: query.tag,
        name: query.name.filter(|n| !n.is_empty()),
        after_name: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let page = state.store.list_bots(principal.tenant_id, &filter).await?;
    let next_cursor = if page.has_more { page.items.last().map(|bot| encode_cursor(&bot.name)) } else { None };
    Ok(axum::Json(BotList { items: page.items, next_cursor, counts: page.counts, total: page.total }))
}

/// Create a bot definition on an agent.
#[utoipa::path(
    post, path = "/bots", tag = "bots",
    security(("bearer" = ["bots:write"])),
    request_body = BotSpec,
    responses(
        (status = 201, description = "Created", body = Bot),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definition", body = Problem, content_type = "application/problem+json"),
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
        .map_err(name_conflict)?;
    tracing::info!(bot_id = %bot.id, name = %bot.name, "bot created");
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
                return Ok(with_etag(StatusCode::OK, bot));
            }
            Err(StoreError::VersionMismatch { .. }) if attempt < attempts => continue,
            Err(err) => return Err(name_conflict(err)),
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
    state.store.delete_bot(principal.tenant_id, id, if_match).await?;
    tracing::info!(bot_id = %id, "bot deleted");
    Ok(StatusCode::NO_CONTENT)
}
