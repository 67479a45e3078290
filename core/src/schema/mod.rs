//! The one place Glimpse's ClickHouse schema lives: the row types, the versioned migrations,
//! the differences between ClickHouse versions and where each table lives on a cluster.

pub mod cluster;
mod flavor;
mod migrations;

pub use flavor::{Flavor, ServerVersion};
pub use migrations::{
    applied_version, latest_version, migrate, migrate_on, migration_statements,
    migration_statements_on, server_version, MigrationError, MIGRATIONS,
};

use serde::{Deserialize, Serialize};

/// A date as ClickHouse's `Date` stores it: days since 1970-01-01.
pub fn day_number(date: jiff::civil::Date) -> i64 {
    date.since(jiff::civil::Date::constant(1970, 1, 1))
        .map_or(0, |span| i64::from(span.get_days()))
}

/// Name of the events table inside the Glimpse database.
pub const EVENTS_TABLE: &str = "events";

/// Every table holding a site's data (each has a `site` column): what deleting a site erases.
pub const SITE_DATA_TABLES: &[&str] = &[
    EVENTS_TABLE,
    "dropped_events",
    "imported_daily",
    "rollup_daily",
    "rollup_days",
];

/// One stored event: a page view, an engagement report or a custom event.
///
/// No column holds a raw IP address or user agent: `ip_prefix` is only the truncated network
/// and is empty unless the operator turns it on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
#[serde(default)]
pub struct EventRow {
    /// The site's domain, as configured.
    pub site: String,
    /// When the collector received the event, seconds since the Unix epoch (UTC).
    pub timestamp: u32,
    /// `pageview`, `engagement` or a custom event name.
    pub name: String,
    /// The page's host name, lower case, without `www.`.
    pub hostname: String,
    /// The page's path (with the `#fragment` in hash-routing mode), percent-decoded.
    pub pathname: String,
    /// The visit's first page. This and the other visit properties (the `visit_` referrer,
    /// source and campaign; place, device, browser, OS) are the visit's first event's, on
    /// every row of the visit (see `ingest::sessions`).
    pub entry_page: String,
    /// The referrer reduced to host and path: no query string, no fragment.
    pub referrer: String,
    /// Where the visit came from: a campaign's `utm_source`, else the referrer's host.
    pub referrer_source: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    /// The visit's referrer, source and campaign (its first event's).
    pub visit_referrer: String,
    pub visit_referrer_source: String,
    pub visit_utm_source: String,
    pub visit_utm_medium: String,
    pub visit_utm_campaign: String,
    pub visit_utm_term: String,
    pub visit_utm_content: String,
    /// Pseudonymous daily visitor id (keyed hash with a salt that rotates daily).
    pub visitor_id: u64,
    /// Visit id: the same visitor's events with gaps under 30 minutes.
    pub session_id: u64,
    /// When the visit started: a visit counts in the period it started in.
    pub visit_start: u32,
    /// 1 on the visit's first event: sums to the number of visits.
    pub visit_entry: u8,
    /// +1 when the visit becomes a bounce, -1 when it stops being one: sums to 0 or 1 a visit.
    pub visit_bounce: i8,
    /// Seconds since the visit's previous event: sums to the visit's duration.
    pub visit_duration: u32,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    /// `desktop`, `mobile`, `tablet` or `other`.
    pub device: String,
    /// ISO 3166-1 alpha-2 country code, empty when unknown.
    pub country: String,
    /// ISO 3166-2 subdivision code, empty when unknown.
    pub region: String,
    pub city: String,
    /// Screen width in CSS pixels; 0 when the tracker did not say.
    pub screen_width: u16,
    /// Truncated client network (e.g. `81.2.69.0/24`) when the operator stores it; else empty.
    pub ip_prefix: String,
    /// 1 when the event came from a user interaction.
    pub interactive: u8,
    /// Max scroll depth in percent, for `engagement` events.
    pub scroll_depth: u8,
    /// Engaged time in milliseconds, for `engagement` events.
    pub engagement_ms: u32,
    /// Custom property names; `prop_values` holds the value at the same index.
    pub prop_keys: Vec<String>,
    pub prop_values: Vec<String>,
    /// The spool segment (insert batch) the row came in; lets a re-sent batch be recognised.
    /// 0 for rows written without the spool.
    pub batch_id: u64,
}

/// Name of the table of imported daily aggregates.
pub const IMPORTED_TABLE: &str = "imported_daily";

/// One imported daily aggregate (see `admin::plausible_import`). The dimension columns that
/// `kind` does not use are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
#[serde(default)]
pub struct ImportedRow {
    pub site: String,
    /// Which import wrote the row (its start time, Unix milliseconds).
    pub import_id: u64,
    /// The day, in the site's time zone, as days since 1970-01-01.
    pub date: u16,
    /// The export's table: `visitors`, `sources`, `pages`, `entry_pages`, `exit_pages`,
    /// `locations`, `devices`, `browsers`, `operating_systems` or `custom_events`.
    pub kind: String,
    pub hostname: String,
    pub page: String,
    pub entry_page: String,
    pub exit_page: String,
    pub source: String,
    pub referrer: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub country: String,
    pub region: String,
    pub device: String,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    /// A custom event's name (`custom_events`).
    pub name: String,
    pub visitors: u64,
    pub visits: u64,
    pub pageviews: u64,
    pub bounces: u64,
    /// Sum of visit durations, seconds.
    pub visit_duration: u64,
    /// Custom events (`custom_events`).
    pub events: u64,
}
