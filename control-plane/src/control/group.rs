//! Group commit: single orders that arrive while a transaction is committing wait for the
//! next one, which places all of them together — one statement set and one durable commit
//! for a burst of clicks or API calls, instead of one commit each. Nothing waits on a timer:
//! an order arriving at an idle server is placed at once, and under load the group is
//! whatever queued up during the previous commit (PostgreSQL's own group commit, one level
//! up). Durability is not traded: an order is answered only after its transaction committed.

use tokio::sync::{mpsc, oneshot};

use crate::{
    clock::Clock,
    store::{Order, Placed, QueueTimes, Result, Store, StoreError},
};

/// Orders placed together at most (a bound on one transaction's size).
const MAX_GROUP: usize = 512;

struct Job {
    order: Order,
    reply: oneshot::Sender<Result<Placed>>,
}

/// The handle every request uses; the committing task ends when the last handle is dropped.
pub struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    /// Starts the committing task (needs a Tokio runtime).
    pub fn start(store: Store, clock: Clock, times: QueueTimes) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(store, clock, times, queue));
        Self { jobs }
    }

    /// Places one order in the next group transaction.
    pub async fn place(&self, order: Order) -> Result<Placed> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { order, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the server is shutting down".into())
}

async fn commit_loop(store: Store, clock: Clock, times: QueueTimes, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let orders: Vec<Order> = jobs.iter().map(|job| job.order.clone()).collect();
        metrics::histogram!("botmox_command_group_size").record(orders.len() as f64);
        match store.place_orders(&orders, times, clock.now()).await {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, orders = jobs.len(), "a group of commands could not be committed");
                let reason = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
    }
}
