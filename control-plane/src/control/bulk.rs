//! Bulk actions: start, stop or restart every bot of a selection (ids, or a filter of any
//! size) in one transaction — every command inserted, every desired state set, older queued
//! commands superseded, the batch recorded — then each agent connected here is handed its
//! commands (placed dispatched) and every other one woken once. A dry run only
//! counts. A repeat with the same Idempotency-Key returns the first batch and changes nothing.

use botmox_contract::{
    agents::AgentStatus,
    audit::Actor,
    commands::{BotAction, BulkAccepted, SkippedBots},
    Id,
};

use super::{action_order, announce, ControlError};
use crate::{
    state::AppState,
    store::{BatchPlaced, BotFilter, NewBatch, Order, Target},
};

/// Commands of the batch returned with the answer; the rest via `GET /commands?batch=`.
pub const FIRST_PAGE: u32 = 100;
/// The most ids one request may list (a filter has no limit).
pub const MAX_IDS: usize = 10_000;

/// Which bots.
pub enum Selection {
    Ids(Vec<Id>),
    Filter(BotFilter),
}

pub struct BulkRequest {
    pub tenant_id: Id,
    pub action: BotAction,
    pub selection: Selection,
    pub dry_run: bool,
    pub idempotency_key: Option<String>,
    pub created_by: Actor,
}

/// What a bulk action came to (or, on a dry run, would come to).
pub async fn bulk(state: &AppState, request: BulkRequest) -> Result<BulkAccepted, ControlError> {
    let BulkRequest { tenant_id, action, selection, dry_run, idempotency_key, created_by } = request;
    // Ids listed twice count once; ids that are no bot of the tenant are skipped as not found.
    let (matched, bot_ids): (u64, Vec<Id>) = match selection {
        Selection::Ids(mut ids) => {
            ids.sort_unstable();
            ids.dedup();
            if dry_run {
                let found = state.store.bots_among(tenant_id, &ids).await?;
                let missing = ids.len() - found.len();
                return Ok(dry(action, ids.len() as u64, &found, missing as u64));
            }
            (ids.len() as u64, ids)
        }
        Selection::Filter(filter) => {
            let found = state.store.bots_matching(tenant_id, &filter).await?;
            if dry_run {
                return Ok(dry(action, found.len() as u64, &found, 0));
            }
            (found.len() as u64, found.into_iter().map(|(id, _)| id).collect())
        }
    };
    let batch = NewBatch {
        id: crate::store::new_id(),
        tenant_id,
        idempotency_key,
        action,
        matched,
        created_by: created_by.clone(),
    };
    let (kind, desired) = action_order(action);
    let orders: Vec<Order> = bot_ids
        .iter()
        .map(|bot_id| Order {
            tenant_id,
            target: Target::Bot(*bot_id),
            kind,
            desired: Some(desired),
            payload: serde_json::json!({}),
            idempotency_key: None,
            created_by: created_by.clone(),
            batch_id: Some(batch.id),
        })
        .collect();
    let times = super::queue_times(&state.settings);
    let direct = |agent| state.hub.takes_deliveries(agent);
    let record = match state.store.place_batch_direct(&batch, &orders, times, state.clock.now(), &direct).await? {
        BatchPlaced::Created(record, placement) => {
            let answers = placement.into_iter().map(|answer| (tenant_id, answer)).collect();
            announce(state, answers).await;
            tracing::info!(batch_id = %record.id, action = ?action, accepted = record.accepted, "bulk action");
            record
        }
        BatchPlaced::Existing(record) => record,
    };
    let (commands, more_commands) = state.store.batch_commands(tenant_id, record.id, FIRST_PAGE).await?;
    Ok(BulkAccepted {
        batch_id: Some(record.id),
        action: record.action,
        dry_run: false,
        matched: record.matched,
        accepted: record.accepted,
        skipped: record.skipped,
        commands,
        more_commands,
    })
}

/// A dry run's counts: `found` bots (with their agent's status), `missing` ids. The same
/// refusals as the real action's (`store::place_batch`): a revoked agent takes nothing, a
/// draining one no start.
fn dry(action: BotAction, matched: u64, found: &[(Id, AgentStatus)], missing: u64) -> BulkAccepted {
    let starts = matches!(action, BotAction::Start | BotAction::Restart);
    let refused = |status: AgentStatus| match status {
        AgentStatus::Revoked => Some(("agent_revoked", "the bot's agent is revoked")),
        AgentStatus::Draining if starts => {
            Some(("agent_draining", "the bot's agent is draining: it takes no new starts"))
        }
        _ => None,
    };
    let mut skipped = Vec::new();
    if missing > 0 {
        skipped.push(SkippedBots {
            reason: "not_found".into(),
            count: missing,
            detail: "no such bot (deleted, or never existed)".into(),
            bot_ids: Vec::new(),
        });
    }
    let mut accepted = 0;
    for (id, status) in found {
        let Some((reason, detail)) = refused(*status) else {
            accepted += 1;
            continue;
        };
        let index = match skipped.iter().position(|s: &SkippedBots| s.reason == reason) {
            Some(index) => index,
            None => {
                skipped.push(SkippedBots {
                    reason: reason.into(),
                    count: 0,
                    detail: detail.into(),
                    bot_ids: Vec::new(),
                });
                skipped.len() - 1
            }
        };
        let group = &mut skipped[index];
        group.count += 1;
        if group.bot_ids.len() < 100 {
            group.bot_ids.push(*id);
        }
    }
    BulkAccepted {
        batch_id: None,
        action,
        dry_run: true,
        matched,
        accepted,
        skipped,
        commands: Vec::new(),
        more_commands: false,
    }
}
