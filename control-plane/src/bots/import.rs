//! `POST /bots/import`: up to 10,000 bot definitions created all together or not at all.
//!
//! Every definition is read and checked on its own, with the rules of `POST /bots`, so a
//! refusal lists *every* bad definition by index and field (`errors` of the problem), not just
//! the first: shape errors, rule errors, names repeated within the request, names already
//! taken and unknown agents. Only a request with no error reaches the store, which creates
//! all the bots and their tags in one transaction (a few statements; see
//! `store::bots::create`). Then the bots' events go out, and one transaction of the command
//! service queues a `bot.start` for each bot whose `desired_state` is `running`.
//!
//! No `Idempotency-Key`: a repeated import changes nothing, because every name is then taken
//! and the repeat is refused with those names by index.

use std::collections::HashMap;

use axum::{extract::State, http::StatusCode};
use botmox_contract::{
    bots::{BotImport, BotSpec, BotsImported, DesiredState},
    commands::CommandKind,
    events::EventPayload,
    problem::{ItemError, Problem},
};
use serde::Deserialize;

use super::{bookkeeping_order, validate_spec};
use crate::{
    auth::Principal,
    http::{
        error::{ApiError, ApiResult},
        extract::{from_value, Json},
    },
    state::AppState,
    store::Refusal,
};

/// The most definitions one import may carry.
pub const MAX_DEFINITIONS: usize = 10_000;
/// The import's body limit (the server's default is 256 KiB): room for 10,000 definitions of
/// about 1.6 KiB each, which the spec's example (~450 bytes compact) leaves plenty of.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The body as it arrives: each definition is read on its own, so every bad one is reported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImport {
    bots: Vec<serde_json::Value>,
}

/// Create many bots (up to 10,000) in one transaction: all of them, or none. Every refused
/// definition is listed in the problem's `errors` by `index` and `field`. A repeat is refused
/// (every name is then taken), so no `Idempotency-Key` is needed.
#[utoipa::path(
    post, path = "/bots/import", tag = "bots",
    security(("bearer" = ["bots:write"])),
    request_body = BotImport,
    responses(
        (status = 201, description = "Every bot created (ids in the order of the definitions); starts queued for those desired running", body = BotsImported),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `bots:write`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Names or agents changed while the bots were being created: send it again", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 MiB: split the import", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Nothing created: no definitions, more than 10,000, or refused ones (all listed in `errors` by index and field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn import_bots(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<RawImport>, ApiError>,
) -> ApiResult<(StatusCode, axum::Json<BotsImported>)> {
    let Json(body) = body.map_err(explain_too_large)?;
    let total = body.bots.len();
    if total == 0 || total > MAX_DEFINITIONS {
        return Err(ApiError::invalid_field("bots", format!("1 to {MAX_DEFINITIONS} definitions (got {total})"))
            .with_hint("split a larger import into several requests"));
    }
    let mut errors = Vec::new();
    let mut specs: Vec<(usize, BotSpec)> = Vec::with_capacity(total);
    let mut first_of_name: HashMap<String, usize> = HashMap::new();
    for (index, value) in body.bots.into_iter().enumerate() {
        let spec: BotSpec = match from_value(value) {
            Ok(spec) => spec,
            Err(e) => {
                errors.push(e.into_item(index));
                continue;
            }
        };
        if let Err(e) = validate_spec(&spec) {
            errors.push(e.into_item(index));
        }
        if let Some(first) = first_of_name.get(&spec.name) {
            errors.push(ItemError {
                index,
                field: Some("name".into()),
                code: "bot_name_repeated".into(),
                detail: format!("`{}` is also the name of definition {first}; names are unique", spec.name),
            });
        } else {
            first_of_name.insert(spec.name.clone(), index);
        }
        specs.push((index, spec));
    }
    let (indexes, specs): (Vec<usize>, Vec<BotSpec>) = specs.into_iter().unzip();
    let now = state.clock.now();
    let refusals = if errors.is_empty() {
        match state.store.create_bots(principal.tenant_id, &specs, now).await? {
            Ok(bots) => return Ok((StatusCode::CREATED, axum::Json(created(&state, &principal, bots).await))),
            Err(refusals) => refusals,
        }
    } else {
        // Refused anyway: say also what the store would refuse, so one answer lists it all.
        state.store.creation_refusals(principal.tenant_id, &specs).await?
    };
    for (i, refusal) in refusals {
        errors.push(refused(indexes[i], &specs[i], refusal));
    }
    errors.sort_by(|a, b| (a.index, &a.field).cmp(&(b.index, &b.field)));
    let mut refused_definitions: Vec<usize> = errors.iter().map(|e| e.index).collect();
    refused_definitions.dedup();
    Err(ApiError::Items {
        detail: format!(
            "{} of {total} definitions cannot be created ({} errors); nothing was created",
            refused_definitions.len(),
            errors.len()
        ),
        errors,
    })
}

/// After the commit: the bots' events, their starts (one transaction), the answer.
async fn created(state: &AppState, principal: &Principal, bots: Vec<botmox_contract::bots::Bot>) -> BotsImported {
    tracing::info!(count = bots.len(), "bots imported");
    let events = bots.iter().map(|bot| (principal.tenant_id, EventPayload::BotState(bot.into()))).collect();
    state.publish_many(events).await;
    let starts: Vec<_> = bots
        .iter()
        .filter(|bot| bot.desired_state == DesiredState::Running)
        .map(|bot| bookkeeping_order(principal, bot.agent_id, bot.id, CommandKind::BotStart))
        .collect();
    let wanted = starts.len();
    // As for one created bot: failing to queue is logged, not fatal (reconciliation starts them).
    let starts_queued = match crate::control::submit_many(state, starts).await {
        Ok(answers) => {
            for e in answers.iter().filter_map(|a| a.as_ref().err()) {
                tracing::warn!(error = %e, "could not queue the start of an imported bot");
            }
            answers.iter().filter(|a| a.as_ref().is_ok_and(|s| s.created)).count()
        }
        Err(e) => {
            tracing::warn!(error = %e, starts = wanted, "could not queue the starts of the imported bots");
            0
        }
    };
    BotsImported {
        created: bots.len() as u64,
        bots: bots.iter().map(|b| b.id).collect(),
        starts_queued: starts_queued as u64,
    }
}

fn refused(index: usize, spec: &BotSpec, refusal: Refusal) -> ItemError {
    let (field, code, detail) = match refusal {
        Refusal::NameTaken => ("name", "bot_name_taken", format!("a bot named `{}` already exists", spec.name)),
        Refusal::NoSuchAgent => ("agent_id", "unknown_reference", format!("agent {} does not exist", spec.agent_id)),
    };
    ItemError { index, field: Some(field.into()), code: code.into(), detail }
}

/// The body limit's refusal, with this route's limit and what to do.
fn explain_too_large(err: ApiError) -> ApiError {
    match err {
        ApiError::Request { status: StatusCode::PAYLOAD_TOO_LARGE, code, field, .. } => ApiError::Request {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code,
            detail: format!("an import body may be at most {} MiB", MAX_BODY_BYTES / (1024 * 1024)),
            field,
            hint: Some(format!("split the definitions into several imports (at most {MAX_DEFINITIONS} each)")),
        },
        other => other,
    }
}
