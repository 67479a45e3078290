//! Matomo's tracking API: `GET`/`POST /matomo.php` (and `/piwik.php`), parameters in the query
//! string, a form-urlencoded body, or a bulk body `{"requests": ["?idsite=1&...", ...]}`.
//!
//! | Matomo | Glimpse |
//! | --- | --- |
//! | `idsite` | the site, through `matomo_sites` |
//! | `rec` | must be `1`, else the request is answered and ignored (as Matomo does) |
//! | `url` | page URL (without it: the `Referer` header) |
//! | `urlref` | referrer |
//! | `res` `"WxH"` | screen width `W` |
//! | `e_c`, `e_a`, `e_n`, `e_v` | custom event `"<e_c>: <e_a>"` with properties `name`, `value` |
//! | `link` | `Outbound Link: Click` with property `url` (Glimpse's and Plausible's name) |
//! | `download` | `File Download` with property `url`, without its query string |
//! | `dimension<N>` | property `dimension<N>` |
//! | `ping=1` | heartbeat: answered, ignored |
//!
//! Not stored: `action_name` (the page title: Glimpse stores no titles), `h`/`m`/`s`, `lang`,
//! plug-in flags, `pf_*` timings. Never believed: `cip`, `ua`, `uadata` (the connection's
//! address and `User-Agent` header are used, as for every protocol) and `cdt` (the arrival time
//! is the event time). Ignored: `_id`, `uid`, `cid`, `_idn`, `_refts`, `_ref` (visitor ids and
//! their cookies' history: the daily pseudonym replaces them). `bots=1` asks Matomo to keep bot
//! traffic; Glimpse's bot filter applies regardless. Requests Glimpse has no place for — site
//! search, content impressions, goals and e-commerce, media, forms, crashes — are ignored.

use serde_json::Value;

use super::{Draft, MapError, Mapped, SiteIds, FILE_DOWNLOAD, OUTBOUND_LINK};
use crate::ingest::beacon::BeaconLimits;

/// One tracking request's parameters, in order (the first of a repeated name counts).
pub type Params = Vec<(String, String)>;

/// What one HTTP request to `/matomo.php` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requests {
    pub entries: Vec<Params>,
    /// A bulk request, answered with Matomo's JSON summary.
    pub bulk: bool,
    /// Answer with the 1×1 GIF (`send_image` is not `0`) rather than `204`.
    pub send_image: bool,
}

/// Most requests in one bulk body; Matomo's own tracker sends a handful.
pub const MAX_BULK_REQUESTS: usize = 100;

/// Splits an HTTP request into tracking requests: the query string's parameters, then the
/// body's (a form, or a bulk JSON object; Matomo labels both form-urlencoded).
pub fn requests(query: Option<&str>, body: &[u8]) -> Result<Requests, MapError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| MapError::invalid("body", "body is not valid UTF-8"))?
        .trim();
    if text.starts_with('{') {
        return bulk(text);
    }
    let mut params = form(query.unwrap_or_default());
    for (key, value) in form(text) {
        if !params.iter().any(|(k, _)| *k == key) {
            params.push((key, value));
        }
    }
    let send_image = get(&params, "send_image") != Some("0");
    Ok(Requests {
        entries: vec![params],
        bulk: false,
        send_image,
    })
}

fn bulk(text: &str) -> Result<Requests, MapError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| MapError::invalid("body", format!("bulk body is not valid JSON: {e}")))?;
    let Some(list) = value.get("requests").and_then(Value::as_array) else {
        return Err(MapError::invalid(
            "requests",
            "bulk body needs a requests list",
        ));
    };
    if list.len() > MAX_BULK_REQUESTS {
        return Err(MapError::invalid(
            "requests",
            format!("more than {MAX_BULK_REQUESTS} requests"),
        ));
    }
    let entries = list
        .iter()
        .map(|entry| match entry {
            // "?idsite=1&rec=1&…", sometimes with the endpoint in front.
            Value::String(s) => Ok(form(s.split_once('?').map_or(s.as_str(), |(_, q)| q))),
            Value::Object(obj) => Ok(obj
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), s.clone()),
                    other => (k.clone(), other.to_string()),
                })
                .collect()),
            _ => Err(MapError::invalid(
                "requests",
                "each request must be a query string",
            )),
        })
        .collect::<Result<_, _>>()?;
    let send_image = match value.get("send_image") {
        Some(Value::Number(n)) => n.as_u64() != Some(0),
        Some(Value::String(s)) => s != "0",
        _ => true,
    };
    Ok(Requests {
        entries,
        bulk: true,
        send_image,
    })
}

fn form(text: &str) -> Params {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn get<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parameters that mark a request Glimpse does not record: site search, content tracking,
/// goals and e-commerce, media, form analytics, crash analytics.
const UNSUPPORTED: [&str; 8] = [
    "search", "c_n", "c_i", "idgoal", "ec_id", "ma_id", "fa_fp", "cra",
];

/// Maps one tracking request. `referer` is the request's `Referer` header, the page when
/// there is no `url` (an image tag on the page).
pub fn map(
    params: &Params,
    sites: &SiteIds,
    limits: &BeaconLimits,
    referer: Option<&str>,
) -> Result<Mapped, MapError> {
    let param = |key| get(params, key).filter(|v| !v.is_empty());
    if param("rec") != Some("1") {
        return Ok(Mapped::Ignored("not_recorded"));
    }
    if param("ping") == Some("1") {
        return Ok(Mapped::Ignored("ping"));
    }
    let idsite = param("idsite").ok_or_else(|| MapError::invalid("idsite", "field is required"))?;
    let domain = sites
        .get(idsite.trim())
        .ok_or_else(|| MapError::UnknownSite(idsite.to_string()))?;
    if UNSUPPORTED.iter().any(|key| param(key).is_some()) {
        return Ok(Mapped::Ignored("unsupported"));
    }
    let url = param("url")
        .or(referer)
        .ok_or_else(|| MapError::invalid("url", "field is required"))?;

    let mut props = Vec::new();
    let name = if let Some(download) = param("download") {
        props.push(("url".to_string(), super::without_query(download)));
        FILE_DOWNLOAD.to_string()
    } else if let Some(link) = param("link") {
        props.push(("url".to_string(), link.to_string()));
        OUTBOUND_LINK.to_string()
    } else if param("e_c").is_some() || param("e_a").is_some() {
        let (Some(category), Some(action)) = (param("e_c"), param("e_a")) else {
            return Err(MapError::invalid(
                "e_a",
                "an event needs both e_c (category) and e_a (action)",
            ));
        };
        for (key, prop) in [("e_n", "name"), ("e_v", "value")] {
            if let Some(value) = param(key) {
                props.push((prop.to_string(), value.to_string()));
            }
        }
        format!("{category}: {action}")
    } else {
        "pageview".to_string()
    };
    // Custom dimensions, the first of each number: a set keeps this linear, and the count is
    // refused as soon as it passes `max_props` (a query string can hold thousands).
    let mut dimensions = std::collections::HashSet::new();
    for (key, value) in params {
        let numbered = key
            .strip_prefix("dimension")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if numbered && dimensions.insert(key.as_str()) {
            if props.len() >= limits.max_props {
                return Err(MapError::invalid(
                    "dimension",
                    format!("more than {} properties", limits.max_props),
                ));
            }
            props.push((key.clone(), value.clone()));
        }
    }
    let draft = Draft {
        name,
        url: url.to_string(),
        domain: domain.clone(),
        referrer: param("urlref").map(str::to_string),
        screen_width: param("res").and_then(super::screen_width),
        props,
    };
    let fields = ["e_c", "url", "urlref", "dimension"];
    Ok(Mapped::Event(draft.finish(limits, fields)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Beacon;

    fn sites() -> SiteIds {
        [("1".to_string(), "example.com".to_string())].into()
    }

    fn one(query: &str) -> Result<Mapped, MapError> {
        let requests = requests(Some(query), b"").unwrap();
        map(
            &requests.entries[0],
            &sites(),
            &BeaconLimits::default(),
            None,
        )
    }

    fn event(query: &str) -> Beacon {
        match one(query).unwrap() {
            Mapped::Event(b) => b,
            other => panic!("{other:?}"),
        }
    }

    fn props(b: &Beacon) -> Vec<(&str, &str)> {
        b.props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Many `dimensionN` parameters cost no more than one repeated: the duplicate check is
    /// linear, and the count is refused as soon as it passes `max_props`.
    #[test]
    fn many_dimensions_are_refused_in_linear_time() {
        let query = |dims: Vec<String>| {
            format!(
                "idsite=1&rec=1&url=https%3A%2F%2Fexample.com%2F&{}",
                dims.join("&")
            )
        };
        let distinct = query((0..16_000).map(|i| format!("dimension{i}=v")).collect());
        let copies = query(vec!["dimension1=v".to_string(); 16_000]);
        let entries = |q: &str| requests(Some(q), b"").unwrap().entries.remove(0);
        let (distinct, copies) = (entries(&distinct), entries(&copies));
        let time = |params: &Params| {
            (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    let _ = map(params, &sites(), &BeaconLimits::default(), None);
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let (t_distinct, t_copies) = (time(&distinct), time(&copies));
        assert!(
            t_distinct < t_copies * 5 + std::time::Duration::from_millis(5),
            "16,000 distinct dimensions {t_distinct:?} vs 16,000 copies {t_copies:?}"
        );
        match map(&distinct, &sites(), &BeaconLimits::default(), None) {
            Err(MapError::Invalid(e)) => assert_eq!(e.field, "dimension"),
            other => panic!("{other:?}"),
        }
        assert!(map(&copies, &sites(), &BeaconLimits::default(), None).is_ok());
    }

    /// matomo.js 5.2's first pageview from Chromium (sendBeacon, parameters in the URL).
    const PAGEVIEW: &str = "action_name=Pricing%20%E2%80%93%20Example&idsite=1&rec=1&r=493817&h=10&m=4&s=12\
        &url=https%3A%2F%2Fwww.example.com%2Fpricing%3Futm_campaign%3Dspring&urlref=https%3A%2F%2Fnews.ycombinator.com%2F\
        &_id=5d0cbf2a4e3b1c97&_idn=1&_refts=0&send_image=0&pv_id=Ab3dE9&pf_net=0&pf_srv=12&pf_tfr=1&pf_dm1=45\
        &uadata=%7B%22fullVersionList%22%3A%5B%5D%7D&pdf=1&qt=0&realp=0&wma=0&fla=0&java=0&ag=0&cookie=1&res=1366x900\
        &cip=198.51.100.7&ua=curl%2F8&uid=alice%40example.com&cid=0123456789abcdef&bots=1";

    #[test]
    fn pageview_from_the_javascript_tracker() {
        let requests = requests(Some(PAGEVIEW), b"").unwrap();
        assert!(!requests.send_image && !requests.bulk);
        let b = event(PAGEVIEW);
        assert_eq!(b.name, "pageview");
        assert_eq!(
            b.url.as_str(),
            "https://www.example.com/pricing?utm_campaign=spring"
        );
        assert_eq!(b.domains, ["example.com"]);
        assert_eq!(b.referrer.as_deref(), Some("https://news.ycombinator.com/"));
        assert_eq!(b.screen_width, Some(1366));
        assert!(b.props.is_empty(), "{:?}", b.props);
    }

    #[test]
    fn events_links_and_downloads() {
        let page = "idsite=1&rec=1&url=https%3A%2F%2Fexample.com%2Fa";
        let b = event(&format!(
            "{page}&e_c=Video&e_a=Play&e_n=Intro&e_v=12.5&ca=1&dimension3=pro"
        ));
        assert_eq!(b.name, "Video: Play");
        assert_eq!(
            props(&b),
            [("name", "Intro"), ("value", "12.5"), ("dimension3", "pro")]
        );
        let b = event(&format!(
            "{page}&link=https%3A%2F%2Fother.org%2Fx%3Fa%3D1&ca=1"
        ));
        assert_eq!(b.name, "Outbound Link: Click");
        assert_eq!(props(&b), [("url", "https://other.org/x?a=1")]);
        let b = event(&format!(
            "{page}&download=https%3A%2F%2Fexample.com%2Ff%2Freport.pdf%3Ftoken%3Dabc&ca=1"
        ));
        assert_eq!(b.name, "File Download");
        assert_eq!(props(&b), [("url", "https://example.com/f/report.pdf")]);
    }

    #[test]
    fn ignored_requests() {
        let page = "idsite=1&url=https%3A%2F%2Fexample.com%2Fa";
        for (query, reason) in [
            (page.to_string(), "not_recorded"),
            (format!("{page}&rec=0"), "not_recorded"),
            (format!("{page}&rec=1&ping=1"), "ping"),
            (format!("{page}&rec=1&search=shoes"), "unsupported"),
            (format!("{page}&rec=1&c_n=Banner&c_p=x"), "unsupported"),
            (format!("{page}&rec=1&idgoal=2&revenue=10"), "unsupported"),
        ] {
            assert_eq!(one(&query).unwrap(), Mapped::Ignored(reason), "{query}");
        }
    }

    #[test]
    fn form_body_and_bulk() {
        let r = requests(None, PAGEVIEW.as_bytes()).unwrap();
        assert_eq!(r.entries.len(), 1);
        assert!(!r.send_image);
        // The query string wins over the body, as in Matomo ($_GET + $_POST).
        let r = requests(Some("idsite=1&send_image=1"), b"idsite=2&rec=1").unwrap();
        assert_eq!(get(&r.entries[0], "idsite"), Some("1"));
        assert_eq!(get(&r.entries[0], "rec"), Some("1"));
        assert!(r.send_image);
        let body = r#"{"requests":["?idsite=1&rec=1&url=https%3A%2F%2Fexample.com%2Fa&e_c=C&e_a=A",
            "?idsite=1&rec=1&url=https%3A%2F%2Fexample.com%2Fb"],"send_image":0}"#;
        let r = requests(None, body.as_bytes()).unwrap();
        assert!(r.bulk && !r.send_image);
        assert_eq!(r.entries.len(), 2);
        let names: Vec<_> = r
            .entries
            .iter()
            .map(
                |p| match map(p, &sites(), &BeaconLimits::default(), None).unwrap() {
                    Mapped::Event(b) => b.name,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(names, ["C: A", "pageview"]);
        assert!(requests(None, br#"{"requests":5}"#).is_err());
        assert!(requests(None, b"{").is_err());
    }

    #[test]
    fn image_tag_uses_the_referer() {
        let r = requests(Some("idsite=1&rec=1"), b"").unwrap();
        assert!(r.send_image);
        let b = map(
            &r.entries[0],
            &sites(),
            &BeaconLimits::default(),
            Some("https://example.com/static/page.html"),
        )
        .unwrap();
        assert!(matches!(b, Mapped::Event(b) if b.url.path() == "/static/page.html"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            one("idsite=7&rec=1&url=https%3A%2F%2Fe.com%2F").unwrap_err(),
            MapError::UnknownSite("7".into())
        );
        let field = |q: &str| match one(q).unwrap_err() {
            MapError::Invalid(e) => e.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("rec=1"), "idsite");
        assert_eq!(field("idsite=1&rec=1"), "url");
        assert_eq!(field("idsite=1&rec=1&url=notaurl"), "url");
        assert_eq!(
            field("idsite=1&rec=1&url=https%3A%2F%2Fe.com%2F&e_c=x"),
            "e_a"
        );
    }
}
