//! Stats API v2 comparisons (`include.comparisons`): aggregates, time dimensions bucket by
//! bucket (Berlin's DST day, a month end) and breakdown pages row by row (k-suppression
//! included), each compared value and change recomputed from the fixture, and the same
//! questions asked of v1 giving the same numbers.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::expected::{day_range, expected, local_label, Key, Sums};
use crate::service::Service;
use crate::{BERLIN, SITE};

/// The change v1 and v2 report: whole percent of the compared value (100 from nothing),
/// points for rates and percentages.
fn change(metric: &str, now: &Value, before: &Value) -> Value {
    let (a, b) = (now.as_f64().unwrap(), before.as_f64().unwrap());
    json!(if metric == "bounce_rate" || metric == "percentage" {
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

/// A v2 row's `comparison`: its dimensions, each metric as the expected sums', and each
/// change from the row's own metric.
fn check_comparison(what: &str, row: &Value, dimensions: Value, metrics: &[&str], then: &Sums) {
    let c = &row["comparison"];
    assert_eq!(c["dimensions"], dimensions, "{what}: {row}");
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(c["metrics"][i], then.metric(m), "{what}: {m}: {row}");
        assert_eq!(
            c["change"][i],
            change(m, &row["metrics"][i], &c["metrics"][i]),
            "{what}: change of {m}: {row}"
        );
    }
}

fn results(got: &Value) -> &Vec<Value> {
    got["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {got}"))
}

/// Berlin's 2026-03-29 (23 hours, no 02:00) by the hour against the previous day (24 hours):
/// each hour faces the same local hour, as v1 aligns them; a year earlier each hour faces
/// 2025-03-29's (an ordinary day) and the range named is that day's.
pub async fn dst_day_by_the_hour(s: &Service) {
    let metrics = ["visitors", "pageviews", "visits"];
    let body = |mode: &str| {
        json!({
            "site_id": BERLIN, "metrics": metrics, "date_range": ["2026-03-29", "2026-03-29"],
            "dimensions": ["time:hour"], "include": {"comparisons": {"mode": mode}, "time_labels": true}
        })
    };
    let got = s
        .v2_at(&s.base, &s.berlin_key, body("previous_period"))
        .await;
    assert_eq!(
        got["meta"]["comparison_date_range"],
        json!(["2026-03-28T00:00:00+01:00", "2026-03-28T23:59:59+01:00"])
    );
    assert_eq!(got["meta"]["time_labels"].as_array().unwrap().len(), 23);
    assert_eq!(
        got["meta"]["comparison_time_labels"]
            .as_array()
            .unwrap()
            .len(),
        24
    );
    let label = local_label("Europe/Berlin", "%Y-%m-%d %H:00:00");
    let then = expected(
        &s.fixture,
        BERLIN,
        day_range("Europe/Berlin", "2026-03-28", "2026-03-28"),
        &[],
        Key::Bucket(&label),
        0,
    );
    let rows = results(&got);
    assert!(rows.len() >= 5, "the fixture has traffic that day: {got}");
    let mut after_the_change = 0;
    for row in rows {
        let hour = &row["dimensions"][0].as_str().unwrap()[11..];
        let facing = format!("2026-03-28 {hour}");
        after_the_change += usize::from(hour >= "03:00:00");
        check_comparison(
            &facing,
            row,
            json!([facing]),
            &metrics,
            then.get(&facing).unwrap_or(&Sums::default()),
        );
    }
    assert!(after_the_change > 0, "hours after the change are compared");

    // The same question of v1: every compared bucket and change equal.
    let v1 = s
        .json_at(
            &s.base,
            &s.berlin_key,
            "/api/v1/stats/timeseries",
            &[
                ("site_id", BERLIN),
                ("period", "day"),
                ("date", "2026-03-29"),
                ("interval", "hour"),
                ("metrics", &metrics.join(",")),
                ("comparison", "previous_period"),
            ],
        )
        .await;
    let v1_by_date: BTreeMap<&str, &Value> = v1["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["date"].as_str().unwrap(), r))
        .collect();
    for row in rows {
        let v1_row = v1_by_date[row["dimensions"][0].as_str().unwrap()];
        assert_eq!(
            row["comparison"]["dimensions"][0],
            v1_row["comparison"]["date"]
        );
        for (i, m) in metrics.iter().enumerate() {
            assert_eq!(
                row["comparison"]["metrics"][i], v1_row["comparison"][m],
                "{m}"
            );
            assert_eq!(row["comparison"]["change"][i], v1_row["change"][m], "{m}");
        }
    }

    // A year earlier: 2025-03-29 had 24 hours and no traffic in the fixture.
    let got = s
        .v2_at(&s.base, &s.berlin_key, body("year_over_year"))
        .await;
    assert_eq!(
        got["meta"]["comparison_date_range"],
        json!(["2025-03-29T00:00:00+01:00", "2025-03-29T23:59:59+01:00"])
    );
    for row in results(&got) {
        let date = row["dimensions"][0].as_str().unwrap();
        let facing = format!("2025-03-29 {}", &date[11..]);
        check_comparison(date, row, json!([facing]), &metrics, &Sums::default());
    }
    println!(
        "v2 DST day by the hour: {} hours compared, {after_the_change} after the change",
        rows.len()
    );
}

/// Month ends: April against the previous period is March (31 days, its aggregate in full);
/// March by the day against February (28 days): March 29 to 31 face nothing.
pub async fn month_ends(s: &Service) {
    let metrics = ["visitors", "pageviews", "bounce_rate", "visit_duration"];
    let got = s
        .v2(json!({
            "site_id": SITE, "metrics": metrics, "date_range": "month", "date": "2026-04-15",
            "include": {"comparisons": {"mode": "previous_period"}}
        }))
        .await;
    let march = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-01", "2026-03-31"),
        &[],
        Key::Total,
        0,
    );
    check_comparison(
        "April vs March",
        &results(&got)[0],
        json!([]),
        &metrics,
        &march[""],
    );
    assert_eq!(
        got["meta"]["comparison_date_range"],
        json!(["2026-03-01T00:00:00+00:00", "2026-03-31T23:59:59+00:00"])
    );
    assert_eq!(
        got["query"]["include"]["comparisons"],
        json!({"mode": "previous_period"})
    );
    // The same question of v1.
    let v1 = s
        .json(
            "/api/v1/stats/aggregate",
            &[
                ("site_id", SITE),
                ("period", "month"),
                ("date", "2026-04-15"),
                ("metrics", &metrics.join(",")),
                ("comparison", "previous_period"),
            ],
        )
        .await;
    for (i, m) in metrics.iter().enumerate() {
        let c = &results(&got)[0]["comparison"];
        assert_eq!(c["metrics"][i], v1["results"][m]["comparison_value"], "{m}");
        assert_eq!(c["change"][i], v1["results"][m]["change"], "{m}");
    }

    let got = s
        .v2(json!({
            "site_id": SITE, "metrics": metrics, "date_range": "month", "date": "2026-03-15",
            "dimensions": ["time:day"], "include": {"comparisons": {"mode": "previous_period"}}
        }))
        .await;
    assert_eq!(
        got["meta"]["comparison_date_range"],
        json!(["2026-02-01T00:00:00+00:00", "2026-02-28T23:59:59+00:00"])
    );
    let (mut faced, mut facing_nothing) = (0, 0);
    for row in results(&got) {
        let date = row["dimensions"][0].as_str().unwrap();
        let day: u32 = date[8..].parse().unwrap();
        if day > 28 {
            facing_nothing += 1;
            assert_eq!(
                row["comparison"],
                Value::Null,
                "{date} faces nothing: {row}"
            );
        } else {
            faced += 1;
            let facing = format!("2026-02-{day:02}");
            check_comparison(date, row, json!([facing]), &metrics, &Sums::default());
        }
    }
    assert!(faced > 0 && facing_nothing == 3, "{faced} {facing_nothing}");
    println!("v2 month ends: {faced} March days faced February's, 3 faced nothing");
}

/// A custom comparison by the day (four days against three), and of breakdown pages: each
/// row gets its key's figures then, zero where the key had none; with `min_group_size` 3 a
/// key under it then is withheld (null), as is `(other)`. The same pages of v1 agree.
pub async fn custom_and_breakdowns(s: &Service) {
    let metrics = ["visitors", "pageviews", "bounce_rate"];
    let got = s
        .v2(json!({
            "site_id": SITE, "metrics": metrics, "date_range": ["2026-03-28", "2026-03-31"],
            "dimensions": ["time:day"],
            "include": {"comparisons": {"mode": "custom", "date_range": ["2026-03-24", "2026-03-26"]}}
        }))
        .await;
    let label = local_label("UTC", "%Y-%m-%d");
    let days = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-26"),
        &[],
        Key::Bucket(&label),
        0,
    );
    let rows = results(&got);
    assert_eq!(rows.len(), 4, "{got}");
    for (i, row) in rows.iter().enumerate().take(3) {
        let then = format!("2026-03-{:02}", 24 + i);
        check_comparison(&then, row, json!([then]), &metrics, &days[&then]);
    }
    assert_eq!(rows[3]["comparison"], Value::Null);

    let with_percentage = ["visitors", "percentage", "pageviews", "bounce_rate"];
    let (mut compared, mut withheld) = (0, 0);
    for property in ["visit:source", "event:page", "visit:city"] {
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
        let total_then = expected(
            &s.fixture,
            SITE,
            day_range("UTC", "2026-03-24", "2026-03-24"),
            &[],
            Key::Total,
            0,
        )[""]
            .visitors
            .len();
        for (base, k) in [(&s.base, 0), (&s.k_base, 3)] {
            let then = before(k);
            let got = s
                .v2_at(
                    base,
                    &s.key,
                    json!({
                        "site_id": SITE, "metrics": with_percentage,
                        "date_range": ["2026-03-30", "2026-03-31"], "dimensions": [property],
                        "pagination": {"limit": 4},
                        "include": {"comparisons": {"mode": "custom", "date_range": ["2026-03-24", "2026-03-24"]}}
                    }),
                )
                .await;
            let v1 = s
                .json_at(
                    base,
                    &s.key,
                    "/api/v1/stats/breakdown",
                    &[
                        ("site_id", SITE),
                        ("property", property),
                        ("period", "custom"),
                        ("date", "2026-03-30,2026-03-31"),
                        ("metrics", "visitors,pageviews,bounce_rate"),
                        ("comparison", "custom"),
                        ("compare_from", "2026-03-24"),
                        ("compare_to", "2026-03-24"),
                        ("limit", "4"),
                    ],
                )
                .await;
            let rows = results(&got);
            let v1_rows = v1["results"].as_array().unwrap();
            assert!(
                !rows.is_empty() && rows.len() == v1_rows.len(),
                "{got} {v1}"
            );
            for (row, v1_row) in rows.iter().zip(v1_rows) {
                let name = row["dimensions"][0].as_str().unwrap();
                let what = format!("{property}={name} k={k}");
                match then.get(name) {
                    _ if name == "(other)" => {
                        assert_eq!(row["comparison"], Value::Null, "{what}")
                    }
                    Some(sums) => {
                        compared += usize::from(!sums.visitors.is_empty());
                        check_comparison(&what, row, json!([name]), &["visitors"], sums);
                        let c = &row["comparison"]["metrics"];
                        let pct = (sums.visitors.len() as f64 / total_then as f64 * 1000.0).round()
                            / 10.0;
                        assert_eq!(c[1], json!(pct), "{what}: percentage then");
                        assert_eq!(c[2], sums.metric("pageviews"), "{what}");
                        assert_eq!(c[3], sums.metric("bounce_rate"), "{what}");
                    }
                    None if k > 0 => {
                        withheld += 1;
                        assert_eq!(row["comparison"], Value::Null, "{what}: withheld")
                    }
                    None => {
                        let zero = Sums::default();
                        check_comparison(&what, row, json!([name]), &["visitors"], &zero);
                        let c = &row["comparison"]["metrics"];
                        assert_eq!(c, &json!([0, 0.0, 0, 0]), "{what}: zero then");
                    }
                }
                // v1's page: the same rows, compared values and changes.
                let c = &row["comparison"];
                for (i, m) in [(0, "visitors"), (2, "pageviews"), (3, "bounce_rate")] {
                    assert_eq!(row["metrics"][i], v1_row[m], "{what} {m}");
                    if c.is_null() {
                        assert_eq!(v1_row["comparison"], Value::Null, "{what}");
                    } else {
                        assert_eq!(c["metrics"][i], v1_row["comparison"][m], "{what} {m}");
                        assert_eq!(c["change"][i], v1_row["change"][m], "{what} {m}");
                    }
                }
            }
        }
    }
    assert!(
        compared >= 5 && withheld >= 1,
        "{compared} compared, {withheld} withheld"
    );
    println!("v2 breakdown comparisons: {compared} rows compared, {withheld} withheld under k=3");
}
