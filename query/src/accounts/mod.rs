//! Accounts: users (e-mail and password), their roles per site, sign-in sessions, and the
//! [`Principal`] every request is authorised as.
//!
//! `principal` is the permission table, `password` hashes and verifies, `store` reads and
//! writes users and roles in ClickHouse (the CLI's `glimpse user …`), `session` makes, checks
//! and ends sessions, `login_limit` slows password guessing, `cross_site` refuses state changes
//! other websites make a signed-in browser send, `http` is the `/api/auth/…` endpoints,
//! `invitations` stores invitations to a site and `invitation_http` lets invitees accept them, and
//! `resolve` turns a request's credentials (key, cookie, share link) into a principal.
//!
//! Every table is append-only with a `version` (nanoseconds since the epoch, strictly
//! increasing within a process); readers take the newest row per key.

pub(crate) mod cross_site;
pub(crate) mod http;
pub(crate) mod invitation_http;
pub(crate) mod invitations;
pub(crate) mod login_limit;
pub mod password;
pub mod principal;
pub(crate) mod refused_credentials;
pub(crate) mod resolve;
pub mod session;
pub mod store;

pub use principal::{KeyScope, Principal, Role};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("the operating system has no randomness: {0}")]
    Random(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("site {0:?} is neither configured nor added with `glimpse site add`")]
    UnknownSite(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<AccountError> for crate::error::ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::ClickHouse(e) => e.into(),
            AccountError::Invalid(message) => Self::bad("body", message),
            other => {
                tracing::error!(error = %other, "account operation failed");
                Self::Unavailable("the account could not be changed".into())
            }
        }
    }
}

/// An e-mail as stored: trimmed and lower-cased; `Err` when it cannot be one.
pub fn normalize_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split('@').count() == 2
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(AccountError::Invalid(format!(
            "{email:?} is not an e-mail address"
        )))
    }
}

/// Seconds since the epoch, as DateTime columns hold them.
fn unix_now() -> u32 {
    glimpse_core::clock::unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM \n").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "a@b@example.com",
            "an n@example.com",
            "ann@exa\u{0}mple.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn versions_strictly_increase_and_are_nanoseconds() {
        let mut last = 0;
        for _ in 0..10_000 {
            let v = glimpse_core::clock::version_now();
            assert!(v > last);
            last = v;
        }
        // Nanoseconds of this century, not seconds or a counter.
        assert!(last > 1_700_000_000_000_000_000, "{last}");
    }
}
