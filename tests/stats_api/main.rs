//! The stats API end to end against a real ClickHouse: a deterministic fixture (three sites,
//! one in Europe/Berlin across its 2026-03-29 DST change; visitors with several visits over
//! eight days; page views, custom events with properties, engagement reports) is inserted
//! directly, the query service runs in-process, and every answer is compared with numbers the
//! test computes from the fixture in plain Rust.
//!
//! One ClickHouse, the fixture and the services are started once for all tests (`service`);
//! each test is one question area, so that a failure names what broke. Sections that only read
//! run side by side; those that write to the shared database run alone; the rollup, which
//! changes the figures, has a database of its own.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod breakdowns;
mod comparisons;
mod expected;
mod fixture;
mod funnels;
mod generated_sql;
mod rollup;
mod service;
mod totals;
mod v2;
mod v2_comparisons;

use service::{on_own_database, reading, writing};

const SITE: &str = "example.com";
const BERLIN: &str = "berlin.example";
const OTHER: &str = "other.org";
/// Hand-made visits for funnels (`funnels::rows`), read by no other section.
const FUNNEL_SITE: &str = "funnels.example";
const SHARE_TOKEN: &str = "share-me-0123456789";

const WEEK: [(&str, &str); 2] = [("period", "custom"), ("date", "2026-03-24,2026-03-31")];

#[test]
fn aggregates() {
    reading(totals::aggregates);
}

#[test]
fn timeseries() {
    reading(totals::timeseries);
}

#[test]
fn dst_day_hourly_in_berlin() {
    reading(totals::dst_day_hourly_in_berlin);
}

#[test]
fn comparison() {
    reading(totals::comparison);
}

#[test]
fn year_over_year_across_dst() {
    reading(comparisons::year_over_year_across_dst);
}

#[test]
fn previous_month_across_a_month_end() {
    reading(comparisons::previous_month_across_a_month_end);
}

#[test]
fn custom_comparison_timeseries_and_csv() {
    reading(comparisons::custom_range_timeseries_and_csv);
}

#[test]
fn breakdown_comparisons() {
    reading(comparisons::breakdown_rows);
}

#[test]
fn csv() {
    reading(totals::csv);
}

#[test]
fn breakdowns() {
    reading(breakdowns::breakdowns);
}

#[test]
fn filters() {
    reading(breakdowns::filters);
}

#[test]
fn k_suppression() {
    reading(breakdowns::k_suppression);
}

#[test]
fn pagination_and_sort() {
    reading(breakdowns::pagination_and_sort);
}

#[test]
fn goals() {
    reading(breakdowns::goals);
}

/// Inserts recent events and filtered-traffic counts.
#[test]
fn realtime_and_filtered_traffic() {
    writing(access::realtime_and_filtered_traffic);
}

/// Creates and revokes a key.
#[test]
fn auth_errors() {
    writing(access::auth_errors);
}

/// Reads only, and checks that the row and table counts did not change.
#[test]
fn injection_attempts() {
    reading(access::injection_attempts);
}

/// Builds the rollup, inserts late rows and deletes events.
#[test]
fn rollup() {
    on_own_database(rollup::rollup);
}

#[test]
fn every_generated_statement_runs() {
    reading(generated_sql::every_generated_statement_runs);
}

#[test]
fn v2_dimensions() {
    reading(v2::dimensions);
}

#[test]
fn v2_several_dimensions() {
    reading(v2::several_dimensions);
}

#[test]
fn v2_case_insensitive_filters() {
    reading(v2::case_insensitive_filters);
}

#[test]
fn v2_match_day_of_week() {
    reading(v2::match_day_of_week);
}

#[test]
fn v2_goals() {
    reading(v2::goals);
}

#[test]
fn v2_filters() {
    reading(v2::filters);
}

#[test]
fn v2_date_ranges() {
    reading(v2::date_ranges);
}

#[test]
fn v2_include_pagination_order() {
    reading(v2::include_pagination_order);
}

#[test]
fn v2_same_as_v1() {
    reading(v2::same_as_v1);
}

#[test]
fn v2_refusals_and_access() {
    reading(v2::refusals_and_access);
}

/// Reads only, and checks that the row and table counts did not change.
#[test]
fn v2_injection_attempts() {
    reading(v2::injection_attempts);
}

/// Inserts imported aggregates (days no other section reads with imports).
#[test]
fn v2_imports() {
    writing(v2::imports_as_v1);
}

#[test]
fn v2_comparison_dst_day_by_the_hour() {
    reading(v2_comparisons::dst_day_by_the_hour);
}

#[test]
fn v2_comparison_month_ends() {
    reading(v2_comparisons::month_ends);
}

#[test]
fn v2_comparison_custom_and_breakdowns() {
    reading(v2_comparisons::custom_and_breakdowns);
}

#[test]
fn funnels_hand_made_visits() {
    reading(funnels::hand_made_visits);
}

#[test]
fn funnels_on_the_fixture() {
    reading(funnels::on_the_fixture);
}

#[test]
fn funnels_refusals_and_access() {
    reading(funnels::refusals_and_access);
}
