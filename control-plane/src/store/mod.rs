//! The store: every byte of SQL in botmox lives under this module.
//!
//! Two real backends sit behind one type: embedded SQLite (the default, one file in the data
//! dir, WAL) and PostgreSQL. The schema is written so that nearly every statement is the same
//! text on both (times are BIGINT milliseconds, JSON is TEXT, ids are TEXT UUIDv7), and the
//! [`with_pool!`] macro compiles one body once per backend. Where the SQL really differs (the
//! command claim), the function matches on the backend explicitly.
//!
//! SQLite gets one writer connection and a small pool of readers: SQLite allows one writer at a
//! time anyway, and funnelling writes through one connection replaces lock contention
//! (`SQLITE_BUSY`) with a queue in front of the connection.
//!
//! Store functions that depend on time take `now` as an argument, so tests can drive leases,
//! TTLs and retention without sleeping.

mod agents;
mod audit;
mod bots;
mod commands;
mod fleet;
mod incidents;
mod logs;
mod notify;
mod pairing;
mod secrets;
mod sessions;
mod supervision;
mod tenants;
mod tokens;
mod users;

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use botmox_contract::{Id, Timestamp};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Connection, PgConnection, PgPool, SqlitePool,
};

pub use agents::{AgentAuth, AgentHello, Heartbeat, NewAgent};
pub use audit::{AuditFilter, NewAuditEntry};
pub use bots::{
    definition_hash, BotFilter, BotPage, DispatchBot, NewBot, Refusal, Refusals, Reported, StateReports, UpdateBot,
};
pub use commands::{
    AgentBrief, BatchPlaced, BatchRecord, CommandFilter, CommandOutcome, Direct, Enqueued, LeaseSweep, NewBatch,
    NewCommand, Order, Placed, Placement, QueueTimes, Target,
};
pub use incidents::{IncidentFilter, NewIncident};
pub use logs::LogQuery;
pub use notify::MAX_PAYLOAD as MAX_NOTIFY_PAYLOAD;
pub use pairing::{NewPairingCode, PairingHost, Redeemed};
pub use secrets::SealedSecret;
pub use sessions::{LiveUser, NewSession, Refresh};
pub use supervision::{Drift, Leadership, Pruned, DRIFTING_BOTS};
pub use tenants::DEFAULT_TENANT;
pub use tokens::{ApiTokenAuth, NewApiToken};
pub use users::{NewUser, UserChanges, UserRecord, LAST_ADMIN};

/// Which database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    /// `postgres://…` / `postgresql://…`, `sqlite://path` / `sqlite:path`; anything else is refused.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PgConnectOptions::from_str(url).map_err(|e| format!("DATABASE_URL is not a valid Postgres URL: {e}"))?;
            Ok(Self::Postgres(url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err("DATABASE_URL `sqlite:` needs a file path, e.g. sqlite://data/botmox.db".into());
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else {
            Err(format!("DATABASE_URL must start with postgres:// or sqlite:// (got `{}`)", redact_url(url)))
        }
    }
}

/// A URL safe to print: the password, if any, replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken (e.g. a bot name taken in the tenant).
    #[error("{0}")]
    Conflict(String),
    /// Optimistic concurrency: the row changed since the caller read it.
    #[error("version mismatch: current version is {current}")]
    VersionMismatch { current: u64 },
    #[error("command {id} cannot go from {from} to {to}")]
    InvalidTransition { id: Id, from: &'static str, to: &'static str },
    /// A start or restart for a bot whose agent is draining (it takes no new starts).
    #[error("{0}")]
    AgentDraining(String),
    /// A foreign key points nowhere the caller may see (e.g. a bot's agent).
    #[error("{0}")]
    Reference(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database could not take the write just now (nothing changed); try again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
enum Backend {
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
        /// The connection that copies the WAL back into the database file (see [`checkpoints`]).
        checkpointer: SqlitePool,
        /// Ends the checkpoints when the last clone of the store is gone.
        _checkpoints: Arc<tokio_util::sync::DropGuard>,
    },
    /// `relaxed` is a small second pool whose sessions commit without waiting for the WAL
    /// flush (`synchronous_commit = off`), for the writes on the dispatch path that the protocol
    /// recovers from if a database crash loses them: a lost claim puts the command back in the
    /// queue, it is sent again, and the agent answers the repeat from its journal without
    /// running it twice; a lost heartbeat flush is rewritten by the next one. Everything a client
    /// was told is stored (an accepted command, a definition) goes through `pool`, durably.
    Postgres { pool: PgPool, relaxed: PgPool },
}

/// Cheap to clone: pools are reference-counted.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// Runs one body against whichever pool this store has; the body is compiled once per backend,
/// so the SQL text and the row types are written once. `write` picks SQLite's single writer.
macro_rules! with_pool {
    ($store:expr, write, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { write: $pool, .. } => $body,
            $crate::store::Backend::Postgres { pool: $pool, .. } => $body,
        }
    };
    ($store:expr, read, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { read: $pool, .. } => $body,
            $crate::store::Backend::Postgres { pool: $pool, .. } => $body,
        }
    };
    // Writes whose loss in a database crash the protocol recovers from (see `Backend`).
    ($store:expr, relaxed, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { write: $pool, .. } => $body,
            $crate::store::Backend::Postgres { relaxed: $pool, .. } => $body,
        }
    };
}
pub(crate) use with_pool;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// SQLite checkpoints off the write path. By default the connection whose commit fills the WAL
/// past 1,000 pages copies it into the database file and syncs it — inside that commit, so
/// about one request in a hundred waited for a checkpoint and its fsync (the tail of every
/// latency figure). Here the writer never checkpoints; this task does, on its own connection,
/// every [`CHECKPOINT_EVERY`], in `PASSIVE` mode (it copies what no reader still needs, and
/// never waits for the writer or readers, which go on meanwhile). The WAL is then restarted
/// from its beginning by the next commit, so it stays small.
async fn checkpoints(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "SQLite checkpoint failed; the next one tries again");
        }
    }
}

/// Every server session plans each prepared statement once (its generic plan), instead of
/// again at every execution. Postgres otherwise keeps planning a statement per execution
/// ("custom plans") while that plan looks cheaper than the generic one — and every statement
/// that reads a bound JSON array looks cheaper planned per call, because the array's length
/// caps its rows (`Store::json_array_rows`), which only a custom plan can read. So the queue's
/// hot statements were planned at every call: on the `dispatch` benchmark (1,000 agents)
/// planning was most of Postgres's CPU, and p50/p99 went from 4.1/8.9 ms to 2.35/4.6 ms with
/// generic plans. Their generic plans are the right ones: an unknown `LIMIT` is estimated at a
/// tenth of the 100 rows assumed for the array, so a few ids still join by primary key. The
/// statements with optional filters suit it too: the bots' list builds its SQL from the
/// filters given; audit, incidents and tokens lead with `tenant_id = $1` (their index) before
/// any `$n IS NULL OR …`; the fleet's counts read small tables. The `registry` benchmark
/// (100,000 bots) agreed: `GET /bots?limit=100` p99 2.2 ms (3.0 without), `GET /dashboard`
/// 5.5 ms (9.3). Needs Postgres 12 or later.
const PG_GENERIC_PLANS: (&str, &str) = ("plan_cache_mode", "force_generic_plan");

/// A pooled Postgres connection idle at least this long is pinged before use.
const PG_PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A liveness ping only for a connection idle for a while (what HikariCP does): a busy pool
/// never pays a round trip per statement (on the dispatch path that was one ping per query),
/// while a connection that sat idle across a database restart or a NAT timeout is still tested
/// and replaced before a request gets it.
fn pg_pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PG_PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }
}

/// What the elements of a bound JSON array are used as (see [`Store::json_array_rows`]).
#[derive(Clone, Copy)]
pub(crate) enum Elements {
    /// Strings, compared as text.
    Text,
    /// Objects, read with `value ->> 'field'` (the same text on both backends).
    Json,
}

impl Store {
    /// The elements of a JSON array bound at `param`, as a table with one column `value`: the
    /// only text that differs between the backends in the bulk statements (many rows in one
    /// statement). Strings come out as text; objects are read with `value ->> 'field'`.
    ///
    /// On Postgres, objects are parsed once into `jsonb`, so each `->>` is a lookup: with
    /// `json` every `->>` parsed the object again (a 15-field row: 57 µs, against 24 µs with
    /// `jsonb`, measured on 2,000-row arrays) — the largest part of the bulk statements.
    /// SQLite's `json_each` yields each object as text, which every `->>` parsed again too;
    /// so each object is turned into SQLite's binary JSON (`jsonb`) once, in a `MATERIALIZED`
    /// table the statement reads (a plain subquery is flattened into the outer query, and
    /// `jsonb(value)` then ran once per `->>` again). Extracting 11 fields of 2,000 rows: 23–33 ms
    /// from text, 12–14 ms from the materialised `jsonb` (measured with SQLite 3.51).
    ///
    /// On Postgres the elements are capped by the array's own length: a no-op that gives the
    /// planner a row estimate (a set-returning function is otherwise assumed to yield 100 rows,
    /// so a join of a few ids with a 10,000-row table became a sequential scan and a hash join
    /// — 2 ms a statement — instead of a primary-key lookup per id: 0.1 ms).
    pub(crate) fn json_array_rows(&self, param: &str, elements: Elements) -> String {
        match (&self.backend, elements) {
            (Backend::Sqlite { .. }, Elements::Text) => format!("json_each({param})"),
            (Backend::Sqlite { .. }, Elements::Json) => format!(
                "(WITH json_rows AS MATERIALIZED (SELECT jsonb(value) AS value FROM json_each({param})) \
                 SELECT value FROM json_rows) AS json_rows"
            ),
            (Backend::Postgres { .. }, Elements::Text) => format!(
                "(SELECT value FROM jsonb_array_elements_text(CAST({param} AS jsonb)) \
                 LIMIT jsonb_array_length(CAST({param} AS jsonb))) AS json_rows"
            ),
            (Backend::Postgres { .. }, Elements::Json) => format!(
                "(SELECT value FROM jsonb_array_elements(CAST({param} AS jsonb)) \
                 LIMIT jsonb_array_length(CAST({param} AS jsonb))) AS json_rows"
            ),
        }
    }

    /// The lock a statement takes on a parent row it writes a reference to, where no foreign
    /// key does (migration 0014): `FOR KEY SHARE` on Postgres, so the row cannot be deleted
    /// before the transaction ends; nothing on SQLite, whose one writer runs transactions in turn.
    pub(crate) fn key_share(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "",
            Backend::Postgres { .. } => "FOR KEY SHARE",
        }
    }

    /// Opens (and for SQLite creates) the database. Does not migrate.
    pub async fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self> {
        let backend = match url {
            DatabaseUrl::Sqlite(path) => {
                let connect = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // WAL + NORMAL: a commit survives a process crash; only an OS crash or power
                    // loss can take the last transactions. The Postgres backend is for stricter needs.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    .pragma("temp_store", "memory")
                    .pragma("cache_size", "-32000");
                // No liveness ping before each use: an embedded connection cannot go stale, and
                // the ping is a round trip on every statement (measured: ~10-20 % of throughput).
                // The writer never checkpoints (see `checkpoints`).
                let write = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(1)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect.clone().pragma("wal_autocheckpoint", "0"))
                    .await?;
                let read = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(options.max_connections.clamp(1, 8))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect.clone().read_only(true))
                    .await?;
                let checkpointer = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(1)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await?;
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(checkpoints(checkpointer.clone(), stop.clone()));
                Backend::Sqlite { write, read, checkpointer, _checkpoints: Arc::new(stop.drop_guard()) }
            }
            DatabaseUrl::Postgres(url) => {
                let connect = PgConnectOptions::from_str(url)?.options([PG_GENERIC_PLANS]);
                // One direct connection first: a pool only reports "timed out", while a plain
                // connect says why (refused, unknown host, authentication, no such database).
                let probe = tokio::time::timeout(options.acquire_timeout, PgConnection::connect_with(&connect))
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
                probe.close().await?;
                let pool = pg_pool_options(options.max_connections, options.acquire_timeout)
                    .connect_with(connect.clone())
                    .await?;
                let relaxed = pg_pool_options((options.max_connections / 2).max(2), options.acquire_timeout)
                    .connect_with(connect.options([("synchronous_commit", "off")]))
                    .await?;
                Backend::Postgres { pool, relaxed }
            }
        };
        Ok(Self { backend })
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite { write, .. } => sqlx::migrate!("migrations/sqlite").run(write).await?,
            Backend::Postgres { pool, .. } => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// True when the database answers and every embedded migration has been applied.
    pub async fn is_ready(&self) -> Result<bool> {
        let expected = match &self.backend {
            Backend::Sqlite { .. } => sqlx::migrate!("migrations/sqlite").iter().count(),
            Backend::Postgres { .. } => sqlx::migrate!("migrations/postgres").iter().count(),
        };
        let applied: i64 = with_pool!(self, read, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?
        });
        Ok(applied as usize >= expected)
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Closes every connection (graceful shutdown: in-flight statements finish first).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { write, read, checkpointer, .. } => {
                read.close().await;
                checkpointer.close().await;
                write.close().await;
            }
            Backend::Postgres { pool, relaxed } => {
                relaxed.close().await;
                pool.close().await
            }
        }
    }

    /// Reads a server-wide value shared by all replicas.
    pub async fn get_server_value(&self, key: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, read, |pool| {
            sqlx::query_scalar("SELECT value FROM server_kv WHERE key = $1").bind(key).fetch_optional(pool).await?
        }))
    }

    /// Stores `value` under `key` unless a value is already there; returns the value that won
    /// (so concurrent replicas agree on one).
    pub async fn init_server_value(&self, key: &str, value: &str) -> Result<String> {
        with_pool!(self, write, |pool| {
            sqlx::query("INSERT INTO server_kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.get_server_value(key).await?.ok_or_else(|| StoreError::Corrupt(format!("server value {key} vanished")))
    }
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub(crate) fn to_ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> Result<Timestamp> {
    chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("time out of range: {ms}")))
}

pub(crate) fn opt_from_ms(ms: Option<i64>) -> Result<Option<Timestamp>> {
    ms.map(from_ms).transpose()
}

pub(crate) fn parse_id(s: &str) -> Result<Id> {
    Id::parse_str(s).map_err(|_| StoreError::Corrupt(format!("bad id `{s}`")))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A JSON array bound for [`Store::json_array_rows`]: sent as `jsonb` on Postgres, parsed once
/// when the statement is bound. (Bound as text, it was parsed by each `CAST(… AS jsonb)` at
/// every execution — twice per array, for its rows and its length; the control transaction's
/// update-and-insert of 2,000 orders took 224–257 ms that way and 131–200 ms with `jsonb`,
/// generic plans both.) SQLite gets the same text as [`to_json`].
pub(crate) fn json_rows<T: serde::Serialize + ?Sized>(value: &T) -> sqlx::types::Json<&T> {
    sqlx::types::Json(value)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising our own DTOs to a String cannot fail (no non-string map keys, no I/O).
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub(crate) fn new_id() -> Id {
    uuid::Uuid::now_v7()
}

/// True for a unique-constraint violation, on either backend.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
