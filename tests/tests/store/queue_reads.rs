//! Reading the queue: `get_command`, `list_commands`, `queue_depth`, `unfinished_commands`.

use botmox_contract::{
    commands::{Command, CommandStatus},
    Id,
};
use botmox_control_plane::store::{CommandFilter, StoreError};

use crate::Ctx;

conformance!(
    get_command_is_tenant_scoped,
    list_commands_filters_newest_first,
    list_commands_paginates,
    queue_depth_counts_every_status,
    unfinished_commands_counts_queued_and_in_flight
);

fn ids(commands: &[Command]) -> Vec<Id> {
    commands.iter().map(|c| c.id).collect()
}

async fn get_command_is_tenant_scoped(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let command = t.enqueue(agent.id).await?;
    assert_eq!(t.store.get_command(t.tenant, command.id).await?, command);
    assert_err!(t.store.get_command(other, command.id).await, StoreError::NotFound("command"));
    assert_err!(t.store.get_command(t.tenant, uuid::Uuid::now_v7()).await, StoreError::NotFound(_));
    Ok(())
}

async fn list_commands_filters_newest_first(t: Ctx) -> anyhow::Result<()> {
    let a1 = t.agent("host-1").await?;
    let a2 = t.agent("host-2").await?;
    let bot = t.bot("farmer", a1.id, &[]).await?;
    let with_bot = || {
        let mut new = t.command(a1.id);
        new.bot_id = Some(bot.id);
        new
    };
    let c1 = t.enqueue_at(with_bot(), 0.0).await?;
    let c2 = t.enqueue(a2.id).await?;
    let c3 = t.enqueue(a1.id).await?;
    let c4 = t.enqueue_at(with_bot(), 0.0).await?;
    let c5 = t.enqueue(a2.id).await?;
    t.store.claim_next_command(a1.id, t.at(1.0)).await?; // c1
    t.store.claim_next_command(a2.id, t.at(1.0)).await?; // c2
    t.store.cancel_command(t.tenant, c4.id, t.at(1.0)).await?;

    let t = &t;
    let list = |filter: CommandFilter| async move {
        let filter = CommandFilter { limit: 100, ..filter };
        let (items, has_more) = t.store.list_commands(t.tenant, &filter).await?;
        anyhow::ensure!(!has_more, "one page expected");
        Ok::<_, anyhow::Error>(ids(&items))
    };
    assert_eq!(list(CommandFilter::default()).await?, vec![c5.id, c4.id, c3.id, c2.id, c1.id]);
    let (all, _) = t.store.list_commands(t.tenant, &CommandFilter { limit: 100, ..Default::default() }).await?;
    assert_eq!(all[4], t.store.get_command(t.tenant, c1.id).await?, "rows are whole commands");

    let status = |s| CommandFilter { status: Some(s), ..Default::default() };
    assert_eq!(list(status(CommandStatus::Queued)).await?, vec![c5.id, c3.id]);
    assert_eq!(list(status(CommandStatus::Dispatched)).await?, vec![c2.id, c1.id]);
    assert_eq!(list(status(CommandStatus::Cancelled)).await?, vec![c4.id]);
    assert!(list(status(CommandStatus::Succeeded)).await?.is_empty());
    assert_eq!(list(CommandFilter { agent_id: Some(a2.id), ..Default::default() }).await?, vec![c5.id, c2.id]);
    assert_eq!(list(CommandFilter { bot_id: Some(bot.id), ..Default::default() }).await?, vec![c4.id, c1.id]);
    let combined = CommandFilter {
        hidden_kinds: Vec::new(),
        agent_id: Some(a1.id),
        status: Some(CommandStatus::Queued),
        bot_id: None,
        batch_id: None,
        before_id: Some(c5.id),
        limit: 0,
    };
    assert_eq!(list(combined).await?, vec![c3.id]);
    let bot_and_status =
        CommandFilter { bot_id: Some(bot.id), status: Some(CommandStatus::Dispatched), ..Default::default() };
    assert_eq!(list(bot_and_status).await?, vec![c1.id]);
    Ok(())
}

async fn list_commands_paginates(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(t.enqueue(agent.id).await?.id);
    }
    created.reverse(); // newest first

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut before = None;
    loop {
        let filter = CommandFilter { before_id: before, limit: 3, ..Default::default() };
        let (items, has_more) = t.store.list_commands(t.tenant, &filter).await?;
        pages += 1;
        assert!(items.len() <= 3);
        seen.extend(ids(&items));
        if !has_more {
            break;
        }
        before = items.last().map(|c| c.id);
    }
    assert_eq!(seen, created);
    assert_eq!(pages, 3);

    // A page that ends exactly at the oldest command says there is no more.
    let filter = CommandFilter { before_id: Some(created[3]), limit: 3, ..Default::default() };
    let (items, has_more) = t.store.list_commands(t.tenant, &filter).await?;
    assert_eq!((ids(&items), has_more), (created[4..].to_vec(), false));
    // limit 0 is read as 1.
    let (items, has_more) = t.store.list_commands(t.tenant, &CommandFilter::default()).await?;
    assert_eq!((ids(&items), has_more), (vec![created[0]], true));
    Ok(())
}

async fn queue_depth_counts_every_status(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let empty = t.store.queue_depth(None).await?;
    assert_eq!(empty.keys().copied().collect::<Vec<_>>(), CommandStatus::ALL.to_vec(), "every status, zeros included");
    assert!(empty.values().all(|n| *n == 0));

    // One command in every status, each on its own agent; plus two queued in another tenant.
    for status in CommandStatus::ALL {
        let agent = t.agent(&format!("host-{status:?}")).await?;
        t.command_in(agent.id, status).await?;
    }
    let foreign_agent = t.agent_in(other, "host-x").await?;
    t.enqueue_at(crate::new_command(other, foreign_agent.id), 0.0).await?;
    t.enqueue_at(crate::new_command(other, foreign_agent.id), 0.0).await?;

    let mine = t.store.queue_depth(Some(t.tenant)).await?;
    assert_eq!(mine.len(), CommandStatus::ALL.len());
    assert!(mine.values().all(|n| *n == 1), "{mine:?}");
    let theirs = t.store.queue_depth(Some(other)).await?;
    assert_eq!(theirs[&CommandStatus::Queued], 2);
    assert_eq!(theirs.values().sum::<u64>(), 2);
    let all = t.store.queue_depth(None).await?;
    assert_eq!(all[&CommandStatus::Queued], 3);
    assert_eq!(all[&CommandStatus::Running], 1);
    assert_eq!(all.values().sum::<u64>(), 11);
    Ok(())
}

async fn unfinished_commands_counts_queued_and_in_flight(t: Ctx) -> anyhow::Result<()> {
    assert_eq!(t.store.unfinished_commands().await?, 0);
    // One command in every status, each on its own agent, and one queued in another tenant.
    for status in CommandStatus::ALL {
        let agent = t.agent(&format!("host-{status:?}")).await?;
        t.command_in(agent.id, status).await?;
    }
    let other = t.tenant("other").await?;
    let foreign_agent = t.agent_in(other, "host-x").await?;
    t.enqueue_at(crate::new_command(other, foreign_agent.id), 0.0).await?;
    // queued ×2, dispatched, running: what `queue_depth` says of the same statuses.
    let depth = t.store.queue_depth(None).await?;
    let unfinished: u64 =
        [CommandStatus::Queued, CommandStatus::Dispatched, CommandStatus::Running].iter().map(|s| depth[s]).sum();
    assert_eq!(unfinished, 4);
    assert_eq!(t.store.unfinished_commands().await?, unfinished);
    Ok(())
}
