//! Every way a stats request can fail, each with its HTTP status and a message that names the
//! parameter or setting. Bad input is always a 4xx, never a 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is missing, malformed or not allowed in this combination.
    #[error("invalid parameter `{param}`: {message}")]
    BadParam {
        param: &'static str,
        message: String,
    },
    /// No API key or session, an unknown or revoked key, an ended session, a wrong share
    /// token, a wrong e-mail or password.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid key for another site.
    #[error("this API key cannot read site {0:?}")]
    Forbidden(String),
    /// Refused for the principal it is (a user without a role on the site, a cross-site
    /// request, a wrong current password).
    #[error("{0}")]
    Denied(String),
    /// The site is not configured.
    #[error("site {0:?} does not exist")]
    UnknownSite(String),
    /// Something else the request names does not exist (a goal, a link, a guest).
    #[error("{0}")]
    NotFound(String),
    /// Something on the server's side is wrong (not ClickHouse: its errors are
    /// [`Database`](Self::Database)).
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    /// ClickHouse failed. Its text is logged with the request id, never answered: it could
    /// show the schema, the server version or other clients' values.
    #[error("the database could not answer")]
    Database,
    /// A query ran past `query_max_execution_secs`.
    #[error("the query took longer than {0:?}; ask for a shorter period or fewer filters")]
    Timeout(std::time::Duration),
    /// Over `query_rate_limit_per_ip`.
    #[error("too many requests; retry in {} s", .0.as_secs().max(1))]
    TooManyRequests(std::time::Duration),
}

impl ApiError {
    pub fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self::BadParam {
            param,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadParam { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::UnknownSite(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) | Self::Database | Self::Timeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl From<clickhouse::error::Error> for ApiError {
    fn from(error: clickhouse::error::Error) -> Self {
        tracing::warn!(%error, request_id = %crate::request_id::request_id(), "stats query failed");
        // On a cluster a read needs every shard: with one out of reach ClickHouse refuses
        // (never counts without it), and the answer says why in a way an API user can act on.
        if glimpse_core::db::server_error::is_peer_unreachable(&error) {
            return Self::Unavailable(
                "a shard of the ClickHouse cluster cannot be reached, and counts without it \
                 would be incomplete; try again later"
                    .into(),
            );
        }
        Self::Database
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = crate::request_id::request_id();
        let mut body = json!({ "error": self.to_string() });
        if let Self::BadParam { param, .. } = &self {
            body["parameter"] = json!(param);
        }
        if status.is_server_error() {
            // What the operator greps the log for.
            body["request_id"] = json!(request_id);
        }
        let mut response = (status, Json(body)).into_response();
        if let Self::TooManyRequests(wait) = &self {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = secs.max(1).to_string().parse() {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}
