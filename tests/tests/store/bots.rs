//! Bot definitions: create, read, list (filters, counts, pagination), update, delete.

use botmox_contract::{
    bots::{Bot, BotState, DesiredState, RestartPolicy},
    incidents::{IncidentKind, Severity},
    protocol::BotStateReport,
};
use botmox_control_plane::store::{definition_hash, AgentHello, BotFilter, NewBot, NewIncident, StoreError, UpdateBot};

use crate::{bot_spec, Ctx};

conformance!(
    bots_round_trip,
    bot_creation_refusals,
    list_bots_filters,
    list_bots_counts_ignore_the_state_filter,
    list_bots_paginates_by_name,
    update_bot_bumps_the_version,
    update_bot_refusals_change_nothing,
    delete_bot_checks_the_version,
    kept_counts_follow_every_change,
    drifting_bots_are_found_through_the_counts,
    state_reports_in_one_statement_touch_only_the_agents_bots,
    state_reports_not_newer_than_the_applied_one_change_nothing,
    several_agents_reports_share_one_statement,
);

fn update_of(bot: &Bot) -> UpdateBot {
    UpdateBot {
        name: bot.name.clone(),
        agent_id: bot.agent_id,
        exec: bot.exec.clone(),
        restart: bot.restart.clone(),
        stop: bot.stop.clone(),
        tags: bot.tags.clone(),
    }
}

fn names(bots: &[Bot]) -> Vec<&str> {
    bots.iter().map(|b| b.name.as_str()).collect()
}

async fn list_names(t: &Ctx, filter: BotFilter) -> anyhow::Result<Vec<String>> {
    let page = t.store.list_bots(t.tenant, &BotFilter { limit: 100, ..filter }).await?;
    Ok(page.items.into_iter().map(|b| b.name).collect())
}

async fn bots_round_trip(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let mut spec = bot_spec("farmer-eu-01", agent.id, &["eu", "farm"]);
    spec.desired_state = DesiredState::Running;
    spec.restart.policy = RestartPolicy::Always;
    spec.stop.timeout_seconds = 3;
    let bot = t.store.create_bot(NewBot { tenant_id: t.tenant, spec: spec.clone() }, t.at(1.0)).await?;
    assert_eq!(bot.id.get_version_num(), 7);
    assert_eq!(bot.name, spec.name);
    assert_eq!(bot.agent_id, agent.id);
    assert_eq!(bot.exec, spec.exec);
    assert_eq!(bot.restart, spec.restart);
    assert_eq!(bot.stop, spec.stop);
    assert_eq!(bot.desired_state, DesiredState::Running);
    assert_eq!(bot.tags, vec!["eu", "farm"]);
    assert_eq!(bot.state, BotState::Pending);
    assert_eq!((bot.pid, bot.started_at, bot.last_exit_code, bot.last_exit_signal), (None, None, None, None));
    assert_eq!(bot.restart_count, 0);
    assert_eq!(bot.last_error, None);
    assert_eq!(bot.version, 1);
    assert_eq!(bot.created_at, t.at(1.0));
    assert_eq!(bot.updated_at, t.at(1.0));
    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?, bot);
    assert_err!(t.store.get_bot(t.tenant, uuid::Uuid::now_v7()).await, StoreError::NotFound(_));

    // The definition hash: 128 bits of hex, stable, and sensitive to what the agent runs.
    let hash = definition_hash(&spec.exec, &spec.restart, &spec.stop);
    assert_eq!(hash.len(), 32);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(hash, definition_hash(&bot.exec, &bot.restart, &bot.stop));
    let mut exec = spec.exec.clone();
    exec.args.push("--verbose".into());
    assert_ne!(hash, definition_hash(&exec, &spec.restart, &spec.stop));
    let mut stop = spec.stop.clone();
    stop.timeout_seconds += 1;
    assert_ne!(hash, definition_hash(&spec.exec, &spec.restart, &stop));
    Ok(())
}

async fn bot_creation_refusals(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let foreign_agent = t.agent_in(other, "host-x").await?;
    t.bot("farmer", agent.id, &["eu"]).await?;

    let create = |tenant_id, name: &str, agent_id| {
        t.store.create_bot(NewBot { tenant_id, spec: bot_spec(name, agent_id, &["eu"]) }, t.at(2.0))
    };
    assert_err!(create(t.tenant, "farmer", agent.id).await, StoreError::Conflict(_));
    assert_err!(create(t.tenant, "ghost", uuid::Uuid::now_v7()).await, StoreError::Reference(_));
    assert_err!(create(t.tenant, "ghost", foreign_agent.id).await, StoreError::Reference(_));
    // Names are unique per tenant only.
    let elsewhere = create(other, "farmer", foreign_agent.id).await?;
    assert_eq!(elsewhere.name, "farmer");

    // Refused creations left nothing behind (not even tags).
    let page = t.store.list_bots(t.tenant, &BotFilter { limit: 10, ..Default::default() }).await?;
    assert_eq!(names(&page.items), vec!["farmer"]);
    assert_eq!(page.total, 1);
    let tagged = BotFilter { tag: Some("eu".into()), limit: 10, ..Default::default() };
    assert_eq!(t.store.list_bots(t.tenant, &tagged).await?.total, 1);
    Ok(())
}

async fn list_bots_filters(t: Ctx) -> anyhow::Result<()> {
    let a1 = t.agent("host-1").await?;
    let a2 = t.agent("host-2").await?;
    t.bot("farmer-eu-01", a1.id, &["eu", "farm"]).await?;
    t.bot("farmer-eu-02", a1.id, &["eu"]).await?;
    t.bot("Miner_US", a2.id, &["us", "farm"]).await?;
    t.bot("100%-bot", a2.id, &[]).await?;
    t.bot("x_y", a1.id, &[]).await?;
    t.bot("xay", a1.id, &[]).await?;
    t.bot("x\\y", a1.id, &[]).await?;

    let all = list_names(&t, BotFilter::default()).await?;
    assert_eq!(all, vec!["100%-bot", "Miner_US", "farmer-eu-01", "farmer-eu-02", "x\\y", "x_y", "xay"]);

    let by_agent = list_names(&t, BotFilter { agent_id: Some(a2.id), ..Default::default() }).await?;
    assert_eq!(by_agent, vec!["100%-bot", "Miner_US"]);
    let by_tag = list_names(&t, BotFilter { tag: Some("farm".into()), ..Default::default() }).await?;
    assert_eq!(by_tag, vec!["Miner_US", "farmer-eu-01"]);
    let no_such_tag = list_names(&t, BotFilter { tag: Some("fa".into()), ..Default::default() }).await?;
    assert!(no_such_tag.is_empty(), "tags match exactly: {no_such_tag:?}");
    let both = BotFilter { agent_id: Some(a1.id), tag: Some("eu".into()), ..Default::default() };
    assert_eq!(list_names(&t, both).await?, vec!["farmer-eu-01", "farmer-eu-02"]);

    let name = |n: &str| BotFilter { name: Some(n.to_owned()), ..Default::default() };
    assert_eq!(list_names(&t, name("FARMER")).await?, vec!["farmer-eu-01", "farmer-eu-02"], "case-insensitive");
    assert_eq!(list_names(&t, name("miner_us")).await?, vec!["Miner_US"]);
    assert_eq!(list_names(&t, name("eu-0")).await?, vec!["farmer-eu-01", "farmer-eu-02"], "substring");
    // LIKE wildcards in the needle are literal characters.
    assert_eq!(list_names(&t, name("_")).await?, vec!["Miner_US", "x_y"]);
    assert_eq!(list_names(&t, name("%")).await?, vec!["100%-bot"]);
    assert_eq!(list_names(&t, name("x_y")).await?, vec!["x_y"]);
    assert_eq!(list_names(&t, name("\\")).await?, vec!["x\\y"]);
    assert!(list_names(&t, name("nothing")).await?.is_empty());
    Ok(())
}

async fn list_bots_counts_ignore_the_state_filter(t: Ctx) -> anyhow::Result<()> {
    let a1 = t.agent("host-1").await?;
    let a2 = t.agent("host-2").await?;
    let r1 = t.bot("r1", a1.id, &["eu"]).await?;
    let r2 = t.bot("r2", a1.id, &["eu"]).await?;
    let c1 = t.bot("c1", a1.id, &["us"]).await?;
    t.bot("p1", a1.id, &["eu"]).await?;
    let r3 = t.bot("r3", a2.id, &["eu"]).await?;
    for (bot, state) in [(&r1, "running"), (&r2, "running"), (&c1, "crashed"), (&r3, "running")] {
        t.force_bot_state(bot.id, state).await?;
    }

    let filter = BotFilter { agent_id: Some(a1.id), state: Some(BotState::Running), limit: 10, ..Default::default() };
    let page = t.store.list_bots(t.tenant, &filter).await?;
    assert_eq!(names(&page.items), vec!["r1", "r2"]);
    assert!(page.items.iter().all(|b| b.state == BotState::Running));
    assert!(!page.has_more);
    assert_eq!(page.total, 2, "total matches the whole filter");
    // Counts cover a1's bots in every state, and list every state.
    assert_eq!(page.counts.len(), BotState::ALL.len());
    assert_eq!(page.counts[&BotState::Running], 2);
    assert_eq!(page.counts[&BotState::Crashed], 1);
    assert_eq!(page.counts[&BotState::Pending], 1);
    assert_eq!(page.counts.values().sum::<u64>(), 4);

    let tagged = BotFilter { tag: Some("eu".into()), state: Some(BotState::Crashed), limit: 10, ..Default::default() };
    let page = t.store.list_bots(t.tenant, &tagged).await?;
    assert!(page.items.is_empty());
    assert_eq!(page.total, 0);
    assert_eq!(page.counts[&BotState::Running], 3);
    assert_eq!(page.counts[&BotState::Pending], 1);
    assert_eq!(page.counts[&BotState::Crashed], 0);

    let everything = t.store.list_bots(t.tenant, &BotFilter { limit: 10, ..Default::default() }).await?;
    assert_eq!(everything.total, 5);
    assert_eq!(everything.counts.values().sum::<u64>(), 5);
    Ok(())
}

async fn list_bots_paginates_by_name(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    for name in ["e", "b", "d", "a", "c"] {
        t.bot(name, agent.id, &[]).await?;
    }
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let filter = BotFilter { after_name: after.clone(), limit: 2, ..Default::default() };
        let page = t.store.list_bots(t.tenant, &filter).await?;
        assert_eq!(page.total, 5, "the total ignores the cursor");
        pages.push((names(&page.items).join(""), page.has_more));
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|b| b.name.clone());
    }
    assert_eq!(pages, vec![("ab".into(), true), ("cd".into(), true), ("e".into(), false)]);

    // A page that ends exactly at the last bot says there is no more.
    let filter = BotFilter { after_name: Some("c".into()), limit: 2, ..Default::default() };
    let page = t.store.list_bots(t.tenant, &filter).await?;
    assert_eq!((names(&page.items), page.has_more), (vec!["d", "e"], false));
    // limit 0 is read as 1.
    let page = t.store.list_bots(t.tenant, &BotFilter::default()).await?;
    assert_eq!((names(&page.items), page.has_more), (vec!["a"], true));
    Ok(())
}

async fn update_bot_bumps_the_version(t: Ctx) -> anyhow::Result<()> {
    let a1 = t.agent("host-1").await?;
    let a2 = t.agent("host-2").await?;
    let bot = t.bot("farmer", a1.id, &["eu", "farm"]).await?;
    t.force_bot_state(bot.id, "running").await?;

    let mut update = update_of(&bot);
    update.name = "farmer-renamed".into();
    update.agent_id = a2.id;
    update.exec.args = vec!["other.py".into()];
    update.restart.max_restarts = 9;
    update.stop.timeout_seconds = 30;
    update.tags = vec!["us".into()];
    let updated = t.store.update_bot(t.tenant, bot.id, 1, update, t.at(9.0)).await?;
    assert_eq!(updated.version, 2);
    assert_eq!(updated.name, "farmer-renamed");
    assert_eq!(updated.agent_id, a2.id);
    assert_eq!(updated.exec.args, vec!["other.py"]);
    assert_eq!(updated.restart.max_restarts, 9);
    assert_eq!(updated.stop.timeout_seconds, 30);
    assert_eq!(updated.tags, vec!["us"]);
    assert_eq!(updated.updated_at, t.at(9.0));
    assert_eq!(updated.created_at, bot.created_at);
    // What the agent reported and what the user wants are not part of the definition.
    assert_eq!(updated.state, BotState::Running);
    assert_eq!(updated.desired_state, bot.desired_state);
    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?, updated);

    // The tag index follows the new tags.
    assert!(list_names(&t, BotFilter { tag: Some("eu".into()), ..Default::default() }).await?.is_empty());
    assert_eq!(
        list_names(&t, BotFilter { tag: Some("us".into()), ..Default::default() }).await?,
        vec!["farmer-renamed"]
    );

    // An update that changes nothing still bumps the version (every write is a new version).
    let same = t.store.update_bot(t.tenant, bot.id, 2, update_of(&updated), t.at(10.0)).await?;
    assert_eq!(same.version, 3);
    Ok(())
}

async fn update_bot_refusals_change_nothing(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let foreign_agent = t.agent_in(other, "host-x").await?;
    let bot = t.bot("farmer", agent.id, &["eu"]).await?;
    t.bot("miner", agent.id, &[]).await?;
    let bot = t.store.update_bot(t.tenant, bot.id, 1, update_of(&bot), t.at(1.0)).await?;
    assert_eq!(bot.version, 2);

    let changed = || {
        let mut changed = update_of(&bot);
        changed.tags = vec!["changed".into()];
        changed.exec.program = "changed".into();
        changed
    };

    assert_err!(
        t.store.update_bot(t.tenant, bot.id, 1, changed(), t.at(2.0)).await,
        StoreError::VersionMismatch { current: 2 }
    );
    let rename = UpdateBot { name: "miner".into(), ..changed() };
    assert_err!(t.store.update_bot(t.tenant, bot.id, 2, rename, t.at(2.0)).await, StoreError::Conflict(_));
    let unknown_agent = UpdateBot { agent_id: uuid::Uuid::now_v7(), ..changed() };
    assert_err!(t.store.update_bot(t.tenant, bot.id, 2, unknown_agent, t.at(2.0)).await, StoreError::Reference(_));
    let foreign = UpdateBot { agent_id: foreign_agent.id, ..changed() };
    assert_err!(t.store.update_bot(t.tenant, bot.id, 2, foreign, t.at(2.0)).await, StoreError::Reference(_));
    assert_err!(t.store.update_bot(other, bot.id, 2, changed(), t.at(2.0)).await, StoreError::NotFound(_));
    assert_err!(
        t.store.update_bot(t.tenant, uuid::Uuid::now_v7(), 2, changed(), t.at(2.0)).await,
        StoreError::NotFound(_)
    );

    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?, bot, "refused updates change nothing");
    assert_eq!(list_names(&t, BotFilter { tag: Some("eu".into()), ..Default::default() }).await?, vec!["farmer"]);
    assert!(list_names(&t, BotFilter { tag: Some("changed".into()), ..Default::default() }).await?.is_empty());
    Ok(())
}

async fn delete_bot_checks_the_version(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let first = t.bot("first", agent.id, &["eu"]).await?;
    let second = t.bot("second", agent.id, &[]).await?;

    assert_err!(t.store.delete_bot(t.tenant, first.id, Some(7)).await, StoreError::VersionMismatch { current: 1 });
    assert_err!(t.store.delete_bot(other, first.id, None).await, StoreError::NotFound(_));
    assert_eq!(t.store.get_bot(t.tenant, first.id).await?, first, "refused deletes change nothing");

    t.store.delete_bot(t.tenant, first.id, Some(1)).await?;
    assert_err!(t.store.get_bot(t.tenant, first.id).await, StoreError::NotFound(_));
    assert_err!(t.store.delete_bot(t.tenant, first.id, None).await, StoreError::NotFound(_));
    assert!(list_names(&t, BotFilter { tag: Some("eu".into()), ..Default::default() }).await?.is_empty());

    t.store.delete_bot(t.tenant, second.id, None).await?;
    assert!(list_names(&t, BotFilter::default()).await?.is_empty());
    // The name is free again.
    let again = t.bot("first", agent.id, &[]).await?;
    assert_eq!(again.version, 1);
    Ok(())
}

/// The counts kept by triggers (migrations 0006, 0013) against counting the bots themselves (a tag
/// filter makes `list_bots` count them), after every kind of change a bot's state or agent sees.
async fn kept_counts_follow_every_change(t: Ctx) -> anyhow::Result<()> {
    let a1 = t.agent("host-1").await?;
    let a2 = t.agent("host-2").await?;
    let check = |step: &'static str| {
        let t = &t;
        async move {
            let all = BotFilter { tag: Some("all".into()), limit: 1, ..Default::default() };
            let counted = t.store.list_bots(t.tenant, &all).await?.counts;
            let kept = t.store.list_bots(t.tenant, &BotFilter { limit: 1, ..Default::default() }).await?.counts;
            assert_eq!(kept, counted, "after {step}: kept counts differ from the bots");
            assert_eq!(t.store.bot_counts(Some(t.tenant), None).await?, counted, "after {step}");
            // A state filter goes through the counts (no index covers the state): the same bots.
            let every = t.store.list_bots(t.tenant, &BotFilter { limit: 100, ..Default::default() }).await?.items;
            for state in BotState::ALL {
                let filter = BotFilter { state: Some(state), limit: 100, ..Default::default() };
                let listed = t.store.list_bots(t.tenant, &filter).await?.items;
                let expected: Vec<&str> = every.iter().filter(|b| b.state == state).map(|b| b.name.as_str()).collect();
                assert_eq!(names(&listed), expected, "after {step}: the bots {state:?}");
            }
            for agent in [a1.id, a2.id] {
                let counted = t.store.list_bots(t.tenant, &BotFilter { agent_id: Some(agent), ..all.clone() }).await?;
                assert_eq!(t.store.bot_counts(Some(t.tenant), Some(agent)).await?, counted.counts, "after {step}");
            }
            anyhow::Ok(counted)
        }
    };

    let mut bots = Vec::new();
    for i in 0..6 {
        bots.push(t.bot(&format!("b{i}"), if i < 4 { a1.id } else { a2.id }, &["all"]).await?);
    }
    assert_eq!(check("creating").await?[&BotState::Pending], 6);

    let report = |bot: &Bot, state: BotState| BotStateReport {
        bot_id: bot.id,
        state,
        pid: Some(42),
        started_at: None,
        exit_code: None,
        exit_signal: None,
        restart_count: 0,
        error: None,
        at: t.at(5.0),
    };
    for bot in &bots[..3] {
        t.store.report_bot_state(a1.id, &report(bot, BotState::Running)).await?;
    }
    // The same state again changes nothing.
    t.store.report_bot_state(a1.id, &report(&bots[0], BotState::Running)).await?;
    t.store.report_bot_state(a2.id, &report(&bots[4], BotState::Crashed)).await?;
    let counts = check("state reports").await?;
    assert_eq!((counts[&BotState::Running], counts[&BotState::Crashed], counts[&BotState::Pending]), (3, 1, 2));

    // The offline sweep turns every bot of the silent agents `unknown` in one statement.
    let hello =
        AgentHello { hostname: "host-1".into(), os: "linux".into(), arch: "x86_64".into(), version: "test".into() };
    t.store.agent_connected(a1.id, "r1", &hello, t.at(6.0)).await?;
    t.store.mark_silent_agents_offline(t.at(100.0), t.at(100.0)).await?;
    assert_eq!(check("the offline sweep").await?[&BotState::Unknown], 4);

    // A bot moved to another agent moves in the counts too.
    let moved = t.store.get_bot(t.tenant, bots[0].id).await?;
    t.store
        .update_bot(t.tenant, moved.id, moved.version, UpdateBot { agent_id: a2.id, ..update_of(&moved) }, t.at(101.0))
        .await?;
    let per_agent = t.store.bot_counts(Some(t.tenant), Some(a2.id)).await?;
    assert_eq!(per_agent.values().sum::<u64>(), 3);
    check("moving a bot").await?;

    t.store.delete_bot(t.tenant, bots[1].id, None).await?;
    t.store.delete_bot(t.tenant, bots[5].id, None).await?;
    assert_eq!(check("deleting").await?.values().sum::<u64>(), 4);

    // Another tenant's bots never show.
    let other = t.tenant("other").await?;
    let theirs = t.agent_in(other, "their-host").await?;
    t.store
        .create_bot(NewBot { tenant_id: other, spec: crate::bot_spec("theirs", theirs.id, &[]) }, t.at(102.0))
        .await?;
    assert_eq!(check("another tenant's bot").await?.values().sum::<u64>(), 4);
    assert_eq!(t.store.bot_counts(None, None).await?.values().sum::<u64>(), 5, "every tenant: /metrics");
    Ok(())
}

/// The supervisor's drift (desired and observed state disagree, on an online agent, with no
/// command pending or recent) is read through the counts: it must follow state reports and
/// control orders alike, on every agent.
async fn drifting_bots_are_found_through_the_counts(t: Ctx) -> anyhow::Result<()> {
    let hello = |host: &str| AgentHello {
        hostname: host.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        version: "test".into(),
    };
    let (a1, a2, offline) = (t.agent("host-1").await?, t.agent("host-2").await?, t.agent("host-3").await?);
    t.store.agent_connected(a1.id, "r1", &hello("host-1"), t.at(1.0)).await?;
    t.store.agent_connected(a2.id, "r1", &hello("host-2"), t.at(1.0)).await?;
    let mut bots = Vec::new();
    for (i, agent) in [a1.id, a1.id, a2.id, a2.id, offline.id].into_iter().enumerate() {
        bots.push(t.bot(&format!("b{i}"), agent, &[]).await?);
    }
    let drifting = || async {
        let found = t.store.drifting_bots(t.at(50.0), 100).await?;
        anyhow::Ok(found.iter().map(|d| (d.bot_id, d.desired, d.state)).collect::<Vec<_>>())
    };
    assert!(drifting().await?.is_empty(), "pending and meant to be stopped: no drift");

    let report = |bot: &Bot, state: BotState, at: f64| state_report(&t, bot, state, None, at);
    // Running though meant to be stopped: on a1, on a2, and on the agent that is not online.
    t.store.report_bot_state(a1.id, &report(&bots[1], BotState::Running, 2.0)).await?;
    t.store.report_bot_state(a2.id, &report(&bots[3], BotState::Running, 2.0)).await?;
    t.store.report_bot_state(offline.id, &report(&bots[4], BotState::Running, 2.0)).await?;
    let mut expected = vec![
        (bots[1].id, DesiredState::Stopped, BotState::Running),
        (bots[3].id, DesiredState::Stopped, BotState::Running),
    ];
    assert_eq!(drifting().await?, expected);

    // Meant to run (an order), its command long finished, still pending.
    let start = botmox_control_plane::store::Order {
        tenant_id: t.tenant,
        target: botmox_control_plane::store::Target::Bot(bots[2].id),
        kind: botmox_contract::commands::CommandKind::BotStart,
        desired: Some(DesiredState::Running),
        payload: serde_json::json!({}),
        idempotency_key: None,
        created_by: botmox_contract::audit::Actor::supervisor(),
        batch_id: None,
    };
    let placed = t.store.place_orders(&[start], crate::TIMES, t.at(3.0)).await?.pop().expect("one answer")?;
    t.store.claim_commands(a2.id, 10, t.at(3.0)).await?;
    t.store.complete_command(a2.id, placed.command.id, crate::outcome(false), t.at(4.0)).await?;
    expected.insert(1, (bots[2].id, DesiredState::Running, BotState::Pending));
    assert_eq!(drifting().await?, expected, "in id order");

    // Reports that end the drift take the bots out.
    t.store.report_bot_state(a1.id, &report(&bots[1], BotState::Stopped, 5.0)).await?;
    t.store.report_bot_state(a2.id, &report(&bots[2], BotState::Running, 5.0)).await?;
    assert_eq!(drifting().await?, vec![(bots[3].id, DesiredState::Stopped, BotState::Running)]);
    Ok(())
}

/// A read batch of reports is one statement: each bot of the agent takes its report (an exit
/// code not repeated is kept), a bot of another agent is left alone, and the answer has each
/// bot before and after.
async fn state_reports_in_one_statement_touch_only_the_agents_bots(t: Ctx) -> anyhow::Result<()> {
    let (a1, a2) = (t.agent("host-1").await?, t.agent("host-2").await?);
    let (mine, also_mine, theirs) =
        (t.bot("m1", a1.id, &[]).await?, t.bot("m2", a1.id, &[]).await?, t.bot("t1", a2.id, &[]).await?);
    let report =
        |bot: &Bot, state: BotState, exit_code: Option<i32>, at: f64| state_report(&t, bot, state, exit_code, at);
    t.store.report_bot_state(a1.id, &report(&mine, BotState::Crashed, Some(3), 1.0)).await?;
    let batch = [
        report(&mine, BotState::Running, None, 2.0),
        report(&also_mine, BotState::Stopped, Some(0), 2.0),
        report(&theirs, BotState::Running, None, 2.0),
    ];
    let applied = t.store.report_bot_states(a1.id, &batch).await?;
    let (before, after) = (applied.before, applied.after);
    assert_eq!(applied.news, [true, true, false], "another agent's bot takes nothing");
    let mut before_states: Vec<(String, BotState)> = before.iter().map(|b| (b.bot.name.clone(), b.bot.state)).collect();
    before_states.sort();
    assert_eq!(before_states, [("m1".to_owned(), BotState::Crashed), ("m2".to_owned(), BotState::Pending)]);
    let now = t.store.get_bot(t.tenant, mine.id).await?;
    assert_eq!((now.state, now.pid, now.last_exit_code, now.restart_count), (BotState::Running, Some(7), Some(3), 2));
    assert_eq!(now.last_error.as_deref(), Some("why"));
    assert_eq!(after.iter().find(|b| b.id == mine.id), Some(&status(&now)), "the answer is the stored row");
    assert_eq!(t.store.get_bot(t.tenant, also_mine.id).await?.last_exit_code, Some(0));
    assert_eq!(t.store.get_bot(t.tenant, theirs.id).await?.state, BotState::Pending, "not host-1's bot");
    assert_eq!(after.len(), 2);
    Ok(())
}

/// Reports are ordered by the agent's time: one not later than the newest applied for the bot
/// (a repeat, or a replay of the past) changes nothing, alone or in a batch; a later one
/// applies. The `hello` snapshot (dated by the server's clock) does not move that mark; a move
/// to another agent (another clock) clears it.
async fn state_reports_not_newer_than_the_applied_one_change_nothing(t: Ctx) -> anyhow::Result<()> {
    let (a1, a2) = (t.agent("host-1").await?, t.agent("host-2").await?);
    let bot = t.bot("ordered", a1.id, &[]).await?;
    let report = |state: BotState, pid: Option<u32>, exit_code: Option<i32>, at: f64| BotStateReport {
        bot_id: bot.id,
        state,
        pid,
        started_at: None,
        exit_code,
        exit_signal: None,
        restart_count: u32::from(state != BotState::Pending),
        error: (state == BotState::Crashed).then(|| "the process ended: exit code 3".into()),
        at: t.at(at),
    };
    let crashed = report(BotState::Crashed, None, Some(3), 2.0);
    let running = report(BotState::Running, Some(7), None, 3.0);
    assert!(t.store.report_bot_state(a1.id, &crashed).await?.is_some());
    let now = t.store.report_bot_state(a1.id, &running).await?.expect("a later report applies");
    assert_eq!(
        (now.state, now.pid, now.last_exit_code, now.updated_at),
        (BotState::Running, Some(7), Some(3), t.at(3.0))
    );

    // The crash again (a replay), and the running report again with another pid (a repeat
    // is the same report: any difference would be a bug of the agent, still not news).
    assert_eq!(t.store.report_bot_state(a1.id, &crashed).await?, None, "an older report");
    assert_eq!(t.store.report_bot_state(a1.id, &report(BotState::Running, Some(8), None, 3.0)).await?, None);
    assert_eq!(status(&t.store.get_bot(t.tenant, bot.id).await?), now, "nothing moved");

    // A batch: the past, news, a repeat of that news (within a microsecond of it is not later).
    let mut repeat = report(BotState::Starting, None, None, 4.0);
    repeat.at += chrono::Duration::nanoseconds(500);
    let batch = [crashed.clone(), report(BotState::Stopped, None, Some(0), 4.0), repeat];
    let applied = t.store.report_bot_states(a1.id, &batch).await?;
    assert_eq!(applied.news, [false, true, false]);
    assert_eq!(
        applied.before.iter().map(|b| b.reported_at_us).collect::<Vec<_>>(),
        [Some(t.at(3.0).timestamp_micros())]
    );
    let stopped = t.store.get_bot(t.tenant, bot.id).await?;
    assert_eq!((stopped.state, stopped.last_exit_code, stopped.updated_at), (BotState::Stopped, Some(0), t.at(4.0)));
    assert_eq!(applied.after, [status(&stopped)]);
    // Only the past: no write at all.
    let applied = t.store.report_bot_states(a1.id, &[crashed.clone(), running.clone()]).await?;
    assert_eq!((applied.news, applied.after), (vec![false, false], vec![]));

    // The snapshot is dated by the server's clock, far ahead here: it sets the state, not the
    // agent-time mark, so the agent's next report still applies, and its past still does not.
    let snapshot = botmox_contract::protocol::BotSnapshot {
        bot_id: bot.id,
        state: BotState::Running,
        pid: Some(9),
        started_at: None,
        definition_hash: bot_definition_hash(&bot),
    };
    t.store.apply_snapshot(a1.id, &[snapshot], t.at(1_000.0)).await?;
    assert_eq!(t.store.report_bot_state(a1.id, &running).await?, None, "older than the applied mark");
    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?.pid, Some(9), "the snapshot stands");
    let later = t.store.report_bot_state(a1.id, &report(BotState::Running, Some(9), None, 5.0)).await?;
    assert_eq!(later.map(|b| b.updated_at), Some(t.at(5.0)));

    // Moved to another agent: its clock starts from nothing here.
    let mut moved = update_of(&t.store.get_bot(t.tenant, bot.id).await?);
    moved.agent_id = a2.id;
    let moved = t.store.update_bot(t.tenant, bot.id, stopped.version, moved, t.at(6.0)).await?;
    assert_eq!(moved.agent_id, a2.id);
    let first = t.store.report_bot_state(a2.id, &report(BotState::Running, Some(11), None, 1.0)).await?;
    assert_eq!(first.map(|b| (b.state, b.pid)), Some((BotState::Running, Some(11))), "the new agent's first report");
    Ok(())
}

fn bot_definition_hash(bot: &Bot) -> String {
    definition_hash(&bot.exec, &bot.restart, &bot.stop)
}

/// The reports of several connections in one call (the server's group of state reports): each
/// agent's batch takes effect only on its own bots, two batches of one agent about the same bot
/// apply in the order given (the later news wins, the earlier exit code is kept), each batch
/// is answered with its own bots before and after, and the read says which bots have an open
/// incident.
async fn several_agents_reports_share_one_statement(t: Ctx) -> anyhow::Result<()> {
    let (a1, a2) = (t.agent("host-1").await?, t.agent("host-2").await?);
    let (one, two) = (t.bot("one", a1.id, &[]).await?, t.bot("two", a2.id, &[]).await?);
    let report =
        |bot: &Bot, state: BotState, exit_code: Option<i32>, at: f64| state_report(&t, bot, state, exit_code, at);
    t.store
        .open_incident(
            NewIncident {
                tenant_id: t.tenant,
                kind: IncidentKind::BotCrashed,
                severity: Severity::Warning,
                subject: format!("bot:{}", two.id),
                message: "crashed".into(),
                data: serde_json::json!({}),
            },
            t.at(0.5),
        )
        .await?;
    let batches = vec![
        (a1.id, vec![report(&one, BotState::Crashed, Some(3), 1.0), report(&two, BotState::Running, None, 1.0)]),
        (a2.id, vec![report(&two, BotState::Running, None, 1.5)]),
        (a1.id, vec![report(&one, BotState::Running, None, 2.0), report(&one, BotState::Starting, None, 0.5)]),
    ];
    let applied = t.store.report_agents_bot_states(&batches).await?;
    assert_eq!(applied.len(), 3, "one answer per batch");
    assert_eq!(applied[0].news, [true, false], "host-1's report about host-2's bot is no news");
    assert_eq!(applied[1].news, [true]);
    assert_eq!(applied[2].news, [true, false], "older than the batch before it: the past");
    let names = |i: usize| applied[i].before.iter().map(|b| b.bot.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        (names(0), names(1), names(2)),
        (vec!["one".to_owned()], vec!["two".to_owned()], vec!["one".to_owned()])
    );
    assert!(!applied[0].before[0].open_incident);
    assert!(applied[1].before[0].open_incident, "bot two's crash incident is open");

    let (one_now, two_now) = (t.store.get_bot(t.tenant, one.id).await?, t.store.get_bot(t.tenant, two.id).await?);
    assert_eq!((one_now.state, one_now.last_exit_code, one_now.updated_at), (BotState::Running, Some(3), t.at(2.0)));
    assert_eq!((two_now.state, two_now.updated_at), (BotState::Running, t.at(1.5)));
    assert_eq!(applied[0].after, [status(&one_now)]);
    assert_eq!(applied[1].after, [status(&two_now)]);
    assert_eq!(applied[2].after, [status(&one_now)]);
    // Nothing named: an empty answer per batch, and no statement.
    let none = t.store.report_agents_bot_states(&[(a1.id, Vec::new())]).await?;
    assert!(none[0].before.is_empty() && none[0].after.is_empty());
    Ok(())
}

/// An agent's report about `bot` at `at` seconds (pid 7 when running, 2 restarts, error "why").
/// A report as an agent sends it: its times to the microsecond (the bot keeps milliseconds).
fn state_report(t: &Ctx, bot: &Bot, state: BotState, exit_code: Option<i32>, at: f64) -> BotStateReport {
    let micros = chrono::Duration::microseconds(456);
    BotStateReport {
        bot_id: bot.id,
        state,
        pid: (state == BotState::Running).then_some(7),
        started_at: (state == BotState::Running).then(|| t.at(at - 1.0) + micros),
        exit_code,
        exit_signal: None,
        restart_count: 2,
        error: Some("why".into()),
        at: t.at(at) + micros,
    }
}

/// A bot as a state report answers it (its status: no definition).
fn status(bot: &botmox_contract::bots::Bot) -> botmox_contract::events::BotStatus {
    bot.into()
}
