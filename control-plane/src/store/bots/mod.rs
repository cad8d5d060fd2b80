//! Bots: definitions (written through the API) and observed state (reported by agents).
//! Creation, one bot or an import of thousands, is in [`create`].

mod create;

pub use create::{Refusal, Refusals};

use std::collections::{BTreeMap, HashMap};

use botmox_contract::{
    agents::AgentStatus,
    bots::{Bot, BotSpec, BotState, DesiredState, ExecSpec, RestartSpec, StopSpec},
    events::BotStatus,
    protocol::{BotSnapshot, BotStateReport},
    Id, Timestamp,
};
use sha2::{Digest, Sha256};

use super::{
    from_ms, is_unique_violation, json_rows, opt_from_ms, parse_id, parse_json, to_json, to_ms, with_pool, Result,
    Store, StoreError,
};

/// `tenant_id = $1`, written so that no index serves it: in a lookup of given ids, SQLite's
/// planner (with no statistics) would otherwise walk the tenant's index — every bot of the
/// tenant — instead of looking each id up (measured: 4 ms against 0.1 ms for 32 ids among
/// 10,000 bots). Postgres plans both forms alike.
const TENANT_NOT_INDEXED: &str = "tenant_id || '' = $1";

/// A bot's agent's status, as a column of a query on `bots`.
const AGENT_OF_BOT: &str =
    concat!("(SELECT ", super::agents::agent_status_sql!(), " FROM agents WHERE agents.id = bots.agent_id)");

fn with_agent_status((id, status): (String, String)) -> Result<(Id, AgentStatus)> {
    let status = AgentStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("agent status `{status}`")))?;
    Ok((parse_id(&id)?, status))
}

/// A bot to create (`POST /bots`): its definition, in a tenant.
pub struct NewBot {
    pub tenant_id: Id,
    pub spec: BotSpec,
}

/// A whole new definition for an existing bot (the API merges a PATCH into this).
pub struct UpdateBot {
    pub name: String,
    pub agent_id: Id,
    pub exec: ExecSpec,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub tags: Vec<String>,
}

/// Filters of `GET /bots`. `name` matches a case-insensitive substring.
#[derive(Debug, Clone, Default)]
pub struct BotFilter {
    pub state: Option<BotState>,
    pub agent_id: Option<Id>,
    pub tag: Option<String>,
    pub name: Option<String>,
    /// Only bots whose name sorts after this one (the API's cursor, decoded).
    pub after_name: Option<String>,
    pub limit: u32,
}

pub struct BotPage {
    pub items: Vec<Bot>,
    /// True when more bots follow the last one of `items`.
    pub has_more: bool,
    pub counts: BTreeMap<BotState, u64>,
    pub total: u64,
}

/// A bot as an agent's reports found it: the row, and the agent time of the newest report
/// applied to it (`reported_at_us`, microseconds; `None` before its first report).
#[derive(Debug, Clone)]
pub struct Reported {
    pub bot: BotStatus,
    pub reported_at_us: Option<i64>,
    /// An incident about the bot was open when it was read.
    pub open_incident: bool,
}

/// What [`Store::report_agents_bot_states`] did with one agent's batch of reports.
#[derive(Debug, Default)]
pub struct StateReports {
    /// The bots of the agent the reports named, as they were before (read first).
    pub before: Vec<Reported>,
    /// Per report, in the order given: whether it was news — later than every report applied
    /// for its bot before it. A report of a bot not in `before` is never news.
    pub news: Vec<bool>,
    /// The bots the statement changed, as stored now.
    pub after: Vec<BotStatus>,
}

/// Which reports of a batch, in the order sent, are news: about a bot that is `theirs` (the
/// reporting agent's), and later (`at`, to the microsecond) than every report applied for
/// their bot before them — `newest` holds each bot's stored `reported_at_us` and takes each
/// news. An equal time is a repeat of the same report, an earlier one a replay of the past.
fn news_of(
    reports: &[BotStateReport],
    newest: &mut HashMap<Id, Option<i64>>,
    theirs: impl Fn(&Id) -> bool,
) -> Vec<bool> {
    reports
        .iter()
        .map(|report| {
            let at = report.at.timestamp_micros();
            match newest.get_mut(&report.bot_id) {
                Some(applied) if theirs(&report.bot_id) && applied.is_none_or(|applied| applied < at) => {
                    *applied = Some(at);
                    true
                }
                _ => false,
            }
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct ReportedRow {
    #[sqlx(flatten)]
    bot: StatusRow,
    reported_at_us: Option<i64>,
    open_incident: bool,
}

/// Identifies what an agent must run: a change of any of these must reach the agent.
pub fn definition_hash(exec: &ExecSpec, restart: &RestartSpec, stop: &StopSpec) -> String {
    let canonical = to_json(&(exec, restart, stop));
    let digest = Sha256::digest(canonical.as_bytes());
    hex::encode(&digest[..16])
}

/// A bot as stored: its status ([`StatusRow`]) and the rest of its definition.
#[derive(sqlx::FromRow)]
pub(super) struct BotRow {
    #[sqlx(flatten)]
    pub(super) status: StatusRow,
    exec: String,
    restart: String,
    tags: String,
    created_at: i64,
}

pub(super) const BOT_COLUMNS: &str = "id, agent_id, name, exec, restart, stop, tags, desired_state, state, pid, started_at, \
                           last_exit_code, last_exit_signal, restart_count, last_error, version, created_at, updated_at";

impl TryFrom<BotRow> for Bot {
    type Error = StoreError;

    fn try_from(row: BotRow) -> Result<Self> {
        let (status, stop) = row.status.parse()?;
        Ok(Bot {
            id: status.id,
            agent_id: status.agent_id,
            name: status.name,
            exec: parse_json("bot exec", &row.exec)?,
            restart: parse_json("bot restart", &row.restart)?,
            stop,
            tags: parse_json("bot tags", &row.tags)?,
            desired_state: status.desired_state,
            state: status.state,
            pid: status.pid,
            started_at: status.started_at,
            last_exit_code: status.last_exit_code,
            last_exit_signal: status.last_exit_signal,
            restart_count: status.restart_count,
            last_error: status.last_error,
            version: status.version,
            created_at: from_ms(row.created_at)?,
            updated_at: status.updated_at,
        })
    }
}

/// A bot as dispatch needs it: the agent it is placed on, and what to run.
#[derive(Debug, Clone)]
pub struct DispatchBot {
    pub id: Id,
    pub agent_id: Id,
    pub name: String,
    pub exec: ExecSpec,
    pub restart: RestartSpec,
    pub stop: StopSpec,
}

#[derive(sqlx::FromRow)]
struct DispatchBotRow {
    id: String,
    agent_id: String,
    name: String,
    exec: String,
    restart: String,
    stop: String,
}

/// A bot's status without its definition (what a `bot_state` event carries), and its stop
/// timeout: what placing a control order needs of each bot. Narrower than [`BotRow`]: a bulk
/// action over 10,000 bots neither reads nor parses their command lines and environments.
#[derive(sqlx::FromRow)]
pub(crate) struct StatusRow {
    pub(super) id: String,
    pub(crate) agent_id: String,
    name: String,
    stop: String,
    desired_state: String,
    state: String,
    pid: Option<i64>,
    started_at: Option<i64>,
    last_exit_code: Option<i64>,
    last_exit_signal: Option<i64>,
    restart_count: i64,
    last_error: Option<String>,
    version: i64,
    updated_at: i64,
}

pub(crate) const STATUS_COLUMNS: &str = "id, agent_id, name, stop, desired_state, state, pid, started_at, \
                           last_exit_code, last_exit_signal, restart_count, last_error, version, updated_at";

impl StatusRow {
    /// The status (its `last_error` whole) and the stop rule.
    fn parse(self) -> Result<(BotStatus, StopSpec)> {
        let status = BotStatus {
            id: parse_id(&self.id)?,
            agent_id: parse_id(&self.agent_id)?,
            name: self.name,
            desired_state: match self.desired_state.as_str() {
                "running" => DesiredState::Running,
                "stopped" => DesiredState::Stopped,
                other => return Err(StoreError::Corrupt(format!("desired state `{other}`"))),
            },
            state: BotState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("bot state `{}`", self.state)))?,
            pid: self.pid.map(|p| p as u32),
            started_at: opt_from_ms(self.started_at)?,
            last_exit_code: self.last_exit_code.map(|c| c as i32),
            last_exit_signal: self.last_exit_signal.map(|s| s as i32),
            restart_count: self.restart_count as u32,
            last_error: self.last_error,
            version: self.version as u64,
            updated_at: from_ms(self.updated_at)?,
        };
        Ok((status, parse_json("bot stop", &self.stop)?))
    }
}

/// A bot as [`StatusRow`] reads it.
pub(crate) struct BotBrief {
    /// As its `bot_state` event carries it (the error cut).
    pub status: BotStatus,
    pub stop: StopSpec,
}

impl TryFrom<StatusRow> for BotBrief {
    type Error = StoreError;

    fn try_from(row: StatusRow) -> Result<Self> {
        let (status, stop) = row.parse()?;
        Ok(BotBrief { status: status.for_event(), stop })
    }
}

pub(super) fn desired_str(desired: DesiredState) -> &'static str {
    match desired {
        DesiredState::Running => "running",
        DesiredState::Stopped => "stopped",
    }
}

/// A bind value of a dynamically built statement.
enum Arg {
    Text(String),
    Int(i64),
}

/// A WHERE clause built from optional filters, with `$n` placeholders in bind order.
struct Where {
    sql: String,
    args: Vec<Arg>,
}

impl Where {
    fn new(tenant_id: Id) -> Self {
        Self { sql: "tenant_id = $1".into(), args: vec![Arg::Text(tenant_id.to_string())] }
    }

    fn and(&mut self, clause: &str, arg: Arg) {
        self.args.push(arg);
        // `clause` holds one `?`, replaced by this argument's number.
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause.replace('?', &format!("${}", self.args.len())));
    }
}

/// Binds every argument of a [`Where`] to a query, in order.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(s) => query.bind(s.clone()),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query
    }};
}

fn like_pattern(needle: &str) -> String {
    let escaped = needle.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

impl Store {
    pub async fn get_bot(&self, tenant_id: Id, id: Id) -> Result<Bot> {
        let sql = format!("SELECT {BOT_COLUMNS} FROM bots WHERE tenant_id = $1 AND id = $2");
        let row: Option<BotRow> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(tenant_id.to_string()).bind(id.to_string()).fetch_optional(pool).await?
        });
        row.ok_or(StoreError::NotFound("bot"))?.try_into()
    }

    /// The bots among `ids`, of whatever tenant, in one read (ids that are no bot are left
    /// out), with only what an envelope needs: what dispatch builds the envelopes of a group of
    /// claims from. The ids come from claimed commands, and each envelope is built only for a
    /// bot on the command's own agent. (Six columns, not the whole bot: a bulk start reads
    /// 10,000 of them, and on SQLite every column of every row is a copy.)
    pub async fn dispatch_bots(&self, ids: &[Id]) -> Result<Vec<DispatchBot>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, agent_id, name, exec, restart, stop FROM bots WHERE id IN (SELECT value FROM {})",
            self.json_array_rows("$1", crate::store::Elements::Text)
        );
        let ids: Vec<String> = ids.iter().map(Id::to_string).collect();
        let rows: Vec<DispatchBotRow> =
            with_pool!(self, read, |pool| { sqlx::query_as(&sql).bind(json_rows(&ids)).fetch_all(pool).await? });
        rows.into_iter()
            .map(|row| {
                Ok(DispatchBot {
                    id: parse_id(&row.id)?,
                    agent_id: parse_id(&row.agent_id)?,
                    name: row.name,
                    exec: parse_json("bot exec", &row.exec)?,
                    restart: parse_json("bot restart", &row.restart)?,
                    stop: parse_json("bot stop", &row.stop)?,
                })
            })
            .collect()
    }

    /// One page of bots ordered by name, the counts by state of everything the filter matches
    /// (ignoring its `state`), and the total the whole filter matches.
    pub async fn list_bots(&self, tenant_id: Id, filter: &BotFilter) -> Result<BotPage> {
        let mut common = Where::new(tenant_id);
        if let Some(agent_id) = filter.agent_id {
            common.and("agent_id = ?", Arg::Text(agent_id.to_string()));
        }
        if let Some(tag) = &filter.tag {
            common.and("id IN (SELECT bot_id FROM bot_tags WHERE tag = ?)", Arg::Text(tag.clone()));
        }
        if let Some(name) = &filter.name {
            common.and("LOWER(name) LIKE ? ESCAPE '\\'", Arg::Text(like_pattern(name)));
        }

        // Without a tag or name filter the counts come from the trigger-kept table (a few rows);
        // with one, only counting the matching bots can tell.
        let counts = if filter.tag.is_none() && filter.name.is_none() {
            self.bot_counts(Some(tenant_id), filter.agent_id).await?
        } else {
            let counts_sql = format!("SELECT state, COUNT(*) FROM bots WHERE {} GROUP BY state", common.sql);
            let count_rows: Vec<(String, i64)> = with_pool!(self, read, |pool| {
                bind_all!(sqlx::query_as(&counts_sql), &common.args).fetch_all(pool).await?
            });
            let mut counts: BTreeMap<BotState, u64> = BotState::ALL.into_iter().map(|s| (s, 0)).collect();
            for (state, n) in count_rows {
                let state =
                    BotState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("bot state `{state}`")))?;
                counts.insert(state, n as u64);
            }
            counts
        };
        let total = match filter.state {
            Some(state) => counts[&state],
            None => counts.values().sum(),
        };
        // No index covers the state (each report would move its entries, migration 0013), so
        // a page of one state reads bots in name order until it is full: when the counts say
        // no bot is in that state (the dashboard's `failed`, most of the time), there is
        // nothing to read.
        if filter.state.is_some() && total == 0 {
            return Ok(BotPage { items: Vec::new(), has_more: false, counts, total });
        }

        let mut page = common;
        if let Some(state) = filter.state {
            page.and("state = ?", Arg::Text(state.as_str().into()));
        }
        if let Some(after) = &filter.after_name {
            page.and("name > ?", Arg::Text(after.clone()));
        }
        let limit = filter.limit.max(1);
        page.args.push(Arg::Int(i64::from(limit) + 1));
        let items_sql =
            format!("SELECT {BOT_COLUMNS} FROM bots WHERE {} ORDER BY name LIMIT ${}", page.sql, page.args.len());
        let rows: Vec<BotRow> =
            with_pool!(self, read, |pool| { bind_all!(sqlx::query_as(&items_sql), &page.args).fetch_all(pool).await? });
        let mut items = rows.into_iter().map(Bot::try_from).collect::<Result<Vec<_>>>()?;
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(BotPage { items, has_more, counts, total })
    }

    /// Every bot of the tenant the filter matches (`state`, `agent_id`, `tag`, `name`; no
    /// paging), by name: what a bulk action applies to, whatever its size. With each, its
    /// agent's status (a revoked agent takes no command, a draining one no start).
    pub async fn bots_matching(&self, tenant_id: Id, filter: &BotFilter) -> Result<Vec<(Id, AgentStatus)>> {
        let mut cond = Where::new(tenant_id);
        if let Some(agent_id) = filter.agent_id {
            cond.and("agent_id = ?", Arg::Text(agent_id.to_string()));
        }
        if let Some(tag) = &filter.tag {
            cond.and("id IN (SELECT bot_id FROM bot_tags WHERE tag = ?)", Arg::Text(tag.clone()));
        }
        if let Some(name) = &filter.name {
            cond.and("LOWER(name) LIKE ? ESCAPE '\\'", Arg::Text(like_pattern(name)));
        }
        if let Some(state) = filter.state {
            cond.and("state = ?", Arg::Text(state.as_str().into()));
        }
        let sql = format!("SELECT id, {AGENT_OF_BOT} FROM bots WHERE {} ORDER BY name", cond.sql);
        let rows: Vec<(String, String)> =
            with_pool!(self, read, |pool| { bind_all!(sqlx::query_as(&sql), &cond.args).fetch_all(pool).await? });
        rows.into_iter().map(with_agent_status).collect()
    }

    /// Which of `ids` are bots of the tenant, with each one's agent's status.
    pub async fn bots_among(&self, tenant_id: Id, ids: &[Id]) -> Result<Vec<(Id, AgentStatus)>> {
        let sql = format!(
            "SELECT id, {AGENT_OF_BOT} FROM bots WHERE {TENANT_NOT_INDEXED} AND id IN (SELECT value FROM {})",
            self.json_array_rows("$2", crate::store::Elements::Text)
        );
        let ids: Vec<String> = ids.iter().map(Id::to_string).collect();
        let rows: Vec<(String, String)> = with_pool!(self, read, |pool| {
            sqlx::query_as(&sql).bind(tenant_id.to_string()).bind(json_rows(&ids)).fetch_all(pool).await?
        });
        rows.into_iter().map(with_agent_status).collect()
    }

    /// Replaces a bot's definition if its version is still `expected_version`.
    pub async fn update_bot(
        &self,
        tenant_id: Id,
        id: Id,
        expected_version: u64,
        update: UpdateBot,
        now: Timestamp,
    ) -> Result<Bot> {
        let tenant = tenant_id.to_string();
        let hash = definition_hash(&update.exec, &update.restart, &update.stop);
        let outcome: Result<()> = with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM bots WHERE tenant_id = $1 AND id = $2")
                        .bind(&tenant)
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                match current {
                    None => return Err(StoreError::NotFound("bot")),
                    Some(v) if v as u64 != expected_version => {
                        return Err(StoreError::VersionMismatch { current: v as u64 })
                    }
                    Some(_) => {}
                }
                let agent_exists: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM agents WHERE tenant_id = $1 AND id = $2")
                        .bind(&tenant)
                        .bind(update.agent_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if agent_exists.is_none() {
                    return Err(StoreError::Reference(format!("agent {} does not exist", update.agent_id)));
                }
                let updated = sqlx::query(
                    // A bot moved to another agent is reported on another clock from now on: the old
                    // agent's newest time must not hold the new agent's reports back.
                    "UPDATE bots SET name = $1, agent_id = $2, exec = $3, restart = $4, stop = $5, tags = $6, \
                     definition_hash = $7, version = version + 1, updated_at = $8, \
                     reported_at_us = CASE WHEN agent_id = $2 THEN reported_at_us END \
                     WHERE tenant_id = $9 AND id = $10",
                )
                .bind(&update.name)
                .bind(update.agent_id.to_string())
                .bind(to_json(&update.exec))
                .bind(to_json(&update.restart))
                .bind(to_json(&update.stop))
                .bind(to_json(&update.tags))
                .bind(&hash)
                .bind(to_ms(now))
                .bind(&tenant)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await;
                match updated {
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Conflict(format!("a bot named `{}` already exists", update.name)))
                    }
                    other => other?,
                };
                sqlx::query("DELETE FROM bot_tags WHERE bot_id = $1").bind(id.to_string()).execute(&mut *tx).await?;
                for tag in &update.tags {
                    sqlx::query("INSERT INTO bot_tags (bot_id, tenant_id, tag) VALUES ($1, $2, $3)")
                        .bind(id.to_string())
                        .bind(&tenant)
                        .bind(tag)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
            .await
        });
        outcome?;
        self.get_bot(tenant_id, id).await
    }

    /// Deletes a bot, its tags and its log lines; with `expected_version`, only if unchanged.
    pub async fn delete_bot(&self, tenant_id: Id, id: Id, expected_version: Option<u64>) -> Result<()> {
        let tenant = tenant_id.to_string();
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM bots WHERE tenant_id = $1 AND id = $2")
                        .bind(&tenant)
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                match (current, expected_version) {
                    (None, _) => return Err(StoreError::NotFound("bot")),
                    (Some(v), Some(expected)) if v as u64 != expected => {
                        return Err(StoreError::VersionMismatch { current: v as u64 })
                    }
                    _ => {}
                }
                sqlx::query("DELETE FROM log_lines WHERE bot_id = $1").bind(id.to_string()).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM bots WHERE tenant_id = $1 AND id = $2")
                    .bind(&tenant)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            .await
        })
    }
}

/// Active states: a bot in one of these is (or may be) running on its agent.
const LIVE_STATES: &str = "('starting', 'running', 'stopping', 'backoff', 'unknown')";

impl Store {
    /// Applies an agent's report about one of *its* bots. `None` when the bot is unknown, not
    /// this agent's, or the report is no news (see [`Store::report_agents_bot_states`]).
    pub async fn report_bot_state(&self, agent_id: Id, report: &BotStateReport) -> Result<Option<BotStatus>> {
        Ok(self.report_bot_states(agent_id, std::slice::from_ref(report)).await?.after.pop())
    }

    /// Several state reports of one agent, in the order it sent them (see
    /// [`Store::report_agents_bot_states`]).
    pub async fn report_bot_states(&self, agent_id: Id, reports: &[BotStateReport]) -> Result<StateReports> {
        let mut applied = self.report_agents_bot_states(&[(agent_id, reports.to_vec())]).await?;
        Ok(applied.pop().unwrap_or_default())
    }

    /// The state reports of several agents' batches (each in the order its agent sent them;
    /// the batches in the order given), with one read and one statement for all of them. A
    /// report is *news* when its `at` is later than the newest report applied for its bot
    /// before it (the stored `reported_at_us`, then earlier news of the group): an equal `at`
    /// is a repeat (a burst sent again because its confirmation was lost), an earlier one a
    /// replay of the past (an agent catching up after a restart), and neither moves the row. An
    /// agent's report is news only about a bot placed on that agent *now*. Each bot takes its
    /// newest news, with the newest exit status any of its news carried; the statement checks
    /// the agent and the order again, so a report that raced in between is not overtaken.
    /// Answers per batch, in order.
    pub async fn report_agents_bot_states(&self, batches: &[(Id, Vec<BotStateReport>)]) -> Result<Vec<StateReports>> {
        let ids: Vec<String> = batches
            .iter()
            .flat_map(|(_, reports)| reports.iter().map(|r| r.bot_id))
            .collect::<std::collections::BTreeSet<Id>>()
            .iter()
            .map(Id::to_string)
            .collect();
        if ids.is_empty() {
            return Ok(batches.iter().map(|_| StateReports::default()).collect());
        }
        // With each bot, whether an incident about it is open (the rules that only resolve
        // need no read of their own).
        let before_sql = format!(
            "SELECT {STATUS_COLUMNS}, reported_at_us, EXISTS (SELECT 1 FROM incidents i \
                 WHERE i.tenant_id = bots.tenant_id AND i.resolved_at IS NULL AND i.subject = 'bot:' || bots.id) \
                 AS open_incident \
             FROM bots WHERE id IN (SELECT value FROM {})",
            self.json_array_rows("$1", crate::store::Elements::Text)
        );
        let rows: Vec<ReportedRow> =
            with_pool!(self, read, |pool| { sqlx::query_as(&before_sql).bind(json_rows(&ids)).fetch_all(pool).await? });
        let mut found: HashMap<Id, Reported> = HashMap::with_capacity(rows.len());
        for row in rows {
            let (bot, _) = row.bot.parse()?;
            found
                .insert(bot.id, Reported { bot, reported_at_us: row.reported_at_us, open_incident: row.open_incident });
        }
        let mut newest: HashMap<Id, Option<i64>> = found.iter().map(|(id, r)| (*id, r.reported_at_us)).collect();
        // Per bot, its newest news with the newest exit status of all its news.
        let mut folded: Vec<(Id, BotStateReport)> = Vec::new();
        let mut slot: HashMap<Id, usize> = HashMap::new();
        let mut answers = Vec::with_capacity(batches.len());
        for (agent_id, reports) in batches {
            let theirs = |bot_id: &Id| found.get(bot_id).is_some_and(|r| r.bot.agent_id == *agent_id);
            let news = news_of(reports, &mut newest, theirs);
            for (report, _) in reports.iter().zip(&news).filter(|(_, news)| **news) {
                match slot.get(&report.bot_id) {
                    Some(&i) => {
                        let (code, signal) = (folded[i].1.exit_code, folded[i].1.exit_signal);
                        folded[i].1 = report.clone();
                        folded[i].1.exit_code = report.exit_code.or(code);
                        folded[i].1.exit_signal = report.exit_signal.or(signal);
                    }
                    None => {
                        slot.insert(report.bot_id, folded.len());
                        folded.push((*agent_id, report.clone()));
                    }
                }
            }
            let named: std::collections::BTreeSet<Id> =
                reports.iter().map(|r| r.bot_id).filter(|id| theirs(id)).collect();
            let before = named.iter().filter_map(|id| found.get(id).cloned()).collect();
            answers.push(StateReports { before, news, after: Vec::new() });
        }
        if folded.is_empty() {
            return Ok(answers);
        }
        let values: Vec<serde_json::Value> = folded
            .iter()
            .map(|(agent_id, r)| {
                serde_json::json!({
                    "id": r.bot_id.to_string(), "agent": agent_id.to_string(), "state": r.state.as_str(),
                    "pid": r.pid.map(i64::from), "started_at": r.started_at.map(to_ms),
                    "exit_code": r.exit_code.map(i64::from), "exit_signal": r.exit_signal.map(i64::from),
                    "restart_count": i64::from(r.restart_count), "error": r.error, "at": to_ms(r.at),
                    "at_us": r.at.timestamp_micros(),
                })
            })
            .collect();
        let sql = format!(
            "UPDATE bots SET state = v_state, pid = CAST(v_pid AS BIGINT), started_at = CAST(v_started AS BIGINT), \
             last_exit_code = COALESCE(CAST(v_code AS BIGINT), last_exit_code), \
             last_exit_signal = COALESCE(CAST(v_signal AS BIGINT), last_exit_signal), \
             restart_count = CAST(v_restarts AS BIGINT), last_error = v_error, \
             state_at = CAST(v_at AS BIGINT), updated_at = CAST(v_at AS BIGINT), \
             reported_at_us = CAST(v_at_us AS BIGINT) \
             FROM (SELECT value ->> 'id' AS v_id, value ->> 'agent' AS v_agent, value ->> 'state' AS v_state, \
                          value ->> 'pid' AS v_pid, value ->> 'started_at' AS v_started, \
                          value ->> 'exit_code' AS v_code, value ->> 'exit_signal' AS v_signal, \
                          value ->> 'restart_count' AS v_restarts, value ->> 'error' AS v_error, \
                          value ->> 'at' AS v_at, value ->> 'at_us' AS v_at_us \
                   FROM {}) AS v \
             WHERE id = v_id AND agent_id = v_agent \
               AND (reported_at_us IS NULL OR reported_at_us < CAST(v_at_us AS BIGINT)) \
             RETURNING {STATUS_COLUMNS}",
            self.json_array_rows("$1", crate::store::Elements::Json)
        );
        let after: Vec<StatusRow> =
            with_pool!(self, write, |pool| { sqlx::query_as(&sql).bind(json_rows(&values)).fetch_all(pool).await? });
        let after = after.into_iter().map(|row| Ok(row.parse()?.0)).collect::<Result<Vec<BotStatus>>>()?;
        // Each batch gets the rows its own news changed.
        for ((agent_id, reports), answer) in batches.iter().zip(&mut answers) {
            let changed: std::collections::HashSet<Id> =
                reports.iter().zip(&answer.news).filter(|(_, news)| **news).map(|(r, _)| r.bot_id).collect();
            answer.after =
                after.iter().filter(|bot| bot.agent_id == *agent_id && changed.contains(&bot.id)).cloned().collect();
        }
        Ok(answers)
    }

    /// Applies the full snapshot an agent sends on connect: the bots it names take the state it
    /// reports; its other bots that were live are no longer running there (`stopped`). Returns
    /// every bot whose row changed.
    ///
    /// `reported_at_us` is left as it is. The snapshot carries no agent time, and the server's
    /// clock (`now`, which dates `state_at`) cannot be compared with the agent's. So a report
    /// the server already applied, sent again after this `hello`, is still no news, while the
    /// transitions an agent wrote down but never delivered (replayed after its `hello`, older
    /// than the snapshot on the agent's clock) are news: their crash, exit code and restart
    /// count reach the bot's history and incidents. They pass the bot's row through those
    /// older states for the moment it takes the agent to re-report each such bot's present
    /// state, which it does right after them (`agent/src/transitions.rs`).
    pub async fn apply_snapshot(&self, agent_id: Id, bots: &[BotSnapshot], now: Timestamp) -> Result<Vec<Bot>> {
        let touched: Vec<(String, String)> = with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let mut touched: Vec<(String, String)> = Vec::new();
                for snap in bots {
                    let tenant: Option<String> = sqlx::query_scalar(
                        "UPDATE bots SET state = $1, pid = $2, started_at = $3, state_at = $4, updated_at = $4 \
                         WHERE id = $5 AND agent_id = $6 RETURNING tenant_id",
                    )
                    .bind(snap.state.as_str())
                    .bind(snap.pid.map(i64::from))
                    .bind(snap.started_at.map(to_ms))
                    .bind(to_ms(now))
                    .bind(snap.bot_id.to_string())
                    .bind(agent_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(tenant) = tenant {
                        touched.push((tenant, snap.bot_id.to_string()));
                    }
                }
                let named: Vec<String> = bots.iter().map(|b| b.bot_id.to_string()).collect();
                let candidates: Vec<(String, String)> = sqlx::query_as(&format!(
                    "SELECT tenant_id, id FROM bots WHERE agent_id = $1 AND state IN {LIVE_STATES}"
                ))
                .bind(agent_id.to_string())
                .fetch_all(&mut *tx)
                .await?;
                for (tenant, id) in candidates.into_iter().filter(|(_, id)| !named.contains(id)) {
                    // Not running there: `stopped`, or `pending` if it never ran at all.
                    sqlx::query(
                        "UPDATE bots SET state = CASE WHEN started_at IS NULL AND last_exit_code IS NULL \
                         AND last_exit_signal IS NULL THEN 'pending' ELSE 'stopped' END, \
                         pid = NULL, state_at = $1, updated_at = $1 WHERE id = $2",
                    )
                    .bind(to_ms(now))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                    touched.push((tenant, id));
                }
                tx.commit().await?;
                Ok::<_, StoreError>(touched)
            }
            .await
        })?;
        let mut changed = Vec::with_capacity(touched.len());
        for (tenant, id) in touched {
            changed.push(self.get_bot(parse_id(&tenant)?, parse_id(&id)?).await?);
        }
        Ok(changed)
    }

    /// Every bot placed on an agent (for the agent's connection: definitions and ownership).
    pub async fn bots_of_agent(&self, agent_id: Id) -> Result<Vec<Bot>> {
        let sql = format!("SELECT {BOT_COLUMNS} FROM bots WHERE agent_id = $1 ORDER BY name");
        let rows: Vec<BotRow> =
            with_pool!(self, read, |pool| { sqlx::query_as(&sql).bind(agent_id.to_string()).fetch_all(pool).await? });
        rows.into_iter().map(Bot::try_from).collect()
    }
}
