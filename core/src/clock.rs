//! The wall clock, in the seconds ClickHouse's `DateTime` columns hold.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since 1970 (UTC), saturated into `u32` like a ClickHouse `DateTime`.
pub fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}
