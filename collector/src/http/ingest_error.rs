//! Why a collector endpoint did not take a request: one type ([`IngestError`]) that knows its
//! HTTP status, the short reason sent in the body, the metric it is counted under and when the
//! client may retry, converted into a response in one place ([`IngestError::into_response`]).
//! The handlers return `Result<_, IngestError>` and never build an error response themselves
//! (the pattern of PostHog's capture service). Beacon endpoints' refusals are counted; those
//! of the visitor's own pages (opt-out, privacy, scripts) are not events and are not.

use std::borrow::Cow;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::protocol::Protocol;
use super::response::{self, Body};
use crate::ingest::protocols::MapError;
use crate::ingest::{BeaconError, DropReason};
use crate::sink;

/// A request, or one event of it, the collector did not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// A `Content-Type` other than the ones the protocol's tracker sends (`expected`).
    #[error("content type must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    /// The client is over its beacon rate; it may try again after `wait`.
    #[error("too many events from this client; slow down")]
    RateLimited { wait: Duration },
    /// One request holds more events than the burst ever allows at once: refused for good
    /// rather than answered `429` forever.
    #[error(
        "this request records {events} events, more than one client may send at once \
         (rate_limit_burst = {burst})"
    )]
    TooManyEvents { events: u64, burst: u32 },
    #[error("body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("could not read the body")]
    BodyUnreadable,
    #[error("the body did not arrive in time")]
    BodyTimeout,
    /// A field is missing, malformed or over a limit.
    #[error("{}", .0.reason)]
    Invalid(BeaconError),
    /// The tracker's site id is not mapped to a configured site (`umami_websites`,
    /// `matomo_sites`).
    #[error("{}", .0.unknown_site_reason())]
    UnknownSite(Protocol),
    /// The pipeline refused the event for a reason the client may learn (no configured site
    /// matches); the pipeline has counted it, with its site.
    #[error("{}", .1.refused_reason(*.0))]
    Refused(DropReason, Protocol),
    #[error("the collector cannot compute visitor ids")]
    SaltsUnavailable,
    /// The queue or spool did not take the rows (full, shutting down, disk trouble).
    #[error("{0}")]
    Unavailable(sink::IngestError),

    // The visitor's pages and the operator's probes: not events, so not counted.
    /// A method a page or probe does not answer.
    #[error("method not allowed; use {allow}")]
    PageMethodNotAllowed { allow: &'static str },
    /// A state-changing request another website made a browser send (see `cross_site`).
    #[error("{0}")]
    CrossSite(&'static str),
    #[error("no such endpoint")]
    NoSuchEndpoint,
    /// `/privacy?site=` names no configured site.
    #[error("no such site")]
    NoSuchSite,
    /// Over a visitor page's own rate limit (`reason` says which).
    #[error("{reason}")]
    PageRateLimited {
        reason: &'static str,
        wait: Duration,
    },
    /// The visitor data pages cannot answer now (`reason` says why).
    #[error("{reason}")]
    PageUnavailable {
        reason: &'static str,
        retry_after_secs: u32,
    },
}

/// The counter an [`IngestError`] increments, with its `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `glimpse_events_rejected_total`: refused before the pipeline.
    Rejected(&'static str),
    /// `glimpse_events_dropped_total`: an event for no configured site.
    Dropped(&'static str),
}

impl IngestError {
    /// A protocol's mapping error for one event.
    pub fn from_map(error: MapError, protocol: Protocol) -> Self {
        match error {
            MapError::UnknownSite(_) => IngestError::UnknownSite(protocol),
            MapError::Invalid(e) => IngestError::Invalid(e),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::MethodNotAllowed { .. } | IngestError::PageMethodNotAllowed { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            IngestError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::RateLimited { .. } | IngestError::PageRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            IngestError::TooManyEvents { .. } | IngestError::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::BodyUnreadable | IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
            IngestError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            IngestError::UnknownSite(_) | IngestError::Refused(..) | IngestError::CrossSite(_) => {
                StatusCode::FORBIDDEN
            }
            IngestError::NoSuchEndpoint | IngestError::NoSuchSite => StatusCode::NOT_FOUND,
            IngestError::SaltsUnavailable
            | IngestError::Unavailable(_)
            | IngestError::PageUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body's `field`: which part of the request is at fault, when one is.
    pub fn field(&self) -> Option<Cow<'_, str>> {
        match self {
            IngestError::Invalid(e) => Some(Cow::Borrowed(&e.field)),
            IngestError::UnknownSite(p) | IngestError::Refused(_, p) => {
                Some(Cow::Borrowed(p.site_field()))
            }
            IngestError::NoSuchSite => Some(Cow::Borrowed("site")),
            _ => None,
        }
    }

    /// What the error is counted as; `None` when it was counted where it was decided.
    pub fn metric(&self) -> Option<Metric> {
        let rejected = |label| Some(Metric::Rejected(label));
        match self {
            IngestError::MethodNotAllowed { .. } => rejected("method_not_allowed"),
            IngestError::UnsupportedMediaType { .. } => rejected("unsupported_media_type"),
            IngestError::RateLimited { .. } | IngestError::TooManyEvents { .. } => {
                rejected("rate_limited")
            }
            IngestError::BodyTooLarge { .. } => rejected("body_too_large"),
            IngestError::BodyUnreadable => rejected("body_unreadable"),
            IngestError::BodyTimeout => rejected("body_timeout"),
            IngestError::Invalid(_) => rejected("invalid"),
            IngestError::UnknownSite(_) => Some(Metric::Dropped(DropReason::UnknownSite.label())),
            IngestError::Refused(..) => None,
            IngestError::SaltsUnavailable => rejected("salts_unavailable"),
            IngestError::Unavailable(e) => rejected(e.label()),
            IngestError::PageMethodNotAllowed { .. }
            | IngestError::CrossSite(_)
            | IngestError::NoSuchEndpoint
            | IngestError::NoSuchSite
            | IngestError::PageRateLimited { .. }
            | IngestError::PageUnavailable { .. } => None,
        }
    }

    /// Seconds the client should wait before trying again (`Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            IngestError::RateLimited { wait } | IngestError::PageRateLimited { wait, .. } => {
                Some(response::whole_seconds(*wait))
            }
            IngestError::PageUnavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            IngestError::SaltsUnavailable => Some(5),
            IngestError::Unavailable(e) => Some(e.retry_after_secs()),
            _ => None,
        }
    }

    /// Whether the collector cannot take events at all right now (`503`): a bulk request
    /// stops at the first such event rather than counting it as one invalid entry.
    pub fn is_unavailable(&self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// Counts the error under its [`metric`](Self::metric). Done by the conversions; called
    /// directly only for an event whose error is summarised rather than answered (bulk).
    pub fn count(&self) {
        match self.metric() {
            Some(Metric::Rejected(reason)) => {
                metrics::counter!("glimpse_events_rejected_total", "reason" => reason).increment(1);
            }
            Some(Metric::Dropped(reason)) => {
                metrics::counter!("glimpse_events_dropped_total", "reason" => reason).increment(1);
            }
            None => {}
        }
    }

    /// Counts the error and answers it: `{"error": reason, "field": field?}` with its status,
    /// `Retry-After` and, for `405`, `Allow`.
    pub fn into_response(self) -> Response<Body> {
        self.count();
        let field = self.field();
        let mut r = response::error(self.status(), &self.to_string(), field.as_deref());
        let headers = r.headers_mut();
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let IngestError::MethodNotAllowed { allow }
        | IngestError::PageMethodNotAllowed { allow } = self
        {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        r
    }

    /// As [`into_response`](Self::into_response), except that an event refused for what it
    /// says (invalid, unknown site) is answered with the 1×1 GIF and the status alone: what an
    /// `<img>` can show.
    pub fn into_gif_response(self) -> Response<Body> {
        match self {
            IngestError::Invalid(_) | IngestError::UnknownSite(_) | IngestError::Refused(..) => {
                self.count();
                response::gif(self.status())
            }
            other => other.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn parts(r: Response<Body>) -> (u16, http::HeaderMap, serde_json::Value) {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn rate_limited_answers_429_with_whole_seconds_to_wait() {
        let error = IngestError::RateLimited {
            wait: Duration::from_millis(1500),
        };
        assert_eq!(error.metric(), Some(Metric::Rejected("rate_limited")));
        let (status, headers, body) = parts(error.into_response()).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(
            body,
            serde_json::json!({"error": "too many events from this client; slow down"})
        );
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_methods() {
        let error = IngestError::MethodNotAllowed {
            allow: "POST, OPTIONS",
        };
        let (status, headers, body) = parts(error.into_response()).await;
        assert_eq!(status, 405);
        assert_eq!(headers["allow"], "POST, OPTIONS");
        assert!(headers.get("retry-after").is_none());
        assert_eq!(body["error"], "method not allowed; use POST, OPTIONS");
    }

    #[tokio::test]
    async fn site_errors_name_the_protocols_site_field() {
        let (status, _, body) =
            parts(IngestError::UnknownSite(Protocol::Umami).into_response()).await;
        assert_eq!(status, 403);
        assert_eq!(
            body,
            serde_json::json!({
                "error": "the website id is not in umami_websites",
                "field": "payload.website"
            })
        );
        let refused = IngestError::Refused(DropReason::UnknownSite, Protocol::Plausible);
        assert_eq!(refused.metric(), None, "the pipeline counted it");
        let (_, _, body) = parts(refused.into_response()).await;
        assert_eq!(body["field"], "d");
        assert_eq!(body["error"], DropReason::UnknownSite.to_string());
        let matomo = IngestError::Refused(DropReason::UnknownSite, Protocol::Matomo);
        assert_eq!(matomo.to_string(), "the idsite is not in matomo_sites");
    }

    #[tokio::test]
    async fn unavailable_carries_the_sinks_reason_label_and_retry() {
        let error = IngestError::Unavailable(sink::IngestError::SpoolFull);
        assert_eq!(error.metric(), Some(Metric::Rejected("spool_full")));
        assert!(error.is_unavailable());
        let (status, headers, body) = parts(error.into_response()).await;
        assert_eq!(status, 503);
        assert_eq!(headers["retry-after"], "30");
        assert_eq!(
            body["error"],
            sink::IngestError::SpoolFull.to_string().as_str()
        );
    }

    #[tokio::test]
    async fn page_errors_are_answered_but_not_counted_as_events() {
        let errors = [
            IngestError::PageMethodNotAllowed { allow: "GET" },
            IngestError::CrossSite("cross-site request refused"),
            IngestError::NoSuchEndpoint,
            IngestError::NoSuchSite,
            IngestError::PageRateLimited {
                reason: "too many requests; try again in a minute",
                wait: Duration::from_millis(100),
            },
            IngestError::PageUnavailable {
                reason: "erasing failed; please try again later",
                retry_after_secs: 60,
            },
        ];
        for error in errors {
            assert_eq!(error.metric(), None, "{error:?}");
        }
        let (status, headers, body) = parts(
            IngestError::PageRateLimited {
                reason: "slow down",
                wait: Duration::from_millis(100),
            }
            .into_response(),
        )
        .await;
        assert_eq!(
            (status, &headers["retry-after"]),
            (429, &"1".parse().unwrap())
        );
        assert_eq!(body, serde_json::json!({"error": "slow down"}));
        let (status, _, body) = parts(IngestError::NoSuchSite.into_response()).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            serde_json::json!({"error": "no such site", "field": "site"})
        );
    }

    #[test]
    fn the_pixel_answers_event_errors_with_the_gif() {
        let invalid = IngestError::Invalid(BeaconError {
            field: "u".into(),
            reason: "missing".into(),
        });
        let r = invalid.into_gif_response();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], "image/gif");
        let r = IngestError::RateLimited {
            wait: Duration::from_secs(1),
        }
        .into_gif_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
