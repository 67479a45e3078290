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

/// A version for a row of a versioned table (`crate::registry`): nanoseconds since 1970,
/// strictly increasing within this process, so that two changes made in the same nanosecond
/// (or after the clock stepped back) still order as they were made.
pub fn version_now() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    now.max(previous + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_strictly_increase() {
        let versions: Vec<u64> = (0..1000).map(|_| super::version_now()).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        // Nanoseconds of this century, not a counter from zero.
        assert!(versions[0] > 1_700_000_000 * 1_000_000_000);
    }
}
