//! The queue in bulk: many commands enqueued at once (a bulk action on a filtered set of
//! bots), and the acks and results of one agent applied together (what a connection does with
//! the frames that arrived together; under load they come in bursts). One statement moves
//! every command that may move; each one that did not gets exactly the answer the
//! single-command function would give (idempotent repeat, `Reference`, `NotFound`,
//! `InvalidTransition`).

use std::collections::{HashMap, HashSet};

use botmox_contract::{
    commands::{Command, CommandStatus},
    events::CommandSummary,
    Id, Timestamp,
};

use super::{
    duration_ms, refused,
    rows::{CommandRow, SummaryRow, COMMAND_COLUMNS, SUMMARY_COLUMNS},
    CommandOutcome, Enqueued, NewCommand,
};
use crate::store::{json_rows, new_id, to_json, to_ms, with_pool, Elements, Result, Store, StoreError};

impl Store {
    /// [`Store::enqueue_command`] for many commands, in one statement (so all of them or, on a
    /// database error, none). The answers come in the order of `news`, and so do the new
    /// commands' ids (so they are claimed in that order). A key repeated within the batch
    /// makes one command; the later entries get it as [`Enqueued::Existing`].
    pub async fn enqueue_commands(&self, news: Vec<NewCommand>, now: Timestamp) -> Result<Vec<Result<Enqueued>>> {
        if news.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        let ids: Vec<Id> = news.iter().map(|_| new_id()).collect();
        let values: Vec<_> = news
            .iter()
            .zip(&ids)
            .map(|(new, id)| {
                serde_json::json!({
                    "id": id.to_string(),
                    "tenant_id": new.tenant_id.to_string(),
                    "agent_id": new.agent_id.to_string(),
                    "bot_id": new.bot_id.map(|id| id.to_string()),
                    "kind": new.kind.as_str(),
                    "payload": to_json(&new.payload),
                    "key": new.idempotency_key,
                    "by_kind": new.created_by.kind.as_str(),
                    "by_id": new.created_by.id.map(|id| id.to_string()),
                    "max_attempts": i64::from(new.max_attempts),
                    "lease_ms": duration_ms(new.lease),
                    "run_timeout_ms": duration_ms(new.run_timeout),
                    "expires_at": now_ms.saturating_add(duration_ms(new.ttl)),
                })
            })
            .collect();
        // The same statement as the single enqueue, fed from a JSON array: the agent check is
        // the EXISTS, the idempotency check is the conflict. Rows go in in id (= batch) order,
        // so the first of two entries with one key is the one inserted, whatever the plan.
        let sql = format!(
            "INSERT INTO commands (id, tenant_id, agent_id, bot_id, kind, status, payload, idempotency_key, \
             created_by_kind, created_by_id, attempt, max_attempts, lease_ms, run_timeout_ms, expires_at, \
             created_at, updated_at) \
             SELECT v_id, v_tenant, v_agent, v_bot, v_kind, 'queued', v_payload, v_key, v_by_kind, v_by_id, 0, \
                    v_max_attempts, v_lease_ms, v_run_timeout_ms, v_expires_at, $1, $1 \
             FROM (SELECT value ->> 'id' AS v_id, value ->> 'tenant_id' AS v_tenant, value ->> 'agent_id' AS v_agent, \
                          value ->> 'bot_id' AS v_bot, value ->> 'kind' AS v_kind, value ->> 'payload' AS v_payload, \
                          value ->> 'key' AS v_key, value ->> 'by_kind' AS v_by_kind, value ->> 'by_id' AS v_by_id, \
                          CAST(value ->> 'max_attempts' AS BIGINT) AS v_max_attempts, \
                          CAST(value ->> 'lease_ms' AS BIGINT) AS v_lease_ms, \
                          CAST(value ->> 'run_timeout_ms' AS BIGINT) AS v_run_timeout_ms, \
                          CAST(value ->> 'expires_at' AS BIGINT) AS v_expires_at \
                   FROM {}) AS v \
             WHERE EXISTS (SELECT 1 FROM agents WHERE agents.tenant_id = v_tenant AND agents.id = v_agent \
                           AND agents.status <> 'revoked' {}) \
             ORDER BY v_id ON CONFLICT DO NOTHING RETURNING {COMMAND_COLUMNS}",
            self.json_array_rows("$2", Elements::Json),
            self.key_share()
        );
        let rows: Vec<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql).bind(now_ms).bind(json_rows(&values)).fetch_all(pool).await?
        });
        let mut inserted: HashMap<Id, Command> =
            rows.into_iter().map(|row| Command::try_from(row).map(|c| (c.id, c))).collect::<Result<_>>()?;
        let mut answers = Vec::with_capacity(news.len());
        for (new, id) in news.iter().zip(&ids) {
            answers.push(match inserted.remove(id) {
                Some(command) => Ok(Enqueued::Created(command)),
                None => match self.not_inserted(new).await {
                    Err(refused @ (StoreError::Reference(_) | StoreError::Conflict(_))) => Err(refused),
                    other => Ok(other?),
                },
            });
        }
        Ok(answers)
    }

    /// [`Store::ack_command`] for several commands of one agent, in one statement. The answers
    /// come in the order of `command_ids`, each the command as its event carries it (what the
    /// caller publishes; [`Store::get_command`] reads the whole row); the outer error is the
    /// database's.
    pub async fn ack_commands(
        &self,
        agent_id: Id,
        command_ids: &[Id],
        now: Timestamp,
    ) -> Result<Vec<Result<CommandSummary>>> {
        let acks: Vec<(Id, Id)> = command_ids.iter().map(|id| (agent_id, *id)).collect();
        self.ack_agents_commands(&acks, now).await
    }

    /// Acks of several agents (`(agent, command)`), in one statement: what the connections'
    /// frames that arrived together come to. Each command moves only if it is its agent's.
    pub async fn ack_agents_commands(&self, acks: &[(Id, Id)], now: Timestamp) -> Result<Vec<Result<CommandSummary>>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<_> = acks
            .iter()
            .map(|(agent, id)| serde_json::json!({ "agent": agent.to_string(), "id": id.to_string() }))
            .collect();
        let sql = format!(
            "UPDATE commands SET status = 'running', acked_at = $1, lease_expires_at = $1 + run_timeout_ms, \
             updated_at = $1 \
             FROM (SELECT value ->> 'id' AS v_id, value ->> 'agent' AS v_agent FROM {}) AS v \
             WHERE id = v_id AND agent_id = v_agent AND status = 'dispatched' RETURNING {SUMMARY_COLUMNS}",
            self.json_array_rows("$2", Elements::Json)
        );
        // Relaxed durability, as for one ack (see `Store::ack_command`).
        let rows: Vec<SummaryRow> = with_pool!(self, relaxed, |pool| {
            sqlx::query_as(&sql).bind(to_ms(now)).bind(json_rows(&values)).fetch_all(pool).await?
        });
        let requests = acks.iter().map(|(agent, id)| (*agent, *id, CommandStatus::Running));
        self.answer_each(requests, rows).await
    }

    /// [`Store::complete_command`] for several commands of one agent, in one statement.
    /// The answers come in the order of `outcomes`, as summaries (see [`Store::ack_commands`]).
    pub async fn complete_commands(
        &self,
        agent_id: Id,
        outcomes: &[(Id, CommandOutcome)],
        now: Timestamp,
    ) -> Result<Vec<Result<CommandSummary>>> {
        let outcomes: Vec<(Id, Id, CommandOutcome)> =
            outcomes.iter().map(|(id, outcome)| (agent_id, *id, outcome.clone())).collect();
        self.complete_agents_commands(&outcomes, now).await
    }

    /// Results of several agents (`(agent, command, outcome)`), in one statement; each command
    /// moves only if it is its agent's. The answers come in the order of `outcomes`.
    pub async fn complete_agents_commands(
        &self,
        outcomes: &[(Id, Id, CommandOutcome)],
        now: Timestamp,
    ) -> Result<Vec<Result<CommandSummary>>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        // The first answer for a command counts; a later one in the same batch is judged
        // against it (as if sent after it), so which one wins never depends on the plan.
        let mut seen = HashSet::new();
        let values: Vec<_> = outcomes
            .iter()
            .filter(|(agent, id, _)| seen.insert((*agent, *id)))
            .map(|(agent, id, outcome)| {
                serde_json::json!({
                    "agent": agent.to_string(),
                    "id": id.to_string(),
                    "status": status_of(outcome).as_str(),
                    // Stored as JSON text, like the single-command path.
                    "result": (!outcome.result.is_null()).then(|| to_json(&outcome.result)),
                    "error": outcome.error,
                    "acked": if outcome.acked { "y" } else { "n" },
                })
            })
            .collect();
        let sql = format!(
            "UPDATE commands SET status = v_status, result = v_result, error = v_error, finished_at = $1, \
             acked_at = CASE WHEN v_acked = 'y' THEN COALESCE(acked_at, $1) ELSE acked_at END, \
             lease_expires_at = NULL, updated_at = $1 \
             FROM (SELECT value ->> 'id' AS v_id, value ->> 'agent' AS v_agent, value ->> 'status' AS v_status, \
                          value ->> 'result' AS v_result, value ->> 'error' AS v_error, \
                          value ->> 'acked' AS v_acked FROM {}) AS v \
             WHERE id = v_id AND agent_id = v_agent AND status IN ('dispatched', 'running') \
             RETURNING {SUMMARY_COLUMNS}",
            self.json_array_rows("$2", Elements::Json)
        );
        let rows: Vec<SummaryRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql).bind(to_ms(now)).bind(json_rows(&values)).fetch_all(pool).await?
        });
        let requests = outcomes.iter().map(|(agent, id, outcome)| (*agent, *id, status_of(outcome)));
        self.answer_each(requests, rows).await
    }

    /// One answer per request, in order: the row the statement moved (once per command, even
    /// if it was asked for twice), or else what the single-command path says about it now.
    async fn answer_each(
        &self,
        requests: impl Iterator<Item = (Id, Id, CommandStatus)>,
        moved: Vec<SummaryRow>,
    ) -> Result<Vec<Result<CommandSummary>>> {
        let mut moved: HashMap<(Id, Id), CommandSummary> = moved
            .into_iter()
            .map(|row| CommandSummary::try_from(row).map(|c| ((c.agent_id, c.id), c)))
            .collect::<Result<_>>()?;
        let mut answers = Vec::new();
        for (agent_id, id, to) in requests {
            let answer = match moved.remove(&(agent_id, id)) {
                Some(command) => Ok(command),
                None => refused(id, self.agent_command_row(agent_id, id).await?, to, true)
                    .map(|command| CommandSummary::from(&command)),
            };
            answers.push(answer);
        }
        Ok(answers)
    }
}

fn status_of(outcome: &CommandOutcome) -> CommandStatus {
    if outcome.ok {
        CommandStatus::Succeeded
    } else {
        CommandStatus::Failed
    }
}
