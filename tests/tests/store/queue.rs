//! The command queue's transitions: enqueue, claim, ack, complete, cancel, and every refused
//! transition leaving the row as it was.

use std::time::Duration;

use botmox_contract::{
    audit::{Actor, ActorKind},
    commands::{CommandKind, CommandStatus},
};
use botmox_control_plane::store::{CommandOutcome, Enqueued, StoreError};

use crate::{outcome, Ctx, LEASE_SECS, RUN_TIMEOUT_SECS, TTL_SECS};

conformance!(
    enqueue_creates_a_queued_command,
    enqueue_is_idempotent_per_tenant,
    enqueue_needs_an_agent_of_the_tenant,
    enqueue_refuses_a_revoked_agent,
    claim_takes_the_oldest_first,
    claim_skips_commands_past_their_ttl,
    claim_commands_takes_a_batch,
    ack_starts_the_execution_deadline,
    ack_refusals,
    complete_records_the_outcome,
    complete_repeats_and_refusals,
    cancel_from_every_open_status,
    transition_matrix,
);

async fn enqueue_creates_a_queued_command(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let bot = t.bot("farmer", agent.id, &[]).await?;
    let user = uuid::Uuid::now_v7();
    let mut new = t.command(agent.id);
    new.bot_id = Some(bot.id);
    new.kind = CommandKind::BotRestart;
    new.payload = serde_json::json!({ "definition": { "args": ["a", "b"] }, "n": 1 });
    new.created_by = Actor { kind: ActorKind::User, id: Some(user) };
    new.idempotency_key = Some("restart-1".into());
    new.max_attempts = 5;

    let enqueued = t.store.enqueue_command(new, t.at(1.5)).await?;
    let Enqueued::Created(command) = enqueued else { panic!("expected Created, got {enqueued:?}") };
    assert_eq!(command.id.get_version_num(), 7);
    assert_eq!(command.agent_id, agent.id);
    assert_eq!(command.bot_id, Some(bot.id));
    assert_eq!(command.kind, CommandKind::BotRestart);
    assert_eq!(command.status, CommandStatus::Queued);
    assert_eq!(command.payload, serde_json::json!({ "definition": { "args": ["a", "b"] }, "n": 1 }));
    assert_eq!(command.idempotency_key.as_deref(), Some("restart-1"));
    assert_eq!(command.created_by, Actor { kind: ActorKind::User, id: Some(user) });
    assert_eq!(command.attempt, 0);
    assert_eq!(command.max_attempts, 5);
    assert_eq!(command.lease_expires_at, None);
    assert_eq!(command.expires_at, t.at(1.5 + TTL_SECS));
    assert_eq!(command.created_at, t.at(1.5));
    assert_eq!((command.dispatched_at, command.acked_at, command.finished_at), (None, None, None));
    assert_eq!((command.result.clone(), command.error.clone()), (None, None));
    assert_eq!(t.store.get_command(t.tenant, command.id).await?, command);

    // Every kind round-trips.
    for kind in CommandKind::ALL {
        let mut new = t.command(agent.id);
        new.kind = kind;
        new.created_by = Actor::system();
        let command = t.enqueue_at(new, 2.0).await?;
        let stored = t.store.get_command(t.tenant, command.id).await?;
        assert_eq!((stored.kind, stored.created_by.clone()), (kind, Actor::system()));
    }
    Ok(())
}

async fn enqueue_is_idempotent_per_tenant(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let foreign_agent = t.agent_in(other, "host-x").await?;
    let keyed = |key: &str| {
        let mut new = t.command(agent.id);
        new.idempotency_key = Some(key.to_owned());
        new
    };

    let first = t.enqueue_at(keyed("k1"), 1.0).await?;
    // A repeat, even with a different payload and later, returns the first command as it is now.
    let mut repeat = keyed("k1");
    repeat.payload = serde_json::json!({ "different": true });
    let again = t.store.enqueue_command(repeat, t.at(5.0)).await?;
    assert!(!again.is_created());
    let Enqueued::Existing(existing) = again else { unreachable!() };
    assert_eq!(existing, first);

    t.store.claim_next_command(agent.id, t.at(6.0)).await?;
    let after_claim = t.store.enqueue_command(keyed("k1"), t.at(7.0)).await?.into_command();
    assert_eq!((after_claim.id, after_claim.status), (first.id, CommandStatus::Dispatched));

    // Another key, no key, or the same key in another tenant are new commands.
    let second = t.enqueue_at(keyed("k2"), 8.0).await?;
    assert_ne!(second.id, first.id);
    let unkeyed_a = t.enqueue(agent.id).await?;
    let unkeyed_b = t.enqueue(agent.id).await?;
    assert_ne!(unkeyed_a.id, unkeyed_b.id);
    let mut foreign = crate::new_command(other, foreign_agent.id);
    foreign.idempotency_key = Some("k1".into());
    let foreign = t.enqueue_at(foreign, 9.0).await?;
    assert_ne!(foreign.id, first.id);

    let depth = t.store.queue_depth(Some(t.tenant)).await?;
    assert_eq!(depth.values().sum::<u64>(), 4);
    Ok(())
}

async fn enqueue_needs_an_agent_of_the_tenant(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let foreign_agent = t.agent_in(other, "host-x").await?;
    assert_err!(t.store.enqueue_command(t.command(uuid::Uuid::now_v7()), t.at(1.0)).await, StoreError::Reference(_));
    let mut keyed = t.command(foreign_agent.id);
    keyed.idempotency_key = Some("k".into());
    assert_err!(t.store.enqueue_command(keyed, t.at(1.0)).await, StoreError::Reference(_));
    assert_eq!(t.store.queue_depth(None).await?.values().sum::<u64>(), 0, "nothing was inserted");
    Ok(())
}

/// A revoked agent gets no new commands, alone or in a batch; a repeat of a command it got
/// before revocation still answers with that command.
async fn enqueue_refuses_a_revoked_agent(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-stolen").await?;
    let mut keyed = t.command(agent.id);
    keyed.idempotency_key = Some("before".into());
    let before = t.enqueue_at(keyed.clone(), 1.0).await?;
    t.store.revoke_agent(t.tenant, agent.id, t.at(2.0)).await?;
    let refused = t.store.enqueue_command(t.command(agent.id), t.at(3.0)).await;
    assert_err!(refused, StoreError::Conflict(ref why) if why.contains("revoked"));
    let answers = t.store.enqueue_commands(vec![t.command(agent.id), keyed.clone()], t.at(3.0)).await?;
    let mut answers = answers.into_iter();
    assert_err!(answers.next().expect("an answer"), StoreError::Conflict(_));
    assert!(matches!(answers.next(), Some(Ok(Enqueued::Existing(ref c))) if c.id == before.id));
    assert!(matches!(t.store.enqueue_command(keyed, t.at(4.0)).await?, Enqueued::Existing(c) if c.id == before.id));
    assert_eq!(t.store.queue_depth(None).await?.values().sum::<u64>(), 1, "nothing new was inserted");
    Ok(())
}

async fn claim_takes_the_oldest_first(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let neighbour = t.agent("host-2").await?;
    assert_eq!(t.store.claim_next_command(agent.id, t.at(0.0)).await?, None, "empty queue");

    let a = t.enqueue(agent.id).await?;
    let n = t.enqueue(neighbour.id).await?;
    let b = t.enqueue(agent.id).await?;
    let c = t.enqueue(agent.id).await?;

    let claimed = t.store.claim_next_command(agent.id, t.at(2.0)).await?.expect("a is queued");
    assert_eq!(claimed.id, a.id);
    assert_eq!(claimed.status, CommandStatus::Dispatched);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.dispatched_at, Some(t.at(2.0)));
    assert_eq!(claimed.lease_expires_at, Some(t.at(2.0 + LEASE_SECS)));
    assert_eq!((claimed.acked_at, claimed.finished_at), (None, None));
    // Everything else is as it was enqueued.
    assert_eq!(
        (claimed.payload.clone(), claimed.created_at, claimed.expires_at),
        (a.payload, a.created_at, a.expires_at)
    );
    assert_eq!(t.store.get_command(t.tenant, a.id).await?, claimed);

    let next: Vec<_> = [
        t.store.claim_next_command(agent.id, t.at(3.0)).await?,
        t.store.claim_next_command(agent.id, t.at(3.0)).await?,
        t.store.claim_next_command(agent.id, t.at(3.0)).await?,
    ]
    .into_iter()
    .map(|c| c.map(|c| c.id))
    .collect();
    assert_eq!(next, vec![Some(b.id), Some(c.id), None], "the neighbour's command is not ours");
    assert_eq!(t.store.get_command(t.tenant, n.id).await?.status, CommandStatus::Queued);
    assert_eq!(t.store.claim_next_command(neighbour.id, t.at(3.0)).await?.map(|c| c.id), Some(n.id));
    Ok(())
}

async fn claim_skips_commands_past_their_ttl(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let mut short = t.command(agent.id);
    short.ttl = Duration::from_secs(5);
    let stale = t.enqueue_at(short, 0.0).await?;
    let fresh = t.enqueue(agent.id).await?;

    // At exactly its expiry time a command is no longer dispatchable.
    let claimed = t.store.claim_next_command(agent.id, t.at(5.0)).await?.expect("fresh is queued");
    assert_eq!(claimed.id, fresh.id);
    assert_eq!(t.store.claim_next_command(agent.id, t.at(5.0)).await?, None);
    // The stale one waits for `expire_commands`, unchanged.
    assert_eq!(t.store.get_command(t.tenant, stale.id).await?, stale);
    Ok(())
}

async fn claim_commands_takes_a_batch(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(t.enqueue(agent.id).await?.id);
    }
    let first = t.store.claim_commands(agent.id, 3, t.at(1.0)).await?;
    assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), ids[..3], "oldest first");
    assert!(first.iter().all(|c| c.status == CommandStatus::Dispatched && c.attempt == 1));
    let rest = t.store.claim_commands(agent.id, 10, t.at(1.0)).await?;
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), ids[3..]);
    assert!(t.store.claim_commands(agent.id, 10, t.at(1.0)).await?.is_empty());
    assert!(t.store.claim_commands(agent.id, 0, t.at(1.0)).await?.is_empty(), "limit 0 claims nothing");
    Ok(())
}

async fn ack_starts_the_execution_deadline(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let queued = t.enqueue(agent.id).await?;
    let claimed = t.store.claim_next_command(agent.id, t.at(1.0)).await?.expect("queued");

    let running = t.store.ack_command(agent.id, queued.id, t.at(1.5)).await?;
    assert_eq!(running.status, CommandStatus::Running);
    assert_eq!(running.acked_at, Some(t.at(1.5)));
    assert_eq!(running.lease_expires_at, Some(t.at(1.5 + RUN_TIMEOUT_SECS)));
    assert_eq!((running.attempt, running.dispatched_at), (1, claimed.dispatched_at));
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, running);

    // A repeated ack (the agent did not see our answer) is accepted and changes nothing.
    let again = t.store.ack_command(agent.id, queued.id, t.at(20.0)).await?;
    assert_eq!(again, running);
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, running);
    Ok(())
}

async fn ack_refusals(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let intruder = t.agent("host-2").await?;
    let queued = t.enqueue(agent.id).await?;
    assert_err!(
        t.store.ack_command(agent.id, queued.id, t.at(1.0)).await,
        StoreError::InvalidTransition { id, from: "queued", to: "running" } if id == queued.id
    );
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, queued);

    let dispatched = t.store.claim_next_command(agent.id, t.at(1.0)).await?.expect("queued");
    assert_err!(t.store.ack_command(intruder.id, queued.id, t.at(2.0)).await, StoreError::NotFound(_));
    assert_err!(t.store.ack_command(agent.id, uuid::Uuid::now_v7(), t.at(2.0)).await, StoreError::NotFound(_));
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, dispatched, "another agent's ack changes nothing");
    Ok(())
}

async fn complete_records_the_outcome(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let ok = t.enqueue(agent.id).await?;
    let failing = t.enqueue(agent.id).await?;
    let nulled = t.enqueue(agent.id).await?;
    t.store.claim_commands(agent.id, 3, t.at(1.0)).await?;
    t.store.ack_command(agent.id, ok.id, t.at(2.0)).await?;

    let succeeded = t.store.complete_command(agent.id, ok.id, outcome(true), t.at(3.0)).await?;
    assert_eq!(succeeded.status, CommandStatus::Succeeded);
    assert_eq!(succeeded.result, Some(serde_json::json!({ "pid": 4242 })));
    assert_eq!(succeeded.error, None);
    assert_eq!(succeeded.finished_at, Some(t.at(3.0)));
    assert_eq!(succeeded.lease_expires_at, None);
    assert_eq!(succeeded.acked_at, Some(t.at(2.0)));
    assert_eq!(t.store.get_command(t.tenant, ok.id).await?, succeeded);

    // A result may arrive without an ack (the ack frame was lost).
    let failed = t.store.complete_command(agent.id, failing.id, outcome(false), t.at(4.0)).await?;
    assert_eq!(failed.status, CommandStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("program not found"));
    assert_eq!(failed.result, Some(serde_json::json!({ "exit_code": 2 })));
    assert_eq!((failed.acked_at, failed.finished_at, failed.lease_expires_at), (None, Some(t.at(4.0)), None));

    // A null result is stored as no result.
    let empty = CommandOutcome { ok: true, result: serde_json::Value::Null, error: None, acked: false };
    let done = t.store.complete_command(agent.id, nulled.id, empty, t.at(5.0)).await?;
    assert_eq!((done.status, done.result), (CommandStatus::Succeeded, None));
    Ok(())
}

async fn complete_repeats_and_refusals(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let intruder = t.agent("host-2").await?;
    let queued = t.enqueue(agent.id).await?;
    assert_err!(
        t.store.complete_command(agent.id, queued.id, outcome(true), t.at(1.0)).await,
        StoreError::InvalidTransition { from: "queued", to: "succeeded", .. }
    );
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, queued);

    t.store.claim_next_command(agent.id, t.at(1.0)).await?;
    let running = t.store.ack_command(agent.id, queued.id, t.at(2.0)).await?;
    assert_err!(
        t.store.complete_command(intruder.id, queued.id, outcome(true), t.at(3.0)).await,
        StoreError::NotFound(_)
    );
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, running);

    let done = t.store.complete_command(agent.id, queued.id, outcome(true), t.at(3.0)).await?;
    // The agent's journal answers a redelivery with the same result: accepted, nothing changes.
    let repeat = t.store.complete_command(agent.id, queued.id, outcome(true), t.at(50.0)).await?;
    assert_eq!(repeat, done);
    // A different answer for a finished command is refused.
    assert_err!(
        t.store.complete_command(agent.id, queued.id, outcome(false), t.at(51.0)).await,
        StoreError::InvalidTransition { from: "succeeded", to: "failed", .. }
    );
    assert_err!(
        t.store.ack_command(agent.id, queued.id, t.at(51.0)).await,
        StoreError::InvalidTransition { from: "succeeded", to: "running", .. }
    );
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, done);
    Ok(())
}

async fn cancel_from_every_open_status(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    for (i, status) in
        [CommandStatus::Queued, CommandStatus::Dispatched, CommandStatus::Running].into_iter().enumerate()
    {
        let agent = t.agent(&format!("host-{i}")).await?;
        let command = t.command_in(agent.id, status).await?;
        assert_err!(t.store.cancel_command(other, command.id, t.at(9.0)).await, StoreError::NotFound(_));
        assert_eq!(t.store.get_command(t.tenant, command.id).await?, command, "another tenant changes nothing");

        let cancelled = t.store.cancel_command(t.tenant, command.id, t.at(10.0)).await?;
        assert_eq!(cancelled.status, CommandStatus::Cancelled);
        assert_eq!(cancelled.finished_at, Some(t.at(10.0)));
        assert_eq!(cancelled.lease_expires_at, None);
        assert_eq!((cancelled.attempt, cancelled.acked_at), (command.attempt, command.acked_at));
        assert_eq!(t.store.get_command(t.tenant, command.id).await?, cancelled);

        // Cancelled means gone from the queue and from the agent's reach.
        assert_eq!(t.store.claim_next_command(agent.id, t.at(11.0)).await?, None);
        assert_err!(t.store.ack_command(agent.id, command.id, t.at(11.0)).await, StoreError::InvalidTransition { .. });
        assert_err!(
            t.store.complete_command(agent.id, command.id, outcome(true), t.at(11.0)).await,
            StoreError::InvalidTransition { from: "cancelled", to: "succeeded", .. }
        );
        assert_err!(
            t.store.cancel_command(t.tenant, command.id, t.at(12.0)).await,
            StoreError::InvalidTransition { from: "cancelled", to: "cancelled", .. }
        );
        assert_eq!(t.store.get_command(t.tenant, command.id).await?, cancelled);
    }
    assert_err!(t.store.cancel_command(t.tenant, uuid::Uuid::now_v7(), t.at(1.0)).await, StoreError::NotFound(_));
    Ok(())
}

/// Every status × every agent/user transition: what is allowed moves the command, what is not
/// is refused with the statuses named and leaves the row exactly as it was.
async fn transition_matrix(t: Ctx) -> anyhow::Result<()> {
    use CommandStatus::*;
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Ack,
        Succeed,
        Fail,
        Cancel,
    }
    for op in [Op::Ack, Op::Succeed, Op::Fail, Op::Cancel] {
        for status in CommandStatus::ALL {
            let agent = t.agent(&format!("{op:?}-{status:?}")).await?;
            let before = t.command_in(agent.id, status).await?;
            let now = t.at(100.0);
            let (result, to) = match op {
                Op::Ack => (t.store.ack_command(agent.id, before.id, now).await, Running),
                Op::Succeed => (t.store.complete_command(agent.id, before.id, outcome(true), now).await, Succeeded),
                Op::Fail => (t.store.complete_command(agent.id, before.id, outcome(false), now).await, Failed),
                Op::Cancel => (t.store.cancel_command(t.tenant, before.id, now).await, Cancelled),
            };
            let after = t.store.get_command(t.tenant, before.id).await?;
            let moves = match op {
                Op::Ack => status == Dispatched,
                Op::Succeed | Op::Fail => matches!(status, Dispatched | Running),
                Op::Cancel => matches!(status, Queued | Dispatched | Running),
            };
            // Repeats the agent may send: an ack of a running command, the same result again.
            let repeat = matches!((op, status), (Op::Ack, Running) | (Op::Succeed, Succeeded) | (Op::Fail, Failed));
            let context = format!("{op:?} on {status:?}: {result:?}");
            if moves {
                let moved = result.map_err(|e| anyhow::anyhow!("{context}: {e}"))?;
                assert_eq!(moved.status, to, "{context}");
                assert_eq!(after, moved, "{context}");
            } else if repeat {
                assert_eq!(result.ok().as_ref(), Some(&before), "{context}");
                assert_eq!(after, before, "{context}");
            } else {
                match result {
                    Err(StoreError::InvalidTransition { id, from, to: refused_to }) => {
                        assert_eq!((id, from, refused_to), (before.id, status.as_str(), to.as_str()), "{context}");
                    }
                    other => panic!("{op:?} on {status:?} should be refused, got {other:?}"),
                }
                assert_eq!(after, before, "{context}: a refused transition changed the row");
            }
        }
    }
    Ok(())
}
