//! `botmox-agent service install|uninstall`: register `botmox-agent run` with the OS service
//! manager so the agent starts at boot and comes back after a crash. Linux: a systemd unit
//! (`linux.rs`); Windows: a logon task (`windows.rs`). This module
//! owns what both share: the host must be paired first, the unit runs *this* executable with
//! *this* agent dir, and options that only make sense for systemd are refused elsewhere.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(windows)]
mod windows;

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{config::Credentials, paths::AgentDir};

/// Options of `service install` and `service uninstall`.
#[derive(Debug, Default)]
pub struct Options {
    /// Write (`install --no-start`) or remove (`uninstall --no-stop`) the unit file only:
    /// no `systemctl` call.
    pub no_systemctl: bool,
    /// Where the unit file goes instead of systemd's directory (tests, packaging).
    pub unit_dir: Option<PathBuf>,
}

/// Installs and starts the service; the text says what was done and what to do next.
pub fn install(dir: &AgentDir, options: &Options) -> anyhow::Result<String> {
    let credentials = Credentials::load(&dir.credentials())?;
    anyhow::ensure!(
        credentials.is_some(),
        "this host is not paired (no {}): run `botmox-agent --config-dir {} pair --server URL --code CODE` first, \
         then install the service",
        dir.credentials().display(),
        dir.root().display()
    );
    let exe = current_exe()?;
    platform_install(&exe, dir, options)
}

/// Stops and removes the service; succeeds (saying so) when none is installed.
pub fn uninstall(dir: &AgentDir, options: &Options) -> anyhow::Result<String> {
    platform_uninstall(dir, options)
}

/// The absolute path of the running binary: what the service will start.
fn current_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let exe = exe.canonicalize().with_context(|| format!("cannot resolve {}", exe.display()))?;
    // Linux names a replaced or deleted binary "<path> (deleted)": a unit pointing there
    // would never start.
    anyhow::ensure!(
        exe.is_file(),
        "this executable ({}) no longer exists on disk: run `service install` from the installed binary",
        exe.display()
    );
    Ok(exe)
}

#[cfg(target_os = "linux")]
fn platform_install(exe: &std::path::Path, dir: &AgentDir, options: &Options) -> anyhow::Result<String> {
    linux::install(exe, dir, options, &linux::Host::detect())
}

#[cfg(target_os = "linux")]
fn platform_uninstall(_dir: &AgentDir, options: &Options) -> anyhow::Result<String> {
    linux::uninstall(options, &linux::Host::detect())
}

#[cfg(windows)]
fn platform_install(exe: &std::path::Path, dir: &AgentDir, options: &Options) -> anyhow::Result<String> {
    refuse_systemd_options(options)?;
    windows::install(exe, dir)
}

#[cfg(windows)]
fn platform_uninstall(dir: &AgentDir, options: &Options) -> anyhow::Result<String> {
    refuse_systemd_options(options)?;
    windows::uninstall(dir)
}

/// `--no-start`, `--no-stop` and `--unit-dir` describe a systemd unit file; a logon task has none.
#[cfg(windows)]
fn refuse_systemd_options(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        !options.no_systemctl && options.unit_dir.is_none(),
        "--no-start, --no-stop and --unit-dir apply to the systemd unit on Linux; on Windows run the command without them"
    );
    Ok(())
}

#[cfg(not(any(target_os = "linux", windows)))]
fn platform_install(_exe: &std::path::Path, _dir: &AgentDir, _options: &Options) -> anyhow::Result<String> {
    anyhow::bail!(
        "service install supports Linux (systemd) and Windows; run `botmox-agent run` under your own supervisor"
    )
}

#[cfg(not(any(target_os = "linux", windows)))]
fn platform_uninstall(_dir: &AgentDir, _options: &Options) -> anyhow::Result<String> {
    anyhow::bail!("service uninstall supports Linux (systemd) and Windows")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn install_refuses_an_unpaired_host_and_writes_nothing() -> anyhow::Result<()> {
        let agent = tempfile::tempdir()?;
        let units = tempfile::tempdir()?;
        let dir = AgentDir::resolve(Some(agent.path().to_path_buf())).map_err(anyhow::Error::msg)?;
        let options = Options { no_systemctl: true, unit_dir: Some(units.path().to_path_buf()) };
        let err = install(&dir, &options).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("not paired") && err.contains("pair --server"), "{err}");
        assert_eq!(std::fs::read_dir(units.path())?.count(), 0, "no unit written");
        Ok(())
    }
}
