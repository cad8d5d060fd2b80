//! Running bots through the real agent: start (pid, logs), stop of a tree that ignores
//! SIGTERM, crash → backoff → running, crash loop → failed, a program that cannot start,
//! secrets that reach the bot and nothing else, a changed definition, long-poll, agent.exec.

use botmox_e2e::agent::{bot_leaders, files_under, is_running};

use super::*;

const PYTHON_BOT: &str = r#"
import os, sys, time
print(f"hello from {os.getpid()} mode={os.environ.get('MODE')}", flush=True)
print("to stderr", file=sys.stderr, flush=True)
i = 0
while True:
    i += 1
    print(f"tick {i}", flush=True)
    time.sleep(0.2)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_bot_runs_with_its_pid_and_its_logs_arrive() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let program = script(bots.path(), "bot.py", PYTHON_BOT)?;
    let mut spec = bot_spec("farmer-eu-01", host.agent_id, std::path::Path::new("python3"), &[]);
    spec["exec"]["args"] = json!([program]);
    spec["exec"]["env"] = json!({ "MODE": "farm" });
    spec["exec"]["cwd"] = json!(bots.path());
    let bot_id = create_bot(&app, &spec).await?;

    let start = control(&app, bot_id, "start").await?;
    let done = wait_command(&app, start, "succeeded").await?;
    let pid = wait_running(&app, bot_id).await?;
    assert_eq!(done["result"]["pid"].as_u64(), Some(u64::from(pid)), "{done}");
    assert!(is_running(pid), "pid {pid} is a live process");
    assert_eq!(bot_leaders(&bot_id.to_string()), [pid], "exactly one process for the bot");

    let lines = wait_log(&app, bot_id, "tick 3").await?;
    assert!(lines.iter().any(|l| l == &format!("hello from {pid} mode=farm")), "{lines:?}");
    assert!(lines.iter().any(|l| l == "to stderr"), "stderr is captured too: {lines:?}");
    let page = get(&app, &format!("/api/v1/bots/{bot_id}/logs?limit=1000")).await?;
    let seqs: Vec<u64> = page.as_array().into_iter().flatten().filter_map(|l| l["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq strictly increasing: {seqs:?}");

    let stop = control(&app, bot_id, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    let stopped = wait_bot(&app, bot_id, "stopped", |b| b["state"] == "stopped").await?;
    assert!(stopped["pid"].is_null(), "{stopped}");
    wait_local("the bot process to end", || !is_running(pid)).await?;
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_takes_the_whole_tree_even_when_it_ignores_sigterm() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let dir = bots.path().display().to_string();
    script(
        bots.path(),
        "grandchild.sh",
        "#!/bin/sh\ntrap '' TERM\necho \"grandchild $$\"\nwhile :; do sleep 1; done\n",
    )?;
    script(
        bots.path(),
        "child.sh",
        &format!("#!/bin/sh\ntrap '' TERM\n{dir}/grandchild.sh &\necho \"child $$\"\nwhile :; do sleep 1; done\n"),
    )?;
    let leader = script(
        bots.path(),
        "leader.sh",
        &format!("#!/bin/sh\ntrap '' TERM\n{dir}/child.sh &\necho \"leader $$\"\nwhile :; do sleep 1; done\n"),
    )?;
    let mut spec = bot_spec("stubborn", host.agent_id, &leader, &[]);
    spec["stop"]["timeout_seconds"] = json!(1);
    let bot_id = create_bot(&app, &spec).await?;
    control(&app, bot_id, "start").await?;
    wait_running(&app, bot_id).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let lines = loop {
        let lines = log_lines(&app, bot_id).await?;
        let has = |role: &str| lines.iter().any(|l| l.starts_with(&format!("{role} ")));
        if has("leader") && has("child") && has("grandchild") {
            break lines;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the tree did not report its pids: {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid_of = |role: &str| -> anyhow::Result<u32> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{role} ")))
            .ok_or_else(|| anyhow::anyhow!("no {role} in {lines:?}"))?;
        Ok(line[role.len() + 1..].trim().parse()?)
    };
    let pids = [pid_of("leader")?, pid_of("child")?, pid_of("grandchild")?];
    assert!(pids.iter().all(|&p| is_running(p)), "{pids:?}");

    let asked = tokio::time::Instant::now();
    let stop = control(&app, bot_id, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    assert!(asked.elapsed() >= Duration::from_secs(1), "SIGTERM was ignored, so the grace period ran out");
    let stopped = wait_bot(&app, bot_id, "stopped", |b| b["state"] == "stopped").await?;
    assert_eq!(stopped["last_exit_signal"], 9, "killed after the timeout: {stopped}");
    for pid in pids {
        assert!(!is_running(pid), "pid {pid} of the tree survived the stop");
    }
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_restarted_and_a_crash_loop_ends_failed() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let marker = bots.path().join("crashed-once");
    let once = script(
        bots.path(),
        "once.sh",
        &format!("#!/bin/sh\nif [ ! -e '{m}' ]; then touch '{m}'; echo crashing; exit 3; fi\necho second life\nwhile :; do sleep 1; done\n", m = marker.display()),
    )?;
    let mut events = events(&app).await?;
    let bot_id = create_bot(&app, &bot_spec("crash-once", host.agent_id, &once, &[])).await?;
    control(&app, bot_id, "start").await?;
    let states = states_until(&mut events, bot_id, "running").await?;
    let states = if states.contains(&"backoff".to_owned()) {
        states
    } else {
        let mut more = states;
        more.extend(states_until(&mut events, bot_id, "running").await?);
        more
    };
    let crash_at =
        states.iter().position(|s| s == "crashed").ok_or_else(|| anyhow::anyhow!("no crash in {states:?}"))?;
    assert_eq!(&states[crash_at..crash_at + 2], ["crashed", "backoff"], "{states:?}");
    assert_eq!(states.last().map(String::as_str), Some("running"), "{states:?}");
    let bot = wait_bot(&app, bot_id, "running again", |b| b["state"] == "running" && b["restart_count"] == 1).await?;
    assert_eq!(bot["last_exit_code"], 3, "{bot}");
    wait_log(&app, bot_id, "second life").await?;

    let boom = script(bots.path(), "boom.sh", "#!/bin/sh\necho boom\nexit 1\n")?;
    let mut spec = bot_spec("crash-loop", host.agent_id, &boom, &[]);
    spec["restart"]["max_restarts"] = json!(2);
    let looping = create_bot(&app, &spec).await?;
    control(&app, looping, "start").await?;
    let states = states_until(&mut events, looping, "failed").await?;
    assert_eq!(states.iter().filter(|s| *s == "backoff").count(), 2, "two restarts, then failed: {states:?}");
    let failed = wait_bot(&app, looping, "failed", |b| b["state"] == "failed").await?;
    assert_eq!(failed["restart_count"], 2, "{failed}");
    assert!(failed["last_error"].as_str().is_some_and(|e| e.contains("crash loop")), "{failed}");
    assert!(bot_leaders(&looping.to_string()).is_empty(), "nothing left running");
    assert_eq!(agent.terminate().await?, Some(0));
    drop(events);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_cannot_start_fails_the_command_and_the_bot() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let not_executable = bots.path().join("plain.txt");
    std::fs::write(&not_executable, "echo hi\n")?;
    for (name, program, reason) in [
        ("missing", std::path::PathBuf::from("/nonexistent/bot-binary"), "not found"),
        ("not-executable", not_executable, "permission denied"),
    ] {
        let bot_id = create_bot(&app, &bot_spec(name, host.agent_id, &program, &[])).await?;
        let start = control(&app, bot_id, "start").await?;
        let command = wait_command(&app, start, "failed").await?;
        assert!(command["error"].as_str().is_some_and(|e| e.contains(reason)), "{command}");
        let bot = wait_bot(&app, bot_id, "failed", |b| b["state"] == "failed").await?;
        assert!(bot["last_error"].as_str().is_some_and(|e| e.contains(reason)), "{bot}");
        assert_eq!(bot["restart_count"], 0, "no restart loop: {bot}");
    }
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

/// SHA-256 of `value` as hex, computed by `sha256sum` (the same tool the bot uses).
async fn sha256_hex(value: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(value.as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    Ok(String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_bot_and_no_agent_file() -> anyhow::Result<()> {
    const SECRET: &str = "Zq8-very-secret-farmer-password-4711";
    let app = spawn_app().await?;
    let (status, body) =
        send(app.request(reqwest::Method::PUT, "/api/v1/secrets/farmer-password").json(&json!({ "value": SECRET })))
            .await?;
    anyhow::ensure!(status == 200 || status == 201 || status == 204, "storing the secret answered {status}: {body}");
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let program = script(
        bots.path(),
        "secret.sh",
        "#!/bin/sh\necho \"hash=$(printf %s \"$BOT_SECRET\" | sha256sum | cut -d' ' -f1)\"\necho \"careless: password=$BOT_SECRET\" >&2\nwhile :; do sleep 1; done\n",
    )?;
    let mut spec = bot_spec("secretive", host.agent_id, &program, &[]);
    spec["exec"]["secret_env"] = json!({ "BOT_SECRET": "farmer-password" });
    let bot_id = create_bot(&app, &spec).await?;
    control(&app, bot_id, "start").await?;
    wait_running(&app, bot_id).await?;
    let expected = sha256_hex(SECRET).await?;
    wait_log(&app, bot_id, &format!("hash={expected}")).await?;
    // A bot that prints its secret shows `***` to whoever reads its log: the agent masks it
    // before the line leaves the host.
    wait_log(&app, bot_id, "careless: password=***").await?;
    assert!(!log_lines(&app, bot_id).await?.iter().any(|l| l.contains(SECRET)), "the secret is in the bot's log");

    // A restart by the agent alone (the bot was killed) still has the secret: in memory.
    let pid = wait_running(&app, bot_id).await?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)?;
    wait_bot(&app, bot_id, "restarted", |b| b["state"] == "running" && b["restart_count"] == 1).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while log_lines(&app, bot_id).await?.iter().filter(|l| **l == format!("hash={expected}")).count() < 2 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the restarted bot did not print the hash");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = control(&app, bot_id, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    for file in files_under(host.path()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "the secret value is in the agent's file {}",
            file.display()
        );
    }
    let output = agent.stderr.snapshot().join("\n");
    assert!(!output.contains(SECRET), "the secret value is in the agent's output");
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_definition_restarts_the_running_bot() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let program = script(bots.path(), "mode.sh", "#!/bin/sh\necho \"mode=$MODE\"\nwhile :; do sleep 1; done\n")?;
    let mut spec = bot_spec("syncing", host.agent_id, &program, &[]);
    spec["exec"]["env"] = json!({ "MODE": "one" });
    let bot_id = create_bot(&app, &spec).await?;
    control(&app, bot_id, "start").await?;
    let first = wait_running(&app, bot_id).await?;
    wait_log(&app, bot_id, "mode=one").await?;
    let bot = get(&app, &format!("/api/v1/bots/{bot_id}")).await?;
    let mut exec = bot["exec"].clone();
    exec["env"] = json!({ "MODE": "two" });
    let (status, body) = send(
        app.patch(&format!("/api/v1/bots/{bot_id}"), &json!({ "exec": exec }))
            .header("If-Match", format!("\"{}\"", bot["version"])),
    )
    .await?;
    anyhow::ensure!(status == 200, "PATCH answered {status}: {body}");
    wait_log(&app, bot_id, "mode=two").await?;
    let second = wait_bot(&app, bot_id, "running the new definition", |b| {
        b["state"] == "running" && b["pid"].as_u64().is_some_and(|p| p != u64::from(first))
    })
    .await?;
    assert!(!is_running(first), "the old process is gone");
    assert_eq!(bot_leaders(&bot_id.to_string()), [second["pid"].as_u64().unwrap_or_default() as u32]);
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_runs_bots_and_exec_needs_permission() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&["--transport", "poll", "--allow-exec"]).await?;
    assert!(agent.stderr.snapshot().iter().any(|l| l.contains("connected (HTTP long-poll)")));
    let bots = tempfile::tempdir()?;
    let program = script(bots.path(), "chatty.sh", CHATTY)?;
    let bot_id = create_bot(&app, &bot_spec("polled", host.agent_id, &program, &[])).await?;
    control(&app, bot_id, "start").await?;
    let pid = wait_running(&app, bot_id).await?;
    wait_log(&app, bot_id, "tick 2").await?;
    let stop = control(&app, bot_id, "stop").await?;
    wait_command(&app, stop, "succeeded").await?;
    wait_local("the bot to end", || !is_running(pid)).await?;

    let exec = json!({ "agent_id": host.agent_id, "kind": "agent.exec",
                       "payload": { "program": "sh", "args": ["-c", "echo exec-output"] } });
    let (status, accepted) = send(app.post("/api/v1/commands", &exec)).await?;
    anyhow::ensure!(status == 202, "exec answered {status}: {accepted}");
    let id: Uuid = accepted["command"]["id"].as_str().unwrap_or_default().parse()?;
    let done = wait_command(&app, id, "succeeded").await?;
    assert_eq!(done["result"]["stdout"], "exec-output\n", "{done}");
    assert_eq!(agent.terminate().await?, Some(0));

    // Without --allow-exec (and over the WebSocket this time): refused.
    let agent = host.run(&[]).await?;
    let (_, accepted) = send(app.post("/api/v1/commands", &exec)).await?;
    let id: Uuid = accepted["command"]["id"].as_str().unwrap_or_default().parse()?;
    let refused = wait_command(&app, id, "failed").await?;
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("--allow-exec")), "{refused}");
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_bot_stops_and_forgets_it_on_its_agent() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let host = Host::pair(&app, &app.base_url).await?;
    let agent = host.run(&[]).await?;
    let bots = tempfile::tempdir()?;
    let program = script(bots.path(), "chatty.sh", CHATTY)?;
    let bot_id = create_bot(&app, &bot_spec("deleted", host.agent_id, &program, &[])).await?;
    control(&app, bot_id, "start").await?;
    let pid = wait_running(&app, bot_id).await?;
    let (status, body) = send(app.delete(&format!("/api/v1/bots/{bot_id}"))).await?;
    anyhow::ensure!(status == 204, "DELETE answered {status}: {body}");
    wait_local("the deleted bot's process to end", || !is_running(pid)).await?;
    let forgotten = || {
        let state = std::fs::read_to_string(host.path().join("state.json")).unwrap_or_default();
        !state.contains(&bot_id.to_string())
    };
    wait_local("the agent to forget the bot", forgotten).await?;
    assert_eq!(agent.terminate().await?, Some(0));
    app.stop().await
}
