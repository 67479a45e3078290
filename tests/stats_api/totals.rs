//! Totals and time series: aggregates, buckets (the DST day in Berlin), comparison, CSV.

use jiff::tz::TimeZone;
use serde_json::json;

use crate::expected::{day_range, expected, local_label, sorted, Key, ALL_METRICS};
use crate::service::{check_row, Service};
use crate::{BERLIN, SITE, WEEK};

pub async fn aggregates(s: &Service) {
    type Case<'a> = (&'a [(&'a str, &'a str)], (&'a str, &'a str));
    let cases: [Case; 4] = [
        (&WEEK, ("2026-03-24", "2026-03-31")),
        (
            &[("period", "day"), ("date", "2026-03-27")],
            ("2026-03-27", "2026-03-27"),
        ),
        (
            &[("period", "7d"), ("date", "2026-03-31")],
            ("2026-03-25", "2026-03-31"),
        ),
        (
            &[("period", "month"), ("date", "2026-03-10")],
            ("2026-03-01", "2026-03-31"),
        ),
    ];
    for (params, (first, last)) in cases {
        let mut q = vec![("site_id", SITE), ("metrics", ALL_METRICS)];
        q.extend_from_slice(params);
        let got = s.json("/api/v1/stats/aggregate", &q).await;
        let want = expected(
            &s.fixture,
            SITE,
            day_range("UTC", first, last),
            &[],
            Key::Total,
            0,
        );
        let want = want.get("").expect("events in range");
        for m in ALL_METRICS.split(',') {
            assert_eq!(got["results"][m]["value"], want.metric(m), "{params:?} {m}");
        }
        println!("aggregate {params:?}: {}", got["results"]);
    }
}

pub async fn timeseries(s: &Service) {
    let range = day_range("UTC", "2026-03-24", "2026-03-31");
    for (interval, format) in [
        ("date", "%Y-%m-%d"),
        ("week", "monday"),
        ("month", "%Y-%m-01"),
    ] {
        let monday = |ts: u32| {
            let d = jiff::Timestamp::from_second(ts as i64)
                .unwrap()
                .to_zoned(TimeZone::UTC)
                .date();
            let back = d.weekday().to_monday_zero_offset() as i64;
            d.checked_sub(jiff::Span::new().days(back))
                .unwrap()
                .to_string()
        };
        let plain = local_label("UTC", format);
        let label: &dyn Fn(u32) -> String = if format == "monday" { &monday } else { &plain };
        let mut q = vec![
            ("site_id", SITE),
            ("metrics", ALL_METRICS),
            ("interval", interval),
        ];
        q.extend_from_slice(&WEEK);
        let got = s.json("/api/v1/stats/timeseries", &q).await;
        let want = expected(&s.fixture, SITE, range, &[], Key::Bucket(label), 0);
        let results = got["results"].as_array().unwrap();
        let expected_buckets = match interval {
            "date" => 8,
            "week" => 2, // Monday 23rd and Monday 30th
            _ => 1,
        };
        assert_eq!(results.len(), expected_buckets, "{interval}: {got}");
        for row in results {
            let date = row["date"].as_str().unwrap();
            let sums = want
                .get(date)
                .unwrap_or_else(|| panic!("{interval}: bucket {date} not expected"));
            check_row(&format!("{interval} {date}"), row, sums, ALL_METRICS);
        }
        println!("timeseries interval={interval}: {} buckets", results.len());
    }
    // Hours of one UTC day: 24 buckets, empty ones zero.
    let got = s
        .json(
            "/api/v1/stats/timeseries",
            &[
                ("site_id", SITE),
                ("period", "day"),
                ("date", "2026-03-26"),
                ("interval", "hour"),
                ("metrics", "visitors,pageviews"),
            ],
        )
        .await;
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 24);
    let label = local_label("UTC", "%Y-%m-%d %H:00:00");
    let want = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-26", "2026-03-26"),
        &[],
        Key::Bucket(&label),
        0,
    );
    for row in results {
        match want.get(row["date"].as_str().unwrap()) {
            Some(sums) => check_row("hour", row, sums, "visitors,pageviews"),
            None => assert_eq!(
                (row["visitors"].as_u64(), row["pageviews"].as_u64()),
                (Some(0), Some(0))
            ),
        }
    }
}

pub async fn dst_day_hourly_in_berlin(s: &Service) {
    let got = s
        .json_at(
            &s.base,
            &s.berlin_key,
            "/api/v1/stats/timeseries",
            &[
                ("site_id", BERLIN),
                ("period", "day"),
                ("date", "2026-03-29"),
                ("interval", "hour"),
                ("metrics", ALL_METRICS),
            ],
        )
        .await;
    let results = got["results"].as_array().unwrap();
    let labels: Vec<&str> = results
        .iter()
        .map(|r| r["date"].as_str().unwrap())
        .collect();
    // Clocks jump from 02:00 to 03:00: 23 hours, no 02:00 bucket.
    assert_eq!(labels.len(), 23, "{labels:?}");
    assert_eq!(labels[0], "2026-03-29 00:00:00");
    assert_eq!(labels[1], "2026-03-29 01:00:00");
    assert_eq!(labels[2], "2026-03-29 03:00:00");
    assert_eq!(labels[22], "2026-03-29 23:00:00");
    let label = local_label("Europe/Berlin", "%Y-%m-%d %H:00:00");
    let range = day_range("Europe/Berlin", "2026-03-29", "2026-03-29");
    assert_eq!(range.1 - range.0, 23 * 3600);
    let want = expected(&s.fixture, BERLIN, range, &[], Key::Bucket(&label), 0);
    let mut nonzero = 0;
    for row in results {
        let date = row["date"].as_str().unwrap();
        match want.get(date) {
            Some(sums) => {
                nonzero += 1;
                check_row(&format!("Berlin {date}"), row, sums, ALL_METRICS)
            }
            None => assert_eq!(row["visitors"], 0, "{date}"),
        }
    }
    assert_eq!(nonzero, want.len(), "every expected bucket is a label");
    assert!(
        nonzero >= 5,
        "the fixture should put traffic on the DST day: {nonzero}"
    );
    // The day in Berlin is not the UTC day: its daily total differs from the UTC reading.
    let day = s
        .json_at(
            &s.base,
            &s.berlin_key,
            "/api/v1/stats/aggregate",
            &[
                ("site_id", BERLIN),
                ("period", "day"),
                ("date", "2026-03-29"),
                ("metrics", "visitors,pageviews"),
            ],
        )
        .await;
    let want = expected(&s.fixture, BERLIN, range, &[], Key::Total, 0);
    check_row(
        "Berlin day",
        &json!({"visitors": day["results"]["visitors"]["value"], "pageviews": day["results"]["pageviews"]["value"]}),
        &want[""],
        "visitors,pageviews",
    );
    println!(
        "DST day Europe/Berlin 2026-03-29: 23 hourly buckets, {nonzero} with traffic; day {}",
        day["results"]
    );
}

pub async fn comparison(s: &Service) {
    let got = s
        .json(
            "/api/v1/stats/aggregate",
            &[
                ("site_id", SITE),
                ("period", "custom"),
                ("date", "2026-03-28,2026-03-31"),
                ("metrics", ALL_METRICS),
                ("compare", "previous_period"),
            ],
        )
        .await;
    let now = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-28", "2026-03-31"),
        &[],
        Key::Total,
        0,
    );
    let before = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-27"),
        &[],
        Key::Total,
        0,
    );
    for m in ALL_METRICS.split(',') {
        let (a, b) = (now[""].metric(m), before[""].metric(m));
        let r = &got["results"][m];
        assert_eq!(r["value"], a, "{m}");
        assert_eq!(r["comparison_value"], b, "{m}");
        let (af, bf) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        let change = if m == "bounce_rate" {
            (af - bf).round() as i64
        } else if bf == 0.0 {
            if af > 0.0 {
                100
            } else {
                0
            }
        } else {
            ((af - bf) / bf * 100.0).round() as i64
        };
        assert_eq!(r["change"], json!(change), "{m}");
    }
    println!("compare previous_period: {}", got["results"]["visitors"]);
}

pub async fn csv(s: &Service) {
    let mut q = vec![
        ("site_id", SITE),
        ("property", "visit:country"),
        ("metrics", "visitors,bounce_rate"),
        ("format", "csv"),
    ];
    q.extend_from_slice(&WEEK);
    let (status, body) = s
        .get_with(&s.base, Some(&s.key), "/api/v1/stats/breakdown", &q)
        .await;
    assert_eq!(status, 200, "{body}");
    let want = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-31"),
        &[],
        Key::Property("visit:country"),
        0,
    );
    let mut text = String::from("country,visitors,bounce_rate\r\n");
    for (k, sums) in sorted(&want) {
        text += &format!(
            "{k},{},{}\r\n",
            sums.metric("visitors"),
            sums.metric("bounce_rate")
        );
    }
    assert_eq!(body, text);

    let mut q = vec![
        ("site_id", SITE),
        ("metrics", "pageviews,views_per_visit"),
        ("format", "csv"),
    ];
    q.extend_from_slice(&WEEK);
    let (status, body) = s
        .get_with(&s.base, Some(&s.key), "/api/v1/stats/timeseries", &q)
        .await;
    assert_eq!(status, 200, "{body}");
    let label = local_label("UTC", "%Y-%m-%d");
    let want = expected(
        &s.fixture,
        SITE,
        day_range("UTC", "2026-03-24", "2026-03-31"),
        &[],
        Key::Bucket(&label),
        0,
    );
    let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "date,pageviews,views_per_visit");
    assert_eq!(lines.len(), 9);
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        let sums = &want[cells[0]];
        assert_eq!(cells[1], sums.metric("pageviews").to_string());
        assert_eq!(cells[2], sums.metric("views_per_visit").to_string());
    }
    println!("csv: breakdown and timeseries bodies equal the expected text");
}
