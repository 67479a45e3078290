//! What a visit is, where the collector (which forms visits) and the query service (which
//! reads them) must agree.

/// Longest a visit lasts: an event this long after a visit's start begins a new visit, so a
/// visit's rows reach at most this far past its start.
pub const MAX_VISIT_SECS: u32 = 24 * 60 * 60;

/// Default of `max_open_visits`: how many visits the collector keeps open in memory.
pub const DEFAULT_MAX_OPEN_VISITS: usize = 100_000;
