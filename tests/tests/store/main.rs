//! The store conformance suite: every public function of `botmox_control_plane::store`, run
//! against a fresh SQLite file and a fresh Postgres database. One scenario is written once and
//! [`conformance!`] generates a test per backend, so "same behaviour on both" (SPEC §6) is
//! checked by construction. Time is passed explicitly (`t.at(secs)`); nothing sleeps.

use std::{future::Future, panic::AssertUnwindSafe, time::Duration};

use anyhow::Context as _;
use botmox_contract::{
    agents::Agent,
    audit::Actor,
    bots::{Bot, BotSpec, ExecSpec},
    commands::{Command, CommandKind, CommandStatus},
    Id, Timestamp,
};
use botmox_control_plane::store::{CommandOutcome, NewAgent, NewBot, NewCommand, Order, QueueTimes, Store, Target};
use botmox_e2e::db::{Backend, TestDb};
use futures::FutureExt as _;

/// `conformance!(scenario);` turns `async fn scenario(t: Ctx) -> anyhow::Result<()>` into the
/// tests `scenario::sqlite` and `scenario::postgres`.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> anyhow::Result<()> {
                $crate::run(botmox_e2e::db::Backend::Sqlite, super::$name).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> anyhow::Result<()> {
                $crate::run(botmox_e2e::db::Backend::Postgres, super::$name).await
            }
        }
    )+};
}

/// Asserts that a result is the error variant `pattern` (with an optional guard).
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected {}, got {:?}", stringify!($pattern), other),
        }
    };
}

mod agents;
mod bot_import;
mod bots;
mod concurrency;
mod isolation;
mod plans;
mod queue;
mod queue_batch;
mod queue_control;
mod queue_hygiene;
mod queue_reads;
mod server;
mod tenants_users;

/// What every scenario gets: a migrated store on a fresh database, a tenant, and a clock.
#[derive(Clone)]
pub struct Ctx {
    pub store: Store,
    pub backend: Backend,
    /// The test's database, for the rare fixture no store function can build yet.
    pub url: String,
    pub tenant: Id,
    pub t0: Timestamp,
}

/// Creates the database, runs the scenario, and always drops the database again: a failed
/// assertion is re-raised after cleanup, and a failing setup or cleanup fails the test.
async fn run<F, Fut>(backend: Backend, scenario: F) -> anyhow::Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let db = TestDb::new(backend).await.with_context(|| format!("creating a {backend} test database"))?;
    let store = db.store().await.with_context(|| format!("opening the {backend} test store"))?;
    let t0 = chrono::DateTime::from_timestamp_millis(1_900_000_000_000).context("base time")?;
    let tenant = store.ensure_tenant("default", t0).await?;
    let ctx = Ctx { store: store.clone(), backend, url: db.url_string(), tenant, t0 };
    let outcome = AssertUnwindSafe(scenario(ctx)).catch_unwind().await;
    store.close().await;
    db.cleanup().await.with_context(|| format!("dropping the {backend} test database"))?;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

impl Ctx {
    /// `secs` seconds after the test's base time (fractions allowed: ms precision).
    pub fn at(&self, secs: f64) -> Timestamp {
        self.t0 + chrono::Duration::milliseconds((secs * 1000.0).round() as i64)
    }

    pub async fn tenant(&self, name: &str) -> anyhow::Result<Id> {
        Ok(self.store.ensure_tenant(name, self.t0).await?)
    }

    pub async fn agent(&self, name: &str) -> anyhow::Result<Agent> {
        self.agent_in(self.tenant, name).await
    }

    pub async fn agent_in(&self, tenant_id: Id, name: &str) -> anyhow::Result<Agent> {
        Ok(self.store.create_agent(new_agent(tenant_id, name), self.t0).await?)
    }

    pub async fn bot(&self, name: &str, agent_id: Id, tags: &[&str]) -> anyhow::Result<Bot> {
        let spec = bot_spec(name, agent_id, tags);
        Ok(self.store.create_bot(NewBot { tenant_id: self.tenant, spec }, self.t0).await?)
    }

    /// A command for `agent_id` in the context's tenant (see [`new_command`]).
    pub fn command(&self, agent_id: Id) -> NewCommand {
        new_command(self.tenant, agent_id)
    }

    /// Enqueues [`Ctx::command`] at `t0` and returns the new command.
    pub async fn enqueue(&self, agent_id: Id) -> anyhow::Result<Command> {
        self.enqueue_at(self.command(agent_id), 0.0).await
    }

    pub async fn enqueue_at(&self, new: NewCommand, secs: f64) -> anyhow::Result<Command> {
        let enqueued = self.store.enqueue_command(new, self.at(secs)).await?;
        anyhow::ensure!(enqueued.is_created(), "expected a new command, got {enqueued:?}");
        Ok(enqueued.into_command())
    }

    /// A command of `agent_id` driven into `status` through the store's own transitions, all
    /// within the first few seconds after `t0`. Its short TTL, lease or run timeout leave other
    /// commands of the test alone; the agent must have no other `queued` command.
    pub async fn command_in(&self, agent_id: Id, status: CommandStatus) -> anyhow::Result<Command> {
        let store = &self.store;
        let mut new = self.command(agent_id);
        new.max_attempts = 1;
        match status {
            CommandStatus::Expired => new.ttl = Duration::from_secs(1),
            CommandStatus::DeadLettered => new.lease = Duration::from_secs(1),
            CommandStatus::TimedOut => new.run_timeout = Duration::from_secs(1),
            _ => {}
        }
        let queued = self.enqueue_at(new, 0.0).await?;
        let id = queued.id;
        if matches!(status, CommandStatus::Queued | CommandStatus::Expired | CommandStatus::Cancelled) {
            let command = match status {
                CommandStatus::Expired => {
                    let expired = store.expire_commands(self.at(1.0)).await?;
                    expired.into_iter().find(|c| c.id == id).context("not expired")?
                }
                CommandStatus::Cancelled => store.cancel_command(self.tenant, id, self.at(1.0)).await?,
                _ => queued,
            };
            anyhow::ensure!(command.status == status, "wanted {status:?}, got {command:?}");
            return Ok(command);
        }
        let claimed = store.claim_next_command(agent_id, self.at(1.0)).await?;
        anyhow::ensure!(claimed.as_ref().map(|c| c.id) == Some(id), "claimed {claimed:?}, wanted {id}");
        let command = match status {
            CommandStatus::Dispatched => store.get_command(self.tenant, id).await?,
            CommandStatus::DeadLettered => {
                let sweep = store.sweep_leases(self.at(2.0)).await?;
                sweep.dead_lettered.into_iter().find(|c| c.id == id).context("not dead-lettered")?
            }
            _ => {
                let running = store.ack_command(agent_id, id, self.at(2.0)).await?;
                match status {
                    CommandStatus::TimedOut => {
                        let sweep = store.sweep_leases(self.at(3.0)).await?;
                        sweep.timed_out.into_iter().find(|c| c.id == id).context("not timed out")?
                    }
                    CommandStatus::Succeeded | CommandStatus::Failed => {
                        let outcome = outcome(status == CommandStatus::Succeeded);
                        store.complete_command(agent_id, id, outcome, self.at(3.0)).await?
                    }
                    _ => running,
                }
            }
        };
        anyhow::ensure!(command.status == status, "wanted {status:?}, got {command:?}");
        Ok(command)
    }

    /// Sets a bot's observed state directly in the database. Test-only fixture: the store has
    /// no function yet that records reported state (the agent protocol brings it).
    pub async fn force_bot_state(&self, bot_id: Id, state: &str) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let sql = "UPDATE bots SET state = $1 WHERE id = $2";
        let changed = match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                let done = sqlx::query(sql).bind(state).bind(bot_id.to_string()).execute(&mut conn).await?;
                conn.close().await?;
                done.rows_affected()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                let done = sqlx::query(sql).bind(state).bind(bot_id.to_string()).execute(&mut conn).await?;
                conn.close().await?;
                done.rows_affected()
            }
        };
        anyhow::ensure!(changed == 1, "bot {bot_id} not found");
        Ok(())
    }
}

pub const TTL_SECS: f64 = 60.0;
pub const LEASE_SECS: f64 = 30.0;
pub const RUN_TIMEOUT_SECS: f64 = 300.0;

pub fn new_agent(tenant_id: Id, name: &str) -> NewAgent {
    NewAgent {
        tenant_id,
        name: name.to_owned(),
        hostname: format!("{name}.example"),
        os: "linux".into(),
        arch: "x86_64".into(),
        version: "0.1.0".into(),
        labels: [("zone".to_owned(), "eu".to_owned())].into(),
        token_hash: None,
    }
}

pub fn bot_spec(name: &str, agent_id: Id, tags: &[&str]) -> BotSpec {
    BotSpec {
        name: name.to_owned(),
        agent_id,
        exec: ExecSpec {
            program: "python3".into(),
            args: vec!["bot.py".into(), "--realm".into(), "eu".into()],
            cwd: Some("/srv/bots".into()),
            env: [("MODE".to_owned(), "farm".to_owned())].into(),
            secret_env: [("PASSWORD".to_owned(), format!("{name}-password"))].into(),
        },
        restart: Default::default(),
        stop: Default::default(),
        desired_state: Default::default(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// A `bot.start` with a 60 s TTL, a 30 s lease, a 300 s run timeout and 3 attempts.
pub fn new_command(tenant_id: Id, agent_id: Id) -> NewCommand {
    NewCommand {
        tenant_id,
        agent_id,
        bot_id: None,
        kind: CommandKind::BotStart,
        payload: serde_json::json!({ "reason": "test" }),
        idempotency_key: None,
        created_by: Actor::supervisor(),
        ttl: Duration::from_secs_f64(TTL_SECS),
        lease: Duration::from_secs_f64(LEASE_SECS),
        run_timeout: Duration::from_secs_f64(RUN_TIMEOUT_SECS),
        max_attempts: 3,
    }
}

/// An `agent.exec` order for `agent_id` (an agent-wide command: no bot keeps its agent).
pub fn exec_order(tenant_id: Id, agent_id: Id) -> Order {
    Order {
        tenant_id,
        target: Target::Agent { agent_id, bot_id: None },
        kind: CommandKind::AgentExec,
        desired: None,
        payload: serde_json::json!({ "program": "true" }),
        idempotency_key: None,
        created_by: Actor::supervisor(),
        batch_id: None,
    }
}

/// The queue's timing for the orders the tests place.
pub const TIMES: QueueTimes = QueueTimes {
    ttl: Duration::from_secs(60),
    lease: Duration::from_secs(30),
    run_timeout: Duration::from_secs(300),
    max_attempts: 3,
};

pub fn outcome(ok: bool) -> CommandOutcome {
    if ok {
        CommandOutcome { ok, result: serde_json::json!({ "pid": 4242 }), error: None, acked: false }
    } else {
        CommandOutcome {
            ok,
            result: serde_json::json!({ "exit_code": 2 }),
            error: Some("program not found".into()),
            acked: false,
        }
    }
}
