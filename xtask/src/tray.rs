//! The tray's checks in `cargo xtask test` (Linux). The workspace build has no tray (the
//! agent's `tray` feature is off, so it links no GUI library); this step installs what the
//! tray needs when missing, lints and builds `botmox-agent --features tray` in its own target
//! dir (`<target>/tray`, so the default binary stays GUI-free), runs the agent's unit tests
//! with the feature, then the screenshot test under Xvfb (`tests/tests/tray`), which leaves
//! `<target>/artifacts/tray.png`.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{cmd, debian};

/// GTK 3 headers to build (tray-icon and tao); libayatana-appindicator to show the icon;
/// for the screenshot test Xvfb, an XEmbed system tray (`trayer`: Debian 12 has no
/// stalonetray), ImageMagick, xdotool (to open the menu) and x11-utils (`xwininfo`).
/// tray-icon 0.26 needs no libxdo-dev: muda's `libxdo` feature is off.
const PACKAGES: &[&str] =
    &["libgtk-3-dev", "libayatana-appindicator3-dev", "xvfb", "trayer", "imagemagick", "xdotool", "x11-utils"];
/// Where the test finds the tray-enabled binary.
const BIN_VAR: &str = "BOTMOX_TRAY_AGENT_BIN";

pub fn checks(cargo: &impl Fn() -> Command, quick: bool) -> Result<()> {
    if !cfg!(target_os = "linux") {
        println!("==> tray: the tray checks run on Linux only");
        return Ok(());
    }
    cmd::step("tray: Debian packages");
    debian::ensure(PACKAGES, "the tray")?;
    let target = cmd::target_dir().join("tray");
    if !quick {
        cmd::step("cargo clippy -p botmox-agent --features tray --all-targets -- -D warnings");
        cmd::run(
            cargo()
                .args(["clippy", "-p", "botmox-agent", "--features", "tray", "--all-targets", "--target-dir"])
                .arg(&target)
                .args(["--", "-D", "warnings"]),
        )
        .context("clippy found problems in the tray build (see above)")?;
    }
    cmd::step("cargo nextest run -p botmox-agent --features tray");
    cmd::run(cargo().args(["nextest", "run", "-p", "botmox-agent", "--features", "tray", "--target-dir"]).arg(&target))
        .context("the agent's tests failed with the tray feature")?;
    cmd::step("cargo build -p botmox-agent --features tray");
    cmd::run(cargo().args(["build", "-p", "botmox-agent", "--features", "tray", "--target-dir"]).arg(&target))
        .context("the tray build failed")?;
    let bin = target.join("debug").join("botmox-agent");
    cmd::step("cargo nextest run -p botmox-e2e --test tray --run-ignored only (Xvfb screenshot)");
    cmd::run(
        cargo()
            .args(["nextest", "run", "-p", "botmox-e2e", "--test", "tray", "--run-ignored", "only"])
            .env(BIN_VAR, &bin),
    )
    .with_context(|| {
        format!("the tray test failed (screenshots in {})", cmd::target_dir().join("artifacts").display())
    })?;
    Ok(())
}
