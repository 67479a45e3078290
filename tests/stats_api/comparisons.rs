//! Comparisons (`comparison=previous_period|year_over_year|custom`): aggregates, timeseries
//! bucket by bucket and breakdowns row by row, across Berlin's DST change and month ends, each
//! compared value and change recomputed from the fixture.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::expected::{day_range, expected, local_label, Key, Sums};
use crate::service::{check_row, Service};
use crate::{BERLIN, SITE};

/// The change Plausible reports: whole percent of the compared value (100 from nothing),
/// points for the bounce rate.
fn change(metric: &str, now: &Value, before: &Value) -> Value {
    let (a, b) = (now.as_f64().unwrap(), before.as_f64().unwrap());
    json!(if metric == "bounce_rate" {
        (a - b).round() as i64
    } else if b == 0.0 {
        if a > 0.0 {
            100
        } else {
            0
        }
    } else {
        ((a - b) / b * 100.0).round() as i64
    })
}

fn zero() -> Sums {
    Sums::default()
}

/// A timeseries row's comparison: `date`, the metrics and the changes, as expected.
fn check_compared(what: &str, row: &Value, date: &str, before: &Sums, metrics: &str) {
    assert_eq!(row["comparison"]["date"], json!(date), "{what}: {row}");
    check_row(what, &row["comparison"], before, metrics);
    for m in metrics.split(',') {
        assert_eq!(
            row["change"][m],
            change(m, &row[m], &before.metric(m)),
            "{what}: change of {m}: {row}"
        );
    }
}

/// Berlin, 2027-03-29 (an ordinary day: 2027's change is on the 28th) compared with
/// 2026-03-29, the day clocks went forward (23 hours, no 02:00): each hour faces the same local
/// hour a year earlier, and 02:00 faces nothing.
pub async fn year_over_year_across_dst(s: &Service) {
    let metrics = "visitors,pageviews,visits";
    let got = s
        .json_at(
            &s.base,
            &s.berlin_key,
            "/api/v1/stats/timeseries",
            &[
                ("site_id", BERLIN),
                ("period", "day"),
                ("date", "2027-03-29"),
                ("interval", "hour"),
                ("metrics", metrics),
                ("comparison", "year_over_year"),
            ],
        )
        .await;
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 24, "an ordinary day: {got}");
    let label = local_label("Europe/Berlin", "%Y-%m-%d %H:00:00");
    let before = expected(
        &s.fixture,
        BERLIN,
        day_range("Europe/Berlin", "2026-03-29", "2026-03-29"),
        &[],
        Key::Bucket(&label),
        0,
    );
    let mut with_traffic = 0;
    for row in results {
        let date = row["date"].as_str().unwrap();
        assert_eq!(row["visitors"], 0, "nothing in 2027: {row}");
        let hour = &date[11..];
        if hour == "02:00:00" {
            assert_eq!(
                row["comparison"],
                Value::Null,
                "2026-03-29 had no 02:00: {row}"
            );
            assert_eq!(row["change"], Value::Null);
            continue;
        }
        let then = format!("2026-03-29 {hour}");
        let sums = before.get(&then).cloned().unwrap_or_else(zero);
        with_traffic += usize::from(!sums.visitors.is_empty());
        check_compared(&format!("YoY {date}"), row, &then, &sums, metrics);
    }
    assert!(with_traffic >= 5, "the fixture has traffic on the DST day");

    // The aggregate of the same comparison, and the dates it names.
    let got = s
        .json_at(
            &s.base,
            &s.berlin_key,
            "/api/v1/stats/aggregate",
            &[
                ("site_id", BERLIN),
                ("period", "day"),
                ("date", "2027-03-29"),
                ("metrics", metrics),
                ("comparison", "year_over_year"),
            ],
        )
        .await;
    let total = expected(
        &s.fixture,
        BERLIN,
        day_range("Europe/Berlin", "2026-03-29", "2026-03-29"),
        &[],
        Key::Total,
        0,
    );
    for m in metrics.split(',') {
        assert_eq!(
            got["results"][m]["comparison_value"],
            total[""].metric(m),
            "{m}"
        );
        assert_eq!(got["results"][m]["value"], 0);
    }
    assert_eq!(
        got["comparison"],
        json!({"from": "2026-03-29", "to": "2026-03-29"})
    );
    // February 29 compared a year earlier is February 28; a leap February with 28 days.
    for (period, date, from, to) in [
        ("day", "2028-02-29", "2027-02-28", "2027-02-28"),
        ("month", "2028-02-10", "2027-02-01", "2027-02-28"),
        ("month", "2029-02-10", "2028-02-01", "2028-02-28"),
    ] {
        let got = s
            .json(
                "/api/v1/stats/aggregate",
                &[
                    ("site_id", SITE),
                    ("period", period),
                    ("date", date),
                    ("comparison", "year_over_year"),
                ],
            )
            .await;
        assert_eq!(
            got["comparison"],
            json!({"from": from, "to": to}),
            "{period} {date}"
        );
    }
    // A week in 2027 against the fixture's week in 2026, in UTC.
    let got = s
        .json(
            "/api/v1/stats/aggregate",
            &[
                ("site_id", SITE),
                ("period", "custom"),
                ("date", "2027-03-24,2027-03-31"),
                ("metrics", metrics),
                ("comparison", "year_over_year"),
            ],
        )
        .await;
    let week = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-31"),
        &[],
        Key::Total,
        0,
    );
    for m in metrics.split(',') {
        assert_eq!(
            got["results"][m]["comparison_value"],
            week[""].metric(m),
            "{m}"
        );
    }
    println!(
        "year over year across DST: {with_traffic} compared hours with traffic; {}",
        got["results"]["visitors"]
    );
}

/// April 2026 compared with the previous period, March (31 days, not 30): the days face
/// March's 1st to 30th, and March 31 is in the aggregate but faces no April day.
pub async fn previous_month_across_a_month_end(s: &Service) {
    let metrics = "visitors,pageviews,bounce_rate,visit_duration";
    let q = [
        ("site_id", SITE),
        ("period", "month"),
        ("date", "2026-04-15"),
        ("metrics", metrics),
        ("comparison", "previous_period"),
    ];
    let got = s.json("/api/v1/stats/aggregate", &q).await;
    let march = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-01", "2026-03-31"),
        &[],
        Key::Total,
        0,
    );
    let april = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-04-01", "2026-04-30"),
        &[],
        Key::Total,
        0,
    );
    for m in metrics.split(',') {
        let r = &got["results"][m];
        let (now, before) = (april[""].metric(m), march[""].metric(m));
        assert_eq!(r["value"], now, "{m}");
        assert_eq!(r["comparison_value"], before, "{m}");
        assert_eq!(r["change"], change(m, &now, &before), "{m}");
    }
    assert_eq!(
        got["comparison"],
        json!({"from": "2026-03-01", "to": "2026-03-31"})
    );

    let got = s.json("/api/v1/stats/timeseries", &q).await;
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 30);
    let label = local_label("UTC", "%Y-%m-%d");
    let days = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-01", "2026-04-30"),
        &[],
        Key::Bucket(&label),
        0,
    );
    for (i, row) in results.iter().enumerate() {
        let date = format!("2026-04-{:02}", i + 1);
        let then = format!("2026-03-{:02}", i + 1);
        assert_eq!(row["date"], json!(date));
        check_row(&date, row, days.get(&date).unwrap_or(&zero()), metrics);
        check_compared(
            &date,
            row,
            &then,
            days.get(&then).unwrap_or(&zero()),
            metrics,
        );
    }
    assert!(days.contains_key("2026-03-31") && days.contains_key("2026-03-30"));
    println!("previous month across a month end: 30 April days faced March 1..30");
}

/// Four days compared with three custom ones: the fourth faces nothing; the CSV carries the
/// same comparison.
pub async fn custom_range_timeseries_and_csv(s: &Service) {
    let metrics = "visitors,pageviews,bounce_rate";
    let q = [
        ("site_id", SITE),
        ("period", "custom"),
        ("date", "2026-03-28,2026-03-31"),
        ("metrics", metrics),
        ("comparison", "custom"),
        ("compare_from", "2026-03-24"),
        ("compare_to", "2026-03-26"),
    ];
    let got = s.json("/api/v1/stats/timeseries", &q).await;
    let label = local_label("UTC", "%Y-%m-%d");
    let days = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-31"),
        &[],
        Key::Bucket(&label),
        0,
    );
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for (i, row) in results.iter().enumerate().take(3) {
        let then = format!("2026-03-{:02}", 24 + i);
        check_compared(&then, row, &then, &days[&then], metrics);
    }
    assert_eq!(results[3]["comparison"], Value::Null);

    let mut csv_q = q.to_vec();
    csv_q.push(("format", "csv"));
    let (status, body) = s
        .get_with(&s.base, Some(&s.key), "/api/v1/stats/timeseries", &csv_q)
        .await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "date,visitors,pageviews,bounce_rate,comparison_date,comparison_visitors,\
         comparison_pageviews,comparison_bounce_rate,change_visitors,change_pageviews,\
         change_bounce_rate"
    );
    for (line, row) in lines[1..].iter().zip(results) {
        let cells: Vec<&str> = line.split(',').collect();
        let json_cells: Vec<String> = [
            row["date"].as_str().unwrap_or("").to_string(),
            row["visitors"].to_string(),
            row["pageviews"].to_string(),
            row["bounce_rate"].to_string(),
            row["comparison"]["date"].as_str().unwrap_or("").to_string(),
        ]
        .into_iter()
        .chain(["visitors", "pageviews", "bounce_rate"].map(|m| cell(&row["comparison"][m])))
        .chain(["visitors", "pageviews", "bounce_rate"].map(|m| cell(&row["change"][m])))
        .collect();
        assert_eq!(cells, json_cells, "{line}");
    }
    // The aggregate's CSV: one row of values, compared values and changes, as its JSON.
    let mut aggregate_q = q.to_vec();
    aggregate_q.push(("format", "csv"));
    let (status, body) = s
        .get_with(
            &s.base,
            Some(&s.key),
            "/api/v1/stats/aggregate",
            &aggregate_q,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let json = s.json("/api/v1/stats/aggregate", &q).await;
    let names: Vec<&str> = metrics.split(',').collect();
    let mut header: Vec<String> = names.iter().map(|m| m.to_string()).collect();
    header.extend(names.iter().map(|m| format!("comparison_{m}")));
    header.extend(names.iter().map(|m| format!("change_{m}")));
    let row: Vec<String> = ["value", "comparison_value", "change"]
        .iter()
        .flat_map(|field| {
            let json = &json;
            names
                .iter()
                .map(move |m| json["results"][m][field].to_string())
        })
        .collect();
    assert_eq!(
        body,
        format!("{}\r\n{}\r\n", header.join(","), row.join(","))
    );
    println!("custom comparison: 4 days against 3, CSV equal to the JSON");
}

fn cell(v: &Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        v.to_string()
    }
}

/// Each row of a breakdown page gets its key's figures in the compared period, zero where the
/// key had none; with `min_group_size` 3, a key under it then is withheld (null), as is
/// `(other)`.
pub async fn breakdown_rows(s: &Service) {
    let metrics = "visitors,pageviews,bounce_rate";
    let (mut compared, mut withheld) = (0, 0);
    for (property, key) in [
        ("visit:source", "source"),
        ("event:page", "page"),
        ("visit:city", "city"),
    ] {
        let q = [
            ("site_id", SITE),
            ("property", property),
            ("period", "custom"),
            ("date", "2026-03-30,2026-03-31"),
            ("metrics", metrics),
            ("comparison", "custom"),
            ("compare_from", "2026-03-24"),
            ("compare_to", "2026-03-24"),
            ("limit", "4"),
        ];
        let before = |k| {
            expected(
                &s.fixture,
                SITE,
                day_range("UTC", "2026-03-24", "2026-03-24"),
                &[],
                Key::Property(property),
                k,
            )
        };
        let (all, thresholded): (BTreeMap<_, _>, BTreeMap<_, _>) = (before(0), before(3));
        for (base, k) in [(&s.base, 0), (&s.k_base, 3)] {
            let got = s.json_at(base, &s.key, "/api/v1/stats/breakdown", &q).await;
            let results = got["results"].as_array().unwrap();
            assert!(!results.is_empty() && results.len() <= 4, "{got}");
            for row in results {
                let name = row[key].as_str().unwrap();
                let what = format!("{property}={name} k={k}");
                let then = if k == 0 { &all } else { &thresholded };
                match then.get(name) {
                    _ if name == "(other)" => {
                        assert_eq!(row["comparison"], Value::Null, "{what}");
                    }
                    Some(sums) => {
                        compared += usize::from(!sums.visitors.is_empty());
                        check_row(&what, &row["comparison"], sums, metrics);
                        for m in metrics.split(',') {
                            assert_eq!(
                                row["change"][m],
                                change(m, &row[m], &sums.metric(m)),
                                "{what} {m}"
                            );
                        }
                    }
                    None if k > 0 => {
                        withheld += 1;
                        assert_eq!(row["comparison"], Value::Null, "{what}: withheld")
                    }
                    None => check_row(&what, &row["comparison"], &zero(), metrics),
                }
            }
        }
    }
    assert!(
        compared >= 5 && withheld >= 1,
        "{compared} compared, {withheld} withheld"
    );
    println!("breakdown comparisons: {compared} rows compared, {withheld} withheld under k=3");
}
