//! The secrets vault: `PUT/DELETE /secrets/{name}` and `GET /secrets` (names and metadata only:
//! no API ever returns a value), plus master-key rotation for the CLI. The only way a value
//! leaves the server is inside a `bot.start` to the agent that runs a bot naming it.

pub mod vault;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use botmox_contract::{
    problem::Problem,
    secrets::{PutSecret, SecretMeta},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use self::vault::MasterKey;
use crate::{
    auth::Principal,
    bots::validate,
    http::{
        error::{ApiError, ApiResult},
        extract::{Json, Path},
    },
    state::AppState,
    store::Store,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_secrets)).routes(routes!(put_secret, delete_secret))
}

const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Secret names and metadata.
#[utoipa::path(
    get, path = "/secrets", tag = "secrets",
    security(("bearer" = ["secrets:write"])),
    responses((status = 200, description = "Names and metadata, never values", body = Vec<SecretMeta>))
)]
async fn list_secrets(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Vec<SecretMeta>>> {
    Ok(axum::Json(state.store.list_secrets(principal.tenant_id).await?))
}

/// Create or replace a secret. The value is encrypted at rest and never returned.
#[utoipa::path(
    put, path = "/secrets/{name}", tag = "secrets",
    security(("bearer" = ["secrets:write"])),
    params(("name" = String, Path, description = "Secret name, e.g. farmer-eu-01-password")),
    request_body = PutSecret,
    responses(
        (status = 201, description = "Created", body = SecretMeta),
        (status = 200, description = "Replaced", body = SecretMeta),
        (status = 422, description = "Bad name or value", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(body): Json<PutSecret>,
) -> ApiResult<Response> {
    validate::name("name", &name)?;
    if body.value.is_empty() || body.value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::invalid_field("value", format!("must be 1 to {MAX_VALUE_BYTES} bytes")));
    }
    let Some(key) = &state.master_key else {
        return Err(ApiError::Request {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "vault_not_configured",
            detail: "this server has no master key, so it cannot store secrets".into(),
            field: None,
            hint: Some(
                "start botmox with --master-key-file (or BOTMOX_MASTER_KEY); every replica needs the same key".into(),
            ),
        });
    };
    let sealed = vault::seal(key, principal.tenant_id, &name, &body.value)?;
    let (meta, created) = state.store.put_secret(sealed, state.clock.now()).await?;
    tracing::info!(secret = %name, created, "secret stored");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(meta)).into_response())
}

/// Delete a secret. Bots that name it will fail to start until it exists again.
#[utoipa::path(
    delete, path = "/secrets/{name}", tag = "secrets",
    security(("bearer" = ["secrets:write"])),
    params(("name" = String, Path, description = "Secret name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such secret", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_secret(principal.tenant_id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Re-encrypts every secret under `new`, in one transaction. Returns how many were resealed.
pub async fn rotate_key(store: &Store, current: &MasterKey, new: &MasterKey) -> anyhow::Result<usize> {
    let sealed = store.all_sealed_secrets().await?;
    let mut resealed = Vec::with_capacity(sealed.len());
    for secret in &sealed {
        let value = vault::open(current, secret)?;
        resealed.push(vault::seal(new, secret.tenant_id, &secret.name, &value)?);
    }
    store.reseal_secrets(&resealed).await?;
    Ok(resealed.len())
}
