//! Bot log lines: appended in batches as agents ship them (a re-sent batch is a no-op thanks
//! to the `(bot_id, seq)` key), read by page or followed, and trimmed to the retention.

use botmox_contract::{
    logs::{LogLine, LogStream},
    Id, Timestamp,
};

use super::{from_ms, to_ms, with_pool, Result, Store, StoreError};

/// Which lines to read, oldest first.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only lines after this sequence number.
    pub after_seq: Option<u64>,
    /// Only lines at or after this time.
    pub since: Option<Timestamp>,
    /// With neither bound: the *last* `limit` lines.
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    seq: i64,
    stream: String,
    at: i64,
    text: String,
}

impl TryFrom<LineRow> for LogLine {
    type Error = StoreError;

    fn try_from(row: LineRow) -> Result<Self> {
        Ok(LogLine {
            seq: row.seq as u64,
            stream: if row.stream == "stderr" { LogStream::Stderr } else { LogStream::Stdout },
            time: from_ms(row.at)?,
            text: row.text,
        })
    }
}

impl Store {
    /// Appends lines of one bot, as reported by `agent_id`, and trims it to its newest `keep`
    /// lines. Returns how many were new. The bot must be placed on that agent *now* (checked
    /// in the same transaction, not remembered from the connection's start): a bot that moved
    /// away is `NotFound` to its old agent.
    pub async fn append_logs(&self, agent_id: Id, bot_id: Id, lines: &[LogLine], keep: u64) -> Result<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        with_pool!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let tenant_id: Option<String> =
                    sqlx::query_scalar("SELECT tenant_id FROM bots WHERE id = $1 AND agent_id = $2")
                        .bind(bot_id.to_string())
                        .bind(agent_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(tenant_id) = tenant_id else { return Err(StoreError::NotFound("bot")) };
                let mut inserted = 0;
                for line in lines {
                    inserted += sqlx::query(
                        "INSERT INTO log_lines (bot_id, seq, tenant_id, stream, at, text) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (bot_id, seq) DO NOTHING",
                    )
                    .bind(bot_id.to_string())
                    .bind(line.seq as i64)
                    .bind(&tenant_id)
                    .bind(match line.stream {
                        LogStream::Stdout => "stdout",
                        LogStream::Stderr => "stderr",
                    })
                    .bind(to_ms(line.time))
                    .bind(&line.text)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                let newest = lines.iter().map(|l| l.seq).max().unwrap_or(0);
                if newest > keep {
                    sqlx::query("DELETE FROM log_lines WHERE bot_id = $1 AND seq <= $2")
                        .bind(bot_id.to_string())
                        .bind((newest - keep) as i64)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok::<_, StoreError>(inserted)
            }
            .await
        })
    }

    pub async fn read_logs(&self, tenant_id: Id, bot_id: Id, query: &LogQuery) -> Result<Vec<LogLine>> {
        let limit = i64::from(query.limit.max(1));
        let tail = query.after_seq.is_none() && query.since.is_none();
        let rows: Vec<LineRow> = with_pool!(self, read, |pool| {
            if tail {
                sqlx::query_as(
                    "SELECT seq, stream, at, text FROM log_lines WHERE tenant_id = $1 AND bot_id = $2 \
                     ORDER BY seq DESC LIMIT $3",
                )
                .bind(tenant_id.to_string())
                .bind(bot_id.to_string())
                .bind(limit)
                .fetch_all(pool)
                .await?
            } else {
                sqlx::query_as(
                    "SELECT seq, stream, at, text FROM log_lines WHERE tenant_id = $1 AND bot_id = $2 \
                     AND seq > $3 AND at >= $4 ORDER BY seq LIMIT $5",
                )
                .bind(tenant_id.to_string())
                .bind(bot_id.to_string())
                .bind(query.after_seq.map_or(-1, |s| s as i64))
                .bind(query.since.map_or(i64::MIN, to_ms))
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        });
        let mut lines = rows.into_iter().map(LogLine::try_from).collect::<Result<Vec<_>>>()?;
        if tail {
            lines.reverse();
        }
        Ok(lines)
    }

    /// Retention by age: drops every line older than `cutoff`. Returns how many.
    pub async fn delete_logs_before(&self, cutoff: Timestamp) -> Result<u64> {
        Ok(with_pool!(self, write, |pool| {
            sqlx::query("DELETE FROM log_lines WHERE at < $1").bind(to_ms(cutoff)).execute(pool).await?.rows_affected()
        }))
    }
}
