//! What each command does: resolve ClickHouse (starting a local one if none is configured),
//! bind the listeners, run the services until SIGTERM/SIGINT, shut down in order.

use anyhow::Context;
use clap::Subcommand;
use glimpse_collector::local_clickhouse::LocalClickHouse;
use glimpse_collector::schema::{self, Flavor};
use glimpse_collector::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector and the query service in one process (the single-machine default).
    Serve,
    /// Run only the collector (beacon ingest), e.g. several behind a load balancer.
    Collector,
    /// Run only the query service (stats API and dashboard).
    Query,
    /// Apply schema migrations to ClickHouse and exit.
    Migrate,
    /// Print the schema DDL for a ClickHouse flavor without connecting.
    Schema {
        /// `legacy` (ClickHouse before 20.1, e.g. 18.16) or `modern`.
        #[arg(long, default_value = "modern", value_parser = ["legacy", "modern"])]
        flavor: String,
    },
}

/// Logs go to stderr; `GLIMPSE_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init_tracing() {
    let filter = std::env::var("GLIMPSE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

pub async fn run(command: Command, mut config: Config) -> anyhow::Result<()> {
    if let Command::Schema { flavor } = &command {
        let flavor = if flavor == "legacy" {
            Flavor::Legacy
        } else {
            Flavor::Modern
        };
        for statement in schema::migration_statements(flavor, &config.clickhouse_database) {
            println!("{statement};\n");
        }
        return Ok(());
    }

    let local = match &config.clickhouse_url {
        Some(_) => None,
        None => {
            let dir = config.data_dir.join("clickhouse");
            let server = LocalClickHouse::start(&dir, &config.clickhouse_server_bin)
                .await
                .context("starting the local ClickHouse")?;
            config.clickhouse_url = Some(server.url().to_string());
            Some(server)
        }
    };
    let result = run_services(command, config).await;
    if let Some(server) = local {
        server.stop().await;
    }
    result
}

async fn run_services(command: Command, config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(forward_signals(shutdown.clone()));

    let collector = async {
        let listener = bind(config.collector_addr, "collector_addr").await?;
        tracing::info!(addr = %listener.local_addr()?, "collector listening");
        let report =
            glimpse_collector::serve(config.clone(), listener, shutdown.clone().cancelled_owned())
                .await?;
        if report.rows_lost > 0 {
            anyhow::bail!("{} accepted events could not be written", report.rows_lost);
        }
        anyhow::Ok(())
    };
    let query = async {
        let listener = bind(config.query_addr, "query_addr").await?;
        tracing::info!(addr = %listener.local_addr()?, "query service listening");
        glimpse_query::serve(config.clone(), listener, shutdown.clone().cancelled_owned()).await?;
        anyhow::Ok(())
    };
    // If one service fails, stop the other too.
    let stop_on_error = |result: anyhow::Result<()>| {
        if result.is_err() {
            shutdown.cancel();
        }
        result
    };
    match command {
        Command::Serve => {
            let (c, q) = tokio::join!(async { stop_on_error(collector.await) }, async {
                stop_on_error(query.await)
            });
            c.and(q)
        }
        Command::Collector => collector.await,
        Command::Query => query.await,
        Command::Migrate => {
            let url = config.clickhouse_url.as_deref().unwrap_or_default();
            let client = glimpse_collector::sink::connect(&config, url);
            let flavor = schema::migrate(&client, &config.clickhouse_database).await?;
            println!(
                "schema of database {} is at version {} ({flavor:?} ClickHouse)",
                config.clickhouse_database,
                schema::latest_version()
            );
            Ok(())
        }
        Command::Schema { .. } => unreachable!("handled before connecting"),
    }
}

async fn bind(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (setting `{key}`)"))
}

/// SIGTERM or SIGINT (Ctrl-C) starts a graceful shutdown; a second one is left to the default
/// handler's job of ending things at once.
async fn forward_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for shutdown signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
