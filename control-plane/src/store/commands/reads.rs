//! Reading the queue: one command, a page of them, and the depth by status.

use std::collections::BTreeMap;

use botmox_contract::{
    commands::{Command, CommandStatus},
    Id,
};

use super::{
    rows::{parse_status, CommandRow, COMMAND_COLUMNS},
    CommandFilter, IN_FLIGHT,
};
use crate::store::{with_pool, Result, Store, StoreError};

impl Store {
    pub async fn get_command(&self, tenant_id: Id, id: Id) -> Result<Command> {
        self.tenant_command_row(tenant_id, id).await?.ok_or(StoreError::NotFound("command"))?.try_into()
    }

    /// One page of the tenant's commands, newest first, and whether older ones follow.
    pub async fn list_commands(&self, tenant_id: Id, filter: &CommandFilter) -> Result<(Vec<Command>, bool)> {
        let mut sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE tenant_id = $1");
        let mut args = vec![tenant_id.to_string()];
        let mut and = |clause: &str, arg: String| {
            args.push(arg);
            sql.push_str(&format!(" AND {clause} ${}", args.len()));
        };
        for kind in &filter.hidden_kinds {
            and("kind <>", kind.as_str().to_owned());
        }
        if let Some(status) = filter.status {
            and("status =", status.as_str().to_owned());
        }
        if let Some(agent_id) = filter.agent_id {
            and("agent_id =", agent_id.to_string());
        }
        if let Some(bot_id) = filter.bot_id {
            and("bot_id =", bot_id.to_string());
        }
        if let Some(batch_id) = filter.batch_id {
            and("batch_id =", batch_id.to_string());
        }
        if let Some(before) = filter.before_id {
            // UUIDv7 strings sort by creation time, so "older" is "smaller id".
            and("id <", before.to_string());
        }
        let limit = filter.limit.max(1);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len() + 1));
        let rows: Vec<CommandRow> = with_pool!(self, read, |pool| {
            let mut query = sqlx::query_as(&sql);
            for arg in &args {
                query = query.bind(arg);
            }
            query.bind(i64::from(limit) + 1).fetch_all(pool).await?
        });
        let mut commands = rows.into_iter().map(Command::try_from).collect::<Result<Vec<_>>>()?;
        let has_more = commands.len() > limit as usize;
        commands.truncate(limit as usize);
        Ok((commands, has_more))
    }

    /// The first `limit` commands of a batch, oldest first, and whether more follow.
    pub async fn batch_commands(&self, tenant_id: Id, batch_id: Id, limit: u32) -> Result<(Vec<Command>, bool)> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE tenant_id = $1 AND batch_id = $2 ORDER BY id LIMIT $3"
        );
        let rows: Vec<CommandRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql)
                .bind(tenant_id.to_string())
                .bind(batch_id.to_string())
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?
        });
        let mut commands = rows.into_iter().map(Command::try_from).collect::<Result<Vec<_>>>()?;
        let more = commands.len() > limit as usize;
        commands.truncate(limit as usize);
        Ok((commands, more))
    }

    /// How many commands of the whole server are not finished yet (`queued`, `dispatched` or
    /// `running`): counted from the queue's partial indexes, so it costs what the queue holds,
    /// not what history is kept ([`Store::queue_depth`] reads every command). A watch that
    /// waits for the queue to drain polls this.
    pub async fn unfinished_commands(&self) -> Result<u64> {
        // Two counts, each with exactly the predicate of partial indexes (those of queued
        // commands, `commands_inflight_lease`): one `IN` of all three would read the table.
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM commands WHERE status = 'queued') \
                  + (SELECT COUNT(*) FROM commands WHERE {IN_FLIGHT})"
        );
        let n: i64 = with_pool!(self, read, |pool| { sqlx::query_scalar(&sql).fetch_one(pool).await? });
        Ok(n.max(0) as u64)
    }

    /// How many commands are in each status (every status present, zeros included), for one
    /// tenant or, with `None`, for the whole server (metrics).
    pub async fn queue_depth(&self, tenant_id: Option<Id>) -> Result<BTreeMap<CommandStatus, u64>> {
        let rows: Vec<(String, i64)> = match tenant_id {
            Some(tenant_id) => with_pool!(self, read, |pool| {
                sqlx::query_as("SELECT status, COUNT(*) FROM commands WHERE tenant_id = $1 GROUP BY status")
                    .bind(tenant_id.to_string())
                    .fetch_all(pool)
                    .await?
            }),
            None => with_pool!(self, read, |pool| {
                sqlx::query_as("SELECT status, COUNT(*) FROM commands GROUP BY status").fetch_all(pool).await?
            }),
        };
        let mut depth: BTreeMap<CommandStatus, u64> = CommandStatus::ALL.into_iter().map(|s| (s, 0)).collect();
        for (status, n) in rows {
            depth.insert(parse_status(&status)?, n as u64);
        }
        Ok(depth)
    }

    pub(super) async fn tenant_command_row(&self, tenant_id: Id, id: Id) -> Result<Option<CommandRow>> {
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE tenant_id = $1 AND id = $2");
        Ok(with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(tenant_id.to_string()).bind(id.to_string()).fetch_optional(pool).await?
        }))
    }

    pub(super) async fn agent_command_row(&self, agent_id: Id, id: Id) -> Result<Option<CommandRow>> {
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE agent_id = $1 AND id = $2");
        Ok(with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(agent_id.to_string()).bind(id.to_string()).fetch_optional(pool).await?
        }))
    }
}
