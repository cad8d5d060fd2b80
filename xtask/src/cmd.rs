//! Spawning external programs (cargo, pg_isready, …) with readable errors: where the repo
//! is, which cargo to use, how to print a step header, and how to turn a failed exit status
//! into an error that names the command line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use anyhow::{bail, Context as _, Result};

/// The workspace root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` like cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    }
}

/// A `cargo` command run from the repo root, using the same cargo that launched xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root());
    cmd
}

/// Prints a step header such as `==> cargo clippy`.
pub fn step(title: &str) {
    println!("==> {title}");
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` with inherited stdio and returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().with_context(|| format!("could not start `{}`", display(cmd)))
}

/// Whether `cmd` runs and exits successfully, with all output discarded.
pub fn succeeds_quietly(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The full path of `program` if it is an executable file on `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let file_name = format!("{program}{}", std::env::consts::EXE_SUFFIX);
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(&file_name)).find(|candidate| candidate.is_file())
}

/// Maps a child's exit status to our own exit code (a signal becomes a plain failure).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// `program arg1 arg2 …` for messages (the program without its directory: `CARGO` is
/// usually a long toolchain path that says nothing useful).
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let program = program.file_stem().unwrap_or(program.as_os_str());
    std::iter::once(program).chain(cmd.get_args()).map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
}

/// `cargo nextest run -p botmox-e2e --test <test> --run-ignored only --no-capture`: an
/// end-to-end test left out of the plain run because it needs something installed first.
pub fn ignored_e2e(cargo: &impl Fn() -> Command, test: &str) -> Command {
    let mut command = cargo();
    command.args(["nextest", "run", "-p", "botmox-e2e", "--test", test, "--run-ignored", "only", "--no-capture"]);
    command
}
