//! Passwords: argon2id with the crate's default parameters and a random salt from the
//! operating system, stored as a PHC string (`$argon2id$v=19$m=…`). Never logged, never stored
//! in clear.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::AccountError;

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 256;

/// `Err` naming the rule a new password breaks (lengths in characters).
pub fn check_new(password: &str) -> Result<(), AccountError> {
    let chars = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&chars) {
        return Err(AccountError::Invalid(format!(
            "a password must have {MIN_LENGTH} to {MAX_LENGTH} characters"
        )));
    }
    Ok(())
}

/// The PHC string of `password` with a fresh salt.
pub fn hash(password: &str) -> Result<String, AccountError> {
    check_new(password)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AccountError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string. A string that does not parse matches
/// nothing. Over-long input is refused before hashing (no 1 MB password costs us a hash).
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_LENGTH * 4 {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password is known to match, verified against when the e-mail has no user, so
/// that an unknown e-mail costs the same time as a wrong password (no user enumeration by
/// timing).
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut secret = [0u8; 32];
    // Without randomness the dummy is still a valid hash of a string nobody types.
    let _ = getrandom::fill(&mut secret);
    let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    hash(&password).unwrap_or_default()
});

/// Computes [`DUMMY_HASH`] now (at start-up) so the first unknown e-mail is not slower.
pub fn prepare() {
    LazyLock::force(&DUMMY_HASH);
}

/// Runs one verification against the dummy hash; always false.
pub fn verify_dummy(password: &str) -> bool {
    verify(password, &DUMMY_HASH);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_salted_and_verifies_only_its_password() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("correct horse"));
        assert!(verify("correct horse battery", &a));
        assert!(verify("correct horse battery", &b));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify("", &a));
        assert!(!verify("correct horse battery", "not a phc string"));
        assert!(!verify("correct horse battery", ""));
    }

    #[test]
    fn lengths_outside_8_to_256_characters_are_refused() {
        assert!(check_new("1234567").is_err());
        assert!(check_new("12345678").is_ok());
        assert!(check_new(&"x".repeat(256)).is_ok());
        assert!(check_new(&"x".repeat(257)).is_err());
        // Characters, not bytes: eight two-byte letters are enough.
        assert!(check_new("éééééééé").is_ok());
        assert!(hash("short").is_err());
    }

    #[test]
    fn the_dummy_matches_nothing() {
        prepare();
        assert!(
            DUMMY_HASH.starts_with("$argon2id$"),
            "a real hash, same cost"
        );
        assert!(!verify_dummy(""));
        assert!(!verify_dummy("password"));
    }
}
