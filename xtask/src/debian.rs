//! Debian packages a check needs (the tray's GTK and Xvfb, the panel's Chromium): installed
//! with apt when missing and we are root (CI), otherwise named in the error.

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// Installs the missing `packages` with apt; `what` names who needs them in messages.
pub fn ensure(packages: &[&str], what: &str) -> Result<()> {
    if cmd::find_on_path("dpkg").is_none() {
        println!("not a Debian system: install these or their equivalents: {}", packages.join(" "));
        return Ok(());
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("installed: {}", packages.join(" "));
        return Ok(());
    }
    let install = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !is_root() {
        bail!("{what} needs Debian packages that are missing; as root run: apt-get update && {install}");
    }
    println!("missing: {}; installing them", missing.join(" "));
    cmd::run(Command::new("apt-get").arg("update").stdin(Stdio::null())).context("apt-get update failed")?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
    )
    .with_context(|| format!("`{install}` failed"))
}

/// `dpkg -s` says "install ok installed".
fn installed(package: &str) -> bool {
    Command::new("dpkg").args(["-s", package]).stdin(Stdio::null()).stderr(Stdio::null()).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Status: install ok installed")
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
