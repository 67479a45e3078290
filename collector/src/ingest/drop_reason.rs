//! Why a valid beacon produced no row: the pipeline's and the opt-out check's answer, counted
//! in metrics and the filtered-traffic report, never stored.

use super::bots::BotReason;

/// Why a valid beacon produced no row. Each reason is counted, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("no configured site matches the beacon's domain")]
    UnknownSite,
    #[error("the visitor sent Do Not Track")]
    DoNotTrack,
    #[error("the visitor sent Global Privacy Control")]
    GlobalPrivacyControl,
    #[error("the visitor opted out")]
    OptOutCookie,
    #[error("the page's host name is not allowed for the site")]
    HostnameNotAllowed,
    #[error("the client network is excluded for the site")]
    ExcludedIp,
    #[error("the page path is excluded for the site")]
    ExcludedPath,
    #[error("the client is a bot ({0:?})")]
    Bot(BotReason),
    #[error("the referrer is a known spammer")]
    ReferrerSpam,
}

impl DropReason {
    /// A stable, low-cardinality label for metrics and the filtered-traffic counts.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownSite => "unknown_site",
            DropReason::DoNotTrack => "dnt",
            DropReason::GlobalPrivacyControl => "gpc",
            DropReason::OptOutCookie => "opt_out",
            DropReason::HostnameNotAllowed => "hostname_not_allowed",
            DropReason::ExcludedIp => "excluded_ip",
            DropReason::ExcludedPath => "excluded_path",
            DropReason::Bot(_) => "bot",
            DropReason::ReferrerSpam => "referrer_spam",
        }
    }

    /// The label back from its text (for counts read back after a failed write).
    pub fn label_from_str(text: &str) -> &'static str {
        const ALL: &[&str] = &[
            "unknown_site",
            "dnt",
            "gpc",
            "opt_out",
            "hostname_not_allowed",
            "excluded_ip",
            "excluded_path",
            "bot",
            "referrer_spam",
        ];
        ALL.iter().find(|l| **l == text).copied().unwrap_or("other")
    }

    /// Whether the client should learn that the event was not recorded. Opt-outs and bots get
    /// the same `202` as everyone else: no signal to the page, nothing for a bot to adapt to.
    pub fn is_silent(self) -> bool {
        !matches!(self, DropReason::UnknownSite)
    }
}
