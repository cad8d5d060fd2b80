//! The systemd unit `botmox-agent.service`. Root gets a system unit in `/etc/systemd/system`
//! (starts at boot); anyone else a user unit in `~/.config/systemd/user` (starts with the
//! user's session, or at boot with `loginctl enable-linger`).
//!
//! The unit's rules follow from how `run` behaves:
//! - `Restart=on-failure` with `RestartPreventExitStatus=3`: exit code 3 means the server
//!   revoked this agent, and restarting cannot change that.
//! - `KillMode=process`: systemd signals only the agent. Bots live in their own process
//!   groups *inside the unit's cgroup*; the default `control-group` would kill them on every
//!   agent restart, while `run` answers SIGTERM by leaving them running to be re-adopted.
//! - `After=`/`Wants=network-online.target` (system units only: a user manager has no such
//!   target), so the first connection attempt does not race the network at boot.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use super::Options;
use crate::paths::AgentDir;

pub const UNIT_NAME: &str = "botmox-agent.service";
/// The first line of every unit we write; `uninstall` removes only files that carry it.
const MARKER: &str = "# Written by `botmox-agent service install`";
const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// What the host offers, detected once (tests build their own).
#[derive(Debug, Clone)]
pub struct Host {
    /// `/run/systemd/system` exists: systemd is the init system. Containers and most CI
    /// machines have none.
    pub systemd_running: bool,
    /// Root installs a system unit; anyone else a user unit.
    pub root: bool,
    /// Where user units go: `$XDG_CONFIG_HOME/systemd/user` or `~/.config/systemd/user`.
    pub user_unit_dir: Option<PathBuf>,
}

impl Host {
    pub fn detect() -> Self {
        let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let config = absolute("XDG_CONFIG_HOME").or_else(|| absolute("HOME").map(|home| home.join(".config")));
        Self {
            systemd_running: Path::new("/run/systemd/system").is_dir(),
            root: nix::unistd::geteuid().is_root(),
            user_unit_dir: config.map(|c| c.join("systemd").join("user")),
        }
    }

    fn scope(&self) -> Scope {
        if self.root {
            Scope::System
        } else {
            Scope::User
        }
    }

    fn unit_dir(&self, options: &Options) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &options.unit_dir {
            return std::path::absolute(dir).with_context(|| format!("unit dir {}", dir.display()));
        }
        match self.scope() {
            Scope::System => Ok(PathBuf::from(SYSTEM_UNIT_DIR)),
            Scope::User => self.user_unit_dir.clone().context(
                "neither XDG_CONFIG_HOME nor HOME is set: cannot find the user unit directory (use --unit-dir)",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

impl Scope {
    /// `systemctl` or `systemctl --user`, for commands and messages.
    fn systemctl(self) -> &'static str {
        match self {
            Scope::System => "systemctl",
            Scope::User => "systemctl --user",
        }
    }
}

/// Writes the unit, then (unless `--no-start`) reloads systemd, enables the unit and
/// (re)starts it. Refuses before writing anything when systemd cannot be used.
pub fn install(exe: &Path, dir: &AgentDir, options: &Options, host: &Host) -> anyhow::Result<String> {
    check_options(options, host)?;
    let scope = host.scope();
    let text = unit_text(exe, dir.root(), scope)?;
    let unit_dir = host.unit_dir(options)?;
    let path = unit_dir.join(UNIT_NAME);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        anyhow::ensure!(
            existing.starts_with(MARKER),
            "{} exists and was not written by botmox-agent: remove or rename it first",
            path.display()
        );
    }
    std::fs::create_dir_all(&unit_dir).with_context(|| format!("cannot create {}", unit_dir.display()))?;
    write_unit(&path, &text)?;
    let systemctl = scope.systemctl();
    if options.no_systemctl {
        return Ok(format!(
            "wrote {}:\n\n{text}\nnext: {systemctl} daemon-reload && {systemctl} enable --now {UNIT_NAME}",
            path.display()
        ));
    }
    let run = |args: &[&str]| {
        systemctl_run(scope, args).with_context(|| format!("the unit is written to {}, but", path.display()))
    };
    run(&["daemon-reload"])?;
    run(&["enable", UNIT_NAME])?;
    // `restart` rather than `start`: a re-install (a moved binary, another agent dir) must
    // take effect now. Bots survive it (`KillMode=process`).
    run(&["restart", UNIT_NAME])?;
    let mut done = format!(
        "installed {} and started {UNIT_NAME}: it runs `{} --config-dir {} run`\nsee it: {systemctl} status {UNIT_NAME}; logs: journalctl {}-u {UNIT_NAME}",
        path.display(),
        exe.display(),
        dir.root().display(),
        if scope == Scope::User { "--user " } else { "" },
    );
    if scope == Scope::User {
        done.push_str("\na user unit runs while you are logged in; to start it at boot: loginctl enable-linger $USER");
    }
    Ok(done)
}

/// Disables and stops the unit (unless `--no-stop`) and removes its file. Nothing installed
/// is not an error.
pub fn uninstall(options: &Options, host: &Host) -> anyhow::Result<String> {
    let scope = host.scope();
    let path = host.unit_dir(options)?.join(UNIT_NAME);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(format!("{UNIT_NAME} is not installed (no {}): nothing to do", path.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    anyhow::ensure!(
        existing.starts_with(MARKER),
        "{} was not written by botmox-agent: not removing it",
        path.display()
    );
    let use_systemctl = !options.no_systemctl && options.unit_dir.is_none() && host.systemd_running;
    if use_systemctl {
        systemctl_run(scope, &["disable", "--now", UNIT_NAME])?;
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    if use_systemctl {
        systemctl_run(scope, &["daemon-reload"])?;
    }
    let stopped = if use_systemctl { "stopped, disabled and removed" } else { "removed" };
    Ok(format!(
        "{stopped} {}; bots it ran keep running: `botmox-agent run` re-adopts them, `botmox-agent unpair` stops them",
        path.display()
    ))
}

/// `--unit-dir` writes where systemd may not look, so it goes with `--no-start`; without
/// systemd there is nothing to start.
fn check_options(options: &Options, host: &Host) -> anyhow::Result<()> {
    if options.no_systemctl {
        return Ok(());
    }
    anyhow::ensure!(
        options.unit_dir.is_none(),
        "--unit-dir writes the unit where systemd may not look: add --no-start and run systemctl yourself"
    );
    anyhow::ensure!(
        host.systemd_running,
        "systemd is not running on this host (no /run/systemd/system, as in most containers): \
         nothing can start the service. Use `service install --no-start` to write the unit only, \
         or run `botmox-agent run` under your own supervisor"
    );
    Ok(())
}

/// The unit file.
pub fn unit_text(exe: &Path, agent_dir: &Path, scope: Scope) -> anyhow::Result<String> {
    let (network, wanted_by) = match scope {
        Scope::System => ("Wants=network-online.target\nAfter=network-online.target\n", "multi-user.target"),
        Scope::User => ("", "default.target"),
    };
    Ok(format!(
        "{MARKER}; remove it with `botmox-agent service uninstall`.
[Unit]
Description=botmox agent: runs and supervises this host's bots for a botmox server
{network}
[Service]
Type=simple
ExecStart={exe} --config-dir {dir} run
Restart=on-failure
RestartSec=5
# Exit code 3: the server revoked this agent; restarting cannot help.
RestartPreventExitStatus=3
# Only the agent is signalled: bots run in their own process groups and outlive an agent
# restart, to be re-adopted by the next start.
KillMode=process

[Install]
WantedBy={wanted_by}
",
        exe = quote(exe)?,
        dir = quote(agent_dir)?,
    ))
}

/// A path as one `ExecStart=` word: double-quoted, with systemd's specifiers (`%`) and
/// variable expansion (`$`) escaped.
fn quote(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    anyhow::ensure!(path.is_absolute(), "{text} is not an absolute path");
    anyhow::ensure!(!text.contains(['\n', '\r']), "{text:?} contains a line break: systemd cannot run it");
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// Atomic (temp file + rename), mode 0644 like every unit file (it holds no secret).
fn write_unit(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("service.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

fn systemctl_run(scope: Scope, args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("systemctl");
    if scope == Scope::User {
        command.arg("--user");
    }
    command.args(args).stdin(std::process::Stdio::null());
    let shown = format!("{} {}", scope.systemctl(), args.join(" "));
    let output = command.output().with_context(|| format!("cannot run `{shown}`"))?;
    anyhow::ensure!(
        output.status.success(),
        "`{shown}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(systemd_running: bool, root: bool) -> Host {
        Host { systemd_running, root, user_unit_dir: None }
    }

    fn agent_dir(path: &Path) -> anyhow::Result<AgentDir> {
        AgentDir::resolve(Some(path.to_path_buf())).map_err(anyhow::Error::msg)
    }

    fn only(units: &Path) -> Options {
        Options { no_systemctl: true, unit_dir: Some(units.to_path_buf()) }
    }

    #[test]
    fn the_unit_runs_this_exe_with_this_dir_and_the_restart_rules() -> anyhow::Result<()> {
        let text = unit_text(Path::new("/opt/botmox/botmox-agent"), Path::new("/var/lib/botmox agent"), Scope::System)?;
        assert!(text.starts_with(MARKER), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "ExecStart=\"/opt/botmox/botmox-agent\" --config-dir \"/var/lib/botmox agent\" run",
            "Restart=on-failure",
            "RestartPreventExitStatus=3",
            "KillMode=process",
            "After=network-online.target",
            "Wants=network-online.target",
            "WantedBy=multi-user.target",
        ] {
            assert!(lines.contains(&line), "missing `{line}` in:\n{text}");
        }
        let user = unit_text(Path::new("/home/u/bin/botmox-agent"), Path::new("/home/u/.config/botmox"), Scope::User)?;
        assert!(user.contains("WantedBy=default.target") && !user.contains("network-online"), "{user}");
        Ok(())
    }

    #[test]
    fn paths_are_quoted_for_systemd() -> anyhow::Result<()> {
        assert_eq!(quote(Path::new("/a b/c"))?, "\"/a b/c\"");
        assert_eq!(quote(Path::new("/x/100%/$HOME/\"q\"\\"))?, "\"/x/100%%/$$HOME/\\\"q\\\"\\\\\"");
        assert!(quote(Path::new("relative/dir")).is_err());
        assert!(quote(Path::new("/a\nb")).is_err());
        Ok(())
    }

    #[test]
    fn without_systemd_install_refuses_and_writes_nothing() -> anyhow::Result<()> {
        let agent = tempfile::tempdir()?;
        let dir = agent_dir(agent.path())?;
        let mut no_systemd = host(false, false);
        let units = tempfile::tempdir()?;
        no_systemd.user_unit_dir = Some(units.path().to_path_buf());
        let err = install(Path::new("/usr/bin/botmox-agent"), &dir, &Options::default(), &no_systemd)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("systemd is not running") && err.contains("--no-start"), "{err}");
        assert_eq!(std::fs::read_dir(units.path())?.count(), 0, "nothing written");

        let with_dir = Options { no_systemctl: false, unit_dir: Some(units.path().to_path_buf()) };
        let err = install(Path::new("/usr/bin/botmox-agent"), &dir, &with_dir, &host(true, false))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("--unit-dir") && err.contains("--no-start"), "{err}");
        assert_eq!(std::fs::read_dir(units.path())?.count(), 0, "nothing written");
        Ok(())
    }

    #[test]
    fn no_start_writes_and_prints_the_unit_and_uninstall_removes_it() -> anyhow::Result<()> {
        let agent = tempfile::tempdir()?;
        let units = tempfile::tempdir()?;
        let unit_dir = units.path().join("systemd").join("user");
        let dir = agent_dir(agent.path())?;
        let exe = Path::new("/usr/local/bin/botmox-agent");
        let said = install(exe, &dir, &only(&unit_dir), &host(false, false))?;
        let path = unit_dir.join(UNIT_NAME);
        let written = std::fs::read_to_string(&path)?;
        assert!(said.contains(&written) && said.contains("systemctl --user daemon-reload"), "{said}");
        assert!(written.contains(&format!("--config-dir \"{}\" run", agent.path().display())), "{written}");
        assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o644);

        // Installing again replaces our own unit.
        install(Path::new("/opt/botmox-agent"), &dir, &only(&unit_dir), &host(false, true))?;
        assert!(std::fs::read_to_string(&path)?.contains("ExecStart=\"/opt/botmox-agent\""));

        let said = uninstall(&only(&unit_dir), &host(false, false))?;
        assert!(said.starts_with("removed") && said.contains("keep running"), "{said}");
        assert!(!path.exists());
        let said = uninstall(&only(&unit_dir), &host(false, false))?;
        assert!(said.contains("not installed"), "idempotent: {said}");
        Ok(())
    }

    #[test]
    fn a_foreign_unit_is_neither_replaced_nor_removed() -> anyhow::Result<()> {
        let agent = tempfile::tempdir()?;
        let units = tempfile::tempdir()?;
        let path = units.path().join(UNIT_NAME);
        std::fs::write(&path, "[Service]\nExecStart=/bin/true\n")?;
        let dir = agent_dir(agent.path())?;
        let err = install(Path::new("/usr/bin/botmox-agent"), &dir, &only(units.path()), &host(false, false))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("not written by botmox-agent"), "{err}");
        let err =
            uninstall(&only(units.path()), &host(false, false)).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("not written by botmox-agent"), "{err}");
        assert_eq!(std::fs::read_to_string(&path)?, "[Service]\nExecStart=/bin/true\n", "unchanged");
        Ok(())
    }

    /// `systemd-analyze verify` accepts the unit (where the tool is installed; it checks
    /// syntax, known directives and that ExecStart is executable).
    #[test]
    fn systemd_analyze_verifies_the_unit() -> anyhow::Result<()> {
        if Command::new("systemd-analyze").arg("--version").output().is_err() {
            eprintln!("systemd-analyze is not installed: skipping the verification");
            return Ok(());
        }
        let units = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let path = units.path().join(UNIT_NAME);
        std::fs::write(&path, unit_text(&exe, units.path(), Scope::System)?)?;
        let output = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Only lines about our unit count: the host's own units may have problems of their own.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(UNIT_NAME)).collect();
        assert!(output.status.success() && ours.is_empty(), "systemd-analyze verify: {stderr}");
        Ok(())
    }
}
