//! `GET /bots/{id}/logs`: a page of a bot's log lines, or with `follow=true` a Server-Sent
//! Events stream that starts with that page and then delivers new lines as agents ship them,
//! until the credential it was opened with lapses (`auth::watch`).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use botmox_contract::{logs::LogLine, problem::Problem, Id};
use chrono::{DateTime, Utc};
use futures::stream;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{
    auth::watch::Watch,
    http::{
        error::ApiResult,
        extract::{Path, Query},
    },
    state::AppState,
    store::LogQuery,
};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only lines at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only lines after this sequence number.
    after_seq: Option<u64>,
    /// 1 to 5000 (default 200). Without `since`/`after_seq`: the last `limit` lines.
    limit: Option<u32>,
    /// Keep the response open and stream new lines (Server-Sent Events).
    follow: Option<bool>,
}

/// A bot's log lines, oldest first; `follow=true` streams new ones.
#[utoipa::path(
    get, path = "/bots/{id}/logs", tag = "bots",
    security(("bearer" = ["bots:read"])),
    params(("id" = Uuid, Path, description = "Bot id"), LogsQuery),
    responses(
        (status = 200, description = "Lines (JSON), or with follow=true `text/event-stream` of `log` events whose data is a line", body = Vec<LogLine>),
        (status = 404, description = "No such bot", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bot_logs(
    State(state): State<AppState>,
    watch: Watch,
    Path(id): Path<Uuid>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Response> {
    let principal = watch.principal().clone();
    let limit = crate::http::page::limit(query.limit, 200, 5000)?;
    state.store.get_bot(principal.tenant_id, id).await?;
    let first = LogQuery { after_seq: query.after_seq, since: query.since, limit };
    let lines = state.store.read_logs(principal.tenant_id, id, &first).await?;
    if query.follow != Some(true) {
        return Ok(axum::Json(lines).into_response());
    }
    let last_seq = lines.last().map(|l| l.seq).or(query.after_seq);
    let follow = Follow {
        state: state.clone(),
        tenant_id: principal.tenant_id,
        bot_id: id,
        last_seq,
        wake: state.log_bus.subscribe(),
        pending: lines.into(),
    };
    let stream = stream::unfold(follow, |mut follow| async move {
        let line = follow.next().await?;
        let event = SseEvent::default()
            .id(line.seq.to_string())
            .event("log")
            .data(serde_json::to_string(&line).unwrap_or_default());
        Some((Ok::<_, Infallible>(event), follow))
    });
    let stream = futures::StreamExt::take_until(watch.guard(stream), state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

struct Follow {
    state: AppState,
    tenant_id: Id,
    bot_id: Id,
    last_seq: Option<u64>,
    wake: tokio::sync::broadcast::Receiver<Id>,
    pending: std::collections::VecDeque<LogLine>,
}

impl Follow {
    /// The next line: buffered, else read after a wake-up for this bot (or a periodic re-read,
    /// so a missed wake-up only delays). `None` ends the stream (the bot was deleted).
    async fn next(&mut self) -> Option<LogLine> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                self.last_seq = Some(line.seq);
                return Some(line);
            }
            // Ascending from the last line seen (or from the first line there is).
            let query = match self.last_seq {
                Some(seq) => LogQuery { after_seq: Some(seq), since: None, limit: 500 },
                None => LogQuery { after_seq: None, since: Some(DateTime::<Utc>::UNIX_EPOCH), limit: 500 },
            };
            match self.state.store.read_logs(self.tenant_id, self.bot_id, &query).await {
                Ok(lines) if !lines.is_empty() => {
                    self.pending.extend(lines);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "log follow read failed");
                    return None;
                }
            }
            let wait = tokio::time::sleep(Duration::from_secs(5));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    woke = self.wake.recv() => match woke {
                        Ok(bot) if bot == self.bot_id => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(_) => return None,
                    },
                    () = &mut wait => break,
                }
            }
        }
    }
}
