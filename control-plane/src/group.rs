//! Group commit: single writes that arrive while a transaction is committing wait for the next
//! one, which writes all of them together — one statement set and one durable commit for a
//! burst of requests, instead of one commit each. Nothing waits on a timer: a write arriving
//! at an idle server is committed at once, and under load the group is whatever queued up
//! during the previous commit (PostgreSQL's own group commit, one level up). Durability is not
//! traded: a caller is answered only after its transaction committed.
//!
//! Used for the queue's single orders (`control::submit`) and for the audit entries of
//! state-changing requests (`auth::policy::authorize`): the two writes every API call makes.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Result, StoreError};

struct Job<In, Out> {
    input: In,
    reply: oneshot::Sender<Result<Out>>,
}

/// The handle callers use; the committing task ends when the last handle is dropped.
pub struct GroupCommit<In, Out> {
    jobs: mpsc::UnboundedSender<Job<In, Out>>,
}

impl<In: Send + 'static, Out: Send + 'static> GroupCommit<In, Out> {
    /// Starts the committing task (needs a Tokio runtime). `commit` writes a group in one
    /// transaction and answers per input, in order; its outer error (nothing written) goes to
    /// every caller of the group as `Unavailable`. `name` labels the group-size metric.
    pub fn start<F, Fut>(name: &'static str, max_group: usize, commit: F) -> Self
    where
        F: Fn(Vec<In>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Result<Out>>>> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(name, max_group.max(1), commit, queue));
        Self { jobs }
    }

    /// Writes one input in the next group transaction.
    pub async fn submit(&self, input: In) -> Result<Out> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { input, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the server is shutting down".into())
}

async fn commit_loop<In, Out, F, Fut>(
    name: &'static str,
    max_group: usize,
    commit: F,
    mut queue: mpsc::UnboundedReceiver<Job<In, Out>>,
) where
    F: Fn(Vec<In>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<Out>>>>,
{
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < max_group {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("botmox_group_commit_size", "group" => name).record(jobs.len() as f64);
        let (inputs, replies): (Vec<In>, Vec<_>) = jobs.into_iter().map(|job| (job.input, job.reply)).unzip();
        let count = replies.len();
        match commit(inputs).await {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for reply in replies {
                    let answer = answers.next().unwrap_or_else(|| Err(StoreError::Corrupt(format!("no answer in the {name} group"))));
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, group = name, writes = count, "a group of writes could not be committed");
                let reason = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
    }
}
