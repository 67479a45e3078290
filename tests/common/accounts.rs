//! Accounts for tests: users made the way `glimpse user add` makes them.

use glimpse_core::Config;
use glimpse_query::accounts::store::{self, NewRole};

/// Adds a user with `role` on `sites` (none for the owner) to the `glimpse` database.
pub async fn add_user(
    client: &clickhouse::Client,
    config: &Config,
    email: &str,
    password: &str,
    role: NewRole,
    sites: &[&str],
) {
    let sites: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
    store::add_user(client, "glimpse", config, email, password, role, &sites)
        .await
        .unwrap_or_else(|e| panic!("adding {email}: {e}"));
}
