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
