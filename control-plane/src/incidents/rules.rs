//! When incidents open and resolve. Opened from what the fleet reports (bot states, silence,
//! failed commands) and resolved when the cause heals; each change is published as an event,
//! and each opening audited.

use botmox_contract::{
    agents::Agent,
    bots::BotState,
    commands::{Command, CommandStatus},
    events::{BotStatus, EventPayload},
    incidents::{Incident, IncidentKind, Severity},
    Id,
};

use crate::{state::AppState, store::NewIncident};

/// Restarts (as the agent counts them) after which crashes are a crash loop.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

async fn open(
    state: &AppState,
    tenant_id: Id,
    kind: IncidentKind,
    severity: Severity,
    subject: String,
    message: String,
    data: serde_json::Value,
) -> anyhow::Result<Incident> {
    let (incident, created) = state
        .store
        .open_incident(
            NewIncident { tenant_id, kind, severity, subject: subject.clone(), message, data },
            state.clock.now(),
        )
        .await?;
    if created {
        crate::audit::supervisor_action(
            state,
            tenant_id,
            "open_incident",
            subject,
            serde_json::json!({ "kind": kind.as_str(), "incident_id": incident.id }),
        )
        .await;
    }
    state.publish(tenant_id, EventPayload::Incident(incident.clone())).await;
    Ok(incident)
}

async fn resolve(
    state: &AppState,
    tenant_id: Id,
    kinds: &[IncidentKind],
    subject: &str,
) -> anyhow::Result<Vec<Incident>> {
    let resolved = state.store.resolve_incidents(tenant_id, kinds, subject, state.clock.now()).await?;
    for incident in &resolved {
        state.publish(tenant_id, EventPayload::Incident(incident.clone())).await;
    }
    Ok(resolved)
}

async fn record(
    state: &AppState,
    tenant_id: Id,
    kind: IncidentKind,
    subject: String,
    message: String,
    data: serde_json::Value,
) -> anyhow::Result<()> {
    let incident = state
        .store
        .record_resolved_incident(
            NewIncident { tenant_id, kind, severity: Severity::Info, subject, message, data },
            state.clock.now(),
        )
        .await?;
    state.publish(tenant_id, EventPayload::Incident(incident)).await;
    Ok(())
}

/// The transitions of one batch of an agent's reports, in order (`before` is the state each
/// bot had): [`bot_reported`] for each, except that a transition which could only resolve
/// (running, stopped) is skipped when its bot is not in `open` (the bots with an open
/// incident, as the reports' own read found them), instead of a write per transition.
pub async fn bots_reported(
    state: &AppState,
    tenant_id: Id,
    transitions: Vec<(BotState, BotStatus)>,
    mut open: std::collections::HashSet<Id>,
) -> anyhow::Result<()> {
    let only_resolves = |bot: &BotStatus| matches!(bot.state, BotState::Running | BotState::Stopped);
    for (before, bot) in transitions {
        if only_resolves(&bot) && !open.contains(&bot.id) {
            continue;
        }
        if !only_resolves(&bot) {
            // It may open one, which a later transition of the batch then resolves.
            open.insert(bot.id);
        }
        if let Err(e) = bot_reported(state, tenant_id, before, &bot).await {
            tracing::error!(error = %e, bot_id = %bot.id, "could not update the bot's incidents");
        }
    }
    Ok(())
}

fn bot_subject(bot_id: Id) -> String {
    format!("bot:{bot_id}")
}

/// A bot's agent reported a transition (`before` is the state it had).
pub async fn bot_reported(state: &AppState, tenant_id: Id, before: BotState, bot: &BotStatus) -> anyhow::Result<()> {
    let subject = bot_subject(bot.id);
    let exit = match (bot.last_exit_code, bot.last_exit_signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), _) => format!("exit code {code}"),
        _ => "no exit status".to_owned(),
    };
    let data = serde_json::json!({
        "bot_id": bot.id, "name": bot.name, "exit_code": bot.last_exit_code, "exit_signal": bot.last_exit_signal,
        "restart_count": bot.restart_count, "last_error": bot.last_error,
    });
    match bot.state {
        BotState::Crashed if before != BotState::Crashed => {
            open(
                state,
                tenant_id,
                IncidentKind::BotCrashed,
                Severity::Warning,
                subject.clone(),
                format!("bot `{}` crashed ({exit})", bot.name),
                data.clone(),
            )
            .await?;
            if bot.restart_count >= CRASH_LOOP_RESTARTS {
                open(
                    state,
                    tenant_id,
                    IncidentKind::BotCrashLoop,
                    Severity::Critical,
                    subject,
                    format!("bot `{}` is crash-looping: {} restarts, last {exit}", bot.name, bot.restart_count),
                    data,
                )
                .await?;
            }
        }
        BotState::Failed if before != BotState::Failed => {
            let why = bot.last_error.clone().unwrap_or(exit);
            open(
                state,
                tenant_id,
                IncidentKind::BotFailed,
                Severity::Critical,
                subject,
                format!("bot `{}` failed: the agent gave up restarting it ({why})", bot.name),
                data,
            )
            .await?;
        }
        BotState::Running if before != BotState::Running => {
            let crashed =
                resolve(state, tenant_id, &[IncidentKind::BotCrashed, IncidentKind::BotFailed], &subject).await?;
            if !crashed.is_empty() {
                record(
                    state,
                    tenant_id,
                    IncidentKind::BotRestarted,
                    subject,
                    format!("bot `{}` is running again (restart {})", bot.name, bot.restart_count),
                    data,
                )
                .await?;
            }
        }
        BotState::Stopped => {
            // Stopped on request: whatever was wrong with it is no longer happening.
            resolve(
                state,
                tenant_id,
                &[IncidentKind::BotCrashed, IncidentKind::BotFailed, IncidentKind::BotCrashLoop],
                &subject,
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Crash loops resolve once the bot has run for its `stable_after_seconds`; incidents of
/// deleted bots resolve too.
pub async fn resolve_healed(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    for (tenant_id, kind, bot_id) in state.store.open_bot_incidents().await? {
        let subject = format!("bot:{bot_id}");
        let bot = match state.store.get_bot(tenant_id, bot_id).await {
            Ok(bot) => bot,
            Err(crate::store::StoreError::NotFound(_)) => {
                resolve(
                    state,
                    tenant_id,
                    &[IncidentKind::BotCrashed, IncidentKind::BotFailed, IncidentKind::BotCrashLoop],
                    &subject,
                )
                .await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let stable_since = now - chrono::Duration::seconds(bot.restart.stable_after_seconds as i64);
        let stable = bot.state == BotState::Running && bot.started_at.is_some_and(|t| t <= stable_since);
        if stable && kind == IncidentKind::BotCrashLoop.as_str() {
            resolve(state, tenant_id, &[IncidentKind::BotCrashLoop], &subject).await?;
        }
    }
    Ok(())
}

pub async fn agent_offline(state: &AppState, tenant_id: Id, agent: &Agent) -> anyhow::Result<()> {
    open(
        state,
        tenant_id,
        IncidentKind::AgentOffline,
        Severity::Warning,
        format!("agent:{}", agent.id),
        format!(
            "agent `{}` is offline: no heartbeat since {}",
            agent.name,
            agent.last_seen_at.map_or("it connected".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        ),
        serde_json::json!({ "agent_id": agent.id, "name": agent.name, "last_seen_at": agent.last_seen_at }),
    )
    .await?;
    Ok(())
}

pub async fn agent_online(state: &AppState, tenant_id: Id, agent: &Agent) -> anyhow::Result<()> {
    let subject = format!("agent:{}", agent.id);
    for offline in resolve(state, tenant_id, &[IncidentKind::AgentOffline], &subject).await? {
        let down = state.clock.now() - offline.opened_at;
        record(
            state,
            tenant_id,
            IncidentKind::AgentOnline,
            subject.clone(),
            format!("agent `{}` is back online after {} s offline", agent.name, down.num_seconds()),
            serde_json::json!({ "agent_id": agent.id, "offline_seconds": down.num_seconds() }),
        )
        .await?;
    }
    Ok(())
}

/// A revoked agent's token was used: the host still runs an agent (or someone holds its
/// token). One open incident per agent, counting the attempts.
pub async fn revoked_agent_connected(state: &AppState, tenant_id: Id, agent_id: Id) -> anyhow::Result<()> {
    let agent = state.store.get_agent(tenant_id, agent_id).await?;
    open(
        state,
        tenant_id,
        IncidentKind::TokenRevokedAgentConnected,
        Severity::Critical,
        format!("agent:{agent_id}"),
        format!(
            "revoked agent `{}` tried to connect: the host still runs it, or someone else holds its token; \
             stop the agent on `{}` or find who uses the token",
            agent.name, agent.hostname
        ),
        serde_json::json!({ "agent_id": agent_id, "name": agent.name, "hostname": agent.hostname }),
    )
    .await?;
    Ok(())
}

/// A command ended without running: expired before its agent took it, or dead-lettered.
pub async fn command_finished(state: &AppState, tenant_id: Id, command: &Command) -> anyhow::Result<()> {
    let (kind, severity, what) = match command.status {
        CommandStatus::Expired => (IncidentKind::CommandExpired, Severity::Warning, "expired before its agent took it"),
        CommandStatus::DeadLettered => {
            (IncidentKind::CommandDeadLettered, Severity::Critical, "was never acknowledged and is dead-lettered")
        }
        _ => return Ok(()),
    };
    // One open incident per agent and kind, counting its commands.
    open(state, tenant_id, kind, severity, format!("agent:{}", command.agent_id),
        format!("{} command {} {what} (attempt {})", command.kind.as_str(), command.id, command.attempt),
        serde_json::json!({ "command_id": command.id, "kind": command.kind, "bot_id": command.bot_id, "attempt": command.attempt })).await?;
    Ok(())
}
