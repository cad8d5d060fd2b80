//! `botmox-agent service install|uninstall` through the real binary, on a host paired with a
//! real code. CI machines and containers run no systemd, so the unit is written with
//! `--no-start --unit-dir` and checked as a file (and by `systemd-analyze verify` where it is
//! installed); the refusals are checked as they happen here: not paired, no systemd.
#![cfg(target_os = "linux")]

use std::path::Path;

use botmox_e2e::{
    agent::{agent_bin, agent_cli, pair},
    app::{send, TestApp},
    db::Backend,
};
use serde_json::json;

const UNIT: &str = "botmox-agent.service";

fn one_line(stderr: &str) -> bool {
    stderr.trim_end().lines().count() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_writes_a_unit_that_runs_this_agent_and_uninstall_removes_it() -> anyhow::Result<()> {
    let host = tempfile::tempdir()?;
    let units = tempfile::tempdir()?;
    let unit_dir = units.path().to_str().unwrap_or_default().to_owned();
    let only = ["--no-start", "--unit-dir", unit_dir.as_str()];

    // Not paired: refused, nothing written.
    let (code, stdout, stderr) = agent_cli(host.path(), &[&["service", "install"][..], &only].concat()).await?;
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    assert!(one_line(&stderr) && stderr.contains("not paired") && stderr.contains("pair --server"), "{stderr}");
    assert_eq!(std::fs::read_dir(units.path())?.count(), 0);

    let app = TestApp::spawn(Backend::Sqlite).await?;
    let (status, body) = send(app.post("/api/v1/agents/pairing-codes", &json!({}))).await?;
    anyhow::ensure!(status == 201, "pairing code: {status} {body}");
    pair(host.path(), &app.base_url, body["code"].as_str().unwrap_or_default()).await?;

    // --unit-dir alone would write where systemd may not look.
    let (code, _, stderr) = agent_cli(host.path(), &["service", "install", "--unit-dir", &unit_dir]).await?;
    assert_eq!(code, Some(1));
    assert!(one_line(&stderr) && stderr.contains("--no-start"), "{stderr}");
    assert_eq!(std::fs::read_dir(units.path())?.count(), 0);

    let (code, stdout, stderr) = agent_cli(host.path(), &[&["service", "install"][..], &only].concat()).await?;
    assert_eq!(code, Some(0), "{stderr}");
    let path = units.path().join(UNIT);
    let unit = std::fs::read_to_string(&path)?;
    assert!(stdout.contains(&unit), "the unit is printed: {stdout}");
    let exe = agent_bin()?.canonicalize()?;
    let exec_start = format!("ExecStart=\"{}\" --config-dir \"{}\" run", exe.display(), host.path().display());
    for line in [exec_start.as_str(), "Restart=on-failure", "RestartPreventExitStatus=3", "KillMode=process"] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}` in:\n{unit}");
    }
    verify(&path)?;

    // Without systemd (containers, CI) a real install is refused before anything is written.
    if !Path::new("/run/systemd/system").exists() {
        let system_unit = Path::new("/etc/systemd/system").join(UNIT);
        let existed = system_unit.exists();
        let (code, _, stderr) = agent_cli(host.path(), &["service", "install"]).await?;
        assert_eq!(code, Some(1));
        assert!(
            one_line(&stderr) && stderr.contains("systemd is not running") && stderr.contains("--no-start"),
            "{stderr}"
        );
        assert_eq!(system_unit.exists(), existed, "nothing written to /etc/systemd/system");
    }

    let (code, stdout, stderr) =
        agent_cli(host.path(), &["service", "uninstall", "--no-stop", "--unit-dir", &unit_dir]).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("removed") && !path.exists(), "{stdout}");
    let (code, stdout, _) =
        agent_cli(host.path(), &["service", "uninstall", "--no-stop", "--unit-dir", &unit_dir]).await?;
    assert_eq!(code, Some(0), "uninstall is idempotent");
    assert!(stdout.contains("not installed"), "{stdout}");
    app.stop().await
}

/// `systemd-analyze verify` where installed (Debian's `systemd` package); skipped elsewhere.
fn verify(unit: &Path) -> anyhow::Result<()> {
    let Ok(output) = std::process::Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(unit).output()
    else {
        eprintln!("systemd-analyze is not installed: the unit is not verified");
        return Ok(());
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(UNIT)).collect();
    anyhow::ensure!(output.status.success() && ours.is_empty(), "systemd-analyze verify: {stderr}");
    Ok(())
}
