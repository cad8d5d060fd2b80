//! Live events: `GET /events` as Server-Sent Events, tenant-scoped and filtered by what the
//! principal may read (`auth::access::event_scope`: a `bots:read` token gets no command or
//! agent events), resumable with `Last-Event-ID` from a bounded in-memory backlog, with
//! keep-alive comments; the stream ends when its credential lapses (`auth::watch`). Every replica
//! receives every event (see `link::cluster`), so a client may reconnect to any replica; when its
//! last id is no longer in the backlog it gets a `resync` event and should refetch.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use botmox_contract::{
    auth::Scope,
    events::{Event, EventPayload},
    Id, Timestamp,
};
use futures::{stream, Stream, StreamExt};
use tokio::sync::broadcast;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{access, watch::Watch, Principal},
    http::error::ApiResult,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// An event as published: who may see it and its wire form, serialised once — by the first
/// subscriber that sends it, so events nobody listens to (a fleet driven by scripts, a bulk
/// action's thousands) cost no serialisation at all.
pub struct Published {
    pub tenant_id: Id,
    /// What a principal of the tenant needs to receive it.
    pub needs: Scope,
    pub id: Uuid,
    pub name: &'static str,
    event: Event,
    json: std::sync::OnceLock<String>,
}

impl Published {
    /// The event as JSON (made on first use, then shared by every subscriber).
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(&self.event).unwrap_or_default())
    }
}

pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
    backlog: Mutex<VecDeque<Arc<Published>>>,
    capacity: usize,
}

/// What a new subscriber gets: the backlog after its last id, then the live feed.
pub struct Subscription {
    pub replay: Vec<Arc<Published>>,
    pub live: broadcast::Receiver<Arc<Published>>,
    /// Its last id was not in the backlog: it missed events and should refetch.
    pub resync: bool,
}

fn name(payload: &EventPayload) -> &'static str {
    match payload {
        EventPayload::BotState(_) => "bot_state",
        EventPayload::BotRemoved { .. } => "bot_removed",
        EventPayload::AgentPresence { .. } => "agent_presence",
        EventPayload::CommandStatus(_) => "command_status",
        EventPayload::Incident(_) => "incident",
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(1024).0, backlog: Mutex::new(VecDeque::with_capacity(capacity)), capacity }
    }

    pub fn event(payload: EventPayload, at: Timestamp) -> Event {
        Event { id: Uuid::now_v7(), at, payload }
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Published>>> {
        self.backlog.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Delivers an event to this replica's subscribers (and its backlog).
    pub fn publish(&self, tenant_id: Id, event: Event) {
        let published = Arc::new(Published {
            tenant_id,
            needs: access::event_scope(&event.payload),
            id: event.id,
            name: name(&event.payload),
            event,
            json: std::sync::OnceLock::new(),
        });
        // Under the backlog lock, so a subscriber sees each event exactly once: in its replay or live.
        let mut backlog = self.backlog();
        if backlog.len() == self.capacity {
            backlog.pop_front();
        }
        backlog.push_back(published.clone());
        let _ = self.tx.send(published);
    }

    /// What `principal` is shown: its tenant's events that it may read.
    pub fn subscribe(&self, principal: &Principal, last_event_id: Option<Uuid>) -> Subscription {
        let backlog = self.backlog();
        let live = self.tx.subscribe();
        let (start, resync) = match last_event_id {
            None => (backlog.len(), false),
            Some(last) => match backlog.iter().position(|p| p.id == last) {
                Some(i) => (i + 1, false),
                None => (0, true),
            },
        };
        let replay = backlog.iter().skip(start).filter(|p| visible(principal, p)).cloned().collect();
        Subscription { replay, live, resync }
    }
}

fn visible(principal: &Principal, published: &Published) -> bool {
    published.tenant_id == principal.tenant_id && principal.allows(published.needs)
}

fn sse(published: &Published) -> SseEvent {
    SseEvent::default().id(published.id.to_string()).event(published.name).data(published.json())
}

fn resync(reason: &str) -> SseEvent {
    SseEvent::default().event("resync").data(serde_json::json!({ "reason": reason }).to_string())
}

/// The tenant's live events.
#[utoipa::path(
    get, path = "/events", tag = "events",
    security(("bearer" = ["bots:read"])),
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "`text/event-stream`: events named by type (`bot_state`, `agent_presence`, `command_status`, `incident`, `bot_removed`, and `resync` when events were missed); `data` is the event JSON", content_type = "text/event-stream"))
)]
async fn events(
    State(state): State<AppState>,
    watch: Watch,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| Uuid::parse_str(v.trim()).ok());
    let principal = watch.principal().clone();
    let subscription = state.events.subscribe(&principal, last);
    // Ends when the credential lapses, and when the server shuts down (so the graceful drain
    // is not held open by a browser).
    let stream =
        watch.guard(event_stream(principal, subscription)).take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Replay, then live; a lagging subscriber is told to resync instead of silently losing events.
pub fn event_stream(
    principal: Principal,
    subscription: Subscription,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    let head: Vec<SseEvent> = subscription
        .resync
        .then(|| resync("your last event is older than the server's backlog: refetch"))
        .into_iter()
        .chain(subscription.replay.iter().map(|p| sse(p)))
        .collect();
    let live = stream::unfold((subscription.live, principal), |(mut live, principal)| async move {
        loop {
            match live.recv().await {
                Ok(published) if visible(&principal, &published) => return Some((sse(&published), (live, principal))),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some((resync("this stream fell behind and missed events: refetch"), (live, principal)))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    stream::iter(head).chain(live).map(Ok)
}

#[cfg(test)]
mod tests {
    use botmox_contract::events::EventPayload;

    use super::*;
    use crate::auth::Credential;

    fn admin_of(tenant_id: Id) -> Principal {
        let credential = Credential::Session { user_id: Uuid::now_v7(), session_id: Uuid::now_v7() };
        Principal { tenant_id, role: Some(botmox_contract::auth::Role::Admin), credential }
    }

    fn removed(bus: &EventBus, tenant: Id) -> Uuid {
        let event = EventBus::event(EventPayload::BotRemoved { bot_id: Uuid::now_v7() }, chrono::Utc::now());
        let id = event.id;
        bus.publish(tenant, event);
        id
    }

    #[test]
    fn resumes_after_the_last_seen_event_and_only_for_its_tenant() {
        let bus = EventBus::new(4);
        let (mine, theirs) = (Uuid::now_v7(), Uuid::now_v7());
        let first = removed(&bus, mine);
        removed(&bus, theirs);
        let third = removed(&bus, mine);
        let sub = bus.subscribe(&admin_of(mine), Some(first));
        assert!(!sub.resync);
        assert_eq!(sub.replay.iter().map(|p| p.id).collect::<Vec<_>>(), vec![third]);
        assert!(bus.subscribe(&admin_of(mine), None).replay.is_empty(), "no id: live only");
    }

    #[test]
    fn an_id_older_than_the_backlog_asks_for_a_resync() {
        let bus = EventBus::new(2);
        let tenant = Uuid::now_v7();
        let oldest = removed(&bus, tenant);
        removed(&bus, tenant);
        removed(&bus, tenant);
        let sub = bus.subscribe(&admin_of(tenant), Some(oldest));
        assert!(sub.resync);
        assert_eq!(sub.replay.len(), 2);
    }
}
