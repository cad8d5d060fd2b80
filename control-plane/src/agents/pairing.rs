//! Pairing: an admin creates a single-use, expiring code; the agent on the new host exchanges
//! it (once) for its identity and its agent token.

use axum::{extract::State, http::StatusCode};
use botmox_contract::{
    agents::{CreatePairingCode, PairRequest, PairResponse, PairingCode},
    audit::{Actor, ActorKind, Outcome},
    problem::Problem,
};

use super::validate_labels;
use crate::{
    auth::{credentials, Principal},
    bots::validate,
    http::{
        client::ClientInfo,
        error::{ApiError, ApiResult},
        extract::Json,
        request_id,
    },
    state::AppState,
    store::{NewAuditEntry, NewPairingCode, PairingHost, Redeemed},
};

const DEFAULT_TTL_SECONDS: u64 = 15 * 60;
const MAX_TTL_SECONDS: u64 = 7 * 86_400;

/// Create a single-use pairing code and the command line that pairs a host with it.
#[utoipa::path(
    post, path = "/agents/pairing-codes", tag = "agents",
    security(("bearer" = ["agents:write"])),
    request_body = CreatePairingCode,
    responses(
        (status = 201, description = "A code, shown once", body = PairingCode),
        (status = 422, description = "Invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_pairing_code(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreatePairingCode>,
) -> ApiResult<(StatusCode, axum::Json<PairingCode>)> {
    if let Some(name) = &body.name {
        validate::name("name", name)?;
    }
    validate_labels("labels", &body.labels)?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(60..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid_field("ttl_seconds", format!("must be between 60 and {MAX_TTL_SECONDS}")));
    }
    let now = state.clock.now();
    let code = credentials::new_pairing_code();
    let canonical = credentials::normalize_pairing_code(&code).unwrap_or_default();
    let expires_at = now + chrono::Duration::seconds(ttl as i64);
    state
        .store
        .create_pairing_code(
            NewPairingCode {
                tenant_id: principal.tenant_id,
                code_hash: credentials::hash(&canonical),
                name: body.name,
                labels: body.labels,
                created_by: principal.user_id(),
                expires_at,
            },
            now,
        )
        .await?;
    let command_line = format!("botmox-agent pair --server {} --code {code}", state.settings.public_url);
    Ok((StatusCode::CREATED, axum::Json(PairingCode { code, expires_at, command_line })))
}

fn validate_host(body: &PairRequest) -> ApiResult<()> {
    for (field, value, max) in [
        ("hostname", &body.hostname, 253),
        ("os", &body.os, 32),
        ("arch", &body.arch, 32),
        ("version", &body.version, 64),
    ] {
        if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(field, format!("1 to {max} printable characters")));
        }
    }
    validate_labels("labels", &body.labels)
}

/// Exchange a pairing code for an agent identity and token (the agent calls this, once).
#[utoipa::path(
    post, path = "/agents/pair", tag = "agents",
    request_body = PairRequest,
    responses(
        (status = 201, description = "Paired; keep the token secret", body = PairResponse),
        (status = 400, description = "Unknown code (`pairing_code_invalid`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Code already used (`pairing_code_used`)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Code expired (`pairing_code_expired`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pair(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(body): Json<PairRequest>,
) -> ApiResult<(StatusCode, axum::Json<PairResponse>)> {
    state.limits.pair(client.ip)?;
    validate_host(&body)?;
    let refused = |status: StatusCode, code: &'static str, detail: &str| ApiError::Request {
        status,
        code,
        detail: detail.into(),
        field: Some("code".into()),
        hint: Some(
            "create a new code with POST /api/v1/agents/pairing-codes (or the panel's Pair agent dialog)".into(),
        ),
    };
    let Some(canonical) = credentials::normalize_pairing_code(&body.code) else {
        return Err(refused(StatusCode::BAD_REQUEST, "pairing_code_invalid", "this is not a pairing code"));
    };
    let token = credentials::new_agent_token();
    let host = PairingHost {
        hostname: body.hostname,
        os: body.os,
        arch: body.arch,
        version: body.version,
        labels: body.labels,
        token_hash: credentials::hash(&token),
    };
    let now = state.clock.now();
    match state.store.redeem_pairing_code(&credentials::hash(&canonical), host, now).await? {
        Redeemed::Paired { tenant_id, agent } => {
            let entry = NewAuditEntry {
                tenant_id,
                actor: Actor { kind: ActorKind::Agent, id: Some(agent.id) },
                action: "pair".into(),
                target: Some(format!("agent:{}", agent.id)),
                request_id: request_id::current(),
                source_ip: client.ip.map(|ip| ip.to_string()),
                outcome: Outcome::Success,
                data: serde_json::json!({ "hostname": agent.hostname, "name": agent.name }),
            };
            state.store.append_audit(entry, now).await?;
            tracing::info!(agent_id = %agent.id, hostname = %agent.hostname, "agent paired");
            let response = PairResponse {
                agent_id: agent.id,
                agent_token: token,
                server_settings: crate::link::ws::server_settings(&state),
            };
            Ok((StatusCode::CREATED, axum::Json(response)))
        }
        Redeemed::Unknown => Err(refused(StatusCode::BAD_REQUEST, "pairing_code_invalid", "no such pairing code")),
        Redeemed::Expired => Err(refused(StatusCode::GONE, "pairing_code_expired", "this pairing code has expired")),
        Redeemed::AlreadyUsed => {
            Err(refused(StatusCode::CONFLICT, "pairing_code_used", "this pairing code was already used"))
        }
    }
}
