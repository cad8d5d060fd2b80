//! Acks and results of one agent applied in bulk: what a connection does with the frames that
//! arrived together (under load, an agent's acks and results come in bursts). One statement
//! moves every command that may move; each one that did not gets exactly the answer the
//! single-command function would give (idempotent repeat, `NotFound`, `InvalidTransition`).

use std::collections::{HashMap, HashSet};

use botmox_contract::{
    commands::{Command, CommandStatus},
    Id, Timestamp,
};

use super::{
    refused,
    rows::{CommandRow, COMMAND_COLUMNS},
    CommandOutcome,
};
use crate::store::{to_json, to_ms, with_pool, Backend, Result, Store};

impl Store {
    /// [`Store::ack_command`] for several commands of one agent, in one statement. The answers
    /// come in the order of `command_ids`; the outer error is the database's.
    pub async fn ack_commands(&self, agent_id: Id, command_ids: &[Id], now: Timestamp) -> Result<Vec<Result<Command>>> {
        if command_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = to_json(&command_ids.iter().map(Id::to_string).collect::<Vec<_>>());
        let sql = format!(
            "UPDATE commands SET status = 'running', acked_at = $1, lease_expires_at = $1 + run_timeout_ms, \
             updated_at = $1 WHERE agent_id = $2 AND status = 'dispatched' \
             AND id IN (SELECT value FROM {}) RETURNING {COMMAND_COLUMNS}",
            self.json_array_rows("$3", Elements::Text)
        );
        let rows: Vec<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql).bind(to_ms(now)).bind(agent_id.to_string()).bind(&ids).fetch_all(pool).await?
        });
        let requests = command_ids.iter().map(|id| (*id, CommandStatus::Running));
        self.answer_each(agent_id, requests, rows).await
    }

    /// [`Store::complete_command`] for several commands of one agent, in one statement.
    /// The answers come in the order of `outcomes`.
    pub async fn complete_commands(
        &self,
        agent_id: Id,
        outcomes: &[(Id, CommandOutcome)],
        now: Timestamp,
    ) -> Result<Vec<Result<Command>>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        // The first answer for a command counts; a later one in the same batch is judged
        // against it (as if sent after it), so which one wins never depends on the plan.
        let mut seen = HashSet::new();
        let values: Vec<_> = outcomes
            .iter()
            .filter(|(id, _)| seen.insert(*id))
            .map(|(id, outcome)| {
                serde_json::json!({
                    "id": id.to_string(),
                    "status": status_of(outcome).as_str(),
                    // Stored as JSON text, like the single-command path.
                    "result": (!outcome.result.is_null()).then(|| to_json(&outcome.result)),
                    "error": outcome.error,
                })
            })
            .collect();
        let sql = format!(
            "UPDATE commands SET status = v_status, result = v_result, error = v_error, finished_at = $1, \
             lease_expires_at = NULL, updated_at = $1 \
             FROM (SELECT value ->> 'id' AS v_id, value ->> 'status' AS v_status, value ->> 'result' AS v_result, \
                          value ->> 'error' AS v_error FROM {}) AS v \
             WHERE id = v_id AND agent_id = $2 AND status IN ('dispatched', 'running') \
             RETURNING {COMMAND_COLUMNS}",
            self.json_array_rows("$3", Elements::Json)
        );
        let rows: Vec<CommandRow> = with_pool!(self, write, |pool| {
            sqlx::query_as(&sql)
                .bind(to_ms(now))
                .bind(agent_id.to_string())
                .bind(to_json(&values))
                .fetch_all(pool)
                .await?
        });
        let requests = outcomes.iter().map(|(id, outcome)| (*id, status_of(outcome)));
        self.answer_each(agent_id, requests, rows).await
    }

    /// The elements of a JSON array bound at `param`, as a table with one column `value`:
    /// the only text that differs between the backends in this module's bulk statements.
    /// SQLite's `json_each` gives strings as text and objects as JSON either way.
    fn json_array_rows(&self, param: &str, elements: Elements) -> String {
        match (&self.backend, elements) {
            (Backend::Sqlite { .. }, _) => format!("json_each({param})"),
            (Backend::Postgres(_), Elements::Text) => format!("json_array_elements_text(CAST({param} AS json))"),
            (Backend::Postgres(_), Elements::Json) => format!("json_array_elements(CAST({param} AS json))"),
        }
    }

    /// One answer per request, in order: the row the statement moved (once per command, even
    /// if it was asked for twice), or else what the single-command path says about it now.
    async fn answer_each(
        &self,
        agent_id: Id,
        requests: impl Iterator<Item = (Id, CommandStatus)>,
        moved: Vec<CommandRow>,
    ) -> Result<Vec<Result<Command>>> {
        let mut moved: HashMap<Id, Command> =
            moved.into_iter().map(|row| Command::try_from(row).map(|c| (c.id, c))).collect::<Result<_>>()?;
        let mut answers = Vec::new();
        for (id, to) in requests {
            let answer = match moved.remove(&id) {
                Some(command) => Ok(command),
                None => refused(id, self.agent_command_row(agent_id, id).await?, to, true),
            };
            answers.push(answer);
        }
        Ok(answers)
    }
}

/// What the elements of a bound JSON array are used as.
#[derive(Clone, Copy)]
enum Elements {
    /// Strings, compared as text.
    Text,
    /// Objects, read with `->>`.
    Json,
}

fn status_of(outcome: &CommandOutcome) -> CommandStatus {
    if outcome.ok {
        CommandStatus::Succeeded
    } else {
        CommandStatus::Failed
    }
}
