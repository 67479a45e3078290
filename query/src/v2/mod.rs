//! Plausible's Stats API v2 (`POST /api/v2/query`) on v1's machinery: the body is read into a
//! typed query (`request`, `filters`, `date_range`), translated into the same stats request
//! and plan v1 runs (`translate`), and the plan's rows shaped into v2's answer (`answer`).
//! Who may read which site is decided exactly as for v1 (`api::authorize`).

mod answer;
pub(crate) mod date_range;
pub(crate) mod filters;
mod request;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde_json::Value;

use crate::api;
use crate::auth::Site;
use crate::error::ApiError;
use crate::params::{Endpoint, Format, Interval, Metric, Property, Sort, SortKey, StatsParams};
use crate::plan::{self, Extras, PeriodPlan, Request};
use crate::sql::Group;
use crate::AppState;
pub(crate) use request::parse_date_range;
pub use request::{parse, Query};
use request::{Dimension, OrderKey, V2Metric};

/// Largest body accepted, as for the Sites API: a query is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A 400 for `field`; v2's messages start with the JSON path of the value (`#/metrics/1`).
fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad(field, message)
}

/// A property's name read for v2: its errors start with the value's JSON path.
fn property(name: &str, field: &'static str, path: &str) -> Result<Property, ApiError> {
    Property::parse(name, field).map_err(|e| match e {
        ApiError::BadParam { param, message } => bad(param, format!("{path}: {message}")),
        other => other,
    })
}

/// A client value in an error message, short.
fn short(value: &Value) -> String {
    crate::params::truncate(&value.to_string())
}

/// `POST /api/v2/query`.
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (site, body) = authorized_body(&state, request).await?;
    let query = parse(&body)?;
    let mut request = translate(&query, site, Timestamp::now())?;
    let (plan, rolled) = api::stats_plan(&state, &mut request).await?;
    // The two periods are independent: ClickHouse runs them side by side.
    let (figures, before) = tokio::try_join!(run_period(&state, &plan.current), async {
        match &plan.comparison {
            Some(period) => run_period(&state, period).await.map(Some),
            None => Ok(None),
        }
    })?;
    let min_group_size = state.config.query.min_group_size;
    let compared = match (plan.comparison, before) {
        (Some(plan), Some(figures)) => Some(answer::Compared {
            plan,
            figures,
            withheld_when_missing: false,
        }),
        // A breakdown's comparison reads the page's keys only: a second step.
        _ => {
            let keys: Vec<String> = figures
                .rows
                .iter()
                .map(|r| r.key.clone())
                .filter(|k| k != api::OTHER)
                .collect();
            match request.breakdown_comparison(&state.database, min_group_size, &rolled, &keys) {
                Some(plan) => Some(answer::Compared {
                    figures: run_period(&state, &plan).await?,
                    plan,
                    // Under the `(other)` threshold then: withheld, not zero (as v1).
                    withheld_when_missing: min_group_size > 0,
                }),
                None => None,
            }
        }
    };
    let body = answer::shape(&query, &request, &plan.current, figures, compared.as_ref())?;
    Ok(Json(body).into_response())
}

/// Runs the statements of one period; they are independent of each other, so ClickHouse
/// runs them side by side.
async fn run_period(state: &AppState, period: &PeriodPlan) -> Result<answer::Figures, ApiError> {
    let (rows, goal_totals, group_totals, total_visitors, row_count) = tokio::try_join!(
        api::fetch(state, &period.stats),
        api::totals_by_key(state, period.goal_totals.as_ref()),
        api::totals_by_key(state, period.group_totals.as_ref()),
        async {
            match &period.total_visitors {
                Some(sql) => Ok(api::fetch(state, sql)
                    .await?
                    .first()
                    .map_or(0, |r| r.visitors)),
                None => Ok(0),
            }
        },
        async {
            match &period.row_count {
                Some(sql) => api::fetch_count(state, sql).await.map(Some),
                None => Ok(None),
            }
        },
    )?;
    Ok(answer::Figures {
        rows,
        goal_totals,
        group_totals,
        total_visitors,
        row_count,
    })
}

/// A v2 request's JSON body and the site it names, once the caller may read it (keys,
/// sessions, share links as for v1). Credentials first: nothing else is looked at for a
/// stranger.
pub(crate) async fn authorized_body(
    state: &AppState,
    request: axum::extract::Request,
) -> Result<(Site, Value), ApiError> {
    let headers = request.headers().clone();
    // A share link's token comes in the query string, as for v1.
    let share_token = request.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "auth")
            .map(|(_, v)| v.into_owned())
    });
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::bad("body", "the body is too large or unreadable"))?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("#: the body is not JSON: {e}")))?;
    let mut auth_query = HashMap::new();
    if let Some(site_id) = body.get("site_id").and_then(Value::as_str) {
        auth_query.insert("site_id".to_string(), site_id.to_string());
    }
    if let Some(token) = share_token {
        auth_query.insert("auth".to_string(), token);
    }
    let site = api::authorize(state, &headers, &auth_query).await?;
    Ok((site, body))
}

/// The v1 stats request that answers `query` on `site` (`now` for relative ranges), with
/// what v2 adds to the plan.
pub fn translate(query: &Query, site: Site, now: Timestamp) -> Result<Request, ApiError> {
    let tz = plan::site_timezone(&site)?;
    let (period, range) =
        date_range::resolve(&query.date_range, query.date, &tz, site.retention_days, now)?;
    let interval_of = |i: &Option<Interval>| i.unwrap_or_else(|| date_range::auto_interval(&range));
    let (endpoint, property, interval) = match query.dimensions.as_slice() {
        [] => (Endpoint::Aggregate, None, Interval::Date),
        [Dimension::Time(interval)] => (Endpoint::Timeseries, None, interval_of(interval)),
        [Dimension::Property(p)] => (Endpoint::Breakdown, Some(p.clone()), Interval::Date),
        // Several: a breakdown by all of them (`Request::grouped_by`); the time dimension's
        // interval labels its values.
        several => (
            Endpoint::Breakdown,
            None,
            several
                .iter()
                .find_map(|d| match d {
                    Dimension::Time(i) => Some(interval_of(i)),
                    Dimension::Property(_) => None,
                })
                .unwrap_or(Interval::Date),
        ),
    };
    let mut metrics: Vec<Metric> = Vec::new();
    for m in &query.metrics {
        if !metrics.contains(&m.figure()) {
            metrics.push(m.figure());
        }
    }
    let params = StatsParams {
        site_id: query.site_id.clone(),
        // Only a comparison reads the period's kind: the month before a month, as in v1.
        period,
        date: None,
        interval,
        metrics,
        property,
        filters: query.filters.clone(),
        compare: query.include.comparison,
        with_imported: query.include.imports,
        exact: query.include.exact,
        limit: query.limit,
        offset: query.offset,
        sort: breakdown_sort(query),
        format: Format::Json,
    };
    let extras = Extras {
        // Timeseries and totals are counted after the statement, breakdowns by another.
        row_count: query.include.total_rows && endpoint == Endpoint::Breakdown,
        total_visitors: query.metrics.contains(&V2Metric::Percentage),
        group_totals: query.metrics.contains(&V2Metric::GroupConversionRate),
    };
    let mut request = Request::typed(endpoint, site, tz, params, range, extras)?;
    if query.include.match_day_of_week {
        if let Some(compared) = &request.comparison {
            request.comparison = Some(crate::period::matching_day_of_week(
                compared,
                &request.range,
                &request.tz,
            )?);
        }
    }
    if query.dimensions.len() < 2 {
        return Ok(request);
    }
    let interval = request.params.interval;
    let parts = query
        .dimensions
        .iter()
        .map(|d| match d {
            Dimension::Time(_) => Group::Bucket(interval),
            Dimension::Property(p) => Group::Property(p.clone()),
        })
        .collect();
    Ok(request.grouped_by(parts))
}

/// A breakdown's order in SQL: `order_by`, or the first metric descending. Percentages and
/// conversion rates order as their visitors (one denominator for every row).
fn breakdown_sort(query: &Query) -> Vec<Sort> {
    let metric_key = |m: V2Metric| SortKey::Metric(m.figure());
    let several = query.dimensions.len() > 1;
    if query.order_by.is_empty() {
        // As Plausible: time first where there is a time dimension, then the first metric.
        let time = query
            .dimensions
            .iter()
            .position(|d| matches!(d, Dimension::Time(_)))
            .filter(|_| several)
            .map(|i| Sort {
                key: SortKey::Part(i),
                descending: false,
            });
        return time
            .into_iter()
            .chain([Sort {
                key: metric_key(query.metrics[0]),
                descending: true,
            }])
            .collect();
    }
    query
        .order_by
        .iter()
        .map(|(key, descending)| Sort {
            key: match key {
                OrderKey::Metric(i) => metric_key(query.metrics[*i]),
                OrderKey::Dimension(i) if several => SortKey::Part(*i),
                OrderKey::Dimension(_) => SortKey::Property,
            },
            descending: *descending,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_core::site::SiteConfig;
    use serde_json::json;

    fn site() -> Site {
        Site::parse(SiteConfig {
            goals: vec!["Signup".to_string()],
            ..SiteConfig::new("example.com")
        })
        .unwrap()
    }

    fn request(body: Value) -> Result<Request, ApiError> {
        let now = "2026-03-29T12:00:00Z".parse().unwrap();
        translate(&parse(&body).unwrap(), site(), now)
    }

    #[test]
    fn v2_plans_are_v1_plans_plus_what_v2_adds() {
        let r = request(json!({
            "site_id": "example.com", "metrics": ["visitors", "percentage"],
            "date_range": "7d", "dimensions": ["visit:source"],
            "include": {"total_rows": true}
        }))
        .unwrap();
        assert_eq!(r.endpoint, Endpoint::Breakdown);
        assert_eq!(r.params.metrics, [Metric::Visitors]);
        let plan = r.stats_plan("glimpse", 0, &[]).unwrap();
        assert!(plan.current.row_count.is_some() && plan.current.total_visitors.is_some());
        assert!(plan.current.group_totals.is_none() && plan.current.goal_totals.is_none());
        assert_eq!(plan.statements().len(), 3);
        let count = plan.current.row_count.as_ref().unwrap();
        assert!(!count.template.contains("LIMIT"), "{}", count.template);
        assert!(plan.current.stats.template.contains("LIMIT"));
    }

    #[test]
    fn comparisons_are_v1_comparisons() {
        let body = |range: Value, dimensions: Value, comparisons: Value| {
            json!({
                "site_id": "example.com", "metrics": ["visitors", "percentage"],
                "date_range": range, "date": "2026-03-15", "dimensions": dimensions,
                "include": {"comparisons": comparisons, "total_rows": true}
            })
        };
        let previous = json!({"mode": "previous_period"});
        // The previous period of a month is the previous calendar month, as in v1.
        let r = request(body(json!("month"), json!(["time:day"]), previous.clone())).unwrap();
        let compared = r.comparison.clone().unwrap();
        assert_eq!(
            (compared.first.to_string(), compared.last.to_string()),
            ("2026-02-01".into(), "2026-02-28".into())
        );
        assert!(r
            .stats_plan("glimpse", 0, &[])
            .unwrap()
            .comparison
            .is_some());
        // A breakdown's comparison is its second step, on the page's keys, without a count.
        let r = request(body(json!("7d"), json!(["visit:source"]), previous)).unwrap();
        assert!(r
            .stats_plan("glimpse", 0, &[])
            .unwrap()
            .comparison
            .is_none());
        let second = r
            .breakdown_comparison("glimpse", 3, &[], &["Google".to_string()])
            .unwrap();
        assert!(second.row_count.is_none() && second.total_visitors.is_some());
        assert!(second.stats.template.contains("key IN ("));
        // Plausible's cases: the nearest day of the same weekday, never the period's own start.
        for (range, mode, first, last) in [
            (
                json!("month"),
                "previous_period",
                "2026-02-01",
                "2026-02-28",
            ),
            (
                json!(["2023-03-01", "2023-03-02"]),
                "previous_period",
                "2023-02-22",
                "2023-02-23",
            ),
            (
                json!(["2023-01-01", "2023-01-31"]),
                "previous_period",
                "2022-12-04",
                "2023-01-03",
            ),
            (
                json!(["2023-01-01", "2023-03-01"]),
                "year_over_year",
                "2022-01-02",
                "2022-03-02",
            ),
            (
                json!(["2023-02-01", "2023-02-28"]),
                "previous_period",
                "2023-01-04",
                "2023-01-31",
            ),
        ] {
            let matched = json!({"mode": mode, "match_day_of_week": true});
            let r = request(body(range.clone(), json!(["time:day"]), matched)).unwrap();
            let compared = r.comparison.unwrap();
            assert_eq!(
                (compared.first.to_string(), compared.last.to_string()),
                (first.to_string(), last.to_string()),
                "{range} {mode}"
            );
            assert_eq!(compared.first.weekday(), r.range.first.weekday());
        }
        let custom = json!({"mode": "custom", "date_range": ["2025-01-01", "2025-01-07"]});
        let r = request(body(json!("7d"), json!(["visit:device"]), custom)).unwrap();
        assert_eq!(r.comparison.unwrap().last.to_string(), "2025-01-07");
    }

    #[test]
    fn several_dimensions_group_by_all_of_them() {
        let r = request(json!({
            "site_id": "example.com", "metrics": ["visitors", "bounce_rate"],
            "date_range": "7d", "dimensions": ["time", "visit:source", "event:page"],
            "order_by": [["event:page", "desc"]], "include": {"imports": true}
        }))
        .unwrap();
        assert_eq!(r.endpoint, Endpoint::Breakdown);
        assert_eq!(
            r.group(),
            Group::Tuple(vec![
                Group::Bucket(Interval::Date),
                Group::Property(Property::Visit(crate::params::VisitProperty::Source)),
                Group::Property(Property::Event(crate::params::EventProperty::Page)),
            ])
        );
        assert_eq!(r.params.sort[0].key, SortKey::Part(2));
        // Neither imported tables nor the rollup hold combinations.
        assert!(!r.imported && r.rolled_days_lookup("glimpse").is_none());
        let plan = r.stats_plan("glimpse", 3, &[]).unwrap();
        let sql = &plan.current.stats.template;
        assert!(sql.contains("concat(replaceAll("), "{sql}");
        assert!(
            sql.contains("splitByString('\\x01\\x02', key)[3] DESC"),
            "{sql}"
        );
        // Visits count once per key among their events: the join by visit.
        assert!(sql.contains("GROUP BY session_id, key"), "{sql}");
        // By default: time first, then the first metric.
        let r = request(json!({
            "site_id": "example.com", "metrics": ["visitors"], "date_range": "7d",
            "dimensions": ["visit:device", "time:hour"]
        }))
        .unwrap();
        assert_eq!(
            r.params.sort.iter().map(|s| s.key).collect::<Vec<_>>(),
            [SortKey::Part(1), SortKey::Metric(Metric::Visitors)]
        );
        assert_eq!(r.params.interval, Interval::Hour);
    }

    #[test]
    fn unknown_goals_are_refused_as_in_v1() {
        let error = request(json!({
            "site_id": "example.com", "metrics": ["visitors"], "date_range": "7d",
            "filters": [["not", ["is", "event:goal", ["Sign up"]]]]
        }))
        .unwrap_err();
        assert!(error.to_string().contains("Signup"), "{error}");
    }
}
