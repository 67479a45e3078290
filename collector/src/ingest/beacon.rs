//! Plausible's event protocol: the JSON body of `POST /api/event`, parsed and validated into a
//! typed [`Beacon`]. Unknown fields are ignored (trackers add fields over time); known fields of
//! the wrong type or over a limit are an error naming the field.

use serde_json::{Map, Value};
use url::Url;

/// Size limits on beacon fields, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconLimits {
    pub max_url_length: usize,
    pub max_event_name_length: usize,
    pub max_props: usize,
    pub max_prop_key_length: usize,
    pub max_prop_value_length: usize,
}

impl BeaconLimits {
    pub fn from_config(config: &glimpse_core::config::Config) -> Self {
        Self {
            max_url_length: config.collector.max_url_length,
            max_event_name_length: config.collector.max_event_name_length,
            max_props: config.collector.max_props,
            max_prop_key_length: config.collector.max_prop_key_length,
            max_prop_value_length: config.collector.max_prop_value_length,
        }
    }
}

impl Default for BeaconLimits {
    fn default() -> Self {
        Self::from_config(&glimpse_core::config::Config::default())
    }
}

/// A syntactically valid beacon. Nothing here has been checked against sites or privacy rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Beacon {
    /// `n`: `pageview`, `engagement`, or a custom event name.
    pub name: String,
    /// `u`: the page URL, absolute http(s).
    pub url: Url,
    /// `d`: one or more site domains (Plausible allows a comma-separated list).
    pub domains: Vec<String>,
    /// `r`: the referrer URL, if any. Kept as text: browsers send odd referrers.
    pub referrer: Option<String>,
    /// `w`: screen width in CSS pixels.
    pub screen_width: Option<u16>,
    /// `h`: the site uses hash-based routing, so the fragment is part of the page path.
    pub hash_mode: bool,
    /// `p`: custom properties, values turned into strings.
    pub props: Vec<(String, String)>,
    /// `i`: whether the event came from a user interaction (Plausible's `interactive`).
    pub interactive: bool,
    /// `sd`: max scroll depth in percent (engagement events).
    pub scroll_depth: Option<u8>,
    /// `e`: engaged time in milliseconds (engagement events).
    pub engagement_ms: Option<u32>,
}

/// Why a beacon body was refused; always names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BeaconError {
    /// The offending field (`n`, `u`, `p.plan`, …), or `body` for the body as a whole.
    pub field: String,
    pub reason: String,
}

impl BeaconError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Longest engagement we believe: a day. Longer values are clock or tracker bugs.
const MAX_ENGAGEMENT_MS: u64 = 24 * 60 * 60 * 1000;

/// Most distinct site domains one event may name in `d`. Plausible's trackers send one, or a
/// few for roll-up sites; each is a row, so more would multiply one request's cost.
pub const MAX_DOMAINS: usize = 50;

/// The distinct, lower-cased, non-empty names of a comma-separated `d`, in order. Linear in
/// the text (a set, not a list search), and refused with the field named as soon as the
/// [`MAX_DOMAINS`]th + 1 distinct name appears.
pub fn unique_domains(text: &str) -> Result<Vec<String>, BeaconError> {
    let mut seen = std::collections::HashSet::new();
    let mut domains = Vec::new();
    for domain in text.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if domain.is_empty() || seen.contains(&domain) {
            continue;
        }
        if domains.len() == MAX_DOMAINS {
            return Err(BeaconError::new(
                "d",
                format!("more than {MAX_DOMAINS} site domains"),
            ));
        }
        seen.insert(domain.clone());
        domains.push(domain);
    }
    if domains.is_empty() {
        return Err(BeaconError::new("d", "site domain must not be empty"));
    }
    Ok(domains)
}

/// Parses a beacon body (UTF-8 JSON object) and validates every known field.
pub fn parse(body: &[u8], limits: &BeaconLimits) -> Result<Beacon, BeaconError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| BeaconError::new("body", "body is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(BeaconError::new("body", "body is empty"));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| BeaconError::new("body", format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(BeaconError::new("body", "body must be a JSON object"));
    };

    let name = required_str(&obj, "n")?;
    if name.is_empty() {
        return Err(BeaconError::new("n", "event name must not be empty"));
    }
    if name.chars().count() > limits.max_event_name_length {
        return Err(BeaconError::new(
            "n",
            format!(
                "event name is longer than {} characters",
                limits.max_event_name_length
            ),
        ));
    }

    let url_text = required_str(&obj, "u")?;
    check_length("u", url_text, limits.max_url_length)?;
    let url = Url::parse(url_text)
        .map_err(|e| BeaconError::new("u", format!("page URL is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(BeaconError::new(
            "u",
            "page URL must be an absolute http(s) URL with a host",
        ));
    }

    let domains = unique_domains(required_str(&obj, "d")?)?;

    let referrer = match obj.get("r") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => {
            check_length("r", r, limits.max_url_length)?;
            (!r.is_empty()).then(|| r.clone())
        }
        Some(_) => return Err(BeaconError::new("r", "referrer must be a string or null")),
    };

    let screen_width = optional_uint(&obj, "w", u16::MAX as u64)?.map(|w| w as u16);
    let hash_mode = optional_flag(&obj, "h")?.unwrap_or(false);
    let interactive = optional_flag(&obj, "i")?.unwrap_or(true);
    let scroll_depth = optional_uint(&obj, "sd", 100)?.map(|v| v as u8);
    let engagement_ms = optional_uint(&obj, "e", MAX_ENGAGEMENT_MS)?.map(|v| v as u32);
    let props = parse_props(obj.get("p"), limits)?;

    Ok(Beacon {
        name: name.to_string(),
        url,
        domains,
        referrer,
        screen_width,
        hash_mode,
        props,
        interactive,
        scroll_depth,
        engagement_ms,
    })
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, BeaconError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(BeaconError::new(field, "field is required")),
        Some(_) => Err(BeaconError::new(field, "must be a string")),
    }
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), BeaconError> {
    if value.chars().count() > max {
        return Err(BeaconError::new(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(())
}

/// A non-negative whole number up to `max`. Accepts `12.0` (JavaScript has no integers).
fn optional_uint(
    obj: &Map<String, Value>,
    field: &str,
    max: u64,
) -> Result<Option<u64>, BeaconError> {
    let err = || BeaconError::new(field, format!("must be a whole number from 0 to {max}"));
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = match (n.as_u64(), n.as_f64()) {
                (Some(v), _) => v,
                (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= max as f64 => f as u64,
                _ => return Err(err()),
            };
            if v > max {
                return Err(err());
            }
            Ok(Some(v))
        }
        Some(_) => Err(err()),
    }
}

/// A boolean; Plausible's trackers have sent `1`/`0` too.
fn optional_flag(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, BeaconError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(_) => Err(BeaconError::new(field, "must be true, false, 0 or 1")),
    }
}

/// `p` is an object of scalar values, or a JSON string holding one (older trackers).
fn parse_props(
    value: Option<&Value>,
    limits: &BeaconLimits,
) -> Result<Vec<(String, String)>, BeaconError> {
    let parsed;
    let obj = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(obj)) => obj,
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|_| BeaconError::new("p", "properties string is not valid JSON"))?;
            match &parsed {
                Value::Object(obj) => obj,
                Value::Null => return Ok(Vec::new()),
                _ => return Err(BeaconError::new("p", "properties must be a JSON object")),
            }
        }
        Some(_) => return Err(BeaconError::new("p", "properties must be a JSON object")),
    };
    if obj.len() > limits.max_props {
        return Err(BeaconError::new(
            "p",
            format!("more than {} properties", limits.max_props),
        ));
    }
    let mut props = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        let field = format!("p.{key}");
        if key.is_empty() {
            return Err(BeaconError::new("p", "property names must not be empty"));
        }
        check_length(&field, key, limits.max_prop_key_length)?;
        let value = match value {
            // Plausible drops null-valued properties rather than storing "null".
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(BeaconError::new(
                    field,
                    "property values must be strings, numbers or booleans",
                ))
            }
        };
        if value.is_empty() {
            continue;
        }
        check_length(&field, &value, limits.max_prop_value_length)?;
        props.push((key.clone(), value));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Beacon {
        parse(body.as_bytes(), &BeaconLimits::default()).unwrap()
    }

    fn err(body: &str) -> BeaconError {
        parse(body.as_bytes(), &BeaconLimits::default()).unwrap_err()
    }

    const MINIMAL: &str = r#"{"n":"pageview","u":"https://example.com/a","d":"example.com"}"#;

    #[test]
    fn minimal_pageview() {
        let b = ok(MINIMAL);
        assert_eq!(b.name, "pageview");
        assert_eq!(b.url.as_str(), "https://example.com/a");
        assert_eq!(b.domains, ["example.com"]);
        assert_eq!(b.referrer, None);
        assert_eq!(b.screen_width, None);
        assert!(!b.hash_mode);
        assert!(b.interactive);
        assert!(b.props.is_empty());
    }

    #[test]
    fn every_field() {
        let b = ok(
            r#"{"n":"Signup","u":"https://example.com/#/x","d":"Example.com, other.org,example.com",
            "r":"https://google.com/","w":1440,"h":1,"i":false,"sd":55,"e":12000,
            "p":{"plan":"pro","seats":3,"trial":true,"gone":null},"m":"ignored"}"#,
        );
        assert_eq!(b.name, "Signup");
        assert_eq!(b.domains, ["example.com", "other.org"]);
        assert_eq!(b.referrer.as_deref(), Some("https://google.com/"));
        assert_eq!(b.screen_width, Some(1440));
        assert!(b.hash_mode);
        assert!(!b.interactive);
        assert_eq!(b.scroll_depth, Some(55));
        assert_eq!(b.engagement_ms, Some(12000));
        let mut props = b.props.clone();
        props.sort();
        assert_eq!(
            props,
            [
                ("plan".to_string(), "pro".to_string()),
                ("seats".to_string(), "3".to_string()),
                ("trial".to_string(), "true".to_string()),
            ]
        );
    }

    #[test]
    fn props_as_json_string() {
        let b = ok(
            r#"{"n":"x","u":"https://e.com/","d":"e.com","p":"{\"a\":\"b\"}","r":null,"w":null}"#,
        );
        assert_eq!(b.props, [("a".to_string(), "b".to_string())]);
        assert_eq!(
            ok(r#"{"n":"x","u":"https://e.com/","d":"e.com","p":""}"#).props,
            []
        );
    }

    #[test]
    fn whole_floats_are_accepted() {
        assert_eq!(
            ok(r#"{"n":"x","u":"https://e.com/","d":"e.com","w":390.0}"#).screen_width,
            Some(390)
        );
    }

    #[test]
    fn body_errors() {
        assert_eq!(err("").field, "body");
        assert_eq!(err("   ").field, "body");
        assert_eq!(err("{").field, "body");
        assert_eq!(err("[1]").field, "body");
        assert_eq!(err("null").field, "body");
        let e = parse(b"{\"n\":\"\xff\"}", &BeaconLimits::default()).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.reason.contains("UTF-8"));
    }

    #[test]
    fn field_errors_name_the_field() {
        let cases = [
            (r#"{"u":"https://e.com/","d":"e.com"}"#, "n"),
            (r#"{"n":"","u":"https://e.com/","d":"e.com"}"#, "n"),
            (r#"{"n":5,"u":"https://e.com/","d":"e.com"}"#, "n"),
            (r#"{"n":"x","d":"e.com"}"#, "u"),
            (r#"{"n":"x","u":"not a url","d":"e.com"}"#, "u"),
            (r#"{"n":"x","u":"ftp://e.com/","d":"e.com"}"#, "u"),
            (r#"{"n":"x","u":"javascript:alert(1)","d":"e.com"}"#, "u"),
            (r#"{"n":"x","u":"https://e.com/"}"#, "d"),
            (r#"{"n":"x","u":"https://e.com/","d":" , "}"#, "d"),
            (r#"{"n":"x","u":"https://e.com/","d":["e.com"]}"#, "d"),
            (r#"{"n":"x","u":"https://e.com/","d":"e.com","r":7}"#, "r"),
            (r#"{"n":"x","u":"https://e.com/","d":"e.com","w":-1}"#, "w"),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","w":70000}"#,
                "w",
            ),
            (r#"{"n":"x","u":"https://e.com/","d":"e.com","w":1.5}"#, "w"),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","w":"100"}"#,
                "w",
            ),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","h":"yes"}"#,
                "h",
            ),
            (r#"{"n":"x","u":"https://e.com/","d":"e.com","i":2}"#, "i"),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","sd":101}"#,
                "sd",
            ),
            (r#"{"n":"x","u":"https://e.com/","d":"e.com","e":-5}"#, "e"),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","e":1e15}"#,
                "e",
            ),
            (r#"{"n":"x","u":"https://e.com/","d":"e.com","p":[1]}"#, "p"),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","p":"[1]"}"#,
                "p",
            ),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","p":"{bad"}"#,
                "p",
            ),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","p":{"":"v"}}"#,
                "p",
            ),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","p":{"k":{"a":1}}}"#,
                "p.k",
            ),
            (
                r#"{"n":"x","u":"https://e.com/","d":"e.com","p":{"k":[1]}}"#,
                "p.k",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(err(body).field, field, "{body}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = BeaconLimits {
            max_url_length: 30,
            max_event_name_length: 5,
            max_props: 2,
            max_prop_key_length: 3,
            max_prop_value_length: 4,
        };
        let check = |body: &str| parse(body.as_bytes(), &limits);
        assert!(check(r#"{"n":"abcde","u":"https://e.com/","d":"e.com"}"#).is_ok());
        assert_eq!(
            check(r#"{"n":"abcdef","u":"https://e.com/","d":"e.com"}"#)
                .unwrap_err()
                .field,
            "n"
        );
        let long_url = format!(
            r#"{{"n":"x","u":"https://e.com/{}","d":"e.com"}}"#,
            "a".repeat(20)
        );
        assert_eq!(check(&long_url).unwrap_err().field, "u");
        let long_ref = format!(
            r#"{{"n":"x","u":"https://e.com/","d":"e.com","r":"{}"}}"#,
            "a".repeat(31)
        );
        assert_eq!(check(&long_ref).unwrap_err().field, "r");
        assert_eq!(
            check(r#"{"n":"x","u":"https://e.com/","d":"e.com","p":{"a":"1","b":"2","c":"3"}}"#)
                .unwrap_err()
                .field,
            "p"
        );
        assert_eq!(
            check(r#"{"n":"x","u":"https://e.com/","d":"e.com","p":{"abcd":"1"}}"#)
                .unwrap_err()
                .field,
            "p.abcd"
        );
        assert_eq!(
            check(r#"{"n":"x","u":"https://e.com/","d":"e.com","p":{"a":"12345"}}"#)
                .unwrap_err()
                .field,
            "p.a"
        );
        // Limits count characters, not bytes.
        assert!(check(r#"{"n":"ééééé","u":"https://e.com/","d":"e.com"}"#).is_ok());
    }

    /// Many domains in `d` are refused by name, and cost no more than one repeated name:
    /// deduplication is linear (it was `Vec::contains`, quadratic: ~0.4 s for 16,000 names).
    #[test]
    fn many_domains_are_refused_in_linear_time() {
        let body = |names: Vec<String>| {
            format!(
                r#"{{"n":"pageview","u":"https://example.com/","d":"{}"}}"#,
                names.join(",")
            )
        };
        // About 64 KiB each, the default body limit.
        let distinct = body((0..16_000).map(|i| format!("{i:x}")).collect());
        let copies = body(vec!["a1".to_string(); 16_000]);
        let time = |body: &str| {
            (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    let _ = parse(body.as_bytes(), &BeaconLimits::default());
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let (t_distinct, t_copies) = (time(&distinct), time(&copies));
        assert!(
            t_distinct < t_copies * 5 + std::time::Duration::from_millis(5),
            "16,000 distinct names {t_distinct:?} vs 16,000 copies {t_copies:?}"
        );
        let e = err(&distinct);
        assert_eq!(e.field, "d");
        assert!(e.reason.contains("more than 50"), "{e}");
        assert_eq!(ok(&copies).domains, ["a1"]);
        // The cap itself: 50 distinct names pass, 51 do not.
        let names = |n: usize| body((0..n).map(|i| format!("s{i}.io")).collect());
        assert_eq!(ok(&names(MAX_DOMAINS)).domains.len(), MAX_DOMAINS);
        assert_eq!(err(&names(MAX_DOMAINS + 1)).field, "d");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(err(&deep).field, "body");
        let deep_props = format!(
            r#"{{"n":"x","u":"https://e.com/","d":"e.com","p":{{"k":{}1{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(err(&deep_props).field, "body");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON values of any shape, a few levels deep.
        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,40}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::hash_map(".{0,8}", inner, 0..6)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse(&bytes, &BeaconLimits::default());
            }

            #[test]
            fn known_fields_of_any_type_are_parsed_or_refused_by_name(
                fields in prop::collection::hash_map(
                    prop::sample::select(vec!["n", "u", "d", "r", "w", "h", "p", "i", "sd", "e", "x"]),
                    json(),
                    0..11,
                )
            ) {
                let body = serde_json::Value::Object(
                    fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                )
                .to_string();
                match parse(body.as_bytes(), &BeaconLimits::default()) {
                    Ok(b) => {
                        prop_assert!(!b.name.is_empty() && b.name.chars().count() <= 120);
                        prop_assert!(matches!(b.url.scheme(), "http" | "https"));
                        prop_assert!(!b.domains.is_empty());
                        prop_assert!(b.props.len() <= 30);
                        prop_assert!(b.scroll_depth.is_none_or(|d| d <= 100));
                    }
                    Err(e) => {
                        let known = ["body", "n", "u", "d", "r", "w", "h", "p", "i", "sd", "e"];
                        prop_assert!(
                            known.contains(&e.field.as_str()) || e.field.starts_with("p."),
                            "unexpected field {}", e.field
                        );
                        prop_assert!(!e.reason.is_empty());
                    }
                }
            }

            #[test]
            fn valid_beacons_round_trip(
                path in "/[a-z0-9/_-]{0,40}",
                width in any::<u16>(),
                props in prop::collection::btree_map("[a-z]{1,10}", "[ -~]{1,20}", 0..10),
            ) {
                let body = serde_json::json!({
                    "n": "pageview", "u": format!("https://example.com{path}"),
                    "d": "example.com", "w": width, "p": props,
                })
                .to_string();
                let b = parse(body.as_bytes(), &BeaconLimits::default()).unwrap();
                prop_assert_eq!(b.screen_width, Some(width));
                prop_assert_eq!(b.props.len(), props.len());
            }
        }
    }
}
