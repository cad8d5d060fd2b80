//! `cargo xtask bench`: the project's benchmark (SPEC §9) with everything it needs: the test
//! Postgres up and release builds of the binaries it starts. The benchmark itself is the
//! `bench` binary of `botmox-e2e` (tests/src/bin/bench.rs); arguments after `--` go to it.

use std::process::ExitCode;

use anyhow::Result;

use crate::{cmd, panel, postgres};

pub fn bench(args: &[String]) -> Result<ExitCode> {
    let bench_args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);

    cmd::step("Postgres for the benchmark");
    let pg_url = postgres::ensure_running()?;

    // The release `botmox` embeds the panel, which the `panel` benchmark loads in Chromium.
    panel::build()?;
    // Numbers from debug builds mean nothing; build the binaries the bench starts first.
    cmd::step("cargo build --release -p botmox-control-plane -p botmox-agent");
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "botmox-control-plane", "-p", "botmox-agent"]))?;

    cmd::step("cargo run --release -p botmox-e2e --bin bench");
    let status = cmd::status(
        cmd::cargo()
            .env(postgres::URL_VAR, &pg_url)
            .args(["run", "--release", "-p", "botmox-e2e", "--bin", "bench", "--"])
            .args(bench_args),
    )?;
    Ok(cmd::exit_code(status))
}
