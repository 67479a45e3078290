//! Visitors' opt-out signals: `DNT: 1`, `Sec-GPC: 1`, and the opt-out cookie set by the
//! collector's `/opt-out` page. Each is honoured by default and can be switched off.

use super::drop_reason::DropReason;

/// The cookie `/opt-out` sets; its presence on a beacon request means "do not record me".
pub const OPT_OUT_COOKIE: &str = "glimpse_opt_out";

/// Which signals the operator honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptOutPolicy {
    pub honor_dnt: bool,
    pub honor_gpc: bool,
    pub honor_cookie: bool,
}

impl Default for OptOutPolicy {
    fn default() -> Self {
        Self {
            honor_dnt: true,
            honor_gpc: true,
            honor_cookie: true,
        }
    }
}

/// The opt-out signals a request carried, read by the HTTP layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrivacySignals {
    pub do_not_track: bool,
    pub global_privacy_control: bool,
    pub opt_out_cookie: bool,
}

impl PrivacySignals {
    /// Reads the signals from request headers.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let is_one = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "1")
        };
        let opt_out_cookie = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .any(|pair| {
                let mut kv = pair.trim().splitn(2, '=');
                kv.next() == Some(OPT_OUT_COOKIE) && kv.next().is_some_and(|v| v == "1")
            });
        Self {
            do_not_track: is_one("dnt"),
            global_privacy_control: is_one("sec-gpc"),
            opt_out_cookie,
        }
    }
}

/// The reason to drop the event, if the visitor opted out in a way the operator honours.
pub fn check(policy: &OptOutPolicy, signals: &PrivacySignals) -> Option<DropReason> {
    if policy.honor_cookie && signals.opt_out_cookie {
        Some(DropReason::OptOutCookie)
    } else if policy.honor_gpc && signals.global_privacy_control {
        Some(DropReason::GlobalPrivacyControl)
    } else if policy.honor_dnt && signals.do_not_track {
        Some(DropReason::DoNotTrack)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn reads_signals() {
        assert_eq!(
            PrivacySignals::from_headers(&headers(&[])),
            PrivacySignals::default()
        );
        let s = PrivacySignals::from_headers(&headers(&[
            ("dnt", "1"),
            ("sec-gpc", "1"),
            ("cookie", "a=b; glimpse_opt_out=1"),
        ]));
        assert!(s.do_not_track && s.global_privacy_control && s.opt_out_cookie);
        let s = PrivacySignals::from_headers(&headers(&[
            ("dnt", "0"),
            ("sec-gpc", "yes"),
            ("cookie", "glimpse_opt_out=0; other_glimpse_opt_out=1"),
        ]));
        assert_eq!(s, PrivacySignals::default());
    }

    #[test]
    fn each_signal_is_honoured_and_switchable() {
        let on = OptOutPolicy::default();
        let dnt = PrivacySignals {
            do_not_track: true,
            ..Default::default()
        };
        let gpc = PrivacySignals {
            global_privacy_control: true,
            ..Default::default()
        };
        let cookie = PrivacySignals {
            opt_out_cookie: true,
            ..Default::default()
        };
        assert_eq!(check(&on, &dnt), Some(DropReason::DoNotTrack));
        assert_eq!(check(&on, &gpc), Some(DropReason::GlobalPrivacyControl));
        assert_eq!(check(&on, &cookie), Some(DropReason::OptOutCookie));
        assert_eq!(check(&on, &PrivacySignals::default()), None);

        let no_dnt = OptOutPolicy {
            honor_dnt: false,
            ..on
        };
        assert_eq!(check(&no_dnt, &dnt), None);
        assert_eq!(check(&no_dnt, &gpc), Some(DropReason::GlobalPrivacyControl));
        let no_gpc = OptOutPolicy {
            honor_gpc: false,
            ..on
        };
        assert_eq!(check(&no_gpc, &gpc), None);
        let no_cookie = OptOutPolicy {
            honor_cookie: false,
            ..on
        };
        assert_eq!(check(&no_cookie, &cookie), None);
        assert_eq!(check(&no_cookie, &dnt), Some(DropReason::DoNotTrack));
    }
}
