//! `panel`: the web panel in a real browser with 10,000 bots on 1,000 simulated agents (SPEC §9:
//! first rows ≤ 1 s, filter → table ≤ 300 ms, state change visible ≤ 250 ms p95, initial JS
//! ≤ 200 KB gzip). The release `botmox` serves the embedded panel; `frontend/e2e/bench.mjs`
//! drives Debian's Chromium (playwright-core) and reports what it timed; the state changes it
//! times are real starts through the API, answered by the simulated agents over WebSockets.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{fleet::Prepared, Report, Samples};
use crate::{
    db::Backend,
    sim::{connect_fleet, AutoMode, SimConfig},
};

#[derive(Debug, Clone, clap::Args)]
pub struct PanelOptions {
    /// Simulated agents (each connected over a WebSocket).
    #[arg(long = "panel-agents", default_value_t = 1000)]
    pub panel_agents: usize,
    /// Bots per agent.
    #[arg(long = "panel-bots-per-agent", default_value_t = 10)]
    pub panel_bots_per_agent: usize,
    /// State changes timed from the API call to the row's new state on screen.
    #[arg(long = "panel-changes", default_value_t = 40)]
    pub panel_changes: usize,
}

pub async fn panel(options: &PanelOptions, backend: Backend) -> anyhow::Result<Vec<Report>> {
    let frontend = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../frontend");
    anyhow::ensure!(
        frontend.join("node_modules/playwright-core").exists() && frontend.join("dist/index.html").exists(),
        "the panel is not built: run `cargo xtask bench` (it builds it) or `cd frontend && npm ci && npm run build`"
    );
    let prepared = Prepared::new(backend).await?;
    let agents = prepared.register_with_bots(options.panel_agents, options.panel_bots_per_agent).await?;
    let bots = agents.len() * options.panel_bots_per_agent;
    let served = prepared.serve().await?;
    let configs = agents
        .iter()
        .map(|(token, _)| {
            SimConfig::new(served.server.base_url.clone(), token.clone())
                .auto(AutoMode::Run)
                .heartbeat(Duration::from_secs(5))
        })
        .collect();
    let sims = connect_fleet(configs, 64).await.map_err(|e| anyhow::anyhow!("connecting the fleet: {e:?}"))?;

    let mut node = tokio::process::Command::new("node");
    node.arg("e2e/bench.mjs")
        .current_dir(&frontend)
        .env("PANEL_URL", served.server.base_url.clone())
        .env("ADMIN_PASSWORD", super::fleet::PASSWORD)
        .env("CHANGES", options.panel_changes.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = node.spawn().context("cannot run node")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut result = None;
    let reading = async {
        while let Some(line) = lines.next_line().await? {
            match line.strip_prefix("@@ result ") {
                Some(json) => result = Some(serde_json::from_str::<Value>(json)?),
                None => println!("  {line}"),
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(300), reading).await.context("the browser run took over 5 min")??;
    let status = child.wait().await?;
    drop(sims);
    served.stop().await?;
    anyhow::ensure!(status.success(), "e2e/bench.mjs failed ({status})");
    let result = result.context("e2e/bench.mjs reported no result")?;

    let millis = |key: &str| result[key].as_f64().map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} ms"));
    let mut changes = Samples::default();
    for v in result["state_change_ms"].as_array().into_iter().flatten().filter_map(Value::as_f64) {
        changes.record(Duration::from_secs_f64(v / 1000.0));
    }
    Ok(vec![Report {
        bench: "panel",
        backend,
        about: format!(
            "{bots} bots on {} simulated agents, Debian Chromium (headless), 1280×860; the name search includes its 250 ms typing pause",
            agents.len()
        ),
        figures: vec![
            ("first rows (load /bots)".into(), millis("first_rows_ms")),
            ("state filter → table".into(), millis("state_filter_ms")),
            ("name search → table".into(), millis("name_filter_ms")),
            ("rows in the DOM".into(), format!("{} of {} bots", result["rows_in_dom"], result["total"])),
            ("initial JS".into(), format!("{:.1} KB gzip", result["initial_js_gzip_bytes"].as_f64().unwrap_or(0.0) / 1024.0)),
            ("target".into(), "first rows ≤ 1 s; filter → table ≤ 300 ms; state change ≤ 250 ms p95; JS ≤ 200 KB".into()),
        ],
        latencies: vec![("API start → row shows running".into(), changes)],
    }])
}
