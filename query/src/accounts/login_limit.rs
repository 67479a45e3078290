//! Limits on password guessing: per account, [`MAX_FAILURES`] wrong passwords within
//! [`FAILURE_WINDOW`] lock further attempts (even with the right password) until the oldest
//! failure leaves the window; per client address, a token bucket on every sign-in attempt.
//!
//! The state is in memory, per process: several query service processes each allow that many
//! attempts, and a restart forgets them. That is enough to make online guessing of a real
//! password hopeless (5 tries per 15 minutes per process), and needs no shared store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use glimpse_core::net::rate_limit::RateLimiter;

/// Wrong passwords for one e-mail within [`FAILURE_WINDOW`] after which sign-in is refused.
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Sign-in attempts one client address may make a minute (and at once).
pub const ATTEMPTS_PER_MINUTE_PER_ADDRESS: u32 = 20;

/// Tracked e-mails past which idle entries are dropped on the next failure.
const PRUNE_ABOVE: usize = 10_000;

pub struct LoginLimits {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    per_address: RateLimiter,
    max_failures: usize,
    window: Duration,
}

impl LoginLimits {
    pub fn new() -> Self {
        Self::with(
            MAX_FAILURES,
            FAILURE_WINDOW,
            ATTEMPTS_PER_MINUTE_PER_ADDRESS,
        )
    }

    fn with(max_failures: usize, window: Duration, per_minute: u32) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            per_address: RateLimiter::per_minute(per_minute, per_minute),
            max_failures,
            window,
        }
    }

    /// `Err(wait)` when `client` or `email` may not try now. Counts as an attempt of `client`.
    pub fn check(&self, client: IpAddr, email: &str) -> Result<(), Duration> {
        self.per_address.check(client)?;
        self.check_account(email)
    }

    /// `Err(wait)` when `email` may not try now, for an attempt already counted for its client
    /// (by [`Self::check_address`]).
    pub fn check_account(&self, email: &str) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = failures.get_mut(email) else {
            return Ok(());
        };
        times.retain(|t| t.elapsed() < self.window);
        if times.len() >= self.max_failures {
            let oldest = times.iter().min().copied().unwrap_or_else(Instant::now);
            return Err(self.window.saturating_sub(oldest.elapsed()));
        }
        Ok(())
    }

    /// `Err(wait)` when `client` may not try now (an attempt at a secret that is not a
    /// password, such as an invitation token: no account to count failures of). Counts as an
    /// attempt of `client`.
    pub fn check_address(&self, client: IpAddr) -> Result<(), Duration> {
        self.per_address.check(client)
    }

    /// A wrong password (or unknown e-mail) for `email`.
    pub fn failed(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > PRUNE_ABOVE {
            let window = self.window;
            failures.retain(|_, times| times.iter().any(|t| t.elapsed() < window));
        }
        failures
            .entry(email.to_string())
            .or_default()
            .push(Instant::now());
    }

    /// Drops the state of addresses back at full burst (called every minute, so that many
    /// addresses trying once each do not grow memory without bound).
    pub fn forget_idle(&self) {
        self.per_address.forget_idle();
    }

    /// A successful sign-in clears the account's failures.
    pub fn succeeded(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(email);
    }
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn an_account_locks_after_its_failures_and_only_that_account() {
        let limits = LoginLimits::with(3, Duration::from_secs(600), 1000);
        for _ in 0..3 {
            assert!(limits.check(HOME, "a@example.com").is_ok());
            limits.failed("a@example.com");
        }
        let wait = limits.check(HOME, "a@example.com").unwrap_err();
        assert!(wait > Duration::from_secs(590) && wait <= Duration::from_secs(600));
        assert!(
            limits.check(HOME, "b@example.com").is_ok(),
            "another account"
        );
    }

    #[test]
    fn failures_leave_the_window_and_success_clears_them() {
        let limits = LoginLimits::with(2, Duration::from_millis(50), 1000);
        limits.failed("a@example.com");
        limits.failed("a@example.com");
        assert!(limits.check(HOME, "a@example.com").is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(limits.check(HOME, "a@example.com").is_ok());
        limits.failed("a@example.com");
        limits.succeeded("a@example.com");
        limits.failed("a@example.com");
        assert!(
            limits.check(HOME, "a@example.com").is_ok(),
            "one failure since"
        );
    }

    #[test]
    fn an_address_is_limited_whatever_the_accounts_it_tries() {
        let limits = LoginLimits::with(5, Duration::from_secs(600), 3);
        for n in 0..3 {
            assert!(limits.check(HOME, &format!("u{n}@example.com")).is_ok());
        }
        assert!(limits.check(HOME, "u9@example.com").is_err());
        assert!(limits.check_address(HOME).is_err(), "the same bucket");
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(limits.check(other, "u9@example.com").is_ok());
        assert!(limits.check_address(other).is_ok());
        // Forgetting idle addresses keeps the ones still limited.
        limits.forget_idle();
        assert!(limits.check_address(HOME).is_err(), "still limited");
    }
}
