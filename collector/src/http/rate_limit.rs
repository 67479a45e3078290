//! Optional per-client token bucket on the beacon endpoint (`rate_limit_per_ip`), keyed on the
//! client address in memory only: the key is never stored or logged, and idle keys are
//! forgotten every minute.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as Governor};

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// `None` when `per_second` is 0 (off).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(rate);
        Some(Self {
            limiter: Governor::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    /// `per_minute` requests a minute with bursts of `burst`, for rare, costly requests.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: Governor::keyed(Quota::per_minute(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `per_hour` requests an hour, all of which may come at once, for requests that cost
    /// the database real work (erasure).
    pub fn per_hour(per_hour: u32) -> Self {
        let n = NonZeroU32::new(per_hour.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs(3600) / n.get();
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_hour(n))
            .allow_burst(n);
        Self {
            limiter: Governor::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when the client is over its rate.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the state of clients that have been idle long enough to be back at full burst.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_when_zero() {
        assert!(RateLimiter::new(0, 10).is_none());
    }

    #[test]
    fn limits_each_client_separately() {
        let limiter = RateLimiter::new(1, 3).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(b).is_ok(), "another client is not affected");
        limiter.forget_idle();
    }
}
