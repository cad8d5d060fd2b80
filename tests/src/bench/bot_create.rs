//! `bot-create`: creating bots through the API of the release `botmox` binary (issue 10):
//!
//! - **single**: `--bot-create-clients` concurrent HTTP clients, each creating bots one by one
//!   with `POST /bots` for `--bot-create-seconds` → `throughput <N> creates/s` and latency
//!   percentiles (target ≥ 1,000 creates/s on Postgres with 8 clients);
//! - **import**: one `POST /bots/import` of `--bot-create-import` definitions (half desired
//!   running, so their starts are queued too) → the time it took (target ≤ 3 s for 10,000).
//!
//! The bots are spread round-robin over `--bot-create-agents` agents (registered in the store
//! before the server starts); every definition is the spec's example (exec, env, secret env,
//! restart, stop, two tags).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use botmox_control_plane::store::DEFAULT_TENANT;
use serde_json::{json, Value};

use super::{fleet::Prepared, Report, Samples};
use crate::db::Backend;

/// Field names differ from the other benchmarks' (clap ids must be unique across them all).
#[derive(Debug, Clone, clap::Args)]
pub struct BotCreateOptions {
    /// Concurrent HTTP clients creating bots one by one.
    #[arg(long = "bot-create-clients", default_value_t = 8)]
    pub create_clients: usize,
    /// How long the clients create bots.
    #[arg(long = "bot-create-seconds", default_value_t = 5)]
    pub create_seconds: u64,
    /// Definitions in the one import.
    #[arg(long = "bot-create-import", default_value_t = 10_000)]
    pub import_size: usize,
    /// Agents the bots are spread over.
    #[arg(long = "bot-create-agents", default_value_t = 100)]
    pub create_agents: usize,
}

/// The spec's example definition, named `name`, on `agent`.
fn definition(name: &str, agent: uuid::Uuid, running: bool) -> Value {
    let mut body = crate::bot_definition(name, agent);
    body["desired_state"] = json!(if running { "running" } else { "stopped" });
    body
}

pub async fn run(options: &BotCreateOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let prepared = Prepared::new(backend).await?;
    let agents = {
        let store = prepared.store().await?;
        let tenant_id = store.ensure_tenant(DEFAULT_TENANT, chrono::Utc::now()).await?;
        let mut agents = Vec::with_capacity(options.create_agents.max(1));
        for i in 0..options.create_agents.max(1) {
            agents.push(super::fleet::register_agent(&store, tenant_id, i).await?.1);
        }
        store.close().await;
        agents
    };
    let served = prepared.serve().await?;
    let url = |path: &str| served.server.url(path);

    // Single creates: every client on its own connection, one request at a time.
    let clients = options.create_clients.max(1);
    let deadline = Instant::now() + Duration::from_secs(options.create_seconds.max(1));
    let started = Instant::now();
    let tasks = (0..clients).map(|c| {
        let (client, token, agents) = (served.client.clone(), served.token.clone(), agents.clone());
        let endpoint = url("/api/v1/bots");
        async move {
            let mut latency = Samples::default();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let body =
                    definition(&format!("single-{c:02}-{n:06}"), agents[(n * clients + c) % agents.len()], false);
                let sent = Instant::now();
                let response = client.post(&endpoint).bearer_auth(&token).json(&body).send().await?;
                let status = response.status();
                anyhow::ensure!(status == 201, "a create answered {status}: {}", response.text().await?);
                latency.record(sent.elapsed());
                n += 1;
            }
            anyhow::Ok(latency)
        }
    });
    let mut single = Samples::default();
    for samples in futures::future::try_join_all(tasks).await? {
        single.extend(samples);
    }
    let single_wall = started.elapsed();
    let created = single.len();

    // One import.
    let n = options.import_size;
    let bots: Vec<Value> =
        (0..n).map(|i| definition(&format!("import-{i:06}"), agents[i % agents.len()], i % 2 == 0)).collect();
    let body = serde_json::to_vec(&json!({ "bots": bots }))?;
    let body_bytes = body.len();
    let started = Instant::now();
    let response = served
        .client
        .post(url("/api/v1/bots/import"))
        .bearer_auth(&served.token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.context("the import's answer")?;
    let import_time = started.elapsed();
    anyhow::ensure!(status == 201, "the import answered {status}: {answer}");
    anyhow::ensure!(answer["created"].as_u64() == Some(n as u64), "the import created {}", answer["created"]);

    served.stop().await?;
    let setup = format!("{} agents; each bot the spec's example (env, secret env, 2 tags)", agents.len());
    Ok(vec![
        Report {
            bench: "bot-create single",
            backend,
            about: format!(
                "{clients} concurrent clients, POST /bots one by one for {} s; {setup}",
                options.create_seconds
            ),
            figures: vec![
                ("throughput".into(), format!("{:.0} creates/s", created as f64 / single_wall.as_secs_f64())),
                ("created".into(), format!("{created} in {:.2} s", single_wall.as_secs_f64())),
                ("target".into(), "≥ 1,000 creates/s (Postgres, 8 clients)".into()),
            ],
            latencies: vec![("POST /bots".into(), single)],
        },
        Report {
            bench: "bot-create import",
            backend,
            about: format!("one POST /bots/import of {n} definitions (half desired running: starts queued); {setup}"),
            figures: vec![
                ("import took".into(), format!("{:.2} s", import_time.as_secs_f64())),
                ("rate".into(), format!("{:.0} bots/s", n as f64 / import_time.as_secs_f64())),
                ("body".into(), format!("{:.1} MiB", body_bytes as f64 / (1024.0 * 1024.0))),
                ("starts queued".into(), answer["starts_queued"].to_string()),
                ("target".into(), "≤ 3 s for 10,000".into()),
            ],
            latencies: Vec::new(),
        },
    ])
}
