//! The command path as one transaction (issue 10): a replayed `Idempotency-Key` changes
//! nothing, a newer command supersedes older queued ones, a stale command redelivered after a
//! newer one ran is refused by the agent and recorded as superseded, a failed write leaves no
//! command behind, and bulk actions at fleet scale with dry runs and replays.

use botmox_contract::{
    bots::{DesiredState, ExecSpec, RestartSpec, StopSpec},
    commands::CommandStatus,
    events::{Event, EventPayload},
    protocol::CommandOutcome,
};
use botmox_control_plane::store::NewBot;
use botmox_e2e::{app::send, both_backends, db::Backend, sim::SimAgent};
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;

both_backends!(an_idempotent_replay_after_a_later_command_changes_nothing);
both_backends!(a_newer_command_supersedes_older_queued_ones);
both_backends!(a_stale_command_redelivered_after_a_newer_one_is_superseded_by_the_agent);
both_backends!(a_failed_desired_state_write_leaves_no_command);
both_backends!(a_bulk_action_over_5000_bots_is_one_batch);

async fn an_idempotent_replay_after_a_later_command_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, _token) = app.pair_agent("vm-1").await?;
    let bot_id = create_bot(&app, "replayed", agent_id).await?;
    let restart =
        || app.post(&format!("/api/v1/bots/{bot_id}/restart"), &json!({})).header("Idempotency-Key", "restart-1");
    let (status, first) = send(restart()).await?;
    assert_eq!(status, 202, "{first}");
    control(&app, bot_id, "stop").await?;
    assert_eq!(bot(&app, bot_id).await?["desired_state"], "stopped");

    let mut events = events(&app).await?;
    let (status, replay) = send(restart()).await?;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["command"]["id"], first["command"]["id"], "the first command comes back");
    assert!(replay["message"].as_str().unwrap_or_default().contains("nothing changed"), "{replay}");
    assert_eq!(bot(&app, bot_id).await?["desired_state"], "stopped", "the late replay did not flip the bot back");
    let listed = get(&app, &format!("/api/v1/commands?bot_id={bot_id}")).await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2), "no third command: {listed}");

    // Nothing was published either: the next event is the marker that follows.
    let marker = command_id(&control(&app, bot_id, "stop").await?)?;
    let next: Event = events.next_event(WAIT).await?.json()?;
    assert!(
        matches!(&next.payload, EventPayload::CommandStatus(c) if c.id == marker),
        "the replay published nothing; first event after it: {next:?}"
    );
    drop(events);
    app.stop().await
}

async fn a_newer_command_supersedes_older_queued_ones(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-away").await?;
    let bot_id = create_bot(&app, "ordered", agent_id).await?;
    let mut events = events(&app).await?;
    // The agent is away: everything stays queued.
    let start = command_id(&control(&app, bot_id, "start").await?)?;
    let restart = command_id(&control(&app, bot_id, "restart").await?)?;
    let stop_accepted = control(&app, bot_id, "stop").await?;
    let stop = command_id(&stop_accepted)?;
    assert_eq!(stop_accepted["command"]["status"], "queued");
    let seqs: Vec<u64> = futures::future::try_join_all([start, restart, stop].map(|id| command(&app, id)))
        .await?
        .iter()
        .filter_map(|c| c["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3], "each control command takes the bot's next sequence number");
    for (older, newer) in [(start, restart), (restart, stop)] {
        let c = command(&app, older).await?;
        assert_eq!(c["status"], "cancelled", "{c}");
        assert_eq!(c["error"], format!("superseded by {newer}"), "{c}");
    }

    // The agent connects: only the stop reaches it, with its sequence number.
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let envelope = agent.next_command(WAIT).await?;
    assert_eq!((envelope.id, envelope.seq), (stop, Some(3)));
    agent.ack(stop).await?;
    agent.succeed(stop, json!({ "stopped": true })).await?;
    wait_command_status(&mut events, stop, CommandStatus::Succeeded).await?;
    assert!(agent.try_next_command().is_none(), "nothing else was delivered");
    drop((events, agent));
    app.stop().await
}

async fn a_stale_command_redelivered_after_a_newer_one_is_superseded_by_the_agent(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-flaky").await?;
    let bot_id = create_bot(&app, "reordered", agent_id).await?;
    let mut events = events(&app).await?;
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;

    // The start goes out into a connection that dies before the agent acks it.
    let start = command_id(&control(&app, bot_id, "start").await?)?;
    let first = agent.next_command(WAIT).await?;
    assert_eq!((first.id, first.seq), (start, Some(1)));
    agent.drop_connection().await?;
    // Back at once, while the start's lease runs: the newer stop goes out first and runs.
    let mut agent = SimAgent::connect(sim(&app, &token)).await?;
    let stop = command_id(&control(&app, bot_id, "stop").await?)?;
    let newer = agent.next_command(WAIT).await?;
    assert_eq!((newer.id, newer.seq), (stop, Some(2)));
    agent.ack(stop).await?;
    agent.succeed(stop, json!({ "stopped": true })).await?;
    wait_command_status(&mut events, stop, CommandStatus::Succeeded).await?;

    // The start's lease passes and it is redelivered: the agent has run sequence 2 for this
    // bot, so it refuses sequence 1 as superseded, as the real agent does.
    let stale = agent.next_command(WAIT).await?;
    assert_eq!((stale.id, stale.seq, stale.attempt), (start, Some(1), 2));
    agent.ack(start).await?;
    agent
        .result(CommandOutcome {
            command_id: start,
            ok: false,
            result: json!({ "superseded": true }),
            error: Some("superseded: a newer command for this bot (sequence 2) already ran here".into()),
            superseded: true,
        })
        .await?;
    wait_command_status(&mut events, start, CommandStatus::Cancelled).await?;
    let recorded = command(&app, start).await?;
    assert!(recorded["error"].as_str().unwrap_or_default().starts_with("superseded"), "{recorded}");
    let bot = bot(&app, bot_id).await?;
    assert_eq!(bot["desired_state"], "stopped", "the last accepted command's effect remains");
    assert_eq!(agent.try_next_error(), None);
    drop((events, agent));
    app.stop().await
}

async fn a_failed_desired_state_write_leaves_no_command(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, _token) = app.pair_agent("vm-1").await?;
    let bot_id = create_bot(&app, "fragile", agent_id).await?;
    // Inject the fault: any write of a bot's desired state fails inside the transaction.
    let inject: &[&str] = match backend {
        Backend::Sqlite => &["CREATE TRIGGER inject_fault BEFORE UPDATE OF desired_state ON bots \
              BEGIN SELECT RAISE(ABORT, 'injected fault'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION inject_fault() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$ \
             LANGUAGE plpgsql",
            "CREATE TRIGGER inject_fault BEFORE UPDATE OF desired_state ON bots \
             FOR EACH ROW EXECUTE FUNCTION inject_fault()",
        ],
    };
    app.db().execute(inject).await?;

    let (status, problem) = send(app.post(&format!("/api/v1/bots/{bot_id}/start"), &json!({}))).await?;
    assert_eq!(status, 503, "a store failure is a retryable 503, not a 500: {problem}");
    assert_eq!(problem["code"], "unavailable", "{problem}");
    let (status, problem) =
        send(app.post("/api/v1/bots/actions", &json!({ "action": "start", "ids": [bot_id] }))).await?;
    assert_eq!(status, 503, "{problem}");
    let listed = get(&app, &format!("/api/v1/commands?bot_id={bot_id}")).await?;
    assert_eq!(listed["items"], json!([]), "no command without its desired state");
    assert_eq!(bot(&app, bot_id).await?["desired_state"], "stopped");

    let heal: &[&str] = match backend {
        Backend::Sqlite => &["DROP TRIGGER inject_fault"],
        Backend::Postgres => &["DROP TRIGGER inject_fault ON bots", "DROP FUNCTION inject_fault()"],
    };
    app.db().execute(heal).await?;
    control(&app, bot_id, "start").await?;
    assert_eq!(bot(&app, bot_id).await?["desired_state"], "running", "healed, the same request works");
    app.stop().await
}

async fn a_bulk_action_over_5000_bots_is_one_batch(backend: Backend) -> anyhow::Result<()> {
    const N: usize = 5000;
    let app = spawn(backend).await?;
    let (agent_id, _token) = app.pair_agent("vm-big").await?;
    let other = app.pair_agent("vm-other").await?.0;
    create_bots(&app, agent_id, "bulk", N).await?;
    let untouched = create_bot(&app, "not-in-the-filter", other).await?;
    let filter = json!({ "action": "stop", "filter": { "tag": "bulk" } });

    // A dry run counts and changes nothing.
    let dry = json!({ "action": "stop", "filter": { "tag": "bulk" }, "dry_run": true });
    let (status, counted) = send(app.post("/api/v1/bots/actions", &dry)).await?;
    assert_eq!(status, 200, "{counted}");
    assert_eq!((counted["matched"].as_u64(), counted["accepted"].as_u64()), (Some(N as u64), Some(N as u64)));
    assert_eq!((counted["batch_id"].clone(), counted["dry_run"].clone()), (Value::Null, json!(true)));
    assert_eq!(get(&app, "/api/v1/commands?limit=1").await?["items"], json!([]), "the dry run queued nothing");

    let bulk = || app.post("/api/v1/bots/actions", &filter).header("Idempotency-Key", "stop-all-bulk");
    let (status, accepted) = send(bulk()).await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!((accepted["matched"].as_u64(), accepted["accepted"].as_u64()), (Some(N as u64), Some(N as u64)));
    assert_eq!(accepted["skipped"], json!([]));
    assert_eq!(accepted["commands"].as_array().map(Vec::len), Some(100), "the first page");
    assert_eq!(accepted["more_commands"], true);
    let batch: Uuid = accepted["batch_id"].as_str().unwrap_or_default().parse()?;

    let commands = batch_commands(&app, batch).await?;
    assert_eq!(commands.len(), N, "exactly one command per bot");
    let bots: std::collections::HashSet<&str> = commands.iter().filter_map(|c| c["bot_id"].as_str()).collect();
    assert_eq!(bots.len(), N, "no bot twice");
    assert!(commands.iter().all(|c| c["kind"] == "bot.stop" && c["batch_id"] == batch.to_string()));
    let stopped = desired_states(&app, "bulk").await?;
    assert_eq!(stopped.get("stopped").copied(), Some(N), "every desired state changed: {stopped:?}");
    let theirs = get(&app, &format!("/api/v1/commands?bot_id={untouched}")).await?;
    assert_eq!(theirs["items"], json!([]), "a bot outside the filter got no command");

    // The same request again: the same batch, nothing new.
    let (status, again) = send(bulk()).await?;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["batch_id"], accepted["batch_id"]);
    assert_eq!(again["accepted"], accepted["accepted"]);
    assert_eq!(batch_commands(&app, batch).await?.len(), N);
    let newest = get(&app, "/api/v1/commands?limit=1").await?;
    assert_eq!(newest["items"][0]["batch_id"], batch.to_string(), "no command was queued after the batch");
    app.stop().await
}

/// `n` bots named `{prefix}-{i}` on the agent, tagged `prefix`, desired running (created
/// straight in the store: the test is about the bulk action, not creation).
async fn create_bots(app: &TestApp, agent_id: Uuid, prefix: &str, n: usize) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let spec = |i: usize| botmox_contract::bots::BotSpec {
        name: format!("{prefix}-{i:05}"),
        agent_id,
        exec: ExecSpec {
            program: "sleep".into(),
            args: vec!["60".into()],
            cwd: None,
            env: Default::default(),
            secret_env: Default::default(),
        },
        restart: RestartSpec::default(),
        stop: StopSpec::default(),
        desired_state: DesiredState::Running,
        tags: vec![prefix.to_owned()],
    };
    let chunks: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(n.div_ceil(8)).map(<[usize]>::to_vec).collect();
    let tasks = chunks.into_iter().map(|chunk| {
        let store = app.store.clone();
        let tenant_id = app.tenant_id;
        let spec = &spec;
        async move {
            for i in chunk {
                store.create_bot(NewBot { tenant_id, spec: spec(i) }, now).await?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(tasks).await?;
    Ok(())
}

/// How many bots with the tag want each desired state.
async fn desired_states(app: &TestApp, tag: &str) -> anyhow::Result<std::collections::HashMap<String, usize>> {
    let mut counts = std::collections::HashMap::new();
    let mut cursor = String::new();
    loop {
        let page = get(app, &format!("/api/v1/bots?tag={tag}&limit=500{cursor}")).await?;
        for bot in page["items"].as_array().into_iter().flatten() {
            *counts.entry(bot["desired_state"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return Ok(counts),
        }
    }
}
