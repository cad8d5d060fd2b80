//! Cross-replica signals over Postgres `LISTEN/NOTIFY`: how the replica that enqueues a command
//! wakes the replica holding the agent's socket, and how every replica sees every event. SQLite
//! is single-process, so there it is a no-op.

use futures::{Stream, StreamExt};
use sqlx::postgres::PgListener;

use super::{Backend, Result, Store};

/// The channel every replica listens on.
pub const CHANNEL: &str = "botmox";
/// Postgres refuses NOTIFY payloads of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7900;

impl Store {
    /// True when other replicas may exist (Postgres).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Sends `payload` to every replica listening (including this one). No-op on SQLite.
    /// A NOTIFY commits a transaction of its own (with a transaction id, so a WAL flush when
    /// commits are synchronous); a signal needs no durability, so it goes through the relaxed
    /// pool and never waits for the disk.
    pub async fn notify(&self, payload: &str) -> Result<()> {
        if let Backend::Postgres { relaxed: pool, .. } = &self.backend {
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(pool).await?;
        }
        Ok(())
    }

    /// The stream of payloads sent with [`Store::notify`]; `None` on SQLite. The listener
    /// reconnects by itself if its connection drops (sqlx `PgListener`).
    pub async fn listen(&self) -> Result<Option<impl Stream<Item = String> + Send + 'static>> {
        let Backend::Postgres { pool, .. } = &self.backend else { return Ok(None) };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let stream = listener.into_stream().filter_map(|item| async move {
            match item {
                Ok(notification) => Some(notification.payload().to_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster listener error");
                    None
                }
            }
        });
        Ok(Some(stream))
    }
}
