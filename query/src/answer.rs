//! How a stats answer is written: each metric's value from a row's sums, the change from its
//! comparison, and the rows of a timeseries or breakdown (with their comparison, if asked) as
//! JSON or CSV.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::params::{Format, Metric};
use crate::plan::Request;
use crate::sql::StatsRow;
use glimpse_core::csv_safe::{self, Cell};

/// A row's sums and its `conversion_rate` denominator.
#[derive(Debug, Clone, Copy)]
pub struct Figures<'a> {
    pub row: &'a StatsRow,
    pub total: u64,
}

impl Figures<'_> {
    pub fn value(&self, metric: Metric) -> Value {
        metric_value(self.row, metric, self.total)
    }
}

/// One row of a timeseries or breakdown answer.
pub struct Line<'a> {
    /// The bucket's label or the property's value.
    pub label: String,
    pub figures: Figures<'a>,
    /// With a comparison: what this row is compared with.
    pub compared: Option<Compared<'a>>,
}

/// The compared side of a row.
pub struct Compared<'a> {
    /// A timeseries' compared bucket (`None`: no bucket faces this one).
    pub label: Option<String>,
    /// `None` where there is nothing to compare with: no facing bucket, the `(other)` row, or
    /// a key with fewer visitors than the `(other)` threshold in the compared period.
    pub figures: Option<Figures<'a>>,
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
pub fn change(metric: Metric, now: &Value, before: &Value) -> Value {
    let (a, b) = (now.as_f64().unwrap_or(0.0), before.as_f64().unwrap_or(0.0));
    if metric.is_rate() {
        return json!((a - b).round() as i64);
    }
    if b == 0.0 {
        return json!(if a > 0.0 { 100 } else { 0 });
    }
    json!(((a - b) / b * 100.0).round() as i64)
}

/// JSON `{"results": [{key: …, metric: …}]}` or CSV with a header line. With a comparison,
/// each JSON row has `comparison` (the compared bucket's `date` for a timeseries, and the
/// metrics) and `change` (per metric), both `null` where there is nothing to compare with;
/// CSV rows have `comparison_date`, `comparison_METRIC` and `change_METRIC` columns.
pub fn rows(request: &Request, key: &str, lines: &[Line]) -> Response {
    let params = &request.params;
    let metrics = &params.metrics;
    let timeseries = request.endpoint == crate::params::Endpoint::Timeseries;
    match params.format {
        Format::Json => {
            let results: Vec<Value> = lines
                .iter()
                .map(|line| {
                    let mut entry = Map::new();
                    entry.insert(key.into(), json!(line.label));
                    for &m in metrics {
                        entry.insert(m.name().into(), line.figures.value(m));
                    }
                    if let Some(compared) = &line.compared {
                        let (comparison, change) =
                            compared_json(line, compared, metrics, timeseries);
                        entry.insert("comparison".into(), comparison);
                        entry.insert("change".into(), change);
                    }
                    Value::Object(entry)
                })
                .collect();
            let mut body = json!({ "results": results });
            if let Some(warning) = request.imported_warning() {
                body["warning"] = json!(warning);
            }
            if let Some(sampling) = &request.sampling {
                body["sampling"] = sampling.json();
            }
            Json(body).into_response()
        }
        Format::Csv => {
            let mut header = vec![key.to_string()];
            header.extend(metric_names(metrics, ""));
            if request.comparison.is_some() {
                if timeseries {
                    header.push("comparison_date".into());
                }
                header.extend(metric_names(metrics, "comparison_"));
                header.extend(metric_names(metrics, "change_"));
            }
            let header = header.iter().map(|h| Cell::from(h.as_str())).collect();
            let table = lines.iter().map(|line| {
                let mut cells = vec![Cell::from(line.label.as_str())];
                cells.extend(metrics.iter().map(|&m| Cell::from(&line.figures.value(m))));
                if let Some(c) = &line.compared {
                    if timeseries {
                        cells.push(Cell::from(c.label.as_deref().unwrap_or("")));
                    }
                    cells.extend(compared_cells(line, c, metrics));
                }
                cells
            });
            csv(header, table)
        }
    }
}

/// The aggregate as CSV: one row of the metrics (and their comparison and change).
pub fn aggregate_csv(metrics: &[Metric], line: &Line) -> Response {
    let mut header: Vec<String> = metric_names(metrics, "").collect();
    if line.compared.is_some() {
        header.extend(metric_names(metrics, "comparison_"));
        header.extend(metric_names(metrics, "change_"));
    }
    let mut cells: Vec<Cell> = metrics
        .iter()
        .map(|&m| Cell::from(&line.figures.value(m)))
        .collect();
    if let Some(c) = &line.compared {
        cells.extend(compared_cells(line, c, metrics));
    }
    csv(
        header.iter().map(|h| Cell::from(h.as_str())).collect(),
        std::iter::once(cells),
    )
}

fn compared_json(
    line: &Line,
    compared: &Compared,
    metrics: &[Metric],
    timeseries: bool,
) -> (Value, Value) {
    let Some(before) = compared.figures else {
        return (Value::Null, Value::Null);
    };
    let mut comparison = Map::new();
    let mut change_by_metric = Map::new();
    if timeseries {
        comparison.insert("date".into(), json!(compared.label));
    }
    for &m in metrics {
        let (now, then) = (line.figures.value(m), before.value(m));
        change_by_metric.insert(m.name().into(), change(m, &now, &then));
        comparison.insert(m.name().into(), then);
    }
    (Value::Object(comparison), Value::Object(change_by_metric))
}

/// The comparison's values, then the changes; empty cells where there is nothing to compare.
fn compared_cells<'a>(line: &Line, compared: &Compared, metrics: &[Metric]) -> Vec<Cell<'a>> {
    let Some(before) = compared.figures else {
        return vec![Cell::from(""); 2 * metrics.len()];
    };
    let values: Vec<Value> = metrics.iter().map(|&m| before.value(m)).collect();
    let changes: Vec<Value> = metrics
        .iter()
        .zip(&values)
        .map(|(&m, then)| change(m, &line.figures.value(m), then))
        .collect();
    values.iter().chain(&changes).map(Cell::from).collect()
}

/// CSV column names: each metric's name after `prefix`.
fn metric_names<'a>(metrics: &'a [Metric], prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    metrics.iter().map(move |m| format!("{prefix}{}", m.name()))
}

/// One CSV file: labels are visitor text (paths, sources, properties) and get the formula
/// rule of the one writer every Glimpse CSV uses; metrics are numbers we computed.
fn csv<'a>(header: Vec<Cell<'a>>, table: impl Iterator<Item = Vec<Cell<'a>>>) -> Response {
    let mut csv = csv_safe::Writer::new(Vec::new());
    let mut written = csv.write_row(header);
    for cells in table {
        written = written.and_then(|_| csv.write_row(cells));
    }
    match written
        .map_err(std::io::Error::from)
        .and_then(|_| csv.into_inner())
    {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
        // Writing to memory fails only on a bug; say so rather than send half a file.
        Err(error) => {
            tracing::error!(%error, "writing CSV failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
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
}
