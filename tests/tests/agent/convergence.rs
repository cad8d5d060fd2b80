//! Convergence after agent kills (issue 11): what a killed agent had not delivered is still
//! delivered, and what it had started but not written down does not run twice.
//!
//! - A bot crashes and is restarted while the server is unreachable, then the agent is killed
//!   with SIGKILL: the restarted agent sends the transitions it had written down (the crash,
//!   its exit code, the restart), not only the final state of its `hello`.
//! - An agent killed between spawning a bot and recording its pid: the process it left is
//!   found by its environment when the agent starts again and stopped before the bot is
//!   started once more, so one process runs for the bot; another agent's bot is left alone.
//! - An agent killed between a bot's crash and the restart its policy asks for: the bot it
//!   finds `crashed` at its next start is restarted (backoff, then start), not left crashed
//!   (reconciliation leaves crashed bots to the agent's policy).

use botmox_e2e::agent::{bot_leaders, is_running, TcpRelay};

use super::*;

/// Runs until the file `crash-now` appears next to it, then exits 3 — once (it leaves
/// `crashed-once` behind, so its restart runs on).
const CRASH_ONCE: &str = "#!/bin/sh\ndir=$(dirname \"$0\")\necho \"started $$\"\nwhile :; do\n  \
    if [ -e \"$dir/crash-now\" ] && [ ! -e \"$dir/crashed-once\" ]; then\n    \
    touch \"$dir/crashed-once\"; echo crashing; exit 3\n  fi\n  sleep 0.1\ndone\n";

/// The bot's record in the agent's state file, once `done` accepts it (bounded).
async fn wait_record(dir: &Path, bot_id: Uuid, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let read = || -> Option<Value> {
        let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).ok()?).ok()?;
        Some(state["bots"][bot_id.to_string()].clone())
    };
    wait_local(what, || read().is_some_and(|record| done(&record))).await?;
    read().ok_or_else(|| anyhow::anyhow!("the record of {bot_id} vanished"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_a_killed_agent_had_not_delivered_reach_the_server() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let upstream = app.base_url.trim_start_matches("http://").to_owned();
    // The agent reaches the server through a relay the test can cut.
    let relay = TcpRelay::start(Some(upstream.clone())).await?;
    let host = Host::pair(&app, &relay.url()).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let crasher = script(bots.path(), "crash-once.sh", CRASH_ONCE)?;
    let bot = create_bot(&app, &bot_spec("crash-offline", host.agent_id, &crasher, &[])).await?;
    control(&app, bot, "start").await?;
    let first = wait_running(&app, bot).await?;

    // The server becomes unreachable; meanwhile the bot crashes and the agent restarts it.
    relay.set_upstream(None);
    relay.reset();
    agent.stderr.wait_for("disconnected from the server", WAIT).await?;
    std::fs::write(bots.path().join("crash-now"), "")?;
    // The state file is written after the transition is (transitions first, then the state):
    // once it says `running` again, every transition of the crash is on disk.
    let record = wait_record(host.path(), bot, "the bot restarted by its agent", |r| {
        r["state"] == "running" && r["restart_count"] == 1 && r["process"]["pid"].as_u64() != Some(u64::from(first))
    })
    .await?;
    let second = record["process"]["pid"].as_u64().unwrap_or_default() as u32;
    assert_eq!(bot_leaders(&bot.to_string()), [second], "one process for the bot");
    agent.kill().await?;
    let unaware = get(&app, &format!("/api/v1/bots/{bot}")).await?;
    assert!(unaware["restart_count"] == 0 && unaware["last_exit_code"].is_null(), "not told yet: {unaware}");

    // The server is reachable again; a new agent starts: the restart count, the exit code and
    // the crash itself (an incident, opened and resolved) arrive, not just `running`.
    relay.set_upstream(Some(upstream));
    let agent = host.run(&[]).await?;
    let caught_up = wait_bot(&app, bot, "the crash and the restart reported", |b| {
        b["state"] == "running" && b["restart_count"] == 1 && b["last_exit_code"] == 3
    })
    .await?;
    assert_eq!(caught_up["pid"].as_u64(), Some(u64::from(second)), "the re-adopted process: {caught_up}");
    let subject = format!("bot:{bot}");
    // The incident rules follow the state write (the bot may show `running` a moment before).
    for kind in ["bot_crashed", "bot_restarted"] {
        let path = format!("/api/v1/incidents?kind={kind}&subject={subject}");
        wait_until(&app, &path, &format!("a {kind} incident"), |incidents| {
            incidents["items"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await?;
    }
    assert_eq!(bot_leaders(&bot.to_string()), [second], "still one process for the bot");
    // Once confirmed, nothing is owed any more.
    let transitions = host.path().join("transitions.jsonl");
    wait_local("the delivered transitions to leave the agent's file", || {
        std::fs::read_to_string(&transitions).is_ok_and(|text| text.is_empty())
    })
    .await?;

    let stop = control(&app, bot, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

/// A bot process as the agent starts one: its own process group, marked with the bot and the
/// agent dir (the variables the agent sets), output discarded.
fn start_marked(program: &Path, bot_id: Uuid, agent_dir: &Path) -> anyhow::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(program);
    command.env("BOTMOX_BOT_ID", bot_id.to_string()).env("BOTMOX_BOT_AGENT_DIR", agent_dir);
    command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    command.process_group(0).kill_on_drop(true);
    Ok(command.spawn()?)
}

/// A bot running on a killed agent, rewound to an instant of the agent's life: its process
/// group is killed, and its record in the state file (which must want it running) says
/// `state` with no process.
async fn rewind(host: &Host, bot_id: Uuid, pid: u32, state: &str) -> anyhow::Result<Value> {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)?;
    wait_local("the recorded process to be gone", || !is_running(pid)).await?;
    let path = host.path().join("state.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let record = &mut doc["bots"][bot_id.to_string()];
    anyhow::ensure!(record["desired"] == "running", "the bot should run: {record}");
    record["state"] = json!(state);
    record["process"] = Value::Null;
    let record = record.clone();
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    Ok(record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_started_but_not_recorded_before_an_agent_kill_does_not_run_twice() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let bot = create_bot(&app, &bot_spec("unrecorded", host.agent_id, &chatty, &[])).await?;
    control(&app, bot, "start").await?;
    let first = wait_running(&app, bot).await?;
    agent.kill().await?;

    // Rewind to the instant between spawn and record: the state file says `starting` (the
    // intent is written before the spawn) and names no process, and the process that spawn
    // made runs — the one started here by hand, as the agent starts bots.
    rewind(&host, bot, first, "starting").await?;
    let mut orphan = start_marked(&chatty, bot, host.path())?;
    let orphan_pid = orphan.id().unwrap_or_default();
    // A bot of another agent on this host (another agent dir) is none of this agent's business.
    let elsewhere = tempfile::tempdir()?;
    let mut foreign = start_marked(&chatty, Uuid::now_v7(), elsewhere.path())?;
    let foreign_pid = foreign.id().unwrap_or_default();
    wait_local("the hand-started bots to run", || bot_leaders(&bot.to_string()) == [orphan_pid]).await?;

    let agent = host.run(&[]).await?;
    // The orphan was stopped politely (SIGTERM to its group), before the bot started again.
    let ended = tokio::time::timeout(WAIT, orphan.wait()).await??;
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&ended), Some(15), "{ended:?}");
    agent.stderr.wait_for("no record tracks", WAIT).await?;
    let pid = wait_running(&app, bot).await?;
    assert_ne!(pid, orphan_pid);
    assert_eq!(bot_leaders(&bot.to_string()), [pid], "exactly one process for the bot");
    assert!(is_running(foreign_pid), "another agent's bot is left alone");

    foreign.start_kill()?;
    foreign.wait().await?;
    let stop = control(&app, bot, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    assert!(bot_leaders(&bot.to_string()).is_empty());
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_crashed_but_not_yet_restarted_before_an_agent_kill_is_restarted() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let chatty = script(bots.path(), "chatty.sh", CHATTY)?;
    let bot = create_bot(&app, &bot_spec("crash-unrestarted", host.agent_id, &chatty, &[])).await?;
    control(&app, bot, "start").await?;
    let first = wait_running(&app, bot).await?;
    agent.kill().await?;

    // Rewind to the instant after the crash was written down and before the restart was:
    // the state file says `crashed` with no process, and the process is gone.
    let record = rewind(&host, bot, first, "crashed").await?;
    assert_eq!(record["restart_count"], 0, "{record}");

    let agent = host.run(&[]).await?;
    let restarted = wait_bot(&app, bot, "the crashed bot restarted by its policy", |b| {
        b["state"] == "running" && b["restart_count"] == 1
    })
    .await?;
    let pid = restarted["pid"].as_u64().unwrap_or_default() as u32;
    assert_ne!(pid, first, "a new process: {restarted}");
    assert_eq!(bot_leaders(&bot.to_string()), [pid], "exactly one process for the bot");

    let stop = control(&app, bot, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}
