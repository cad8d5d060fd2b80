//! Commands API: list, read, create (`agent.exec`, `agent.drain`, `bot.sync`), cancel. Queueing
//! itself is the command service's (`control`); this module turns its answers into responses.
//! Who may submit or read which kind is `auth::access`'s to say: a command a principal may not
//! read does not exist for it (404), and is left out of its listings.

use axum::{
    extract::{FromRequestParts, State},
    http::{request::Parts, StatusCode},
};
use botmox_contract::{
    commands::{Command, CommandAccepted, CommandKind, CommandList, CommandStatus, CreateCommand},
    events::EventPayload,
    problem::Problem,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{access, Principal},
    control::{self, Submitted},
    http::{
        error::{ApiError, ApiResult},
        extract::{Json, Path, Query},
        page,
    },
    state::AppState,
    store::{CommandFilter, Order, Target},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_commands, create_command))
        .routes(routes!(get_command))
        .routes(routes!(cancel_command))
}

/// `Idempotency-Key`: a repeat of a request with the same key returns the first command.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else { return Ok(IdempotencyKey(None)) };
        let key = value.to_str().unwrap_or("").trim();
        if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 200 printable characters",
            ));
        }
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// The answer to a control request, from what the command service placed.
pub fn accepted(submitted: Submitted) -> CommandAccepted {
    let agent_online = submitted.agent_online();
    let Submitted { command, created, agent_name, agent_status, .. } = submitted;
    let message = match (created, agent_online) {
        (false, _) => "a command with this Idempotency-Key exists: this is it (nothing changed)".to_owned(),
        (true, true) => format!("sent to agent `{agent_name}`"),
        (true, false) => format!(
            "agent `{agent_name}` is {}: the command waits for it until {}",
            match agent_status {
                botmox_contract::agents::AgentStatus::Draining => "draining and not connected",
                other => other.as_str(),
            },
            command.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
    };
    CommandAccepted { command, agent_online, message }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    status: Option<CommandStatus>,
    agent_id: Option<Uuid>,
    bot_id: Option<Uuid>,
    /// Only the commands of this bulk action (`batch_id` of `POST /bots/actions`).
    batch: Option<Uuid>,
    cursor: Option<String>,
    /// 1 to 500 (default 50).
    limit: Option<u32>,
}

/// Commands, newest first.
#[utoipa::path(
    get, path = "/commands", tag = "commands",
    security(("bearer" = ["commands:read"])),
    params(ListQuery),
    responses((status = 200, description = "One page", body = CommandList))
)]
async fn list_commands(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<CommandList>> {
    let limit = page::limit(query.limit, 50, 500)?;
    let before_id = page::decode_id_cursor(query.cursor.as_deref())?;
    let filter = CommandFilter {
        hidden_kinds: access::hidden_kinds(&principal),
        status: query.status,
        agent_id: query.agent_id,
        bot_id: query.bot_id,
        batch_id: query.batch,
        before_id,
        limit,
    };
    let (items, has_more) = state.store.list_commands(principal.tenant_id, &filter).await?;
    let next_cursor = if has_more { items.last().map(|c| page::encode_cursor(&c.id.to_string())) } else { None };
    Ok(axum::Json(CommandList { items, next_cursor }))
}

/// One command, with its result.
#[utoipa::path(
    get, path = "/commands/{id}", tag = "commands",
    security(("bearer" = ["commands:read"])),
    params(("id" = Uuid, Path, description = "Command id")),
    responses(
        (status = 200, description = "The command", body = Command),
        (status = 404, description = "No such command", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_command(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Command>> {
    Ok(axum::Json(readable_command(&state, &principal, id).await?))
}

/// A command of the tenant that `principal` may read; any other does not exist for it.
async fn readable_command(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<Command> {
    let command = state.store.get_command(principal.tenant_id, id).await?;
    if principal.allows(access::read_scope(command.kind)) {
        Ok(command)
    } else {
        Err(ApiError::NotFound("command"))
    }
}

/// Queue a command that is not a bot action: `agent.exec` (`{program, args}`; the agent must
/// allow exec), `agent.drain`, or `bot.sync` (deliver a bot's changed definition).
#[utoipa::path(
    post, path = "/commands", tag = "commands",
    security(("bearer" = ["commands:write"])),
    request_body = CreateCommand,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat returns the first command")),
    responses(
        (status = 202, description = "Queued", body = CommandAccepted),
        (status = 404, description = "The agent or the bot does not exist (or is another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The agent is revoked or draining", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_command(
    State(state): State<AppState>,
    principal: Principal,
    IdempotencyKey(key): IdempotencyKey,
    Json(body): Json<CreateCommand>,
) -> ApiResult<(StatusCode, axum::Json<CommandAccepted>)> {
    let needed = access::submit_scope(body.kind);
    if !principal.allows(needed) {
        return Err(crate::auth::insufficient_scope(&format!("`{}`", body.kind.as_str()), needed));
    }
    // A named bot must be on the named agent, whatever the kind: a command never carries one
    // agent's bot to another.
    if let Some(bot_id) = body.bot_id {
        let bot = state.store.get_bot(principal.tenant_id, bot_id).await?;
        if bot.agent_id != body.agent_id {
            return Err(ApiError::invalid_field("bot_id", "the bot is not on this agent"));
        }
    }
    let target = match body.kind {
        CommandKind::AgentExec => {
            let program = body.payload.get("program").and_then(|p| p.as_str()).unwrap_or("");
            if program.trim().is_empty() {
                return Err(ApiError::invalid_field("payload.program", "agent.exec needs a program"));
            }
            let args_ok =
                body.payload.get("args").is_none_or(|a| a.as_array().is_some_and(|a| a.iter().all(|v| v.is_string())));
            if !args_ok {
                return Err(ApiError::invalid_field("payload.args", "must be a list of strings"));
            }
            agent_target(&body)?
        }
        CommandKind::AgentDrain => agent_target(&body)?,
        CommandKind::BotSync => {
            Target::Bot(body.bot_id.ok_or_else(|| ApiError::invalid_field("bot_id", "bot.sync needs a bot"))?)
        }
        other => {
            return Err(ApiError::invalid_field(
                "kind",
                format!("`{}` is a bot action: use POST /api/v1/bots/{{id}}/start|stop|restart", other.as_str()),
            ))
        }
    };
    if !body.payload.is_object() && !body.payload.is_null() {
        return Err(ApiError::invalid_field("payload", "must be an object"));
    }
    let order = Order {
        tenant_id: principal.tenant_id,
        target,
        kind: body.kind,
        desired: None,
        payload: if body.payload.is_null() { serde_json::json!({}) } else { body.payload },
        idempotency_key: key,
        created_by: principal.actor(),
        batch_id: None,
    };
    let submitted = control::submit(&state, order).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted(submitted))))
}

/// The target of an agent-level kind, which names no bot.
fn agent_target(body: &CreateCommand) -> ApiResult<Target> {
    if body.bot_id.is_some() {
        return Err(ApiError::invalid_field(
            "bot_id",
            format!("`{}` acts on the agent, not a bot", body.kind.as_str()),
        ));
    }
    Ok(Target::Agent { agent_id: body.agent_id, bot_id: None })
}

/// Cancel a command that has not finished. A running one is told to stop on its agent.
#[utoipa::path(
    post, path = "/commands/{id}/cancel", tag = "commands",
    security(("bearer" = ["commands:write"])),
    params(("id" = Uuid, Path, description = "Command id")),
    responses(
        (status = 200, description = "Cancelled", body = Command),
        (status = 404, description = "No such command", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel_command(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Command>> {
    let before = readable_command(&state, &principal, id).await?;
    let command =
        state.store.cancel_command(principal.tenant_id, id, state.clock.now()).await.map_err(|e| match e {
            crate::store::StoreError::InvalidTransition { .. } => ApiError::Conflict {
                code: "command_finished",
                detail: format!("the command is already {}", before.status.as_str()),
            },
            other => other.into(),
        })?;
    if matches!(before.status, CommandStatus::Dispatched | CommandStatus::Running) {
        state.cancel_on_agent(command.agent_id, command.id).await;
    }
    state.publish(principal.tenant_id, EventPayload::CommandStatus((&command).into())).await;
    Ok(axum::Json(command))
}
