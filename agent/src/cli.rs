//! The `reap3r-agent` command line: `enrol` and `run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{EnrolOptions, RunOptions};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "reap3r-agent", version, about = "Reap3r endpoint agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register with a server using an enrolment token; stores identity and pins.
    #[command(name = "enroll", alias = "enrol")]
    Enrol {
        #[arg(long)]
        server: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        fingerprint: String,
        #[arg(long)]
        server_key: String,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Connect and stay connected until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        data_dir: PathBuf,
        /// Upper bound of the reconnect backoff.
        #[arg(long, env = "REAP3R_AGENT_MAX_BACKOFF_MS", default_value_t = 60_000)]
        max_backoff_ms: u64,
        /// Command run by reboot and shutdown jobs, as `<cmd> -r|-h now|+<minutes>`.
        #[arg(long, env = "REAP3R_AGENT_POWER_COMMAND", default_value = "shutdown")]
        power_command: String,
        /// The shell remote shells run (default: /bin/bash, else /bin/sh); `off` turns remote
        /// shells off.
        #[arg(long, env = "REAP3R_AGENT_SHELL")]
        shell: Option<String>,
        /// Whether the server may push files to this agent and pull files from it.
        #[arg(long, env = "REAP3R_AGENT_FILES", value_enum, default_value_t = Switch::On)]
        files: Switch,
    },
}

/// A feature turned on or off on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

/// Entry point of the agent binary (also used by the end-to-end test binaries).
pub fn main_entry() -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    runtime.block_on(main_async())
}

async fn main_async() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REAP3R_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Enrol {
            server,
            token,
            fingerprint,
            server_key,
            data_dir,
        } => {
            match crate::enrol(&EnrolOptions {
                server,
                token,
                fingerprint,
                server_key,
                data_dir,
            })
            .await
            {
                Ok(outcome) => {
                    let state = if outcome.pending_approval {
                        "pending approval"
                    } else {
                        "approved"
                    };
                    println!("enrolled as {} ({state})", outcome.agent_id);
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("enrolment failed: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            data_dir,
            max_backoff_ms,
            power_command,
            shell,
            files,
        } => {
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                let _ = tx.send(true);
            });
            let mut opts = RunOptions::new(data_dir);
            opts.max_backoff = Duration::from_millis(max_backoff_ms);
            opts.base_backoff = opts.base_backoff.min(opts.max_backoff);
            opts.power_command = power_command;
            opts.shell = match shell.as_deref() {
                None => Some(crate::default_shell()),
                Some("off") => None,
                Some(path) => Some(PathBuf::from(path)),
            };
            opts.files = files == Switch::On;
            match crate::run(opts, rx).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("agent stopped: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
