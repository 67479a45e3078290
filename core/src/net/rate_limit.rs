//! Optional per-client token bucket on the beacon endpoints (`rate_limit_per_ip`), keyed on the
//! client's network in memory only: the key is never stored or logged, and idle keys are
//! forgotten every minute.
//!
//! A token is an event, not a request: a Matomo bulk request recording 100 events costs 100.
//! The key is the network visitor ids hash ([`hashing_network`]): an IPv4 address, or an IPv6
//! /64, since a host picks any address in its /64 at will (privacy extensions) and would
//! otherwise get a fresh bucket with each.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as Governor};

use crate::ip_prefix::hashing_network;

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    burst: NonZeroU32,
}

/// Why a client may not go on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over its rate: the wait until the tokens asked for are there.
    Wait(Duration),
    /// Asked for more tokens at once than the burst holds: never possible.
    TooMany { asked: u32, burst: u32 },
}

impl RateLimiter {
    /// `None` when `per_second` is 0 (off).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(rate);
        Some(Self {
            limiter: Governor::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            burst,
        })
    }

    /// `per_minute` requests a minute with bursts of `burst`, for rare, costly requests.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: Governor::keyed(Quota::per_minute(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            burst,
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
            burst: n,
        }
    }

    /// Takes one token; `Err(wait)` when the client is over its rate.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&hashing_network(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes `n` tokens at once (nothing when 0), or none when they are not all there.
    pub fn check_n(&self, ip: IpAddr, n: u32) -> Result<(), Refusal> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.limiter.check_key_n(&hashing_network(ip), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::Wait(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Err(Refusal::TooMany {
                asked: n.get(),
                burst: self.burst.get(),
            }),
        }
    }

    /// The most tokens a client can hold.
    pub fn burst(&self) -> u32 {
        self.burst.get()
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

    #[test]
    fn ipv6_clients_share_their_64_ipv4_clients_their_address() {
        let limiter = RateLimiter::new(1, 2).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Privacy addresses of one /64 are one client, as for visitor ids.
        assert!(limiter.check(ip("2001:db8:1:2::1")).is_ok());
        assert!(limiter.check(ip("2001:db8:1:2:aaaa::7")).is_ok());
        assert!(limiter.check(ip("2001:db8:1:2:ffff:1:2:3")).is_err());
        // The next /64 is another client.
        assert!(limiter.check(ip("2001:db8:1:3::1")).is_ok());
        // IPv4: every address is its own client, neighbours in a /24 included; a mapped
        // address is the IPv4 one.
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        assert!(limiter.check(ip("::ffff:192.0.2.1")).is_ok());
        assert!(limiter.check(ip("192.0.2.1")).is_err());
        assert!(limiter.check(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn several_events_cost_several_tokens() {
        let limiter = RateLimiter::new(1, 10).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            limiter.check_n(a, 11),
            Err(Refusal::TooMany {
                asked: 11,
                burst: 10
            })
        );
        assert_eq!(limiter.check_n(a, 0), Ok(()));
        assert_eq!(limiter.check_n(a, 8), Ok(()));
        // Two left: eight more must wait about six seconds, and take nothing meanwhile.
        match limiter.check_n(a, 8) {
            Err(Refusal::Wait(wait)) => assert!(wait > Duration::from_secs(5), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(limiter.check_n(a, 2), Ok(()));
        assert!(limiter.check(a).is_err());
    }
}
