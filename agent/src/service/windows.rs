//! `service install|uninstall` on Windows: a **logon task** of the Task Scheduler, named
//! `botmox-agent`, that runs `botmox-agent.exe --config-dir <dir> run` when the installing
//! user logs on (SPEC §5 allows a logon task where a service cannot show a tray).
//!
//! Why a logon task and not a Windows service: the agent token is protected with DPAPI for
//! the *user* who paired (`config.rs`), and the agent dir is that user's `%APPDATA%\botmox`; a
//! service runs as LocalSystem in session 0, where neither the token nor a tray exist. The
//! task runs as that user, needs no administrator rights and no service entry point in the
//! binary.
//!
//! The task is registered from XML (`schtasks /Create /XML`), not from `/SC ONLOGON /TR`:
//! only the XML form can lift the Task Scheduler's default 72-hour execution limit (which
//! would kill the agent, and with it every bot, after three days), keep it running on
//! battery, and refuse a second instance. Under Wine (CI), `schtasks /Create /XML` and
//! `/Delete` work and are tested; `/Run`, `/End` and `/Query` are not implemented there (Wine's
//! schtasks answers them with success and does nothing), so that starting the task at once is
//! only checked on a real Windows.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::paths::AgentDir;

/// The task's name in the Task Scheduler.
const TASK: &str = "botmox-agent";

/// Registers the logon task (replacing one of the same name) and starts it now.
pub fn install(exe: &Path, dir: &AgentDir) -> anyhow::Result<String> {
    install_task(TASK, exe, dir.root())
}

/// Stops and removes the logon task; says so when there is none.
pub fn uninstall(_dir: &AgentDir) -> anyhow::Result<String> {
    uninstall_task(TASK)
}

fn install_task(name: &str, exe: &Path, dir: &Path) -> anyhow::Result<String> {
    let exe = plain_path(exe);
    let dir = plain_path(dir);
    let user = current_user();
    let xml = task_xml(&exe, &dir, user.as_deref());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!(".{name}.task.xml"));
    std::fs::write(&file, utf16_with_bom(&xml)).with_context(|| format!("cannot write {}", file.display()))?;
    let created = schtasks(&["/Create", "/TN", name, "/XML"], Some(&file), &["/F"]);
    let _ = std::fs::remove_file(&file);
    created.context("the Task Scheduler refused the logon task")?;
    let command = format!("\"{}\" {}", exe.display(), arguments(&dir));
    let who = user.map_or_else(|| "your logon".to_owned(), |u| format!("every logon of {u}"));
    let started = match schtasks(&["/Run", "/TN", name], None, &[]) {
        Ok(()) => "started it now".to_owned(),
        Err(e) => format!("could not start it now ({e:#}); it starts at the next logon"),
    };
    Ok(format!("installed the logon task {name}: runs {command} at {who}; {started}"))
}

fn uninstall_task(name: &str) -> anyhow::Result<String> {
    // Stopping first ends the running agent (and, through their kill-on-close jobs, its bots);
    // a task that is not running, or a Task Scheduler without /End (Wine), is fine.
    let _ = schtasks(&["/End", "/TN", name], None, &[]);
    match schtasks(&["/Delete", "/TN", name, "/F"], None, &[]) {
        Ok(()) => Ok(format!("stopped and removed the logon task {name}")),
        Err(e) if !task_exists(name) => {
            tracing::debug!(error = %e, "schtasks /Delete failed on a missing task");
            Ok(format!("no logon task {name} is installed: nothing to remove"))
        }
        Err(e) => Err(e.context(format!("cannot remove the logon task {name}"))),
    }
}

/// Whether a task of that name is registered: the Task Scheduler's own file where this user
/// may read its folder (Wine, administrators), else `schtasks /Query` (which Wine's schtasks
/// does not implement, and answers with success).
fn task_exists(name: &str) -> bool {
    match tasks_folder().filter(|folder| std::fs::read_dir(folder).is_ok()) {
        Some(folder) => folder.join(name).exists(),
        None => schtasks(&["/Query", "/TN", name], None, &[]).is_ok(),
    }
}

/// Where the Task Scheduler keeps task definitions.
fn tasks_folder() -> Option<PathBuf> {
    let windir = std::env::var_os("SystemRoot").or_else(|| std::env::var_os("windir"))?;
    Some(PathBuf::from(windir).join("System32").join("Tasks"))
}

/// Runs `schtasks <args> [file] <tail>`; an error carries its output.
fn schtasks(args: &[&str], file: Option<&Path>, tail: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("schtasks");
    command.args(args);
    if let Some(file) = file {
        command.arg(file);
    }
    command.args(tail);
    let output = command.output().context("cannot run schtasks")?;
    if output.status.success() {
        return Ok(());
    }
    let said = format!("{} {}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::bail!("schtasks {} failed ({}): {}", args.join(" "), output.status, said.trim())
}

/// `DOMAIN\user` of the installing user, for the logon trigger.
fn current_user() -> Option<String> {
    let user = std::env::var("USERNAME").ok().filter(|u| !u.is_empty())?;
    Some(match std::env::var("USERDOMAIN") {
        Ok(domain) if !domain.is_empty() => format!("{domain}\\{user}"),
        _ => user,
    })
}

/// A path without the `\\?\` prefix `canonicalize` adds, which the Task Scheduler and many
/// programs do not understand (only for drive paths, where dropping it is lossless).
fn plain_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    match text.strip_prefix(r"\\?\") {
        Some(rest) if rest.as_bytes().get(1) == Some(&b':') => PathBuf::from(rest),
        _ => path.to_path_buf(),
    }
}

/// The task's arguments: `--config-dir "<dir>" run`.
fn arguments(dir: &Path) -> String {
    format!("--config-dir {} run", quote_arg(&dir.to_string_lossy()))
}

/// Quotes one argument for the usual Windows command-line parsing (`CommandLineToArgvW`):
/// backslashes are literal except before a quote, so those before the closing quote double.
fn quote_arg(arg: &str) -> String {
    let mut quoted = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        if c == '\\' {
            backslashes += 1;
            continue;
        }
        let escapes = if c == '"' { backslashes * 2 + 1 } else { backslashes };
        quoted.extend(std::iter::repeat_n('\\', escapes));
        quoted.push(c);
        backslashes = 0;
    }
    quoted.extend(std::iter::repeat_n('\\', backslashes * 2));
    quoted.push('"');
    quoted
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// The task definition (Task Scheduler schema 1.2).
fn task_xml(exe: &Path, dir: &Path, user: Option<&str>) -> String {
    let user_id = user.map(|u| format!("<UserId>{}</UserId>", xml_escape(u))).unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>botmox agent: runs and supervises this host's bots for a botmox server.</Description>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger><Enabled>true</Enabled>{user_id}</LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author"><LogonType>InteractiveToken</LogonType><RunLevel>LeastPrivilege</RunLevel></Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure><Interval>PT1M</Interval><Count>999</Count></RestartOnFailure>
    <Enabled>true</Enabled>
  </Settings>
  <Actions Context="Author">
    <Exec><Command>{command}</Command><Arguments>{arguments}</Arguments></Exec>
  </Actions>
</Task>
"#,
        command = xml_escape(&exe.to_string_lossy()),
        arguments = xml_escape(&arguments(dir)),
    )
}

/// schtasks reads task XML as UTF-16 (the declaration says so).
fn utf16_with_bom(text: &str) -> Vec<u8> {
    std::iter::once(0xFEFF_u16).chain(text.encode_utf16()).flat_map(u16::to_le_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_arguments_for_the_windows_command_line() {
        assert_eq!(quote_arg(r"C:\Users\a b\botmox"), r#""C:\Users\a b\botmox""#);
        // A trailing backslash would escape the closing quote: it is doubled.
        assert_eq!(quote_arg(r"C:\"), r#""C:\\""#);
        assert_eq!(quote_arg(r#"a"b"#), r#""a\"b""#);
    }

    #[test]
    fn the_task_runs_this_exe_on_this_dir_without_a_time_limit() {
        let xml =
            task_xml(Path::new(r"C:\Program Files\botmox\botmox-agent.exe"), Path::new(r"C:\a&b"), Some(r"HOST\ann"));
        assert!(xml.contains(r"<Command>C:\Program Files\botmox\botmox-agent.exe</Command>"), "{xml}");
        assert!(xml.contains(r"<Arguments>--config-dir &quot;C:\a&amp;b&quot; run</Arguments>"), "{xml}");
        assert!(xml.contains(r"<UserId>HOST\ann</UserId>"), "{xml}");
        assert!(xml.contains("<ExecutionTimeLimit>PT0S</ExecutionTimeLimit>"), "the 72 h default would kill the agent");
        assert_eq!(plain_path(Path::new(r"\\?\C:\x\y.exe")), PathBuf::from(r"C:\x\y.exe"));
        assert_eq!(plain_path(Path::new(r"\\?\UNC\srv\share")), PathBuf::from(r"\\?\UNC\srv\share"));
    }

    /// Registers and removes a real task through schtasks (a unique name, so it never touches
    /// an installed agent).
    #[test]
    fn installs_and_uninstalls_a_logon_task() -> anyhow::Result<()> {
        let name = format!("botmox-agent-test-{}", std::process::id());
        let dir = tempfile::tempdir()?;
        // A program that does not exist: on a real Windows the task's immediate start fails
        // harmlessly instead of running anything.
        let exe = dir.path().join("botmox-agent.exe");
        let said = install_task(&name, &exe, dir.path())?;
        assert!(said.contains(&name) && said.contains("--config-dir"), "{said}");
        assert!(task_exists(&name), "the task is registered");
        assert!(!dir.path().join(format!(".{name}.task.xml")).exists(), "the XML file is not left behind");
        let removed = uninstall_task(&name)?;
        assert!(removed.contains("removed"), "{removed}");
        assert!(!task_exists(&name), "the task is gone");
        let again = uninstall_task(&name)?;
        assert!(again.contains("nothing to remove"), "{again}");
        Ok(())
    }
}
