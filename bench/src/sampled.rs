//! The sampling figures of `glimpse-bench query`: for each dashboard query (v1) the query
//! service answers from a sample at a size, the sampled answer's time beside the exact one's
//! (`sampling=off`), and how far its counts are from the exact counts — relative, and in the
//! margins the answer states for visitor counts (`plan::Sampling::margin`).

use std::time::{Duration, Instant};

use serde_json::Value;

/// One sampled query at one size.
pub struct SampledQuery {
    pub name: &'static str,
    /// 1 in `every` visitors.
    pub every: u64,
    /// p95 ms, sampled and exact.
    pub sampled_p95: f64,
    pub exact_p95: f64,
    /// The largest |sampled − exact| / exact over the answer's counts (visitors, visits,
    /// page views, events), and the key it was at.
    pub worst_relative: f64,
    /// The largest |sampled − exact| of a visitor count in its stated margins (≤ 1 claimed).
    pub worst_visitor_margins: f64,
    /// Keys of the exact page missing from the sampled one (a paged breakdown's last keys
    /// may swap with the next ones; not compared).
    pub missing_keys: usize,
}

/// Times and compares every query of `queries` (`(name, path)` as in `query::QUERIES`) the
/// service samples; the others are left out.
pub async fn measure(
    origin: &str,
    key: &str,
    queries: &[(&'static str, &str)],
    repeats: usize,
) -> anyhow::Result<Vec<SampledQuery>> {
    let mut out = Vec::new();
    for &(name, path) in queries {
        let url = format!("{origin}/api/v1/stats/{path}&site_id=example.com");
        let exact_url = format!("{url}&sampling=off");
        let (_, sampled) = get(&url, key).await?;
        let Some(rate) = sampled["sampling"]["rate"].as_f64() else {
            continue;
        };
        let (_, exact) = get(&exact_url, key).await?;
        let (worst_relative, worst_visitor_margins, missing_keys) = compare(&sampled, &exact, rate);
        let mut times = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            times.0.push(get(&url, key).await?.0);
            times.1.push(get(&exact_url, key).await?.0);
        }
        out.push(SampledQuery {
            name,
            every: (1.0 / rate).round() as u64,
            sampled_p95: p95(&mut times.0),
            exact_p95: p95(&mut times.1),
            worst_relative,
            worst_visitor_margins,
            missing_keys,
        });
    }
    Ok(out)
}

/// Prints the figures of one size.
pub fn print(size: u64, measured: &[SampledQuery]) {
    if measured.is_empty() {
        println!("{size} events: no dashboard query sampled");
    }
    for q in measured {
        println!(
            "{size} events: {} sampled 1 in {}: p95 {:.0} ms (exact {:.0} ms); counts off by at \
             most {:.1}% of the exact ones, visitor counts by {:.2} of their stated margin; {} \
             keys of the exact page not on the sampled one",
            q.name,
            q.every,
            q.sampled_p95,
            q.exact_p95,
            q.worst_relative * 100.0,
            q.worst_visitor_margins,
            q.missing_keys
        );
    }
}

/// `(worst relative error, worst visitor error in stated margins, keys missed)` of a sampled
/// answer against the exact one, row by row (rows matched by their non-numeric fields; a key
/// of the exact page missing from the sampled page is counted, not compared: the page's last
/// keys may swap with the next).
fn compare(sampled: &Value, exact: &Value, rate: f64) -> (f64, f64, usize) {
    let rows = |answer: &Value| -> Vec<(String, serde_json::Map<String, Value>)> {
        match &answer["results"] {
            // An aggregate: `{"metric": {"value": n}}`.
            Value::Object(metrics) => {
                let row = metrics
                    .iter()
                    .map(|(m, v)| (m.clone(), v["value"].clone()))
                    .collect();
                vec![(String::new(), row)]
            }
            Value::Array(rows) => rows
                .iter()
                .filter_map(Value::as_object)
                .map(|row| {
                    let key: Vec<String> = row
                        .values()
                        .filter(|v| v.is_string())
                        .map(Value::to_string)
                        .collect();
                    (key.join("|"), row.clone())
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let sampled_rows = rows(sampled);
    let (mut relative, mut margins, mut missing) = (0f64, 0f64, 0);
    for (key, exact_row) in rows(exact) {
        let Some((_, sampled_row)) = sampled_rows.iter().find(|(k, _)| *k == key) else {
            missing += 1;
            continue;
        };
        for metric in ["visitors", "visits", "pageviews", "events"] {
            let (Some(e), Some(s)) = (
                exact_row.get(metric).and_then(Value::as_f64),
                sampled_row.get(metric).and_then(Value::as_f64),
            ) else {
                continue;
            };
            if e > 0.0 {
                relative = relative.max((s - e).abs() / e);
            }
            if metric == "visitors" {
                let margin = 3.29 * (s.max(1.0) * (1.0 - rate) / rate).sqrt();
                margins = margins.max((s - e).abs() / margin);
            }
        }
    }
    (relative, margins, missing)
}

fn p95(samples: &mut [Duration]) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 * 0.95).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
    samples
        .get(i)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// One GET of the stats API: its time and its JSON answer.
async fn get(url: &str, key: &str) -> anyhow::Result<(Duration, Value)> {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = hyper::Request::builder()
        .uri(url)
        .header("authorization", format!("Bearer {key}"))
        .method("GET")
        .body(Full::default())?;
    let started = Instant::now();
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    let elapsed = started.elapsed();
    anyhow::ensure!(status == 200, "{url} answered {status}");
    Ok((elapsed, serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_are_compared_by_key_and_missed_keys_are_counted() {
        let exact = json!({"results": [
            {"source": "Google", "visitors": 1000, "pageviews": 2000},
            {"source": "Rare", "visitors": 4},
        ]});
        let sampled =
            json!({"results": [{"source": "Google", "visitors": 1100, "pageviews": 2000}]});
        let (relative, margins, missing) = compare(&sampled, &exact, 0.1);
        assert_eq!(missing, 1, "Rare");
        assert!(
            (relative - 0.1).abs() < 1e-9,
            "Google's visitors: {relative}"
        );
        // Google: 100 off, margin 3.29·√(1100·9) ≈ 327, 0.31 of it.
        assert!(margins > 0.30 && margins < 0.31, "{margins}");
        let aggregate = json!({"results": {"visitors": {"value": 500}}});
        assert_eq!(compare(&aggregate, &aggregate, 0.5), (0.0, 0.0, 0));
    }
}
