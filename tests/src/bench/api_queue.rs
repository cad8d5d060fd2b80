//! `api-queue`: the command queue through the path a user takes (SPEC §9, issue 10) — the
//! release `botmox` binary, HTTP requests, and `--api-queue-agents` simulated agents on
//! WebSockets that ack, report and answer every command:
//!
//! - **bulk**: one `POST /bots/actions` starting every bot (10,000) → all `succeeded`;
//! - **single**: `--api-queue-clients` concurrent HTTP clients, one `POST /bots/{id}/stop` per
//!   bot → all `succeeded`.
//!
//! Each case prints `throughput <N> commands/s` (commands over the wall time from the first
//! request to the last command's success) and latency percentiles. Completion is read from the
//! database (the count of unfinished commands), polled every 20 ms: the benchmark's watch, not a path it measures. `server CPU` is the
//! CPU time the server process used in the case (from `/proc`), a figure the machine's other
//! load moves far less than wall time.
//!
//! To see where the server spends its time, run with `BENCH_SERVER_LOG=warn,sqlx::query=debug`
//! (the server's log filter) and `BENCH_SERVER_LOG_FILE=<path>` (its output is written there):
//! every statement with its duration.

use std::time::{Duration, Instant};

use botmox_contract::commands::CommandStatus;
use botmox_control_plane::store::{PoolOptions, Store, DEFAULT_TENANT};
use serde_json::json;

use super::{
    fleet::{Prepared, Served},
    Report, Samples,
};
use crate::{
    db::Backend,
    sim::{connect_fleet, AutoMode, SimConfig},
};

/// Field names differ from the other benchmarks' (clap ids must be unique across them all:
/// `agents` is `queue`'s).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiQueueOptions {
    /// Simulated agents connected (WebSocket).
    #[arg(long = "api-queue-agents", default_value_t = 100)]
    pub api_queue_agents: usize,
    /// Bots per agent (the bulk action starts them all; the single case stops each once).
    #[arg(long = "api-queue-bots-per-agent", default_value_t = 100)]
    pub api_queue_bots_per_agent: usize,
    /// Concurrent HTTP clients in the single case.
    #[arg(long = "api-queue-clients", default_value_t = 32)]
    pub api_queue_clients: usize,
}

pub async fn run(options: &ApiQueueOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let prepared = Prepared::new(backend).await?;
    let fleet = prepared.register_with_bots(options.api_queue_agents, options.api_queue_bots_per_agent).await?;
    let bots: Vec<_> = fleet.iter().flat_map(|(_, bots)| bots.iter().copied()).collect();
    let served = prepared.serve().await?;
    let watch = Store::connect(&served.db_url(), &PoolOptions::default()).await?;
    let tenant_id = watch.ensure_tenant(DEFAULT_TENANT, chrono::Utc::now()).await?;
    let configs = fleet
        .iter()
        .map(|(token, _)| {
            SimConfig::new(served.server.base_url.clone(), token.clone())
                .auto(AutoMode::Run)
                .heartbeat(Duration::from_secs(5))
        })
        .collect();
    let sims = connect_fleet(configs, 32).await.map_err(|e| anyhow::anyhow!("connecting the fleet: {e:?}"))?;
    let n = bots.len() as u64;

    // Bulk: one request for every bot.
    let pid = served.server.pid();
    let cpu_before = server_cpu(pid);
    let db_before = database_cpu(backend);
    let started = Instant::now();
    let response = served
        .client
        .post(served.server.url("/api/v1/bots/actions"))
        .bearer_auth(&served.token)
        .json(&json!({ "action": "start", "filter": {} }))
        .send()
        .await?;
    let bulk_response = started.elapsed();
    anyhow::ensure!(response.status() == 202, "the bulk action answered {}", response.status());
    let accepted: serde_json::Value = response.json().await?;
    anyhow::ensure!(accepted["accepted"].as_u64() == Some(n), "the bulk action accepted {}", accepted["accepted"]);
    wait_succeeded(&watch, n).await?;
    let bulk_wall = started.elapsed();
    let bulk_cpu = server_cpu(pid) - cpu_before;
    let bulk_db_cpu = database_cpu(backend) - db_before;
    let batch: uuid::Uuid = accepted["batch_id"].as_str().unwrap_or_default().parse()?;
    let (commands, _) = watch.batch_commands(tenant_id, batch, n as u32).await?;
    let mut bulk_latency = Samples::default();
    for command in &commands {
        if let Some(finished) = command.finished_at {
            bulk_latency.record((finished - command.created_at).to_std().unwrap_or_default());
        }
    }

    // Single: concurrent clients, one stop per bot.
    let clients = options.api_queue_clients.max(1);
    let cpu_before = server_cpu(pid);
    let db_before = database_cpu(backend);
    let started = Instant::now();
    let tasks = (0..clients).map(|c| {
        let mine: Vec<_> = bots.iter().skip(c).step_by(clients).copied().collect();
        let (client, token) = (served.client.clone(), served.token.clone());
        let base = served.server.base_url.clone();
        async move {
            let mut api = Samples::default();
            for bot_id in mine {
                let sent = Instant::now();
                let response =
                    client.post(format!("{base}/api/v1/bots/{bot_id}/stop")).bearer_auth(&token).send().await?;
                anyhow::ensure!(response.status() == 202, "a stop answered {}", response.status());
                api.record(sent.elapsed());
            }
            anyhow::Ok(api)
        }
    });
    let mut single_api = Samples::default();
    for samples in futures::future::try_join_all(tasks).await? {
        single_api.extend(samples);
    }
    let requests_done = started.elapsed();
    wait_succeeded(&watch, 2 * n).await?;
    let single_wall = started.elapsed();
    let single_cpu = server_cpu(pid) - cpu_before;
    let single_db_cpu = database_cpu(backend) - db_before;

    drop(sims);
    watch.close().await;
    served.stop().await?;
    let per_second = |count: u64, wall: Duration| format!("{:.0} commands/s", count as f64 / wall.as_secs_f64());
    let setup = format!("{} agents (WebSocket), {} bots", fleet.len(), n);
    // Postgres works in processes of its own; SQLite inside the server (its CPU is the server's).
    let db_figure = |seconds: f64| match backend {
        Backend::Postgres => vec![("Postgres CPU".to_owned(), cpu_per_command(seconds, n))],
        Backend::Sqlite => Vec::new(),
    };
    Ok(vec![
        Report {
            bench: "api-queue bulk",
            backend,
            about: format!("one POST /bots/actions starting every bot → all succeeded; {setup}"),
            figures: vec![
                ("throughput".into(), per_second(n, bulk_wall)),
                ("all succeeded in".into(), format!("{:.2} s", bulk_wall.as_secs_f64())),
                ("request answered in".into(), super::ms(bulk_response)),
                ("server CPU".into(), cpu_per_command(bulk_cpu, n)),
            ]
            .into_iter()
            .chain(db_figure(bulk_db_cpu))
            .chain([("target".into(), "≥ 10,000 commands/s".into())])
            .collect(),
            latencies: vec![("created → succeeded".into(), bulk_latency)],
        },
        Report {
            bench: "api-queue single",
            backend,
            about: format!("{clients} concurrent clients, one POST /bots/{{id}}/stop per bot → all succeeded; {setup}"),
            figures: vec![
                ("throughput".into(), per_second(n, single_wall)),
                ("requests".into(), format!("{n} in {:.2} s", requests_done.as_secs_f64())),
                ("all succeeded in".into(), format!("{:.2} s", single_wall.as_secs_f64())),
                ("server CPU".into(), cpu_per_command(single_cpu, n)),
            ]
            .into_iter()
            .chain(db_figure(single_db_cpu))
            .chain([("target".into(), "≥ 3,000 commands/s (Postgres), ≥ 4,000 (SQLite)".into())])
            .collect(),
            latencies: vec![("API response".into(), single_api)],
        },
    ])
}

/// CPU seconds the server process has used so far (user + system, from `/proc`; 0 where
/// there is no `/proc`). A figure the machine's other load barely moves, unlike wall time.
fn server_cpu(pid: Option<u32>) -> f64 {
    pid.map_or(0.0, process_cpu)
}

/// CPU seconds every `postgres` process of the machine has used so far (0 on SQLite): the
/// database's share of the work, which the server's own figure leaves out. Processes that
/// ended in between are missed (Postgres keeps its backends for the pool's lifetime).
fn database_cpu(backend: Backend) -> f64 {
    if backend != Backend::Postgres {
        return 0.0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "postgres"))
        .map(process_cpu)
        .sum()
}

fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, so split after its `)`):
    // utime and stime are the 12th and 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_per_command(seconds: f64, n: u64) -> String {
    format!("{seconds:.2} s ({:.0} µs per command)", seconds * 1e6 / n.max(1) as f64)
}

/// Until `n` commands have succeeded (bounded: 120 s); every command of the case exists
/// already. The watch polls the count of unfinished commands, which reads the queue's partial
/// indexes (counting every command by status, ~6 ms on Postgres at 20,000 commands, took a
/// fifth of the database's CPU in the single case), then checks the statuses once.
async fn wait_succeeded(store: &Store, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let unfinished = store.unfinished_commands().await?;
        if unfinished == 0 {
            let depth = store.queue_depth(None).await?;
            let succeeded = depth.get(&CommandStatus::Succeeded).copied().unwrap_or(0);
            anyhow::ensure!(succeeded >= n, "only {succeeded} of {n} commands succeeded: {depth:?}");
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{unfinished} commands were still unfinished after 120 s: {:?}",
            store.queue_depth(None).await?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Served {
    fn db_url(&self) -> botmox_control_plane::store::DatabaseUrl {
        self.db.url.clone()
    }
}
