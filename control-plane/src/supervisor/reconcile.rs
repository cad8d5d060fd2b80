//! Reconciliation: a bot that should run on an online agent and does not (or should not and
//! does), with no command for it pending or recent, gets the command that closes the gap.
//! A bot stuck in `starting` or `stopping` past its stop timeout (a lost report, an agent
//! killed mid-stop) gets one too: the agent answers it and re-reports the bot's true state.

use std::time::Duration;

use botmox_contract::{audit::Actor, bots::DesiredState, commands::CommandKind};

use crate::{
    control,
    state::AppState,
    store::{Order, Target},
};

/// A bot is left alone this long after any command for it (so a failing start is not retried
/// in a tight loop; the operator sees the failure and its incident instead).
pub const QUIET_PERIOD: Duration = Duration::from_secs(60);
/// Bots nudged per pass.
const BATCH: u32 = 500;

pub async fn run(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    let drifting = state.store.drifting_bots(now - chrono::Duration::from_std(QUIET_PERIOD)?, BATCH).await?;
    for drift in drifting {
        if drift.stuck_since().is_some_and(|stuck| now < stuck) {
            continue;
        }
        let kind = match drift.desired {
            DesiredState::Running => CommandKind::BotStart,
            DesiredState::Stopped => CommandKind::BotStop,
        };
        // The desired state is the operator's: reconciliation only closes the gap to it.
        let order = Order {
            tenant_id: drift.tenant_id,
            target: Target::Bot(drift.bot_id),
            kind,
            desired: None,
            payload: serde_json::json!({ "reason": "reconcile" }),
            idempotency_key: None,
            created_by: Actor::supervisor(),
            batch_id: None,
        };
        match control::submit(state, order).await {
            Ok(accepted) => {
                tracing::info!(bot_id = %drift.bot_id, kind = kind.as_str(), "reconciling");
                crate::audit::supervisor_action(
                    state,
                    drift.tenant_id,
                    "reconcile_bot",
                    format!("bot:{}", drift.bot_id),
                    serde_json::json!({
                        "desired": drift.desired, "observed": drift.state, "command_id": accepted.command.id,
                    }),
                )
                .await;
            }
            Err(e) => tracing::warn!(bot_id = %drift.bot_id, error = %e, "could not reconcile"),
        }
    }
    Ok(())
}
