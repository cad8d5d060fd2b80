//! `GET /audit`: the tenant's audit log, newest first, filtered, cursor-paginated. Entries are
//! written by the authorisation middleware (every state-changing request, through
//! [`AuditLog`]), by login, pairing and refresh, and by the supervisor. There is no route that
//! changes or deletes one.

use std::sync::Arc;

use axum::extract::State;
use botmox_contract::{
    audit::{ActorKind, AuditPage, Outcome},
    Id, Timestamp,
};
use serde::Deserialize;
use tokio::sync::Semaphore;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Principal,
    group::GroupCommit,
    http::{error::ApiResult, extract::Query, page},
    state::AppState,
    store::{AuditFilter, NewAuditEntry, Store},
};

/// Entries written together at most.
const MAX_GROUP: usize = 1024;
/// Entries queued and not yet committed at most; a request that would queue one more waits.
const MAX_PENDING: u32 = 8192;
/// A group commit of entries starts at most this often (what queues meanwhile joins the next).
/// Under load the audit's transactions were a quarter of the store's writes, each taking the
/// one SQLite writer (or a Postgres commit) from the control orders that callers wait for.
/// Paced at 25 ms, `api-queue` single ran 3,295 → 3,592 commands/s on SQLite and 2,797 →
/// 3,142 on Postgres (docs/ARCHITECTURE.md, "Audit commits are paced"); at 10 ms it measured
/// nothing. `GET /audit` waits at most this long for the entries it must show.
const PACE: std::time::Duration = std::time::Duration::from_millis(25);

/// The audit entries of state-changing requests, committed in groups *after* the response.
///
/// The request's own change is committed before its response, in its own transaction; its
/// entry can only be written once the response's status is known, so the two were never one
/// commit. Holding the response until the entry's separate commit therefore bought nothing a
/// crash would not take anyway (an entry lost between the two commits), and it cost every
/// request a commit round and the server a fifth of its CPU per command (issue 10). So a
/// request queues its entry and answers; the entries commit together within milliseconds
/// (a group every [`PACE`] at most).
/// What stays true:
///
/// - read-your-writes on a server: `GET /audit` first waits for every entry queued before it
///   ([`AuditLog::flush`]), so a client sees the entry of any request it was answered;
/// - a graceful shutdown commits every queued entry before the store closes;
/// - a burst cannot grow the queue without bound: past [`MAX_PENDING`] uncommitted entries, a
///   request waits for room before it answers (the old behaviour, under overload only);
/// - a failed write is logged, as before (the response never depended on it).
///
/// Like the audit logs of cloud providers, an entry written on one replica becomes visible to
/// readers of another once committed — milliseconds later, not at the response.
pub struct AuditLog {
    group: GroupCommit<(NewAuditEntry, Timestamp), Id>,
    /// One permit per entry queued and not yet committed (or failed).
    pending: Arc<Semaphore>,
}

impl AuditLog {
    /// Starts the committing task (needs a Tokio runtime).
    pub fn start(store: Store) -> Self {
        let group = GroupCommit::start_paced("audit", MAX_GROUP, PACE, move |entries| {
            let store = store.clone();
            async move { Ok(store.append_audits(&entries).await?.into_iter().map(Ok).collect()) }
        });
        Self { group, pending: Arc::new(Semaphore::new(MAX_PENDING as usize)) }
    }

    /// Queues an entry for the next group commit; returns once it is queued (at once, unless
    /// [`MAX_PENDING`] entries are still uncommitted).
    pub async fn record(&self, entry: NewAuditEntry, at: Timestamp) {
        let Ok(permit) = self.pending.clone().acquire_owned().await else { return };
        let action = entry.action.clone();
        let written = self.group.enqueue((entry, at));
        tokio::spawn(async move {
            if let Err(e) = written.await {
                tracing::error!(error = %e, action, "could not write the audit entry");
            }
            drop(permit);
        });
    }

    /// Waits until every entry queued before this call is committed (or its write failed).
    pub async fn flush(&self) {
        // All the permits are free only when nothing queued is still uncommitted; the
        // semaphore is fair, so entries queued after this call wait behind it, not before.
        if let Ok(all) = self.pending.acquire_many(MAX_PENDING).await {
            drop(all);
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    actor_kind: Option<ActorKind>,
    actor_id: Option<Uuid>,
    /// The operation, e.g. `create_bot`, `login`.
    action: Option<String>,
    /// `kind:id`, e.g. `bot:0193…`.
    target: Option<String>,
    outcome: Option<Outcome>,
    cursor: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<u32>,
}

/// The audit log.
#[utoipa::path(
    get, path = "/audit", tag = "audit",
    security(("bearer" = ["audit:read"])),
    params(AuditQuery),
    responses((status = 200, description = "One page, newest first", body = AuditPage))
)]
async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<AuditQuery>,
) -> ApiResult<axum::Json<AuditPage>> {
    let limit = page::limit(query.limit, 100, 500)?;
    let before_id = page::decode_id_cursor(query.cursor.as_deref())?;
    // The entries of requests already answered (see `AuditLog`).
    state.audit_log.flush().await;
    let filter = AuditFilter {
        actor_kind: query.actor_kind,
        actor_id: query.actor_id,
        action: query.action,
        target: query.target,
        outcome: query.outcome,
        before_id,
        limit,
    };
    let (items, has_more) = state.store.list_audit(principal.tenant_id, &filter).await?;
    let next_cursor = if has_more { items.last().map(|e| page::encode_cursor(&e.id.to_string())) } else { None };
    Ok(axum::Json(AuditPage { items, next_cursor }))
}

/// Writes an audit entry for something the supervisor did.
pub async fn supervisor_action(
    state: &AppState,
    tenant_id: botmox_contract::Id,
    action: &str,
    target: String,
    data: serde_json::Value,
) {
    let entry = crate::store::NewAuditEntry {
        tenant_id,
        actor: botmox_contract::audit::Actor::supervisor(),
        action: action.into(),
        target: Some(target),
        request_id: None,
        source_ip: None,
        outcome: botmox_contract::audit::Outcome::Success,
        data,
    };
    if let Err(e) = state.store.append_audit(entry, state.clock.now()).await {
        tracing::error!(error = %e, action, "could not audit a supervisor action");
    }
    metrics::counter!("botmox_supervisor_actions_total", "action" => action.to_owned()).increment(1);
}
