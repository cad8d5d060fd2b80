//! `cargo xtask <command>`: the project's automation, written in Rust so that it runs the
//! same on Linux, Windows and CI (matklad's "Large Rust Workspaces": no pile of shell).
//!
//! This file owns only the command-line dispatch; each command lives in its own module:
//! `run` (start the product), `test` (every check CI runs; `tray` its tray step, `windows`
//! its Windows-agent step under Wine, `panel` the web panel's build and browser test),
//! `openapi` (the panel's API snapshot and types), `bench` (the benchmark), `fuzz` (the API
//! fuzzing step: schemathesis against a real server).
//! Shared plumbing: `children` (a tiny process supervisor), `postgres` (make sure the test
//! database is up), `cmd` (spawning cargo and friends with readable errors), `debian`
//! (installing missing Debian packages).

mod bench;
mod children;
mod cmd;
mod debian;
mod demo;
mod fuzz;
mod panel;
mod postgres;
mod run;
mod test;
mod tray;
mod windows;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <command> [options] [-- extra args]

commands:
  run   [-- serve args]     build the web panel and botmox, start it on http://127.0.0.1:8080
                            (data in .botmox/, admin password in .botmox/admin-password);
                            extra args go to `botmox serve`, e.g. `-- --listen 127.0.0.1:9000`
  test  [--quick] [--no-windows] [-- args]
                            every check CI runs: the panel built (npm ci, vite), Postgres up,
                            fmt, clippy, nextest, then the Caddy stack test (installs
                            Debian's caddy if missing), then the panel's vitest and Chromium test
                            (installs Debian's chromium if missing), then the tray build and its Xvfb screenshot test (Linux; installs missing
                            Debian packages), then the Windows agent cross-built and tested
                            under Wine (Linux x86_64; installs mingw-w64 and Wine if missing);
                            --quick skips fmt and clippy, --no-windows the Windows step;
                            extra args go to `cargo nextest run`
  test-windows [--quick]    only the Windows step of `test` (cross-build, Wine, e2e)
  test-panel                only the web panel's steps of `test` (build, vitest, Chromium e2e)
  fuzz-api                  only the API fuzzing step of `test`: schemathesis (PyPI) against
                            a real server's OpenAPI document (BOTMOX_FUZZ_EXAMPLES, BOTMOX_FUZZ_SEED)
  openapi                   rewrite frontend/openapi.json from the server's code and regenerate
                            the panel's API types (after an API change)
  bench [-- args]           release build, then the benchmark (`botmox-e2e --bin bench`)
  help                      this text

environment:
  BOTMOX_TEST_PG_URL        Postgres for tests and bench
                            (default postgres://postgres@127.0.0.1:5432/postgres)
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();

    let result = match command.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        Some("run") => run::run(&rest),
        Some("test") => test::test(&rest),
        Some("test-windows") => windows::test_only(&rest),
        Some("test-panel") => panel::test_only(),
        Some("openapi") => panel::openapi(),
        Some("fuzz-api") => fuzz_only(),
        Some("bench") => bench::bench(&rest),
        Some(other) => {
            eprint!("xtask: unknown command `{other}`\n\n{HELP}");
            return ExitCode::from(2);
        }
    };

    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `args` at the first `--`: options for xtask before it, pass-through args after it.
///
/// Cargo's alias already consumes one `--`, so `cargo xtask test -- -E 'test(x)'` arrives
/// here as `test -- -E …`, while `cargo xtask run --listen …` arrives without one.
fn split_passthrough(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

/// `cargo xtask fuzz-api`: the API fuzzing step alone.
fn fuzz_only() -> anyhow::Result<ExitCode> {
    fuzz::checks(&cmd::cargo)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::split_passthrough;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_at_first_double_dash() {
        let args = strings(&["--quick", "--", "-E", "--", "x"]);
        let (own, pass) = split_passthrough(&args);
        assert_eq!(own, strings(&["--quick"]));
        assert_eq!(pass, strings(&["-E", "--", "x"]));
    }

    #[test]
    fn without_double_dash_everything_is_own() {
        let args = strings(&["--quick"]);
        let (own, pass) = split_passthrough(&args);
        assert_eq!(own, strings(&["--quick"]));
        assert!(pass.is_empty());
    }
}
