//! The v2 query body (`POST /api/v2/query`), read into typed values. Anything that does not
//! read is a 400 naming the field and, Plausible-style, its JSON path (`#/metrics/1`).

use jiff::civil::Date;
use serde_json::{Map, Value};

use super::{bad, filters, short};
use crate::error::ApiError;
use crate::params::Condition;
use crate::params::{self, Comparison, EventProperty, Interval, Metric, Property};

/// A metric of v2: one the stats statement computes, or one computed from it and a
/// denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Metric {
    Stats(Metric),
    /// The row's visitors in percent of the period's (same filters).
    Percentage,
    /// The row's converted visitors in percent of the row's visitors without goal filters.
    GroupConversionRate,
}

impl V2Metric {
    pub fn name(self) -> &'static str {
        match self {
            V2Metric::Stats(m) => m.name(),
            V2Metric::Percentage => "percentage",
            V2Metric::GroupConversionRate => "group_conversion_rate",
        }
    }

    /// The figure of the stats statement it is computed from.
    pub fn figure(self) -> Metric {
        match self {
            V2Metric::Stats(m) => m,
            V2Metric::Percentage | V2Metric::GroupConversionRate => Metric::Visitors,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "percentage" => Some(V2Metric::Percentage),
            "group_conversion_rate" => Some(V2Metric::GroupConversionRate),
            _ => Metric::parse(text).map(V2Metric::Stats),
        }
    }
}

/// What the rows are grouped by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Property(Property),
    /// `time` (`None`: the interval suits the range) or `time:hour|day|week|month`.
    Time(Option<Interval>),
}

/// `date_range` as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateRange {
    /// `day`, `7d`, … `all`.
    Relative(&'static str),
    /// Both dates inclusive, in the site's time zone.
    Dates(Date, Date),
    /// Both ISO 8601 date-times (the second inclusive), as sent.
    Times(String, String),
}

pub const RELATIVE_RANGES: [&str; 10] = [
    "day", "7d", "28d", "30d", "91d", "month", "6mo", "12mo", "year", "all",
];

/// What `order_by` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKey {
    /// The metric at this index of `metrics`.
    Metric(usize),
    /// The dimension at this index of `dimensions`.
    Dimension(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Include {
    pub imports: bool,
    pub time_labels: bool,
    pub total_rows: bool,
    /// `comparisons`: what the period is compared with.
    pub comparison: Option<Comparison>,
    /// `comparisons.match_day_of_week`: a previous period or year moved to start on the
    /// same weekday (`period::matching_day_of_week`).
    pub match_day_of_week: bool,
    /// `comparisons` as sent, for the answer's `query`.
    pub comparisons_json: Option<Value>,
    /// `sampling: false`: exact figures even for a period large enough to be sampled.
    pub exact: bool,
}

/// Plausible's default and largest page.
pub const DEFAULT_LIMIT: u64 = 10_000;
const MAX_OFFSET: u64 = 100_000_000;

/// One v2 query, fully typed.
#[derive(Debug, Clone)]
pub struct Query {
    pub site_id: String,
    pub metrics: Vec<V2Metric>,
    pub date_range: DateRange,
    /// `date`, Glimpse's: the day relative ranges count from (default: today there).
    pub date: Option<Date>,
    pub filters: Vec<Condition>,
    /// As sent, for the answer's `query`.
    pub filters_json: Value,
    /// In the order sent; each row's `dimensions` hold one value per dimension, in this
    /// order. At most [`MAX_DIMENSIONS`].
    pub dimensions: Vec<Dimension>,
    /// As sent.
    pub dimension_names: Vec<String>,
    /// `(key, descending)`; empty: the default order.
    pub order_by: Vec<(OrderKey, bool)>,
    pub include: Include,
    pub limit: u64,
    pub offset: u64,
}

const FIELDS: [&str; 9] = [
    "site_id",
    "metrics",
    "date_range",
    "date",
    "filters",
    "dimensions",
    "order_by",
    "include",
    "pagination",
];

/// Reads a query body (JSON already parsed).
pub fn parse(body: &Value) -> Result<Query, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| bad("body", "#: expected a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            "body",
            format!("#: unknown field {:?}", params::truncate(unknown)),
        ));
    }
    let site_id = params::parse_site_id(object.get("site_id").and_then(Value::as_str))?;
    let metrics = parse_metrics(object.get("metrics"))?;
    let date_range = parse_date_range(object.get("date_range"))?;
    let date = match object.get("date") {
        None => None,
        Some(Value::String(text)) => Some(params::parse_date(text).map_err(|_| {
            bad(
                "date",
                format!(
                    "#/date: {:?} is not a date YYYY-MM-DD",
                    params::truncate(text)
                ),
            )
        })?),
        Some(other) => {
            return Err(bad(
                "date",
                format!("#/date: expected a date, got {}", short(other)),
            ))
        }
    };
    let filters = filters::parse(object.get("filters"))?;
    let (dimensions, dimension_names) = parse_dimensions(object.get("dimensions"))?;
    let order_by = parse_order_by(object.get("order_by"), &metrics, &dimension_names)?;
    let include = parse_include(object.get("include"))?;
    let (limit, offset) = parse_pagination(object.get("pagination"))?;
    let query = Query {
        site_id,
        metrics,
        date_range,
        date,
        filters,
        filters_json: object
            .get("filters")
            .cloned()
            .unwrap_or(Value::Array(vec![])),
        dimensions,
        dimension_names,
        order_by,
        include,
        limit,
        offset,
    };
    check(&query)?;
    Ok(query)
}

fn parse_metrics(value: Option<&Value>) -> Result<Vec<V2Metric>, ApiError> {
    let list = value
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("metrics", "#/metrics: expected a non-empty list of metrics"))?;
    let mut metrics = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let metric = item.as_str().and_then(V2Metric::parse).ok_or_else(|| {
            bad(
                "metrics",
                format!("#/metrics/{i}: Invalid metric {}", short(item)),
            )
        })?;
        if metrics.contains(&metric) {
            return Err(bad(
                "metrics",
                format!("#/metrics/{i}: {} is asked for twice", metric.name()),
            ));
        }
        metrics.push(metric);
    }
    Ok(metrics)
}

pub(crate) fn parse_date_range(value: Option<&Value>) -> Result<DateRange, ApiError> {
    let invalid = |v: &Value| {
        bad(
            "date_range",
            format!(
                "#/date_range: Invalid date range {}; use one of {} or [\"YYYY-MM-DD\", \
                 \"YYYY-MM-DD\"] or two ISO 8601 date-times",
                short(v),
                RELATIVE_RANGES.join(", ")
            ),
        )
    };
    let value = value.ok_or_else(|| bad("date_range", "#/date_range: required"))?;
    match value {
        Value::String(text) => RELATIVE_RANGES
            .iter()
            .find(|r| **r == text)
            .map(|r| DateRange::Relative(r))
            .ok_or_else(|| invalid(value)),
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(a), Value::String(b)] if a.len() == 10 && b.len() == 10 => {
                let date = |t: &str| params::parse_date(t).map_err(|_| invalid(value));
                let (first, last) = (date(a)?, date(b)?);
                if first > last {
                    return Err(bad(
                        "date_range",
                        "#/date_range: the first date is after the second",
                    ));
                }
                Ok(DateRange::Dates(first, last))
            }
            [Value::String(a), Value::String(b)] => Ok(DateRange::Times(a.clone(), b.clone())),
            _ => Err(invalid(value)),
        },
        _ => Err(invalid(value)),
    }
}

/// Most dimensions in one query. Each more multiplies the rows (a page by a country by a
/// day is already the traffic's whole detail) and lengthens every key; Plausible's documented
/// combinations take two or three.
pub const MAX_DIMENSIONS: usize = 3;

fn parse_dimensions(value: Option<&Value>) -> Result<(Vec<Dimension>, Vec<String>), ApiError> {
    let Some(value) = value else {
        return Ok((Vec::new(), Vec::new()));
    };
    let list = value
        .as_array()
        .ok_or_else(|| bad("dimensions", "#/dimensions: expected a list of dimensions"))?;
    if list.len() > MAX_DIMENSIONS {
        return Err(bad(
            "dimensions",
            format!("#/dimensions: at most {MAX_DIMENSIONS} dimensions in one query"),
        ));
    }
    let (mut dimensions, mut names) = (Vec::new(), Vec::<String>::new());
    for (i, item) in list.iter().enumerate() {
        let path = format!("#/dimensions/{i}");
        let name = item.as_str().ok_or_else(|| {
            bad(
                "dimensions",
                format!("{path}: Invalid dimension {}", short(item)),
            )
        })?;
        let dimension = match name {
            "time" => Dimension::Time(None),
            "time:hour" => Dimension::Time(Some(Interval::Hour)),
            "time:day" => Dimension::Time(Some(Interval::Date)),
            "time:week" => Dimension::Time(Some(Interval::Week)),
            "time:month" => Dimension::Time(Some(Interval::Month)),
            _ => Dimension::Property(super::property(name, "dimensions", &path)?),
        };
        let refuse = |why: &str| {
            Err(bad(
                "dimensions",
                format!("{path}: {:?} {why}", params::truncate(name)),
            ))
        };
        if names.iter().any(|n| n == name) {
            return refuse("is asked for twice");
        }
        if matches!(dimension, Dimension::Time(_))
            && dimensions.iter().any(|d| matches!(d, Dimension::Time(_)))
        {
            return refuse("is a second time dimension; ask for one");
        }
        dimensions.push(dimension);
        names.push(name.to_string());
    }
    let exit_page = Dimension::Property(Property::Visit(params::VisitProperty::ExitPage));
    if dimensions.len() > 1 {
        if let Some(i) = dimensions.iter().position(|d| *d == exit_page) {
            // A visit's exit page is known at its end only: its statement groups by visit.
            return Err(bad(
                "dimensions",
                format!(
                    "#/dimensions/{i}: visit:exit_page cannot be combined with other \
                     dimensions yet"
                ),
            ));
        }
    }
    Ok((dimensions, names))
}

fn parse_order_by(
    value: Option<&Value>,
    metrics: &[V2Metric],
    dimensions: &[String],
) -> Result<Vec<(OrderKey, bool)>, ApiError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let list = value.as_array().ok_or_else(|| {
        bad(
            "order_by",
            "#/order_by: expected a list of [name, direction]",
        )
    })?;
    let mut order = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let (name, direction) = match item.as_array().map(Vec::as_slice) {
            Some([Value::String(n), Value::String(d)]) => (n.as_str(), d.as_str()),
            _ => {
                return Err(bad(
                    "order_by",
                    format!(
                        "#/order_by/{i}: expected [name, \"asc\" or \"desc\"], got {}",
                        short(item)
                    ),
                ))
            }
        };
        let descending = match direction {
            "desc" => true,
            "asc" => false,
            _ => {
                return Err(bad(
                    "order_by",
                    format!("#/order_by/{i}/1: the direction is asc or desc"),
                ))
            }
        };
        let key = if let Some(at) = dimensions.iter().position(|d| d == name) {
            OrderKey::Dimension(at)
        } else if let Some(at) = metrics.iter().position(|m| m.name() == name) {
            OrderKey::Metric(at)
        } else {
            return Err(bad(
                "order_by",
                format!(
                    "#/order_by/{i}/0: Invalid order_by entry {:?}: neither a queried metric nor \
                     a queried dimension",
                    params::truncate(name)
                ),
            ));
        };
        order.push((key, descending));
    }
    Ok(order)
}

fn parse_include(value: Option<&Value>) -> Result<Include, ApiError> {
    let Some(value) = value else {
        return Ok(Include::default());
    };
    let object: &Map<String, Value> = value
        .as_object()
        .ok_or_else(|| bad("include", "#/include: expected an object"))?;
    let mut include = Include::default();
    for (key, value) in object {
        let flag = match key.as_str() {
            "imports" => &mut include.imports,
            "time_labels" => &mut include.time_labels,
            "total_rows" => &mut include.total_rows,
            "comparisons" => {
                let parsed = parse_comparisons(value)?;
                include.comparison = parsed.map(|(c, _)| c);
                include.match_day_of_week = parsed.is_some_and(|(_, m)| m);
                include.comparisons_json = include.comparison.map(|_| value.clone());
                continue;
            }
            "sampling" => {
                let sampling = value
                    .as_bool()
                    .ok_or_else(|| bad("include", "#/include/sampling: expected true or false"))?;
                include.exact = !sampling;
                continue;
            }
            other => {
                return Err(bad(
                    "include",
                    format!("#/include: unknown option {:?}", params::truncate(other)),
                ))
            }
        };
        *flag = value.as_bool().ok_or_else(|| {
            bad(
                "include",
                format!("#/include/{key}: expected true or false"),
            )
        })?;
    }
    Ok(include)
}

/// `{"mode": "previous_period" | "year_over_year"}` or `{"mode": "custom", "date_range":
/// ["YYYY-MM-DD", "YYYY-MM-DD"]}`; `null` or `false`: none. With it, whether the weekdays
/// are matched (`match_day_of_week`; as in Plausible, not for a custom range, whose dates
/// are the client's).
fn parse_comparisons(value: &Value) -> Result<Option<(Comparison, bool)>, ApiError> {
    let field = |path: &str, message: &str| {
        bad("include", format!("#/include/comparisons{path}: {message}"))
    };
    let object = match value {
        Value::Null | Value::Bool(false) => return Ok(None),
        Value::Object(object) => object,
        _ => {
            return Err(field(
                "",
                "expected {\"mode\": \"previous_period\" | \"year_over_year\" | \"custom\"}",
            ))
        }
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !["mode", "date_range", "match_day_of_week"].contains(&k.as_str()))
    {
        return Err(field(
            "",
            &format!("unknown field {:?}", params::truncate(unknown)),
        ));
    }
    let match_day_of_week = match object.get("match_day_of_week") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field("/match_day_of_week", "expected true or false")),
    };
    let mode = object.get("mode").and_then(Value::as_str);
    let date_range = object.get("date_range");
    let comparison = match mode {
        Some("previous_period") => Comparison::PreviousPeriod,
        Some("year_over_year") => Comparison::YearOverYear,
        Some("custom") => {
            let dates = date_range
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .and_then(|pair| match pair {
                    [Value::String(a), Value::String(b)] => {
                        Some((params::parse_date(a).ok()?, params::parse_date(b).ok()?))
                    }
                    _ => None,
                });
            let Some((first, last)) = dates else {
                return Err(field(
                    "/date_range",
                    "mode custom needs a date_range [\"YYYY-MM-DD\", \"YYYY-MM-DD\"]",
                ));
            };
            if first > last {
                return Err(field("/date_range", "the first date is after the second"));
            }
            Comparison::Custom(first, last)
        }
        _ => {
            return Err(field(
                "/mode",
                &format!(
                    "Invalid comparison mode {}; use previous_period, year_over_year or custom",
                    object.get("mode").map_or("(none)".to_string(), short)
                ),
            ))
        }
    };
    if date_range.is_some() && !matches!(comparison, Comparison::Custom(..)) {
        return Err(field("/date_range", "only mode custom takes a date_range"));
    }
    let match_day_of_week = match_day_of_week && !matches!(comparison, Comparison::Custom(..));
    Ok(Some((comparison, match_day_of_week)))
}

fn parse_pagination(value: Option<&Value>) -> Result<(u64, u64), ApiError> {
    let Some(value) = value else {
        return Ok((DEFAULT_LIMIT, 0));
    };
    let object = value.as_object().ok_or_else(|| {
        bad(
            "pagination",
            "#/pagination: expected {\"limit\", \"offset\"}",
        )
    })?;
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for (key, value) in object {
        let (field, min, max) = match key.as_str() {
            "limit" => (&mut limit, 1, DEFAULT_LIMIT),
            "offset" => (&mut offset, 0, MAX_OFFSET),
            other => {
                return Err(bad(
                    "pagination",
                    format!("#/pagination: unknown field {:?}", params::truncate(other)),
                ))
            }
        };
        *field = value
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                bad(
                    "pagination",
                    format!("#/pagination/{key}: a whole number from {min} to {max}"),
                )
            })?;
    }
    Ok((limit, offset))
}

/// The rules between fields.
fn check(q: &Query) -> Result<(), ApiError> {
    let properties: Vec<&Property> = q
        .dimensions
        .iter()
        .filter_map(|d| match d {
            Dimension::Property(p) => Some(p),
            Dimension::Time(_) => None,
        })
        .collect();
    let several = q.dimensions.len() > 1;
    let timed = q.dimensions.iter().any(|d| matches!(d, Dimension::Time(_)));
    let goal = Property::Event(EventProperty::Goal);
    let by_goal = properties.contains(&&goal);
    let goal_filtered = q.filters.iter().any(Condition::is_goal_filter);
    let nested_goal = q
        .filters
        .iter()
        .any(|c| !c.is_goal_filter() && c.filters().iter().any(|f| f.property == goal));
    for (i, metric) in q.metrics.iter().enumerate() {
        let name = metric.name();
        let refuse = |why: &str| {
            Err(bad(
                "metrics",
                format!("#/metrics/{i}: Metric `{name}` {why}"),
            ))
        };
        match metric {
            V2Metric::Stats(Metric::ConversionRate) | V2Metric::GroupConversionRate => {
                if nested_goal {
                    return refuse(
                        "needs its event:goal filters at the top level, not inside and/or/not",
                    );
                }
                if !(by_goal || goal_filtered) {
                    return refuse("can only be queried with event:goal filters or dimensions");
                }
                if *metric == V2Metric::GroupConversionRate && q.dimensions.is_empty() {
                    return refuse("can only be queried with a dimension");
                }
                // Its denominator is per row without the goal: by goal and more, per the
                // other parts, which no statement groups by yet.
                if *metric == V2Metric::GroupConversionRate && by_goal && several {
                    return refuse(
                        "cannot be queried with event:goal among several dimensions yet",
                    );
                }
            }
            V2Metric::Percentage if q.dimensions.is_empty() => {
                return refuse("can only be queried with a dimension");
            }
            V2Metric::Stats(Metric::TimeOnPage | Metric::ScrollDepth)
                if properties.iter().any(|p| {
                    matches!(
                        p,
                        Property::Event(EventProperty::Name | EventProperty::Goal)
                    )
                }) =>
            {
                return refuse("is measured per page, not per event name or goal");
            }
            _ => {}
        }
    }
    if q.include.comparison.is_some() && matches!(q.date_range, DateRange::Times(..)) {
        return Err(bad(
            "include",
            "#/include/comparisons: comparisons need a date_range of whole days, not date-times",
        ));
    }
    if q.include.comparison.is_some() && several && timed {
        // A row faces the row of the compared period's facing bucket: not done for keys that
        // combine a bucket with other values yet.
        return Err(bad(
            "include",
            "#/include/comparisons: comparisons are not supported with a time dimension among \
             several dimensions yet",
        ));
    }
    if q.include.time_labels && !timed {
        return Err(bad(
            "include",
            "#/include/time_labels: needs a time dimension",
        ));
    }
    // Sorting by a rate per key is done in SQL only for what SQL knows.
    let breakdown = !properties.is_empty();
    if breakdown {
        if let Some((OrderKey::Metric(i), _)) = q
            .order_by
            .iter()
            .find(|(k, _)| matches!(k, OrderKey::Metric(i) if q.metrics[*i] == V2Metric::GroupConversionRate))
        {
            return Err(bad(
                "order_by",
                format!("#/order_by: ordering a breakdown by {} is not supported yet", q.metrics[*i].name()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(body: Value) -> (&'static str, String) {
        match parse(&body) {
            Err(ApiError::BadParam { param, message }) => (param, message),
            other => panic!("{body}: {other:?}"),
        }
    }

    fn body(extra: Value) -> Value {
        let mut base = json!({"site_id": "a.com", "metrics": ["visitors"], "date_range": "7d"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn a_full_query_reads() {
        let q = parse(&body(json!({
            "metrics": ["visitors", "percentage", "bounce_rate"],
            "date_range": ["2026-03-01", "2026-03-31"],
            "dimensions": ["visit:source"],
            "filters": [["is_not", "visit:country", ["DE"]]],
            "order_by": [["bounce_rate", "asc"], ["visit:source", "desc"]],
            "include": {"imports": true, "total_rows": true},
            "pagination": {"limit": 5, "offset": 10}
        })))
        .unwrap();
        assert_eq!(q.metrics[1], V2Metric::Percentage);
        assert_eq!(
            q.order_by,
            [(OrderKey::Metric(2), false), (OrderKey::Dimension(0), true)]
        );
        assert_eq!((q.limit, q.offset), (5, 10));
        assert!(q.include.imports && q.include.total_rows && !q.include.time_labels);
        assert_eq!(q.include.comparison, None);
        let custom = parse(&body(json!({"include": {"comparisons": {
            "mode": "custom", "date_range": ["2025-03-01", "2025-03-31"]
        }}})))
        .unwrap();
        assert_eq!(
            custom.include.comparison,
            Some(Comparison::Custom(
                "2025-03-01".parse().unwrap(),
                "2025-03-31".parse().unwrap()
            ))
        );
        assert_eq!(
            q.date_range,
            DateRange::Dates("2026-03-01".parse().unwrap(), "2026-03-31".parse().unwrap())
        );
    }

    #[test]
    fn bad_queries_name_the_field() {
        for (extra, expected, path) in [
            (
                json!({"metrics": ["visitors", "bogus"]}),
                "metrics",
                "#/metrics/1",
            ),
            (json!({"metrics": []}), "metrics", "#/metrics"),
            (json!({"date_range": "1y"}), "date_range", "#/date_range"),
            (
                json!({"date_range": ["2026-03-02", "2026-03-01"]}),
                "date_range",
                "after",
            ),
            (
                json!({"dimensions": ["visit:nope"]}),
                "dimensions",
                "#/dimensions/0: unknown property \"visit:nope\"",
            ),
            (
                json!({"dimensions": ["time", "visit:source", "visit:device", "event:page"]}),
                "dimensions",
                "at most 3",
            ),
            (
                json!({"dimensions": ["visit:source", "visit:source"]}),
                "dimensions",
                "#/dimensions/1: \"visit:source\" is asked for twice",
            ),
            (
                json!({"dimensions": ["time:day", "time:week"]}),
                "dimensions",
                "#/dimensions/1: \"time:week\" is a second time dimension",
            ),
            (
                json!({"dimensions": ["visit:source", "visit:exit_page"]}),
                "dimensions",
                "#/dimensions/1: visit:exit_page cannot be combined",
            ),
            (
                json!({"dimensions": ["visit:source", 7]}),
                "dimensions",
                "#/dimensions/1: Invalid dimension 7",
            ),
            (
                json!({"metrics": ["group_conversion_rate"], "dimensions": ["event:goal", "visit:source"]}),
                "metrics",
                "among several dimensions",
            ),
            (
                json!({"metrics": ["time_on_page"], "dimensions": ["visit:source", "event:name"]}),
                "metrics",
                "per page",
            ),
            (
                json!({"dimensions": ["time:day", "visit:source"], "include": {"comparisons": {"mode": "previous_period"}}}),
                "include",
                "time dimension among several",
            ),
            (
                json!({"order_by": [["pageviews", "desc"]]}),
                "order_by",
                "#/order_by/0/0",
            ),
            (
                json!({"include": {"comparisons": {"mode": "last_week"}}}),
                "include",
                "#/include/comparisons/mode",
            ),
            (
                json!({"include": {"comparisons": {"mode": "custom"}}}),
                "include",
                "#/include/comparisons/date_range",
            ),
            (
                json!({"include": {"comparisons": {"mode": "custom", "date_range": ["2026-03-02", "2026-03-01"]}}}),
                "include",
                "after",
            ),
            (
                json!({"include": {"comparisons": {"mode": "previous_period", "date_range": ["2026-03-01", "2026-03-02"]}}}),
                "include",
                "only mode custom",
            ),
            (
                json!({"include": {"comparisons": {"mode": "year_over_year", "match_day_of_week": 1}}}),
                "include",
                "#/include/comparisons/match_day_of_week: expected true or false",
            ),
            (
                json!({"include": {"comparisons": {"mode": "previous_period"}}, "date_range": ["2026-03-01T00:00:00Z", "2026-03-01T12:00:00Z"]}),
                "include",
                "whole days",
            ),
            (
                json!({"include": {"time_labels": true}}),
                "include",
                "time dimension",
            ),
            (
                json!({"pagination": {"limit": 0}}),
                "pagination",
                "#/pagination/limit",
            ),
            (
                json!({"metrics": ["conversion_rate"]}),
                "metrics",
                "event:goal",
            ),
            (json!({"metrics": ["percentage"]}), "metrics", "dimension"),
            (
                json!({"metrics": ["scroll_depth"], "dimensions": ["event:goal"]}),
                "metrics",
                "per page",
            ),
            (
                json!({"metrics": ["conversion_rate"], "filters": [["or", [["is", "event:goal", ["Signup"]], ["is", "event:page", ["/"]]]]]}),
                "metrics",
                "top level",
            ),
            (json!({"colour": "blue"}), "body", "colour"),
            (json!({"site_id": "x' OR 1=1"}), "site_id", "domain"),
        ] {
            let (param, message) = field(body(extra.clone()));
            assert_eq!(param, expected, "{extra}: {message}");
            assert!(message.contains(path), "{extra}: {message}");
        }
    }
}
