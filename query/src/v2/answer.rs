//! v2's answer: `{"results": [{"metrics": [...], "dimensions": [...]}], "meta": {...},
//! "query": {...}}`, from the plan's rows and denominators. Metrics are rounded as v1 rounds
//! them (`api::metric_value`), so that both APIs give the same numbers.

use std::cmp::Ordering;
use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::request::{Dimension, OrderKey, Query, V2Metric};
use crate::answer::{change, metric_value};
use crate::api;
use crate::error::ApiError;
use crate::params::Endpoint;
use crate::period;
use crate::plan::{PeriodPlan, Request};
use crate::sql::{split_key, StatsRow};

/// What the plan's statements returned for the current period.
pub struct Figures {
    pub rows: Vec<StatsRow>,
    pub goal_totals: HashMap<String, u64>,
    pub group_totals: HashMap<String, u64>,
    pub total_visitors: u64,
    /// Breakdowns with `total_rows`: the rows before the page.
    pub row_count: Option<u64>,
}

/// The compared period: its plan and figures.
pub struct Compared {
    pub plan: PeriodPlan,
    pub figures: Figures,
    /// A breakdown key missing from the compared rows was under the `(other)` threshold
    /// then: its comparison is withheld (`null`), not zero.
    pub withheld_when_missing: bool,
}

/// One answer row: its dimension values (one per dimension), metric values and comparison.
struct Row {
    dimensions: Vec<String>,
    metrics: Vec<Value>,
    /// With a comparison: `{"dimensions", "metrics", "change"}`, `null` where there is
    /// nothing to compare with (no facing bucket, the `(other)` row, a withheld key).
    comparison: Option<Value>,
}

/// The metric values of the stats row `row` of a period.
fn values(query: &Query, plan: &PeriodPlan, figures: &Figures, row: &StatsRow) -> Vec<Value> {
    query
        .metrics
        .iter()
        .map(|m| match m {
            V2Metric::Stats(metric) => metric_value(
                row,
                *metric,
                plan.denominator(&figures.goal_totals, &row.key),
            ),
            V2Metric::Percentage => percent(row.visitors, figures.total_visitors),
            V2Metric::GroupConversionRate => percent(
                row.visitors,
                plan.group_denominator(&figures.group_totals, &row.key),
            ),
        })
        .collect()
}

/// A row's comparison: the compared row's dimension values and metrics, and the change of
/// each metric as v1 reports it (percent; points for rates and percentages).
fn comparison(query: &Query, now: &[Value], dimensions: Vec<String>, then: Vec<Value>) -> Value {
    let change: Vec<Value> = query
        .metrics
        .iter()
        .zip(now.iter().zip(&then))
        .map(|(metric, (a, b))| match metric {
            V2Metric::Stats(m) => change(*m, a, b),
            V2Metric::Percentage | V2Metric::GroupConversionRate => {
                json!((a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0)).round() as i64)
            }
        })
        .collect();
    json!({
        "dimensions": dimensions,
        "metrics": then,
        "change": change,
    })
}

pub fn shape(
    query: &Query,
    request: &Request,
    plan: &PeriodPlan,
    figures: Figures,
    compared: Option<&Compared>,
) -> Result<Value, ApiError> {
    let timeseries_labels = |range: &period::Range| {
        period::bucket_labels(range, request.params.interval, &request.tz).map_err(|e| match e {
            ApiError::BadParam { message, .. } => {
                ApiError::bad("dimensions", format!("#/dimensions/0: {message}"))
            }
            other => other,
        })
    };
    let timed = query
        .dimensions
        .iter()
        .any(|d| matches!(d, Dimension::Time(_)));
    let labels = match request.endpoint {
        Endpoint::Timeseries => Some(timeseries_labels(&request.range)?),
        // Several dimensions with time: the labels for `meta` only.
        Endpoint::Breakdown if timed && query.include.time_labels => {
            Some(timeseries_labels(&request.range)?)
        }
        _ => None,
    };
    let labels_then = match (&labels, compared) {
        (Some(_), Some(c)) => Some(timeseries_labels(&c.plan.range)?),
        _ => None,
    };
    let empty = StatsRow::default();
    // A row's key as dimension values: a key of several joins their values.
    let dimensions_of = |key: &str| match request.endpoint {
        Endpoint::Aggregate => Vec::new(),
        _ if query.dimensions.len() > 1 => split_key(key, query.dimensions.len()),
        _ => vec![key.to_string()],
    };
    let then_by_key: HashMap<&str, &StatsRow> = compared
        .map(|c| c.figures.rows.iter().map(|r| (r.key.as_str(), r)).collect())
        .unwrap_or_default();
    // The comparison of a row whose compared row is `then` (`None`: nothing to compare).
    let compare = |now: &[Value], key: &str, then: Option<&StatsRow>| -> Option<Value> {
        let c = compared?;
        Some(match then {
            Some(row) => comparison(
                query,
                now,
                dimensions_of(key),
                values(query, &c.plan, &c.figures, row),
            ),
            None => Value::Null,
        })
    };
    let (rows, total_rows) = match (&request.endpoint, &labels) {
        (Endpoint::Breakdown, _) => {
            let rows: Vec<Row> = figures
                .rows
                .iter()
                .map(|r| {
                    let metrics = values(query, plan, &figures, r);
                    let then = match compared {
                        Some(_) if r.key == api::OTHER => None,
                        Some(c) => match then_by_key.get(r.key.as_str()) {
                            Some(row) => Some(*row),
                            None if c.withheld_when_missing => None,
                            None => Some(&empty),
                        },
                        None => None,
                    };
                    let comparison = compare(&metrics, &r.key, then);
                    Row {
                        dimensions: dimensions_of(&r.key),
                        metrics,
                        comparison,
                    }
                })
                .collect();
            (rows, figures.row_count)
        }
        (Endpoint::Timeseries, Some(labels)) => {
            // Buckets with figures only, in time order; `time_labels` lists them all. A
            // bucket faces the compared bucket at the same place (`period::aligned`).
            let faces = labels_then
                .as_ref()
                .map(|then| period::aligned(labels, then, request.params.interval));
            let by_key: HashMap<&str, &StatsRow> =
                figures.rows.iter().map(|r| (r.key.as_str(), r)).collect();
            let mut rows: Vec<Row> = labels
                .iter()
                .enumerate()
                .filter_map(|(i, label)| Some((i, *by_key.get(label.as_str())?)))
                .map(|(i, r)| {
                    let metrics = values(query, plan, &figures, r);
                    let facing = faces
                        .as_ref()
                        .zip(labels_then.as_ref())
                        .and_then(|(faces, then)| Some(then[faces[i]?].as_str()));
                    let comparison = match facing {
                        Some(label) => compare(
                            &metrics,
                            label,
                            Some(then_by_key.get(label).copied().unwrap_or(&empty)),
                        ),
                        None => compare(&metrics, "", None),
                    };
                    Row {
                        dimensions: vec![r.key.clone()],
                        metrics,
                        comparison,
                    }
                })
                .collect();
            sort(&mut rows, &query.order_by);
            let total = rows.len() as u64;
            (page(rows, query), Some(total))
        }
        _ => {
            let row = figures.rows.first().cloned().unwrap_or_default();
            let metrics = values(query, plan, &figures, &row);
            let then = compared.map(|c| c.figures.rows.first().unwrap_or(&empty));
            let comparison = compare(&metrics, "", then);
            let rows = vec![Row {
                dimensions: Vec::new(),
                metrics,
                comparison,
            }];
            (page(rows, query), Some(1))
        }
    };
    let results: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut row = json!({
                "metrics": r.metrics,
                "dimensions": r.dimensions,
            });
            if let Some(comparison) = r.comparison {
                row["comparison"] = comparison;
            }
            row
        })
        .collect();
    let mut meta = Map::new();
    if query.include.imports {
        meta.insert("imports_included".into(), json!(request.imported));
        if let Some(warning) = request.imported_warning() {
            meta.insert("imports_warning".into(), json!(warning));
        }
    }
    if query.include.time_labels {
        meta.insert("time_labels".into(), json!(labels.unwrap_or_default()));
        if let Some(then) = labels_then {
            meta.insert("comparison_time_labels".into(), json!(then));
        }
    }
    if query.include.total_rows {
        meta.insert("total_rows".into(), json!(total_rows.unwrap_or(0)));
    }
    if let Some(sampling) = &request.sampling {
        meta.insert("sampling".into(), sampling.json());
    }
    if let Some(range) = &request.comparison {
        // Which dates were compared: a year earlier or the previous month is not obvious.
        meta.insert(
            "comparison_date_range".into(),
            json!([iso(request, range.start)?, iso(request, range.end - 1)?]),
        );
    }
    Ok(json!({
        "results": results,
        "meta": meta,
        "query": echo(query, request)?,
    }))
}

/// `t` (Unix seconds) in the site's time zone, ISO 8601 with its offset.
fn iso(request: &Request, t: i64) -> Result<String, ApiError> {
    let t = Timestamp::from_second(t)
        .map_err(|_| ApiError::bad("date_range", "#/date_range: out of range"))?;
    Ok(t.to_zoned(request.tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string())
}

/// `part` in percent of `whole`, one decimal, as v1's conversion rate.
fn percent(part: u64, whole: u64) -> Value {
    let ratio = if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    };
    json!((ratio * 1000.0).round() / 10.0)
}

/// Rows sorted by `order_by` (stable: time order breaks ties).
fn sort(rows: &mut [Row], order_by: &[(OrderKey, bool)]) {
    rows.sort_by(|a, b| {
        for (key, descending) in order_by {
            let ordering = match key {
                OrderKey::Dimension(i) => a.dimensions.get(*i).cmp(&b.dimensions.get(*i)),
                OrderKey::Metric(i) => {
                    let (x, y) = (a.metrics[*i].as_f64(), b.metrics[*i].as_f64());
                    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
                }
            };
            let ordering = if *descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    });
}

fn page(rows: Vec<Row>, query: &Query) -> Vec<Row> {
    rows.into_iter()
        .skip(query.offset as usize)
        .take(query.limit as usize)
        .collect()
}

/// The query as answered: the resolved range (its last second inclusive, in the site's
/// time zone), the dimension and order used.
fn echo(query: &Query, request: &Request) -> Result<Value, ApiError> {
    let iso = |t: i64| iso(request, t);
    // `time` as answered: with the interval that suited the range.
    let dimensions: Vec<String> = query
        .dimensions
        .iter()
        .zip(&query.dimension_names)
        .map(|(d, name)| match d {
            Dimension::Time(None) => match request.params.interval {
                crate::params::Interval::Hour => "time:hour",
                crate::params::Interval::Week => "time:week",
                crate::params::Interval::Month => "time:month",
                _ => "time:day",
            }
            .to_string(),
            _ => name.clone(),
        })
        .collect();
    let order_by: Vec<Value> = query
        .order_by
        .iter()
        .map(|(key, descending)| {
            let name = match key {
                OrderKey::Metric(i) => query.metrics[*i].name().to_string(),
                OrderKey::Dimension(i) => dimensions[*i].clone(),
            };
            json!([name, if *descending { "desc" } else { "asc" }])
        })
        .collect();
    Ok(json!({
        "site_id": query.site_id,
        "metrics": query.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "date_range": [iso(request.range.start)?, iso(request.range.end - 1)?],
        "filters": query.filters_json,
        "dimensions": dimensions,
        "order_by": order_by,
        "include": {
            "imports": query.include.imports,
            "time_labels": query.include.time_labels,
            "total_rows": query.include.total_rows,
            "comparisons": query.include.comparisons_json,
        },
        "pagination": {"limit": query.limit, "offset": query.offset},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_have_one_decimal_and_survive_zero() {
        assert_eq!(percent(1, 3), json!(33.3));
        assert_eq!(percent(3, 3), json!(100.0));
        assert_eq!(percent(5, 0), json!(0.0));
    }

    #[test]
    fn rows_sort_by_each_key_in_turn() {
        let row = |d: &str, v: u64| Row {
            dimensions: vec![d.into()],
            metrics: vec![json!(v)],
            comparison: None,
        };
        let mut rows = vec![row("b", 1), row("a", 2), row("c", 1)];
        sort(
            &mut rows,
            &[(OrderKey::Metric(0), false), (OrderKey::Dimension(0), true)],
        );
        let order: Vec<_> = rows.iter().map(|r| r.dimensions[0].clone()).collect();
        assert_eq!(order, ["c", "b", "a"]);
    }
}
