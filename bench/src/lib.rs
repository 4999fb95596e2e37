//! `reap3r-bench`: a fleet simulator and the load scenarios of docs/BENCHMARKS.md.
//!
//! Simulated agents ([`sim`]) speak the real protocol over real QUIC to a `reap3r serve` child
//! process ([`server`]); scenarios ([`scenarios`]) measure it and, with `--peer nats`, the same
//! workloads against a nats-server ([`nats`]). Results are a [`report::Report`]: figures,
//! correctness checks and the design targets.

pub mod http;
pub mod load;
pub mod nats;
pub mod proxy;
pub mod report;
pub mod scenarios;
pub mod server;
pub mod sim;
pub mod stats;
pub mod transport;
pub mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Enrol and connect N agents: time to all online, server RSS per agent, server CPU.
    Connect,
    /// Heartbeats and metrics at a fixed rate: messages/s ingested, CPU per message, p99 latency.
    Steady,
    /// A no-op job to all N agents: time until every result is stored, per-result p50/p99.
    Fanout,
    /// Restart the server under N connected agents: time until all are back, API latency.
    Storm,
    /// A fan-out through a UDP impairment relay: every result exactly once, p50/p99.
    Lossy,
    /// Metrics with alert rules: ingestion, threshold → webhook latency, storage per agent-day.
    Alerting,
    /// A remote shell on a real agent: keystroke-to-echo latency, direct and impaired.
    Shell,
    /// File push and pull to a real agent: MB/s and server CPU per MB, direct and impaired.
    Transfer,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Steady => "steady",
            Self::Fanout => "fanout",
            Self::Storm => "storm",
            Self::Lossy => "lossy",
            Self::Alerting => "alerting",
            Self::Shell => "shell",
            Self::Transfer => "transfer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    Nats,
}

/// Command line of `reap3r-bench`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "reap3r-bench",
    version,
    about = "Fleet simulator and load scenarios for reap3r"
)]
pub struct Options {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Simulated agents.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub agents: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run the workload against this peer (fanout and steady).
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Server binary to start (default: `reap3r` next to this executable).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Server log filter (REAP3R_LOG); the log goes to server.log beside the data dir.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Keep the server's data dir here instead of a temporary directory. The enrolled agents'
    /// identities are saved there too (bench-fleet.txt), and a later run with as many or fewer
    /// agents against the same dir reuses them instead of enrolling again.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use a running server: its QUIC address (needs --http-addr and --data-dir).
    #[arg(long, requires_all = ["http_addr", "data_dir"])]
    pub quic_addr: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
    /// The running server's pid, for RSS and CPU figures.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Record a CPU profile of the server with `perf record` during the measured phase
    /// (connect: connecting; steady: the load window; fanout, lossy: the jobs; storm: restart
    /// until all are back) into this file; read it with `perf report -i FILE`.
    #[arg(long)]
    pub perf: Option<PathBuf>,
    /// Server heartbeat interval (REAP3R_HEARTBEAT_INTERVAL_S), which agents follow.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_interval_s: u32,
    /// Server handshake admission (REAP3R_MAX_CONCURRENT_HANDSHAKES); server default if unset.
    #[arg(long)]
    pub max_handshakes: Option<usize>,
    /// Server shutdown grace (REAP3R_SHUTDOWN_GRACE_S).
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace_s: u64,

    /// Agents sharing one client endpoint (UDP socket).
    #[arg(long, default_value_t = 1000)]
    pub agents_per_endpoint: usize,
    /// First connections in flight at once.
    #[arg(long, default_value_t = 256)]
    pub ramp: usize,
    /// Enrolments in flight at once.
    #[arg(long, default_value_t = 32)]
    pub enrol_concurrency: usize,
    /// Reconnect backoff cap, ms (the real agent's default is 60000).
    #[arg(long, default_value_t = 60_000)]
    pub max_backoff_ms: u64,
    /// Agents do not send metrics on their own timer.
    #[arg(long)]
    pub no_metrics: bool,
    /// Deadline for each waiting phase (all online, all results, all back), seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,

    /// connect: seconds to let the server settle before reading RSS.
    #[arg(long, default_value_t = 3)]
    pub settle_s: u64,

    /// steady: heartbeats per second, all agents together.
    #[arg(long, default_value_t = 30_000.0)]
    pub rate: f64,
    /// steady: metrics samples per second (default: rate / 2, the real agent's mix).
    #[arg(long)]
    pub metrics_rate: Option<f64>,
    /// steady: seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// steady: fraction of heartbeats allowed to go missing before the check fails.
    #[arg(long, default_value_t = 0.01)]
    pub loss_allowance: f64,
    /// steady: how often the server's counters are sampled, ms (the latency resolution).
    #[arg(long, default_value_t = 10)]
    pub sample_ms: u64,

    /// fanout, lossy: jobs run one after another.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// fanout, lossy: fraction of agents whose connection is cut once while each job runs (at
    /// 50 ms, 250 ms and 1 s after the POST), so results are replayed after reconnects.
    /// Default: 0.1 for lossy, 0 for fanout.
    #[arg(long)]
    pub cut: Option<f64>,
    /// fanout, lossy: the job's timeout_s.
    #[arg(long, default_value_t = 60)]
    pub job_timeout_s: u32,

    /// shell: keystrokes timed per leg (direct, impaired).
    #[arg(long, default_value_t = 300)]
    pub keystrokes: usize,
    /// transfer: the file's size, MiB.
    #[arg(long, default_value_t = 64)]
    pub file_mb: usize,

    /// lossy, shell, transfer: packet loss per direction (0–1).
    #[arg(long, default_value_t = 0.10)]
    pub loss: f64,
    /// lossy: added round-trip time, ms (half each way).
    #[arg(long, default_value_t = 100)]
    pub rtt_ms: u64,
    /// lossy: uniform jitter on each one-way delay, ms.
    #[arg(long, default_value_t = 10)]
    pub jitter_ms: u64,
    /// lossy: fraction of packets held back one extra delay.
    #[arg(long, default_value_t = 0.01)]
    pub reorder: f64,
    /// lossy: fraction of packets duplicated.
    #[arg(long, default_value_t = 0.01)]
    pub duplicate: f64,
    /// storm: API sampling period, ms.
    #[arg(long, default_value_t = 100)]
    pub api_sample_ms: u64,

    /// The server's database (REAP3R_DATABASE_URL, e.g. a PostgreSQL URL); its SQLite file in
    /// the data dir if unset.
    #[arg(long)]
    pub database_url: Option<String>,

    /// alerting: the metrics interval the server pushes to agents, seconds.
    #[arg(long, default_value_t = 10)]
    pub metrics_interval_s: u32,
    /// alerting: threshold rules enabled (one of them fires for the hot agents).
    #[arg(long, default_value_t = 100)]
    pub rules: usize,
    /// alerting: agents that cross the threshold.
    #[arg(long, default_value_t = 100)]
    pub hot: usize,
    /// alerting: the firing rule's `for`, seconds.
    #[arg(long, default_value_t = 30)]
    pub alert_for_s: u32,
    /// alerting: seconds of ingestion measured before the crossing.
    #[arg(long, default_value_t = 60)]
    pub ingest_s: u64,
    /// alerting: agents in the simulated storage day (0: no storage measure).
    #[arg(long, default_value_t = 20)]
    pub storage_agents: usize,
    /// alerting: also measure storage on a fresh database created on this PostgreSQL server
    /// (an admin URL such as postgres://postgres@127.0.0.1:5432/postgres; dropped afterwards).
    #[arg(long)]
    pub storage_postgres_url: Option<String>,
}

impl Options {
    /// Options as the command line would give them (for tests and scripts).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(
            std::iter::once("reap3r-bench".into()).chain(args.into_iter().map(Into::into)),
        )
    }
}

/// Entry point of the `reap3r-bench` binary: exit 0 when every check passed, 1 when a check
/// failed, 2 when the run could not be made (including an unreachable requested peer).
pub fn main_entry() -> ExitCode {
    reap3r_control_plane::install_crypto_provider();
    let opts = Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("reap3r-bench: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(scenarios::run(&opts)) {
        Ok(report) => {
            if opts.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("reap3r-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
