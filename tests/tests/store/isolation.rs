//! Tenant isolation: a second tenant can neither see nor touch the first one's rows.

use botmox_contract::{agents::AgentStatus, auth::Role};
use botmox_control_plane::store::{BotFilter, CommandFilter, NewBot, NewUser, StoreError, UpdateBot};

use crate::{bot_spec, Ctx};

conformance!(a_tenant_sees_nothing_of_another);

async fn a_tenant_sees_nothing_of_another(t: Ctx) -> anyhow::Result<()> {
    let intruder = t.tenant("intruder").await?;
    let agent = t.agent("host-1").await?;
    let bot = t.bot("farmer", agent.id, &["eu"]).await?;
    let user = t
        .store
        .create_user(
            NewUser {
                tenant_id: t.tenant,
                username: "alice".into(),
                email: None,
                password_hash: "hash".into(),
                role: Role::Admin,
            },
            t.t0,
        )
        .await?;
    let mut keyed = t.command(agent.id);
    keyed.idempotency_key = Some("key".into());
    let command = t.enqueue_at(keyed, 0.0).await?;
    let now = t.at(1.0);

    // Reads.
    assert_err!(t.store.get_agent(intruder, agent.id).await, StoreError::NotFound(_));
    assert!(t.store.list_agents(intruder).await?.is_empty());
    assert_err!(t.store.get_bot(intruder, bot.id).await, StoreError::NotFound(_));
    let page = t.store.list_bots(intruder, &BotFilter { limit: 100, ..Default::default() }).await?;
    assert!(page.items.is_empty());
    assert_eq!((page.total, page.counts.values().sum::<u64>()), (0, 0));
    let by_agent = BotFilter { agent_id: Some(agent.id), limit: 100, ..Default::default() };
    assert!(t.store.list_bots(intruder, &by_agent).await?.items.is_empty());
    assert_err!(t.store.get_user(intruder, user.user.id).await, StoreError::NotFound(_));
    assert_eq!(t.store.count_users(intruder).await?, 0);
    assert_err!(t.store.get_command(intruder, command.id).await, StoreError::NotFound(_));
    let (commands, has_more) =
        t.store.list_commands(intruder, &CommandFilter { limit: 100, ..Default::default() }).await?;
    assert!(commands.is_empty() && !has_more);
    let by_agent = CommandFilter { agent_id: Some(agent.id), limit: 100, ..Default::default() };
    assert!(t.store.list_commands(intruder, &by_agent).await?.0.is_empty());
    assert_eq!(t.store.queue_depth(Some(intruder)).await?.values().sum::<u64>(), 0);

    // Writes.
    assert_err!(t.store.set_agent_status(intruder, agent.id, AgentStatus::Revoked, now).await, StoreError::NotFound(_));
    let update = UpdateBot {
        name: "stolen".into(),
        agent_id: agent.id,
        exec: bot.exec.clone(),
        restart: bot.restart.clone(),
        stop: bot.stop.clone(),
        tags: vec![],
    };
    assert_err!(t.store.update_bot(intruder, bot.id, 1, update, now).await, StoreError::NotFound(_));
    assert_err!(t.store.delete_bot(intruder, bot.id, None).await, StoreError::NotFound(_));
    assert_err!(t.store.cancel_command(intruder, command.id, now).await, StoreError::NotFound(_));
    let spec = bot_spec("parasite", agent.id, &[]);
    assert_err!(t.store.create_bot(NewBot { tenant_id: intruder, spec }, now).await, StoreError::Reference(_));
    let mut foreign = crate::new_command(intruder, agent.id);
    foreign.idempotency_key = Some("key".into());
    assert_err!(t.store.enqueue_command(foreign, now).await, StoreError::Reference(_));

    // And the first tenant's rows are exactly as they were.
    assert_eq!(t.store.get_agent(t.tenant, agent.id).await?, agent);
    assert_eq!(t.store.get_bot(t.tenant, bot.id).await?, bot);
    assert_eq!(t.store.get_user(t.tenant, user.user.id).await?.user, user.user);
    assert_eq!(t.store.get_command(t.tenant, command.id).await?, command);
    assert_eq!(t.store.queue_depth(None).await?.values().sum::<u64>(), 1);
    Ok(())
}
