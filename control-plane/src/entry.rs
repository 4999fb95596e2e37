//! The `reap3r` entry point: validates configuration before binding anything (exit 64 on
//! errors), then serves, runs the demo, or runs an admin command.

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{Config, EXIT_CONFIG};
use crate::{demo, install_crypto_provider, serve};
use clap::Parser;

/// Entry point of the `reap3r` binary (also used by the end-to-end test binaries).
pub fn main_entry() -> ExitCode {
    install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REAP3R_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Command::Openapi { out } = &cli.command {
        return write_openapi(out.as_deref());
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(config).await,
            Command::Demo { agents } => demo::run(config, agents).await,
            admin => {
                let out = crate::cli::run_admin(&config, admin).await?;
                print!("{out}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // A missing or wrong master key is a configuration error, like a bad setting.
            let vault = err
                .downcast_ref::<crate::node::NodeError>()
                .is_some_and(|e| matches!(e, crate::node::NodeError::Vault(_)))
                || err
                    .downcast_ref::<reap3r_actors::vault::UnlockError>()
                    .is_some();
            if vault {
                ExitCode::from(EXIT_CONFIG as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `reap3r openapi`: needs no configuration, store or identity.
fn write_openapi(out: Option<&std::path::Path>) -> ExitCode {
    let spec = reap3r_api::openapi_json();
    match out {
        None => {
            println!("{spec}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, format!("{spec}\n")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("cannot write {}: {err}", path.display());
                ExitCode::FAILURE
            }
        },
    }
}
