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
    /// No API key, an unknown or revoked key, or a wrong share token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid key for another site.
    #[error("this API key cannot read site {0:?}")]
    Forbidden(String),
    /// The site is not configured.
    #[error("site {0:?} does not exist")]
    UnknownSite(String),
    /// ClickHouse failed or timed out.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
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
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnknownSite(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<clickhouse::error::Error> for ApiError {
    fn from(error: clickhouse::error::Error) -> Self {
        tracing::warn!(%error, "stats query failed");
        Self::Unavailable(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({ "error": self.to_string() });
        if let Self::BadParam { param, .. } = &self {
            body["parameter"] = json!(param);
        }
        (status, Json(body)).into_response()
    }
}
