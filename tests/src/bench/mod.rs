//! The benchmark harness behind `cargo xtask bench` (SPEC §9: targets are reported as numbers,
//! not asserted by timed tests). Each benchmark is an entry of [`BENCHES`]: a name for
//! `--only`, and a function that runs once per selected backend and returns a [`Report`], which
//! the harness prints as one labelled block. A new benchmark is a module plus one entry.

mod agent;
mod api_queue;
mod bot_create;
mod fleet;
mod panel;
mod queue;

use std::{fmt, future::Future, pin::Pin, time::Duration};

use clap::{Parser, ValueEnum};

use crate::db::Backend;

/// `bench [--only NAME]… [--backend sqlite|postgres|both]` plus each benchmark's knobs.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench", about = "botmox benchmarks (SPEC §9); figures, not pass/fail")]
pub struct Options {
    /// Run only these benchmarks (repeat or comma-separate); default: all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// List the benchmarks and exit.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub queue: queue::QueueOptions,
    #[command(flatten)]
    pub fleet: fleet::FleetOptions,
    #[command(flatten)]
    pub agent: agent::AgentOptions,
    #[command(flatten)]
    pub api_queue: api_queue::ApiQueueOptions,
    #[command(flatten)]
    pub panel: panel::PanelOptions,
    #[command(flatten)]
    pub bot_create: bot_create::BotCreateOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

impl BackendChoice {
    fn backends(self) -> Vec<Backend> {
        match self {
            BackendChoice::Sqlite => vec![Backend::Sqlite],
            BackendChoice::Postgres => vec![Backend::Postgres],
            BackendChoice::Both => vec![Backend::Sqlite, Backend::Postgres],
        }
    }
}

type BenchFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Vec<Report>>> + 'a>>;

/// One benchmark: `run` is called once per selected backend and returns one report per
/// configuration it measured.
pub struct Bench {
    pub name: &'static str,
    pub about: &'static str,
    pub run: for<'a> fn(&'a Options, Backend) -> BenchFuture<'a>,
}

/// Every benchmark, in the order they run.
pub const BENCHES: &[Bench] = &[
    Bench {
        name: "queue",
        about: "store level: the command queue's full lifecycle through store calls (enqueue → claim → ack → complete)",
        run: |options, backend| Box::pin(queue::run(&options.queue, backend)),
    },
    Bench {
        name: "api-queue",
        about:
            "the queue through the API with 100 agents: one bulk action of 10,000 starts; 32 clients of single stops",
        run: |options, backend| Box::pin(api_queue::run(&options.api_queue, backend)),
    },
    Bench {
        name: "bot-create",
        about: "8 clients creating bots one by one through POST /bots; one POST /bots/import of 10,000 bots",
        run: |options, backend| Box::pin(bot_create::run(&options.bot_create, backend)),
    },
    Bench {
        name: "dispatch",
        about: "API start → command frame at a connected simulated agent (1,000 agents)",
        run: |options, backend| Box::pin(fleet::dispatch(&options.fleet, backend)),
    },
    Bench {
        name: "fleet",
        about: "server CPU and RSS with 10,000 simulated agents heartbeating every 5 s",
        run: |options, backend| Box::pin(fleet::fleet(&options.fleet, backend)),
    },
    Bench {
        name: "registry",
        about: "GET /bots?limit=100 and GET /dashboard with 100,000 bots",
        run: |options, backend| Box::pin(fleet::registry(&options.fleet, backend)),
    },
    Bench {
        name: "agent",
        about: "the real agent: size, RSS and CPU idle and with 20 bots, click-to-running, crash → running",
        run: |options, backend| Box::pin(agent::agent(&options.agent, backend)),
    },
    Bench {
        name: "panel",
        about: "the web panel in Chromium with 10,000 bots on 1,000 simulated agents",
        run: |options, backend| Box::pin(panel::panel(&options.panel, backend)),
    },
    Bench {
        name: "offline",
        about: "real agents killed with SIGKILL → marked offline by the server",
        run: |options, backend| Box::pin(agent::offline(&options.agent, backend)),
    },
];

/// Runs the selected benchmarks and prints their blocks. Fails on an unknown name or when a
/// benchmark fails (a figure that could not be measured is not a figure).
pub async fn main(options: Options) -> anyhow::Result<()> {
    if options.list {
        for bench in BENCHES {
            println!("{:<10} {}", bench.name, bench.about);
        }
        return Ok(());
    }
    for name in &options.only {
        if !BENCHES.iter().any(|b| b.name == name) {
            let known: Vec<_> = BENCHES.iter().map(|b| b.name).collect();
            anyhow::bail!("unknown benchmark `{name}` (known: {})", known.join(", "));
        }
    }
    let selected = BENCHES.iter().filter(|b| options.only.is_empty() || options.only.iter().any(|n| n == b.name));
    // Figures are only as good as the machine was quiet: say how busy it was.
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("machine: {cores} cores, load average {} (1/5/15 min) at start\n", load_average());
    for bench in selected {
        for backend in options.backend.backends() {
            for report in (bench.run)(&options, backend).await? {
                println!("{report}");
            }
        }
    }
    Ok(())
}

/// The 1/5/15-minute load averages (Linux), or "n/a": a benchmark adds it to its figures,
/// since they are only as good as the machine was quiet.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

/// What a benchmark measured on one backend, printed as one block.
pub struct Report {
    pub bench: &'static str,
    pub backend: Backend,
    pub about: String,
    /// `(label, value)` lines, in order.
    pub figures: Vec<(String, String)>,
    /// Latency distributions, one row each.
    pub latencies: Vec<(String, Samples)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {} [{}] ==", self.bench, self.backend)?;
        writeln!(f, "   {}", self.about)?;
        for (label, value) in &self.figures {
            writeln!(f, "   {label:<22} {value}")?;
        }
        if !self.latencies.is_empty() {
            writeln!(f, "   {:<22} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency", "n", "p50", "p90", "p99", "max")?;
            for (label, samples) in &self.latencies {
                writeln!(
                    f,
                    "   {label:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    samples.len(),
                    ms(samples.quantile(0.50)),
                    ms(samples.quantile(0.90)),
                    ms(samples.quantile(0.99)),
                    ms(samples.quantile(1.0)),
                )?;
            }
        }
        Ok(())
    }
}

/// A millisecond figure with enough digits to be useful from 10 µs to seconds.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.3}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

/// Latency samples. A sorted vector is exact and cheap at benchmark sizes (≤ a few 100k), so
/// no histogram crate is needed.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<Duration>,
}

impl Samples {
    pub fn record(&mut self, d: Duration) {
        self.values.push(d);
    }

    pub fn extend(&mut self, other: Samples) {
        self.values.extend(other.values);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `q` quantile (nearest rank), 0 when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.values.is_empty() {
            return Duration::ZERO;
        }
        let mut values = self.values.clone();
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }
}
