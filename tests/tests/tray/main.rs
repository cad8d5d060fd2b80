//! `botmox-agent tray` on a real (virtual) X display: Xvfb, a system-tray host (`trayer`,
//! an XEmbed tray: with no StatusNotifier watcher on D-Bus, libayatana-appindicator falls
//! back to XEmbed), the tray-enabled agent paired with a real code against a real server.
//! Screenshots (`import` from ImageMagick) are kept in `<target>/artifacts/` and checked for
//! the icon's colours: green once the agent is online, grey while paused (Pause and Resume
//! chosen in the real menu with the keyboard, through `xdotool`), green again after Pair
//! again… (answered by a stand-in `zenity`: a wrong code changes nothing, a real one gives the
//! host a new identity), red once the server is gone, in both the tray and a second tray that
//! only views the running agent.
//!
//! The default build has no tray, so this test is ignored by a plain `cargo nextest run`;
//! `cargo xtask test` builds `botmox-agent --features tray` and runs it with
//! `--run-ignored only`, naming the binary in `BOTMOX_TRAY_AGENT_BIN`.
#![cfg(target_os = "linux")]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use botmox_e2e::{
    app::{send, TestApp},
    db::Backend,
    server::Lines,
};
use serde_json::json;
use tokio::process::{Child, Command};

const BIN_VAR: &str = "BOTMOX_TRAY_AGENT_BIN";
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
/// The screen: small, so screenshots are small.
const WIDTH: usize = 640;
const HEIGHT: usize = 400;
/// The icon's colours (`agent/src/tray/icon.rs`).
const GREEN: [u8; 3] = [0x1e, 0xb4, 0x3c];
const RED: [u8; 3] = [0xdc, 0x28, 0x28];
const GREY: [u8; 3] = [0x8c, 0x8c, 0x8c];
/// Enabled menu items above Pause/Resume when paired: Bots, Open control panel, Open logs
/// folder (status lines are disabled, and keyboard navigation skips them).
const DOWNS_TO_PAUSE: usize = 4;
/// Pixels of a colour that make "the icon is there" (a 22 px icon has ~300 fill pixels).
const ICON_PIXELS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the tray build and Xvfb; cargo xtask test runs it"]
async fn the_tray_shows_its_agent_pauses_resumes_and_pairs_again_under_xvfb() -> anyhow::Result<()> {
    let bin = std::env::var_os(BIN_VAR).map(PathBuf::from).with_context(|| {
        format!("{BIN_VAR} must name a botmox-agent built with `--features tray` (cargo xtask test sets it)")
    })?;
    anyhow::ensure!(bin.is_file(), "{BIN_VAR}={} is not a file", bin.display());
    for tool in ["Xvfb", "trayer", "import", "convert", "xdotool", "xwininfo"] {
        anyhow::ensure!(on_path(tool), "`{tool}` is missing (Debian: xvfb, trayer, imagemagick, xdotool, x11-utils)");
    }
    let artifacts = target_dir().join("artifacts");
    std::fs::create_dir_all(&artifacts)?;

    let display = Display::start().await?;
    let _tray_host = display.spawn(
        "trayer",
        &[
            "--edge",
            "top",
            "--align",
            "left",
            "--widthtype",
            "request",
            "--height",
            "32",
            "--transparent",
            "false",
            "--tint",
            "0xffffff",
            "--SetDockType",
            "false",
        ],
    )?;
    display.wait_for_window("panel", "trayer's panel").await?;

    // A 1 s heartbeat: the server sees a paused agent offline within seconds.
    let app = TestApp::spawn_with(Backend::Sqlite, |settings| {
        settings.heartbeat_interval = Duration::from_secs(1);
        settings.hygiene_interval = Duration::from_millis(100);
    })
    .await?;
    let host = tempfile::tempdir()?;
    let (status, body) = send(app.post("/api/v1/agents/pairing-codes", &json!({}))).await?;
    anyhow::ensure!(status == 201, "pairing code: {status} {body}");
    let code = body["code"].as_str().unwrap_or_default();
    let paired = Command::new(&bin)
        .arg("--config-dir")
        .arg(host.path())
        .args(["pair", "--server", &app.base_url, "--code", code])
        .env_remove("BOTMOX_AGENT_DIR")
        .output()
        .await?;
    anyhow::ensure!(paired.status.success(), "pair: {}", String::from_utf8_lossy(&paired.stderr));
    let agent_id = agent_id_in(host.path())?;

    // A stand-in for zenity that answers the Pair again dialogs from files.
    let dialogs = tempfile::tempdir()?;
    write_executable(&dialogs.path().join("zenity"), FAKE_ZENITY)?;
    let tray = Tray::start(&bin, host.path(), &display, Some(dialogs.path()))?;
    wait_presence(&app, &agent_id, "online")
        .await
        .with_context(|| format!("tray stderr: {:?}", tray.stderr.snapshot()))?;
    let online = display.wait_for_colour(GREEN, &[RED], &artifacts.join("tray.png")).await.with_context(|| {
        format!("no green icon on screen (see {}); tray stderr: {:?}", artifacts.display(), tray.stderr.snapshot())
    })?;
    assert!(online.count(GREY) < ICON_PIXELS, "one icon, green");

    // For the record (SPEC §9 asks for a small footprint): shown with `--no-capture`.
    eprintln!("tray running the agent: {}", tray.rss());

    // The tray runs the agent in-process and serves its status endpoint like `run` does.
    wait_status(&bin, host.path(), "connection  connected (websocket)").await?;

    // Pause from the menu: the connection closes (the server sees the host offline), the icon
    // turns grey with a pause sign; Resume brings it back.
    let class = bin.file_name().and_then(|n| n.to_str()).unwrap_or("botmox-agent").to_owned();
    let menu = artifacts.join("tray-menu.png");
    display.choose_in_menu(&class, DOWNS_TO_PAUSE, Some(&menu)).await?;
    wait_status(&bin, host.path(), "connection  paused").await?;
    let paused = display.wait_for_colour(GREY, &[GREEN], &artifacts.join("tray-paused.png")).await?;
    assert!(paused.count([0xff; 3]) > 0, "the grey icon has its white pause bars");
    wait_presence(&app, &agent_id, "offline").await?;
    display.choose_in_menu(&class, DOWNS_TO_PAUSE, None).await?;
    wait_status(&bin, host.path(), "connection  connected").await?;
    wait_presence(&app, &agent_id, "online").await?;
    display.wait_for_colour(GREEN, &[GREY], &artifacts.join("tray-resumed.png")).await?;

    // Pair again… with a wrong code: an error dialog, and nothing changes.
    std::fs::write(dialogs.path().join("server"), &app.base_url)?;
    std::fs::write(dialogs.path().join("code"), "AAAA-BBBB-CCCC")?;
    display.choose_in_menu(&class, DOWNS_TO_PAUSE + 1, None).await?;
    let calls = dialogs.path().join("calls");
    wait_file(&calls, "--error", "the error dialog").await?;
    let error = std::fs::read_to_string(&calls)?;
    assert!(error.contains("--question") && error.contains("nothing changed"), "{error}");
    assert_eq!(agent_id_in(host.path())?, agent_id, "a wrong code changes nothing");
    wait_status(&bin, host.path(), "connection  connected").await?;

    // Pair again… with a real code: a new identity, online; the old one goes offline.
    let (status, body) = send(app.post("/api/v1/agents/pairing-codes", &json!({}))).await?;
    anyhow::ensure!(status == 201, "pairing code: {status} {body}");
    std::fs::write(dialogs.path().join("code"), body["code"].as_str().unwrap_or_default())?;
    std::fs::remove_file(&calls)?;
    display.choose_in_menu(&class, DOWNS_TO_PAUSE + 1, None).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let new_id = loop {
        let id = agent_id_in(host.path()).unwrap_or_default();
        if !id.is_empty() && id != agent_id {
            break id;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the identity did not change within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    };
    wait_presence(&app, &new_id, "online").await?;
    wait_presence(&app, &agent_id, "offline").await?;
    display.wait_for_colour(GREEN, &[GREY, RED], &artifacts.join("tray-paired-again.png")).await?;

    // A second tray for the same dir shows the running agent and starts no second one.
    let viewer = Tray::start(&bin, host.path(), &display, None)?;
    viewer.stderr.wait_for("an agent already runs for this dir", WAIT).await?;
    display.wait_for_icons(2).await?;
    eprintln!("tray viewing the agent: {}", viewer.rss());

    app.stop().await?;
    let offline = display
        .wait_for_colour(RED, &[GREEN], &artifacts.join("tray-offline.png"))
        .await
        .with_context(|| format!("no red icon once the server stopped; tray stderr: {:?}", tray.stderr.snapshot()))?;
    assert!(offline.count(RED) >= 2 * ICON_PIXELS, "the viewer's icon is red too: it follows the tray's agent");

    assert_eq!(viewer.terminate().await?, Some(0), "the viewer quits cleanly");
    assert_eq!(tray.terminate().await?, Some(0), "SIGTERM quits the tray like Quit");
    assert!(!host.path().join("status.addr").exists(), "the in-process agent stopped and removed its address");
    Ok(())
}

/// Waits until the server says the agent is `status` (online, offline).
async fn wait_presence(app: &TestApp, agent_id: &str, status: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, agent) = send(app.get(&format!("/api/v1/agents/{agent_id}"))).await?;
        if agent["status"] == status {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the tray's agent is not {status} after {WAIT:?}: {agent}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `botmox-agent status` (which asks the tray's in-process agent through its
/// status endpoint) prints `needle`.
async fn wait_status(bin: &Path, dir: &Path, needle: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let output = Command::new(bin).arg("--config-dir").arg(dir).arg("status").output().await?;
        let text = String::from_utf8_lossy(&output.stdout);
        if text.contains(needle) {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "`status` never said `{needle}`; last:\n{text}");
        tokio::time::sleep(POLL).await;
    }
}

/// An Xvfb server on a free display number, killed on drop.
struct Display {
    number: u32,
    server: std::process::Child,
}

/// SIGTERM, so Xvfb removes its socket and lock file (SIGKILL would leave them, and the
/// display number would look taken), then wait for it (it exits at once).
impl Drop for Display {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.server.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.server.kill();
        }
        let _ = self.server.wait();
    }
}

impl Display {
    async fn start() -> anyhow::Result<Self> {
        let number = (90..400)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .context("no free X display number between :90 and :399")?;
        let server = std::process::Command::new("Xvfb")
            .arg(format!(":{number}"))
            .args(["-screen", "0", &format!("{WIDTH}x{HEIGHT}x24"), "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start Xvfb")?;
        let display = Self { number, server };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !display.command("xwininfo").arg("-root").output().await.is_ok_and(|o| o.status.success()) {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "Xvfb :{number} did not come up within {WAIT:?}");
            tokio::time::sleep(POLL).await;
        }
        Ok(display)
    }

    /// A command on this display, without a D-Bus session: no StatusNotifier watcher, so
    /// the icon goes to the XEmbed tray.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("DISPLAY", format!(":{}", self.number)).env_remove("DBUS_SESSION_BUS_ADDRESS");
        command.env_remove("WAYLAND_DISPLAY").stdin(Stdio::null()).kill_on_drop(true);
        command
    }

    fn spawn(&self, program: &str, args: &[&str]) -> anyhow::Result<Child> {
        let mut command = self.command(program);
        command.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        command.spawn().with_context(|| format!("cannot start {program}"))
    }

    /// Waits until `xwininfo -root -tree` lists a window whose line contains `needle`;
    /// returns that line.
    async fn wait_for_window(&self, needle: &str, what: &str) -> anyhow::Result<String> {
        self.wait_for_window_where(what, |line| line.contains(needle)).await
    }

    async fn wait_for_window_where(&self, what: &str, found: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let tree = self.command("xwininfo").args(["-root", "-tree"]).output().await?;
            if let Some(line) = String::from_utf8_lossy(&tree.stdout).lines().find(|l| found(l)) {
                return Ok(line.to_owned());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what} did not appear within {WAIT:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `n` tray icons are embedded in the tray host.
    async fn wait_for_icons(&self, n: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let tree = self.command("xwininfo").args(["-root", "-tree"]).output().await?;
            let tree = String::from_utf8_lossy(&tree.stdout);
            let icons = tree.lines().filter(|l| l.contains("tray-icon tray app")).count();
            if icons >= n {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "{icons} tray icons, not {n}, after {WAIT:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Right-clicks the tray's icon, waits for its menu (a screenshot of it kept at `keep`),
    /// moves down `downs` enabled items and presses Return; waits until the menu is gone.
    async fn choose_in_menu(&self, class: &str, downs: usize, keep: Option<&Path>) -> anyhow::Result<()> {
        let icon = self.wait_for_window("tray-icon tray app", "the tray icon").await?;
        let (x, y) = centre(&icon).with_context(|| format!("no geometry in `{icon}`"))?;
        let click = ["mousemove", &x.to_string(), &y.to_string(), "click", "3"].map(str::to_owned);
        anyhow::ensure!(self.command("xdotool").args(&click).status().await?.success(), "xdotool click failed");
        // The menu: a toplevel of the tray's class, much wider than an icon.
        let is_menu = |line: &str| line.contains(&format!("(\"{class}\"")) && size(line).is_some_and(|(w, _)| w > 100);
        self.wait_for_window_where("the tray's menu", is_menu).await?;
        if let Some(keep) = keep {
            // The menu is drawn: a large light area (its background) where the screen was black.
            let shown = self.screenshot(keep).await?;
            let light = shown.rgb.chunks_exact(3).filter(|p| p.iter().all(|c| *c > 0xe0)).count();
            anyhow::ensure!(light > 100 * 100, "the menu is not drawn (see {})", keep.display());
        }
        let mut keys = vec!["key"];
        keys.extend(std::iter::repeat_n("Down", downs));
        keys.push("Return");
        anyhow::ensure!(self.command("xdotool").args(&keys).status().await?.success(), "xdotool key failed");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let tree = self.command("xwininfo").args(["-root", "-tree"]).output().await?;
            if !String::from_utf8_lossy(&tree.stdout).lines().any(is_menu) {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the menu did not close within {WAIT:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Takes screenshots until one shows an icon in `colour` and none in the colours
    /// `without`; that one is kept at `keep`.
    async fn wait_for_colour(&self, colour: [u8; 3], without: &[[u8; 3]], keep: &Path) -> anyhow::Result<Screen> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let screen = self.screenshot(keep).await?;
            if screen.count(colour) >= ICON_PIXELS && without.iter().all(|other| screen.count(*other) < ICON_PIXELS) {
                return Ok(screen);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "waited {WAIT:?}; the last screenshot ({}) has {} pixels of {colour:?}",
                keep.display(),
                screen.count(colour)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The whole screen: saved as PNG at `path`, returned as pixels.
    async fn screenshot(&self, path: &Path) -> anyhow::Result<Screen> {
        let taken = self.command("import").args(["-window", "root"]).arg(path).output().await?;
        anyhow::ensure!(taken.status.success(), "import failed: {}", String::from_utf8_lossy(&taken.stderr));
        let raw = Command::new("convert").arg(path).args(["-depth", "8", "rgb:-"]).output().await?;
        anyhow::ensure!(raw.status.success(), "convert failed: {}", String::from_utf8_lossy(&raw.stderr));
        anyhow::ensure!(
            raw.stdout.len() == WIDTH * HEIGHT * 3,
            "unexpected screenshot size: {} bytes",
            raw.stdout.len()
        );
        Ok(Screen { rgb: raw.stdout })
    }
}

struct Screen {
    rgb: Vec<u8>,
}

impl Screen {
    /// Pixels within a small distance of `colour` (scaling blends only the edges).
    fn count(&self, colour: [u8; 3]) -> usize {
        self.rgb.chunks_exact(3).filter(|p| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 6)).count()
    }
}

/// A running `botmox-agent tray`.
struct Tray {
    child: Child,
    stderr: Lines,
}

impl Tray {
    /// `dialogs`: a directory put first on the tray's `PATH` (the stand-in zenity).
    fn start(bin: &Path, dir: &Path, display: &Display, dialogs: Option<&Path>) -> anyhow::Result<Self> {
        let mut command = display.command(bin);
        if let Some(dialogs) = dialogs {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let paths = std::iter::once(dialogs.to_path_buf()).chain(std::env::split_paths(&path));
            command.env("PATH", std::env::join_paths(paths)?);
        }
        command.arg("--config-dir").arg(dir).arg("tray");
        command.env_remove("BOTMOX_AGENT_DIR").env("BOTMOX_AGENT_STATUS_LISTEN", "127.0.0.1:0");
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().context("cannot start botmox-agent tray")?;
        let stderr = Lines::default();
        stderr.spawn_reader(child.stderr.take().context("no stderr")?);
        Ok(Self { child, stderr })
    }

    /// The process's resident memory, for the record.
    fn rss(&self) -> String {
        let status = self.child.id().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        let rss = status.and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l[6..].trim().to_owned()));
        rss.map_or_else(|| "RSS unknown".to_owned(), |rss| format!("RSS {rss}"))
    }

    /// SIGTERM, then the exit code (bounded).
    async fn terminate(mut self) -> anyhow::Result<Option<i32>> {
        if let Some(pid) = self.child.id() {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)?;
        }
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.with_context(|| {
            format!("the tray did not exit within {WAIT:?}; stderr: {:?}", self.stderr.snapshot())
        })??;
        Ok(status.code())
    }
}

/// `WxH` of an `xwininfo -tree` line (`0x40 "name": (…)  32x30+0+0  +1+1`).
fn size(line: &str) -> Option<(u32, u32)> {
    let geometry = line.split_whitespace().rev().nth(1)?;
    let (w, rest) = geometry.split_once('x')?;
    let h = rest.split(['+', '-']).next()?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// The centre, in root coordinates, of the window on an `xwininfo -tree` line.
fn centre(line: &str) -> Option<(u32, u32)> {
    let (w, h) = size(line)?;
    let absolute = line.split_whitespace().last()?.strip_prefix('+')?;
    let (x, y) = absolute.split_once('+')?;
    Some((x.parse::<u32>().ok()? + w / 2, y.parse::<u32>().ok()? + h / 2))
}

/// Answers Pair again's dialogs: yes to the question, the `server` and `code` files to the
/// entries; every call is appended to `calls`.
const FAKE_ZENITY: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$@" >> "$dir/calls"
case "$*" in
  *--question*) exit 0 ;;
  *"Server URL"*) cat "$dir/server"; exit 0 ;;
  *"Pairing code"*) cat "$dir/code"; exit 0 ;;
  *--error*) exit 0 ;;
esac
exit 1
"#;

fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The agent id in the agent dir's credentials.
fn agent_id_in(dir: &Path) -> anyhow::Result<String> {
    let credentials: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("agent.json"))?)?;
    Ok(credentials["agent_id"].as_str().unwrap_or_default().to_owned())
}

/// Waits until `path` exists and contains `needle`.
async fn wait_file(path: &Path, needle: &str, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no {what} within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Cargo's target dir (artifacts go next to the builds).
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}
