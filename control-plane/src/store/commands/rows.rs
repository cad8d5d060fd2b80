//! The `commands` row as the database holds it, and its conversion to the wire [`Command`].

use botmox_contract::{
    audit::{Actor, ActorKind},
    commands::{Command, CommandKind, CommandStatus},
    events::{event_error, CommandSummary},
};

use super::super::{from_ms, opt_from_ms, parse_id, parse_json, Result, StoreError};

/// The columns every statement of the queue returns, in [`CommandRow`]'s order.
pub(super) const COMMAND_COLUMNS: &str = "id, agent_id, bot_id, kind, status, payload, idempotency_key, \
     created_by_kind, created_by_id, attempt, max_attempts, lease_expires_at, expires_at, created_at, dispatched_at, \
     acked_at, finished_at, result, error, batch_id, bot_seq";

#[derive(sqlx::FromRow)]
pub(super) struct CommandRow {
    id: String,
    agent_id: String,
    bot_id: Option<String>,
    kind: String,
    status: String,
    payload: String,
    idempotency_key: Option<String>,
    created_by_kind: String,
    created_by_id: Option<String>,
    attempt: i64,
    max_attempts: i64,
    lease_expires_at: Option<i64>,
    expires_at: i64,
    created_at: i64,
    dispatched_at: Option<i64>,
    acked_at: Option<i64>,
    finished_at: Option<i64>,
    result: Option<String>,
    error: Option<String>,
    batch_id: Option<String>,
    bot_seq: Option<i64>,
}

/// The columns of a [`CommandSummary`], in [`SummaryRow`]'s order: what the statements that
/// apply agents' acks and results return. Their callers only publish the change, and on
/// SQLite materialising a returned row costs per column (each value is copied out of the
/// statement): these nine instead of all 21, and no payload or result JSON to parse.
pub(super) const SUMMARY_COLUMNS: &str = "id, agent_id, bot_id, kind, status, attempt, error, created_at, finished_at";

#[derive(sqlx::FromRow)]
pub(super) struct SummaryRow {
    id: String,
    agent_id: String,
    bot_id: Option<String>,
    kind: String,
    status: String,
    attempt: i64,
    error: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<SummaryRow> for CommandSummary {
    type Error = StoreError;

    fn try_from(row: SummaryRow) -> Result<Self> {
        Ok(CommandSummary {
            id: parse_id(&row.id)?,
            agent_id: parse_id(&row.agent_id)?,
            bot_id: row.bot_id.as_deref().map(parse_id).transpose()?,
            kind: parse_kind(&row.kind)?,
            status: parse_status(&row.status)?,
            attempt: parse_attempt(row.attempt)?,
            error: event_error(row.error.as_deref()),
            created_at: from_ms(row.created_at)?,
            finished_at: opt_from_ms(row.finished_at)?,
        })
    }
}

impl CommandRow {
    /// The status alone, for deciding why a transition was refused.
    pub(super) fn status(&self) -> Result<CommandStatus> {
        parse_status(&self.status)
    }

    pub(super) fn agent_id(&self) -> &str {
        &self.agent_id
    }
}

pub(super) fn parse_status(s: &str) -> Result<CommandStatus> {
    CommandStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("command status `{s}`")))
}

fn parse_kind(s: &str) -> Result<CommandKind> {
    CommandKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("command kind `{s}`")))
}

fn parse_attempt(attempt: i64) -> Result<u32> {
    u32::try_from(attempt).map_err(|_| StoreError::Corrupt("command attempt".into()))
}

impl TryFrom<CommandRow> for Command {
    type Error = StoreError;

    fn try_from(row: CommandRow) -> Result<Self> {
        Ok(Command {
            id: parse_id(&row.id)?,
            agent_id: parse_id(&row.agent_id)?,
            bot_id: row.bot_id.as_deref().map(parse_id).transpose()?,
            kind: parse_kind(&row.kind)?,
            status: parse_status(&row.status)?,
            payload: parse_json("command payload", &row.payload)?,
            idempotency_key: row.idempotency_key,
            created_by: Actor {
                kind: ActorKind::parse(&row.created_by_kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("actor kind `{}`", row.created_by_kind)))?,
                id: row.created_by_id.as_deref().map(parse_id).transpose()?,
            },
            attempt: parse_attempt(row.attempt)?,
            max_attempts: u32::try_from(row.max_attempts)
                .map_err(|_| StoreError::Corrupt("command max_attempts".into()))?,
            lease_expires_at: opt_from_ms(row.lease_expires_at)?,
            expires_at: from_ms(row.expires_at)?,
            created_at: from_ms(row.created_at)?,
            dispatched_at: opt_from_ms(row.dispatched_at)?,
            acked_at: opt_from_ms(row.acked_at)?,
            finished_at: opt_from_ms(row.finished_at)?,
            result: row.result.as_deref().map(|r| parse_json("command result", r)).transpose()?,
            error: row.error,
            batch_id: row.batch_id.as_deref().map(parse_id).transpose()?,
            seq: row.bot_seq.map(|s| s.max(0) as u64),
        })
    }
}

/// Converts the rows a statement returned, oldest first (`RETURNING` promises no order).
pub(super) fn into_commands(rows: Vec<CommandRow>) -> Result<Vec<Command>> {
    let mut commands = rows.into_iter().map(Command::try_from).collect::<Result<Vec<_>>>()?;
    commands.sort_by_key(|c| c.id);
    Ok(commands)
}
