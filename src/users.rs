//! `glimpse user …`: people who sign in to the dashboard, and their roles. The work is done by
//! `glimpse_query::accounts::store` (tested there and in tests/accounts.rs); this reads the
//! arguments and the password and prints.

use anyhow::Context;
use clap::Subcommand;
use glimpse_core::schema;
use glimpse_core::Config;
use glimpse_query::accounts::store::{self, NewRole};
use glimpse_query::accounts::Role;
use glimpse_query::audit::record_cli;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. The password is read from standard input (one line), never from the
    /// command line, where other users of the machine could see it.
    Add {
        email: String,
        /// `owner` (every site, every action), `admin` (reads and administers the sites named
        /// with --site) or `viewer` (reads them).
        #[arg(long, value_parser = ["owner", "admin", "viewer"])]
        role: String,
        /// A site the admin or viewer role applies to (repeat for several).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Read the password from standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users: e-mail, and owner or the role on each site (never password hashes).
    List,
    /// Remove a user; their sessions end at once.
    Remove { email: String },
    /// Set a user's password (read from standard input); their sessions end at once.
    ResetPassword {
        email: String,
        /// Read the password from standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// A password read from standard input; its `Debug` shows nothing of it.
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// One line of standard input without its line ending.
fn read_password() -> anyhow::Result<Password> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(Password(
        password.strip_suffix('\r').unwrap_or(password).to_string(),
    ))
}

pub async fn admin_user(command: UserCommand, config: &Config) -> anyhow::Result<()> {
    let url = config.clickhouse_url.as_deref().unwrap_or_default();
    let client = glimpse_core::db::connect(config, url);
    // The accounts tables are a migration.
    schema::migrate_on(
        &client,
        &config.clickhouse_database,
        config.clickhouse_cluster.as_ref(),
    )
    .await?;
    let db = &config.clickhouse_database;
    match command {
        UserCommand::Add {
            email, role, sites, ..
        } => {
            let role = match role.as_str() {
                "owner" => NewRole::Owner,
                other => NewRole::Site(other.parse::<Role>()?),
            };
            let password = read_password()?;
            store::add_user(&client, db, config, &email, &password.0, role, &sites).await?;
            let email = email.trim().to_lowercase();
            let detail = match role {
                NewRole::Owner => format!("{email} as owner"),
                NewRole::Site(role) => format!("{email} as {role}"),
            };
            if sites.is_empty() {
                record_cli(&client, db, "user.add", "", &detail).await;
            }
            for site in &sites {
                record_cli(&client, db, "user.add", site, &detail).await;
            }
            println!("user {email} added");
        }
        UserCommand::List => {
            for user in store::list_users(&client, db).await? {
                let access = if user.owner {
                    "owner".to_string()
                } else if user.roles.is_empty() {
                    "no sites".to_string()
                } else {
                    user.roles
                        .iter()
                        .map(|(site, role)| format!("{role} of {site}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!("{:<40} {access}", user.email);
            }
        }
        UserCommand::Remove { email } => {
            store::remove_user(&client, db, &email).await?;
            record_cli(&client, db, "user.remove", "", email.trim()).await;
            println!("user {} removed; their sessions have ended", email.trim());
        }
        UserCommand::ResetPassword { email, .. } => {
            let password = read_password()?;
            store::reset_password(&client, db, &email, &password.0).await?;
            record_cli(&client, db, "user.reset-password", "", email.trim()).await;
            println!(
                "password of {} set; their sessions have ended",
                email.trim()
            );
        }
    }
    Ok(())
}
