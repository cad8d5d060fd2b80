//! Fresh databases for tests: a SQLite file in a temp dir, or a new schema on the real
//! Postgres server named by `BOTMOX_TEST_PG_URL`. Never a mock.

use std::fmt;

use botmox_control_plane::store::{DatabaseUrl, PoolOptions, Store};
use sqlx::{Connection, PgConnection};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// The Postgres server tests run against.
pub fn pg_url() -> String {
    std::env::var("BOTMOX_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// A database that exists for one test. SQLite's file lives in a temp dir that goes with it;
/// a Postgres database is dropped on [`TestDb::cleanup`] (left behind if the test panics, with
/// a recognisable `botmox_t_` name).
pub struct TestDb {
    pub url: DatabaseUrl,
    pub backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = DatabaseUrl::Sqlite(dir.path().join("botmox.db"));
                Ok(Self { url, backend, pg_name: None, _dir: Some(dir) })
            }
            Backend::Postgres => {
                let admin_url = pg_url();
                let name = format!("botmox_t_{}", uuid::Uuid::now_v7().simple());
                let mut conn = PgConnection::connect(&admin_url).await.map_err(|e| {
                    anyhow::anyhow!("cannot reach the test Postgres at {admin_url} (set BOTMOX_TEST_PG_URL): {e}")
                })?;
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
                conn.close().await?;
                let url = DatabaseUrl::Postgres(replace_db_name(&admin_url, &name));
                Ok(Self { url, backend, pg_name: Some(name), _dir: None })
            }
        }
    }

    /// A handle on a database some other part of the test created (e.g. a server's data dir);
    /// [`TestDb::cleanup`] leaves it alone.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(url).map_err(anyhow::Error::msg)?;
        let backend = match url {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        };
        Ok(Self { url, backend, pg_name: None, _dir: None })
    }

    /// The URL as `botmox serve --database-url` takes it.
    pub fn url_string(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }

    /// A connected, migrated store.
    pub async fn store(&self) -> anyhow::Result<Store> {
        let store = Store::connect(&self.url, &PoolOptions::default()).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Runs raw SQL on the database, outside the product: how tests inject faults (a trigger
    /// that makes a write fail). Each statement separately, in order.
    pub async fn execute(&self, statements: &[&str]) -> anyhow::Result<()> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
                for sql in statements {
                    sqlx::query(sql).execute(&mut conn).await?;
                }
                conn.close().await?;
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::connect(url).await?;
                for sql in statements {
                    sqlx::query(sql).execute(&mut conn).await?;
                }
                conn.close().await?;
            }
        }
        Ok(())
    }

    /// Drops the Postgres database (every connection to it must be closed first).
    pub async fn cleanup(self) -> anyhow::Result<()> {
        if let Some(name) = &self.pg_name {
            let mut conn = PgConnection::connect(&pg_url()).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
            conn.close().await?;
        }
        Ok(())
    }
}

/// `postgres://u@h:p/db?x` with `db` replaced by `name`.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_db_name;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(replace_db_name("postgres://p@h:1/postgres", "x"), "postgres://p@h:1/x");
        assert_eq!(replace_db_name("postgres://p@h:1", "x"), "postgres://p@h:1/x");
        assert_eq!(replace_db_name("postgres://p@h/d?sslmode=disable", "x"), "postgres://p@h/x?sslmode=disable");
    }
}
