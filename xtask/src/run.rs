//! `cargo xtask run`: build and start the product for a person to try: the web panel
//! (`panel::build`, embedded in the binary), then `botmox serve` on 127.0.0.1:8080 with its
//! data in `.botmox/` and a demo admin password that stays the same across runs
//! (`.botmox/admin-password`), then a local agent and a demo bot ([`demo`]). The processes
//! run under [`Supervisor`]: Ctrl-C stops them all.

use std::fs;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};

use crate::children::{Outcome, Supervisor};
use crate::{cmd, demo, panel};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DATA_DIR: &str = ".botmox";
const PASSWORD_FILE: &str = "admin-password";
const PASSWORD_LEN: usize = 20;

pub fn run(args: &[String]) -> Result<ExitCode> {
    // Everything is for `botmox serve`; a leading `--` (from `cargo xtask run -- …`) is noise.
    let serve_args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);

    panel::build()?;
    cmd::step("cargo build -p botmox-control-plane -p botmox-agent");
    cmd::run(cmd::cargo().args(["build", "-p", "botmox-control-plane", "-p", "botmox-agent"]))?;
    let bin = |name: &str| cmd::target_dir().join("debug").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let botmox = bin("botmox");

    let root = cmd::repo_root();
    let mut serve = Command::new(&botmox);
    serve.current_dir(&root).arg("serve");
    // Our defaults go in only where neither a flag nor the server's own env var says
    // otherwise: clap refuses a flag given twice, and env should keep working as documented.
    let listen = setting(serve_args, "--listen", "BOTMOX_LISTEN");
    if listen.is_none() {
        serve.args(["--listen", DEFAULT_LISTEN]);
    }
    let data_dir = setting(serve_args, "--data-dir", "BOTMOX_DATA_DIR");
    if data_dir.is_none() {
        serve.args(["--data-dir", DEFAULT_DATA_DIR]);
    }
    serve.args(serve_args);
    let listen = listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let data_dir = root.join(data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()));

    let password = admin_password(&data_dir)?;
    serve.env("BOTMOX_ADMIN_PASSWORD", &password.value);
    let username =
        std::env::var("BOTMOX_ADMIN_USERNAME").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "admin".to_owned());

    let url = browser_url(&listen);
    let mut supervisor = Supervisor::new()?;
    supervisor.spawn("botmox", &mut serve)?;

    // The demo (a local agent and a bot) is a bonus: if it cannot start, the server stays up
    // and says why.
    let demo = demo::wait_ready(&url).and_then(|()| {
        demo::start(&mut supervisor, &bin("botmox-agent"), &url, (&username, &password.value), &data_dir)
    });
    println!();
    println!("    botmox       {url}");
    println!("    log in as    {username} / {}", password.value);
    println!("    API docs     {url}/docs");
    println!("    data         {}", data_dir.display());
    match &demo {
        Ok(demo) => {
            println!("    demo bot     `{}` on agent `local-demo`, running:", demo::BOT_NAME);
            println!("                 {url}/api/v1/bots/{}/logs?follow=true (with the admin's token)", demo.bot_id);
            println!(
                "                 or: {} --config-dir {} status",
                bin("botmox-agent").display(),
                demo.agent_dir.display()
            );
        }
        Err(err) => println!("    demo         not started: {err:#}"),
    }
    if let Some(note) = password.note {
        println!("    note         {note}");
    }
    println!("    stop         Ctrl-C");
    println!();

    // Ctrl-C stops the demo bot first (a bot outlives its agent by design; the demo's should
    // not outlive the demo).
    let stop_demo = || {
        if let Ok(demo) = &demo {
            demo::stop(&url, (&username, &password.value), &demo.bot_id);
        }
    };
    Ok(match supervisor.wait_and(stop_demo) {
        Outcome::Interrupted => ExitCode::SUCCESS,
        Outcome::ChildExited { name, status } => {
            if !status.success() {
                eprintln!("xtask: {name} failed ({status}); its output above says why");
            }
            cmd::exit_code(status)
        }
    })
}

/// The value of `--flag value` / `--flag=value` in `args` (last one wins, as in clap), else
/// of the environment variable `env`.
fn setting(args: &[String], flag: &str, env: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            found = iter.next().cloned();
        } else if let Some(value) = arg.strip_prefix(&prefix) {
            found = Some(value.to_owned());
        }
    }
    found.or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

/// What to open in a browser for a listen address (a wildcard bind is reachable on loopback).
fn browser_url(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("http://127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("http://[::1]:{port}")
    } else {
        format!("http://{listen}")
    }
}

struct AdminPassword {
    value: String,
    /// Something the person should know about where the password came from.
    note: Option<String>,
}

/// `BOTMOX_ADMIN_PASSWORD` if set, else the one kept in `<data dir>/admin-password`,
/// created with a random value on first use.
fn admin_password(data_dir: &Path) -> Result<AdminPassword> {
    if let Ok(value) = std::env::var("BOTMOX_ADMIN_PASSWORD") {
        if !value.is_empty() {
            return Ok(AdminPassword {
                value,
                note: Some("admin password taken from BOTMOX_ADMIN_PASSWORD".to_owned()),
            });
        }
    }

    let path = data_dir.join(PASSWORD_FILE);
    match fs::read_to_string(&path) {
        Ok(contents) => {
            let value = contents.trim().to_owned();
            if value.is_empty() {
                bail!("{} is empty; delete it to get a new password", path.display());
            }
            return Ok(AdminPassword { value, note: None });
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("could not read {}", path.display())),
    }

    let value = random_password(PASSWORD_LEN)?;
    write_private(&path, &value)?;
    // The server only creates the admin on first start: an existing database keeps whatever
    // password its admin got back then.
    let existing_db = data_dir.join("botmox.db");
    let note = (std::env::var_os("DATABASE_URL").is_none() && existing_db.exists()).then(|| {
        format!(
            "{} existed before this password; if login fails, run `botmox admin reset-password`",
            existing_db.display()
        )
    });
    Ok(AdminPassword { value, note })
}

/// Creates `path` (and its directory) readable only by the owner on Unix.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("could not create {}", path.display()))?;
    writeln!(file, "{contents}").with_context(|| format!("could not write {}", path.display()))
}

/// A random alphanumeric password. Rejection sampling keeps the 62 symbols equally likely.
fn random_password(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The largest multiple of 62 that fits in a byte: 248.
    let limit = 256 - 256 % ALPHABET.len();
    let mut password = String::with_capacity(len);
    while password.len() < len {
        for byte in random_bytes(64)? {
            if usize::from(byte) < limit && password.len() < len {
                password.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    Ok(password)
}

/// OS randomness without a crate: `/dev/urandom` on Unix; elsewhere std's `RandomState`,
/// whose SipHash keys come from the OS generator, hashing a counter.
fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0; n];
    if cfg!(unix) {
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("could not read /dev/urandom")?;
        return Ok(bytes);
    }
    let state = std::collections::hash_map::RandomState::new();
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        let word = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn setting_reads_both_flag_forms_last_wins() {
        let args = strings(&["--listen", "0.0.0.0:1", "--listen=127.0.0.1:2"]);
        assert_eq!(setting(&args, "--listen", "XTASK_TEST_UNSET_VAR").as_deref(), Some("127.0.0.1:2"));
        assert_eq!(setting(&args, "--data-dir", "XTASK_TEST_UNSET_VAR"), None);
    }

    #[test]
    fn wildcard_binds_open_on_loopback() {
        assert_eq!(browser_url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(browser_url("[::]:9000"), "http://[::1]:9000");
        assert_eq!(browser_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    #[test]
    fn passwords_are_alphanumeric_and_differ() -> Result<()> {
        let a = random_password(PASSWORD_LEN)?;
        let b = random_password(PASSWORD_LEN)?;
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        Ok(())
    }
}
