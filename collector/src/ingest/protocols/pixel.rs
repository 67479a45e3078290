//! The no-JavaScript pixel: `GET /pixel.gif?d=example.com&u=…` in an `<img>`, for
//! `<noscript>` and static pages.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `d` | site domain (required), as in `POST /api/event` |
//! | `u` | page URL; without it the request's `Referer` header (give the `<img>` `referrerpolicy="no-referrer-when-downgrade"`, or browsers send only the origin) |
//! | `r` | referrer URL |
//! | `n` | event name, default `pageview` |
//! | `w` | screen width |

use super::{Draft, MapError, Mapped};
use crate::ingest::beacon::BeaconLimits;

/// Maps the pixel's query string; `referer` is the request's `Referer` header.
pub fn map(
    query: Option<&str>,
    referer: Option<&str>,
    limits: &BeaconLimits,
) -> Result<Mapped, MapError> {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let domains = match param("d") {
        // The same rules as the beacon's `d`: deduplicated (one row per site, not per copy
        // of its name) and capped.
        Some(text) => crate::ingest::beacon::unique_domains(text).map_err(MapError::Invalid)?,
        None => return Err(MapError::invalid("d", "field is required")),
    };
    let url = param("u")
        .or(referer)
        .ok_or_else(|| MapError::invalid("u", "required when there is no Referer header"))?;
    let screen_width = match param("w") {
        Some(w) => Some(
            w.parse::<u16>()
                .map_err(|_| MapError::invalid("w", "must be a whole number from 0 to 65535"))?,
        ),
        None => None,
    };
    let draft = Draft {
        name: param("n").unwrap_or("pageview").to_string(),
        url: url.to_string(),
        domain: domains[0].clone(),
        referrer: param("r").map(str::to_string),
        screen_width,
        props: Vec::new(),
    };
    let mut beacon = draft.finish(limits, ["n", "u", "r", "p"])?;
    beacon.domains = domains;
    Ok(Mapped::Event(beacon))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon(query: &str, referer: Option<&str>) -> Result<crate::ingest::Beacon, MapError> {
        match map(Some(query), referer, &BeaconLimits::default())? {
            Mapped::Event(b) => Ok(b),
            other => panic!("{other:?}"),
        }
    }

    /// `d` in the pixel is deduplicated and capped like the beacon's: one row per site, not
    /// one per copy of its name.
    #[test]
    fn domains_are_deduplicated_and_capped() {
        let copies = vec!["example.com"; 5_000].join(",");
        let b = beacon(&format!("d={copies}&u=https%3A%2F%2Fexample.com%2F"), None).unwrap();
        assert_eq!(b.domains, ["example.com"]);
        let many: Vec<String> = (0..51).map(|i| format!("s{i}.io")).collect();
        let e = beacon(
            &format!("d={}&u=https%3A%2F%2Fexample.com%2F", many.join(",")),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, MapError::Invalid(b) if b.field == "d"),
            "{e:?}"
        );
    }

    #[test]
    fn explicit_page() {
        let b = beacon(
            "d=Example.com&u=https%3A%2F%2Fexample.com%2Fnewsletter%3Futm_source%3Dmail&r=https%3A%2F%2Fmail.example.org%2F&w=1280",
            Some("https://ignored.example/"),
        )
        .unwrap();
        assert_eq!(b.name, "pageview");
        assert_eq!(b.domains, ["example.com"]);
        assert_eq!(
            b.url.as_str(),
            "https://example.com/newsletter?utm_source=mail"
        );
        assert_eq!(b.referrer.as_deref(), Some("https://mail.example.org/"));
        assert_eq!(b.screen_width, Some(1280));
    }

    #[test]
    fn referer_is_the_page_without_u() {
        let b = beacon(
            "d=example.com,other.org",
            Some("https://example.com/static/about.html"),
        )
        .unwrap();
        assert_eq!(b.url.path(), "/static/about.html");
        assert_eq!(b.domains, ["example.com", "other.org"]);
        assert_eq!(b.referrer, None);
    }

    #[test]
    fn errors_name_the_field() {
        let field = |q: &str, r: Option<&str>| match beacon(q, r).unwrap_err() {
            MapError::Invalid(e) => e.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("u=https%3A%2F%2Fe.com%2F", None), "d");
        assert_eq!(field("d=e.com", None), "u");
        assert_eq!(field("d=e.com&u=mailto%3Ax", None), "u");
        assert_eq!(field("d=e.com&u=https%3A%2F%2Fe.com%2F&w=big", None), "w");
    }
}
