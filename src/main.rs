//! `glimpse`: the command line over the collector and query service.

mod app;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

/// Glimpse: privacy-preserving, self-hosted web analytics.
///
/// Configuration comes from a TOML file (--config or GLIMPSE_CONFIG) overlaid by GLIMPSE_*
/// environment variables; see glimpse.example.toml for every setting. Without
/// GLIMPSE_CLICKHOUSE_URL, Glimpse starts its own ClickHouse under GLIMPSE_DATA_DIR.
#[derive(Debug, clap::Parser)]
#[command(name = "glimpse")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, global = true, env = "GLIMPSE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: app::Command,
}

fn main() -> ExitCode {
    // `--version` says which commit this is: `0.1.0 (1a2b3c4d5e6f)`.
    let version: &'static str = Box::leak(
        format!("{} ({})", glimpse_core::VERSION, glimpse_core::GIT_SHA).into_boxed_str(),
    );
    let matches = Cli::command().version(version).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Needs no configuration: it is installed with the binary, before any exists.
    if let app::Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "glimpse",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    // Exit 2: the configuration cannot be used (`glimpse config check` says the same).
    // A collector (`serve` runs one; `config check` answers for `serve`) also needs what only
    // collectors need (one source of salts on a cluster); the query service and the admin
    // commands sharing the file do not.
    let runs_a_collector = matches!(
        cli.command,
        app::Command::Serve | app::Command::Collector | app::Command::Config(_)
    );
    let config = glimpse_core::Config::load(cli.config.as_deref()).and_then(|config| {
        if runs_a_collector {
            config.validate_for_collector()?;
        }
        Ok(config)
    });
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("glimpse: {error}");
            return ExitCode::from(2);
        }
    };
    app::init_tracing(config.log_format);
    if let app::Command::Config(app::ConfigCommand::Check) = cli.command {
        // Loading checked every setting (types, ranges, sites, paths); nothing else is asked.
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("glimpse: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(app::run(cli.command, config));
    // Tasks still running after a shutdown past its deadline (a blocked disk write) must not
    // keep the process alive: what they had not written stays in the spool.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("glimpse: {error:#}");
            ExitCode::FAILURE
        }
    }
}
