//! Creating many bots at once (`create_bots`, behind `POST /bots/import`): all of them with
//! their tags in one transaction, or none, with the reason of every refused definition.

use botmox_contract::bots::{BotState, DesiredState};
use botmox_control_plane::store::{BotFilter, Refusal};

use crate::{bot_spec, Ctx};

conformance!(create_bots_creates_all_in_order_with_tags, create_bots_refuses_all_and_says_why);

async fn create_bots_creates_all_in_order_with_tags(t: Ctx) -> anyhow::Result<()> {
    let (a1, a2) = (t.agent("host-1").await?, t.agent("host-2").await?);
    // More than one statement's chunk (2,000), so the transaction spans several.
    let specs: Vec<_> = (0..2500)
        .map(|i| {
            let mut spec = bot_spec(&format!("bot-{i:05}"), if i < 2000 { a1.id } else { a2.id }, &["all"]);
            if i % 2 == 0 {
                spec.tags.push("even".into());
                spec.desired_state = DesiredState::Running;
            }
            spec
        })
        .collect();
    let bots = t.store.create_bots(t.tenant, &specs, t.at(3.0)).await?.map_err(|r| anyhow::anyhow!("{r:?}"))?;
    assert_eq!(bots.len(), 2500);
    for (bot, spec) in bots.iter().zip(&specs) {
        assert_eq!((&bot.name, bot.agent_id, &bot.tags), (&spec.name, spec.agent_id, &spec.tags));
        assert_eq!((bot.desired_state, bot.state, bot.version), (spec.desired_state, BotState::Pending, 1));
        assert_eq!((bot.created_at, bot.updated_at), (t.at(3.0), t.at(3.0)));
    }
    assert!(bots.windows(2).all(|w| w[0].id < w[1].id), "ids grow in the order of the definitions");
    for i in [0, 1999, 2000, 2499] {
        assert_eq!(t.store.get_bot(t.tenant, bots[i].id).await?, bots[i], "what a read returns");
    }
    let count = |filter: BotFilter| {
        let t = &t;
        async move { anyhow::Ok(t.store.list_bots(t.tenant, &BotFilter { limit: 1, ..filter }).await?.total) }
    };
    assert_eq!(count(BotFilter::default()).await?, 2500);
    assert_eq!(count(BotFilter { tag: Some("even".into()), ..Default::default() }).await?, 1250);
    assert_eq!(count(BotFilter { tag: Some("all".into()), agent_id: Some(a2.id), ..Default::default() }).await?, 500);
    assert_eq!(t.store.bot_counts(Some(t.tenant), Some(a1.id)).await?[&BotState::Pending], 2000, "kept counts");

    // One bot through the single path: the same statement, the same answer as a read.
    let one = t.bot("single", a2.id, &["x", "y"]).await?;
    assert_eq!(t.store.get_bot(t.tenant, one.id).await?, one);
    assert_eq!(t.store.create_bots(t.tenant, &[], t.at(4.0)).await?.map_err(|r| anyhow::anyhow!("{r:?}"))?, vec![]);
    Ok(())
}

async fn create_bots_refuses_all_and_says_why(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let foreign = t.agent_in(other, "host-x").await?;
    t.bot("taken", agent.id, &["old"]).await?;

    let mut specs: Vec<_> = (0..2100).map(|i| bot_spec(&format!("new-{i:05}"), agent.id, &["new"])).collect();
    specs[5].name = "taken".into();
    specs[2050].agent_id = uuid::Uuid::now_v7();
    specs[2060].agent_id = foreign.id;
    specs[2070].name = "taken".into();
    specs[2070].agent_id = foreign.id;
    let refusals = match t.store.create_bots(t.tenant, &specs, t.at(3.0)).await? {
        Ok(bots) => anyhow::bail!("{} bots created despite refusals", bots.len()),
        Err(refusals) => refusals,
    };
    assert_eq!(
        refusals,
        vec![
            (5, Refusal::NameTaken),
            (2050, Refusal::NoSuchAgent),
            (2060, Refusal::NoSuchAgent),
            (2070, Refusal::NameTaken),
            (2070, Refusal::NoSuchAgent),
        ]
    );
    assert_eq!(t.store.creation_refusals(t.tenant, &specs).await?, refusals, "the same reasons, read only");

    // Nothing was created: not the bots before the refused ones, not their tags.
    let all = t.store.list_bots(t.tenant, &BotFilter { limit: 10, ..Default::default() }).await?;
    assert_eq!(all.items.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), vec!["taken"]);
    let tagged = BotFilter { tag: Some("new".into()), limit: 1, ..Default::default() };
    assert_eq!(t.store.list_bots(t.tenant, &tagged).await?.total, 0);
    assert_eq!(t.store.bot_counts(Some(t.tenant), None).await?[&BotState::Pending], 1);
    Ok(())
}
