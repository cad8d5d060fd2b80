//! The queue benchmark (SPEC §9: ≥ 3,000 commands/s on SQLite, ≥ 5,000/s on Postgres, full
//! lifecycle enqueue → dispatch → ack → result), through the real store on a fresh database.
//!
//! Producers play the API, round-robin over many agents. Consumers play the agents'
//! connections: each owns a share of the agents, is woken when one of them gets work (as the
//! server's push path is), and claims everything that agent has queued in one call. Two
//! scenarios, each on its own database:
//!
//! - `single`: one command per API request (`enqueue_command`), and every ack and result frame
//!   is its own statement (`ack_command`, `complete_command`): the store's worst case.
//! - `bulk`: bulk actions of `--queue-bulk-size` commands (`enqueue_commands`), and the acks
//!   and results of one agent's burst coalesced (`ack_commands`, `complete_commands`): how the
//!   server behaves when an operator starts a filtered set and the fleet answers.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use botmox_contract::{
    agents::Agent,
    audit::Actor,
    commands::{Command, CommandKind, CommandStatus},
    Id,
};
use botmox_control_plane::store::{CommandOutcome, NewAgent, NewCommand, PoolOptions, Store};
use chrono::Utc;
use tokio::sync::Notify;

use super::{Report, Samples};
use crate::db::{Backend, TestDb};

#[derive(Debug, Clone, clap::Args)]
pub struct QueueOptions {
    /// Commands pushed through the whole lifecycle, per scenario.
    #[arg(long = "queue-commands", default_value_t = 20_000)]
    pub commands: usize,
    /// Agents whose queues are used in parallel.
    #[arg(long = "queue-agents", default_value_t = 100)]
    pub agents: usize,
    /// Tasks enqueueing (concurrent API clients).
    #[arg(long = "queue-producers", default_value_t = 8)]
    pub producers: usize,
    /// Tasks claiming, acking and completing (agent connections; each owns agents).
    #[arg(long = "queue-consumers", default_value_t = 4)]
    pub consumers: usize,
    /// Most commands one claim takes from one agent's queue.
    #[arg(long = "queue-claim-batch", default_value_t = 64)]
    pub claim_batch: u32,
    /// Commands per bulk action in the `bulk` scenario.
    #[arg(long = "queue-bulk-size", default_value_t = 50)]
    pub bulk_size: usize,
    #[arg(long = "queue-scenario", value_enum, default_value_t = Scenario::Both)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// One command per request, one statement per ack/result frame.
    Single,
    /// Bulk actions, acks/results coalesced per agent burst.
    Bulk,
    Both,
}

impl Scenario {
    fn runs(self) -> Vec<Scenario> {
        match self {
            Scenario::Both => vec![Scenario::Single, Scenario::Bulk],
            scenario => vec![scenario],
        }
    }
}

/// A consumer's doorbell: which of its agents got work since it last looked (the server's
/// push path knows the agent a command is for).
#[derive(Default)]
struct Inbox {
    bell: Notify,
    agents: Mutex<BTreeSet<usize>>,
}

impl Inbox {
    fn ring(&self, agent: usize) {
        self.agents.lock().unwrap_or_else(|p| p.into_inner()).insert(agent);
        self.bell.notify_one();
    }

    fn take(&self) -> BTreeSet<usize> {
        std::mem::take(&mut *self.agents.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What one task saw, merged at the end. Latencies are per statement.
#[derive(Default)]
struct Steps {
    enqueue: Samples,
    claim: Samples,
    ack: Samples,
    complete: Samples,
    /// From a command's creation to its claim.
    queue_wait: Samples,
    claimed_per_call: Vec<usize>,
}

impl Steps {
    fn merge(&mut self, other: Steps) {
        self.enqueue.extend(other.enqueue);
        self.claim.extend(other.claim);
        self.ack.extend(other.ack);
        self.complete.extend(other.complete);
        self.queue_wait.extend(other.queue_wait);
        self.claimed_per_call.extend(other.claimed_per_call);
    }

    fn statements(&self) -> usize {
        self.enqueue.len() + self.claim.len() + self.ack.len() + self.complete.len()
    }
}

/// One report per scenario, each measured on a fresh database.
pub async fn run(options: &QueueOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    anyhow::ensure!(options.agents > 0 && options.producers > 0 && options.consumers > 0, "counts must be > 0");
    anyhow::ensure!(options.claim_batch > 0 && options.bulk_size > 0, "batch sizes must be > 0");
    let mut reports = Vec::new();
    for scenario in options.scenario.runs() {
        let db = TestDb::new(backend).await?;
        let store = Store::connect(&db.url, &PoolOptions::default()).await?;
        store.migrate().await?;
        let outcome = measure(&store, options, scenario, backend).await;
        store.close().await;
        db.cleanup().await?;
        reports.push(outcome?);
    }
    Ok(reports)
}

async fn measure(
    store: &Store,
    options: &QueueOptions,
    scenario: Scenario,
    backend: Backend,
) -> anyhow::Result<Report> {
    let tenant = store.ensure_tenant("bench", Utc::now()).await?;
    let mut agents = Vec::with_capacity(options.agents);
    for i in 0..options.agents {
        agents.push(store.create_agent(new_agent(tenant, i), Utc::now()).await?);
    }
    let agents = Arc::new(agents);
    let inboxes: Arc<Vec<Inbox>> = Arc::new((0..options.consumers).map(|_| Inbox::default()).collect());
    let completed = Arc::new(AtomicUsize::new(0));
    let total = options.commands;
    let bulk = if scenario == Scenario::Bulk { options.bulk_size } else { 1 };

    let started = Instant::now();
    let producers: Vec<_> = (0..options.producers)
        .map(|p| {
            let (store, agents, inboxes) = (store.clone(), agents.clone(), inboxes.clone());
            // Producer p takes the requests p, p + P, p + 2P, …; request r enqueues commands
            // r·bulk … r·bulk + bulk - 1 (agent = command number mod agents).
            let requests: Vec<usize> = (p..total.div_ceil(bulk)).step_by(options.producers).collect();
            tokio::spawn(async move {
                let mut steps = Steps::default();
                for request in requests {
                    let numbers = request * bulk..((request + 1) * bulk).min(total);
                    let news: Vec<_> =
                        numbers.clone().map(|n| new_command(tenant, &agents[n % agents.len()])).collect();
                    let t = Instant::now();
                    if scenario == Scenario::Bulk {
                        for answer in store.enqueue_commands(news, Utc::now()).await? {
                            answer?;
                        }
                    } else {
                        for new in news {
                            store.enqueue_command(new, Utc::now()).await?;
                        }
                    }
                    steps.enqueue.record(t.elapsed());
                    for n in numbers {
                        let agent = n % agents.len();
                        inboxes[agent % inboxes.len()].ring(agent);
                    }
                }
                anyhow::Ok(steps)
            })
        })
        .collect();
    let consumers: Vec<_> = (0..options.consumers)
        .map(|c| {
            let (store, agents, inboxes, completed) =
                (store.clone(), agents.clone(), inboxes.clone(), completed.clone());
            let batch = options.claim_batch;
            tokio::spawn(async move {
                let inbox = &inboxes[c];
                let mut steps = Steps::default();
                while completed.load(Ordering::Relaxed) < total {
                    let rung = inbox.take();
                    if rung.is_empty() {
                        // The timeout only matters at the very end of the run.
                        let _ = tokio::time::timeout(Duration::from_millis(20), inbox.bell.notified()).await;
                        continue;
                    }
                    for index in rung {
                        let agent = &agents[index];
                        let t = Instant::now();
                        let claimed = store.claim_commands(agent.id, batch, Utc::now()).await?;
                        steps.claim.record(t.elapsed());
                        steps.claimed_per_call.push(claimed.len());
                        if claimed.len() == batch as usize {
                            inbox.ring(index); // there may be more
                        }
                        for command in &claimed {
                            let waited = Utc::now() - command.created_at;
                            steps.queue_wait.record(waited.to_std().unwrap_or_default());
                        }
                        let n = claimed.len();
                        ack_and_complete(&store, agent.id, claimed, scenario, &mut steps).await?;
                        if n > 0 && completed.fetch_add(n, Ordering::Relaxed) + n == total {
                            inboxes.iter().for_each(|inbox| inbox.bell.notify_one());
                        }
                    }
                }
                anyhow::Ok(steps)
            })
        })
        .collect();

    let mut steps = Steps::default();
    for handle in producers.into_iter().chain(consumers) {
        steps.merge(handle.await.context("benchmark task panicked")??);
    }
    let wall = started.elapsed();

    // Honest numbers only: every command must have gone the whole way, exactly once.
    let depth = store.queue_depth(Some(tenant)).await?;
    anyhow::ensure!(
        depth[&CommandStatus::Succeeded] == total as u64 && depth.values().sum::<u64>() == total as u64,
        "lifecycle incomplete: {depth:?}"
    );

    let rate = total as f64 / wall.as_secs_f64();
    let target = match backend {
        Backend::Sqlite => 3_000.0,
        Backend::Postgres => 5_000.0,
    };
    let verdict = if rate >= target { "met" } else { "NOT MET" };
    let non_empty: Vec<_> = steps.claimed_per_call.iter().copied().filter(|n| *n > 0).collect();
    let mean_claim = non_empty.iter().sum::<usize>() as f64 / non_empty.len().max(1) as f64;
    let (about, enqueue, per_frame) = match scenario {
        Scenario::Single => ("one command per request; one statement per ack/result frame", "enqueue", "per command"),
        _ => ("bulk actions; acks/results coalesced per agent burst", "enqueue (per bulk action)", "per burst"),
    };
    Ok(Report {
        bench: "queue",
        backend,
        about: format!("{} — {about}", super::BENCHES[0].about),
        figures: vec![
            ("throughput".into(), format!("{rate:.0} commands/s (target ≥ {target:.0}/s: {verdict})")),
            ("commands".into(), total.to_string()),
            ("wall time".into(), format!("{:.3} s", wall.as_secs_f64())),
            ("agents".into(), options.agents.to_string()),
            ("producers / consumers".into(), format!("{} / {}", options.producers, options.consumers)),
            ("commands per request".into(), bulk.to_string()),
            (
                "claims".into(),
                format!(
                    "{} calls ({} empty), {mean_claim:.1} commands per non-empty claim (max {})",
                    steps.claim.len(),
                    steps.claim.len() - non_empty.len(),
                    options.claim_batch
                ),
            ),
            ("store statements".into(), format!("{:.2} per command", steps.statements() as f64 / total as f64)),
            ("load average after".into(), super::load_average()),
        ],
        latencies: vec![
            (enqueue.into(), steps.enqueue),
            ("claim (per call)".into(), steps.claim),
            (format!("ack ({per_frame})"), steps.ack),
            (format!("complete ({per_frame})"), steps.complete),
            ("enqueue→claim wait".into(), steps.queue_wait),
        ],
    })
}

/// Acks and completes what one claim returned: frame by frame, or the whole burst at once.
async fn ack_and_complete(
    store: &Store,
    agent_id: Id,
    claimed: Vec<Command>,
    scenario: Scenario,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    if claimed.is_empty() {
        return Ok(());
    }
    if scenario == Scenario::Single {
        for command in claimed {
            let t = Instant::now();
            store.ack_command(agent_id, command.id, Utc::now()).await?;
            steps.ack.record(t.elapsed());
            let t = Instant::now();
            store.complete_command(agent_id, command.id, outcome(), Utc::now()).await?;
            steps.complete.record(t.elapsed());
        }
        return Ok(());
    }
    let ids: Vec<_> = claimed.iter().map(|c| c.id).collect();
    let t = Instant::now();
    for answer in store.ack_commands(agent_id, &ids, Utc::now()).await? {
        answer?;
    }
    steps.ack.record(t.elapsed());
    let outcomes: Vec<_> = ids.iter().map(|id| (*id, outcome())).collect();
    let t = Instant::now();
    for answer in store.complete_commands(agent_id, &outcomes, Utc::now()).await? {
        answer?;
    }
    steps.complete.record(t.elapsed());
    Ok(())
}

fn new_agent(tenant_id: Id, i: usize) -> NewAgent {
    NewAgent {
        tenant_id,
        name: format!("bench-agent-{i:04}"),
        hostname: format!("bench-{i:04}.local"),
        os: "linux".into(),
        arch: "x86_64".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        labels: Default::default(),
        token_hash: None,
    }
}

fn new_command(tenant_id: Id, agent: &Agent) -> NewCommand {
    NewCommand {
        tenant_id,
        agent_id: agent.id,
        bot_id: None,
        kind: CommandKind::BotStart,
        payload: serde_json::json!({ "bot": "bench", "args": ["--realm", "eu"] }),
        idempotency_key: None,
        created_by: Actor::supervisor(),
        ttl: Duration::from_secs(600),
        lease: Duration::from_secs(30),
        run_timeout: Duration::from_secs(300),
        max_attempts: 3,
    }
}

fn outcome() -> CommandOutcome {
    CommandOutcome { ok: true, result: serde_json::json!({ "pid": 4242 }), error: None, acked: false }
}
