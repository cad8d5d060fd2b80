//! Group commit: single writes that arrive while a transaction is committing wait for the next
//! one, which writes all of them together — one statement set and one durable commit for a
//! burst of requests, instead of one commit each. Nothing waits on a timer: a write arriving
//! at an idle server is committed at once, and under load the group is whatever queued up
//! during the previous commit (PostgreSQL's own group commit, one level up). Durability is not
//! traded: a caller is answered only after its transaction committed. The one exception to
//! "no timer" is a group no caller waits for ([`GroupCommit::start_paced`]: the audit entries).
//!
//! Used for the queue's single orders (`control::submit`), the audit entries of state-changing
//! requests (`audit::AuditLog`, which does not hold the response for them), and agents'
//! acks, results and bot state reports (`link::session`, from every connection at once). The
//! same mechanism batches one read: the session check of every request made with a session
//! token (`auth::authenticate`), one statement for the requests that arrived together.
//!
//! A group is handed to `commit` as a shared list: if the database refuses the statement, the
//! same inputs are written again one by one, so nothing is copied on the common path.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::store::{Result, StoreError};

struct Job<In, Out> {
    input: In,
    reply: oneshot::Sender<Result<Out>>,
}

/// The handle callers use; the committing task ends when the last handle is dropped.
pub struct GroupCommit<In, Out> {
    jobs: mpsc::UnboundedSender<Job<In, Out>>,
}

impl<In: Clone + Send + Sync + 'static, Out: Send + 'static> GroupCommit<In, Out> {
    /// Starts the committing task (needs a Tokio runtime). `commit` writes a group in one
    /// transaction and answers per input, in order; its outer error (nothing written) goes to
    /// every caller of the group as `Unavailable`. `name` labels the group-size metric.
    pub fn start<F, Fut>(name: &'static str, max_group: usize, commit: F) -> Self
    where
        F: Fn(Arc<Vec<In>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Out>>>> + Send + 'static,
    {
        Self::start_parallel(name, max_group, 1, commit)
    }

    /// As [`GroupCommit::start`], with up to `parallel` groups committing at once (each takes
    /// what queued while the others commit): for writes whose order across callers does not
    /// matter, on a database that runs statements side by side (Postgres; SQLite's one writer
    /// takes them in turn).
    pub fn start_parallel<F, Fut>(name: &'static str, max_group: usize, parallel: usize, commit: F) -> Self
    where
        F: Fn(Arc<Vec<In>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Out>>>> + Send + 'static,
    {
        Self::spawn(name, max_group, parallel, None, commit)
    }

    /// As [`GroupCommit::start`], but a commit starts at most once every `pace`: what queues
    /// meanwhile waits for the next one. Only for writes no caller waits for (the audit
    /// entries, written after the response): the timer makes the groups larger and the
    /// transactions fewer, and on SQLite, whose one writer takes every group's transaction in
    /// turn, each transaction fewer is the writer's time given back to the ones callers wait for.
    /// An input arriving while the group is idle past its pace is still committed at once.
    pub fn start_paced<F, Fut>(name: &'static str, max_group: usize, pace: Duration, commit: F) -> Self
    where
        F: Fn(Arc<Vec<In>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Out>>>> + Send + 'static,
    {
        Self::spawn(name, max_group, 1, Some(pace), commit)
    }

    fn spawn<F, Fut>(name: &'static str, max_group: usize, parallel: usize, pace: Option<Duration>, commit: F) -> Self
    where
        F: Fn(Arc<Vec<In>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Out>>>> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(queue));
        let commit = Arc::new(commit);
        for _ in 0..parallel.max(1) {
            tokio::spawn(commit_loop(name, max_group.max(1), pace, commit.clone(), queue.clone()));
        }
        Self { jobs }
    }

    /// Writes one input in the next group transaction.
    pub async fn submit(&self, input: In) -> Result<Out> {
        self.enqueue(input).await
    }

    /// Queues one input now (inputs are written in the order they were queued) and returns
    /// its answer as a future that borrows nothing: a caller may go on and await it elsewhere.
    pub fn enqueue(&self, input: In) -> impl Future<Output = Result<Out>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { input, reply }).map_err(|_| stopped());
        async move {
            queued?;
            answer.await.map_err(|_| stopped())?
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the server is shutting down".into())
}

async fn commit_loop<In, Out, F, Fut>(
    name: &'static str,
    max_group: usize,
    pace: Option<Duration>,
    commit: Arc<F>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Job<In, Out>>>>,
) where
    In: Clone + Sync,
    F: Fn(Arc<Vec<In>>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<Out>>>>,
{
    loop {
        let jobs = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else { return };
            let mut jobs = vec![first];
            while jobs.len() < max_group {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        let started = tokio::time::Instant::now();
        metrics::histogram!("botmox_group_commit_size", "group" => name).record(jobs.len() as f64);
        let (inputs, replies): (Vec<In>, Vec<_>) = jobs.into_iter().map(|job| (job.input, job.reply)).unzip();
        let inputs = Arc::new(inputs);
        let count = replies.len();
        match commit(inputs.clone()).await {
            Ok(answers) => answer(name, replies, answers),
            // The database refused the statement: one input may be what it refused, so each
            // goes alone and fails only its own caller. (Not for an unreachable database: that
            // would only fail each of them again, slowly.)
            Err(e @ StoreError::Db(sqlx::Error::Database(_))) if count > 1 => {
                tracing::warn!(error = %e, group = name, writes = count, "a group of writes failed: writing them one by one");
                for (input, reply) in inputs.iter().zip(replies) {
                    match commit(Arc::new(vec![input.clone()])).await {
                        Ok(answers) => answer(name, vec![reply], answers),
                        Err(e) => {
                            let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, group = name, "a write could not be committed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
        if let Some(pace) = pace {
            tokio::time::sleep_until(started + pace).await;
        }
    }
}

/// Hands each caller its answer, in order.
fn answer<Out>(name: &str, replies: Vec<oneshot::Sender<Result<Out>>>, answers: Vec<Result<Out>>) {
    let mut answers = answers.into_iter();
    for reply in replies {
        let answer =
            answers.next().unwrap_or_else(|| Err(StoreError::Corrupt(format!("no answer in the {name} group"))));
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    /// What a database says when it refuses a statement (a constraint, a bad value).
    #[derive(Debug)]
    struct Refused;

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("invalid input")
        }
    }

    impl std::error::Error for Refused {}

    impl sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            "invalid input"
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// A "database" that refuses any statement holding a negative number, and counts statements.
    fn doubling(statements: Arc<AtomicUsize>) -> GroupCommit<i32, i32> {
        GroupCommit::start("test", 64, move |inputs: Arc<Vec<i32>>| {
            let statements = statements.clone();
            async move {
                statements.fetch_add(1, Ordering::SeqCst);
                if inputs.iter().any(|n| *n < 0) {
                    return Err(StoreError::Db(sqlx::Error::Database(Box::new(Refused))));
                }
                Ok(inputs.iter().map(|n| Ok(n * 2)).collect())
            }
        })
    }

    #[tokio::test]
    async fn concurrent_writes_share_statements_and_each_gets_its_answer() {
        let statements = Arc::new(AtomicUsize::new(0));
        let group = Arc::new(doubling(statements.clone()));
        let answers = futures::future::join_all((0..200).map(|n| {
            let group = group.clone();
            async move { group.submit(n).await }
        }))
        .await;
        for (n, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.ok(), Some(n as i32 * 2));
        }
        let used = statements.load(Ordering::SeqCst);
        assert!(used < 200, "200 concurrent writes took {used} statements");
    }

    /// Under a paced group, what queues while it waits out its pace joins one commit; an input
    /// arriving after the group was idle for longer than its pace is committed at once.
    #[tokio::test(start_paused = true)]
    async fn a_paced_group_gathers_what_queues_within_its_pace() {
        let pace = std::time::Duration::from_millis(10);
        let commits: Arc<std::sync::Mutex<Vec<(tokio::time::Instant, usize)>>> = Arc::default();
        let seen = commits.clone();
        let group = Arc::new(GroupCommit::start_paced("test", 64, pace, move |inputs: Arc<Vec<i32>>| {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push((tokio::time::Instant::now(), inputs.len()));
            let answers = inputs.iter().map(|n| Ok(*n)).collect();
            async move { Ok(answers) }
        }));
        let start = tokio::time::Instant::now();
        assert_eq!(group.submit(0).await.ok(), Some(0));
        let burst = futures::future::join_all((1..=5).map(|n| group.submit(n))).await;
        assert!(burst.iter().enumerate().all(|(i, a)| a.as_ref().ok() == Some(&(i as i32 + 1))), "{burst:?}");
        tokio::time::sleep(pace * 5).await;
        let late = tokio::time::Instant::now();
        assert_eq!(group.submit(6).await.ok(), Some(6));
        let commits = commits.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sizes: Vec<usize> = commits.iter().map(|(_, n)| *n).collect();
        assert_eq!(sizes, [1, 5, 1], "the burst is one commit");
        assert_eq!(commits[0].0, start, "the first input is committed at once");
        assert!(commits[1].0 >= start + pace, "the burst waited for the pace");
        assert_eq!(commits[2].0, late, "after an idle pace, at once again");
    }

    #[tokio::test]
    async fn an_input_the_database_refuses_fails_only_its_own_caller() {
        let group = Arc::new(doubling(Arc::new(AtomicUsize::new(0))));
        let inputs = [1, 2, -3, 4, 5];
        let answers = futures::future::join_all(inputs.map(|n| {
            let group = group.clone();
            async move { group.submit(n).await }
        }))
        .await;
        for (n, answer) in inputs.into_iter().zip(answers) {
            match answer {
                Ok(doubled) => assert_eq!(doubled, n * 2),
                Err(e) => {
                    assert!(n < 0, "{n} failed: {e}");
                    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
                }
            }
        }
    }
}
