//! Creating bots: one (`POST /bots`) or thousands at once (`POST /bots/import`), through the
//! same statement. The definitions are bound as one JSON array and read back as rows
//! ([`Store::json_array_rows`]), so one SQL text serves both backends and any number of bots:
//!
//! - the agent check is folded into the INSERT (`WHERE EXISTS` an agent of the tenant), and a
//!   taken name is `ON CONFLICT DO NOTHING`: a statement never fails half-way, it inserts what
//!   it may and `RETURNING` says which;
//! - the tags go in with one statement per chunk, from a JSON array of (bot, tag) pairs;
//! - the answer is built from `RETURNING`, never from a read after the transaction.
//!
//! Only when fewer rows came back than were sent is it asked why (a name taken, an agent
//! unknown); the transaction is rolled back first, so an import is all or nothing.

use std::collections::{HashMap, HashSet};

use botmox_contract::{
    bots::{Bot, BotSpec},
    Id, Timestamp,
};

use super::{definition_hash, desired_str, BotRow, NewBot, BOT_COLUMNS};
use crate::store::{json_rows, new_id, to_json, to_ms, with_pool, Elements, Result, Store, StoreError};

/// Definitions per statement: keeps each bound JSON array at a few MB at most.
const CHUNK: usize = 2000;

/// Why one definition of a creation cannot be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A bot of the tenant already has the definition's name.
    NameTaken,
    /// The definition's `agent_id` is no agent of the tenant.
    NoSuchAgent,
}

/// The definitions that cannot be created, by index (an index may appear twice, once per
/// reason), in index order.
pub type Refusals = Vec<(usize, Refusal)>;

impl Store {
    /// Creates one bot (in `pending` state, version 1) with its tags, in one transaction.
    /// `Reference` when its agent is no agent of the tenant, `Conflict` when its name is taken.
    pub async fn create_bot(&self, new: NewBot, now: Timestamp) -> Result<Bot> {
        let spec = std::slice::from_ref(&new.spec);
        match self.create_bots(new.tenant_id, spec, now).await? {
            Ok(mut bots) => bots.pop().ok_or_else(|| StoreError::Corrupt("a created bot went missing".into())),
            Err(refusals) => Err(match refusals.first() {
                Some((_, Refusal::NoSuchAgent)) => {
                    StoreError::Reference(format!("agent {} does not exist", new.spec.agent_id))
                }
                _ => StoreError::Conflict(format!("a bot named `{}` already exists", new.spec.name)),
            }),
        }
    }

    /// Creates every bot of `specs` in one transaction, or none: the bots in the order of
    /// `specs`, or why each refused definition cannot be created (then nothing changed). Names
    /// must be distinct within `specs` (the caller checks; a repeated name is refused here as
    /// taken). The outer error is the database's.
    pub async fn create_bots(
        &self,
        tenant_id: Id,
        specs: &[BotSpec],
        now: Timestamp,
    ) -> Result<std::result::Result<Vec<Bot>, Refusals>> {
        if specs.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let tenant = tenant_id.to_string();
        let ids: Vec<Id> = specs.iter().map(|_| new_id()).collect();
        let rows: Vec<serde_json::Value> = specs
            .iter()
            .zip(&ids)
            .map(|(spec, id)| {
                serde_json::json!({
                    "id": id.to_string(),
                    "agent": spec.agent_id.to_string(),
                    "name": spec.name,
                    "exec": to_json(&spec.exec),
                    "restart": to_json(&spec.restart),
                    "stop": to_json(&spec.stop),
                    "tags": to_json(&spec.tags),
                    "desired": desired_str(spec.desired_state),
                    "hash": definition_hash(&spec.exec, &spec.restart, &spec.stop),
                })
            })
            .collect();
        let tags: Vec<serde_json::Value> = specs
            .iter()
            .zip(&ids)
            .flat_map(|(spec, id)| {
                spec.tags.iter().map(move |tag| serde_json::json!({ "bot": id.to_string(), "tag": tag }))
            })
            .collect();
        // Rows go in in id (= request) order, whatever the plan.
        let insert = format!(
            "INSERT INTO bots (id, tenant_id, agent_id, name, exec, restart, stop, tags, desired_state, state, \
             definition_hash, version, created_at, updated_at) \
             SELECT v_id, $1, v_agent, v_name, v_exec, v_restart, v_stop, v_tags, v_desired, 'pending', v_hash, 1, $2, $2 \
             FROM (SELECT value ->> 'id' AS v_id, value ->> 'agent' AS v_agent, value ->> 'name' AS v_name, \
                          value ->> 'exec' AS v_exec, value ->> 'restart' AS v_restart, value ->> 'stop' AS v_stop, \
                          value ->> 'tags' AS v_tags, value ->> 'desired' AS v_desired, value ->> 'hash' AS v_hash \
                   FROM {}) AS v \
             WHERE EXISTS (SELECT 1 FROM agents WHERE agents.tenant_id = $1 AND agents.id = v_agent) \
             ORDER BY v_id ON CONFLICT DO NOTHING RETURNING {BOT_COLUMNS}",
            self.json_array_rows("$3", Elements::Json)
        );
        let insert_tags = format!(
            "INSERT INTO bot_tags (bot_id, tenant_id, tag) SELECT value ->> 'bot', $1, value ->> 'tag' FROM {}",
            self.json_array_rows("$2", Elements::Json)
        );
        let inserted: Option<Vec<BotRow>> = with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let mut inserted: Vec<BotRow> = Vec::with_capacity(rows.len());
                for chunk in rows.chunks(CHUNK) {
                    let got: Vec<BotRow> = sqlx::query_as(&insert)
                        .bind(&tenant)
                        .bind(to_ms(now))
                        .bind(json_rows(&chunk))
                        .fetch_all(&mut *tx)
                        .await?;
                    if got.len() < chunk.len() {
                        tx.rollback().await?;
                        return Ok::<_, StoreError>(None);
                    }
                    inserted.extend(got);
                }
                for chunk in tags.chunks(CHUNK) {
                    sqlx::query(&insert_tags).bind(&tenant).bind(json_rows(&chunk)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(Some(inserted))
            }
            .await?
        });
        let Some(inserted) = inserted else {
            let refusals = self.creation_refusals(tenant_id, specs).await?;
            if refusals.is_empty() {
                // What stood in the way is gone already (a bot deleted, an agent added meanwhile).
                return Err(StoreError::Conflict(
                    "the bots' names or agents changed while they were being created; try again".into(),
                ));
            }
            return Ok(Err(refusals));
        };
        let mut by_id: HashMap<String, BotRow> = inserted.into_iter().map(|row| (row.status.id.clone(), row)).collect();
        let bots = ids
            .iter()
            .map(|id| {
                by_id
                    .remove(&id.to_string())
                    .ok_or_else(|| StoreError::Corrupt(format!("bot {id} was not returned by its INSERT")))
                    .and_then(Bot::try_from)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Ok(bots))
    }

    /// Which definitions of `specs` cannot be created in the tenant as things stand: names
    /// taken by existing bots, agents the tenant does not have. Reads only.
    pub async fn creation_refusals(&self, tenant_id: Id, specs: &[BotSpec]) -> Result<Refusals> {
        let tenant = tenant_id.to_string();
        let names_sql = format!(
            "SELECT name FROM bots WHERE tenant_id = $1 AND name IN (SELECT value FROM {})",
            self.json_array_rows("$2", Elements::Text)
        );
        let agents_sql = format!(
            "SELECT id FROM agents WHERE tenant_id = $1 AND id IN (SELECT value FROM {})",
            self.json_array_rows("$2", Elements::Text)
        );
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let agents: Vec<String> =
            specs.iter().map(|s| s.agent_id.to_string()).collect::<HashSet<_>>().into_iter().collect();
        let mut taken: HashSet<String> = HashSet::new();
        let mut known: HashSet<String> = HashSet::new();
        with_pool!(self, read, |pool| {
            for chunk in names.chunks(CHUNK) {
                let rows: Vec<String> =
                    sqlx::query_scalar(&names_sql).bind(&tenant).bind(json_rows(&chunk)).fetch_all(pool).await?;
                taken.extend(rows);
            }
            for chunk in agents.chunks(CHUNK) {
                let rows: Vec<String> =
                    sqlx::query_scalar(&agents_sql).bind(&tenant).bind(json_rows(&chunk)).fetch_all(pool).await?;
                known.extend(rows);
            }
        });
        let mut refusals = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            if taken.contains(&spec.name) {
                refusals.push((index, Refusal::NameTaken));
            }
            if !known.contains(&spec.agent_id.to_string()) {
                refusals.push((index, Refusal::NoSuchAgent));
            }
        }
        Ok(refusals)
    }
}
