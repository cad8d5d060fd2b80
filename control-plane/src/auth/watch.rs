//! Long-lived responses (the event stream, a log follow) outlive the request that opened
//! them, so the credential check of that request is not enough: [`Watch`] keeps the bearer
//! token a stream was opened with and asks the store again — before an item once the last
//! check is older than `Settings::stream_recheck`, and on that period when nothing flows —
//! and [`Watch::guard`] ends the stream as soon as the credential lapses (session logged out,
//! user disabled, token revoked or expired, access token expired, agent revoked) or no longer
//! authenticates as the same principal (role or scopes changed: the client reconnects and
//! gets what its new rights allow).

use axum::{extract::FromRequestParts, http::request::Parts};
use futures::{stream, Stream, StreamExt};
use tokio::time::Instant;

use super::{authenticate, bearer, Principal};
use crate::{
    http::error::{ApiError, ApiResult},
    state::AppState,
};

pub struct Watch {
    state: AppState,
    token: String,
    principal: Principal,
    next_check: Instant,
}

impl FromRequestParts<AppState> for Watch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let token = bearer(parts)?.to_owned();
        let next_check = Instant::now() + state.settings.stream_recheck;
        Ok(Self { state: state.clone(), token, principal, next_check })
    }
}

impl Watch {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether the credential still stands as it did when the stream opened. Asks the store
    /// at most once per period; any failure (the store unreachable included) counts as lapsed.
    async fn holds(&mut self) -> bool {
        if Instant::now() < self.next_check {
            return true;
        }
        let holds = matches!(authenticate(&self.state, &self.token).await, Ok(now) if now == self.principal);
        self.next_check = Instant::now() + self.state.settings.stream_recheck;
        if !holds {
            tracing::info!(actor = ?self.principal.actor(), "stream closed: its credential lapsed");
        }
        holds
    }

    /// `inner`, ended when the credential lapses: checked before each item and on every
    /// period while the stream is idle.
    pub fn guard<S>(self, inner: S) -> impl Stream<Item = S::Item> + Send
    where
        S: Stream + Send + 'static,
        S::Item: Send,
    {
        stream::unfold((self, Box::pin(inner)), |(mut watch, mut inner)| async move {
            loop {
                tokio::select! {
                    item = inner.next() => {
                        let item = item?;
                        return watch.holds().await.then_some((item, (watch, inner)));
                    }
                    () = tokio::time::sleep_until(watch.next_check) => {
                        if !watch.holds().await {
                            return None;
                        }
                    }
                }
            }
        })
    }
}
