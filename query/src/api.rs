//! The stats API handlers (Plausible's Stats API v1 shapes): authorize, parse, run the SQL,
//! turn rows into metrics, answer JSON or CSV.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::auth::{self, Site, ALL_SITES};
use crate::error::ApiError;
use crate::params::{self, Endpoint, Filter, FilterOp, Format, Metric, Property, StatsParams};
use crate::period::{self, Range};
use crate::sql::{self, Group, Sql, StatsQuery, StatsRow};
use crate::AppState;
use glimpse_collector::csv_safe::{self, Cell};

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

/// Who asked, for which site: checked before anything else is looked at.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(Site, TimeZone), ApiError> {
    let bearer = bearer(headers)?;
    let share = query.get("auth").map(String::as_str);
    if bearer.is_none() && share.is_none() {
        return Err(ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <API key>`",
        ));
    }
    let site_id = params::parse_site_id(query.get("site_id").map(String::as_str))?;
    let sites = run!(state, |client| auth::sites(
        client,
        &state.database,
        &state.config
    ))?;

    let site = if let Some(key) = bearer {
        let allowed = run!(state, |client| auth::key_site(client, &state.database, key))?
            .ok_or(ApiError::Unauthorized("invalid or revoked API key"))?;
        let site = sites
            .get(&site_id)
            .ok_or_else(|| ApiError::UnknownSite(site_id.clone()))?;
        if allowed != ALL_SITES && allowed != site_id {
            return Err(ApiError::Forbidden(site_id));
        }
        site
    } else {
        let token = share.unwrap_or_default();
        match sites.get(&site_id) {
            Some(site)
                if site
                    .share_token
                    .as_deref()
                    .is_some_and(|t| auth::same_secret(t, token)) =>
            {
                site
            }
            _ => return Err(ApiError::Unauthorized("invalid share link")),
        }
    };
    let tz = TimeZone::get(&site.timezone).map_err(|_| {
        ApiError::Unavailable(format!(
            "site {} has an unknown time zone {:?}",
            site.domain, site.timezone
        ))
    })?;
    Ok((site.clone(), tz))
}

/// The API key of `Authorization: Bearer KEY`, if the header is there.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
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

/// A parsed, authorized request with its resolved time range.
pub(crate) struct Request {
    pub site: Site,
    pub tz: TimeZone,
    pub params: StatsParams,
    pub range: Range,
    /// Whether the site's imported aggregates are added (asked for, and able to answer).
    pub imported: bool,
    /// The site's rolled days (UTC days since 1970) around the request's periods.
    pub rolled: Vec<i64>,
}

impl Request {
    fn new(
        site: Site,
        tz: TimeZone,
        params: StatsParams,
        range: Range,
        endpoint: Endpoint,
    ) -> Self {
        let imported = params.with_imported
            && sql::imported_answers(&group_of(endpoint, &params), &params.filters);
        Request {
            site,
            tz,
            params,
            range,
            imported,
            rolled: Vec::new(),
        }
    }

    /// Plausible's `warning` when imported data was asked for but cannot answer the question.
    fn imported_warning(&self) -> Option<&'static str> {
        (self.params.with_imported && !self.imported).then_some(
            "Imported stats are not included in the results: they are daily totals per single \
             property, so they cannot answer filtered questions, hourly intervals, or \
             breakdowns by city, host name, custom properties or goals.",
        )
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
                .unwrap_or(Property::Event(params::EventProperty::Page)),
        ),
    }
}

async fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    query: Params,
    endpoint: Endpoint,
) -> Result<Request, ApiError> {
    let query = query_map(query)?;
    let (site, tz) = authorize(state, headers, &query).await?;
    let params = params::parse(endpoint, &query)?;
    check_goals(&site, &params)?;
    let range = period::resolve(params.period, params.date, &tz, Timestamp::now())?;
    let mut request = Request::new(site, tz, params, range, endpoint);
    if sql::rollup_may_answer(
        &group_of(endpoint, &request.params),
        &request.params.filters,
    ) {
        let (first, last) = rolled_window(&request.range);
        request.rolled = run!(state, |client| crate::rollup::rolled_days(
            client,
            &state.database,
            &request.site.domain,
            first,
            last,
        ))?;
    }
    Ok(request)
}

/// The UTC days whose rollup a request over `range` may use: those of the period and of the
/// one before it (for `compare`), `(first, last)`.
fn rolled_window(range: &Range) -> (i64, i64) {
    let (start, end) = (range.start, range.end);
    (
        (start - (end - start)).div_euclid(sql::DAY) - 1,
        end.div_euclid(sql::DAY),
    )
}

/// Goal filters must name the site's goals: a typo would otherwise read as zero conversions.
fn check_goals(site: &Site, params: &StatsParams) -> Result<(), ApiError> {
    for f in &params.filters {
        if f.property != Property::Event(params::EventProperty::Goal) || f.op == FilterOp::Contains
        {
            continue;
        }
        if let Some(unknown) = f
            .values
            .iter()
            .find(|v| !site.goals.iter().any(|g| &g.name == *v))
        {
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

/// Visitors of `range` by `group` with the request's filters but its goal filters: the
/// denominators of `conversion_rate`. Empty when the request does not ask for it.
async fn goal_totals(
    state: &AppState,
    request: &Request,
    range: &Range,
    group: Group,
) -> Result<HashMap<String, u64>, ApiError> {
    if !request.params.metrics.contains(&Metric::ConversionRate) {
        return Ok(HashMap::new());
    }
    let sql = goal_totals_sql(&state.database, request, range, group);
    Ok(fetch(state, &sql)
        .await?
        .into_iter()
        .map(|r| (r.key, r.visitors))
        .collect())
}

/// The visitors of `range` with the request's filters but its goal filters (0 when the request
/// does not ask for `conversion_rate`).
async fn goal_total(state: &AppState, request: &Request, range: &Range) -> Result<u64, ApiError> {
    Ok(goal_totals(state, request, range, Group::Total)
        .await?
        .remove("")
        .unwrap_or(0))
}

fn goal_totals_sql(database: &str, request: &Request, range: &Range, group: Group) -> Sql {
    let filters: Vec<Filter> = request
        .params
        .filters
        .iter()
        .filter(|f| f.property != Property::Event(params::EventProperty::Goal))
        .cloned()
        .collect();
    sql::stats(&question(
        database,
        request,
        range,
        group,
        &filters,
        &[Metric::Visitors],
    ))
}

/// What every statement of a request shares; no `(other)` rows, sort or page.
fn question<'a>(
    database: &'a str,
    request: &'a Request,
    range: &Range,
    group: Group,
    filters: &'a [Filter],
    metrics: &'a [Metric],
) -> StatsQuery<'a> {
    StatsQuery {
        database,
        site: &request.site.domain,
        timezone: request.tz.iana_name().unwrap_or("UTC"),
        start: range.start,
        end: range.end,
        group,
        filters,
        min_group_size: 0,
        sort: None,
        metrics,
        goals: &request.site.goals,
        page: None,
        imported: request.imported,
        rolled: &request.rolled,
    }
}

/// The SQL for a request over `range` (the request's or the comparison's).
fn stats_sql(
    database: &str,
    min_group_size: u64,
    request: &Request,
    range: &Range,
    endpoint: Endpoint,
) -> Sql {
    let p = &request.params;
    let group = group_of(endpoint, p);
    let breakdown = endpoint == Endpoint::Breakdown;
    sql::stats(&StatsQuery {
        min_group_size: if breakdown { min_group_size } else { 0 },
        sort: breakdown.then_some(p.sort),
        page: breakdown.then_some((p.limit, (p.page - 1) * p.limit)),
        ..question(database, request, range, group, &p.filters, &p.metrics)
    })
}

/// The final SQL text of every statement a stats request runs (with `compare`, also the
/// previous period's), values inlined by the `clickhouse` crate's escaping: for checking the
/// generated SQL on other ClickHouse versions. `now` stands for the current time. For an
/// aggregate's parameters it adds the statements of the endpoints that take them (`filtered`,
/// `props`, `sites`, realtime). Where the rollup may answer, the statements follow again as they
/// are with every day of the periods rolled up, followed by the rollup's own statements.
pub fn statements_for(
    endpoint: Endpoint,
    query: &HashMap<String, String>,
    site: &Site,
    database: &str,
    min_group_size: u64,
    now: Timestamp,
) -> Result<Vec<String>, ApiError> {
    let (request, mut statements) =
        request_statements(endpoint, query, site, database, min_group_size, now, &[])?;
    let group = group_of(endpoint, &request.params);
    if sql::rollup_may_answer(&group, &request.params.filters) {
        let (first, last) = rolled_window(&request.range);
        let all: Vec<i64> = (first..=last).collect();
        let (_, rolled) =
            request_statements(endpoint, query, site, database, min_group_size, now, &all)?;
        statements.extend(rolled);
        statements.push(sql::rolled_days(database, &site.domain, first, last));
    }
    if endpoint == Endpoint::Aggregate {
        let (first, last) = (
            request.range.first.to_string(),
            request.range.last.to_string(),
        );
        statements.push(sql::dropped(database, &site.domain, &first, &last));
        statements.push(sql::imported_ranges(database));
        statements.push(sql::prop_names(
            database,
            &site.domain,
            request.range.start,
            request.range.end,
        ));
        let now = now.as_second();
        statements.push(sql::current_visitors(
            database,
            &site.domain,
            now - 300,
            now + 1,
        ));
    }
    Ok(statements.iter().map(Sql::final_text).collect())
}

/// The final SQL text of the statements one stats request runs (its period's, its
/// `conversion_rate` denominators', and with `compare` the previous period's): what the
/// benchmark times on other ClickHouse versions. `rolled`: the site's rolled-up days.
pub fn stats_statements_for(
    endpoint: Endpoint,
    query: &HashMap<String, String>,
    site: &Site,
    database: &str,
    min_group_size: u64,
    now: Timestamp,
    rolled: &[i64],
) -> Result<Vec<String>, ApiError> {
    let (_, statements) =
        request_statements(endpoint, query, site, database, min_group_size, now, rolled)?;
    Ok(statements.iter().map(Sql::final_text).collect())
}

fn request_statements(
    endpoint: Endpoint,
    query: &HashMap<String, String>,
    site: &Site,
    database: &str,
    min_group_size: u64,
    now: Timestamp,
    rolled: &[i64],
) -> Result<(Request, Vec<Sql>), ApiError> {
    let tz = TimeZone::get(&site.timezone)
        .map_err(|_| ApiError::bad("site_id", "the site's time zone is unknown"))?;
    let params = params::parse(endpoint, query)?;
    check_goals(site, &params)?;
    let range = period::resolve(params.period, params.date, &tz, now)?;
    let mut request = Request::new(site.clone(), tz, params, range, endpoint);
    request.rolled = rolled.to_vec();
    let mut statements = vec![stats_sql(
        database,
        min_group_size,
        &request,
        &request.range,
        endpoint,
    )];
    let totals_group = match endpoint {
        Endpoint::Timeseries => Group::Bucket(request.params.interval),
        _ => Group::Total,
    };
    if request.params.metrics.contains(&Metric::ConversionRate) {
        statements.push(goal_totals_sql(
            database,
            &request,
            &request.range,
            totals_group.clone(),
        ));
    }
    if request.params.compare {
        let range = period::previous(request.params.period, &request.range, &request.tz)?;
        statements.push(stats_sql(
            database,
            min_group_size,
            &request,
            &range,
            endpoint,
        ));
        if request.params.metrics.contains(&Metric::ConversionRate) {
            statements.push(goal_totals_sql(database, &request, &range, totals_group));
        }
    }
    Ok((request, statements))
}

async fn fetch(state: &AppState, sql: &Sql) -> Result<Vec<StatsRow>, ApiError> {
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
    let sql = stats_sql(
        &state.database,
        0,
        &request,
        &request.range,
        Endpoint::Aggregate,
    );
    // The two periods are independent statements: ClickHouse runs them side by side.
    let previous_range = if request.params.compare {
        Some(period::previous(
            request.params.period,
            &request.range,
            &request.tz,
        )?)
    } else {
        None
    };
    let previous_sql = previous_range
        .as_ref()
        .map(|range| stats_sql(&state.database, 0, &request, range, Endpoint::Aggregate));
    let (rows, previous_rows) = tokio::try_join!(fetch(&state, &sql), async {
        match &previous_sql {
            Some(sql) => fetch(&state, sql).await.map(Some),
            None => Ok(None),
        }
    })?;
    let row = rows.into_iter().next().unwrap_or_default();
    let previous = previous_rows.map(|rows| rows.into_iter().next().unwrap_or_default());
    let total = goal_total(&state, &request, &request.range).await?;
    let previous_total = match &previous_range {
        Some(range) => goal_total(&state, &request, range).await?,
        None => 0,
    };
    let mut results = Map::new();
    for &metric in &request.params.metrics {
        let value = metric_value(&row, metric, total);
        let mut entry = json!({ "value": value });
        if let Some(previous) = &previous {
            let before = metric_value(previous, metric, previous_total);
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
    let labels = period::bucket_labels(&request.range, request.params.interval, &request.tz)?;
    let sql = stats_sql(
        &state.database,
        0,
        &request,
        &request.range,
        Endpoint::Timeseries,
    );
    let rows: HashMap<String, StatsRow> = fetch(&state, &sql)
        .await?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let totals = goal_totals(
        &state,
        &request,
        &request.range,
        Group::Bucket(request.params.interval),
    )
    .await?;
    let empty = StatsRow::default();
    let table: Vec<(String, &StatsRow, u64)> = labels
        .into_iter()
        .map(|label| {
            let row = rows.get(&label).unwrap_or(&empty);
            let total = totals.get(&label).copied().unwrap_or(0);
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
    let sql = stats_sql(
        &state.database,
        state.config.min_group_size,
        &request,
        &request.range,
        Endpoint::Breakdown,
    );
    let rows = fetch(&state, &sql).await?;
    let key = request
        .params
        .property
        .as_ref()
        .map_or("page", Property::result_key);
    let total = goal_total(&state, &request, &request.range).await?;
    let table: Vec<(String, &StatsRow, u64)> =
        rows.iter().map(|r| (r.key.clone(), r, total)).collect();
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
    let (site, _) = authorize(&state, &headers, &query).await?;
    let now = Timestamp::now().as_second();
    let sql = sql::current_visitors(&state.database, &site.domain, now - 5 * 60, now + 1);
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
    // Counts are kept per UTC day: the period's local dates are read as those days.
    let (first, last) = (request.range.first, request.range.last);
    let sql = sql::dropped(
        &state.database,
        &request.site.domain,
        &first.to_string(),
        &last.to_string(),
    );
    let rows: Vec<Reason> = run!(state, |client| sql.query(client).fetch_all())?;
    let total: u64 = rows.iter().map(|r| r.count).sum();
    let results: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "reason": r.reason, "count": r.count }))
        .collect();
    Ok(Json(json!({ "results": results, "total": total })).into_response())
}

/// `GET /api/v1/sites`: the sites the presented key may read (a share token with `site_id`:
/// that one site), `{"results": [{"domain": …, "timezone": …, "goals": […], "imported":
/// {"from": …, "to": …} or null}]}`, for the dashboard's site picker.
pub(crate) async fn sites(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let query = query_map(query)?;
    let visible: Vec<Site> = match bearer(&headers)? {
        Some(key) => {
            let allowed = run!(state, |client| auth::key_site(client, &state.database, key))?
                .ok_or(ApiError::Unauthorized("invalid or revoked API key"))?;
            run!(state, |client| auth::sites(
                client,
                &state.database,
                &state.config
            ))?
            .into_values()
            .filter(|s| allowed == ALL_SITES || s.domain == allowed)
            .collect()
        }
        None => vec![authorize(&state, &headers, &query).await?.0],
    };
    // Which days have imported aggregates (`with_imported=true` adds them).
    let imported: HashMap<String, (String, String)> = run!(state, |client| {
        sql::imported_ranges(&state.database)
            .query(client)
            .fetch_all::<(String, String, String)>()
    })?
    .into_iter()
    .map(|(site, first, last)| (site, (first, last)))
    .collect();
    let results: Vec<Value> = visible
        .iter()
        .map(|s| {
            let goals: Vec<&str> = s.goals.iter().map(|g| g.name.as_str()).collect();
            let imported = imported
                .get(&s.domain)
                .map(|(first, last)| json!({ "from": first, "to": last }));
            json!({ "domain": s.domain, "timezone": s.timezone, "goals": goals, "imported": imported })
        })
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

/// `GET /api/v1/stats/props`: the custom property names used in the period, most used first,
/// `{"results": ["plan", …]}`, for the dashboard's property breakdowns.
pub(crate) async fn prop_names(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let request = prepare(&state, &headers, query, Endpoint::Aggregate).await?;
    let sql = sql::prop_names(
        &state.database,
        &request.site.domain,
        request.range.start,
        request.range.end,
    );
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
