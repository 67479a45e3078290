//! `POST /api/v2/funnel`: how many visitors went through a funnel's steps in order within a
//! visit (`sql::funnel` says exactly how steps count). The body reads like a v2 query's —
//! `site_id`, `date_range`, `date`, `filters`, parsed by v2's own readers — with `steps`
//! (ad hoc) or `funnel` (the name of one of the site's saved funnels); who may ask is decided
//! as for v2 (keys, sessions, share links).
//!
//! ```json
//! {"site_id": "example.com", "date_range": "30d",
//!  "steps": [{"page": "/pricing"}, {"event": "Signup"}]}
//! → {"steps": [{"label": "Visit /pricing", "visitors": 40, "conversion_rate": 100.0,
//!               "conversion_rate_step": 100.0, "dropoff": 0, "dropoff_percentage": 0.0}, …],
//!    "meta": {…}, "query": {…}}
//! ```

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimpse_core::funnels::{parse_steps, steps_json, Step};
use jiff::Timestamp;
use serde_json::{json, Value};

use crate::api;
use crate::auth::Site;
use crate::error::ApiError;
use crate::params::{self, Condition};
use crate::period::Range;
use crate::plan;
use crate::sql::{self, FunnelQuery, FunnelRow};
use crate::v2::{self, date_range::resolve, parse_date_range};
use crate::AppState;

const FIELDS: [&str; 6] = [
    "site_id",
    "date_range",
    "date",
    "filters",
    "steps",
    "funnel",
];

/// A funnel question, read and checked against its site.
#[derive(Debug, Clone)]
pub struct FunnelRequest {
    pub range: Range,
    pub filters: Vec<Condition>,
    pub steps: Vec<Step>,
    /// The saved funnel's name, when one was asked for.
    pub name: Option<String>,
}

fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad(field, message)
}

/// `POST /api/v2/funnel`.
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (site, body) = v2::authorized_body(&state, request).await?;
    let saved = match body.get("funnel") {
        Some(Value::String(name)) if body.get("steps").is_none() => {
            let funnels = crate::sites_api::registry(&state)
                .funnels(&site.domain)
                .await
                .map_err(crate::sites_api::sites::registry_error)?;
            let funnel = funnels
                .into_iter()
                .find(|f| &f.name == name)
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "no funnel {:?} on site {}",
                        params::truncate(name),
                        site.domain
                    ))
                })?;
            Some(funnel)
        }
        _ => None,
    };
    let request = parse(
        &body,
        &site,
        saved.map(|f| (f.name, f.steps)),
        Timestamp::now(),
    )?;
    let sql = statement(&state.database, &site, &request);
    let rows = api::fetch_funnel(&state, &sql).await?;
    Ok(Json(answer(&body, &request, &rows)).into_response())
}

/// Reads a funnel body for `site`; `saved` is the saved funnel it names, if it names one.
pub fn parse(
    body: &Value,
    site: &Site,
    saved: Option<(String, Vec<Step>)>,
    now: Timestamp,
) -> Result<FunnelRequest, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| bad("body", "#: expected a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            "body",
            format!("#: unknown field {:?}", params::truncate(unknown)),
        ));
    }
    params::parse_site_id(object.get("site_id").and_then(Value::as_str))?;
    let date_range = parse_date_range(object.get("date_range"))?;
    let date = match object.get("date") {
        None => None,
        Some(value) => Some(
            value
                .as_str()
                .and_then(|t| params::parse_date(t).ok())
                .ok_or_else(|| bad("date", "#/date: expected a date YYYY-MM-DD"))?,
        ),
    };
    let filters = v2::filters::parse(object.get("filters"))?;
    plan::check_goals(site, &filters)?;
    let (name, steps) = match (object.get("steps"), object.get("funnel"), saved) {
        (Some(_), Some(_), _) => {
            return Err(bad("steps", "#: give steps or funnel, not both"));
        }
        (None, Some(_), Some((name, steps))) => (Some(name), steps),
        (None, Some(other), None) => {
            return Err(bad(
                "funnel",
                format!(
                    "#/funnel: expected the name of a saved funnel, got {}",
                    params::truncate(&other.to_string())
                ),
            ))
        }
        (steps, None, _) => {
            let steps = parse_steps(steps).map_err(|e| bad("steps", e.to_string()))?;
            (None, steps)
        }
    };
    check_goal_steps(site, &steps)?;
    let tz = plan::site_timezone(site)?;
    let (_, range) = resolve(&date_range, date, &tz, site.retention_days, now)?;
    Ok(FunnelRequest {
        range,
        filters,
        steps,
        name,
    })
}

/// A goal step must name one of the site's goals: a typo would read as nobody converting.
pub(crate) fn check_goal_steps(site: &Site, steps: &[Step]) -> Result<(), ApiError> {
    for (i, step) in steps.iter().enumerate() {
        if let Step::Goal(name) = step {
            if !site.goals.iter().any(|g| &g.name == name) {
                let known: Vec<&str> = site.goals.iter().map(|g| g.name.as_str()).collect();
                return Err(bad(
                    "steps",
                    format!(
                        "#/steps/{i}/goal: {name:?} is not one of the site's goals ({})",
                        if known.is_empty() {
                            "none configured".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The statement that answers `request` on `site`.
pub fn statement(database: &str, site: &Site, request: &FunnelRequest) -> sql::Sql {
    sql::funnel(&FunnelQuery {
        database,
        site: &site.domain,
        timezone: &site.timezone,
        start: request.range.start,
        end: request.range.end,
        filters: &request.filters,
        goals: &site.goals,
        steps: &request.steps,
    })
}

/// Percent `part / whole`, two decimals; 0 of nothing is 0.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

/// Visitors who reached each step (1-based rows of the furthest step reached, added up from
/// the last step down).
pub fn visitors_by_step(steps: usize, rows: &[FunnelRow]) -> Vec<u64> {
    (1..=steps)
        .map(|i| {
            rows.iter()
                .filter(|r| usize::from(r.step) >= i)
                .map(|r| r.visitors)
                .sum()
        })
        .collect()
}

/// The answer: per step its visitors, conversion from the first step and from the previous
/// one, and how many of the previous step's visitors dropped off (Plausible's fields).
fn answer(body: &Value, request: &FunnelRequest, rows: &[FunnelRow]) -> Value {
    let visitors = visitors_by_step(request.steps.len(), rows);
    let first = visitors.first().copied().unwrap_or(0);
    let steps: Vec<Value> = request
        .steps
        .iter()
        .zip(&visitors)
        .enumerate()
        .map(|(i, (step, &n))| {
            let previous = if i == 0 { n } else { visitors[i - 1] };
            json!({
                "label": step.label(),
                "step": step.to_json(),
                "visitors": n,
                "conversion_rate": percent(n, first),
                "conversion_rate_step": percent(n, previous),
                "dropoff": previous - n,
                "dropoff_percentage": percent(previous - n, previous),
            })
        })
        .collect();
    let last = visitors.last().copied().unwrap_or(0);
    json!({
        "steps": steps,
        "meta": {
            "funnel": request.name,
            "date_range": [request.range.first.to_string(), request.range.last.to_string()],
            "entered": first,
            "converted": last,
            "conversion_rate": percent(last, first),
        },
        "query": {
            "site_id": body.get("site_id"),
            "date_range": body.get("date_range"),
            "filters": body.get("filters").cloned().unwrap_or(json!([])),
            "steps": steps_json(&request.steps),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_core::site::SiteConfig;

    fn site() -> Site {
        Site::parse(SiteConfig {
            goals: vec!["Signup".to_string()],
            ..SiteConfig::new("example.com")
        })
        .unwrap()
    }

    fn read(body: Value) -> Result<FunnelRequest, ApiError> {
        parse(
            &body,
            &site(),
            None,
            "2026-03-29T12:00:00Z".parse().unwrap(),
        )
    }

    #[test]
    fn bodies_read_like_v2_queries() {
        let r = read(json!({
            "site_id": "example.com", "date_range": ["2026-03-01", "2026-03-07"],
            "filters": [["is", "visit:country", ["FR"]]],
            "steps": [{"page": "/pricing"}, {"goal": "Signup"}]
        }))
        .unwrap();
        assert_eq!(r.steps.len(), 2);
        assert_eq!(r.filters.len(), 1);
        assert_eq!(r.range.first.to_string(), "2026-03-01");
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let error = |body: Value| read(body).unwrap_err().to_string();
        let base = |extra: (&str, Value)| {
            let mut body = json!({"site_id": "example.com", "date_range": "7d",
                "steps": [{"page": "/a"}, {"event": "b"}]});
            body[extra.0] = extra.1;
            body
        };
        assert!(error(base(("date_range", json!("week")))).contains("#/date_range"));
        assert!(error(base(("steps", json!([{"page": "/a"}])))).contains("#/steps"));
        assert!(
            error(base(("steps", json!([{"page": "/a"}, {"goal": "Nope"}]))))
                .contains("#/steps/1/goal: \"Nope\" is not one of the site's goals (Signup)")
        );
        assert!(error(base(("filters", json!([["is", "visit:nope", ["x"]]])))).contains("filters"));
        assert!(error(base(("limit", json!(3)))).contains("unknown field"));
        assert!(error(base(("funnel", json!("x")))).contains("not both"));
    }

    #[test]
    fn steps_add_up_from_the_furthest_reached() {
        let rows = [
            FunnelRow {
                step: 1,
                visitors: 5,
            },
            FunnelRow {
                step: 3,
                visitors: 2,
            },
        ];
        assert_eq!(visitors_by_step(4, &rows), [7, 2, 2, 0]);
        assert_eq!(percent(2, 7), 28.57);
        assert_eq!(percent(1, 0), 0.0);
    }
}
