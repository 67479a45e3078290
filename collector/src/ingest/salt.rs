//! A visitor-id salt and the day it serves, shared by the salts kept in files
//! ([`super::pseudonym`]) and those agreed through a cluster ([`super::shared_salts`]).

use zeroize::Zeroizing;

pub(crate) const SALT_LEN: usize = 32;
pub(crate) const SECONDS_PER_DAY: u64 = 86_400;

/// A day as a count of days since the Unix epoch (UTC).
pub type Day = u32;

pub fn day_of(unix_secs: u64) -> Day {
    (unix_secs / SECONDS_PER_DAY) as Day
}

pub(crate) type Salt = Zeroizing<[u8; SALT_LEN]>;

pub(crate) fn random_salt() -> Salt {
    let mut salt = Zeroizing::new([0u8; SALT_LEN]);
    // The OS CSPRNG failing is not something to limp on from.
    getrandom::fill(salt.as_mut()).expect("the operating system's random number generator failed");
    salt
}
