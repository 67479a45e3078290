//! One query plan per request: from a validated request (its site, parsed parameters and
//! period) to the statements it runs and how their rows combine. The handlers (`api`) execute
//! these plans; the benchmark and the SQL-compatibility tests list the very same statements,
//! so what they check is what the service runs.
//!
//! A stats request runs in two steps where the per-day rollup may answer it: first the lookup
//! of the site's rolled days around its periods ([`Request::rolled_days_lookup`]), then the
//! statements that read them ([`Request::stats_plan`], which takes the lookup's answer).

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::auth::Site;
use crate::error::ApiError;
use crate::params::StatsParams;
use crate::params::{
    self, all_filters, Condition, Endpoint, EventProperty, FilterOp, Metric, Property,
};
use crate::period::{self, Range};
use crate::sql::{self, Group, Sql, StatsQuery};

/// A parsed stats request of an authorized client, with its period resolved in the site's
/// time zone.
#[derive(Debug, Clone)]
pub struct Request {
    pub endpoint: Endpoint,
    pub site: Site,
    pub tz: TimeZone,
    pub params: StatsParams,
    pub range: Range,
    /// The range the period is compared with (`comparison=` or `compare=`), if asked.
    pub comparison: Option<Range>,
    /// Whether the site's imported aggregates are added (asked for, and able to answer).
    pub imported: bool,
    /// What the plan answers beyond the metrics' figures (v2; none for v1).
    pub extras: Extras,
    /// With two or more: the rows are grouped by all of these at once (v2's dimensions,
    /// each a bucket or a property), whatever the endpoint and parameters say.
    pub group_parts: Vec<Group>,
    /// Whether (and how) the request reads a sample of the visitors: set after the plan's
    /// first step ([`sampling_lookup`](Self::sampling_lookup), [`sample`](Self::sample)).
    pub sampling: Option<Sampling>,
}

/// A request that reads 1 in `every` visitors (and scales counts by `every`): the site had
/// `rows` events in the period, over the `sampling_threshold_rows` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub every: u64,
    pub rows: u64,
}

/// The error stated with sampled figures: a count `n` estimated from a sample of rate `r` of
/// the visitors is within `Z · √(n · (1 − r) / r)` of the exact count 999 times in 1000, for
/// counts of visitors (binomial; each visitor is kept or not). Counts of visits, page views
/// and events vary more where visitors have many of them (√ of the mean per visitor times).
pub const SAMPLING_ERROR_Z: f64 = 3.29;

impl Sampling {
    /// The sampling of a period with `rows` events under `threshold` (0: never): the smallest
    /// 1-in-N that reads at most about `threshold` rows.
    pub fn for_rows(rows: u64, threshold: u64) -> Option<Self> {
        if threshold == 0 || rows <= threshold {
            return None;
        }
        Some(Sampling {
            every: rows.div_ceil(threshold),
            rows,
        })
    }

    /// The share of visitors read, 0 to 1.
    pub fn rate(&self) -> f64 {
        1.0 / self.every as f64
    }

    /// The stated margin (999 in 1000) of a sampled visitor count `n` (see
    /// [`SAMPLING_ERROR_Z`]).
    pub fn margin(&self, n: u64) -> f64 {
        let r = self.rate();
        SAMPLING_ERROR_Z * (n as f64 * (1.0 - r) / r).sqrt()
    }

    /// What an answer says about its sample (v1's `sampling`, v2's `meta.sampling`).
    pub fn json(&self) -> serde_json::Value {
        let percent = 100.0 / self.every as f64;
        serde_json::json!({
            "sample_percent": (percent * 100.0).round() / 100.0,
            "rate": self.rate(),
            "rows": self.rows,
            "error_z": SAMPLING_ERROR_Z,
            "note": format!(
                "Estimated from {percent:.2}% of visitors, counts scaled by {}: a count of n \
                 visitors is within ±{SAMPLING_ERROR_Z}·√(n·(1−rate)/rate) of the exact one \
                 999 times in 1000 (more for visits, page views and events of visitors with \
                 many); rates and averages are not scaled. Ask with sampling=off for exact \
                 figures.",
                self.every
            ),
        })
    }
}

/// What a request answers beyond its metrics' figures (Stats API v2), each one more statement
/// per period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// The number of rows before the page (`include.total_rows`).
    pub row_count: bool,
    /// The period's visitors with the same filters, not grouped (`percentage`).
    pub total_visitors: bool,
    /// The visitors of each key without the goal filters (`group_conversion_rate`).
    pub group_totals: bool,
}

/// The site's time zone; a 503, as the site's settings are the server's to fix.
pub fn site_timezone(site: &Site) -> Result<TimeZone, ApiError> {
    TimeZone::get(&site.timezone).map_err(|_| {
        ApiError::Unavailable(format!(
            "site {} has an unknown time zone {:?}",
            site.domain, site.timezone
        ))
    })
}

impl Request {
    /// Validates `query` (the query string's parameters) for `endpoint` on `site`, with the
    /// period's relative dates counted from `now`.
    pub fn new(
        endpoint: Endpoint,
        query: &HashMap<String, String>,
        site: Site,
        now: Timestamp,
    ) -> Result<Self, ApiError> {
        let tz = site_timezone(&site)?;
        let params = params::parse(endpoint, query)?;
        let range = period::resolve(params.period, params.date, &tz, now)?;
        Self::typed(endpoint, site, tz, params, range, Extras::default())
    }

    /// A request from parameters already typed and a range already resolved in `tz`, the
    /// site's time zone (Stats API v2, which reads another shape).
    pub fn typed(
        endpoint: Endpoint,
        site: Site,
        tz: TimeZone,
        params: StatsParams,
        range: Range,
        extras: Extras,
    ) -> Result<Self, ApiError> {
        check_goals(&site, &params.filters)?;
        let comparison = params
            .compare
            .map(|c| period::compared(params.period, c, &range, &tz))
            .transpose()?;
        let imported = params.with_imported
            && sql::imported_answers(&group_of(endpoint, &params), &params.filters);
        Ok(Request {
            endpoint,
            site,
            tz,
            params,
            range,
            comparison,
            imported,
            extras,
            group_parts: Vec::new(),
            sampling: None,
        })
    }

    /// The same breakdown grouped by all of `parts` at once (v2's several dimensions). No
    /// imported data then: imported tables hold one property each.
    pub fn grouped_by(mut self, parts: Vec<Group>) -> Self {
        self.group_parts = parts;
        self.imported = self.imported && sql::imported_answers(&self.group(), &self.params.filters);
        self
    }

    /// How the request's rows are grouped.
    pub fn group(&self) -> Group {
        if self.group_parts.len() > 1 {
            return Group::Tuple(self.group_parts.clone());
        }
        group_of(self.endpoint, &self.params)
    }

    /// Plausible's `warning` when imported data was asked for but cannot answer the question.
    pub fn imported_warning(&self) -> Option<&'static str> {
        (self.params.with_imported && !self.imported).then_some(
            "Imported stats are not included in the results: they are daily totals per single \
             property, so they cannot answer filtered questions, hourly intervals, or \
             breakdowns by city, host name, custom properties or goals.",
        )
    }

    /// With [`rolled_days_lookup`](Self::rolled_days_lookup), the plan's first step: the
    /// number of the site's events in the period as the rollup listed them (its whole UTC
    /// days; a cheap read of a small table), for deciding whether to sample. `None` where the
    /// request is not sampled whatever its size: sampling off (`threshold` 0), exact figures
    /// asked for, or imported aggregates added (exact daily totals that no sample scales).
    pub fn sampling_lookup(&self, database: &str, threshold: u64) -> Option<Sql> {
        if threshold == 0 || self.params.exact || self.imported {
            return None;
        }
        let first = self.range.start.div_euclid(sql::DAY);
        let last = (self.range.end - 1).div_euclid(sql::DAY);
        Some(crate::rollup::listed_rows_statement(
            database,
            &self.site.domain,
            first,
            last,
        ))
    }

    /// Reads a sample of the visitors if the period's `rows` (the answer of
    /// [`sampling_lookup`](Self::sampling_lookup)) exceed `threshold`, unless the rollup
    /// answers (`rolled` days, exact and already fast).
    pub fn sample(&mut self, rows: u64, threshold: u64, rolled: &[i64]) {
        let may_sample = rolled.is_empty() && !self.imported && !self.params.exact;
        self.sampling = may_sample
            .then(|| Sampling::for_rows(rows, threshold))
            .flatten();
    }

    /// The first step, where the rollup may answer the request: the lookup of the site's
    /// rolled days around its periods. `None` where it cannot (the plan then takes no days).
    pub fn rolled_days_lookup(&self, database: &str) -> Option<RolledDaysLookup> {
        if !sql::rollup_may_answer(&self.group(), &self.params.filters) {
            return None;
        }
        let (first, last) = rolled_window(&self.range, self.comparison.as_ref());
        Some(RolledDaysLookup {
            first,
            last,
            statement: crate::rollup::rolled_days_statement(
                database,
                &self.site.domain,
                first,
                last,
            ),
        })
    }

    /// The statements of the request given the site's `rolled` days (the answer of
    /// [`rolled_days_lookup`](Self::rolled_days_lookup), UTC days since 1970; none without
    /// it). `min_group_size` is the breakdowns' `(other)` threshold (0: off).
    ///
    /// With a comparison, the compared period's statements too, except for a breakdown: its
    /// comparison reads only the keys of the page it compares, a second step
    /// ([`breakdown_comparison`](Self::breakdown_comparison)).
    pub fn stats_plan(
        &self,
        database: &str,
        min_group_size: u64,
        rolled: &[i64],
    ) -> Result<StatsPlan, ApiError> {
        let current = self.period_plan(database, min_group_size, rolled, self.range.clone(), None);
        let comparison = match &self.comparison {
            Some(range) if self.endpoint != Endpoint::Breakdown => {
                Some(self.period_plan(database, min_group_size, rolled, range.clone(), None))
            }
            _ => None,
        };
        Ok(StatsPlan {
            current,
            comparison,
        })
    }

    /// A breakdown's comparison, given the `keys` of the page it compares (the current
    /// period's rows): the same breakdown over the compared range, those keys only, with the
    /// same `(other)` threshold (a key with fewer visitors then is not shown). `None` without
    /// a comparison or keys.
    pub fn breakdown_comparison(
        &self,
        database: &str,
        min_group_size: u64,
        rolled: &[i64],
        keys: &[String],
    ) -> Option<PeriodPlan> {
        let range = self.comparison.clone()?;
        if keys.is_empty() || self.endpoint != Endpoint::Breakdown {
            return None;
        }
        Some(self.period_plan(database, min_group_size, rolled, range, Some(keys)))
    }

    fn period_plan(
        &self,
        database: &str,
        min_group_size: u64,
        rolled: &[i64],
        range: Range,
        keys: Option<&[String]>,
    ) -> PeriodPlan {
        let p = &self.params;
        let group = self.group();
        let breakdown = self.endpoint == Endpoint::Breakdown;
        // The current page is sorted and cut; a comparison takes the page's keys as they are.
        let paged = breakdown && keys.is_none();
        let figures = StatsQuery {
            min_group_size: if breakdown { min_group_size } else { 0 },
            keys,
            ..self.question(
                database,
                &range,
                group.clone(),
                &p.filters,
                &p.metrics,
                rolled,
            )
        };
        let stats = sql::stats(&StatsQuery {
            sort: if paged { &p.sort } else { &[] },
            page: paged.then_some((p.limit, p.offset)),
            ..figures.clone()
        });
        // The rows before the page: the same statement, neither sorted nor cut (the page's
        // comparison has no page of its own).
        let row_count = (self.extras.row_count && keys.is_none())
            .then(|| sql::row_count(&sql::stats(&figures)));
        // A timeseries' rates are per bucket; the others' share the period's denominator.
        let totals_by_key = self.endpoint == Endpoint::Timeseries;
        let without_goals = without_goal_filters(&p.filters);
        let visitors_by = |group: Group, filters: &[Condition]| {
            sql::stats(&self.question(
                database,
                &range,
                group,
                filters,
                &[Metric::Visitors],
                rolled,
            ))
        };
        let totals_group = if totals_by_key {
            group.clone()
        } else {
            Group::Total
        };
        let goal_totals = p
            .metrics
            .contains(&Metric::ConversionRate)
            .then(|| visitors_by(totals_group.clone(), &without_goals));
        // Per key, but by goal the key is the goal itself: the period's visitors instead.
        let group_key = group != Group::Property(Property::Event(EventProperty::Goal));
        let group_totals = self.extras.group_totals.then(|| {
            visitors_by(
                if group_key {
                    group.clone()
                } else {
                    Group::Total
                },
                &without_goals,
            )
        });
        let total_visitors = self
            .extras
            .total_visitors
            .then(|| visitors_by(Group::Total, &p.filters));
        PeriodPlan {
            range,
            stats,
            goal_totals,
            totals_by_key,
            row_count,
            total_visitors,
            group_totals,
            group_totals_by_key: group_key,
        }
    }

    /// What every statement of the request shares; no `(other)` rows, sort or page.
    fn question<'a>(
        &'a self,
        database: &'a str,
        range: &Range,
        group: Group,
        filters: &'a [Condition],
        metrics: &'a [Metric],
        rolled: &'a [i64],
    ) -> StatsQuery<'a> {
        StatsQuery {
            database,
            site: &self.site.domain,
            timezone: self.tz.iana_name().unwrap_or("UTC"),
            start: range.start,
            end: range.end,
            group,
            filters,
            min_group_size: 0,
            sort: &[],
            metrics,
            goals: &self.site.goals,
            page: None,
            imported: self.imported,
            rolled,
            keys: None,
            sample: self.sampling.map(|s| s.every),
        }
    }

    /// `/api/v1/stats/filtered`: the filtered traffic per reason over the period's dates.
    /// Counts are kept per UTC day: the period's local dates are read as those days.
    pub fn dropped_statement(&self, database: &str) -> Sql {
        sql::dropped(
            database,
            &self.site.domain,
            &self.range.first.to_string(),
            &self.range.last.to_string(),
        )
    }

    /// `/api/v1/stats/props`: the custom property names used in the period.
    pub fn prop_names_statement(&self, database: &str) -> Sql {
        sql::prop_names(
            database,
            &self.site.domain,
            self.range.start,
            self.range.end,
        )
    }
}

/// `/api/v1/stats/realtime/visitors`: the visitors of the 5 minutes before `now`.
pub fn realtime_statement(database: &str, site: &Site, now: Timestamp) -> Sql {
    let now = now.as_second();
    sql::current_visitors(database, &site.domain, now - 5 * 60, now + 1)
}

/// `/api/v1/sites`: each site's imported days.
pub fn imported_ranges_statement(database: &str) -> Sql {
    sql::imported_ranges(database)
}

/// The first step of a plan the rollup may answer: which of the site's UTC days `first..=last`
/// are rolled up. Its rows are `YYYY-MM-DD` days (`crate::rollup::fetch_days` reads them).
#[derive(Debug, Clone)]
pub struct RolledDaysLookup {
    pub first: i64,
    pub last: i64,
    pub statement: Sql,
}

/// The statements of one stats request: its period's, and with a comparison the compared
/// period's (aggregates and timeseries; see [`Request::breakdown_comparison`] for
/// breakdowns), which are independent of each other.
#[derive(Debug, Clone)]
pub struct StatsPlan {
    pub current: PeriodPlan,
    pub comparison: Option<PeriodPlan>,
}

impl StatsPlan {
    /// Every statement, in the order the handlers start them.
    pub fn statements(&self) -> Vec<&Sql> {
        std::iter::once(&self.current)
            .chain(&self.comparison)
            .flat_map(|p| {
                std::iter::once(&p.stats)
                    .chain(&p.goal_totals)
                    .chain(&p.row_count)
                    .chain(&p.total_visitors)
                    .chain(&p.group_totals)
            })
            .collect()
    }

    /// The final SQL text of every statement (values inlined by the `clickhouse` crate's
    /// escaping), for running them elsewhere: other ClickHouse versions, the benchmark.
    pub fn texts(&self) -> Vec<String> {
        self.statements().into_iter().map(Sql::final_text).collect()
    }
}

/// The statements of one period and how their rows combine.
#[derive(Debug, Clone)]
pub struct PeriodPlan {
    pub range: Range,
    /// The figures: a `sql::StatsRow` per key.
    pub stats: Sql,
    /// With `conversion_rate`: the visitors without the goal filters, `(key, visitors)` rows
    /// (see [`denominator`](Self::denominator)).
    pub goal_totals: Option<Sql>,
    totals_by_key: bool,
    /// With [`Extras::row_count`]: one row, the number of rows before the page.
    pub row_count: Option<Sql>,
    /// With [`Extras::total_visitors`]: one `StatsRow`, the period's visitors.
    pub total_visitors: Option<Sql>,
    /// With [`Extras::group_totals`]: `(key, visitors)` rows without the goal filters (see
    /// [`group_denominator`](Self::group_denominator)).
    pub group_totals: Option<Sql>,
    group_totals_by_key: bool,
}

impl PeriodPlan {
    /// The `conversion_rate` denominator of the stats row `key`, from the `goal_totals` rows
    /// (0 without them): per bucket for a timeseries, the period's total otherwise.
    pub fn denominator(&self, totals: &HashMap<String, u64>, key: &str) -> u64 {
        let key = if self.totals_by_key { key } else { "" };
        totals.get(key).copied().unwrap_or(0)
    }

    /// The `group_conversion_rate` denominator of the stats row `key`, from the
    /// `group_totals` rows: the key's visitors without the goal filters (by goal, the
    /// period's).
    pub fn group_denominator(&self, totals: &HashMap<String, u64>, key: &str) -> u64 {
        let key = if self.group_totals_by_key { key } else { "" };
        totals.get(key).copied().unwrap_or(0)
    }
}

/// How a request's rows are grouped.
fn group_of(endpoint: Endpoint, p: &StatsParams) -> Group {
    match endpoint {
        Endpoint::Aggregate => Group::Total,
        Endpoint::Timeseries => Group::Bucket(p.interval),
        Endpoint::Breakdown => Group::Property(
            p.property
                .clone()
                .unwrap_or(Property::Event(EventProperty::Page)),
        ),
    }
}

/// The UTC days whose rollup a request over `range` (compared with `comparison`) may use:
/// from the first day of either period to the last, `(first, last)`.
fn rolled_window(range: &Range, comparison: Option<&Range>) -> (i64, i64) {
    let (start, end) = comparison.map_or((range.start, range.end), |c| {
        (c.start.min(range.start), c.end.max(range.end))
    });
    (start.div_euclid(sql::DAY) - 1, end.div_euclid(sql::DAY))
}

/// The conditions without the single goal filters joined by `and`: the `conversion_rate`
/// denominator's. (A goal filter nested in `or`/`not` stays; v2 refuses conversion rates
/// with one.)
fn without_goal_filters(conditions: &[Condition]) -> Vec<Condition> {
    conditions
        .iter()
        .filter(|c| !c.is_goal_filter())
        .cloned()
        .collect()
}

/// Goal filters must name the site's goals: a typo would otherwise read as zero conversions.
pub(crate) fn check_goals(site: &Site, filters: &[Condition]) -> Result<(), ApiError> {
    for f in all_filters(filters) {
        // Only the operators that name goals; the others match goal names by text.
        if f.property != Property::Event(EventProperty::Goal)
            || !matches!(f.op, FilterOp::Is | FilterOp::IsNot)
        {
            continue;
        }
        if let Some(unknown) = f.values.iter().find(|v| {
            !site.goals.iter().any(|g| {
                g.name == **v || (f.ignore_case && g.name.to_lowercase() == v.to_lowercase())
            })
        }) {
            let known: Vec<&str> = site.goals.iter().map(|g| g.name.as_str()).collect();
            return Err(ApiError::bad(
                "filters",
                format!(
                    "{unknown:?} is not one of the site's goals ({})",
                    if known.is_empty() {
                        "none configured".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Value;
    use glimpse_core::site::SiteConfig;

    fn site() -> Site {
        Site::parse(SiteConfig {
            timezone: "Europe/Berlin".into(),
            goals: vec!["Signup".to_string()],
            ..SiteConfig::new("example.com")
        })
        .unwrap()
    }

    fn request(endpoint: Endpoint, pairs: &[(&str, &str)]) -> Request {
        let query = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("site_id".to_string(), "example.com".to_string())])
            .collect();
        let now = "2026-03-29T12:00:00Z".parse().unwrap();
        Request::new(endpoint, &query, site(), now).unwrap()
    }

    #[test]
    fn a_comparison_with_conversions_runs_four_statements() {
        let r = request(
            Endpoint::Aggregate,
            &[
                ("period", "7d"),
                ("metrics", "visitors,conversion_rate"),
                ("filters", "event:goal==Signup"),
                ("compare", "previous_period"),
            ],
        );
        let plan = r.stats_plan("glimpse", 0, &[]).unwrap();
        let previous = plan
            .comparison
            .as_ref()
            .expect("compare plans the previous period");
        assert_eq!(
            previous.range,
            period::previous(r.params.period, &r.range, &r.tz).unwrap()
        );
        let statements = plan.statements();
        assert_eq!(statements.len(), 4);
        assert_eq!(statements[0], &plan.current.stats);
        assert_eq!(Some(statements[1]), plan.current.goal_totals.as_ref());
        assert_eq!(statements[2], &previous.stats);
        assert_eq!(Some(statements[3]), previous.goal_totals.as_ref());
        // The denominators are the visitors without the goal filter.
        let goal = Value::Str("Signup".into());
        assert!(plan.current.stats.binds.contains(&goal));
        let totals = plan.current.goal_totals.as_ref().unwrap();
        assert!(!totals.binds.contains(&goal), "{}", totals.final_text());
        assert_eq!(plan.texts().len(), 4);
    }

    #[test]
    fn without_conversions_or_compare_one_statement() {
        let r = request(Endpoint::Breakdown, &[("property", "visit:source")]);
        let plan = r.stats_plan("glimpse", 5, &[]).unwrap();
        assert!(plan.comparison.is_none() && plan.current.goal_totals.is_none());
        assert_eq!(plan.statements().len(), 1);
        // The `(other)` threshold applies to breakdowns only.
        assert!(plan.current.stats.template.contains("'(other)'"));
        let r = request(Endpoint::Aggregate, &[]);
        let plan = r.stats_plan("glimpse", 5, &[]).unwrap();
        assert!(!plan.current.stats.template.contains("'(other)'"));
    }

    #[test]
    fn comparisons_plan_the_compared_range_and_breakdowns_their_page_keys() {
        let r = request(
            Endpoint::Timeseries,
            &[
                ("period", "month"),
                ("date", "2028-02-10"),
                ("comparison", "year_over_year"),
            ],
        );
        let plan = r.stats_plan("glimpse", 0, &[]).unwrap();
        let compared = plan.comparison.as_ref().expect("a comparison plan");
        assert_eq!(
            (
                compared.range.first.to_string(),
                compared.range.last.to_string()
            ),
            ("2027-02-01".to_string(), "2027-02-28".to_string())
        );
        assert_eq!(plan.statements().len(), 2);

        let r = request(
            Endpoint::Breakdown,
            &[
                ("property", "visit:source"),
                ("comparison", "custom"),
                ("compare_from", "2026-01-01"),
                ("compare_to", "2026-01-31"),
                ("limit", "2"),
            ],
        );
        let plan = r.stats_plan("glimpse", 5, &[]).unwrap();
        assert!(
            plan.comparison.is_none(),
            "a breakdown's comparison is a second step"
        );
        assert!(plan.current.stats.template.contains("LIMIT"));
        let keys = ["Google".to_string(), "x' OR 1=1".to_string()];
        let compared = r.breakdown_comparison("glimpse", 5, &[], &keys).unwrap();
        assert_eq!(compared.range.first.to_string(), "2026-01-01");
        let sql = &compared.stats;
        assert!(
            sql.template.contains("WHERE key IN (?, ?)"),
            "{}",
            sql.template
        );
        assert!(!sql.template.contains("LIMIT") && !sql.template.contains("ORDER BY"));
        assert!(sql.binds.contains(&Value::Str(keys[1].clone())));
        assert!(r.breakdown_comparison("glimpse", 5, &[], &[]).is_none());
        let uncompared = request(Endpoint::Breakdown, &[("property", "visit:source")]);
        assert!(uncompared
            .breakdown_comparison("glimpse", 5, &[], &keys)
            .is_none());
    }

    #[test]
    fn denominators_are_per_bucket_only_in_a_timeseries() {
        let totals: HashMap<String, u64> = [("".to_string(), 7), ("2026-03-28".to_string(), 3)]
            .into_iter()
            .collect();
        let metrics = ("metrics", "visitors,conversion_rate");
        let goal = ("filters", "event:goal==Signup");
        let r = request(Endpoint::Timeseries, &[metrics, goal]);
        let plan = r.stats_plan("glimpse", 0, &[]).unwrap();
        assert_eq!(plan.current.denominator(&totals, "2026-03-28"), 3);
        assert_eq!(plan.current.denominator(&totals, "2026-03-27"), 0);
        let r = request(
            Endpoint::Breakdown,
            &[metrics, goal, ("property", "event:page")],
        );
        let plan = r.stats_plan("glimpse", 0, &[]).unwrap();
        assert_eq!(plan.current.denominator(&totals, "/pricing"), 7);
    }

    #[test]
    fn rolled_days_are_looked_up_only_where_the_rollup_may_answer() {
        let filtered = request(Endpoint::Aggregate, &[("filters", "visit:country==DE")]);
        assert!(filtered.rolled_days_lookup("glimpse").is_none());
        let hourly = request(Endpoint::Timeseries, &[("interval", "hour")]);
        assert!(hourly.rolled_days_lookup("glimpse").is_none());

        let r = request(
            Endpoint::Aggregate,
            &[("period", "30d"), ("comparison", "year_over_year")],
        );
        let lookup = r
            .rolled_days_lookup("glimpse")
            .expect("the rollup may answer");
        // The window covers the period and the one it is compared with.
        let year_before = r.comparison.as_ref().unwrap();
        assert!(lookup.first * sql::DAY <= year_before.start, "{lookup:?}");
        assert!((lookup.last + 1) * sql::DAY >= r.range.end, "{lookup:?}");
        assert!(lookup.statement.template.contains("rollup_days"));
        // The lookup's answer is what the plan reads from the rollup.
        let every_day: Vec<i64> = (lookup.first..=lookup.last).collect();
        let raw = r.stats_plan("glimpse", 0, &[]).unwrap();
        let rolled = r.stats_plan("glimpse", 0, &every_day).unwrap();
        assert!(!raw.current.stats.template.contains("rollup_daily"));
        assert!(rolled.current.stats.template.contains("rollup_daily"));
    }

    #[test]
    fn large_periods_are_sampled_unless_the_rollup_answers_or_exact_figures_are_asked() {
        let threshold = 1_000;
        let filter = ("filters", "visit:country==DE");
        let r = request(Endpoint::Aggregate, &[filter]);
        assert!(r.sampling_lookup("glimpse", 0).is_none(), "0: sampling off");
        let lookup = r.sampling_lookup("glimpse", threshold).expect("a lookup");
        assert!(
            lookup.template.contains("rollup_days"),
            "{}",
            lookup.template
        );
        let mut sampled = r.clone();
        sampled.sample(1_000, threshold, &[]);
        assert_eq!(sampled.sampling, None, "at the threshold: exact");
        sampled.sample(2_001, threshold, &[]);
        assert_eq!(
            sampled.sampling,
            Some(Sampling {
                every: 3,
                rows: 2_001
            })
        );
        let cutoff = format!("visitor_id < {}", sql::sample_cutoff(3));
        let text = |r: &Request| r.stats_plan("glimpse", 0, &[]).unwrap().texts().join(";");
        assert!(text(&sampled).contains(&cutoff) && text(&sampled).contains(" * 3)"));
        assert!(!text(&r).contains("visitor_id <") && !text(&r).contains(" * "));
        // Days the rollup answers are exact already.
        sampled.sample(2_001, threshold, &[20_000]);
        assert_eq!(sampled.sampling, None);
        // Asked for exact figures.
        let exact = request(Endpoint::Aggregate, &[filter, ("sampling", "off")]);
        assert!(exact.sampling_lookup("glimpse", threshold).is_none());
        let mut exact = exact.clone();
        exact.sample(1_000_000, threshold, &[]);
        assert_eq!(exact.sampling, None);
        let query: HashMap<String, String> = [("site_id", "example.com"), ("sampling", "on")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let now = "2026-03-29T12:00:00Z".parse().unwrap();
        let error = Request::new(Endpoint::Aggregate, &query, site(), now).unwrap_err();
        assert!(error.to_string().contains("auto or off"), "{error}");
    }

    #[test]
    fn every_read_of_the_events_takes_the_same_sample() {
        let shapes: [&[(&str, &str)]; 4] = [
            // Visit metrics by an event property, with an event filter: events, visits by
            // session and the matching visits, each a read of the events.
            &[
                ("property", "event:page"),
                ("metrics", "visitors,visits,bounce_rate,pageviews"),
                ("filters", "event:page==/a;visit:exit_page==/b"),
            ],
            &[
                ("property", "visit:exit_page"),
                ("metrics", "visitors,visits,time_on_page"),
            ],
            &[
                ("property", "visit:source"),
                ("metrics", "visitors,visits,conversion_rate"),
                ("filters", "event:goal==Signup"),
            ],
            &[
                ("property", "visit:country"),
                ("metrics", "visitors,visits"),
            ],
        ];
        for pairs in shapes {
            let mut r = request(Endpoint::Breakdown, pairs);
            r.sample(10_000, 1_000, &[]);
            let every = r.sampling.expect("sampled").every;
            for sql in r.stats_plan("glimpse", 3, &[]).unwrap().texts() {
                let reads = sql.matches("FROM glimpse.events WHERE").count();
                let sampled = sql
                    .matches(&format!("visitor_id < {}", sql::sample_cutoff(every)))
                    .count();
                assert!(reads > 0, "{sql}");
                assert_eq!(reads, sampled, "{pairs:?}: {sql}");
            }
        }
    }

    #[test]
    fn unknown_goals_and_time_zones_are_refused() {
        let now = "2026-03-29T12:00:00Z".parse().unwrap();
        let query: HashMap<String, String> = [
            ("site_id", "example.com"),
            ("filters", "event:goal==Sign up"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let error = Request::new(Endpoint::Aggregate, &query, site(), now).unwrap_err();
        assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains("Signup"), "{error}");
        // A time zone the database no longer knows (a stored site parsed by an older build).
        let mut broken = site();
        broken.timezone = "Mars/Olympus".into();
        let error = Request::new(Endpoint::Aggregate, &query, broken, now).unwrap_err();
        assert_eq!(error.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
