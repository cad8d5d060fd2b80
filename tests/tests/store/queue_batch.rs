//! The queue in bulk (bulk enqueue, coalesced acks and results): the same answers as one at
//! a time, in request order.

use std::time::Duration;

use botmox_contract::{
    audit::{Actor, ActorKind},
    commands::{Command, CommandKind, CommandStatus},
    events::{CommandSummary, EVENT_ERROR_CHARS},
};
use botmox_control_plane::store::{CommandOutcome, Enqueued, StoreError};

use crate::{outcome, Ctx, RUN_TIMEOUT_SECS};

conformance!(
    enqueue_commands_answers_each_like_enqueue_command,
    ack_commands_answers_each_like_ack_command,
    complete_commands_answers_each_like_complete_command,
    a_result_with_its_ack_folded_in_stamps_acked_at_once,
    a_batch_answer_carries_the_error_as_events_do,
    acks_and_results_of_many_agents_move_only_each_agents_own_commands,
    claims_of_many_agents_take_each_agents_oldest_up_to_its_limit,
);

async fn enqueue_commands_answers_each_like_enqueue_command(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let agent = t.agent("host-1").await?;
    let foreign_agent = t.agent_in(other, "host-x").await?;
    assert!(t.store.enqueue_commands(Vec::new(), t.at(1.0)).await?.is_empty());
    let keyed = |tenant_id, agent_id, key: &str| {
        let mut new = crate::new_command(tenant_id, agent_id);
        new.idempotency_key = Some(key.to_owned());
        new
    };
    let earlier = t.enqueue_at(keyed(t.tenant, agent.id, "old"), 0.0).await?;

    let mut with_bot = t.command(agent.id);
    with_bot.bot_id = Some(uuid::Uuid::now_v7());
    with_bot.kind = CommandKind::BotStop;
    with_bot.payload = serde_json::json!({ "nested": { "list": [1, 2.5, "x"] } });
    with_bot.created_by = Actor { kind: ActorKind::User, id: Some(uuid::Uuid::now_v7()) };
    with_bot.max_attempts = 7;
    with_bot.ttl = Duration::from_secs(5);
    let batch = vec![
        with_bot.clone(),
        keyed(t.tenant, agent.id, "new"),
        keyed(t.tenant, agent.id, "old"),
        t.command(uuid::Uuid::now_v7()),
        t.command(foreign_agent.id),
        keyed(t.tenant, agent.id, "new"),
        keyed(other, foreign_agent.id, "new"),
        t.command(agent.id),
    ];
    let answers = t.store.enqueue_commands(batch, t.at(2.0)).await?;
    assert_eq!(answers.len(), 8);
    let mut answers = answers.into_iter();
    let mut next = || answers.next().expect("one answer per request");

    let Enqueued::Created(first) = next()? else { panic!("created expected") };
    assert_eq!(first.status, CommandStatus::Queued);
    assert_eq!((first.agent_id, first.bot_id, first.kind), (agent.id, with_bot.bot_id, CommandKind::BotStop));
    assert_eq!(first.payload, with_bot.payload);
    assert_eq!((first.created_by.clone(), first.max_attempts, first.attempt), (with_bot.created_by.clone(), 7, 0));
    assert_eq!((first.created_at, first.expires_at), (t.at(2.0), t.at(7.0)));
    assert_eq!((first.idempotency_key.clone(), first.lease_expires_at), (None, None));
    assert_eq!(t.store.get_command(t.tenant, first.id).await?, first);
    let Enqueued::Created(new_key) = next()? else { panic!("created expected") };
    assert_eq!(new_key.idempotency_key.as_deref(), Some("new"));
    let Enqueued::Existing(old) = next()? else { panic!("existing expected") };
    assert_eq!(old, earlier);
    assert_err!(next(), StoreError::Reference(_));
    assert_err!(next(), StoreError::Reference(_));
    let Enqueued::Existing(repeat) = next()? else { panic!("existing expected") };
    assert_eq!(repeat, new_key, "a key repeated in the batch makes one command");
    let Enqueued::Created(foreign) = next()? else { panic!("created expected: keys are per tenant") };
    assert_eq!(foreign.agent_id, foreign_agent.id);
    let Enqueued::Created(last) = next()? else { panic!("created expected") };

    // Ids (and so the claim order) follow the batch's order.
    assert!(first.id < new_key.id && new_key.id < foreign.id && foreign.id < last.id);
    let claimed = t.store.claim_commands(agent.id, 10, t.at(3.0)).await?;
    let claimed: Vec<_> = claimed.iter().map(|c| c.id).collect();
    assert_eq!(claimed, vec![earlier.id, first.id, new_key.id, last.id]);
    assert_eq!(t.store.queue_depth(None).await?.values().sum::<u64>(), 5);
    Ok(())
}

async fn ack_commands_answers_each_like_ack_command(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let intruder = t.agent("host-2").await?;
    assert!(t.store.ack_commands(agent.id, &[], t.at(1.0)).await?.is_empty());

    let first = t.enqueue(agent.id).await?;
    let second = t.enqueue(agent.id).await?;
    let already = t.enqueue(agent.id).await?;
    t.store.claim_commands(agent.id, 3, t.at(1.0)).await?;
    let already = t.store.ack_command(agent.id, already.id, t.at(1.5)).await?;
    let queued = t.enqueue(agent.id).await?;
    let foreign = t.enqueue(intruder.id).await?;
    t.store.claim_next_command(intruder.id, t.at(1.0)).await?;
    let unknown = uuid::Uuid::now_v7();

    let request = [second.id, queued.id, already.id, foreign.id, first.id, unknown, second.id];
    let answers = t.store.ack_commands(agent.id, &request, t.at(2.0)).await?;
    assert_eq!(answers.len(), request.len());
    let mut answers = answers.into_iter();
    let mut next = || answers.next().expect("one answer per request");

    let second_running = t.store.get_command(t.tenant, second.id).await?;
    assert_eq!(second_running.status, CommandStatus::Running);
    assert_eq!(second_running.acked_at, Some(t.at(2.0)));
    assert_eq!(second_running.lease_expires_at, Some(t.at(2.0 + RUN_TIMEOUT_SECS)));
    assert_eq!(next()?, summary(&second_running), "the answer is the command as its event carries it");
    assert_err!(next(), StoreError::InvalidTransition { from: "queued", to: "running", .. });
    assert_eq!(next()?, summary(&already), "a repeated ack returns the command unchanged");
    assert_err!(next(), StoreError::NotFound(_));
    let first_running = t.store.get_command(t.tenant, first.id).await?;
    assert_eq!((first_running.status, first_running.acked_at), (CommandStatus::Running, Some(t.at(2.0))));
    assert_eq!(next()?, summary(&first_running));
    assert_err!(next(), StoreError::NotFound(_));
    assert_eq!(next()?, summary(&second_running), "a duplicate in the batch gets the same command");

    assert_eq!(t.store.get_command(t.tenant, already.id).await?, already, "repeated: unchanged");
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, queued, "refused: unchanged");
    assert_eq!(t.store.get_command(t.tenant, foreign.id).await?.status, CommandStatus::Dispatched);
    Ok(())
}

async fn complete_commands_answers_each_like_complete_command(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let intruder = t.agent("host-2").await?;
    assert!(t.store.complete_commands(agent.id, &[], t.at(1.0)).await?.is_empty());

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(t.enqueue(agent.id).await?.id);
    }
    let [running, dispatched, done, conflicting] = ids[..] else { unreachable!() };
    t.store.claim_commands(agent.id, 4, t.at(1.0)).await?;
    t.store.ack_command(agent.id, running, t.at(1.5)).await?;
    let done = t.store.complete_command(agent.id, done, outcome(true), t.at(1.5)).await?;
    let queued = t.enqueue(agent.id).await?;
    let foreign = t.enqueue(intruder.id).await?;
    let empty = CommandOutcome { ok: true, result: serde_json::Value::Null, error: None, acked: false };

    let request = vec![
        (running, outcome(true)),
        (dispatched, outcome(false)),
        (done.id, outcome(true)),
        (done.id, outcome(false)),
        (queued.id, outcome(true)),
        (foreign.id, outcome(true)),
        (conflicting, empty),
        (conflicting, outcome(false)),
    ];
    let answers = t.store.complete_commands(agent.id, &request, t.at(2.0)).await?;
    assert_eq!(answers.len(), request.len());
    let mut answers = answers.into_iter();
    let mut next = || answers.next().expect("one answer per request");

    let succeeded = t.store.get_command(t.tenant, running).await?;
    assert_eq!(succeeded.status, CommandStatus::Succeeded);
    assert_eq!(succeeded.result, Some(serde_json::json!({ "pid": 4242 })));
    assert_eq!(
        (succeeded.error.clone(), succeeded.finished_at, succeeded.lease_expires_at),
        (None, Some(t.at(2.0)), None)
    );
    assert_eq!(next()?, summary(&succeeded));
    let failed = t.store.get_command(t.tenant, dispatched).await?;
    assert_eq!(failed.status, CommandStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("program not found"));
    assert_eq!(failed.result, Some(serde_json::json!({ "exit_code": 2 })));
    assert_eq!(next()?, summary(&failed));
    assert_eq!(next()?, summary(&done), "the same answer again returns the command unchanged");
    assert_err!(next(), StoreError::InvalidTransition { from: "succeeded", to: "failed", .. });
    assert_err!(next(), StoreError::InvalidTransition { from: "queued", to: "succeeded", .. });
    assert_err!(next(), StoreError::NotFound(_));
    // Two answers for one command in one batch: the first counts, the second is judged against it.
    let first_answer = t.store.get_command(t.tenant, conflicting).await?;
    assert_eq!((first_answer.status, first_answer.result.clone()), (CommandStatus::Succeeded, None));
    assert_eq!(next()?, summary(&first_answer));
    assert_err!(next(), StoreError::InvalidTransition { from: "succeeded", to: "failed", .. });

    assert_eq!(t.store.get_command(t.tenant, done.id).await?, done);
    assert_eq!(t.store.get_command(t.tenant, queued.id).await?, queued);
    assert_eq!(t.store.get_command(t.tenant, foreign.id).await?.status, CommandStatus::Queued);
    Ok(())
}

/// A failed result's error as the answer carries it: cut to what an event carries (the row
/// keeps it whole).
async fn a_batch_answer_carries_the_error_as_events_do(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let id = t.enqueue(agent.id).await?.id;
    t.store.claim_commands(agent.id, 1, t.at(1.0)).await?;
    let long = "e".repeat(EVENT_ERROR_CHARS + 100);
    let failing = CommandOutcome { ok: false, result: serde_json::Value::Null, error: Some(long.clone()), acked: true };
    let answers = t.store.complete_commands(agent.id, &[(id, failing)], t.at(2.0)).await?;
    let [answer] = <[_; 1]>::try_from(answers).map_err(|_| anyhow::anyhow!("one answer"))?;
    let answer = answer?;
    assert_eq!(answer.error.as_deref().map(str::len), Some(EVENT_ERROR_CHARS));
    let stored = t.store.get_command(t.tenant, id).await?;
    assert_eq!(stored.error, Some(long), "the command keeps its whole error");
    assert_eq!(answer, summary(&stored));
    Ok(())
}

fn summary(command: &Command) -> CommandSummary {
    command.into()
}

/// What the server's grouped statements do with the frames of many connections at once.
async fn acks_and_results_of_many_agents_move_only_each_agents_own_commands(t: Ctx) -> anyhow::Result<()> {
    let (a, b) = (t.agent("host-a").await?, t.agent("host-b").await?);
    let of_a = t.enqueue(a.id).await?;
    let of_b = t.enqueue(b.id).await?;
    t.store.claim_commands(a.id, 1, t.at(1.0)).await?;
    t.store.claim_commands(b.id, 1, t.at(1.0)).await?;

    // b claims a's command first, then each acks its own.
    let acks = [(b.id, of_a.id), (a.id, of_a.id), (b.id, of_b.id)];
    let answers = t.store.ack_agents_commands(&acks, t.at(2.0)).await?;
    assert_eq!(answers.len(), 3);
    let mut answers = answers.into_iter();
    assert_err!(answers.next().expect("an answer"), StoreError::NotFound(_));
    let a_running = answers.next().expect("an answer")?;
    assert_eq!((a_running.id, a_running.agent_id, a_running.status), (of_a.id, a.id, CommandStatus::Running));
    assert_eq!(answers.next().expect("an answer")?.status, CommandStatus::Running);

    let outcomes = [(b.id, of_a.id, outcome(false)), (a.id, of_a.id, outcome(true)), (b.id, of_b.id, outcome(false))];
    let answers = t.store.complete_agents_commands(&outcomes, t.at(3.0)).await?;
    let mut answers = answers.into_iter();
    assert_err!(answers.next().expect("an answer"), StoreError::NotFound(_));
    assert_eq!(answers.next().expect("an answer")?.status, CommandStatus::Succeeded);
    assert_eq!(answers.next().expect("an answer")?.status, CommandStatus::Failed);
    assert_eq!(
        t.store.get_command(t.tenant, of_a.id).await?.status,
        CommandStatus::Succeeded,
        "b's answer changed nothing"
    );
    assert_eq!(t.store.get_command(t.tenant, of_b.id).await?.status, CommandStatus::Failed);
    Ok(())
}

/// What the dispatchers' grouped claim does: per agent, its own oldest queued commands up to
/// its limit (an agent named twice is served in turn), leased, in one call.
async fn claims_of_many_agents_take_each_agents_oldest_up_to_its_limit(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let (a, b, idle) = (t.agent("host-a").await?, t.agent("host-b").await?, t.agent("host-idle").await?);
    let foreign = t.agent_in(other, "host-x").await?;
    let mut of_a = Vec::new();
    for _ in 0..5 {
        of_a.push(t.enqueue(a.id).await?.id);
    }
    let of_b = [t.enqueue(b.id).await?.id, t.enqueue(b.id).await?.id];
    let of_foreign = t.enqueue_at(crate::new_command(other, foreign.id), 0.0).await?.id;
    assert!(t.store.claim_agents_commands(&[], t.at(1.0)).await?.is_empty());

    let claims = [(a.id, 2), (b.id, 10), (idle.id, 4), (a.id, 2), (foreign.id, 1)];
    let answers = t.store.claim_agents_commands(&claims, t.at(1.0)).await?;
    let ids: Vec<Vec<_>> = answers.iter().map(|claimed| claimed.iter().map(|c| c.id).collect()).collect();
    assert_eq!(
        ids,
        vec![of_a[..2].to_vec(), of_b.to_vec(), vec![], of_a[2..4].to_vec(), vec![of_foreign]],
        "each claim takes its agent's oldest, in turn, up to its limit"
    );
    for command in answers.iter().flatten() {
        assert_eq!((command.status, command.attempt), (CommandStatus::Dispatched, 1), "{command:?}");
    }
    assert!(answers[0].iter().chain(&answers[3]).all(|c| c.agent_id == a.id));
    // What no claim asked for stays queued; a second claim takes it and nothing twice.
    assert_eq!(t.store.get_command(t.tenant, of_a[4]).await?.status, CommandStatus::Queued);
    let again = t.store.claim_agents_commands(&[(a.id, 10), (b.id, 10)], t.at(2.0)).await?;
    let again: Vec<Vec<_>> = again.iter().map(|claimed| claimed.iter().map(|c| c.id).collect()).collect();
    assert_eq!(again, vec![vec![of_a[4]], vec![]]);
    Ok(())
}

/// An ack that came in one read batch with its command's result is written by the result:
/// `dispatched → succeeded` with `acked_at` stamped, as the ack would have; an `acked_at`
/// already set stays, and a result without its ack leaves it empty.
async fn a_result_with_its_ack_folded_in_stamps_acked_at_once(t: Ctx) -> anyhow::Result<()> {
    let agent = t.agent("host-1").await?;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(t.enqueue(agent.id).await?.id);
    }
    let [folded, acked_before, bare, single] = ids[..] else { unreachable!() };
    t.store.claim_commands(agent.id, 4, t.at(1.0)).await?;
    t.store.ack_command(agent.id, acked_before, t.at(1.5)).await?;
    let with_ack = CommandOutcome { acked: true, ..outcome(true) };
    let request = vec![(folded, with_ack.clone()), (acked_before, with_ack.clone()), (bare, outcome(true))];
    let answers = t.store.complete_commands(agent.id, &request, t.at(2.0)).await?;
    let answers = <[_; 3]>::try_from(answers).map_err(|_| anyhow::anyhow!("three answers"))?;
    let mut stored = Vec::new();
    for (answer, id) in answers.into_iter().zip([folded, acked_before, bare]) {
        let command = t.store.get_command(t.tenant, id).await?;
        assert_eq!(answer?, summary(&command));
        stored.push(command);
    }
    let [folded, acked_before, bare] = <[_; 3]>::try_from(stored).map_err(|_| anyhow::anyhow!("three commands"))?;
    assert_eq!(
        (folded.status, folded.acked_at, folded.finished_at),
        (CommandStatus::Succeeded, Some(t.at(2.0)), Some(t.at(2.0)))
    );
    assert_eq!(acked_before.acked_at, Some(t.at(1.5)), "an ack already written stays");
    assert_eq!((bare.status, bare.acked_at), (CommandStatus::Succeeded, None));

    let single = t.store.complete_command(agent.id, single, with_ack, t.at(3.0)).await?;
    assert_eq!((single.status, single.acked_at), (CommandStatus::Succeeded, Some(t.at(3.0))));
    Ok(())
}
