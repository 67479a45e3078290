//! The beacon protocols the collector speaks (Plausible's, Umami's, Matomo's, the pixel): each
//! one's metric label, the field that names its site and how a refusal is worded for it.

use crate::ingest::DropReason;

/// The protocol an event arrived in: the `protocol` label of
/// `glimpse_events_accepted_total` and `glimpse_events_ignored_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plausible,
    Umami,
    Matomo,
    Pixel,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Plausible => "plausible",
            Protocol::Umami => "umami",
            Protocol::Matomo => "matomo",
            Protocol::Pixel => "pixel",
        }
    }

    /// The request field that names the site, for a `403`'s `field`.
    pub fn site_field(self) -> &'static str {
        match self {
            Protocol::Plausible => "d",
            Protocol::Umami => "payload.website",
            Protocol::Matomo => "idsite",
            Protocol::Pixel => "d",
        }
    }

    /// The `403`'s reason when the protocol's site id maps to no configured site.
    pub fn unknown_site_reason(self) -> &'static str {
        match self {
            Protocol::Umami => "the website id is not in umami_websites",
            Protocol::Matomo => "the idsite is not in matomo_sites",
            Protocol::Plausible | Protocol::Pixel => "no configured site matches",
        }
    }

    /// The `403`'s reason when the pipeline refuses an event. Matomo's tracker knows only its
    /// `idsite`, so it is told about that.
    pub fn refused_reason(self, reason: DropReason) -> String {
        match self {
            Protocol::Matomo => self.unknown_site_reason().to_string(),
            _ => reason.to_string(),
        }
    }

    /// Counts a request the protocol defines but Glimpse does not record.
    pub fn ignored(self, reason: &'static str) {
        metrics::counter!(
            "glimpse_events_ignored_total",
            "protocol" => self.label(),
            "reason" => reason
        )
        .increment(1);
    }
}
