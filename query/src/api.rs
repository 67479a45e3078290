//! The stats API handlers (Plausible's Stats API v1 shapes): authorize, validate the request,
//! execute its plan (`plan`), turn rows into metrics, answer JSON or CSV.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::accounts::{resolve, Principal};
use crate::auth::{self, Site};
use crate::error::ApiError;
use crate::params::{self, Endpoint, Format, Metric, Property};
use crate::period;
use crate::plan::{self, PeriodPlan, Request, StatsPlan};
use crate::rollup;
use crate::sql::{Sql, StatsRow};
use crate::AppState;
use glimpse_core::csv_safe::{self, Cell};

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Runs one ClickHouse query of the request with its own query id and time limit, killed if
/// the request goes away first (`db`): `run!(state, |client| query(client, …))`.
macro_rules! run {
    ($state:expr, |$client:ident| $query:expr) => {{
        let tracked = $state.db.track();
        let $client = &tracked.client;
        tracked.run($query).await
    }};
}

/// Who asked, for which site: checked before anything else is looked at. 401 without valid
/// credentials; for a key, 404 for an unknown site and 403 for another site's; for a signed-in
/// user, 403 for a site they have no role on; for a share link, 401 for any other site.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Site, ApiError> {
    let principal = resolve::principal(state, headers, query).await?;
    let site_id = params::parse_site_id(query.get("site_id").map(String::as_str))?;
    let sites = all_sites(state).await?;
    let site = sites.get(&site_id);
    match (&principal, site) {
        (_, Some(site)) if principal.may_read(&site_id) => Ok(site.clone()),
        (Principal::ShareLink { .. }, _) => Err(ApiError::Unauthorized("invalid share link")),
        (Principal::Key { .. } | Principal::Owner { .. }, None) => {
            Err(ApiError::UnknownSite(site_id))
        }
        (Principal::Key { .. }, Some(_)) => Err(ApiError::Forbidden(site_id)),
        // Unknown or not theirs, the same answer: no list of sites for the curious.
        (Principal::User { .. } | Principal::Owner { .. }, _) => Err(ApiError::Denied(format!(
            "your account cannot read site {site_id:?}"
        ))),
    }
}

/// Every site, from the short-lived cache or (at most once per its lifetime) from ClickHouse:
/// a stats request then costs one auth round trip (the key) instead of two. Keys are never
/// cached, so that a revoked key stops working at once.
pub(crate) async fn all_sites(state: &AppState) -> Result<auth::SitesByDomain, ApiError> {
    if let Some(sites) = state.sites.get() {
        return Ok(sites);
    }
    let sites = run!(state, |client| auth::sites(
        client,
        &state.database,
        &state.config
    ))?;
    Ok(state.sites.put(sites))
}

/// The API key of `Authorization: Bearer KEY`, if the header is there.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(ApiError::Unauthorized(
                    "the Authorization header must be `Bearer <API key>`",
                ))
        })
        .transpose()
}

fn query_map(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params
        .map(|Query(map)| map)
        .map_err(|e| ApiError::bad("query", format!("cannot read the query string: {e}")))
}

/// A validated request: authorized, its parameters parsed, its period resolved.
async fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    query: Params,
    endpoint: Endpoint,
) -> Result<Request, ApiError> {
    let query = query_map(query)?;
    let site = authorize(state, headers, &query).await?;
    Request::new(endpoint, &query, site, Timestamp::now())
}

/// The request's stats plan: where the rollup may answer, its rolled days are looked up
/// first (the plan's first step).
pub(crate) async fn stats_plan(state: &AppState, request: &Request) -> Result<StatsPlan, ApiError> {
    let rolled = match request.rolled_days_lookup(&state.database) {
        Some(lookup) => run!(state, |client| rollup::fetch_days(
            client,
            &lookup.statement
        ))?,
        None => Vec::new(),
    };
    request.stats_plan(&state.database, state.config.query.min_group_size, &rolled)
}

/// One period's rows: the figures, and the `conversion_rate` denominators by key.
struct PeriodRows {
    rows: Vec<StatsRow>,
    totals: HashMap<String, u64>,
}

/// Runs a stats plan. The two periods' figures are independent statements: ClickHouse runs
/// them side by side; the denominators follow.
async fn execute(
    state: &AppState,
    plan: &StatsPlan,
) -> Result<(PeriodRows, Option<PeriodRows>), ApiError> {
    let (rows, previous_rows) = tokio::try_join!(fetch(state, &plan.current.stats), async {
        match &plan.previous {
            Some(previous) => fetch(state, &previous.stats).await.map(Some),
            None => Ok(None),
        }
    })?;
    let current = PeriodRows {
        rows,
        totals: goal_totals(state, &plan.current).await?,
    };
    let previous = match (&plan.previous, previous_rows) {
        (Some(period), Some(rows)) => Some(PeriodRows {
            rows,
            totals: goal_totals(state, period).await?,
        }),
        _ => None,
    };
    Ok((current, previous))
}

/// The `conversion_rate` denominators of a period, by key; empty when not asked for.
async fn goal_totals(
    state: &AppState,
    period: &PeriodPlan,
) -> Result<HashMap<String, u64>, ApiError> {
    totals_by_key(state, period.goal_totals.as_ref()).await
}

/// The `(key, visitors)` rows of a denominator statement, by key; empty without one.
pub(crate) async fn totals_by_key(
    state: &AppState,
    sql: Option<&Sql>,
) -> Result<HashMap<String, u64>, ApiError> {
    let Some(sql) = sql else {
        return Ok(HashMap::new());
    };
    Ok(fetch(state, sql)
        .await?
        .into_iter()
        .map(|r| (r.key, r.visitors))
        .collect())
}

/// The one number a count statement returns.
pub(crate) async fn fetch_count(state: &AppState, sql: &Sql) -> Result<u64, ApiError> {
    run!(state, |client| sql.query(client).fetch_one::<u64>())
}

pub(crate) async fn fetch(state: &AppState, sql: &Sql) -> Result<Vec<StatsRow>, ApiError> {
    run!(state, |client| sql.query(client).fetch_all::<StatsRow>())
}

/// A metric's value from the row's sums, rounded as Plausible rounds it. `total_visitors` is
/// the denominator of `conversion_rate`.
pub fn metric_value(row: &StatsRow, metric: Metric, total_visitors: u64) -> Value {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    match metric {
        Metric::Visitors => json!(row.visitors),
        Metric::Visits => json!(row.visits),
        Metric::Pageviews => json!(row.pageviews),
        Metric::Events => json!(row.events),
        Metric::ViewsPerVisit => {
            json!((ratio(row.visit_pageviews, row.visits) * 100.0).round() / 100.0)
        }
        Metric::BounceRate => json!((ratio(row.bounces, row.visits) * 100.0).round() as u64),
        Metric::VisitDuration => json!(ratio(row.duration, row.visits).round() as u64),
        Metric::TimeOnPage => {
            json!((ratio(row.engaged_ms, row.engaged_pages) / 1000.0).round() as u64)
        }
        Metric::ScrollDepth => json!(ratio(row.scroll_sum, row.engaged_pages).round() as u64),
        Metric::ConversionRate => {
            json!((ratio(row.visitors, total_visitors) * 1000.0).round() / 10.0)
        }
    }
}

/// Percent change (points for rates), as Plausible reports it.
fn change(metric: Metric, now: &Value, before: &Value) -> Value {
    let (a, b) = (now.as_f64().unwrap_or(0.0), before.as_f64().unwrap_or(0.0));
    if metric.is_rate() {
        return json!((a - b).round() as i64);
    }
    if b == 0.0 {
        return json!(if a > 0.0 { 100 } else { 0 });
    }
    json!(((a - b) / b * 100.0).round() as i64)
}

pub(crate) async fn aggregate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let request = prepare(&state, &headers, query, Endpoint::Aggregate).await?;
    let plan = stats_plan(&state, &request).await?;
    let (now, before) = execute(&state, &plan).await?;
    let row = now.rows.into_iter().next().unwrap_or_default();
    let total = plan.current.denominator(&now.totals, &row.key);
    let previous = match (&plan.previous, before) {
        (Some(period), Some(before)) => {
            let row = before.rows.into_iter().next().unwrap_or_default();
            let total = period.denominator(&before.totals, &row.key);
            Some((row, total))
        }
        _ => None,
    };
    let mut results = Map::new();
    for &metric in &request.params.metrics {
        let value = metric_value(&row, metric, total);
        let mut entry = json!({ "value": value });
        if let Some((previous, previous_total)) = &previous {
            let before = metric_value(previous, metric, *previous_total);
            entry["change"] = change(metric, &value, &before);
            entry["comparison_value"] = before;
        }
        results.insert(metric.name().into(), entry);
    }
    let mut body = json!({ "results": results });
    if let Some(warning) = request.imported_warning() {
        body["warning"] = json!(warning);
    }
    Ok(Json(body).into_response())
}

pub(crate) async fn timeseries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let request = prepare(&state, &headers, query, Endpoint::Timeseries).await?;
    let plan = stats_plan(&state, &request).await?;
    let labels = period::bucket_labels(&request.range, request.params.interval, &request.tz)?;
    let (now, _) = execute(&state, &plan).await?;
    let rows: HashMap<&str, &StatsRow> = now.rows.iter().map(|r| (r.key.as_str(), r)).collect();
    let empty = StatsRow::default();
    let table: Vec<(String, &StatsRow, u64)> = labels
        .into_iter()
        .map(|label| {
            let row = rows.get(label.as_str()).copied().unwrap_or(&empty);
            let total = plan.current.denominator(&now.totals, &label);
            (label, row, total)
        })
        .collect();
    Ok(respond(&request, "date", &table))
}

pub(crate) async fn breakdown(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let request = prepare(&state, &headers, query, Endpoint::Breakdown).await?;
    let plan = stats_plan(&state, &request).await?;
    let (now, _) = execute(&state, &plan).await?;
    let key = request
        .params
        .property
        .as_ref()
        .map_or("page", Property::result_key);
    let table: Vec<(String, &StatsRow, u64)> = now
        .rows
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                r,
                plan.current.denominator(&now.totals, &r.key),
            )
        })
        .collect();
    Ok(respond(&request, key, &table))
}

/// JSON `{"results": [{key: …, metric: …}]}` or CSV with a header line. Each row comes with
/// its `conversion_rate` denominator.
fn respond(request: &Request, key: &str, table: &[(String, &StatsRow, u64)]) -> Response {
    let params = &request.params;
    match params.format {
        Format::Json => {
            let results: Vec<Value> = table
                .iter()
                .map(|(label, row, total)| {
                    let mut entry = Map::new();
                    entry.insert(key.into(), json!(label));
                    for &m in &params.metrics {
                        entry.insert(m.name().into(), metric_value(row, m, *total));
                    }
                    Value::Object(entry)
                })
                .collect();
            let mut body = json!({ "results": results });
            if let Some(warning) = request.imported_warning() {
                body["warning"] = json!(warning);
            }
            Json(body).into_response()
        }
        Format::Csv => {
            // One writer for every CSV Glimpse writes: labels are visitor text (paths,
            // sources, properties) and get the formula rule; metrics are numbers we computed.
            let mut csv = csv_safe::Writer::new(Vec::new());
            let header = std::iter::once(key)
                .chain(params.metrics.iter().map(|m| m.name()))
                .map(Cell::from);
            let mut written = csv.write_row(header);
            for (label, row, total) in table {
                let metrics = params
                    .metrics
                    .iter()
                    .map(|&m| Cell::from(&metric_value(row, m, *total)));
                written = written.and_then(|_| {
                    csv.write_row(std::iter::once(Cell::from(label.as_str())).chain(metrics))
                });
            }
            match written
                .map_err(std::io::Error::from)
                .and_then(|_| csv.into_inner())
            {
                Ok(bytes) => {
                    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response()
                }
                // Writing to memory fails only on a bug; say so rather than send half a file.
                Err(error) => {
                    tracing::error!(%error, "writing CSV failed");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
    }
}

/// `GET /api/v1/stats/realtime/visitors`: visitors of the last 5 minutes, a bare number.
pub(crate) async fn realtime_visitors(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let query = query_map(query)?;
    let site = authorize(&state, &headers, &query).await?;
    plan::site_timezone(&site)?;
    let sql = plan::realtime_statement(&state.database, &site, Timestamp::now());
    let visitors: u64 = run!(state, |client| sql.query(client).fetch_one::<u64>())?;
    Ok(Json(json!(visitors)).into_response())
}

/// `GET /api/v1/stats/filtered`: traffic that was not counted (bots, opt-outs, spam, site
/// rules), per reason, over the period's dates.
pub(crate) async fn filtered(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let request = prepare(&state, &headers, query, Endpoint::Aggregate).await?;
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Reason {
        reason: String,
        count: u64,
    }
    let sql = request.dropped_statement(&state.database);
    let rows: Vec<Reason> = run!(state, |client| sql.query(client).fetch_all())?;
    let total: u64 = rows.iter().map(|r| r.count).sum();
    let results: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "reason": r.reason, "count": r.count }))
        .collect();
    Ok(Json(json!({ "results": results, "total": total })).into_response())
}

/// `GET /api/v1/stats/props`: the custom property names used in the period, most used first,
/// `{"results": ["plan", …]}`, for the dashboard's property breakdowns.
pub(crate) async fn prop_names(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let request = prepare(&state, &headers, query, Endpoint::Aggregate).await?;
    let sql = request.prop_names_statement(&state.database);
    let names: Vec<String> = run!(state, |client| sql.query(client).fetch_all())?;
    Ok(Json(json!({ "results": names })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fill: impl FnOnce(&mut StatsRow)) -> StatsRow {
        let mut row = StatsRow::default();
        fill(&mut row);
        row
    }

    #[test]
    fn counts_are_the_sums_as_integers() {
        let r = row(|r| {
            r.visitors = 7;
            r.visits = 9;
            r.pageviews = 20;
            r.events = 31;
        });
        assert_eq!(metric_value(&r, Metric::Visitors, 0), json!(7));
        assert_eq!(metric_value(&r, Metric::Visits, 0), json!(9));
        assert_eq!(metric_value(&r, Metric::Pageviews, 0), json!(20));
        assert_eq!(metric_value(&r, Metric::Events, 0), json!(31));
    }

    #[test]
    fn views_per_visit_has_two_decimals_and_stays_a_float() {
        let vpv = |pages, visits| {
            metric_value(
                &row(|r| {
                    r.visit_pageviews = pages;
                    r.visits = visits;
                }),
                Metric::ViewsPerVisit,
                0,
            )
        };
        assert_eq!(vpv(7, 3), json!(2.33));
        assert_eq!(vpv(2, 3), json!(0.67));
        // Whole numbers are still floats (`2.0` in the JSON), as Plausible answers.
        assert_eq!(vpv(4, 2), json!(2.0));
        assert_ne!(vpv(4, 2), json!(2));
        // No visits: zero, not NaN or a division error.
        assert_eq!(vpv(5, 0), json!(0.0));
    }

    #[test]
    fn bounce_rate_is_whole_percent_rounded_half_away_from_zero() {
        let rate = |bounces, visits| {
            metric_value(
                &row(|r| {
                    r.bounces = bounces;
                    r.visits = visits;
                }),
                Metric::BounceRate,
                0,
            )
        };
        assert_eq!(rate(1, 3), json!(33));
        assert_eq!(rate(2, 3), json!(67));
        assert_eq!(rate(1, 8), json!(13)); // 12.5
        assert_eq!(rate(3, 3), json!(100));
        assert_eq!(rate(0, 0), json!(0));
    }

    #[test]
    fn durations_are_whole_seconds_per_visit_or_page() {
        let r = row(|r| {
            r.duration = 5;
            r.visits = 2;
            r.engaged_ms = 2_500;
            r.engaged_pages = 1;
            r.scroll_sum = 101;
        });
        assert_eq!(metric_value(&r, Metric::VisitDuration, 0), json!(3)); // 2.5 s
        assert_eq!(metric_value(&r, Metric::TimeOnPage, 0), json!(3)); // 2.5 s
        assert_eq!(metric_value(&r, Metric::ScrollDepth, 0), json!(101));
        let r = row(|r| {
            r.engaged_ms = 4_998;
            r.engaged_pages = 2;
            r.scroll_sum = 75;
        });
        assert_eq!(metric_value(&r, Metric::TimeOnPage, 0), json!(2)); // 2.499 s
        assert_eq!(metric_value(&r, Metric::ScrollDepth, 0), json!(38)); // 37.5 %
                                                                         // Nothing to divide by: zeros.
        let empty = row(|r| {
            r.duration = 10;
            r.engaged_ms = 10;
            r.scroll_sum = 10;
        });
        for metric in [
            Metric::VisitDuration,
            Metric::TimeOnPage,
            Metric::ScrollDepth,
        ] {
            assert_eq!(metric_value(&empty, metric, 0), json!(0), "{metric:?}");
        }
    }

    #[test]
    fn conversion_rate_is_percent_of_all_visitors_with_one_decimal() {
        let rate = |visitors, total| {
            metric_value(
                &row(|r| r.visitors = visitors),
                Metric::ConversionRate,
                total,
            )
        };
        assert_eq!(rate(1, 3), json!(33.3));
        assert_eq!(rate(2, 3), json!(66.7));
        assert_eq!(rate(1, 8), json!(12.5));
        assert_eq!(rate(3, 3), json!(100.0));
        // No visitors at all: 0.0, not a division by zero.
        assert_eq!(rate(0, 0), json!(0.0));
        assert_eq!(rate(4, 0), json!(0.0));
    }

    #[test]
    fn change_is_whole_percent_of_the_previous_value() {
        let c = |now: Value, before: Value| change(Metric::Visitors, &now, &before);
        assert_eq!(c(json!(150), json!(100)), json!(50));
        assert_eq!(c(json!(50), json!(100)), json!(-50));
        assert_eq!(c(json!(1), json!(3)), json!(-67)); // -66.67
        assert_eq!(c(json!(41), json!(40)), json!(3)); // 2.5, half away from zero
        assert_eq!(c(json!(39), json!(40)), json!(-3)); // -2.5
        assert_eq!(c(json!(0), json!(5)), json!(-100));
        assert_eq!(c(json!(7), json!(7)), json!(0));
        // Float metrics too.
        assert_eq!(
            change(Metric::ViewsPerVisit, &json!(2.5), &json!(2.0)),
            json!(25)
        );
    }

    #[test]
    fn change_from_nothing_is_100_or_0() {
        let c = |now: Value, before: Value| change(Metric::Pageviews, &now, &before);
        assert_eq!(c(json!(12), json!(0)), json!(100));
        assert_eq!(c(json!(0), json!(0)), json!(0));
        // A missing previous value counts as 0; a missing current one too.
        assert_eq!(c(json!(12), Value::Null), json!(100));
        assert_eq!(c(Value::Null, Value::Null), json!(0));
        assert_eq!(c(Value::Null, json!(4)), json!(-100));
    }

    #[test]
    fn change_of_a_rate_is_in_points() {
        assert_eq!(change(Metric::BounceRate, &json!(40), &json!(33)), json!(7));
        assert_eq!(
            change(Metric::BounceRate, &json!(20), &json!(0)),
            json!(20),
            "not 100: points, not percent"
        );
        assert_eq!(
            change(Metric::ConversionRate, &json!(33.3), &json!(30.0)),
            json!(3)
        );
        assert_eq!(
            change(Metric::ConversionRate, &json!(10.0), &json!(12.5)),
            json!(-3) // -2.5
        );
        assert_eq!(
            change(Metric::ConversionRate, &json!(12.5), &Value::Null),
            json!(13)
        );
    }

    fn headers(authorization: Option<&[u8]>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                header::AUTHORIZATION,
                header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn the_api_key_comes_only_from_a_bearer_header() {
        assert_eq!(bearer(&headers(None)).unwrap(), None);
        assert_eq!(
            bearer(&headers(Some(b"Bearer glimpse_abc"))).unwrap(),
            Some("glimpse_abc")
        );
        assert_eq!(
            bearer(&headers(Some(b"Bearer   glimpse_abc  "))).unwrap(),
            Some("glimpse_abc"),
            "surrounding spaces are not part of the key"
        );
        for wrong in [
            &b"Basic Z2xpbXBzZTp4"[..],
            b"bearer glimpse_abc",
            b"glimpse_abc",
            b"Bearer\tglimpse_abc",
            b"Bearer glimpse_\xff",
        ] {
            let err = bearer(&headers(Some(wrong))).unwrap_err();
            assert!(
                matches!(err, ApiError::Unauthorized(m) if m.contains("Bearer <API key>")),
                "{wrong:?}: {err:?}"
            );
        }
    }
}
