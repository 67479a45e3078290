//! `GET`/`PUT /api/v1/sites/funnels`, `DELETE /api/v1/sites/funnels/:name`: a site's saved
//! funnels, managed like its goals (readers list them, admins change them; a configured site's
//! are read-only), each change audited. A funnel is known by its name: `PUT` creates it or
//! replaces its steps. The body of a `PUT` is JSON, since steps are a list:
//! `{"site_id": "example.com", "name": "Signup", "steps": [{"page": "/pricing"}, …]}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimpse_core::funnels::{parse_name, parse_steps, Funnel, Step};
use serde_json::{json, Value};

use super::sites::registry_error;
use super::SiteRequest;
use super::{administered_site, changed, page, principal, registry, Params};
use crate::audit;
use crate::auth::Site;
use crate::error::ApiError;
use crate::AppState;

/// Largest `PUT` body: a name and at most eight short steps.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// `GET /api/v1/sites/funnels?site_id=`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest { params, site, .. } = SiteRequest::read(&state, request).await?;
    let funnels = registry(&state)
        .funnels(&site.domain)
        .await
        .map_err(registry_error)?;
    let items: Vec<Value> = funnels.iter().map(funnel_json).collect();
    let (items, meta) = page(
        items,
        |f| f["name"].as_str().unwrap_or_default().to_string(),
        &params,
    )?;
    Ok(Json(json!({ "funnels": items, "meta": meta })).into_response())
}

fn funnel_json(funnel: &Funnel) -> Value {
    let mut value = funnel.to_json();
    value["labels"] = funnel.steps.iter().map(Step::label).collect();
    value
}

/// `PUT /api/v1/sites/funnels` `{site_id, name, steps}`: creates the funnel or replaces the
/// steps of the one with that name.
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let mut fields: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::bad("body", "the body is too large or unreadable"))?;
    let body: Value = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad(
            "body",
            "expected a JSON object {\"site_id\", \"name\", \"steps\": [...]}",
        )
    })?;
    if let Some(site_id) = body.get("site_id").and_then(Value::as_str) {
        fields.insert("site_id".to_string(), site_id.to_string());
    }
    let params = Params(fields);
    let principal = principal(&state, &headers, &params).await?;
    let site = administered_site(&state, &principal, params.required("site_id")?).await?;
    let funnel = requested_funnel(&body, &site)?;
    super::writable(&state, &site)?;
    registry(&state)
        .put_funnel(&site.domain, &funnel)
        .await
        .map_err(registry_error)?;
    changed(&state);
    audit::record_by(
        &state,
        &principal,
        "funnel.save",
        &site.domain,
        &funnel.name,
    )
    .await;
    Ok(Json(funnel_json(&funnel)).into_response())
}

/// The funnel a `PUT` describes; goal steps must name the site's goals.
fn requested_funnel(body: &Value, site: &Site) -> Result<Funnel, ApiError> {
    let name = parse_name(body.get("name")).map_err(|e| ApiError::bad("name", e.to_string()))?;
    let steps =
        parse_steps(body.get("steps")).map_err(|e| ApiError::bad("steps", e.to_string()))?;
    crate::funnel::check_goal_steps(site, &steps)?;
    Ok(Funnel { name, steps })
}

/// `DELETE /api/v1/sites/funnels/:name` with `site_id`.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = SiteRequest::admin(&state, request).await?;
    let site = &request.site;
    let registry = registry(&state);
    let funnels = registry
        .funnels(&site.domain)
        .await
        .map_err(registry_error)?;
    if !funnels.iter().any(|f| f.name == name) {
        return Err(ApiError::NotFound(format!(
            "no funnel {:?} on site {}",
            crate::params::truncate(&name),
            site.domain
        )));
    }
    let removal = registry.delete_funnel(&site.domain, &name);
    request
        .remove_entry(&state, "funnel.delete", &name, removal)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_core::site::SiteConfig;

    #[test]
    fn goal_steps_must_be_the_sites_goals() {
        let site = Site::parse(SiteConfig {
            goals: vec!["Signup".to_string()],
            ..SiteConfig::new("example.com")
        })
        .unwrap();
        let body =
            |goal: &str| json!({"name": "Buy", "steps": [{"page": "/pricing"}, {"goal": goal}]});
        assert_eq!(
            requested_funnel(&body("Signup"), &site)
                .unwrap()
                .steps
                .len(),
            2
        );
        let error = requested_funnel(&body("Nope"), &site)
            .unwrap_err()
            .to_string();
        assert!(error.contains("#/steps/1/goal"), "{error}");
        let error = requested_funnel(&json!({"steps": []}), &site)
            .unwrap_err()
            .to_string();
        assert!(error.contains("name"), "{error}");
    }
}
