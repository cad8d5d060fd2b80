//! `bench`: the project's benchmark (run it with `cargo xtask bench`, which starts Postgres and
//! builds in release mode). See `botmox_e2e::bench` for the harness and the benchmarks.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    botmox_e2e::bench::main(botmox_e2e::bench::Options::parse()).await
}
