//! Test kit shared by botmox's integration and end-to-end tests and by the benchmark: fresh
//! databases on both backends, the in-process app, and the real binaries.

pub mod agent;
pub mod app;
pub mod bench;
pub mod db;
pub mod server;
pub mod sim;
pub mod sse;

/// Logs go to the test's output only when `TEST_LOG=1` (tests are quiet otherwise).
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        botmox_control_plane::telemetry::init(botmox_control_plane::config::LogFormat::Text);
    }
}

/// SPEC §3's example bot definition (exec with env and a secret, restart, stop, desired
/// running, two tags), named `name`, on `agent_id`: the body of a `POST /bots`.
pub fn bot_definition(name: &str, agent_id: uuid::Uuid) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "agent_id": agent_id,
        "exec": { "program": "python3", "args": ["bot.py", "--realm", "eu"], "cwd": "/srv/bots",
                  "env": { "MODE": "farm" }, "secret_env": { "ACCOUNT_PASSWORD": "farmer-password" } },
        "restart": { "policy": "on-failure", "max_restarts": 5, "window_seconds": 300,
                     "backoff_initial_ms": 1000, "backoff_max_ms": 60000, "stable_after_seconds": 60 },
        "stop": { "timeout_seconds": 10 },
        "desired_state": "running",
        "tags": ["eu", "farm"]
    })
}

/// Generates one `#[tokio::test]` per backend from `async fn $name(backend: Backend)`, so each
/// scenario is written once and proven on SQLite and on Postgres.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() -> anyhow::Result<()> {
                    super::$name($crate::db::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() -> anyhow::Result<()> {
                    super::$name($crate::db::Backend::Postgres).await
                }
            }
        )+
    };
}
