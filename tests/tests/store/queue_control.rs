//! Control orders (`place_orders`, `place_batch`): desired state, sequence number, insert and
//! superseding in one transaction, on both backends.

use botmox_contract::{
    agents::AgentStatus,
    audit::Actor,
    bots::DesiredState,
    commands::{BotAction, CommandKind, CommandStatus},
    Id,
};
use botmox_control_plane::store::{BatchPlaced, NewBatch, NewBot, Order, StoreError, Target};

use crate::{bot_spec, exec_order, Ctx, TIMES};

conformance!(
    an_order_sets_the_desired_state_and_takes_the_next_sequence_number,
    a_newer_control_order_supersedes_older_queued_ones,
    a_key_used_before_returns_the_first_command_and_changes_nothing,
    concurrent_orders_with_one_key_agree_on_one_command,
    orders_that_cannot_be_placed_say_why_and_change_nothing,
    a_batch_is_recorded_once_per_key,
    commands_for_a_connected_agent_are_placed_dispatched,
    concurrent_orders_for_the_same_bots_take_one_sequence_number_each,
);

fn order(tenant_id: Id, bot_id: Id, kind: CommandKind, desired: Option<DesiredState>) -> Order {
    Order {
        tenant_id,
        target: Target::Bot(bot_id),
        kind,
        desired,
        payload: serde_json::json!({}),
        idempotency_key: None,
        created_by: Actor::supervisor(),
        batch_id: None,
    }
}

fn stop(tenant_id: Id, bot_id: Id) -> Order {
    order(tenant_id, bot_id, CommandKind::BotStop, Some(DesiredState::Stopped))
}

fn start(tenant_id: Id, bot_id: Id) -> Order {
    order(tenant_id, bot_id, CommandKind::BotStart, Some(DesiredState::Running))
}

/// A bot whose start needs no secret values (so its commands may be placed `dispatched`).
async fn plain_bot(t: &Ctx, name: &str, agent_id: Id) -> anyhow::Result<botmox_contract::bots::Bot> {
    let mut spec = bot_spec(name, agent_id, &[]);
    spec.exec.secret_env.clear();
    Ok(t.store.create_bot(NewBot { tenant_id: t.tenant, spec }, t.t0).await?)
}

async fn an_order_sets_the_desired_state_and_takes_the_next_sequence_number(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let bot = t.bot("b", agent.id, &[]).await?;
    assert_eq!(bot.desired_state, DesiredState::Stopped);
    let placed = t.store.place_orders(&[start(t.tenant, bot.id)], TIMES, t.at(1.0)).await?;
    let placed = placed.into_iter().next().expect("one answer")?;
    assert!(placed.created);
    assert_eq!(
        (placed.command.kind, placed.command.status, placed.command.seq),
        (CommandKind::BotStart, CommandStatus::Queued, Some(1))
    );
    assert_eq!(
        (placed.agent.id, placed.agent.name.as_str(), placed.agent.status),
        (agent.id, "host-1", AgentStatus::Pending)
    );
    let changed = placed.bot.expect("the desired state changed");
    assert_eq!(changed.desired_state, DesiredState::Running);
    assert_eq!(
        botmox_contract::events::BotStatus::from(&t.store.get_bot(t.tenant, bot.id).await?),
        changed,
        "the answer's bot is the stored one"
    );
    let stored = t.store.get_command(t.tenant, placed.command.id).await?;
    assert_eq!(stored, placed.command, "the answer is what was stored");
    // Every field, also with a payload, a key and a person as the author (the answer is made
    // from what the transaction wrote, not read back).
    let other = t.bot("rich", agent.id, &[]).await?;
    let mut rich = order(t.tenant, other.id, CommandKind::BotRestart, Some(DesiredState::Running));
    rich.payload = serde_json::json!({ "reason": "deploy", "n": 1.5, "list": [1, "two", null, { "deep": true }] });
    rich.idempotency_key = Some("rich-1".into());
    rich.created_by = Actor { kind: botmox_contract::audit::ActorKind::User, id: Some(uuid::Uuid::now_v7()) };
    let placed = t.store.place_orders(&[rich], TIMES, t.at(1.5)).await?;
    let placed = placed.into_iter().next().expect("one answer")?;
    assert_eq!(t.store.get_command(t.tenant, placed.command.id).await?, placed.command);

    // A second start: the next number, the desired state unchanged (so no bot in the
    // answer); a stop then changes it back; a sync keeps the current number.
    let again = t.store.place_orders(&[start(t.tenant, bot.id)], TIMES, t.at(2.0)).await?;
    let again = again.into_iter().next().expect("one answer")?;
    assert_eq!((again.command.seq, again.bot.is_none()), (Some(2), true));
    let stopped = t.store.place_orders(&[stop(t.tenant, bot.id)], TIMES, t.at(2.5)).await?;
    let stopped = stopped.into_iter().next().expect("one answer")?;
    assert_eq!(stopped.bot.map(|b| b.desired_state), Some(DesiredState::Stopped));
    let sync = t.store.place_orders(&[order(t.tenant, bot.id, CommandKind::BotSync, None)], TIMES, t.at(3.0)).await?;
    assert_eq!(sync.into_iter().next().expect("one answer")?.command.seq, Some(3));
    Ok(())
}

async fn a_newer_control_order_supersedes_older_queued_ones(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let bot = t.bot("b", agent.id, &[]).await?;
    let other = t.bot("other", agent.id, &[]).await?;
    let first = t.store.place_orders(&[start(t.tenant, bot.id), start(t.tenant, other.id)], TIMES, t.at(1.0)).await?;
    let first: Vec<_> = first.into_iter().collect::<Result<_, _>>()?;
    // Dispatch `bot`'s start: a dispatched command is the agent's to refuse, not ours.
    let claimed = t.store.claim_commands(agent.id, 1, t.at(1.5)).await?;
    assert_eq!(claimed[0].id, first[0].command.id, "oldest first");
    let sync = t.store.place_orders(&[order(t.tenant, bot.id, CommandKind::BotSync, None)], TIMES, t.at(2.0)).await?;
    let sync = sync.into_iter().next().expect("one answer")?;

    // In one transaction: a restart then a stop of `other`, and a stop of `bot`.
    let orders = [
        order(t.tenant, other.id, CommandKind::BotRestart, Some(DesiredState::Running)),
        stop(t.tenant, other.id),
        stop(t.tenant, bot.id),
    ];
    let placed: Vec<_> =
        t.store.place_orders(&orders, TIMES, t.at(3.0)).await?.into_iter().collect::<Result<_, _>>()?;
    let (restart, other_stop, bot_stop) = (&placed[0], &placed[1], &placed[2]);
    assert_eq!(restart.command.status, CommandStatus::Cancelled, "superseded within the same transaction");
    assert_eq!(restart.command.error, Some(format!("superseded by {}", other_stop.command.id)));
    assert_eq!((restart.command.seq, other_stop.command.seq), (Some(2), Some(3)));
    assert_eq!(t.store.get_bot(t.tenant, other.id).await?.desired_state, DesiredState::Stopped, "the last order wins");
    let mut superseded: Vec<Id> = other_stop.superseded.iter().map(|c| c.id).collect();
    superseded.extend(bot_stop.superseded.iter().map(|c| c.id));
    superseded.sort();
    let mut expected = vec![restart.command.id, first[1].command.id, sync.command.id];
    expected.sort();
    assert_eq!(superseded, expected, "the restart, other's queued start, the sync; not the dispatched start");
    let dispatched = t.store.get_command(t.tenant, first[0].command.id).await?;
    assert_eq!(dispatched.status, CommandStatus::Dispatched);
    let synced = t.store.get_command(t.tenant, sync.command.id).await?;
    assert_eq!(
        (synced.status, synced.error),
        (CommandStatus::Cancelled, Some(format!("superseded by {}", bot_stop.command.id)))
    );

    // A bot with nothing queued before, given two orders in one transaction: the second
    // still supersedes the first.
    let fresh = t.bot("fresh", agent.id, &[]).await?;
    let pair: Vec<_> = t
        .store
        .place_orders(&[start(t.tenant, fresh.id), stop(t.tenant, fresh.id)], TIMES, t.at(4.0))
        .await?
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(pair[0].command.status, CommandStatus::Cancelled);
    assert_eq!(pair[1].superseded.iter().map(|c| c.id).collect::<Vec<_>>(), vec![pair[0].command.id]);
    Ok(())
}

async fn a_key_used_before_returns_the_first_command_and_changes_nothing(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let bot = t.bot("b", agent.id, &[]).await?;
    let keyed = || Order { idempotency_key: Some("click-1".into()), ..start(t.tenant, bot.id) };
    let first = t.store.place_orders(&[keyed()], TIMES, t.at(1.0)).await?.into_iter().next().expect("answer")?;
    t.store.place_orders(&[stop(t.tenant, bot.id)], TIMES, t.at(2.0)).await?;
    let before = t.store.get_bot(t.tenant, bot.id).await?;
    let replay = t.store.place_orders(&[keyed(), keyed()], TIMES, t.at(3.0)).await?;
    for answer in replay {
        let answer = answer?;
        assert!(!answer.created);
        assert_eq!(answer.command.id, first.command.id);
        assert!(answer.bot.is_none() && answer.superseded.is_empty());
    }
    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?, before, "not the desired state, not the sequence");
    let next = t.store.place_orders(&[stop(t.tenant, bot.id)], TIMES, t.at(4.0)).await?;
    assert_eq!(next.into_iter().next().expect("answer")?.command.seq, Some(3), "the replay took no number");
    // A key repeated within one transaction makes one command.
    let other = t.bot("other", agent.id, &[]).await?;
    let twice = || Order { idempotency_key: Some("once".into()), ..stop(t.tenant, other.id) };
    let answers: Vec<_> =
        t.store.place_orders(&[twice(), twice()], TIMES, t.at(5.0)).await?.into_iter().collect::<Result<_, _>>()?;
    assert_eq!((answers[0].created, answers[1].created), (true, false));
    assert_eq!(answers[0].command.id, answers[1].command.id);
    Ok(())
}

async fn concurrent_orders_with_one_key_agree_on_one_command(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let bot = t.bot("b", agent.id, &[]).await?;
    let place = |n: f64| {
        let store = t.store.clone();
        let order = Order { idempotency_key: Some("race".into()), ..stop(t.tenant, bot.id) };
        let at = t.at(n);
        async move { store.place_orders(&[order], TIMES, at).await }
    };
    let answers = futures::future::try_join_all((0..8).map(|n| place(1.0 + f64::from(n)))).await?;
    let placed: Vec<_> = answers.into_iter().flatten().collect::<Result<_, _>>()?;
    let ids: std::collections::HashSet<Id> = placed.iter().map(|p| p.command.id).collect();
    assert_eq!(ids.len(), 1, "one command for the key");
    assert_eq!(placed.iter().filter(|p| p.created).count(), 1, "created once");
    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?.desired_state, DesiredState::Stopped);
    Ok(())
}

async fn orders_that_cannot_be_placed_say_why_and_change_nothing(t: Ctx) -> anyhow::Result<()> {
    let other_tenant = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let revoked = t.agent("host-revoked").await?;
    let bot = t.bot("b", agent.id, &[]).await?;
    let orphan = t.bot("on-revoked", revoked.id, &[]).await?;
    t.store.revoke_agent(t.tenant, revoked.id, t.at(0.5)).await?;
    let orders = [
        stop(other_tenant, bot.id),
        stop(t.tenant, orphan.id),
        exec_order(t.tenant, uuid::Uuid::now_v7()),
        exec_order(other_tenant, agent.id),
        stop(t.tenant, uuid::Uuid::now_v7()),
        exec_order(t.tenant, agent.id),
    ];
    let answers = t.store.place_orders(&orders, TIMES, t.at(1.0)).await?;
    let kinds: Vec<&str> = answers
        .iter()
        .map(|a| match a {
            Ok(_) => "ok",
            Err(StoreError::NotFound(_)) => "not_found",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::Reference(_)) => "reference",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(kinds, ["not_found", "conflict", "reference", "reference", "not_found", "ok"]);
    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?.desired_state, DesiredState::Stopped);
    assert_eq!(t.store.get_bot(t.tenant, orphan.id).await?.desired_state, DesiredState::Stopped);
    Ok(())
}

async fn a_batch_is_recorded_once_per_key(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let revoked = t.agent("host-revoked").await?;
    let bots = [t.bot("a", agent.id, &[]).await?, t.bot("b", agent.id, &[]).await?, t.bot("c", revoked.id, &[]).await?];
    t.store.revoke_agent(t.tenant, revoked.id, t.at(0.5)).await?;
    let ghost = uuid::Uuid::now_v7();
    let batch = |id| NewBatch {
        id,
        tenant_id: t.tenant,
        idempotency_key: Some("stop-all".into()),
        action: BotAction::Stop,
        matched: 4,
        created_by: Actor::supervisor(),
    };
    let first = batch(uuid::Uuid::now_v7());
    let orders: Vec<Order> = bots
        .iter()
        .map(|b| b.id)
        .chain([ghost])
        .map(|id| Order { batch_id: Some(first.id), ..stop(t.tenant, id) })
        .collect();
    let BatchPlaced::Created(record, placement) = t.store.place_batch(&first, &orders, TIMES, t.at(1.0)).await? else {
        anyhow::bail!("a new batch expected")
    };
    assert_eq!((record.id, record.matched, record.accepted), (first.id, 4, 2));
    let reasons: Vec<(&str, u64)> = record.skipped.iter().map(|s| (s.reason.as_str(), s.count)).collect();
    assert_eq!(reasons, [("agent_revoked", 1), ("not_found", 1)]);
    assert_eq!(placement.iter().filter(|p| p.is_ok()).count(), 2);
    for placed in placement.iter().flatten() {
        assert_eq!(t.store.get_command(t.tenant, placed.command.id).await?, placed.command, "the answer is the row");
    }
    let (commands, more) = t.store.batch_commands(t.tenant, first.id, 1).await?;
    assert_eq!((commands.len(), more), (1, true));
    assert_eq!(commands[0].batch_id, Some(first.id));

    let repeat = batch(uuid::Uuid::now_v7());
    let BatchPlaced::Existing(again) = t.store.place_batch(&repeat, &orders, TIMES, t.at(2.0)).await? else {
        anyhow::bail!("the first batch expected")
    };
    assert_eq!((again.id, again.accepted), (first.id, 2));
    let (all, _) = t.store.batch_commands(t.tenant, first.id, 100).await?;
    assert_eq!(all.len(), 2, "nothing placed twice");
    assert_eq!(t.store.get_batch(t.tenant, first.id).await?.accepted, 2);
    Ok(())
}

/// An order for a bot of an agent the caller says is connected (`place_orders_direct`) skips
/// the queue: placed `dispatched` (attempt 1, lease running), with the bot to build its
/// envelope from. Not a start that needs secret values, nor the older of two orders of a kind
/// for one bot in one transaction (queued, and superseded). A hand-over that found no
/// connection goes back to the queue, uncounted (`return_undelivered`).
async fn commands_for_a_connected_agent_are_placed_dispatched(t: Ctx) -> anyhow::Result<()> {
    let here = t.agent("here").await?;
    let away = t.agent("away").await?;
    let bot = plain_bot(&t, "plain", here.id).await?;
    let secretive = t.bot("secretive", here.id, &[]).await?;
    let elsewhere = plain_bot(&t, "elsewhere", away.id).await?;
    // Every answer of orders placed with only `here` connected.
    let (ctx, here_id) = (&t, here.id);
    let place_here = move |orders: Vec<Order>, at: f64| async move {
        let connected = move |agent: Id| agent == here_id;
        let placement = ctx.store.place_orders_direct(&orders, TIMES, ctx.at(at), &connected).await?;
        anyhow::Ok(placement.into_iter().collect::<Result<Vec<_>, _>>()?)
    };
    let placed =
        place_here(vec![start(t.tenant, bot.id), start(t.tenant, secretive.id), start(t.tenant, elsewhere.id)], 1.0)
            .await?;
    let direct = &placed[0];
    assert_eq!((direct.command.status, direct.command.attempt), (CommandStatus::Dispatched, 1));
    assert_eq!(direct.command.dispatched_at, Some(t.at(1.0)));
    assert_eq!(direct.command.lease_expires_at, Some(t.at(31.0)));
    let runtime = direct.deliver.as_ref().expect("a dispatched command comes with its bot");
    assert_eq!((runtime.id, runtime.agent_id, runtime.exec.program.as_str()), (bot.id, here.id, "python3"));
    // What the answer says is what was written.
    let stored = t.store.get_command(t.tenant, direct.command.id).await?;
    assert_eq!(
        (stored.status, stored.attempt, stored.dispatched_at, stored.lease_expires_at),
        (CommandStatus::Dispatched, 1, Some(t.at(1.0)), Some(t.at(31.0)))
    );
    for queued in &placed[1..] {
        assert_eq!((queued.command.status, queued.command.attempt), (CommandStatus::Queued, 0), "{queued:?}");
        assert!(queued.deliver.is_none());
    }
    // The claim finds only the one that needs its secrets read.
    let claimed = t.store.claim_commands(here.id, 10, t.at(1.5)).await?;
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![placed[1].command.id]);

    // A stop needs no secrets: dispatched. A start then a stop in one transaction: the start
    // stays queued and the stop supersedes it.
    let pair =
        place_here(vec![stop(t.tenant, secretive.id), start(t.tenant, bot.id), stop(t.tenant, bot.id)], 2.0).await?;
    assert_eq!(pair[0].command.status, CommandStatus::Dispatched);
    assert_eq!(pair[1].command.status, CommandStatus::Cancelled);
    assert!(pair[1].deliver.is_none());
    assert_eq!((pair[2].command.status, pair[2].command.seq), (CommandStatus::Dispatched, Some(3)));
    assert_eq!(pair[2].superseded.iter().map(|c| c.id).collect::<Vec<_>>(), vec![pair[1].command.id]);

    // The connection was gone at hand-over: back to the queue at once, the attempt not
    // counted; only the agent's own, only while still dispatched.
    let ids = [pair[0].command.id, pair[2].command.id];
    assert!(t.store.return_undelivered(away.id, &ids, t.at(2.5)).await?.is_empty(), "another agent's");
    let returned = t.store.return_undelivered(here.id, &ids, t.at(2.5)).await?;
    assert_eq!(returned.len(), 2);
    for command in &returned {
        assert_eq!(
            (command.status, command.attempt, command.dispatched_at, command.lease_expires_at),
            (CommandStatus::Queued, 0, None, None)
        );
    }
    assert!(t.store.return_undelivered(here.id, &ids, t.at(2.6)).await?.is_empty(), "returned once");
    let claimed = t.store.claim_commands(here.id, 10, t.at(3.0)).await?;
    assert_eq!(claimed.iter().map(|c| (c.id, c.attempt)).collect::<Vec<_>>(), ids.map(|id| (id, 1)).to_vec());
    Ok(())
}

/// Orders racing for the same bots from many connections (each transaction locks its bots):
/// every order gets its own sequence number, the bot's number is the last one given, and its
/// desired state is the one that order set.
async fn concurrent_orders_for_the_same_bots_take_one_sequence_number_each(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let mut bots = Vec::new();
    for name in ["b1", "b2", "b3"] {
        bots.push(plain_bot(&t, name, agent.id).await?.id);
    }
    // Placed `dispatched` (the agent counts as connected): nothing stays queued for a newer
    // order to supersede, so every command stays as placed.
    let (tasks, rounds) = (8, 12);
    let place = |task: usize| {
        let (store, tenant, bots) = (t.store.clone(), t.tenant, bots.clone());
        let at = t.at(1.0);
        async move {
            let mut placed = Vec::new();
            for round in 0..rounds {
                let bot = bots[(task + round) % bots.len()];
                let order = if (task + round).is_multiple_of(2) { start(tenant, bot) } else { stop(tenant, bot) };
                let answer = store.place_orders_direct(&[order], TIMES, at, &|_| true).await?;
                placed.push(answer.into_iter().next().expect("one answer")?);
            }
            anyhow::Ok(placed)
        }
    };
    let placed: Vec<_> = futures::future::try_join_all((0..tasks).map(place)).await?.into_iter().flatten().collect();
    assert_eq!(placed.len(), tasks * rounds);
    for bot_id in bots {
        let mut mine: Vec<_> = placed.iter().filter(|p| p.command.bot_id == Some(bot_id)).collect();
        assert!(mine.iter().all(|p| p.created && p.command.status == CommandStatus::Dispatched));
        mine.sort_by_key(|p| p.command.seq);
        let seqs: Vec<u64> = mine.iter().filter_map(|p| p.command.seq).collect();
        let expected: Vec<u64> = (1..=mine.len() as u64).collect();
        assert_eq!(seqs, expected, "bot {bot_id}: one number per order, none skipped");
        let stored = t.store.get_bot(t.tenant, bot_id).await?;
        let last = mine.last().expect("orders for every bot");
        let desired =
            if last.command.kind == CommandKind::BotStart { DesiredState::Running } else { DesiredState::Stopped };
        assert_eq!(stored.desired_state, desired, "bot {bot_id}: the desired state of its last order");
        for p in &mine {
            assert_eq!(t.store.get_command(t.tenant, p.command.id).await?, p.command, "answered as stored");
        }
    }
    Ok(())
}
