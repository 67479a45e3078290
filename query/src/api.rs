//! The stats API handlers (Plausible's Stats API v1 shapes): authorize, validate the request,
//! execute its plan (`plan`), turn rows into metrics, answer JSON or CSV.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::accounts::{resolve, Principal};
use crate::answer::{self, Compared, Figures, Line};
use crate::auth::{self, Site};
use crate::error::ApiError;
use crate::params::{self, Endpoint, Format, Property};
use crate::period;
use crate::plan::{self, PeriodPlan, Request, StatsPlan};
use crate::rollup;
use crate::sql::{Sql, StatsRow};
use crate::AppState;

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
        // Permissions are kept by the site's id (a renamed site's first domain).
        (_, Some(site)) if principal.may_read(&site.domain) => Ok(site.clone()),
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

/// The request's stats plan and the rolled days it was made with. The plan's first step,
/// side by side: where the rollup may answer, the rolled days; where the period may be
/// sampled, its number of events, after which `request` reads a sample if it is over the
/// threshold (`Request::sample`).
pub(crate) async fn stats_plan(
    state: &AppState,
    request: &mut Request,
) -> Result<(StatsPlan, Vec<i64>), ApiError> {
    let threshold = state.config.query.sampling_threshold_rows;
    let (rolled, rows) = tokio::try_join!(
        async {
            match request.rolled_days_lookup(&state.database) {
                Some(lookup) => run!(state, |client| rollup::fetch_days(
                    client,
                    &lookup.statement
                )),
                None => Ok(Vec::new()),
            }
        },
        async {
            match request.sampling_lookup(&state.database, threshold) {
                Some(sql) => fetch_count(state, &sql).await.map(Some),
                None => Ok(None),
            }
        }
    )?;
    if let Some(rows) = rows {
        request.sample(rows, threshold, &rolled);
    }
    let plan = request.stats_plan(&state.database, state.config.query.min_group_size, &rolled)?;
    Ok((plan, rolled))
}

/// One period's rows: the figures, and the `conversion_rate` denominators by key.
struct PeriodRows {
    rows: Vec<StatsRow>,
    totals: HashMap<String, u64>,
}

impl PeriodRows {
    fn by_key(&self) -> HashMap<&str, &StatsRow> {
        self.rows.iter().map(|r| (r.key.as_str(), r)).collect()
    }
}

/// Runs a stats plan. The two periods are independent: ClickHouse runs them side by side.
async fn execute(
    state: &AppState,
    plan: &StatsPlan,
) -> Result<(PeriodRows, Option<PeriodRows>), ApiError> {
    tokio::try_join!(run_period(state, &plan.current), async {
        match &plan.comparison {
            Some(period) => run_period(state, period).await.map(Some),
            None => Ok(None),
        }
    })
}

/// A period's figures, then its `conversion_rate` denominators (by key; none when not asked).
async fn run_period(state: &AppState, period: &PeriodPlan) -> Result<PeriodRows, ApiError> {
    let rows = fetch(state, &period.stats).await?;
    let totals = totals_by_key(state, period.goal_totals.as_ref()).await?;
    Ok(PeriodRows { rows, totals })
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

pub(crate) async fn fetch_funnel(
    state: &AppState,
    sql: &Sql,
) -> Result<Vec<crate::sql::FunnelRow>, ApiError> {
    run!(state, |client| sql
        .query(client)
        .fetch_all::<crate::sql::FunnelRow>())
}

pub(crate) async fn aggregate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let mut request = prepare(&state, &headers, query, Endpoint::Aggregate).await?;
    let (plan, _) = stats_plan(&state, &mut request).await?;
    let (now, before) = execute(&state, &plan).await?;
    let empty = StatsRow::default();
    fn figures<'a>(period: &PeriodPlan, rows: &'a PeriodRows, empty: &'a StatsRow) -> Figures<'a> {
        let row = rows.rows.first().unwrap_or(empty);
        let total = period.denominator(&rows.totals, &row.key);
        Figures { row, total }
    }
    let line = Line {
        label: String::new(),
        figures: figures(&plan.current, &now, &empty),
        compared: plan
            .comparison
            .as_ref()
            .zip(before.as_ref())
            .map(|(p, rows)| Compared {
                label: None,
                figures: Some(figures(p, rows, &empty)),
            }),
    };
    let metrics = &request.params.metrics;
    if request.params.format == Format::Csv {
        return Ok(answer::aggregate_csv(metrics, &line));
    }
    let mut results = Map::new();
    for &metric in metrics {
        let value = line.figures.value(metric);
        let mut entry = json!({ "value": value });
        if let Some(before) = line.compared.as_ref().and_then(|c| c.figures) {
            let before = before.value(metric);
            entry["change"] = answer::change(metric, &value, &before);
            entry["comparison_value"] = before;
        }
        results.insert(metric.name().into(), entry);
    }
    let mut body = json!({ "results": results });
    if let Some(range) = &request.comparison {
        // Which dates were compared: a year earlier or the previous month is not obvious.
        body["comparison"] =
            json!({ "from": range.first.to_string(), "to": range.last.to_string() });
    }
    if let Some(warning) = request.imported_warning() {
        body["warning"] = json!(warning);
    }
    if let Some(sampling) = &request.sampling {
        body["sampling"] = sampling.json();
    }
    Ok(Json(body).into_response())
}

pub(crate) async fn timeseries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let mut request = prepare(&state, &headers, query, Endpoint::Timeseries).await?;
    let (plan, _) = stats_plan(&state, &mut request).await?;
    let interval = request.params.interval;
    let labels = period::bucket_labels(&request.range, interval, &request.tz)?;
    let (now, before) = execute(&state, &plan).await?;
    let compared = match (&plan.comparison, &before) {
        (Some(period), Some(rows)) => {
            let labels_then = period::bucket_labels(&period.range, interval, &request.tz)?;
            let faces = period::aligned(&labels, &labels_then, interval);
            Some((period, rows, rows.by_key(), labels_then, faces))
        }
        _ => None,
    };
    let rows = now.by_key();
    let empty = StatsRow::default();
    let lines: Vec<Line> = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            let row = rows.get(label.as_str()).copied().unwrap_or(&empty);
            let total = plan.current.denominator(&now.totals, &label);
            let compared = compared
                .as_ref()
                .map(|(period, then, by_key, labels_then, faces)| {
                    let label = faces[i].map(|j| labels_then[j].clone());
                    let figures = label.as_deref().map(|l| Figures {
                        row: by_key.get(l).copied().unwrap_or(&empty),
                        total: period.denominator(&then.totals, l),
                    });
                    Compared { label, figures }
                });
            Line {
                label,
                figures: Figures { row, total },
                compared,
            }
        })
        .collect();
    Ok(answer::rows(&request, "date", &lines))
}

pub(crate) async fn breakdown(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let mut request = prepare(&state, &headers, query, Endpoint::Breakdown).await?;
    let (plan, rolled) = stats_plan(&state, &mut request).await?;
    let (now, _) = execute(&state, &plan).await?;
    // The comparison reads the page's keys only: a second step.
    let keys: Vec<String> = now
        .rows
        .iter()
        .map(|r| r.key.clone())
        .filter(|k| k != OTHER)
        .collect();
    let min_group_size = state.config.query.min_group_size;
    let comparison = request.breakdown_comparison(&state.database, min_group_size, &rolled, &keys);
    let before = match &comparison {
        Some(period) => Some(run_period(&state, period).await?),
        None => None,
    };
    let then = before.as_ref().map(PeriodRows::by_key);
    let empty = StatsRow::default();
    let key = request
        .params
        .property
        .as_ref()
        .map_or("page", Property::result_key);
    let lines: Vec<Line> = now
        .rows
        .iter()
        .map(|r| {
            let compared = request.comparison.as_ref().map(|_| {
                let figures = match (&comparison, &before, &then) {
                    (Some(period), Some(rows), Some(then)) if r.key != OTHER => {
                        let total = period.denominator(&rows.totals, &r.key);
                        match then.get(r.key.as_str()) {
                            Some(row) => Some(Figures { row, total }),
                            // Under the threshold then: withheld, not zero.
                            None if min_group_size > 0 => None,
                            None => Some(Figures { row: &empty, total }),
                        }
                    }
                    _ => None,
                };
                Compared {
                    label: None,
                    figures,
                }
            });
            Line {
                label: r.key.clone(),
                figures: Figures {
                    row: r,
                    total: plan.current.denominator(&now.totals, &r.key),
                },
                compared,
            }
        })
        .collect();
    Ok(answer::rows(&request, key, &lines))
}

/// The breakdown row of the groups under the `(other)` threshold.
pub(crate) const OTHER: &str = "(other)";
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
