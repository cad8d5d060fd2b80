//! The supervisor's queue hygiene: TTL expiry, lease re-queue, dead-lettering, deadlines.

use std::time::Duration;

use botmox_contract::commands::CommandStatus;
use botmox_control_plane::store::StoreError;

use crate::{outcome, Ctx, LEASE_SECS, RUN_TIMEOUT_SECS};

conformance!(
    expire_takes_queued_commands_past_their_ttl,
    sweep_requeues_then_dead_letters,
    sweep_times_out_running_commands,
    sweep_reports_everything_in_one_pass,
    a_late_ack_wins_until_the_sweep,
);

async fn expire_takes_queued_commands_past_their_ttl(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let foreign_agent = t.agent_in(other, "host-x").await?;
    let with_ttl = |agent_id, tenant_id, secs| {
        let mut new = crate::new_command(tenant_id, agent_id);
        new.ttl = Duration::from_secs(secs);
        new
    };
    let dispatched = t.enqueue_at(with_ttl(agent.id, t.tenant, 5), 0.0).await?;
    t.store.claim_next_command(agent.id, t.at(1.0)).await?;
    let short = t.enqueue_at(with_ttl(agent.id, t.tenant, 5), 0.0).await?;
    let long = t.enqueue_at(with_ttl(agent.id, t.tenant, 10), 0.0).await?;
    let foreign = t.enqueue_at(with_ttl(foreign_agent.id, other, 5), 0.0).await?;

    assert!(t.store.expire_commands(t.at(4.999)).await?.is_empty());
    let expired = t.store.expire_commands(t.at(5.0)).await?;
    assert_eq!(
        expired.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![short.id, foreign.id],
        "all tenants, oldest first"
    );
    for command in &expired {
        assert_eq!(command.status, CommandStatus::Expired);
        assert_eq!(command.finished_at, Some(t.at(5.0)));
        assert_eq!((command.attempt, command.dispatched_at, command.lease_expires_at), (0, None, None));
    }
    assert_eq!(t.store.get_command(t.tenant, short.id).await?, expired[0]);
    assert_eq!(t.store.get_command(t.tenant, long.id).await?, long);
    assert_eq!(
        t.store.get_command(t.tenant, dispatched.id).await?.status,
        CommandStatus::Dispatched,
        "TTL is for queued"
    );

    assert!(t.store.expire_commands(t.at(5.0)).await?.is_empty(), "nothing expires twice");
    let later = t.store.expire_commands(t.at(60.0)).await?;
    assert_eq!(later.iter().map(|c| c.id).collect::<Vec<_>>(), vec![long.id]);
    assert_eq!(t.store.claim_next_command(agent.id, t.at(0.0)).await?, None, "expired commands are never claimed");
    Ok(())
}

async fn sweep_requeues_then_dead_letters(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let mut new = t.command(agent.id);
    new.max_attempts = 2;
    let queued = t.enqueue_at(new, 0.0).await?;
    t.store.claim_next_command(agent.id, t.at(0.0)).await?;

    let early = t.store.sweep_leases(t.at(LEASE_SECS - 0.001)).await?;
    assert!(early.requeued.is_empty() && early.dead_lettered.is_empty() && early.timed_out.is_empty());

    let sweep = t.store.sweep_leases(t.at(LEASE_SECS)).await?;
    assert!(sweep.dead_lettered.is_empty() && sweep.timed_out.is_empty());
    let [requeued] = sweep.requeued.as_slice() else { panic!("one requeue expected: {sweep:?}") };
    assert_eq!(requeued.id, queued.id);
    assert_eq!(requeued.status, CommandStatus::Queued);
    assert_eq!(requeued.attempt, 1, "the attempt counts dispatches");
    assert_eq!(requeued.lease_expires_at, None);
    assert_eq!(requeued.dispatched_at, Some(t.at(0.0)), "the last dispatch is remembered");
    assert_eq!(requeued.finished_at, None);
    assert_eq!(&t.store.get_command(t.tenant, queued.id).await?, requeued);

    let second = t.store.claim_next_command(agent.id, t.at(31.0)).await?.expect("requeued");
    assert_eq!((second.id, second.attempt), (queued.id, 2));
    assert_eq!(second.lease_expires_at, Some(t.at(31.0 + LEASE_SECS)));
    assert!(t.store.sweep_leases(t.at(60.0)).await?.requeued.is_empty());

    let sweep = t.store.sweep_leases(t.at(31.0 + LEASE_SECS)).await?;
    assert!(sweep.requeued.is_empty() && sweep.timed_out.is_empty());
    let [dead] = sweep.dead_lettered.as_slice() else { panic!("one dead letter expected: {sweep:?}") };
    assert_eq!((dead.id, dead.status, dead.attempt), (queued.id, CommandStatus::DeadLettered, 2));
    assert_eq!((dead.lease_expires_at, dead.finished_at), (None, Some(t.at(31.0 + LEASE_SECS))));
    assert_eq!(&t.store.get_command(t.tenant, queued.id).await?, dead);

    let again = t.store.sweep_leases(t.at(1000.0)).await?;
    assert!(again.requeued.is_empty() && again.dead_lettered.is_empty() && again.timed_out.is_empty());
    assert_eq!(t.store.claim_next_command(agent.id, t.at(59.0)).await?, None);
    Ok(())
}

async fn sweep_times_out_running_commands(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let queued = t.enqueue(agent.id).await?;
    t.store.claim_next_command(agent.id, t.at(0.0)).await?;
    let running = t.store.ack_command(agent.id, queued.id, t.at(1.0)).await?;

    // The lease no longer applies once acked: only the execution deadline does.
    let sweep = t.store.sweep_leases(t.at(1.0 + RUN_TIMEOUT_SECS - 0.001)).await?;
    assert!(sweep.requeued.is_empty() && sweep.dead_lettered.is_empty() && sweep.timed_out.is_empty());
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, running);

    let sweep = t.store.sweep_leases(t.at(1.0 + RUN_TIMEOUT_SECS)).await?;
    let [timed_out] = sweep.timed_out.as_slice() else { panic!("one timeout expected: {sweep:?}") };
    assert_eq!((timed_out.id, timed_out.status), (queued.id, CommandStatus::TimedOut));
    assert_eq!((timed_out.lease_expires_at, timed_out.finished_at), (None, Some(t.at(1.0 + RUN_TIMEOUT_SECS))));
    assert_eq!(timed_out.acked_at, running.acked_at);

    // The result that comes too late is refused and changes nothing.
    assert_err!(
        t.store.complete_command(agent.id, queued.id, outcome(true), t.at(400.0)).await,
        StoreError::InvalidTransition { from: "timed_out", to: "succeeded", .. }
    );
    assert_eq!(&t.store.get_command(t.tenant, queued.id).await?, timed_out);
    Ok(())
}

async fn sweep_reports_everything_in_one_pass(t: Ctx) -> anyhow::Result<()> {
    let requeue_agent = t.agent("requeue").await?;
    let dead_agent = t.agent("dead").await?;
    let timeout_agent = t.agent("timeout").await?;
    let fresh_agent = t.agent("fresh").await?;
    let done_agent = t.agent("done").await?;
    let requeue = t.enqueue(requeue_agent.id).await?;
    let mut one_try = t.command(dead_agent.id);
    one_try.max_attempts = 1;
    let dead = t.enqueue_at(one_try, 0.0).await?;
    let timeout = t.enqueue(timeout_agent.id).await?;
    let done = t.enqueue(done_agent.id).await?;
    for agent in [&requeue_agent, &dead_agent, &timeout_agent, &done_agent] {
        t.store.claim_next_command(agent.id, t.at(0.0)).await?;
    }
    t.store.ack_command(timeout_agent.id, timeout.id, t.at(0.0)).await?;
    let done = t.store.complete_command(done_agent.id, done.id, outcome(true), t.at(1.0)).await?;
    let mut long_ttl = t.command(fresh_agent.id);
    long_ttl.ttl = Duration::from_secs(1000);
    let fresh = t.enqueue_at(long_ttl.clone(), 0.0).await?;
    let waiting = t.enqueue_at(long_ttl, 0.0).await?;
    let claimed = t.store.claim_next_command(fresh_agent.id, t.at(RUN_TIMEOUT_SECS)).await?;
    let fresh = claimed.filter(|c| c.id == fresh.id).expect("the older command is claimed first");

    let sweep = t.store.sweep_leases(t.at(RUN_TIMEOUT_SECS + 10.0)).await?;
    assert_eq!(sweep.requeued.iter().map(|c| c.id).collect::<Vec<_>>(), vec![requeue.id]);
    assert_eq!(sweep.dead_lettered.iter().map(|c| c.id).collect::<Vec<_>>(), vec![dead.id]);
    assert_eq!(sweep.timed_out.iter().map(|c| c.id).collect::<Vec<_>>(), vec![timeout.id]);
    // A lease still running, a queued command and a finished one are left alone.
    assert_eq!(t.store.get_command(t.tenant, fresh.id).await?, fresh);
    assert_eq!(t.store.get_command(t.tenant, waiting.id).await?, waiting);
    assert_eq!(t.store.get_command(t.tenant, done.id).await?, done);
    Ok(())
}

async fn a_late_ack_wins_until_the_sweep(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let first = t.enqueue(agent.id).await?;
    let second = t.enqueue(agent.id).await?;
    t.store.claim_commands(agent.id, 2, t.at(0.0)).await?;

    // The lease has passed but no sweep ran: the agent's ack is still taken.
    let running = t.store.ack_command(agent.id, first.id, t.at(LEASE_SECS + 5.0)).await?;
    assert_eq!(running.status, CommandStatus::Running);
    let sweep = t.store.sweep_leases(t.at(LEASE_SECS + 5.0)).await?;
    assert_eq!(sweep.requeued.iter().map(|c| c.id).collect::<Vec<_>>(), vec![second.id]);
    // After the sweep re-queued it, the old dispatch's ack is refused.
    assert_err!(
        t.store.ack_command(agent.id, second.id, t.at(LEASE_SECS + 6.0)).await,
        StoreError::InvalidTransition { from: "queued", to: "running", .. }
    );
    Ok(())
}
