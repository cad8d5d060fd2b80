//! The web panel end to end in a real browser: this test owns the real processes (`botmox`
//! behind a relay with a fixed address, so a restarted server keeps the browser's origin; the
//! `botmox-agent` that the panel's pairing dialog tells how to start; the bot processes), and
//! runs `frontend/e2e/panel.mjs`, which drives Debian's Chromium through playwright-core like a
//! user. The script asks for what a browser cannot do with `@@ <request>` lines (start the agent
//! with the command line it read, restart the server); each answer is one line on its stdin.
//!
//! Needs `frontend/node_modules` (`npm ci`), a built panel in the binary, and `/usr/bin/chromium`;
//! so, like the tray's screenshot test, it is left out of the plain `cargo nextest run` and run
//! by `cargo xtask test`'s panel step (`--run-ignored only`), which provides all three.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context as _;
use botmox_e2e::{
    agent::{agent_cli, reap_bots, script, AgentProcess, TcpRelay},
    server::ServerProcess,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

const PASSWORD: &str = "panel-e2e-admin-password";
/// The whole browser session; its steps wait 20 s at most each.
const SESSION: Duration = Duration::from_secs(300);

const BOT: &str = "#!/bin/sh\necho \"hello from bot\"\ni=0\nwhile true; do i=$((i+1)); echo \"tick $i\"; echo \"warn $i\" >&2; sleep 1; done\n";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, npm packages and the built panel: `cargo xtask test` runs it"]
async fn an_operator_session_in_a_real_browser() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let frontend = workspace().join("frontend");
    anyhow::ensure!(
        frontend.join("node_modules/playwright-core").exists(),
        "frontend/node_modules is missing: run `cargo xtask test` (or `cd frontend && npm ci`)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    anyhow::ensure!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `cargo xtask test` installs Debian's chromium (or `apt-get install chromium`)"
    );

    let data = tempfile::tempdir()?;
    let agent_dir = tempfile::tempdir()?;
    let bots = tempfile::tempdir()?;
    let bot = script(bots.path(), "bot.sh", BOT)?;
    let relay = TcpRelay::start(None).await?;
    let data_dir = data.path().to_str().context("temp path")?.to_owned();
    let public_url = relay.url();
    let args = ["--data-dir", data_dir.as_str(), "--heartbeat-interval", "1", "--public-url", public_url.as_str()];
    let env = [("BOTMOX_ADMIN_PASSWORD", PASSWORD)];
    let mut server = Some(ServerProcess::start(&args, &env).await?);
    relay.set_upstream(server.as_ref().map(|s| s.base_url.trim_start_matches("http://").to_owned()));

    let artifacts = workspace().join("target/artifacts/panel");
    let mut node = Command::new("node");
    node.arg("e2e/panel.mjs")
        .current_dir(&frontend)
        .env("PANEL_URL", relay.url())
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("BOT_SCRIPT", &bot)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    println!("server up after {:?} (the first test to run builds the binaries)", started.elapsed());
    let mut child = node.spawn().context("cannot run node (Node.js 20+ is needed for the panel tests)")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut agent: Option<AgentProcess> = None;
    let mut done = false;

    let session = async {
        while let Some(line) = lines.next_line().await? {
            println!("{line}");
            let Some(request) = line.strip_prefix("@@ ") else { continue };
            let answer = match request.split_once(' ').map_or((request, ""), |(a, b)| (a, b)) {
                ("agent", command_line) => {
                    // Exactly what the dialog showed, after the program's name.
                    let args: Vec<&str> = command_line.split_whitespace().skip(1).collect();
                    let (status, stdout, stderr) = agent_cli(agent_dir.path(), &args).await?;
                    anyhow::ensure!(status == Some(0), "`{command_line}` failed: {stdout} {stderr}");
                    agent = Some(AgentProcess::start(agent_dir.path(), &[]).await?);
                    "ok".to_owned()
                }
                ("restart-server", _) => {
                    relay.set_upstream(None);
                    if let Some(old) = server.take() {
                        old.kill().await?;
                    }
                    let restarted = ServerProcess::start(&args, &env).await?;
                    relay.set_upstream(Some(restarted.base_url.trim_start_matches("http://").to_owned()));
                    server = Some(restarted);
                    "ok".to_owned()
                }
                ("done", _) => {
                    done = true;
                    "ok".to_owned()
                }
                (other, _) => format!("unknown request {other}"),
            };
            stdin.write_all(format!("{answer}\n").as_bytes()).await?;
            if done {
                break;
            }
        }
        anyhow::Ok(())
    };
    let outcome = tokio::time::timeout(SESSION, session).await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;

    let teardown = std::time::Instant::now();
    if let Some(agent) = agent {
        agent.terminate().await?;
    }
    println!("agent stopped in {:?}", teardown.elapsed());
    reap_bots(agent_dir.path());
    if let Some(server) = server {
        server.terminate().await?;
    }
    println!("teardown took {:?}", teardown.elapsed());
    outcome.context("the browser session took longer than its bound")??;
    let status = status.context("node did not exit")??;
    anyhow::ensure!(status.success() && done, "the panel e2e script failed ({status}); its output is above");
    Ok(())
}
