//! The supervisor, on a manual clock: the test moves time and runs the ticks, so presence,
//! leases, TTLs, reconciliation and incidents are checked without sleeping. Agents speak the
//! real protocol over its long-poll transport (`POST /agent/frames`, `GET /agent/commands/next`).

mod failover;
mod fleet;

use botmox_e2e::app::{send, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// Sends agent frames; panics on a refused one (tests send valid frames unless they say so).
pub async fn frames(app: &TestApp, token: &str, frames: Value) -> anyhow::Result<Value> {
    let (status, outcome) =
        send(app.request_as(Method::POST, "/api/v1/agent/frames", Some(token)).json(&frames)).await?;
    anyhow::ensure!(status == 200, "frames answered {status}: {outcome}");
    anyhow::ensure!(outcome["refused"].as_array().is_some_and(Vec::is_empty), "refused frames: {outcome}");
    Ok(outcome)
}

pub fn hello(bots: Value) -> Value {
    json!({"type": "hello", "protocol": 1, "agent_version": "test", "hostname": "h", "os": "linux", "arch": "x86_64", "bots": bots})
}

/// A `bot_state` frame at `at` — or a microsecond after the bot's previous report built here,
/// if that is not earlier: like a real agent's, a bot's reports are strictly later one after
/// another (the server takes a report not later than the newest it applied for a repeat), and
/// on the manual clock several transitions happen at one instant.
pub fn state_report(bot_id: &str, state: &str, restart_count: u32, at: chrono::DateTime<chrono::Utc>) -> Value {
    static LAST: std::sync::Mutex<std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let at = match last.get(bot_id) {
        Some(&previous) if at <= previous => previous + chrono::Duration::microseconds(1),
        _ => at,
    };
    last.insert(bot_id.to_owned(), at);
    let running = state == "running";
    json!({
        "type": "bot_state", "bot_id": bot_id, "state": state,
        "pid": if running { json!(4242) } else { Value::Null },
        "started_at": if running { json!(at) } else { Value::Null },
        "exit_code": if state == "crashed" { json!(3) } else { Value::Null },
        "exit_signal": null, "restart_count": restart_count, "error": null, "at": at,
    })
}

pub fn heartbeat() -> Value {
    json!({"type": "heartbeat", "metrics": {"cpu_percent": 1.0, "memory_used_bytes": 1, "memory_total_bytes": 2,
        "disk_used_bytes": 1, "disk_total_bytes": 2, "load1": 0.1, "bots_running": 1}})
}

/// The commands leased to the agent now (a poll that does not wait).
pub async fn poll(app: &TestApp, token: &str) -> anyhow::Result<Vec<Value>> {
    let (status, polled) = send(app.request_as(Method::GET, "/api/v1/agent/commands/next?wait=0", Some(token))).await?;
    anyhow::ensure!(status == 200, "poll answered {status}: {polled}");
    Ok(polled["commands"].as_array().cloned().unwrap_or_default())
}

/// Creates a bot on the agent (desired state as given) and returns its id.
pub async fn bot(app: &TestApp, name: &str, agent_id: uuid::Uuid, desired: &str) -> anyhow::Result<String> {
    let body = json!({"name": name, "agent_id": agent_id, "exec": {"program": "true"}, "desired_state": desired,
                      "restart": {"stable_after_seconds": 60}});
    let (status, bot) = send(app.post("/api/v1/bots", &body)).await?;
    anyhow::ensure!(status == 201, "{bot}");
    Ok(bot["id"].as_str().unwrap_or_default().to_owned())
}

pub async fn incidents(app: &TestApp, query: &str) -> anyhow::Result<Vec<Value>> {
    let (status, list) = send(app.get(&format!("/api/v1/incidents?{query}"))).await?;
    anyhow::ensure!(status == 200, "{list}");
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}
