//! Guests: a site's members and pending invitations, in Plausible's shape.
//! `GET /api/v1/sites/guests?site_id=` lists them, `PUT /api/v1/sites/guests`
//! `{site_id, email, role}` finds or creates one (a new role at once for a member of the
//! site, an invitation for anyone else, account or not), `DELETE /api/v1/sites/guests/:email` with `site_id` removes one.
//!
//! Plausible's roles are `viewer` and `editor`; Glimpse's `admin` is Plausible's `editor`
//! (both words are accepted, answers say `editor`). Guests of a site managed in the
//! configuration file are allowed: members are accounts, not configuration. The owner has
//! every site and is never a guest (an invitation to the owner's e-mail changes nothing when
//! accepted, and is not refused: that would tell who the owner is).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::page;
use super::SiteRequest;
use crate::accounts::cross_site::own_origin;
use crate::accounts::{invitations, normalize_email, store, Role};
use crate::error::ApiError;
use crate::mail::{self, InvitationMail};
use crate::{audit, AppState};

/// A role in Plausible's words or Glimpse's.
fn parse_role(text: &str) -> Result<Role, ApiError> {
    match text {
        "viewer" => Ok(Role::Viewer),
        "editor" | "admin" => Ok(Role::Admin),
        _ => Err(ApiError::bad("role", "role must be viewer or editor")),
    }
}

fn guest_json(email: &str, role: Role, accepted: bool) -> Value {
    json!({ "email": email, "role": role.plausible_name(), "accepted": accepted })
}

/// The e-mail of a request, normalised; 400 when it is not one.
fn email_param(text: &str) -> Result<String, ApiError> {
    normalize_email(text).map_err(|_| ApiError::bad("email", "email is not an e-mail address"))
}

/// `GET /api/v1/sites/guests?site_id=`: members (accepted) and pending invitations, by e-mail.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest { params, site, .. } = SiteRequest::admin(&state, request).await?;
    let tracked = state.db.track();
    let members = tracked
        .run(store::site_members(
            &tracked.client,
            &state.database,
            &site.domain,
        ))
        .await?;
    let tracked = state.db.track();
    let pending = tracked
        .run(invitations::pending(
            &tracked.client,
            &state.database,
            &site.domain,
        ))
        .await?;
    let mut guests: Vec<(String, Role, bool)> = members
        .into_iter()
        .map(|(email, role)| (email, role, true))
        .collect();
    for invitation in pending {
        let member = guests
            .iter()
            .any(|(email, _, _)| *email == invitation.email);
        if let (false, Some(role)) = (member, invitation.role()) {
            guests.push((invitation.email, role, false));
        }
    }
    guests.sort_by(|a, b| a.0.cmp(&b.0));
    let (guests, meta) = page(guests, |g| g.0.clone(), &params)?;
    let guests: Vec<Value> = guests
        .iter()
        .map(|(email, role, accepted)| guest_json(email, *role, *accepted))
        .collect();
    Ok(Json(json!({ "guests": guests, "meta": meta })).into_response())
}

/// `PUT /api/v1/sites/guests` `{site_id, email, role}`.
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest {
        headers,
        params,
        principal,
        site,
    } = SiteRequest::admin(&state, request).await?;
    let email = email_param(params.required("email")?)?;
    let role = parse_role(params.required("role")?)?;
    let client = state.db.background();
    let db = &state.database;
    let tracked = state.db.track();
    let members = tracked
        .run(store::site_members(&tracked.client, db, &site.domain))
        .await?;
    let detail = format!("{email} {}", role.plausible_name());
    // A member of this site (whom the admin sees in the list anyway) gets the new role at
    // once. Anyone else gets an invitation, whether or not they have an account here: the
    // answer must not tell a site's admin which e-mails have accounts on the instance (one
    // with an account accepts with their password).
    if members.iter().any(|(member, _)| *member == email) {
        store::write_member(client, db, &site.domain, &email, role.as_str(), false).await?;
        invitations::withdraw(client, db, &site.domain, &email).await?;
        audit::record_by(&state, &principal, "guest.update", &site.domain, &detail).await;
        return Ok(Json(guest_json(&email, role, true)).into_response());
    }
    let token = invitations::invite(client, db, &site.domain, &email, role).await?;
    audit::record_by(&state, &principal, "guest.invite", &site.domain, &detail).await;
    let origin = own_origin(&state, peer.ip(), &headers);
    let url = format!("{}/?invitation={token}", origin.as_deref().unwrap_or(""));
    let host = origin
        .as_deref()
        .and_then(|o| url::Url::parse(o).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    // A person by their e-mail; a key by what it stands for (its actor name means nothing to
    // the invitee).
    let inviter = principal
        .email()
        .map(str::to_string)
        .unwrap_or_else(|| format!("An administrator of {}", site.current_domain()));
    let mailed = mail::send_invitation(
        &state.config.query,
        host.as_deref(),
        &InvitationMail {
            to: &email,
            site: site.current_domain(),
            role: role.plausible_name(),
            inviter: &inviter,
            url: &url,
        },
    )
    .await;
    let mut answer = guest_json(&email, role, false);
    answer["invitation_url"] = json!(url);
    answer["mail"] = json!(mailed.as_str());
    Ok(Json(answer).into_response())
}

/// `DELETE /api/v1/sites/guests/:email` with `site_id`: the membership and any pending
/// invitation. The user keeps their account (and their other sites); their access to this
/// one ends with their next request, as roles are read on every request.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(email): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let SiteRequest {
        principal, site, ..
    } = SiteRequest::admin(&state, request).await?;
    let email = email_param(&email)?;
    let client = state.db.background();
    let db = &state.database;
    let tracked = state.db.track();
    let members = tracked
        .run(store::site_members(&tracked.client, db, &site.domain))
        .await?;
    let member = members.iter().find(|(e, _)| *e == email);
    if let Some((_, role)) = member {
        store::write_member(client, db, &site.domain, &email, role.as_str(), true).await?;
    }
    let invited = invitations::withdraw(client, db, &site.domain, &email).await?;
    if member.is_none() && !invited {
        return Err(ApiError::NotFound(format!(
            "{email} is no guest of site {}",
            site.domain
        )));
    }
    audit::record_by(&state, &principal, "guest.remove", &site.domain, &email).await;
    Ok(super::deleted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_take_plausibles_words_and_glimpses_and_answer_in_plausibles() {
        assert_eq!(parse_role("viewer").unwrap(), Role::Viewer);
        assert_eq!(parse_role("editor").unwrap(), Role::Admin);
        assert_eq!(parse_role("admin").unwrap(), Role::Admin);
        for bad in ["owner", "Viewer", ""] {
            assert!(parse_role(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Role::Admin.plausible_name(), "editor");
        assert_eq!(
            guest_json("g@example.com", Role::Viewer, false),
            json!({"email": "g@example.com", "role": "viewer", "accepted": false})
        );
    }
}
