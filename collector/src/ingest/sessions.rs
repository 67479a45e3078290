//! Visits: a visitor's events with gaps under 30 minutes share a `session_id`, which the query
//! service needs for visits, bounce rate, visit duration, entry and exit pages.
//!
//! Sessions live in the collector's memory, keyed by site and visitor id, and expire after 30
//! idle minutes. With several collectors, the load balancer must send a client to the same
//! collector (hash on the client address, e.g. nginx `hash $remote_addr consistent`): visitor
//! ids agree across collectors (shared salts), but a visit split across collectors would count
//! as several visits. A restart ends open visits the same way.

use std::collections::HashMap;
use std::sync::Mutex;

/// Idle time after which the next event starts a new visit.
pub const VISIT_TIMEOUT_SECS: u32 = 30 * 60;

#[derive(Debug, Clone, Copy)]
struct Visit {
    session_id: u64,
    last_seen: u32,
}

/// Open visits. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<(String, u64), Visit>>,
}

/// The ids to store for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub visitor_id: u64,
    pub session_id: u64,
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues the visitor's open visit or starts one. `previous_visitor_id` is the id the
    /// visitor had under yesterday's salt: a visit open under it continues across midnight,
    /// keeping yesterday's id until it ends. `may_start` is false for events that do not begin
    /// visits on their own (engagement reports).
    pub fn assign(
        &self,
        site: &str,
        visitor_id: u64,
        previous_visitor_id: Option<u64>,
        at: u32,
        may_start: bool,
    ) -> Assigned {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let candidates = [Some(visitor_id), previous_visitor_id];
        for id in candidates.into_iter().flatten() {
            if let Some(visit) = open.get_mut(&(site.to_string(), id)) {
                if at.saturating_sub(visit.last_seen) < VISIT_TIMEOUT_SECS {
                    visit.last_seen = visit.last_seen.max(at);
                    return Assigned {
                        visitor_id: id,
                        session_id: visit.session_id,
                    };
                }
            }
        }
        let session_id = new_session_id();
        if may_start {
            open.insert(
                (site.to_string(), visitor_id),
                Visit {
                    session_id,
                    last_seen: at,
                },
            );
        }
        Assigned {
            visitor_id,
            session_id,
        }
    }

    /// Forgets visits idle for longer than the timeout; returns how many remain.
    pub fn expire(&self, now: u32) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, v| now.saturating_sub(v.last_seen) < VISIT_TIMEOUT_SECS);
        open.len()
    }
}

fn new_session_id() -> u64 {
    // Random, so a visit id says nothing about who or when; 0 means "no visit".
    getrandom::u64().unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_under_30_minutes_continue_the_visit() {
        let s = Sessions::new();
        let a = s.assign("e.com", 7, None, 1000, true);
        let b = s.assign("e.com", 7, None, 1000 + 29 * 60, true);
        assert_eq!(a, b);
        let c = s.assign("e.com", 7, None, 1000 + 29 * 60 + 30 * 60, true);
        assert_eq!(c.visitor_id, 7);
        assert_ne!(c.session_id, a.session_id);
    }

    #[test]
    fn visitors_and_sites_are_separate() {
        let s = Sessions::new();
        let a = s.assign("e.com", 7, None, 0, true);
        assert_ne!(a.session_id, s.assign("e.com", 8, None, 1, true).session_id);
        assert_ne!(a.session_id, s.assign("o.com", 7, None, 1, true).session_id);
    }

    #[test]
    fn visits_continue_across_midnight_under_yesterdays_id() {
        let s = Sessions::new();
        let before = s.assign("e.com", 111, None, 86_400 - 60, true);
        // After midnight the visitor hashes to 222 today, 111 under yesterday's salt.
        let after = s.assign("e.com", 222, Some(111), 86_400 + 60, true);
        assert_eq!(after, before);
        // A visitor with no open visit yesterday gets today's id.
        let fresh = s.assign("e.com", 333, Some(444), 86_400 + 60, true);
        assert_eq!(fresh.visitor_id, 333);
    }

    #[test]
    fn engagement_does_not_start_visits() {
        let s = Sessions::new();
        let lone = s.assign("e.com", 9, None, 0, false);
        let next = s.assign("e.com", 9, None, 10, true);
        assert_ne!(lone.session_id, next.session_id);
        assert_eq!(s.assign("e.com", 9, None, 20, false), next);
    }

    #[test]
    fn expiry_forgets_idle_visits() {
        let s = Sessions::new();
        s.assign("e.com", 1, None, 0, true);
        s.assign("e.com", 2, None, 1000, true);
        assert_eq!(s.expire(VISIT_TIMEOUT_SECS + 500), 1);
        assert_eq!(s.expire(VISIT_TIMEOUT_SECS * 3), 0);
    }
}
