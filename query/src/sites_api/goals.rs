//! `GET`/`PUT /api/v1/sites/goals`, `DELETE /api/v1/sites/goals/:goal_id`.
//!
//! A Glimpse goal is named after what it counts (`Signup`, `Visit /pricing`), as Plausible
//! names goals by default; its id is derived from the site and that name, so it is the same on
//! every instance and after a restart without being stored.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimpse_core::goals::{Goal, GoalKind};
use serde_json::{json, Value};

use super::sites::registry_error;
use super::SiteRequest;
use super::{changed, page, registry, Params};
use crate::audit;
use crate::error::ApiError;
use crate::AppState;

/// A goal's id: 48 bits of a hash of its site and name, as decimal text (Plausible's ids are
/// numbers sent as text; 48 bits stay exact in JavaScript).
pub(crate) fn goal_id(site: &str, goal: &Goal) -> String {
    let hash = blake3::hash(format!("{site}\n{}", goal.name).as_bytes());
    let mut bytes = [0u8; 8];
    bytes[2..].copy_from_slice(&hash.as_bytes()[..6]);
    u64::from_be_bytes(bytes).to_string()
}

fn goal_json(site: &str, goal: &Goal) -> Value {
    let (goal_type, event_name, page_path) = match &goal.kind {
        GoalKind::Event(name) => ("event", Some(name.as_str()), None),
        GoalKind::Page(path) => ("page", None, Some(path.as_str())),
    };
    json!({
        "domain": site,
        "id": goal_id(site, goal),
        "display_name": goal.name,
        "goal_type": goal_type,
        "event_name": event_name,
        "page_path": page_path,
    })
}

/// `GET /api/v1/sites/goals?site_id=`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest { params, site, .. } = SiteRequest::read(&state, request).await?;
    let mut goals: Vec<Value> = site
        .goals
        .iter()
        .map(|g| goal_json(&site.domain, g))
        .collect();
    goals.sort_by_key(|g| g["id"].as_str().unwrap_or_default().to_string());
    let (goals, meta) = page(
        goals,
        |g| g["id"].as_str().unwrap_or_default().to_string(),
        &params,
    )?;
    Ok(Json(json!({ "goals": goals, "meta": meta })).into_response())
}

/// The goal a `PUT` describes: `goal_type` `event` with `event_name`, or `page` with
/// `page_path` (`*` matches any characters).
fn requested_goal(params: &Params) -> Result<Goal, ApiError> {
    let text = match params.required("goal_type")? {
        "event" => {
            let name = params.required("event_name")?;
            if name.starts_with("Visit ") {
                return Err(ApiError::bad(
                    "event_name",
                    "an event goal's name cannot start with \"Visit \" (that names page goals)",
                ));
            }
            name.to_string()
        }
        "page" => {
            let path = params.required("page_path")?;
            if !path.starts_with('/') {
                return Err(ApiError::bad("page_path", "page_path must start with /"));
            }
            format!("Visit {path}")
        }
        _ => {
            return Err(ApiError::bad(
                "goal_type",
                "goal_type must be one of: event, page",
            ))
        }
    };
    let goal = Goal::parse(&text).map_err(|e| ApiError::bad("goal", e.to_string()))?;
    if let Some(display) = params.get("display_name") {
        if display != goal.name {
            return Err(ApiError::bad(
                "display_name",
                format!(
                    "Glimpse names a goal after what it counts: display_name must be {:?} or left out",
                    goal.name
                ),
            ));
        }
    }
    Ok(goal)
}

/// `PUT /api/v1/sites/goals`: finds or creates the goal.
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest {
        params,
        principal,
        site,
        ..
    } = SiteRequest::admin(&state, request).await?;
    let goal = requested_goal(&params)?;
    if !site.goals.contains(&goal) {
        super::writable(&state, &site)?;
        registry(&state)
            .put_goal(&site.domain, &goal)
            .await
            .map_err(registry_error)?;
        changed(&state);
        audit::record_by(&state, &principal, "goal.create", &site.domain, &goal.name).await;
    }
    Ok(Json(goal_json(&site.domain, &goal)).into_response())
}

/// `DELETE /api/v1/sites/goals/:goal_id` with `site_id`.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(wanted): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = SiteRequest::admin(&state, request).await?;
    let site = &request.site;
    let goal = site
        .goals
        .iter()
        .find(|g| goal_id(&site.domain, g) == wanted)
        .ok_or_else(|| ApiError::NotFound(format!("no goal {wanted} on site {}", site.domain)))?;
    let registry = registry(&state);
    let removal = registry.delete_goal(&site.domain, &goal.name);
    request
        .remove_entry(&state, "goal.delete", &goal.name, removal)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_ids_are_stable_distinct_and_safe_in_javascript() {
        let signup = Goal::parse("Signup").unwrap();
        let pricing = Goal::parse("Visit /pricing").unwrap();
        let a = goal_id("a.com", &signup);
        assert_eq!(a, goal_id("a.com", &signup), "the same everywhere");
        assert_ne!(a, goal_id("b.com", &signup), "per site");
        assert_ne!(a, goal_id("a.com", &pricing));
        for id in [a, goal_id("a.com", &pricing)] {
            let n: u64 = id.parse().unwrap();
            assert!(n < 1 << 48, "{n}");
        }
    }

    #[test]
    fn goals_as_plausible_describes_them() {
        let page = goal_json("a.com", &Goal::parse("Visit /blog/*").unwrap());
        assert_eq!(page["goal_type"], "page");
        assert_eq!(page["page_path"], "/blog/*");
        assert_eq!(page["event_name"], Value::Null);
        assert_eq!(page["display_name"], "Visit /blog/*");
        let event = goal_json("a.com", &Goal::parse("Signup").unwrap());
        assert_eq!(event["goal_type"], "event");
        assert_eq!(event["event_name"], "Signup");
        assert_eq!(event["page_path"], Value::Null);
    }
}
