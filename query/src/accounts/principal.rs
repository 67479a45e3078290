//! Who is asking: the one answer every endpoint of the query service authorises with.
//!
//! | principal                 | read site S            | administer site S      |
//! |---------------------------|------------------------|------------------------|
//! | owner                     | every site             | every site             |
//! | user, admin of S          | S                      | S                      |
//! | user, viewer of S         | S                      | no                     |
//! | `stats` key of S (or `*`) | S (every site)         | no                     |
//! | `sites` key of S (or `*`) | S (every site)         | S (every site)         |
//! | share link of S           | S                      | no                     |
//!
//! "Administer" is site settings, goals, shared links, members and keys (the Sites API).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::auth::ALL_SITES;

/// A user's role on one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads the site's stats and changes its settings, goals, links, members and keys.
    Admin,
    /// Reads the site's stats.
    Viewer,
}

/// What an API key may do on its site(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyScope {
    /// Read stats (every key created before scopes existed).
    #[default]
    Stats,
    /// Read stats and administer the site(s) (the Sites API).
    Sites,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The instance owner: every site, every action.
    Owner { email: String },
    /// A signed-in user with roles on some sites.
    User {
        email: String,
        roles: BTreeMap<String, Role>,
    },
    /// An API key for one site, or for every site ([`ALL_SITES`], `*`).
    Key { site: String, scope: KeyScope },
    /// A site's share link (`?auth=TOKEN`): reads that site only.
    ShareLink { site: String },
}

impl Principal {
    /// May read `site`'s stats.
    pub fn may_read(&self, site: &str) -> bool {
        match self {
            Self::Owner { .. } => true,
            Self::User { roles, .. } => roles.contains_key(site),
            Self::Key { site: allowed, .. } => allowed == ALL_SITES || allowed == site,
            Self::ShareLink { site: allowed } => allowed == site,
        }
    }

    /// May change `site`'s settings, goals, links, members and keys.
    pub fn may_admin(&self, site: &str) -> bool {
        match self {
            Self::Owner { .. } => true,
            Self::User { roles, .. } => roles.get(site) == Some(&Role::Admin),
            Self::Key {
                site: allowed,
                scope: KeyScope::Sites,
            } => allowed == ALL_SITES || allowed == site,
            Self::Key {
                scope: KeyScope::Stats,
                ..
            }
            | Self::ShareLink { .. } => false,
        }
    }

    /// The instance owner (a person; an all-sites key is not one).
    pub fn is_owner(&self) -> bool {
        matches!(self, Self::Owner { .. })
    }

    /// The signed-in user's e-mail; `None` for keys and share links.
    pub fn email(&self) -> Option<&str> {
        match self {
            Self::Owner { email } | Self::User { email, .. } => Some(email),
            Self::Key { .. } | Self::ShareLink { .. } => None,
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }
}

impl Role {
    /// Plausible's word for the role (its Sites API's guests): `editor` is Glimpse's admin.
    pub fn plausible_name(self) -> &'static str {
        match self {
            Self::Admin => "editor",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role or scope name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownName(String);

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "admin" => Ok(Self::Admin),
            "viewer" => Ok(Self::Viewer),
            other => Err(UnknownName(format!(
                "no role {other:?}: use admin or viewer"
            ))),
        }
    }
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stats => "stats",
            Self::Sites => "sites",
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyScope {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "stats" => Ok(Self::Stats),
            "sites" => Ok(Self::Sites),
            other => Err(UnknownName(format!(
                "no key scope {other:?}: use stats or sites"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a.example";
    const B: &str = "b.example";

    fn user(roles: &[(&str, Role)]) -> Principal {
        Principal::User {
            email: "u@example.com".into(),
            roles: roles.iter().map(|(s, r)| (s.to_string(), *r)).collect(),
        }
    }

    fn key(site: &str, scope: KeyScope) -> Principal {
        Principal::Key {
            site: site.into(),
            scope,
        }
    }

    /// (principal, may read A, may read B, may administer A, may administer B)
    fn table() -> Vec<(&'static str, Principal, [bool; 4])> {
        vec![
            (
                "owner",
                Principal::Owner {
                    email: "o@example.com".into(),
                },
                [true, true, true, true],
            ),
            (
                "admin of A",
                user(&[(A, Role::Admin)]),
                [true, false, true, false],
            ),
            (
                "viewer of A",
                user(&[(A, Role::Viewer)]),
                [true, false, false, false],
            ),
            (
                "admin of A, viewer of B",
                user(&[(A, Role::Admin), (B, Role::Viewer)]),
                [true, true, true, false],
            ),
            ("user without roles", user(&[]), [false; 4]),
            (
                "stats key of A",
                key(A, KeyScope::Stats),
                [true, false, false, false],
            ),
            (
                "sites key of A",
                key(A, KeyScope::Sites),
                [true, false, true, false],
            ),
            (
                "stats key of every site",
                key(ALL_SITES, KeyScope::Stats),
                [true, true, false, false],
            ),
            (
                "sites key of every site",
                key(ALL_SITES, KeyScope::Sites),
                [true, true, true, true],
            ),
            (
                "share link of A",
                Principal::ShareLink { site: A.into() },
                [true, false, false, false],
            ),
        ]
    }

    #[test]
    fn the_permission_table() {
        for (name, principal, [read_a, read_b, admin_a, admin_b]) in table() {
            assert_eq!(principal.may_read(A), read_a, "{name} reads A");
            assert_eq!(principal.may_read(B), read_b, "{name} reads B");
            assert_eq!(principal.may_admin(A), admin_a, "{name} administers A");
            assert_eq!(principal.may_admin(B), admin_b, "{name} administers B");
            // Whoever may administer a site may read it.
            for site in [A, B] {
                assert!(
                    !principal.may_admin(site) || principal.may_read(site),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn the_all_sites_mark_is_not_a_site_a_user_can_hold() {
        // A user given a role on a site literally named `*` (never a valid domain) gains no
        // other site: only keys read `*` as "every site".
        let odd = user(&[(ALL_SITES, Role::Admin)]);
        assert!(!odd.may_read(A));
        assert!(!odd.may_admin(A));
        let share = Principal::ShareLink {
            site: ALL_SITES.into(),
        };
        assert!(!share.may_read(A));
    }

    #[test]
    fn only_people_have_an_email_and_only_the_owner_is_one() {
        for (name, principal, _) in table() {
            let person = matches!(principal, Principal::Owner { .. } | Principal::User { .. });
            assert_eq!(principal.email().is_some(), person, "{name}");
            assert_eq!(principal.is_owner(), name == "owner", "{name}");
        }
    }

    #[test]
    fn roles_and_scopes_read_back_what_they_write() {
        for role in [Role::Admin, Role::Viewer] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        for scope in [KeyScope::Stats, KeyScope::Sites] {
            assert_eq!(scope.as_str().parse::<KeyScope>(), Ok(scope));
        }
        assert!("owner".parse::<Role>().is_err(), "owner is not a site role");
        assert!("Admin".parse::<Role>().is_err());
        assert!("all".parse::<KeyScope>().is_err());
        assert_eq!(KeyScope::default(), KeyScope::Stats);
    }
}
