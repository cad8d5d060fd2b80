//! The live event stream as a panel uses it: what agents report arrives as typed events named
//! by their type, and a client that reconnects with `Last-Event-ID` gets exactly what it missed
//! (or a `resync` when that is older than the server remembers).

use botmox_contract::{bots::BotState, events::Event};
use botmox_e2e::{
    both_backends,
    db::Backend,
    sim::{AutoMode, SimAgent},
    sse::SseStream,
};
use uuid::Uuid;

use super::*;

both_backends!(a_reconnecting_client_resumes_after_its_last_event);

async fn a_reconnecting_client_resumes_after_its_last_event(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-watched").await?;
    let bot_id = create_bot(&app, "watched", agent_id).await?;
    let mut first = events(&app).await?;
    let _agent = SimAgent::connect(sim(&app, &token).auto(AutoMode::Run)).await?;
    control(&app, bot_id, "start").await?;
    let running = wait_bot_state(&mut first, bot_id, BotState::Running).await?;
    let last_seen = first.last_event_id().map(str::to_owned).unwrap_or_default();
    assert_eq!(last_seen, running.id.to_string(), "the SSE id is the event's id");
    drop(first);

    // While the first client is away, the bot is stopped; a second client watches it happen.
    let mut watcher = events(&app).await?;
    control(&app, bot_id, "stop").await?;
    let stopped = wait_bot_state(&mut watcher, bot_id, BotState::Stopped).await?;

    // The first client comes back with its last id and is handed what it missed, in order.
    let mut resumed = SseStream::open(app.get("/api/v1/events").header("Last-Event-ID", &last_seen)).await?;
    let mut missed = Vec::new();
    let replayed = resumed
        .wait_for(
            |e| {
                missed.push(e.clone());
                e.id.as_deref() == Some(stopped.id.to_string().as_str())
            },
            WAIT,
        )
        .await?;
    assert_eq!(replayed.event.as_deref(), Some("bot_state"), "named by its type");
    assert_eq!(replayed.json::<Event>()?, stopped, "the same event, byte for byte in meaning");
    assert!(missed.iter().all(|e| e.id.as_deref() != Some(last_seen.as_str())), "nothing seen twice");
    let ids: Vec<Uuid> = missed.iter().filter_map(|e| e.id.as_deref()?.parse().ok()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");

    // An id the server does not know (too old, or from elsewhere) asks for a refetch first.
    let mut lost =
        SseStream::open(app.get("/api/v1/events").header("Last-Event-ID", Uuid::now_v7().to_string())).await?;
    assert_eq!(lost.next_event(WAIT).await?.event.as_deref(), Some("resync"));
    // Open event streams would hold the graceful shutdown.
    drop((watcher, resumed, lost));
    app.stop().await
}
